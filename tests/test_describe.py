"""Change objects described in words from their pixels: vegetation loss or gain, brighter or darker, water."""

import numpy as np
import pandas as pd
import pytest

from changescout.cube import OutputGrid, Quality, make_cube
from changescout.describe import describe, describe_objects, index_bands, unread_bands

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


@pytest.mark.parametrize("n_cut", [4, 5, 9])
def test_a_change_over_most_of_the_scene_is_not_taken_for_the_scenes_own(n_cut):
    """The scene's own change was the median of every patch, the object's too: a clear-cut over 5 or 9 of 9
    patches (a scene clipped to it, a disaster's image pair) was the scene's change and read "slight change"
    (a review). It is measured outside the candidate objects, and with too little left the scene holds."""
    data = np.zeros((2, 4, 24, 24), np.float32)
    _paint(data, 0, np.s_[:, :], GRASS)
    _paint(data, 1, np.s_[:, :], GRASS)
    cut = [(r, c) for r in range(3) for c in range(3)][:n_cut]
    for r, c in cut:
        _paint(data, 1, np.s_[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8], SOIL)
    grid = OutputGrid.from_bounds("EPSG:32631", 10, (500000, 4999760, 500240, 5000000))
    cube = make_cube(data, pd.to_datetime(["2021-05-01", "2021-08-01"]), BANDS, grid)
    events = pd.DataFrame({"object_id": 0, "row": [r for r, _ in cut], "col": [c for _, c in cut],
                           "t0": pd.Timestamp("2021-05-01"), "t1": pd.Timestamp("2021-08-01")})
    out = describe_objects(pd.DataFrame({"object_id": [0], "candidate": True}), events, cube, 8)
    assert out["change"].tolist() == ["vegetation loss, brighter"]


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
    with pytest.warns(UserWarning, match="no change descriptions"):
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


def test_a_change_among_pixels_that_went_the_other_way_is_named_by_the_stronger_way():
    """A road through fields that greened up that month (the demo's planted road: 354 pixels of NDVI -0.67 and
    brightness +0.12 among 632 of +0.21 and -0.02) read "slight change": the median lay between the two ways (an
    analyst review). Two ways of about equal weight are named by the median of all, as before, and so is an
    object with a few pixels the other way."""
    road = _pixels(354, ndvi=(0.8, 0.13), vis=(0.06, 0.18))
    crops = _pixels(632, ndvi=(0.5, 0.71), vis=(0.08, 0.06))
    assert describe(pd.concat([road, crops], ignore_index=True)) == "vegetation loss, brighter"
    even = _pixels(500, ndvi=(0.5, 0.71), vis=(0.06, 0.06))  # as much gain as the road's loss: no way prevails
    assert describe(pd.concat([_pixels(160, ndvi=(0.8, 0.13), vis=(0.06, 0.06)), even], ignore_index=True)) == "vegetation gain"
    few = _pixels(20, ndvi=(0.5, 0.71), vis=(0.08, 0.06))  # under a quarter: the median of all, as before
    assert describe(pd.concat([road, few], ignore_index=True)) == describe(road) == "vegetation loss, brighter"


def test_only_the_best_ranked_candidates_are_described():
    objects, events = _objects(CELLS[:3])
    objects["rank"] = [3, 1, 2]
    out = describe_objects(objects, events, _cube(), 8, top=2)
    assert out["change"].tolist() == ["", "brighter, vegetation loss", "brighter, vegetation loss"]


# -- the brightness word follows the object's own change; snow and ice; Sentinel-2's bare band numbers ---------

def _scaled_cube(factors, bands=BANDS):
    """Two dates of grass, 4 x 4 patches of 8 px; at date 1 every band of patch ``(r, c)`` is multiplied by
    ``factors.get((r, c), 3.0)``: the whole scene brightens 3 times (NDVI unchanged), patches named otherwise."""
    data = np.zeros((2, len(bands), 32, 32), np.float32)
    for t in (0, 1):
        for k, b in enumerate(BANDS):
            data[t, k] = GRASS[b]
    for r in range(4):
        for c in range(4):
            data[1, :, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] *= factors.get((r, c), 3.0)
    grid = OutputGrid.from_bounds("EPSG:32631", 10, (500000, 4999680, 500320, 5000000))
    return make_cube(data, pd.to_datetime(["2021-05-01", "2021-06-01"]), bands, grid)


def test_an_object_that_brightened_less_than_the_scene_is_not_called_darker():
    """UAT (Landsat, object 18): red 0.13 -> 0.32 on the object's pixels while the scene's median patch
    brightened by 0.2; beyond the scene that is -0.03, and the object was called "darker". Here the scene's
    brightness triples (0.065 -> 0.195), one patch's doubles (+0.065), one stays (0), one triples like the scene."""
    objects, events = _objects([(0, 0), (1, 1), (2, 2)])
    out = describe_objects(objects, events, _scaled_cube({(0, 0): 2.0, (1, 1): 1.0}), 8)["change"].tolist()
    assert out == ["brighter (less than the scene)", "darker relative to the scene", "slight change"]


