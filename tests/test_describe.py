"""Change objects described in words from their pixels: vegetation loss or gain, brighter or darker, water."""

import numpy as np
import pandas as pd
import pytest

from changescout.cube import OutputGrid, Quality, make_cube
from changescout.describe import describe, describe_objects, index_bands

GRASS = {"B03": 0.08, "B04": 0.05, "B08": 0.40}
WATER = {"B03": 0.06, "B04": 0.04, "B08": 0.02}
ROOF = {"B03": 0.25, "B04": 0.28, "B08": 0.30}
BANDS = ["B02", "B03", "B04", "B08"]


def _cube(quality=None):
    """Two dates of grass, 4 x 4 patches of 8 px; at date 1 patch (0, 0) floods, patch (1, 1) gets a roof on
    its left half, a road 2 px wide crosses patch (2, 2), and patch (3, 3) stays grass."""
    data = np.zeros((2, 4, 32, 32), np.float32)
    for k, b in enumerate(BANDS):
        data[:, k] = GRASS.get(b, 0.04)
        data[1, k, 0:8, 0:8] = WATER.get(b, 0.05)
        data[1, k, 8:16, 8:12] = ROOF.get(b, 0.22)
        data[1, k, 16:24, 19:21] = ROOF.get(b, 0.22)
    grid = OutputGrid.from_bounds("EPSG:32631", 10, (500000, 4999680, 500320, 5000000))
    return make_cube(data, pd.to_datetime(["2021-05-01", "2021-06-01"]), BANDS, grid, quality=quality)


def _objects(cells):
    events = pd.DataFrame({"object_id": np.arange(len(cells)), "row": [r for r, _ in cells], "col": [c for _, c in cells],
                           "t0": pd.Timestamp("2021-05-01"), "t1": pd.Timestamp("2021-06-01")})
    objects = pd.DataFrame({"object_id": np.arange(len(cells)), "candidate": True})
    return objects, events


def test_each_object_is_named_after_what_its_changed_pixels_did():
    objects, events = _objects([(0, 0), (1, 1), (2, 2), (3, 3)])
    objects.loc[3, "candidate"] = False
    out = describe_objects(objects, events, _cube(), 8)
    assert out["change"].tolist()[:3] == ["water appears, vegetation loss, darker", "vegetation loss, brighter",
                                          "vegetation loss, brighter"]
    assert out["change"].iloc[3] == ""  # not a candidate: not described
    # the road covers 2 of 8 columns of its patch: the patch's mean NDVI fell by 0.22, the road's pixels' by 0.74


def test_unusable_pixels_are_left_out_and_series_without_the_bands_get_no_words():
    q = np.zeros((2, 32, 32), np.uint8)
    q[1, 0:8, 0:8] = Quality.CLOUD  # the flood's date is cloudy there: nothing to compare
    objects, events = _objects([(0, 0), (1, 1)])
    out = describe_objects(objects, events, _cube(quality=q), 8)
    assert out["change"].tolist() == ["", "vegetation loss, brighter"]  # nothing seen: no words
    unnamed = _cube().assign_coords(band=["b1", "b2", "b3", "b4"])
    assert index_bands(unnamed) is None
    assert describe_objects(objects, events, unnamed, 8)["change"].tolist() == ["", ""]


@pytest.mark.parametrize("medians, words", [
    ({"d_ndvi": -0.5, "d_brightness": 0.04, "ndwi_before": -0.6, "ndwi_after": -0.3}, "vegetation loss, brighter"),
    ({"d_ndvi": -0.2, "d_brightness": 0.2, "ndwi_before": -0.6, "ndwi_after": -0.3}, "brighter, vegetation loss"),
    ({"d_ndvi": 0.05, "d_brightness": -0.01, "ndwi_before": 0.3, "ndwi_after": -0.1}, "water recedes"),
    ({"d_ndvi": 0.05, "d_brightness": 0.01, "ndwi_before": -0.5, "ndwi_after": -0.4}, "slight change"),
])
def test_words_come_strongest_first(medians, words):
    assert describe(pd.Series(medians)) == words
