"""The embedding stage: EmbeddingCube layout and attributes, clear fractions, normalisation."""

import json

import numpy as np
import pandas as pd
import pytest

from changescout.cube import OutputGrid, Quality, grid_of, make_cube
from changescout.embed import clear_fractions, date_statistics, embed_cube, embedding_grid, normalise, open_embeddings
from changescout.encoders import get_encoder
from changescout.errors import ConfigError
from changescout.tiling import PatchGrid


@pytest.fixture(scope="module")
def quality():
    q = np.zeros((3, 64, 64), np.uint8)
    q[0, 0:4, 0:16] = Quality.NODATA  # patch (0, 0): 64 of 256 px -> 0.75
    q[0, 16:32, 16:24] = Quality.CLOUD  # patch (1, 1): 128 px -> 0.5
    q[0, 32:48, 32:48] = Quality.WATER  # patch (2, 2): water is a surface -> 1.0
    q[0, 48:49, 48:64] = Quality.SHADOW  # patch (3, 3): 16 shadow + 16 snow -> 0.875
    q[0, 49:50, 48:64] = Quality.SNOW
    q[1, 16:32, 0:16] = Quality.CLOUD  # patch (1, 0) fully clouded at date 1 -> 0.0
    q[:, 0:16, 54:64] = Quality.CLOUD  # patch (0, 3): 10 of 16 columns under a cloud at every date -> 0.375
    q[:, 48:64, 4:16] = Quality.NODATA  # patch (3, 0): off the images but 4 columns -> judged by them: 1.0
    return q


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, textured_cube, quality):
    cube = textured_cube(n_dates=3, size=64, quality=quality)
    cube.values  # noqa: B018 (compute once)
    enc = get_encoder("rcf", patch_size=16, dim=16, seed=0)
    pg = PatchGrid(grid_of(cube), 16)
    out = tmp_path_factory.mktemp("embed") / "embeddings.zarr"
    ds = embed_cube(cube, enc, pg, out, "area_1234abcd")
    return cube, enc, pg, out, ds


def test_layout_and_coordinates(embedded):
    cube, enc, pg, out, ds = embedded
    assert out.is_dir() and (out / ".zmetadata").exists()
    assert ds["embedding"].dims == ("time", "row", "col", "dim")
    assert ds["embedding"].shape == (3, 4, 4, 16)
    assert ds["embedding"].dtype == np.float32
    assert ds["clear_fraction"].dims == ("time", "row", "col")
    np.testing.assert_array_equal(ds["time"].values, cube["time"].values)
    xs, ys = pg.centres()
    np.testing.assert_allclose(ds["x"].values, xs)
    np.testing.assert_allclose(ds["y"].values, ys)
    assert ds["x"].values[0] == 372_080.0 and ds["y"].values[0] == 4_835_920.0
    assert np.isfinite(ds["embedding"].values).all()


def test_attributes(embedded):
    cube, enc, pg, out, ds = embedded
    a = open_embeddings(out).attrs
    assert a["encoder"] == "rcf"
    assert a["encoder_version"] == enc.spec.version
    assert a["weights_sha256"] == enc.weights_digest() and len(a["weights_sha256"]) == 64
    assert int(a["patch_size"]) == 16 and int(a["stride"]) == 16
    assert json.loads(a["grid"]) == pg.grid.to_dict()
    assert a["series"] == "area_1234abcd"
    assert json.loads(a["bands"]) == ["B02", "B03", "B04", "B08"]
    norm = json.loads(a["normalisation"])
    assert norm["method"]
    assert np.asarray(norm["centre_scale"]).shape == (3, 4, 2)  # (time, band, centre/scale)
    assert embedding_grid(open_embeddings(out)) == pg


def test_clear_fraction_is_the_usable_pixel_fraction_per_patch(embedded, quality):
    cube, enc, pg, out, ds = embedded
    cf = ds["clear_fraction"].values
    usable = (quality == Quality.CLEAR) | (quality == Quality.WATER)
    covered = (quality != Quality.NODATA).any(axis=0)  # the images' footprint: data at some date, cloudy or not
    expected = usable.reshape(3, 4, 16, 4, 16).mean(axis=(2, 4)) / covered.reshape(4, 16, 4, 16).mean(axis=(1, 3))
    np.testing.assert_allclose(cf, expected)
    assert cf[0, 0, 0] == 0.75 and cf[0, 1, 1] == 0.5 and cf[0, 2, 2] == 1.0 and cf[0, 3, 3] == 0.875
    assert cf[1, 1, 0] == 0.0
    assert (cf[:, 0, 3] == 0.375).all() and (cf[:, 3, 0] == 1.0).all()  # a lasting cloud counts; the void does not
    assert (np.delete(cf[2].ravel(), 3) == 1.0).all()