@pytest.mark.parametrize("vis0_own, words", [
    (0.13, "brighter (less than the scene)"),  # its own brightness rose by 0.17: never "darker"
    (0.30, "darker relative to the scene"),  # its own held while the scene brightened
    (0.40, "darker"),  # its own fell too
])
def test_the_brightness_word_never_goes_against_the_pixels_own_change(vis0_own, words):
    """``vis0`` is moved by the scene's own change (+0.2 here): ``vis1 - vis0`` is -0.03 beyond the scene."""
    pixels = _pixels(ndvi=(0.1, 0.1), vis=(0.33, 0.30)).assign(vis0_own=vis0_own)
    assert describe(pixels) == words


@pytest.mark.parametrize("ndvi0_own, words", [
    (0.40, "vegetation gain"),  # its own NDVI rose by 0.3 too
    (0.70, "vegetation gain relative to the scene"),  # its own held while the scene's fell
    (0.90, "vegetation loss (less than the scene)"),  # its own fell by 0.2, the scene's by 0.5: never "gain"
])
def test_the_vegetation_word_never_goes_against_the_pixels_own_change(ndvi0_own, words):
    """UAT (Bouconne): a forest whose NDVI fell 0.75 -> 0.64 while the scene's fell more read "vegetation
    gain". ``ndvi0`` is moved by the scene's own change (-0.5 here): ``ndvi1 - ndvi0`` is +0.3 beyond it."""
    pixels = _pixels(ndvi=(0.4, 0.7)).assign(ndvi0_own=ndvi0_own)
    assert describe(pixels) == words


SNOW = {"B02": 0.80, "B03": 0.78, "B04": 0.75, "B08": 0.65, "B11": 0.08}  # NDSI 0.81
BRIGHT_ROOF = {"B02": 0.45, "B03": 0.48, "B04": 0.50, "B08": 0.52, "B11": 0.55}  # bright, but no snow: NDSI < 0


def _snow_cube(bands=("B02", "B03", "B04", "B08", "B11"), platform=None):
    """Two dates of grass with SWIR1 (B11 0.20); at date 1 snow on patch (1, 1), a bright roof on patch (0, 2);
    at date 0 snow on patch (2, 2), gone at date 1."""
    grass = {**GRASS, "B11": 0.20}
    keys = ("B02", "B03", "B04", "B08", "B11")
    data = np.zeros((2, 5, 32, 32), np.float32)
    for t in (0, 1):
        for k, b in enumerate(keys):
            data[t, k] = grass[b]
    for k, b in enumerate(keys):
        data[1, k, 8:16, 8:16] = SNOW[b]
        data[1, k, 0:8, 16:24] = BRIGHT_ROOF[b]
        data[0, k, 16:24, 16:24] = SNOW[b]
    keep = list(range(5 - len(bands), 5))  # (the last ones: red, NIR, SWIR1 for a series without blue and green)
    grid = OutputGrid.from_bounds("EPSG:32631", 10, (500000, 4999680, 500320, 5000000))
    coords = {"platform": [platform] * 2} if platform else None
    return make_cube(data[:, keep], pd.to_datetime(["2021-05-01", "2021-06-01"]), list(bands), grid, time_coords=coords)


def test_snow_that_appears_or_recedes_is_named_so():
    """Snow over grass lowers its NDVI and brightens it: "snow or ice appears", not "vegetation loss, brighter".
    A bright roof (high SWIR1) is no snow."""
    objects, events = _objects([(1, 1), (2, 2), (0, 2)])
    out = describe_objects(objects, events, _snow_cube(), 8)["change"].tolist()
    assert out == ["snow or ice appears", "snow or ice recedes", "brighter, vegetation loss"]


def test_snow_is_found_from_red_and_swir1_without_a_green_band():
    """A Landsat 5 series of bands 3-5 (red, NIR, SWIR1) as the UAT's: the red stands in for the green."""
    objects, events = _objects([(1, 1), (2, 2)])
    tm = _snow_cube(bands=("b3", "b4", "b5"), platform="landsat-5")
    assert describe_objects(objects, events, tm, 8)["change"].tolist() == ["snow or ice appears", "snow or ice recedes"]


def test_without_a_swir1_band_snow_is_not_named():
    objects, events = _objects([(1, 1)])
    no_swir = _snow_cube().isel(band=[0, 1, 2, 3])
    assert "snow" not in describe_objects(objects, events, no_swir, 8)["change"].iloc[0]


PROVENANCE_BANDS = ["B2", "B3", "B4", "B8", "B5", "B6", "B7", "B8A", "B11", "B12"]


