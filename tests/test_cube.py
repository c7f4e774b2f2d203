"""The SeriesCube contract: output grid, make_cube, validation."""

import math

import numpy as np
import pandas as pd
import pytest

from changescout.cube import OutputGrid, Quality, grid_of, make_cube, sort_by_time, usable_mask, validate_cube
from changescout.errors import GridError, SourceError


# -- OutputGrid ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bounds",
    [
        (372_003.0, 4_835_001.0, 372_500.0, 4_836_010.0),
        (372_000.0, 4_834_880.0, 372_640.0, 4_836_160.0),  # already on the lattice
        (-1_234.5, -987.0, 77.0, 1_500.25),  # negative coordinates floor/ceil outward too
    ],
)
def test_from_bounds_snaps_outward_to_patch_multiples_and_covers(bounds):
    snap = 16 * 10.0
    g = OutputGrid.from_bounds("EPSG:32631", 10.0, bounds, snap=snap)
    left, bottom, right, top = g.bounds
    # origin on the lattice of whole patches
    assert left / snap == pytest.approx(round(left / snap))
    assert top / snap == pytest.approx(round(top / snap))
    # whole patches
    assert g.shape[0] % 16 == 0 and g.shape[1] % 16 == 0
    # covers the requested bounds, by less than one patch on each side
    assert left <= bounds[0] < left + snap
    assert top >= bounds[3] > top - snap
    assert right >= bounds[2] and right - bounds[2] < snap
    assert bottom <= bounds[1] and bounds[1] - bottom < snap
    assert g.resolution == (10.0, 10.0)
    assert g.crs == "EPSG:32631"


def test_from_bounds_exact_values():
    g = OutputGrid.from_bounds(32631, 10, (372_003, 4_835_001, 372_500, 4_836_010), snap=160)
    assert g.transform == (10.0, 0.0, 372_000.0, 0.0, -10.0, 4_836_160.0)
    assert g.shape == (128, 64)


def test_from_bounds_without_snap_rounds_up_and_tolerates_float_noise():
    g = OutputGrid.from_bounds("EPSG:4326", 0.1, (0.0, 0.0, 1.0000000001, 0.55))
    assert g.shape == (6, 10)  # 0.55 / 0.1 -> 6 rows; 1.0000000001 / 0.1 -> 10 columns, not 11


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(resolution=0, bounds=(0, 0, 1, 1)), "resolution"),
        (dict(resolution=1, bounds=(1, 0, 0, 1)), "bounds"),
        (dict(resolution=1, bounds=(0, 1, 1, 0)), "bounds"),
    ],
)
def test_from_bounds_rejects_bad_input(kwargs, match):
    with pytest.raises(GridError, match=match):
        OutputGrid.from_bounds("EPSG:32631", **kwargs)


def test_grid_rejects_rotated_or_south_up_and_unknown_crs():
    with pytest.raises(GridError, match="north-up"):
        OutputGrid("EPSG:32631", (10.0, 0.0, 0.0, 0.0, 10.0, 0.0), (4, 4))
    with pytest.raises(GridError, match="CRS"):
        OutputGrid.from_bounds("not a crs", 10, (0, 0, 100, 100))


def test_grid_coordinates_dict_roundtrip_and_digest(make_grid):
    g = make_grid(32, 48)
    assert g.x[0] == 372_005.0 and g.x[-1] == 372_000.0 + 10 * 47.5
    assert g.y[0] == 4_835_995.0 and g.y[-1] == 4_836_000.0 - 10 * 31.5
    assert g.bounds == (372_000.0, 4_836_000.0 - 320, 372_000.0 + 480, 4_836_000.0)
    assert OutputGrid.from_dict(g.to_dict()) == g
    assert OutputGrid.from_dict(g.to_dict()).digest() == g.digest()
    assert make_grid(32, 64).digest() != g.digest()


# -- make_cube / validate_cube -------------------------------------------------------------------------
def _data(nt=3, nb=2, n=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 0.5, (nt, nb, n, n)).astype(np.float32)


TIMES = ["2021-01-01", "2021-02-01", "2021-03-01"]


def test_make_cube_marks_nan_pixels_nodata_and_keeps_grid(make_grid):
    data = _data()
    data[1, 0, 3, 4] = np.nan  # one band missing is enough
    data[2, :, 0, 0] = np.nan
    g = make_grid(16, 16)
    cube = make_cube(data, TIMES, ["red", "nir"], g)
    q = cube["quality"].values
    assert q.dtype == np.uint8
    assert q[1, 3, 4] == Quality.NODATA and q[2, 0, 0] == Quality.NODATA
    assert (q == Quality.NODATA).sum() == 2
    assert (q == Quality.CLEAR).sum() == q.size - 2
    assert cube.dtype == np.float32
    assert grid_of(cube) == g
    assert str(cube.rio.crs) == "EPSG:32631"
    validate_cube(cube)


def test_make_cube_with_quality_sets_nodata_pixels_to_nan_and_keeps_classes(make_grid):
    data = _data()
    quality = np.zeros((3, 16, 16), np.uint8)
    quality[0, 5, 5] = Quality.NODATA
    quality[1, 6, 6] = Quality.CLOUD
    quality[2, 7, 7] = Quality.WATER
    data[2, 1, 8, 8] = np.nan  # NaN wins over a CLEAR quality
    cube = make_cube(data, TIMES, ["red", "nir"], make_grid(16, 16), quality=quality)
    vals, q = cube.values, cube["quality"].values
    assert np.isnan(vals[0, :, 5, 5]).all()
    assert np.isfinite(vals[1, :, 6, 6]).all() and q[1, 6, 6] == Quality.CLOUD
    assert q[2, 7, 7] == Quality.WATER and q[2, 8, 8] == Quality.NODATA
    usable = usable_mask(q)
    assert usable[2, 7, 7] and not usable[1, 6, 6] and not usable[0, 5, 5]


