"""Change objects described in words from their pixels: vegetation loss or gain, brighter or darker, water."""

import numpy as np
import pandas as pd
import pytest

from changescout.cube import OutputGrid, Quality, make_cube
from changescout.describe import describe, describe_objects, index_bands

GRASS = {"B02": 0.04, "B03": 0.08, "B04": 0.05, "B08": 0.40}
WATER = {"B02": 0.07, "B03": 0.06, "B04": 0.04, "B08": 0.02}
ROOF = {"B02": 0.22, "B03": 0.25, "B04": 0.28, "B08": 0.30}
SOIL = {"B02": 0.08, "B03": 0.10, "B04": 0.14, "B08": 0.22}
BANDS = ["B02", "B03", "B04", "B08"]


def _paint(data, t, window, cover):
    for k, b in enumerate(BANDS):
        data[t, k][window] = cover[b]


def _cube(quality=None, season=1.0):
    """Three dates of grass, 4 x 4 patches of 8 px. At date 1: patch (0, 2) floods, patch (2, 0) gets a roof on
    its left half, a road 2 px wide crosses patch (1, 3), a 3 px speck of soil appears in patch (3, 1); the
    scene's NIR is multiplied by ``season``. At date 2 the whole of patch (0, 0) is a roof."""
    data = np.zeros((3, 4, 32, 32), np.float32)
    for t in (0, 1, 2):
        _paint(data, t, np.s_[:, :], GRASS)
    data[1:, 3] *= season
    for t in (1, 2):
        _paint(data, t, np.s_[0:8, 16:24], WATER)
        _paint(data, t, np.s_[16:24, 0:4], ROOF)
        _paint(data, t, np.s_[8:16, 27:29], ROOF)
        _paint(data, t, np.s_[24:25, 8:11], SOIL)
    _paint(data, 2, np.s_[0:8, 0:8], ROOF)
    if quality is not None:
        quality = np.concatenate([quality, quality[-1:]])
    grid = OutputGrid.from_bounds("EPSG:32631", 10, (500000, 4999680, 500320, 5000000))
    return make_cube(data, pd.to_datetime(["2021-05-01", "2021-06-01", "2021-07-01"]), BANDS, grid, quality=quality)


def _objects(cells, t0="2021-05-01", t1="2021-06-01"):
    n = len(cells)
    events = pd.DataFrame({"object_id": np.arange(n), "row": [r for r, _ in cells], "col": [c for _, c in cells],
                           "t0": pd.Timestamp(t0), "t1": pd.Timestamp(t1)})
    return pd.DataFrame({"object_id": np.arange(n), "candidate": True}), events


CELLS = [(0, 2), (2, 0), (1, 3), (3, 1), (3, 3)]  # flood, roof, road, speck, unchanged


def test_each_object_is_named_after_what_its_changed_pixels_did():
    objects, events = _objects(CELLS)
    objects.loc[4, "candidate"] = False
    out = describe_objects(objects, events, _cube(), 8)
    assert out["change"].tolist() == ["water appears, vegetation loss", "brighter, vegetation loss",
                                      "brighter, vegetation loss", "slight change", ""]  # (not a candidate)
    # the road: 2 of 8 columns of its patch; its pixels' NDVI fell by 0.74, the patch mean's by 0.22


def test_the_scenes_own_change_is_taken_off():
    """The whole scene's NIR halves (senescence, NDVI -0.18): unchanged grass is no 'vegetation loss'; the roof
    still is one."""
    objects, events = _objects(CELLS[1:] + [(3, 3)])
    out = describe_objects(objects, events, _cube(season=0.5), 8)["change"].tolist()
    assert out[0] == "brighter, vegetation loss" and out[-1] == "slight change"


def test_only_an_objects_onset_patches_and_its_own_dates_count():
    objects, events = _objects([(0, 2), (2, 0)])
    later = pd.DataFrame({"object_id": [0], "row": [0], "col": [0], "t0": pd.Timestamp("2021-06-01"),
                          "t1": pd.Timestamp("2021-07-01")})  # a later change of the object (its end): not its onset
    out = describe_objects(objects, pd.concat([events, later], ignore_index=True), _cube(), 8)
    assert out["change"].iloc[0] == "water appears, vegetation loss"


