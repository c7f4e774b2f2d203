"""Synthetic series: contract, determinism, planted changes that really change, planting into real imagery."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from changescout.cube import OutputGrid, Quality, grid_of, make_cube, validate_cube
from changescout.errors import BandError, ConfigError, SourceError
from changescout.sources.synthetic import BANDS, CHANGE_TYPES, PlantedTruth, make_series, open, plant_changes, sniff

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BOUCONNE = DATA / "s2_timeseries_bouconne" / "2018_3A_Theia_Bouconne.tif"
BOUCONNE_DATES = ["2018-04-29", "2018-05-13", "2018-07-08", "2018-08-15", "2018-09-15", "2018-10-15", "2018-11-15"]
BOUCONNE_BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]


@pytest.fixture(scope="module")
def series():
    cube, truth = make_series(seed=0, size=128, n_dates=12)
    return cube, truth, cube.values


def mean_spectrum(values, t, mask):
    return values[t][:, mask].mean(axis=1)


def test_same_seed_same_series_other_seed_differs():
    a, ta = make_series(seed=3, size=128, n_dates=6)
    b, tb = make_series(seed=3, size=128, n_dates=6)
    c, tc = make_series(seed=4, size=128, n_dates=6)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(ta.masks, tb.masks)
    pd.testing.assert_frame_equal(ta.objects, tb.objects)
    assert not np.array_equal(a.values, c.values)
    assert not np.array_equal(ta.masks, tc.masks)


def test_cube_contract_grid_and_metadata(series):
    cube, truth, values = series
    validate_cube(cube)
    assert [str(b) for b in cube["band"].values] == list(BANDS)
    assert cube.dtype == np.float32 and cube.chunks is not None
    assert cube.rio.crs.to_epsg() == 32631
    grid = grid_of(cube)
    assert grid.resolution == (10.0, 10.0) and grid.shape == (128, 128)
    assert grid.transform[2] % 160 == 0 and grid.transform[5] % 160 == 0
    assert (cube["quality"].values == Quality.CLEAR).all()
    times = pd.DatetimeIndex(cube["time"].values)
    assert times[0] == pd.Timestamp("2021-01-15") and set(np.diff(times).astype("timedelta64[D]").astype(int)) <= {28, 30, 31}
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    assert cube.attrs["label"] == "synthetic" and cube.attrs["source_kind"] == "synthetic" and cube.attrs["level"] == "synthetic"
    assert cube.attrs["source"].startswith("synthetic:seed=0,size=128,n_dates=12") and cube.attrs["source_files"] == []
    assert truth.grid == grid and truth.masks.shape == (len(truth.objects), 128, 128)


def test_spectra_are_plausible(series):
    cube, _, values = series
    b = {name: i for i, name in enumerate(BANDS)}
    july = values[6]
    ndvi = (july[b["B08"]] - july[b["B04"]]) / (july[b["B08"]] + july[b["B04"]])
    green = ndvi > np.quantile(ndvi, 0.8)  # forest and crops at their peak
    assert np.median(july[b["B08"]][green]) > 4 * np.median(july[b["B04"]][green])
    water = (july[b["B03"]] - july[b["B08"]]) / (july[b["B03"]] + july[b["B08"]]) > 0.3
    assert water.mean() > 0.005 and np.median(july[b["B08"]][water]) < 0.05
    summer = np.median(values[5:8], axis=(0, 2, 3))
    assert 0.01 < summer[b["B02"]] < 0.1 and summer[b["B08"]] > 0.15


def test_counts_and_dates_of_planted_objects(series):
    cube, truth, _ = series
    obj = truth.objects
    times = pd.DatetimeIndex(cube["time"].values)
    counts = obj["type"].value_counts()
    for kind, how in CHANGE_TYPES.items():
        assert counts[kind] == 2 if how == "rare" else counts[kind] >= 3
    assert (obj.loc[obj["type"].isin(list(CHANGE_TYPES)), "kind"] == obj["type"].map(CHANGE_TYPES).dropna()).all()
    assert obj["onset"].isin(times).all() and (obj.loc[obj["kind"] != "cloud", "onset"] > times[0]).all()
    clouds = obj[obj["kind"] == "cloud"]
    assert len(clouds) >= 2
    nxt = {t: times[i + 1] for i, t in enumerate(times[:-1])}
    assert all(e == nxt.get(o, pd.NaT) or (pd.isna(e) and o == times[-1]) for o, e in zip(clouds["onset"], clouds["end"]))
    floods = obj[obj["type"] == "flood"]
    assert ((floods["end"] - floods["onset"]).dt.days.between(55, 95)).all()
    assert obj.loc[~obj["type"].isin(["flood", "cloud"]), "end"].isna().all()
    assert (obj["pixels"] == truth.masks.sum(axis=(1, 2))).all() and (obj["pixels"] > 100).all()
    changes = truth.masks[obj["kind"] != "cloud"]
    assert changes.sum(axis=0).max() == 1, "planted changes do not overlap"


def test_planted_pixels_change_at_onset_and_not_elsewhere(series):
    cube, truth, values = series
    times = pd.DatetimeIndex(cube["time"].values)
    untouched = ~truth.masks.any(axis=0)
    for (_, row), mask in zip(truth.objects.iterrows(), truth.masks):
        if row["kind"] == "cloud":
            continue
        o = times.get_loc(row["onset"])
        inside = np.linalg.norm(mean_spectrum(values, o, mask) - mean_spectrum(values, o - 1, mask))
        outside = np.linalg.norm(values[o][:, untouched] - values[o - 1][:, untouched], axis=0)
        assert inside > 1.4 * np.median(outside) and inside > 0.08, (row["type"], inside, np.median(outside))
        assert inside < 0.8, "magnitudes stay in the range of real surface changes (bare soil <-> green crop is ~0.45)"


def test_flood_recedes_to_the_earlier_state(series):
    cube, truth, values = series
    times = pd.DatetimeIndex(cube["time"].values)
    for (_, row), mask in zip(truth.objects.iterrows(), truth.masks):
        if row["type"] != "flood":
            continue
        o, e = times.get_loc(row["onset"]), times.get_loc(row["end"])
        before, flooded, after = (mean_spectrum(values, t, mask) for t in (o - 1, o, e))
        assert np.linalg.norm(after - before) < np.linalg.norm(after - flooded)  # back to land (seasons went on)
        g, n = BANDS.index("B03"), BANDS.index("B08")
        ndwi = lambda s: (s[g] - s[n]) / (s[g] + s[n])  # noqa: E731
        assert ndwi(flooded) > 0 > ndwi(after) and ndwi(before) < 0


def test_clouds_are_bright_on_their_date_only(series):
    cube, truth, values = series
    times = pd.DatetimeIndex(cube["time"].values)
    blue = values[:, BANDS.index("B02")]
    obj = truth.objects
    clouds = np.flatnonzero(obj["kind"].to_numpy() == "cloud")
    dates = np.array([times.get_loc(o) for o in obj["onset"]])
    for i in clouds:
        t = dates[i]
        assert (blue[t][truth.masks[i]] > 0.25).sum() >= 10, "a whitish core on the cloud's date"
        for other in set(range(len(times))) - {t}:
            elsewhere = truth.masks[i] & ~truth.masks[clouds[dates[clouds] == other]].any(axis=0)
            assert (blue[other][elsewhere] < 0.25).all(), "and not on other dates"


def test_clouds_can_last_two_dates_as_on_overlapping_composites():
    """``cloud_dates=2``: the same cloud on two consecutive dates (and nowhere else), ending on the date after;
    the default series is unchanged by the option."""
    cube, truth = make_series(seed=0, size=128, n_dates=8, cloud_dates=2)
    times = pd.DatetimeIndex(cube["time"].values)
    blue = cube.sel(band="B02").values
    clouds = truth.objects[truth.objects["kind"] == "cloud"]
    assert len(clouds) >= 2
    for i, c in clouds.iterrows():
        t = times.get_loc(c["onset"])
        core = truth.masks[i] & (blue[t] > 0.25)
        assert core.sum() >= 10 and np.median(blue[t + 1][core]) > 0.25  # the same cloud the next date
        assert pd.isna(c["end"]) or times.get_loc(c["end"]) == t + 2
    default, default_truth = make_series(seed=0, size=128, n_dates=8)
    assert "cloud_dates" not in default.attrs["source"]
    # the option changes the clouds only: the planted changes are those of the default series (its draws, dates)
    clouds = default_truth.objects[default_truth.objects["kind"] == "cloud"]
    assert clouds["onset"].dt.strftime("%Y-%m-%d").tolist() == ["2021-03-15", "2021-02-15", "2021-07-15"]
    changes = lambda objects: objects[objects["kind"] != "cloud"]  # noqa: E731
    pd.testing.assert_frame_equal(changes(truth.objects), changes(default_truth.objects))
    assert float(np.nansum(default.values.astype(np.float64))) == pytest.approx(205462.038, abs=0.01)
    np.testing.assert_array_equal(default.values, make_series(seed=0, size=128, n_dates=8, cloud_dates=1)[0].values)
    with pytest.raises(ConfigError, match="cloud_dates must be 1 or 2"):
        make_series(seed=0, size=128, n_dates=8, cloud_dates=3)


def test_coverage_and_polygons(series):
    _, truth, _ = series
    cov = truth.coverage(16)
    assert cov.shape == (len(truth.objects), 8, 8) and cov.max() <= 1
    np.testing.assert_allclose(cov.sum(axis=(1, 2)) * 256, truth.objects["pixels"])
    assert truth.coverage(48).shape == (len(truth.objects), 2, 2)  # incomplete edge patches dropped
    gdf = truth.to_geodataframe()
    assert gdf.crs.to_epsg() == 32631 and list(gdf["type"]) == list(truth.objects["type"])
    np.testing.assert_allclose(gdf.area, truth.objects["pixels"] * 100.0)
    sizes = pd.Series(cov.sum(axis=(1, 2)), index=truth.objects["type"]).groupby(level=0).mean()
    assert sizes.drop(["cloud", "road"]).between(1, 6).all(), sizes
    roads = truth.objects["type"].to_numpy() == "road"
    assert ((cov[roads] > 0).sum(axis=(1, 2)) >= 4).all(), "roads are long and thin"


def test_open_and_sniff_reproduce_the_series():
    assert sniff("synthetic") and sniff("synthetic:seed=2") and not sniff("/data/scene.tif")
    cube = open("synthetic", seed=2, size=128, n_dates=6, chunks={"x": 64}, bands=None)
    ref, _ = make_series(seed=2, size=128, n_dates=6)
    np.testing.assert_array_equal(cube.values, ref.values)
    again = open(cube.attrs["source"])
    np.testing.assert_array_equal(again.values, cube.values)
    assert open("synthetic:seed=2,size=128,n_dates=6,types=road+flood").attrs["source"].endswith("types=road+flood")
    with pytest.raises(ConfigError, match="unknown synthetic parameter"):
        open("synthetic:sede=2")
    with pytest.raises(SourceError):
        open("scene.tif")
    with pytest.raises(ConfigError, match="unknown change types"):
        make_series(size=128, n_dates=6, types=["landslide"])


def test_generation_is_fast():
    import time

    start = time.perf_counter()
    cube, _ = make_series(seed=1, size=256, n_dates=24)
    cube.values
    assert time.perf_counter() - start < 10


# -- planting into an existing cube -------------------------------------------------------------------
def load_bouconne():
    try:
        from changescout.sources import open_series
    except ImportError:
        import rasterio

        with rasterio.open(BOUCONNE) as src:
            data = src.read().astype(np.float32) / 10000
            t = src.transform
        from changescout.cube import OutputGrid

        grid = OutputGrid("EPSG:32631", (t.a, t.b, t.c, t.d, t.e, t.f), data.shape[1:])
        return make_cube(data.reshape(7, 10, *data.shape[1:]), BOUCONNE_DATES, BOUCONNE_BANDS, grid, attrs={"label": "bouconne"})
    return open_series(BOUCONNE, kind="stacked", dates=BOUCONNE_DATES, bands=BOUCONNE_BANDS)


@pytest.fixture(scope="module")
def bouconne():
    if not BOUCONNE.exists():
        pytest.skip(f"real data not found at {BOUCONNE}")
    return load_bouconne()


def test_plant_changes_into_real_series(bouconne):
    planted, truth = plant_changes(bouconne, seed=0)
    again, truth2 = plant_changes(bouconne, seed=0)
    validate_cube(planted)
    assert grid_of(planted) == grid_of(bouconne) and planted.rio.crs == bouconne.rio.crs
    assert planted.attrs["planted_seed"] == 0 and all(planted.attrs[k] == v for k, v in bouconne.attrs.items())
    np.testing.assert_array_equal(planted["time"].values, bouconne["time"].values)
    np.testing.assert_array_equal(planted["quality"].values, bouconne["quality"].values)
    before, after = bouconne.values, planted.values
    np.testing.assert_array_equal(after, again.values)
    pd.testing.assert_frame_equal(truth.objects, truth2.objects)
    changed = ((after != before) & ~(np.isnan(after) & np.isnan(before))).any(axis=(0, 1))
    assert changed.any() and not (changed & ~truth.masks.any(axis=0)).any()
    counts = truth.objects["type"].value_counts()
    assert all(counts[k] == 2 for k, v in CHANGE_TYPES.items() if v == "rare")
    assert counts["harvest"] == counts["clearcut"] == 8 and 2 <= counts["cloud"] <= 3  # common = many, even on 7 dates
    floods = truth.objects[truth.objects["type"] == "flood"]
    times = list(pd.DatetimeIndex(bouconne["time"].values))
    assert all(times.index(e) - times.index(o) == 2 for o, e in zip(floods["onset"], floods["end"]))
    other, _ = plant_changes(bouconne, seed=1)
    assert not np.array_equal(other.values, after)


def test_a_real_pond_dries_up_to_its_shore():
    """A pond of the cube has mixed shore pixels (more water than land, but outside the NDWI > 0 mask). When it
    dries they dry too: painting mud inside the mask alone left a dark ring of the old shore, an edge the
    encoders saw barely move (the real pond of the Bouconne series). Pixels that are mostly land stay as
    they were."""
    from changescout.sources.synthetic import _SPECTRA

    land, water = np.array(_SPECTRA["grass_green"], np.float32), np.array(_SPECTRA["water"], np.float32)
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    wet = np.select([r <= 7, r <= 8, r <= 9], [1.0, 0.6, 0.2], 0.0).astype(np.float32)  # pond, shore, margin
    image = wet * water[:, None, None] + (1 - wet) * land[:, None, None]
    grid = OutputGrid("EPSG:32631", (10.0, 0.0, 372_000.0, 0.0, -10.0, 4_836_000.0), (64, 64))
    times = pd.date_range("2020-04-01", periods=5, freq="30D")
    cube = make_cube(np.repeat(image[None], 5, axis=0), times, list(BANDS), grid)
    planted, truth = plant_changes(cube, seed=0, types=["drying"], rare_per_type=1, n_common=0, n_clouds=0)
    (mask,) = truth.masks
    assert mask[r <= 7].all() and mask[(r > 7) & (r <= 8)].all()  # the pond and its shore
    assert not mask[r > 8].any()  # mostly land: left alone
    onset = list(times).index(truth.objects["onset"][0])
    nir = planted.sel(band="B08").values
    mud = _SPECTRA["mud"][BANDS.index("B08")]
    assert np.abs(nir[onset:][:, r <= 8] - mud).max() < 0.03  # no dark ring left where the water was
    shore = (r > 7) & (r <= 8)
    np.testing.assert_allclose(nir[:onset][:, shore], np.broadcast_to(image[BANDS.index("B08")][shore], (onset, shore.sum())), atol=1e-6)


def test_plant_changes_maps_bands_by_name(series):
    cube, _, _ = series
    order = ["B8A", "B03", "B12", "B02", "B08", "B04", "B05", "B06", "B07", "B11"]
    a, ta = plant_changes(cube, seed=5, types=["construction", "road"], n_clouds=2)
    b, tb = plant_changes(cube.sel(band=order), seed=5, types=["construction", "road"], n_clouds=2)
    np.testing.assert_array_equal(ta.masks, tb.masks)
    assert float(abs(a.sel(band=order) - b).max()) < 0.04  # equal up to the painting noise
    with pytest.raises(BandError, match="near-infrared"):
        plant_changes(cube.sel(band=["B02", "B03", "B04"]), seed=0)


def test_truth_of_an_empty_plan_is_empty(series):
    cube, _, values = series
    planted, truth = plant_changes(cube, seed=0, types=[], n_clouds=0)
    assert isinstance(truth, PlantedTruth) and truth.objects.empty and truth.masks.shape == (0, 128, 128)
    np.testing.assert_array_equal(planted.values, values)


def test_written_as_geotiffs_the_series_reads_back_as_the_same_cube(tmp_path):
    """``write_geotiffs``: a user's folder (one file per date) that the GeoTIFF source reads back on the same
    grid, dates and band names, the reflectance within the int16 quantisation."""
    from changescout.sources import open_series
    from changescout.sources.synthetic import write_geotiffs

    cube, _ = make_series(seed=3, size=128, n_dates=4)
    folder = write_geotiffs(tmp_path / "series", seed=3, size=128, n_dates=4)
    assert sorted(p.name for p in folder.iterdir()) == [f"{t:%Y-%m-%d}.tif" for t in pd.DatetimeIndex(cube["time"].values)]
    back = open_series(str(folder))
    assert grid_of(back) == grid_of(cube) and list(back["band"].values) == list(BANDS)
    np.testing.assert_array_equal(back["time"].values, cube["time"].values)
    np.testing.assert_allclose(back.values, cube.values, atol=0.5e-4 + 1e-7)


def test_a_misspelt_synthetic_option_is_refused_as_in_the_uri_form():
    """``open_series("synthetic", sede=3)`` gave seed 0 without a word while ``synthetic:sede=3`` was refused."""
    from changescout.sources import open_series

    with pytest.raises(ConfigError, match="unknown synthetic parameter 'sede'"):
        open_series("synthetic", sede=3, size=128)
    with pytest.raises(ConfigError, match="synthetic: size must be a whole number in \\[0, inf\\], got 'big'"):
        open_series("synthetic", size="big")  # (told as "'<' not supported between 'str' and 'int'"; a review)
    with pytest.raises(ConfigError, match="synthetic: n_dates must be a whole number"):
        open_series("synthetic:size=128,n_dates=abc")


def test_grid_dates_bands_and_mask_given_to_the_synthetic_source_are_refused():
    """The series makes its own grid, dates and bands: a run's ``--grid`` bounds were ignored without a word
    (the run covered the whole scene)."""
    from changescout.sources import GridSpec, open_series

    with pytest.raises(ConfigError, match="--grid does not apply to the synthetic source"):
        open_series("synthetic:size=128", grid=GridSpec.parse("EPSG:32631,10,372000,4830000,373000,4836000"))
    with pytest.raises(ConfigError, match="--dates, --bands do not apply"):
        open_series("synthetic:size=128", dates="2020-01-01,2020-02-01", bands="B02,B03")
    assert open_series("synthetic:size=128,n_dates=4", patch_size=16).sizes["time"] == 4  # the usual options still pass


def test_planting_reads_sentinel2_band_names_with_or_without_the_leading_zero():
    """B2 (the Theia PROVENANCE spelling), b02, B8A and blue name the bands the planting paints, as the lookups
    of band roles read them (:func:`changescout.cube.sentinel2_band`)."""
    from changescout.sources.synthetic import BANDS, _band_index

    assert [BANDS[i] for i in _band_index(["B2", "b03", "red", "B8", "b8a", "B11", "b12"])] == [
        "B02", "B03", "B04", "B08", "B8A", "B11", "B12"]


def test_a_planted_harvest_is_no_field_the_scene_harvests_at_that_date():
    """A harvest planted on a crop field that the scene's own cycle harvested at the same date changed the pixels
    by 0.01-0.05 of reflectance: a positive identical to the background's harvests beside it, which are
    negatives (half the planted harvests of seeds 0-4; a review of the truth). The background stays green."""
    from changescout.evaluate.planted import GREEN

    for seed in (0, 6):  # (seed 6: 69 % of one field with green at the onset alone)
        _, truth = make_series(seed=seed)
        times = truth.times
        for i, obj in truth.objects[truth.objects["type"] == "harvest"].iterrows():
            o = times.get_loc(obj["onset"])
            before, at = truth.green[o - 1][truth.masks[i]], truth.green[o][truth.masks[i]]
            seasonal = (before > GREEN) & (at <= 0.5 * before)
            assert seasonal.mean() < 0.02, (seed, i, seasonal.mean())