def test_cloud_fraction_counts_only_cloud_pixels_of_the_covered_ones(embedded, quality):
    """The change stage tells a cloud's fringe by the cloud beside a change (changescout.change.CLOUD_FRINGE):
    only CLOUD pixels count, shadow, snow and nodata do not, out of the pixels the images cover."""
    cube, enc, pg, out, ds = embedded
    cloud = open_embeddings(out)["cloud_fraction"].values
    assert cloud.dtype == np.float32 and cloud.shape == (3, 4, 4)
    assert cloud[0, 1, 1] == 0.5 and cloud[1, 1, 0] == 1.0  # half a patch, a whole patch
    assert cloud[0, 0, 0] == 0 and cloud[0, 3, 3] == 0  # nodata, shadow and snow are no cloud
    assert (cloud[:, 0, 3] == 0.625).all() and (cloud[:, 3, 0] == 0).all()  # 10 of 16 columns; off the images
    assert cloud[2].sum() == 0.625  # at the last date, only the lasting cloud


def test_masked_pixels_do_not_leak_into_the_embedding(textured_cube, embedded):
    """Values under a cloud mask are ignored: changing them changes no embedding, not even of neighbours."""
    cube, enc, pg, out, ds = embedded
    data = cube.values.copy()
    q = cube["quality"].values
    for t in range(3):
        cloud = q[t] == Quality.CLOUD
        data[t][:, cloud] = 0.9 if t else 0.0  # whatever the cloud looks like
    changed = make_cube(data, cube["time"].values, list(cube["band"].values), pg.grid, quality=q)
    # same weights, so that only the input differs
    path = enc.save_weights(out.parent / "w.npz")
    ds2 = embed_cube(changed, get_encoder("rcf", patch_size=16, weights=path), pg, out.parent / "e2.zarr", "s")
    np.testing.assert_allclose(ds2["embedding"].values, ds["embedding"].values, atol=1e-5)
    # ...whereas the same change to clear pixels is seen
    data[2][:, 16:32, 0:16] = 0.9
    seen = make_cube(data, cube["time"].values, list(cube["band"].values), pg.grid, quality=q)
    ds3 = embed_cube(seen, get_encoder("rcf", patch_size=16, weights=path), pg, out.parent / "e3.zarr", "s")
    assert np.abs(ds3["embedding"].values[2, 1, 0] - ds["embedding"].values[2, 1, 0]).max() > 0.1


def test_overwrites_an_existing_store_atomically(embedded, tmp_path):
    cube, enc, pg, out, ds = embedded
    target = tmp_path / "e.zarr"
    target.mkdir()
    (target / "stale").write_text("x")
    embed_cube(cube, enc, pg, target, "s")
    assert not (target / "stale").exists()
    np.testing.assert_array_equal(open_embeddings(target)["embedding"].values, ds["embedding"].values)
    assert [p.name for p in tmp_path.iterdir()] == ["e.zarr"]


def test_patch_size_mismatch_is_refused(embedded, tmp_path):
    cube, enc, pg, out, ds = embedded
    with pytest.raises(ConfigError, match="patch"):
        embed_cube(cube, enc, PatchGrid(pg.grid, 8), tmp_path / "x.zarr", "s")
    assert not (tmp_path / "x.zarr").exists()


def test_global_brightness_shift_on_one_date_is_invisible_but_a_local_change_is_not(textured_cube, tmp_path):
    base = textured_cube(n_dates=1, size=64, seed=7).values[0]
    shifted = base + 0.05  # haze / illumination: every pixel of the date brighter
    local = base.copy()
    local[:, 16:32, 16:32] = np.array([0.3, 0.3, 0.35, 0.4], np.float32)[:, None, None]  # a new roof in patch (1, 1)
    data = np.stack([base, shifted, local])
    times = pd.to_datetime(["2021-01-15", "2021-02-15", "2021-03-15"])
    cube = make_cube(data, times, ["B02", "B03", "B04", "B08"], grid_of(textured_cube(n_dates=1, size=64)))
    pg = PatchGrid(grid_of(cube), 16)
    E = embed_cube(cube, get_encoder("rcf", patch_size=16, dim=32), pg, tmp_path / "e.zarr", "s")["embedding"].values

    def dist(a, b):
        return np.sqrt(((a - b) ** 2).mean(axis=-1))

    d_global = dist(E[1], E[0])  # (row, col)
    d_local = dist(E[2], E[0])
    assert d_local[1, 1] > 0.5
    assert d_global.max() < 1e-3 * d_local[1, 1]
    # the local change stands out among the other patches of its date
    others = np.delete(d_local.ravel(), 1 * 4 + 1)
    assert d_local[1, 1] > 5 * np.median(others)


