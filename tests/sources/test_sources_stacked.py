import numpy as np
import pandas as pd
import pytest

import make_sources as ms
from changescout.cube import Quality, grid_of
from changescout.errors import ConfigError, SourceError
from changescout.sources import open_series

H, W = ms.SHAPE


def native(cube):
    left, top = ms.ORIGIN
    return cube.sel(x=slice(left, left + W * ms.RES), y=slice(top, top - H * ms.RES))


def test_date_major_values_round_trip(tmp_path):
    path = ms.stacked_file(tmp_path / "stack.tif")
    shuffled = [ms.DATES[2], ms.DATES[0], ms.DATES[1]]  # dates in the file's order, not sorted
    cube = open_series(path, dates=shuffled, bands=ms.BANDS, patch_size=8, chunks=16)
    assert cube.attrs["source_kind"] == "stacked" and cube.attrs["level"] == "unknown"
    assert cube.attrs["label"] == "stack" and cube.attrs["source_files"] == [str(path.resolve())]
    assert list(pd.DatetimeIndex(cube.time.values)) == list(pd.to_datetime(sorted(ms.DATES)))
    values = native(cube).values
    for t_file, date in enumerate(shuffled):
        t = sorted(ms.DATES).index(date)
        np.testing.assert_allclose(values[t], ms.scene(t_file) / 10000, rtol=1e-6)
    assert grid_of(cube).transform[2] % (8 * ms.RES) == 0
    assert (native(cube).quality.values == Quality.CLEAR).all()


def test_band_descriptions_name_the_bands_and_level_option(tmp_path):
    path = ms.stacked_file(tmp_path / "stack.tif", descriptions=True)
    cube = open_series(path, dates=ms.DATES, level="L3A")
    assert list(cube.band.values) == list(ms.BANDS) and cube.attrs["level"] == "L3A"


def test_mask_band_in_the_stack(tmp_path):
    data = np.concatenate([np.concatenate([ms.scene(t, 2), ms.fmask(t)[None].astype(np.int16)]) for t in range(2)])
    path = ms.write_geotiff(tmp_path / "with_mask.tif", data)
    cube = open_series(path, kind="stacked", dates=ms.DATES[:2], bands=["red", "nir", "fmask"], patch_size=4)
    assert list(cube.band.values) == ["red", "nir"]
    q = native(cube).quality.values
    assert (q[:, 0:4, 0:6] == Quality.CLOUD).all() and (q[:, 36:40, 40:44] == Quality.NODATA).all()


def test_stacked_errors_say_the_numbers(tmp_path):
    path = ms.stacked_file(tmp_path / "stack.tif")
    with pytest.raises(SourceError, match=r"stack.tif: a stacked GeoTIFF \(12 bands\) does not say its dates"):
        open_series(path)
    with pytest.raises(SourceError, match=r"stack.tif: has 12 bands but 3 dates x 5 bands = 15"):
        open_series(path, dates=ms.DATES, bands=["a", "b", "c", "d", "e"])
    with pytest.raises(SourceError, match=r"stack.tif: has 12 bands and no band descriptions; pass bands=.* 4 bands"):
        open_series(path, dates=ms.DATES)
    with pytest.raises(ConfigError, match="dates must be dates"):
        open_series(path, dates=["2020-01-01", "soon", "later"], bands=ms.BANDS)
    with pytest.raises(SourceError, match="stack.tif: holds 12 mask bands but the series has 3 dates"):
        open_series(path, dates=ms.DATES, bands=ms.BANDS, mask=path, mask_convention="fmask")