def test_sentinel2_band_numbers_without_the_leading_zero_are_read_as_sentinel2():
    """UAT: ``--bands B2,B3,B4,B8,B5,B6,B7,B8A,B11,B12`` (as the data's PROVENANCE writes them) left every object
    without words, silently. B8A and B12 are Sentinel-2's only: B2 is B02, and the cube keeps the given names."""
    objects, events = _objects(CELLS[:2])
    data = _cube().isel(band=[0, 1, 2, 3, 3, 3, 3, 3, 3, 3]).values
    grid = OutputGrid.from_bounds("EPSG:32631", 10, (500000, 4999680, 500320, 5000000))
    cube = make_cube(data, pd.to_datetime(["2021-05-01", "2021-06-01", "2021-07-01"]), PROVENANCE_BANDS, grid)
    assert index_bands(cube) == ["B3", "B4", "B8"]
    assert describe_objects(objects, events, cube, 8)["change"].tolist() == ["water appears, vegetation loss",
                                                                            "brighter, vegetation loss"]


def test_landsat_numbers_are_not_read_as_sentinel2_without_a_sign_of_it():
    """Landsat's B2 is blue (8-9) or green (4-7): bands B1..B7 without a platform or a Sentinel-2-only band are
    no Sentinel-2 bands (B4 is no red)."""
    cube = _cube().isel(band=[0, 1, 2, 3, 3, 3, 3]).assign_coords(band=[f"B{i}" for i in range(1, 8)])
    assert index_bands(cube) is None


def test_no_words_for_want_of_bands_is_said_once():
    objects, events = _objects(CELLS[:2])
    unnamed = _cube().assign_coords(band=["b1", "b2", "b3", "b4"])
    said = []
    out = describe_objects(objects, events, unnamed, 8, log=said.append)
    assert out["change"].tolist() == ["", ""]
    assert len(said) == 1 and said[0].startswith("warning: no change descriptions") and "'b1'" in said[0]
    with pytest.warns(UserWarning, match="no change descriptions"):  # (by default)
        describe_objects(objects, events, unnamed, 8)
    said.clear()
    describe_objects(objects, events, _cube(), 8, log=said.append)
    assert said == []  # named bands: nothing to say


def test_an_rgb_series_gets_the_brightness_words_and_no_advice_to_name_its_bands():
    """UAT: an RGB image pair (bands red, green, blue, named right) got no words and a warning to name its bands
    with --bands, which cannot give it a near-infrared band. Brightness needs the visible bands only: it gets
    those words, and an object whose brightness held is not called a "slight change" (its change is in colour)."""
    objects, events = _objects(CELLS[:4])  # flood, roof, road, speck
    rgb = _cube().isel(band=[2, 1, 0]).assign_coords(band=["red", "green", "blue"])
    said = []
    out = describe_objects(objects, events, rgb, 8, log=said.append)["change"].tolist()
    # open water is darker by 0.015 only (under the 0.02 a pixel must move), and NDWI needs the near infrared
    assert out == ["brightness unchanged", "brighter", "brighter", "brightness unchanged"]
    assert said == ["note: this series has no near-infrared band (its bands are ['red', 'green', 'blue']), which the "
                    "vegetation, water and snow words need: its objects get the brightness words alone (brighter, "
                    "darker; 'brightness unchanged' where it held)"]
    assert "--bands" not in said[0]
    # a band whose name no role reads may be the near infrared: then --bands is the advice
    other = _cube().isel(band=[2, 1, 3]).assign_coords(band=["red", "green", "band4"])
    said.clear()
    assert describe_objects(objects, events, other, 8, log=said.append)["change"].tolist() == out
    assert said[0].startswith("warning: no near-infrared band found by name") and "if one of ['band4'] is the near " \
        "infrared, name the bands with --bands" in said[0]
    assert unread_bands(rgb) == [] and unread_bands(other) == ["band4"]


def test_city_shadows_of_a_winter_top_of_atmosphere_image_are_not_water():
    """NDWI > 0 on a dark pixel also holds for city shadows in November L1C (path radiance lifts the green over the
    near infrared): 70 % of OSCD's Bercy read as water then, and every top-10 object "water recedes" (a review).
    With a SWIR1 band, open water also needs MNDWI above 0.3; without one, NDWI on a dark pixel decides as before."""
    from changescout.describe import _indices, _water

    # green, red, NIR, SWIR1: a winter city shadow (Bercy's medians), open water, a turbid river
    bands = np.array([[0.105, 0.080, 0.090], [0.090, 0.050, 0.085], [0.086, 0.020, 0.060], [0.088, 0.010, 0.030]],
                     np.float32)[:, None, :]
    ndvi, ndwi, vis, mndwi, nir = _indices(bands, swir=True)
    assert (ndwi > 0).all() and (vis < 0.15).all()  # NDWI alone calls all three water
    assert _water(ndwi, vis, mndwi).tolist() == [[False, True, True]]
    ndvi, ndwi, vis, mndwi, nir = _indices(bands[:3], swir=False)  # no SWIR1: as before
    assert _water(ndwi, vis, mndwi).tolist() == [[True, True, True]]
