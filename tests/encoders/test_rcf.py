"""The rcf encoder: deterministic, standardised features, reusable weights, window-local embeddings."""

import numpy as np
import pytest

from changescout.cube import grid_of
from changescout.embed import date_statistics, embed_cube, embedding_graph, fit_sample
from changescout.encoders import get_encoder
from changescout.encoders.rcf import RCFEncoder
from changescout.errors import BandError, ConfigError, WeightsError
from changescout.tiling import PatchGrid


def _windows(seed=0, n=4, bands=5, size=48):
    """Normalised-looking windows with spatial structure."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((n, bands, size // 4, size // 4))
    x = np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3) + 0.3 * rng.standard_normal((n, bands, size, size))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def sample():
    return _windows()


def _fit(sample, **kw):
    params = dict(patch_size=8, dim=32, seed=0, n_whitening=4000)
    params.update(kw)
    return RCFEncoder(**params).fit(sample)


def test_encode_shape_and_dtype(sample):
    enc = _fit(sample)
    out = enc.encode(sample[:2])
    assert out.shape == (2, 32, 48 // 8, 48 // 8)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert enc.spec.dim == 32 and enc.spec.patch_size == 8 and enc.spec.bands is None


def test_deterministic_from_seed(sample):
    a, b, c = _fit(sample, seed=0), _fit(sample, seed=0), _fit(sample, seed=1)
    np.testing.assert_array_equal(a.filters_, b.filters_)
    np.testing.assert_array_equal(a.encode(sample), b.encode(sample))
    assert a.weights_digest() == b.weights_digest()
    assert not np.allclose(a.encode(sample), c.encode(sample))
    assert a.weights_digest() != c.weights_digest()


def test_features_are_standardised_on_the_fit_sample(sample):
    enc = _fit(sample)
    feats = enc.encode(sample)  # (n, dim, h, w)
    flat = feats.transpose(1, 0, 2, 3).reshape(enc.dim, -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-4)
    std = flat.std(axis=1)
    live = std > 1e-3  # a filter whose ReLU never fires stays at 0
    assert live.mean() > 0.9
    np.testing.assert_allclose(std[live], 1, rtol=1e-3)
    # both ReLU signs are used: two halves of the features
    assert enc.filters_.shape == (16, 5, 3, 3)


def test_weights_roundtrip_gives_identical_embeddings_and_digest(sample, tmp_path):
    enc = _fit(sample)
    path = enc.save_weights(tmp_path / "rcf_weights.npz")
    again = get_encoder("rcf", patch_size=8, weights=path)
    assert again.is_fitted
    assert again.dim == 32
    assert again.weights_digest() == enc.weights_digest()
    assert again.spec.weights_sha256 == enc.weights_digest()
    np.testing.assert_array_equal(again.encode(sample), enc.encode(sample))
    # fitting an encoder that was given weights keeps them (it only checks the bands)
    assert again.fit(_windows(seed=5)).weights_digest() == enc.weights_digest()


def test_options_the_weights_were_not_made_with_are_refused(sample, tmp_path):
    """With --weights, dim, kernel, bias and pooling come from the file: asking for others was silently ignored
    and recorded in config.json as applied (a review); the defaults give way to the file."""
    path = _fit(sample).save_weights(tmp_path / "w.npz")  # dim 32
    assert RCFEncoder(patch_size=8, weights=path).dim == 32
    with pytest.raises(ConfigError, match=r"w.npz: rcf options that differ from the weights file's: dim 64 \(the "
                                          r"weights were made with 32\); kernel 5 \(the weights were made with 3\)"):
        RCFEncoder(patch_size=8, dim=64, kernel=5, weights=path)


def test_weights_learnt_at_another_patch_size_are_refused(sample, tmp_path):
    """Its features are standardised as pooled over the patch size it was fitted at: loaded at 16 px, weights of
    8 px patches gave features of mean -0.14 and std 1.14, silently (a review). Files written before the patch
    size was recorded still load, with their digest unchanged."""
    import json

    enc = _fit(sample)
    path = enc.save_weights(tmp_path / "w.npz")
    assert RCFEncoder(patch_size=8, weights=path).weights_digest() == enc.weights_digest()
    with pytest.raises(ConfigError, match=r"w.npz: rcf weights learnt at patch size 8 .* asked for patch size 16: run "
                                          r"with --patch-size 8, or without --weights"):
        RCFEncoder(patch_size=16, weights=path)
    with np.load(path) as z:  # as written before 0.3.22: no patch size
        arrays = {k: z[k] for k in z.files}
    params = json.loads(str(arrays["params"]))
    del params["patch_size"]
    old = tmp_path / "old.npz"
    np.savez(old, **{**arrays, "params": np.array(json.dumps(params))})
    loaded = RCFEncoder(patch_size=16, weights=old)
    assert "patch_size" not in loaded._params() and loaded.weights_digest() != enc.weights_digest()


def test_weights_for_another_band_count_raise_band_error(sample, tmp_path):
    path = _fit(sample).save_weights(tmp_path / "w.npz")
    enc = RCFEncoder(patch_size=8, weights=path)
    three = _windows(bands=3)
    with pytest.raises(BandError, match="5 bands"):
        enc.fit(three)
    with pytest.raises(BandError, match="5 bands"):
        enc.encode(three)


def test_corrupt_or_missing_weights_raise_weights_error_naming_the_file(tmp_path):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"this is not a numpy archive")
    with pytest.raises(WeightsError) as exc:
        RCFEncoder(weights=bad)
    assert str(bad) in str(exc.value) and "not a NumPy .npz archive" in str(exc.value)
    assert "pickle" not in str(exc.value)  # numpy's advice to load it unsafely is no answer for a weights file
    missing = tmp_path / "nope.npz"
    with pytest.raises(WeightsError) as exc:
        RCFEncoder(weights=missing)
    assert str(missing) in str(exc.value)
    # an npz of something else
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(WeightsError, match="not an rcf weights file: params is not a file in the archive"):
        RCFEncoder(weights=other)


def test_bad_parameters_and_unfitted_use():
    with pytest.raises(ConfigError, match="even"):
        RCFEncoder(dim=33)
    with pytest.raises(ConfigError, match="odd"):
        RCFEncoder(kernel=4)
    with pytest.raises(ConfigError, match="fitted"):
        RCFEncoder().encode(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(ConfigError, match=r"too few clear pixels .*\(found 0 in 1 windows of 16x16 px\).*--grid"):
        RCFEncoder(patch_size=8, dim=32).fit(np.full((1, 3, 16, 16), np.nan, np.float32))


def test_embedding_does_not_depend_on_dask_chunking(synthetic_cube, tmp_path):
    cube, _ = synthetic_cube
    pg = PatchGrid(grid_of(cube), 16)
    a = embed_cube(cube.chunk({"time": 1, "y": 32, "x": 48}), get_encoder("rcf", patch_size=16, dim=32), pg,
                   tmp_path / "a.zarr", "s")
    b = embed_cube(cube.chunk({"time": 4, "y": 128, "x": 128}), get_encoder("rcf", patch_size=16, dim=32), pg,
                   tmp_path / "b.zarr", "s")
    assert a.attrs["weights_sha256"] == b.attrs["weights_sha256"]
    np.testing.assert_array_equal(a["embedding"].values, b["embedding"].values)
    np.testing.assert_array_equal(a["clear_fraction"].values, b["clear_fraction"].values)


def test_embedding_of_a_window_does_not_depend_on_other_windows(textured_cube, fitted_rcf):
    """A patch's embedding is the same whether its 256 px window is encoded alone or inside a larger cube
    (2 x 2 windows): windows are placed on one grid and stitched back in their place (the patches on a window's
    edge read the pixels beyond it: alone, the window's own edge repeated; inside, its neighbours')."""
    big = textured_cube(n_dates=2, size=512, bands=tuple(f"b{i}" for i in range(10)), seed=3)
    enc, _ = fitted_rcf  # 10 bands, patch 16
    assert enc.spec.window == 256
    band_index = list(range(10))
    stats = date_statistics(big, band_index)  # the same normalisation for all crops

    def embed(c):
        return embedding_graph(c, enc, PatchGrid(grid_of(c), 16), stats, band_index).compute()

    e_big = embed(big)
    assert e_big.shape == (2, 32, 32, 33)  # (time, row, col, dim + clear fraction)
    for ys, xs in [(slice(0, 256), slice(0, 256)), (slice(0, 256), slice(256, 512)), (slice(256, 512), slice(0, 256)),
                   (slice(256, 512), slice(256, 512))]:
        e_win = embed(big.isel(y=ys, x=xs))
        assert e_win.shape == (2, 16, 16, 33)
        inside = e_big[:, ys.start // 16: ys.stop // 16, xs.start // 16: xs.stop // 16]
        np.testing.assert_allclose(inside[:, 1:-1, 1:-1], e_win[:, 1:-1, 1:-1], atol=1e-5)
        assert not np.allclose(inside, e_win, atol=1e-5)  # the edges facing the other windows read them
    # windows are not copies of each other
    assert not np.allclose(e_big[:, :16, :16], e_big[:, 16:, 16:])


def test_fit_sample_is_seeded(synthetic_cube):
    cube, _ = synthetic_cube
    stats = date_statistics(cube, list(range(10)))
    a = fit_sample(cube, list(range(10)), stats, size=32, n_windows=3, seed=1)
    b = fit_sample(cube, list(range(10)), stats, size=32, n_windows=3, seed=1)
    c = fit_sample(cube, list(range(10)), stats, size=32, n_windows=3, seed=2)
    assert a.shape == (3, 10, 32, 32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.nan_to_num(a), np.nan_to_num(c))


def test_generalised_mean_pooling_makes_a_thin_change_count():
    """A 1 px road inside an 8 px patch moves the power-3 pooled embedding further, relative to the spread of
    the scene's patches, than the plain mean (MOSAIKS, pooling=1) does (measured 1.45 times as far; for a
    change filling most of the patch the mean moves more, 0.79)."""
    before = _windows(seed=3, n=1)
    after = before.copy()
    after[0, :, 9:15, 3:4] += 3.0  # a bright line one pixel wide inside the patch at (1, 0)
    ratios = {}
    for power in (1.0, 3.0):
        enc = _fit(_windows(), pooling=power)
        a, b = enc.encode(before)[0], enc.encode(after)[0]  # (dim, 6, 6)
        d = np.linalg.norm(a - b, axis=0)
        spread = np.linalg.norm(a - a.mean(axis=(1, 2), keepdims=True), axis=0).mean()
        ratios[power] = d[1, 0] / spread
        assert d[1, 0] > 10 * np.delete(d.ravel(), 6).max()  # only the patch with the road moved
    assert ratios[3.0] > 1.25 * ratios[1.0], ratios
    with pytest.raises(ConfigError):
        RCFEncoder(pooling=0.5)


def test_version_1_weights_load_as_mean_pooling(sample, tmp_path):
    """A version-1 weights file (mean pooling, no ``pooling`` entry) loads as the mean with the same digest and
    encoder version, so runs made with it stay comparable; power-3 pooling is version 2."""
    import json

    enc = _fit(sample, pooling=1.0)
    path = enc.save_weights(tmp_path / "v1.npz")
    with np.load(path) as z:
        params = json.loads(str(z["params"]))
    assert params["version"] == "1" and "pooling" not in params  # what version 1 wrote
    old = RCFEncoder(patch_size=8, weights=path)
    assert old.pooling == 1.0 and old.spec.version == "1" and old.weights_digest() == enc.weights_digest()
    np.testing.assert_array_equal(old.encode(sample), enc.encode(sample))
    assert _fit(sample).spec.version == "2" and _fit(sample).weights_digest() != enc.weights_digest()


def test_two_areas_sharing_weights_share_one_embedding_space(tmp_path):
    """A run given another run's rcf weights normalises its input with that run's centre and scale: the patches
    the two areas share get the same embeddings (each area normalised on its own, they differed by about half
    their norm on the Bouconne series), and the weights file carries that normalisation."""
    import json

    from changescout.sources.synthetic import make_series

    cube, _ = make_series(seed=2, size=224, n_dates=4)
    a, b = cube.isel(x=slice(0, 128)), cube.isel(x=slice(96, 224))  # 32 px (2 patch columns) shared
    enc_a = get_encoder("rcf", patch_size=16, dim=32, seed=0)
    ea = embed_cube(a, enc_a, PatchGrid(grid_of(a), 16), tmp_path / "a.zarr", "a")
    path = enc_a.save_weights(tmp_path / "rcf_weights.npz")
    enc_b = get_encoder("rcf", patch_size=16, dim=32, weights=path)
    centre, scale = enc_b.input_normalisation
    np.testing.assert_array_equal(centre, enc_a.input_normalisation[0])
    assert enc_b.weights_digest() == enc_a.weights_digest()
    assert enc_b.input_bands == [str(v) for v in cube["band"].values]
    eb = embed_cube(b, enc_b, PatchGrid(grid_of(b), 16), tmp_path / "b.zarr", "b")
    norm = json.loads(eb.attrs["normalisation"])
    assert norm["shared"] is True
    bands = list(range(b.sizes["band"]))
    expected = date_statistics(b, bands, reference=(centre, scale))
    np.testing.assert_allclose(norm["centre_scale"], np.round(expected, 6))
    assert not np.allclose(expected, date_statistics(b, bands))  # the area's own centre and scale differ
    # the same bands in another order (or other bands) do not take the first run's normalisation
    swapped = b.isel(band=[1, 0, *range(2, b.sizes["band"])])
    with pytest.raises(BandError, match="learnt on the bands"):
        embed_cube(swapped, get_encoder("rcf", patch_size=16, dim=32, weights=path), PatchGrid(grid_of(b), 16),
                   tmp_path / "s.zarr", "b")
    shared_a = ea["embedding"].values[:, :, 7]  # column 112-128 of the cube: inside both areas, off b's edge
    shared_b = eb["embedding"].values[:, :, 1]
    rel = np.linalg.norm(shared_a - shared_b, axis=-1) / np.linalg.norm(shared_a, axis=-1)
    assert np.median(rel) < 0.1, np.median(rel)  # measured 0.05: each area's own date offsets
    # the same area without the shared normalisation (weights written before they carried it) is further off
    enc_old = get_encoder("rcf", patch_size=16, dim=32, weights=path)
    enc_old.input_centre_ = enc_old.input_scale_ = None
    eo = embed_cube(b, enc_old, PatchGrid(grid_of(b), 16), tmp_path / "o.zarr", "b")
    assert json.loads(eo.attrs["normalisation"])["shared"] is False
    rel_old = np.linalg.norm(shared_a - eo["embedding"].values[:, :, 1], axis=-1) / np.linalg.norm(shared_a, axis=-1)
    assert np.median(rel_old) > 5 * np.median(rel), (np.median(rel_old), np.median(rel))  # measured 0.86


def test_input_normalisation_of_the_wrong_size_is_a_band_error():
    """One centre and one scale per band: other sizes are refused with a band error, fitted or not (it was an
    AttributeError before the filters existed)."""
    with pytest.raises(BandError, match="one centre and one scale per band"):
        RCFEncoder().set_input_normalisation(np.zeros(3), np.ones(4), ["a", "b", "c"])


def test_a_filter_that_never_fired_in_the_sample_does_not_blow_up_later():
    """A feature whose ReLU never fired on the fit sample had its std floored at 1e-6: where it fired later (on a
    Landsat series, a partly masked patch) it reached 19 000 while the others stayed at 1-10, and that patch's
    change ranked as the run's largest by far. Stds are floored at a tenth of the median one."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48] / 48
    smooth = rng.normal(size=(4, 3, 1, 1)) * yy + rng.normal(size=(4, 3, 1, 1)) * xx  # ramps: few filters fire
    smooth = (smooth + 0.01 * rng.standard_normal((4, 3, 48, 48))).astype(np.float32)
    enc = RCFEncoder(patch_size=8, dim=32, seed=0, n_whitening=4000).fit(smooth)
    assert enc.feature_std_.min() >= 0.1 * np.median(enc.feature_std_) * (1 - 1e-6)
    textured = enc.encode(_windows(bands=3))  # structure the sample never had
    assert np.isfinite(textured).all() and np.abs(textured).max() < 1000  # 2.4 million before