def test_normalise_is_a_robust_zscore_and_fills_nan_with_the_centre():
    x = np.array([[[1.0, 2.0], [np.nan, 5.0]]], np.float32)
    stats = np.array([[2.0, 0.5]])
    z = normalise(x, stats)
    np.testing.assert_array_equal(z, [[[-2.0, 0.0], [0.0, 6.0]]])
    assert z.dtype == np.float32


def test_temporal_encoders_get_the_whole_series_and_the_window_location(synthetic_cube):
    """An encoder with ``spec.temporal`` sees every date of a window at once, with its usable pixels and the
    window centre in degrees; its states land at the right dates."""

    from changescout.encoders.base import EncoderSpec
    from changescout.embed import embedding_graph, date_statistics
    from changescout.cube import grid_of
    from changescout.tiling import PatchGrid

    cube, _ = synthetic_cube

    class SeriesEncoder:
        spec = EncoderSpec(name="series", version="1", dim=2, patch_size=16, window=64, input="reflectance", temporal=True)

        def encode_series(self, x, months, valid, latlon=None):
            assert x.shape[0] == len(months) == valid.shape[0]
            t, _, h, w = x.shape
            out = np.zeros((t, 2, h // 16, w // 16), np.float32)
            out[:, 0] = np.arange(t)[:, None, None]  # the date index
            out[:, 1] = latlon[0]
            return out

        def weights_digest(self):
            return "x"

    pg = PatchGrid(grid_of(cube), 16)
    arr = embedding_graph(cube, SeriesEncoder(), pg, date_statistics(cube, list(range(cube.sizes["band"]))),
                          list(range(cube.sizes["band"]))).compute()
    nt = cube.sizes["time"]
    assert (arr[..., 0] == np.arange(nt)[:, None, None]).all()  # each date's state at its date
    lat = arr[..., 1]
    assert np.isfinite(lat).all() and (np.abs(lat) <= 90).all()
    assert lat[0, 0, 0] > lat[0, -1, 0]  # windows further south get a smaller latitude


def test_normalise_of_every_date_at_once_equals_date_by_date_with_masked_pixels_at_the_centre():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.4, (3, 4, 8, 8)).astype(np.float32)
    x[1, 2, 3, 3] = np.nan
    stats = np.stack([rng.uniform(0.1, 0.2, (3, 4)), rng.uniform(0.05, 0.1, (3, 4))], axis=-1)
    usable = rng.random((3, 8, 8)) > 0.2
    z = normalise(x, stats, usable)
    masked = np.where(usable[:, None], x, np.nan)
    per_date = np.stack([np.nan_to_num((masked[t] - stats[t, :, 0, None, None]) / stats[t, :, 1, None, None]).astype(np.float32)
                         for t in range(3)])
    np.testing.assert_array_equal(z, per_date)  # bit for bit
    assert z.dtype == np.float32 and (z[~np.broadcast_to(usable[:, None], z.shape)] == 0).all() and z[1, 2, 3, 3] == 0



def test_normalise_with_one_set_of_statistics_for_every_date():
    """Statistics ``(band, 2)`` broadcast over the dates of a ``(time, band, H, W)`` stack, as numpy would."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 0.4, (3, 4, 8, 8)).astype(np.float32)
    stats = np.stack([rng.uniform(0.1, 0.2, 4), rng.uniform(0.05, 0.1, 4)], axis=-1)
    expected = ((x - stats[:, 0, None, None]) / stats[:, 1, None, None]).astype(np.float32)
    np.testing.assert_array_equal(normalise(x, stats), expected)


def test_date_statistics_of_a_cube(textured_cube, quality):
    """Series-wide scale (median over dates of IQR / 1.349) and centre of the usable pixels; masked pixels,
    whatever their values, are left out."""
    cube = textured_cube(n_dates=3, size=64, quality=quality)
    stats = date_statistics(cube, [0, 1, 2, 3])
    usable = (cube["quality"].values == Quality.CLEAR) | (cube["quality"].values == Quality.WATER)
    vals = np.where(usable[:, None], cube.values, np.nan)
    q25, med, q75 = np.nanpercentile(vals, [25, 50, 75], axis=(2, 3))
    np.testing.assert_allclose(stats[..., 1], np.broadcast_to(np.median((q75 - q25) / 1.349, axis=0), (3, 4)), rtol=1e-12)
    assert np.abs(stats[..., 0] - np.median(med, axis=0)).max() < 0.5 * stats[0, :, 1].min()  # near the series' median
    wild = cube.copy(data=np.where(usable[:, None], cube.values, 50.0))
    np.testing.assert_array_equal(date_statistics(wild, [0, 1, 2, 3]), stats)


def test_date_centres_follow_a_global_shift_but_not_a_season_around_stable_pixels(textured_cube):
    """A date brighter everywhere (haze) is centred by exactly its shift; a date on which the vegetated half of
    the scene greens up strongly, around a stable half (roofs, roads), keeps the centre of the other dates,
    although its scene median moved: the stable surfaces then look the same at every date. (The vegetation
    also varies a little on another date: what tells the stable half from it, judged on the other dates.)"""
    base = textured_cube(n_dates=1, size=64, seed=3).values[0]
    hazy = base + 0.05
    greener, spring = base.copy(), base.copy()
    greener[:, :, :40] += np.array([-0.02, 0.0, -0.03, 0.25], np.float32)[:, None, None]  # 62 % of the scene
    spring[:, :, :40] += np.array([-0.005, 0.0, -0.01, 0.06], np.float32)[:, None, None]
    times = pd.to_datetime(["2021-03-15", "2021-04-15", "2021-05-15", "2021-06-15", "2021-07-15"])
    cube = make_cube(np.stack([base, hazy, base, greener, spring]), times, ["B02", "B03", "B04", "B08"],
                     grid_of(textured_cube(n_dates=1, size=64)))
    stats = date_statistics(cube, [0, 1, 2, 3])
    np.testing.assert_allclose(stats[1, :, 0] - stats[0, :, 0], 0.05, atol=1e-6)
    np.testing.assert_allclose(stats[3, :, 0], stats[0, :, 0], atol=1e-6)
    scene = np.median(cube.values.reshape(5, 4, -1), axis=2)
    assert scene[3, 3] - scene[0, 3] > 0.2  # the scene median moved in the near infrared


def test_date_centres_still_follow_haze_when_most_dates_or_the_stable_pixels_are_clouded(textured_cube):
    """Six of ten dates clouded everywhere: a hazy clear date is still centred by its shift. A cloud over the
    most stable pixels at the hazy date: its centre is measured on the stable pixels usable at that date."""
    base = textured_cube(n_dates=1, size=64, seed=3).values[0]
    grid = grid_of(textured_cube(n_dates=1, size=64))
    times = pd.date_range("2021-01-15", periods=10, freq="7D")
    data = np.stack([base] * 10)
    data[1] += 0.05
    q = np.full((10, 64, 64), Quality.CLEAR, np.uint8)
    q[4:] = Quality.CLOUD
    stats = date_statistics(make_cube(data, times, ["B02", "B03", "B04", "B08"], grid, quality=q), [0, 1, 2, 3])
    np.testing.assert_allclose(stats[1, :, 0] - stats[0, :, 0], 0.05, atol=1e-6)
    rng = np.random.default_rng(0)
    data = np.stack([base] * 6) + rng.normal(0, 0.05, (6, 4, 64, 64)).astype(np.float32)  # vegetation varies ...
    data[:, :, :, :20] = base[:, :, :20] + rng.normal(0, 0.002, (6, 4, 64, 20)).astype(np.float32)  # ... roofs do not
    data[2] += 0.05
    q = np.full((6, 64, 64), Quality.CLEAR, np.uint8)
    q[2, :, :24] = Quality.CLOUD  # over the roofs, that date
    stats = date_statistics(make_cube(data, times[:6], ["B02", "B03", "B04", "B08"], grid, quality=q), [0, 1, 2, 3])
    assert np.abs(stats[2, :, 0] - stats[0, :, 0] - 0.05).max() < 0.02


@pytest.mark.parametrize("input_", ["normalised", "reflectance"])
def test_encoder_input_fills_gaps_from_the_nearest_date_and_pixels_never_seen_with_the_mean_of_those_seen(input_):
    """A pixel clouded at one date gets its nearest clear date's value (normalised input: its z-score there, so
    that it keeps no other date's haze or illumination); pixels usable at no date (outside the footprint, NaN; a
    cloud at every date, finite values) take, at each date and in each band, the mean of the pixels some date
    saw (they were 0: an edge patch showed the encoder an edge between its image and the void; then their
    nearest seen pixel's, whose noise, repeated over the patch, ranked quiet edge patches as top changes);
    ``usable`` is what the clear fraction counts."""
    from changescout.embed import _prepare
    from changescout.encoders.base import EncoderSpec

    rng = np.random.default_rng(2)
    x = rng.uniform(0, 0.4, (3, 4, 16, 16)).astype(np.float32)
    q = np.zeros((3, 16, 16), np.uint8)
    x[:, :, :, 12:] = np.nan  # outside the footprint at every date
    q[:, :, 12:] = Quality.NODATA
    q[:, 0:3, 0:3] = Quality.CLOUD  # clouded at every date, values finite
    q[1, 8, 8] = Quality.CLOUD  # clouded at date 1 only: takes date 0
    stats = np.stack([rng.uniform(0.1, 0.2, (3, 4)), rng.uniform(0.05, 0.1, (3, 4))], axis=-1)
    spec = EncoderSpec(name="t", version="1", dim=2, patch_size=16, input=input_)
    got, usable, covered = _prepare(x, q, stats, spec)
    expected = normalise(x, stats) if input_ == "normalised" else x.copy()
    expected[1, :, 8, 8] = expected[0, :, 8, 8]
    known = usable.any(axis=0)
    np.testing.assert_array_equal(got[:, :, known], expected[:, :, known])
    mean = expected[:, :, known].mean(axis=-1)  # (time, band)
    np.testing.assert_allclose(got[:, :, ~known], np.repeat(mean[:, :, None], (~known).sum(), axis=-1), rtol=1e-6)
    assert np.isfinite(got).all()
    assert not usable[1, 8, 8] and usable[0, 8, 8] and not usable[:, 0:3, 0:3].any() and not usable[:, :, 12:].any()
    assert covered[0:3, 0:3].all() and not covered[:, 12:].any() and covered[:, :12].all()  # a cloud is covered, the void not


def _window_encoder(window):
    """A per-date encoder with ``window`` px windows that records the torch threads each window ran on."""
    import torch

    from changescout.encoders.base import EncoderSpec

    class WindowEncoder:
        spec = EncoderSpec(name="w", version="1", dim=3, patch_size=16, window=window, input="reflectance", batch_size=2)
        threads: list = []

        def encode(self, x, months):
            self.threads.append(torch.get_num_threads())
            b, _, h, w = x.shape
            out = np.zeros((b, 3, h // 16, w // 16), np.float32)
            out[:, 0] = x[:, 0].reshape(b, h // 16, 16, w // 16, 16).mean(axis=(2, 4))
            out[:, 1] = months[:, None, None]
            out[:, 2] = np.arange(w // 16)[None, None, :]  # the column inside the window
            return out

        def weights_digest(self):
            return "w"

    return WindowEncoder()


def test_small_windows_are_written_in_chunks_of_whole_windows_and_torch_threads_are_shared(textured_cube, tmp_path):
    """64 px windows (Galileo's) are regrouped into 256 px zarr chunks, the values in their place; windows
    running side by side share torch's threads, and the caller's setting is left as it was."""
    import dask
    import torch

    from changescout.embed import WRITE_PX

    from changescout.embed import date_statistics, embedding_graph

    cube = textured_cube(n_dates=3, size=320, seed=2)
    pg = PatchGrid(grid_of(cube), 16)
    enc = _window_encoder(64)
    graph = embedding_graph(cube, enc, pg, date_statistics(cube, [0, 1, 2, 3]), [0, 1, 2, 3])
    assert graph.chunks == ((3,), (4,) * 5, (4,) * 5, (4,))  # one block per 64 px window, every date in it
    before = torch.get_num_threads()
    with dask.config.set(scheduler="threads", num_workers=2):
        ds = embed_cube(cube, enc, pg, tmp_path / "e.zarr", "s")
    assert torch.get_num_threads() == before
    assert set(enc.threads) == {max(1, before // 2)}  # 25 windows on 2 workers
    chunks = ds["embedding"].encoding["chunks"]
    assert chunks[1] == chunks[2] == WRITE_PX // 16 and chunks[0] == 3
    e = ds["embedding"].values
    assert e.shape == (3, 20, 20, 3)
    np.testing.assert_array_equal(e[..., 2], np.tile(np.arange(20) % 4, (3, 20, 1)))  # each window in its place
    months = pd.DatetimeIndex(cube["time"].values).month.to_numpy() - 1
    np.testing.assert_array_equal(e[..., 1], np.broadcast_to(months[:, None, None], (3, 20, 20)))
    refl = cube.values[:, 0].reshape(3, 20, 16, 20, 16).mean(axis=(2, 4))
    np.testing.assert_allclose(e[..., 0], refl, rtol=1e-6)
    # one window alone keeps every thread
    enc1 = _window_encoder(512)
    with dask.config.set(scheduler="threads", num_workers=2):
        embed_cube(cube, enc1, pg, tmp_path / "e1.zarr", "s")
    assert set(enc1.threads) == {before}


def test_a_partly_clouded_patch_on_a_brighter_date_does_not_look_changed(tmp_path, make_grid):
    """A clouded pixel took its nearest clear date's reflectance and was then centred with its own date's
    statistics: on a date 0.05 brighter everywhere (haze), an unchanged patch 19 % clouded moved 0.40, against
    0.02 for the unchanged patches and 1.41 for a new roof."""
    rng = np.random.default_rng(7)
    base = rng.uniform(0.02, 0.3, (4, 64, 64)).astype(np.float32)
    base = 0.5 * base + 0.5 * np.repeat(np.repeat(rng.uniform(0.02, 0.3, (4, 16, 16)), 4, axis=1), 4, axis=2).astype(np.float32)
    data = np.stack([base, base, base + 0.05])
    data[2][:, 40:56, 40:56] = np.array([0.35, 0.35, 0.4, 0.45], np.float32)[:, None, None]  # a new roof, patch (2, 2)
    q = np.zeros((3, 64, 64), np.uint8)
    q[2, 16:32, 16:19] = Quality.CLOUD  # patch (1, 1): 3 of its 16 columns clouded (clear fraction 0.81)
    data[2][:, 16:32, 16:19] = 0.8
    times = pd.to_datetime(["2021-01-15", "2021-02-15", "2021-03-15"])
    cube = make_cube(data, times, ["B02", "B03", "B04", "B08"], make_grid(64, 64), quality=q)
    E = embed_cube(cube, get_encoder("rcf", patch_size=16, dim=32), PatchGrid(grid_of(cube), 16), tmp_path / "e.zarr", "s")["embedding"].values
    d = np.sqrt(((E[2] - E[1]) ** 2).mean(axis=-1))
    unchanged = np.median(np.delete(d.ravel(), [5, 10]))
    assert unchanged < 0.05 and d[1, 1] < 3 * unchanged + 0.05 < 0.25 * d[2, 2]


def test_rcf_weights_of_one_landsat_numbering_are_refused_on_the_other(tmp_path, make_grid):
    """Weights recorded their bands' names only: learnt on Landsat 8 (B2..B5 = blue, green, red, near infrared)
    they were taken on Landsat 7 (B2..B5 = green, red, near infrared, swir), every band the wrong one."""
    from changescout.errors import BandError

    rng = np.random.default_rng(3)
    times = pd.to_datetime(["2021-05-01", "2021-06-01"])

    def landsat(platform):
        return make_cube(rng.uniform(0.02, 0.3, (2, 4, 32, 32)).astype(np.float32), times, ["B2", "B3", "B4", "B5"],
                         make_grid(32, 32), time_coords={"platform": [platform] * 2})

    l8 = landsat("landsat-8")
    enc = get_encoder("rcf", patch_size=16, dim=16)
    embed_cube(l8, enc, PatchGrid(grid_of(l8), 16), tmp_path / "l8.zarr", "a")
    weights = enc.save_weights(tmp_path / "rcf_weights.npz")
    embed_cube(landsat("landsat-9"), get_encoder("rcf", patch_size=16, weights=weights), PatchGrid(grid_of(l8), 16),
               tmp_path / "l9.zarr", "b")  # the same numbering: taken
    l7 = landsat("landsat-7")
    with pytest.raises(BandError, match=r"learnt on Landsat 8-9 \(OLI\) bands .* Landsat 4-7 \(TM, ETM\+\)'s"):
        embed_cube(l7, get_encoder("rcf", patch_size=16, weights=weights), PatchGrid(grid_of(l7), 16), tmp_path / "l7.zarr", "c")


def test_encoder_options_that_change_the_space_are_recorded(embedded):
    """galileo-nano's token size and presto's mode were in no attribute: runs of other options (embeddings at a
    cosine of 0.94) were searched together."""
    from changescout.embed import encoder_options

    class Options:
        def __init__(self, **options):
            self.options = options

        def space_options(self):
            return self.options

    assert encoder_options(Options()) == encoder_options(object()) == ""
    assert encoder_options(Options(token_size=4)) == '{"token_size": 4}'
    assert embedded[-1].attrs["encoder_options"] == ""


def test_a_patch_grid_of_another_place_is_refused(embedded, tmp_path, make_grid):
    """A grid of another origin was written over the cube's pixels (wrong coordinates, no error); a larger one
    failed inside dask."""
    from changescout.errors import GridError

    cube, enc, *_ = embedded
    for other in (OutputGrid("EPSG:32631", (10.0, 0.0, 382_000.0, 0.0, -10.0, 4_836_000.0), (64, 64)), make_grid(128, 128)):
        with pytest.raises(GridError, match="the patch grid is not the cube's"):
            embed_cube(cube, enc, PatchGrid(other, 16), tmp_path / "e.zarr", "s")
    assert not (tmp_path / "e.zarr").exists()


def test_rcf_patches_on_window_edges_read_their_neighbours():
    """Invariance review: rcf's 3 x 3 convolution repeated each 256 px window's own edge pixels, so a crop of
    whole patches, with the same weights and normalisation, differed from the full run at every patch on a
    window edge of either layout (140 of 380 inner patches, by up to 1.6 in feature units)."""
    from changescout.embed import embedding_graph, fit_sample, series_statistics, stack_statistics
    from changescout.sources.synthetic import make_series

    cube, _ = make_series(seed=0, size=384, n_dates=4, n_clouds=2)
    cube = cube.persist()
    bands = list(range(cube.sizes["band"]))
    stats = stack_statistics(*series_statistics(cube, bands))
    enc = get_encoder("rcf", patch_size=16, dim=32)
    enc.fit(fit_sample(cube, bands, stats))
    full = embedding_graph(cube, enc, PatchGrid(grid_of(cube), 16), stats, bands).compute()
    r0, c0 = 3, 5  # the crop's windows fall 48 and 80 px away from the full run's
    crop = cube.isel(y=slice(r0 * 16, None), x=slice(c0 * 16, 352))
    part = embedding_graph(crop, enc, PatchGrid(grid_of(crop), 16), stats, bands).compute()
    nr, nc = part.shape[1:3]
    inner = np.s_[:, 1:-1, 1:-1]  # the crop's own edge patches read the crop's edge, repeated
    np.testing.assert_allclose(part[inner], full[:, r0:r0 + nr, c0:c0 + nc][inner], atol=1e-4)


def test_a_haze_on_one_date_leaves_the_other_dates_centres():
    """Invariance review: each pixel's median over time moved with a haze on one date, and every other date's
    centre with it (+0.03 on one date of ten: up to 0.25-0.31 of a band's scale). The offsets are now polished
    (the pixels' medians taken with the dates' offsets removed, five rounds)."""
    import xarray as xr

    from changescout.embed import series_statistics
    from changescout.sources.synthetic import make_series

    cube, _ = make_series(seed=2, size=192, n_dates=8)
    cube = cube.persist()
    bands = list(range(cube.sizes["band"]))
    centre, scale, offset = series_statistics(cube, bands)
    haze = xr.DataArray(np.where(np.arange(8) == 2, 0.03, 0.0).astype(np.float32), dims="time")
    centre2, _, offset2 = series_statistics(cube + haze, bands)
    moved = np.abs((centre2 + offset2) - (centre + offset)) / scale
    assert np.allclose(moved[2] * scale, 0.03, atol=2e-3)  # the haze is found on its date
    # and the other dates keep their centres (0.25-0.31 of a band's scale before; 0.022 on this series, whose
    # planted harvests moved with 0.3.26)
    assert np.delete(moved, 2, axis=0).max() < 0.03



def test_a_patch_is_judged_by_the_part_of_it_the_images_cover():
    """Clear fractions count the pixels the images cover (data at some date, cloudy or not): the edge patches of
    a grid snapped to whole patches (38 % of a 61 x 61 px Landsat image) never reached --min-clear as fractions
    of the whole patch; a cloud over part of a patch at every date is no edge."""
    usable = np.zeros((2, 4, 12), bool)  # patches of 4 px: inside, on the images' edge, mostly outside them
    usable[:, :, 0:4] = True
    usable[1, :2, 0:4] = False           # inside: half cloud at the second date
    usable[:, :, 4:6] = True             # edge: the images cover half of it ...
    usable[1, 0, 4:6] = False            # ... and a quarter of that is cloud at the second date
    usable[:, 0, 8:11] = True            # 3 px of 16: less than a quarter covered
    covered = usable.any(axis=0)
    np.testing.assert_allclose(clear_fractions(usable, 4, covered), [[[1, 1, 0]], [[0.5, 0.75, 0]]])
    covered[1, 8] = True                 # a quarter covered (cloudy at every date where it is not clear): judged by it
    usable[0, 1, 8] = True
    np.testing.assert_allclose(clear_fractions(usable, 4, covered)[:, 0, 2], [1, 0.75])
    usable[:, :2, 0:4] = False           # the inside patch half under a cloud at every date, its cover whole
    np.testing.assert_allclose(clear_fractions(usable, 4, covered)[:, 0, 0], [0.5, 0.5])


def _faulty_encoder(fault: str, input_: str = "reflectance"):
    """A plugin-like per-date encoder (dim 3, 16 px patches) whose output breaks its contract as ``fault`` says."""
    from changescout.encoders.base import EncoderSpec

    class Faulty:
        spec = EncoderSpec(name="faulty", version="1", dim=3, patch_size=16, window=64, input=input_)

        def encode(self, x, months):
            b, _, h, w = x.shape
            out = np.ones((b, 3, h // 16, w // 16), np.float32)
            if fault == "dim":
                return out[:, :2]
            if fault == "spatial":
                return out[:, :, :1, :1]
            if fault == "nan":
                out[:, 1, 0, 0] = np.nan
            if fault == "inf":
                out[:, 2] = np.inf
            if fault == "input":  # NaN where the input holds values past any reflectance, as galileo-nano gives
                huge = (np.abs(x) > 1e30).any(axis=1).reshape(b, h // 16, 16, w // 16, 16).any(axis=(2, 4))
                out[:, 0][huge] = np.nan
            return out

        def weights_digest(self):
            return "f"

    return Faulty()


@pytest.mark.parametrize("fault, match", [("dim", r"shape \(\d+, 2, 4, 4\) .* says \(\d+, 3, 4, 4\)"),
                                          ("spatial", r"shape \(\d+, 3, 1, 1\) .* says \(\d+, 3, 4, 4\)"),
                                          ("nan", r"not finite .* at \d+ of \d+ patch embeddings"), ("inf", "not finite")])
def test_an_encoder_output_that_breaks_its_contract_is_named(textured_cube, tmp_path, fault, match):
    """A review of plugins: another dimension failed inside dask ("chunk size unknown"), another patch grid in a
    broadcast error, and NaN or inf embeddings were taken for cloudy patches (a run blaming its source, or
    losing 6 % of its area without a word)."""
    from changescout.errors import EncoderOutputError

    cube = textured_cube(n_dates=3, size=128, seed=1)
    with pytest.raises(EncoderOutputError, match=r"encoder 'faulty' returned " + ("" if fault in ("nan", "inf") else "embeddings of ") + ".*" + match):
        embed_cube(cube, _faulty_encoder(fault), PatchGrid(grid_of(cube), 16), tmp_path / "e.zarr", "s")
    assert not (tmp_path / "e.zarr").exists()
    ds = embed_cube(cube, _faulty_encoder("none"), PatchGrid(grid_of(cube), 16), tmp_path / "e.zarr", "s")
    assert np.isfinite(ds["embedding"].values).all()


def test_nan_embeddings_of_an_undeclared_float_nodata_are_the_inputs_not_the_encoders(textured_cube, tmp_path):
    """A review: float GeoTIFFs holding GDAL's float nodata (-3.4e38) undeclared gave galileo-nano NaN at those
    patches, which the run had taken for unclear; the output check then blamed the encoder. Patches whose input
    holds values past any reflectance are left unclear, as before."""
    cube = textured_cube(n_dates=3, size=128, seed=1).compute()
    cube.values[1, :, 0:20, 0:20] = -3.4028235e38
    ds = embed_cube(cube, _faulty_encoder("input"), PatchGrid(grid_of(cube), 16), tmp_path / "e.zarr", "s")
    e = ds["embedding"].values
    assert np.isnan(e[1, 0, 0, 0]) and np.isnan(e[1, 1, 1, 0]) and np.isfinite(e[0]).all() and np.isfinite(e[1, 2:, 2:]).all()


def test_a_plugin_fed_the_runs_own_z_scores_shares_no_space_with_other_runs():
    """A plugin with the default input ("normalised": each run's own per-date z-scores) was recorded as sharing
    one embedding space: the same pixels cropped differently embedded 0.76 apart, and similar --in mixed them."""
    from changescout.embed import shares_space

    assert not shares_space(_faulty_encoder("none", input_="normalised"))
    assert shares_space(_faulty_encoder("none", input_="reflectance"))


def test_a_cube_without_its_quality_class_is_refused_by_name(textured_cube, tmp_path):
    """A (time, band, y, x) cube built by hand without the quality class failed with a bare KeyError: 'quality'."""
    cube = textured_cube(n_dates=3, size=128, seed=1)
    with pytest.raises(ConfigError, match="embed_cube needs a SeriesCube.*'quality'"):
        embed_cube(cube.drop_vars("quality"), get_encoder("rcf", patch_size=16), PatchGrid(grid_of(cube), 16),
                   tmp_path / "e.zarr", "s")
