"""Spectral haze / cloud screening (HOT) for series without a quality mask."""

import numpy as np
import pandas as pd
import pytest

from changescout.cube import Quality, make_cube
from changescout.quality import can_screen, screen_haze

BANDS = ["B02", "B03", "B04", "B08"]
#: Surface spectra (blue, green, red, nir), as in the synthetic source and typical Sentinel-2 reflectance.
SPECTRA = {
    "cloud": [0.42, 0.42, 0.43, 0.44],
    "roof": [0.16, 0.18, 0.20, 0.26],  # bright roof
    "concrete": [0.20, 0.22, 0.25, 0.28],
    "soil": [0.07, 0.095, 0.12, 0.215],  # bare soil
    "water": [0.05, 0.06, 0.04, 0.015],
    "muddy water": [0.07, 0.09, 0.08, 0.04],
    "crop": [0.03, 0.07, 0.03, 0.45],
}


def scene(make_grid, chunks=None, quality=None):
    """64 x 64 px, 2 dates: date 0 has a cloud block at rows 0-15, cols 0-15; other covers in their own blocks."""
    data = np.zeros((2, 4, 64, 64), np.float32)
    data[:] = np.array(SPECTRA["crop"], np.float32)[:, None, None]
    data[0, :, 0:16, 0:16] = np.array(SPECTRA["cloud"], np.float32)[:, None, None]
    for i, name in enumerate(["roof", "concrete", "soil", "water", "muddy water"]):
        r0 = 28 + (i // 3) * 20
        c0 = 4 + (i % 3) * 20
        data[:, :, r0:r0 + 12, c0:c0 + 12] = np.array(SPECTRA[name], np.float32)[:, None, None]
    data[0, :, 30, 50] = np.nan  # a nodata pixel
    times = pd.to_datetime(["2021-06-01", "2021-07-01"])
    cube = make_cube(data, times, BANDS, make_grid(64, 64), quality=quality)
    return cube.chunk(chunks) if chunks else cube


def test_cloud_block_is_flagged_and_dilated(make_grid):
    q = screen_haze(scene(make_grid), dilate=3)["quality"].values
    assert (q[0, 0:16, 0:16] == Quality.CLOUD).all()
    assert (q[0, 0:19, 0:19] == Quality.CLOUD).all()  # cloud edges: dilated by 3 px
    assert (q[0, 20:, :] != Quality.CLOUD).all() and (q[0, :, 20:] != Quality.CLOUD).all()
    assert (q[1] != Quality.CLOUD).all()  # the other date is clear


@pytest.mark.parametrize("cover", ["roof", "concrete", "soil", "water", "muddy water", "crop"])
def test_bright_surfaces_stay_clear(make_grid, cover):
    data = np.broadcast_to(np.array(SPECTRA[cover], np.float32)[None, :, None, None], (1, 4, 16, 16)).copy()
    cube = make_cube(data, ["2021-06-01"], BANDS, make_grid(16, 16))
    q = screen_haze(cube)["quality"].values
    assert (q == Quality.CLEAR).all(), cover


def test_scene_other_covers_stay_clear(make_grid):
    q = screen_haze(scene(make_grid))["quality"].values
    assert (q[:, 28:60, 4:60][q[:, 28:60, 4:60] != Quality.NODATA] == Quality.CLEAR).all()


def test_nodata_and_existing_classes_are_left_alone(make_grid):
    quality = np.zeros((2, 64, 64), np.uint8)
    quality[0, 17, 17] = Quality.SHADOW  # inside the dilated cloud edge
    quality[0, 5, 5] = Quality.SNOW  # inside the cloud
    quality[1, 40, 40] = Quality.WATER
    cube = scene(make_grid, quality=quality)
    q = screen_haze(cube)["quality"].values
    assert q[0, 30, 50] == Quality.NODATA
    assert q[0, 17, 17] == Quality.SHADOW and q[0, 5, 5] == Quality.SNOW and q[1, 40, 40] == Quality.WATER
    # nodata next to a cloud stays nodata
    nan_cube = scene(make_grid)
    data = nan_cube.values.copy()
    data[0, :, 16, 16] = np.nan
    q2 = screen_haze(make_cube(data, nan_cube["time"].values, BANDS, make_grid(64, 64)))
    assert q2["quality"].values[0, 16, 16] == Quality.NODATA
    assert q2["quality"].values[0, 16, 15] == Quality.CLOUD


def test_result_does_not_depend_on_chunks(make_grid):
    """The dilation crosses chunk borders: a cloud at a chunk's edge flags pixels in the next chunk."""
    whole = screen_haze(scene(make_grid))["quality"].values
    chunked = screen_haze(scene(make_grid, chunks={"time": 1, "y": 8, "x": 8}))
    assert chunked["quality"].chunks is not None
    np.testing.assert_array_equal(chunked["quality"].values, whole)
    assert (whole[0, 16:19, 0:16] == Quality.CLOUD).all()  # rows 16-18 lie in the next chunk row


def test_screen_keeps_data_and_records_the_method(make_grid):
    cube = scene(make_grid)
    out = screen_haze(cube)
    np.testing.assert_array_equal(out.values, cube.values)
    assert "HOT" in out.attrs["cloud_screen"]
    assert "cloud_screen" not in cube.attrs
    assert (cube["quality"].values != Quality.CLOUD).all()  # the input is not modified


def test_cubes_without_blue_or_red_are_returned_unchanged(make_grid):
    data = np.full((1, 2, 16, 16), 0.5, np.float32)
    cube = make_cube(data, ["2021-06-01"], ["B08", "B11"], make_grid(16, 16))
    assert not can_screen(cube)
    assert screen_haze(cube) is cube
    named = make_cube(np.full((1, 2, 16, 16), 0.5, np.float32), ["2021-06-01"], ["blue", "red"], make_grid(16, 16))
    assert can_screen(named)
    assert (screen_haze(named)["quality"].values == Quality.CLOUD).all()  # white: 0.5 - 0.25 - 0.08 > 0


def test_screen_works_on_a_loaded_cube(make_grid):
    cube = scene(make_grid)
    expected = screen_haze(cube)["quality"].values
    np.testing.assert_array_equal(screen_haze(cube.load())["quality"].values, expected)