def test_unusable_pixels_are_left_out_and_series_without_the_bands_get_no_words():
    q = np.zeros((2, 32, 32), np.uint8)
    q[1, 0:8, 16:24] = Quality.CLOUD  # the flood's date is cloudy there: nothing to compare
    objects, events = _objects(CELLS[:2])
    out = describe_objects(objects, events, _cube(quality=q), 8)
    assert out["change"].tolist() == ["", "brighter, vegetation loss"]  # nothing seen: no words
    unnamed = _cube().assign_coords(band=["b1", "b2", "b3", "b4"])
    assert index_bands(unnamed) is None
    assert describe_objects(objects, events, unnamed, 8)["change"].tolist() == ["", ""]


def test_a_series_without_a_green_band_is_described_from_red_and_near_infrared():
    """A Landsat series of bands 3-5 (red, NIR, SWIR) had no words at all (UAT): the red band stands in for the
    green one, for brightness and for water (a dark pixel whose NIR is below its red)."""
    objects, events = _objects(CELLS[:3])
    red_nir = _cube().isel(band=[2, 3]).assign_coords(band=["red", "nir"])
    assert index_bands(red_nir) == ["red", "nir"]
    out = describe_objects(objects, events, red_nir, 8)["change"].tolist()
    assert out == ["water appears, vegetation loss", "brighter, vegetation loss", "brighter, vegetation loss"]
    tm = _cube().isel(band=[2, 3]).assign_coords(band=["b3", "b4"], platform=("time", ["landsat-5"] * 3))
    assert index_bands(tm) == ["b3", "b4"]  # TM's red and near infrared


@pytest.mark.parametrize("platform, bands, expected", [
    ("landsat-5", ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5"], ["SR_B2", "SR_B3", "SR_B4"]),
    ("landsat-8", ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6"], ["SR_B3", "SR_B4", "SR_B5"]),
    (None, ["blue", "green", "red", "nir"], ["green", "red", "nir"]),
])
def test_index_bands_follow_each_sensors_numbering(platform, bands, expected):
    cube = _cube().isel(band=[0, 1, 2, 3, 3][: len(bands)]).assign_coords(band=bands)
    if platform:
        cube = cube.assign_coords(platform=("time", [platform] * cube.sizes["time"]))
    assert index_bands(cube) == expected


def _pixels(n=100, ndvi=(0.7, 0.7), vis=(0.06, 0.06), water=(False, False)):
    return pd.DataFrame({"ndvi0": np.full(n, ndvi[0]), "ndvi1": np.full(n, ndvi[1]), "vis0": np.full(n, vis[0]),
                         "vis1": np.full(n, vis[1]), "water0": water[0], "water1": water[1]})


@pytest.mark.parametrize("pixels, words", [
    (_pixels(ndvi=(0.7, 0.2), vis=(0.06, 0.1)), "vegetation loss, brighter"),
    (_pixels(ndvi=(0.7, 0.6), vis=(0.06, 0.3)), "brighter"),
    (_pixels(ndvi=(-0.3, 0.25), vis=(0.05, 0.12), water=(True, False)), "water recedes, brighter"),  # a pond to mud: no gain
    (_pixels(ndvi=(0.1, 0.6), vis=(0.1, 0.06)), "vegetation gain, darker"),
    (_pixels(ndvi=(0.1, 0.2)), "slight change"),
])
def test_words_come_strongest_first(pixels, words):
    assert describe(pixels) == words


def test_only_the_best_ranked_candidates_are_described():
    objects, events = _objects(CELLS[:3])
    objects["rank"] = [3, 1, 2]
    out = describe_objects(objects, events, _cube(), 8, top=2)
    assert out["change"].tolist() == ["", "brighter, vegetation loss", "brighter, vegetation loss"]