def test_make_cube_sorts_dates_and_refuses_duplicates(make_grid):
    data = _data()
    cube = make_cube(data, ["2021-03-01", "2021-01-01", "2021-02-01"], ["red", "nir"], make_grid(16, 16))
    assert list(pd.DatetimeIndex(cube["time"].values).strftime("%m")) == ["01", "02", "03"]
    np.testing.assert_array_equal(cube.isel(time=0).values, data[1])
    with pytest.raises(SourceError, match="2021-01-01"):
        make_cube(data, ["2021-01-01", "2021-01-01", "2021-02-01"], ["red", "nir"], make_grid(16, 16))


def test_make_cube_refuses_duplicate_band_names_naming_them(make_grid):
    with pytest.raises(SourceError, match=r"band names must be unique, but nir occurs more than once in the band names"):
        make_cube(_data(), TIMES, ["nir", "nir"], make_grid(16, 16))


def test_make_cube_rejects_shape_mismatches(make_grid):
    with pytest.raises(GridError, match="16x16"):
        make_cube(_data(), TIMES, ["red", "nir"], make_grid(16, 32))
    with pytest.raises(SourceError, match="band names"):
        make_cube(_data(), TIMES, ["red"], make_grid(16, 16))


@pytest.fixture
def cube(make_grid):
    return make_cube(_data(), TIMES, ["red", "nir"], make_grid(16, 16))


def test_validate_cube_rejects_wrong_dims(cube):
    with pytest.raises(SourceError, match="dims"):
        validate_cube(cube.transpose("band", "time", "y", "x"))


def test_validate_cube_rejects_wrong_dtype(cube):
    with pytest.raises(SourceError, match="float32"):
        validate_cube(cube.astype("float64"))


def test_validate_cube_rejects_duplicate_or_unsorted_dates(cube):
    dup = cube.assign_coords(time=pd.to_datetime(["2021-01-01", "2021-01-01", "2021-02-01"]).values)
    with pytest.raises(SourceError, match="increasing"):
        validate_cube(dup)
    rev = cube.assign_coords(time=cube["time"].values[::-1])
    with pytest.raises(SourceError, match="increasing"):
        validate_cube(rev)
    # sort_by_time refuses the duplicate and names the date
    with pytest.raises(SourceError, match="2021-01-01"):
        sort_by_time(dup)
    # two images of one day (a datacube with times of day): event ids name dates by day, so one would
    # name two changes
    same_day = cube.assign_coords(time=pd.to_datetime(["2021-01-01T10:30", "2021-01-01T10:35", "2021-02-01T10:30"]).values)
    with pytest.raises(SourceError, match="one image per day"):
        validate_cube(same_day)
    with pytest.raises(SourceError, match=r"several images for the date\(s\) \['2021-01-01'\].*mosaic"):
        sort_by_time(same_day)


def test_validate_cube_rejects_missing_quality_duplicate_bands_and_no_crs(cube):
    with pytest.raises(SourceError, match="quality"):
        validate_cube(cube.drop_vars("quality"))
    with pytest.raises(SourceError, match="unique, but red occurs more than once"):
        validate_cube(cube.assign_coords(band=["red", "red"]))
    with pytest.raises(SourceError, match="DataArray"):
        validate_cube(cube.values)
    nocrs = cube.copy()
    nocrs = nocrs.drop_vars("spatial_ref")
    nocrs.attrs.pop("crs", None)
    with pytest.raises(GridError, match="CRS"):
        validate_cube(nocrs)


def test_quality_classes_are_the_documented_codes():
    assert [int(q) for q in Quality] == [0, 1, 2, 3, 4, 5]
    assert [q.name for q in Quality] == ["CLEAR", "NODATA", "CLOUD", "SHADOW", "SNOW", "WATER"]
    assert math.isclose(usable_mask(np.array([0, 1, 2, 3, 4, 5])).sum(), 2)


def test_make_cube_sets_every_band_of_a_nodata_pixel_to_nan(make_grid):
    """make_cube's docstring: "Pixels marked NODATA are set to NaN" -- also when quality is derived."""
    data = _data()
    data[1, 0, 3, 4] = np.nan  # only band 0 missing
    cube = make_cube(data, TIMES, ["red", "nir"], make_grid(16, 16))
    assert cube["quality"].values[1, 3, 4] == Quality.NODATA
    assert np.isnan(cube.values[1, :, 3, 4]).all()


@pytest.mark.parametrize("name, expected", [
    ("B2", "B02"), ("b2", "B02"), ("B02", "B02"), ("b09", "B09"), ("B9", "B09"), ("B8", "B08"), ("b8a", "B8A"),
    ("B8A", "B8A"), ("B10", "B10"), ("B11", "B11"), ("b12", "B12"),
    ("B13", "B13"), ("B0", "B0"), ("SR_B2", "SR_B2"), ("red", "red"), ("B02_10m", "B02_10m"), (" B3 ", "B03"),
])
def test_sentinel2_band_names_are_read_with_or_without_the_leading_zero(name, expected):
    """Sentinel-2's products write B02, many tools and the Theia PROVENANCE B2: one band (a lookup's reading; the
    cube keeps the names it was given)."""
    from changescout.cube import sentinel2_band

    assert sentinel2_band(name) == expected
