import numpy as np
import pandas as pd
import pytest

import make_sources as ms
from changescout.cube import Quality, grid_of
from changescout.errors import ConfigError, SourceError
from changescout.sources import open_series, stacked

H, W = ms.SHAPE


def native(cube):
    left, top = ms.ORIGIN
    return cube.sel(x=slice(left, left + W * ms.RES), y=slice(top, top - H * ms.RES))


def test_date_major_values_round_trip(tmp_path):
    path = ms.stacked_file(tmp_path / "stack.tif")
    cube = open_series(path, dates=ms.DATES, bands=ms.BANDS, patch_size=8, chunks=16)
    assert cube.attrs["source_kind"] == "stacked" and cube.attrs["level"] == "unknown"
    assert cube.attrs["label"] == "stack" and cube.attrs["source_files"] == [str(path.resolve())]
    assert list(pd.DatetimeIndex(cube.time.values)) == list(pd.to_datetime(ms.DATES))
    values = native(cube).values
    for t in range(len(ms.DATES)):  # date block t of the file is date t
        np.testing.assert_allclose(values[t], ms.scene(t) / 10000, rtol=1e-6)
    assert grid_of(cube).transform[2] % (8 * ms.RES) == 0
    assert (native(cube).quality.values == Quality.CLEAR).all()
    # dates as a notebook holds them (a DatetimeIndex was "ambiguous": a review)
    for dates in (pd.to_datetime(ms.DATES), pd.to_datetime(ms.DATES).values):
        again = open_series(path, dates=dates, bands=ms.BANDS, patch_size=8, chunks=16)
        np.testing.assert_array_equal(again.time.values, cube.time.values)


def test_band_descriptions_name_the_bands_and_level_option(tmp_path):
    path = ms.stacked_file(tmp_path / "stack.tif", descriptions=True)
    cube = open_series(path, dates=ms.DATES, level="L3A")
    assert list(cube.band.values) == list(ms.BANDS) and cube.attrs["level"] == "L3A"


def test_descriptions_of_every_date_block_must_match_the_dates(tmp_path):
    """A date too many read 12 bands described B02 B03 B04 B08 three times as 4 dates of 3 bands, each block's
    bands shifted by one (date 2's "B02" was the near infrared), and the run went on (a review)."""
    path = ms.stacked_file(tmp_path / "stack.tif", descriptions=True)
    four = [*ms.DATES, "2020-09-01"]
    with pytest.raises(SourceError, match=r"stack.tif: describes its band 4 as 'B08', but read as 4 dates of 3 bands it "
                                          r"would be date 2's 'B02' \(date 1's bands: B02, B03, B04\); check --dates .*; its "
                                          r"band descriptions repeat every 4 bands: 3 dates of 4 bands"):
        open_series(path, dates=four)
    with pytest.raises(SourceError, match=r"check --dates"):  # --bands given: the same (the counts alone agreed)
        open_series(path, dates=four, bands=["B02", "B03", "B04"])


def test_bands_pick_described_bands_by_name(tmp_path):
    """--bands in another order than the file's renamed the bands by position (the blue band read as B08); as in
    a folder, it now picks them by their descriptions (a review)."""
    path = ms.stacked_file(tmp_path / "stack.tif", descriptions=True)
    cube = open_series(path, dates=ms.DATES, bands=["B08", "B04"], patch_size=8, chunks=16)
    assert list(cube.band.values) == ["B08", "B04"]
    values = native(cube).values
    for t in range(len(ms.DATES)):
        scene = ms.scene(t) / 10000
        np.testing.assert_allclose(values[t, 0], scene[list(ms.BANDS).index("B08")], rtol=1e-6)
        np.testing.assert_allclose(values[t, 1], scene[list(ms.BANDS).index("B04")], rtol=1e-6)
    with pytest.raises(SourceError, match=r"stack.tif: has no band\(s\) \['red'\]; its bands are \['B02', 'B03', 'B04', 'B08'\]"):
        open_series(path, dates=ms.DATES, bands=["red", "B08"])


def test_date_names_in_descriptions_are_left_out(tmp_path):
    """Earth Engine's toBands() names each band after its image: 0_B2, 1_B2... (or a date suffix); the band's
    own name keeps its separators (0_SR_B2 was cut to B2, NDVI_2020_01_05 to 05: a review)."""
    data = np.concatenate([ms.scene(t) for t in range(len(ms.DATES))])
    sr = [f"SR_{b}" for b in ms.BANDS]
    for name, how, bands in (("prefixed", "{t}_{b}", ms.BANDS), ("suffixed", "{b}_2020010{t}", ms.BANDS),
                             ("landsat", "{t}_{b}", sr), ("s2index", "2020010{t}T103021_2020010{t}T103025_T31TCJ_{b}", ms.BANDS)):
        desc = [how.format(t=t, b=b) for t in range(len(ms.DATES)) for b in bands]
        path = ms.write_geotiff(tmp_path / f"{name}.tif", data, descriptions=desc)
        cube = open_series(path, dates=ms.DATES, patch_size=8, chunks=16)
        assert list(cube.band.values) == (list(bands) if name != "s2index" else [f"T31TCJ_{b}" for b in bands])
        np.testing.assert_allclose(native(cube).values[2], ms.scene(2) / 10000, rtol=1e-6)
    one = np.concatenate([ms.scene(t, 1) for t in range(len(ms.DATES))])
    for desc, band in ((["NDVI_2020_01_05", "NDVI_2020_02_05", "NDVI_2020_03_05"], "NDVI"),
                       (["0_NDVI_mean", "1_NDVI_mean", "2_NDVI_mean"], "NDVI_mean")):
        path = ms.write_geotiff(tmp_path / f"{band}.tif", one, descriptions=desc)
        assert list(open_series(path, dates=ms.DATES, patch_size=8, chunks=16).band.values) == [band]


def test_descriptions_that_name_no_band_leave_the_names_to_bands(tmp_path):
    """Descriptions that differ at each date without repeating (a one-band stack described by its dates; "Band 1"
    to "Band 12") were refused with "check --dates" even with --bands naming every band (a review): --bands names
    them, as it did; without it, the error asks for it."""
    one = np.concatenate([ms.scene(t, 1) for t in range(len(ms.DATES))])
    dated = ms.write_geotiff(tmp_path / "dated.tif", one, descriptions=list(ms.DATES))
    cube = open_series(dated, dates=ms.DATES, bands=["NDVI"], patch_size=8, chunks=16)
    assert list(cube.band.values) == ["NDVI"]
    np.testing.assert_allclose(native(cube).values[1, 0], ms.scene(1, 1)[0] / 10000, rtol=1e-6)
    with pytest.raises(SourceError, match=r"dated.tif: describes its bands otherwise at each date \('2020-03-01', "
                                          r"'2020-04-10', '2020-05-20'\): pass --bands, the names of the 1 band\(s\) of one date"):
        open_series(dated, dates=ms.DATES)
    data = np.concatenate([ms.scene(t) for t in range(len(ms.DATES))])
    numbered = ms.write_geotiff(tmp_path / "numbered.tif", data, descriptions=[f"Band {i}" for i in range(1, 13)])
    cube = open_series(numbered, dates=ms.DATES, bands=list(ms.BANDS), patch_size=8, chunks=16)
    assert list(cube.band.values) == list(ms.BANDS)
    np.testing.assert_allclose(native(cube).values[2], ms.scene(2) / 10000, rtol=1e-6)


def test_mask_band_in_the_stack(tmp_path):
    data = np.concatenate([np.concatenate([ms.scene(t, 2), ms.fmask(t)[None].astype(np.int16)]) for t in range(2)])
    path = ms.write_geotiff(tmp_path / "with_mask.tif", data)
    cube = open_series(path, kind="stacked", dates=ms.DATES[:2], bands=["red", "nir", "fmask"], patch_size=4)
    assert list(cube.band.values) == ["red", "nir"]
    q = native(cube).quality.values
    assert (q[:, 0:4, 0:6] == Quality.CLOUD).all() and (q[:, 36:40, 40:44] == Quality.NODATA).all()


@pytest.mark.parametrize("shift", [0.0, 5.0])  # on the file's grid, half a pixel off (warped)
def test_a_mask_stack_of_four_dates_in_bytes_is_four_masks(tmp_path, shift):
    """GDAL takes the 4th of 4 bands of bytes for alpha: a --mask file of 4 dates was refused as holding 3 mask
    bands, and warped, that band became the other dates' alpha (every pixel nodata)."""
    from changescout.cube import OutputGrid

    dates = [*ms.DATES, "2020-06-30"]
    data = np.concatenate([ms.scene(t % 3, 2) for t in range(4)])
    path = ms.write_geotiff(tmp_path / "stack.tif", data)
    fmask = np.zeros((4, H, W), np.uint8)  # Fmask: 0 clear land, 4 cloud
    for t in range(4):
        fmask[t, 8 * t : 8 * t + 6, 10:30] = 4
    masks = ms.write_geotiff(tmp_path / "fmask.tif", fmask, nodata=None)
    left, top = ms.ORIGIN
    grid = OutputGrid(ms.CRS, (ms.RES, 0, left - shift, 0, -ms.RES, top + shift), (H + 1, W + 1))
    cube = open_series(path, dates=dates, bands=["red", "nir"], mask=masks, mask_convention="fmask", patch_size=4, grid=grid)
    q = cube.quality.values
    for t in range(4):
        assert (q[t, 8 * t + 1 : 8 * t + 5, 12:28] == Quality.CLOUD).all()
        assert (q[t, 40 - 8:40, 12:28] == Quality.CLEAR).all() and (q[t, 1:H, 32:W] == Quality.CLEAR).all()


def test_a_mask_file_need_cover_a_stack_only_where_the_grid_reads_it(tmp_path):
    """--mask with --grid over part of a stacked file: a mask covering that part was refused (covers 50 % of its
    image) though the same masks were read beside a folder of images."""
    path = ms.stacked_file(tmp_path / "stack.tif")
    masks = np.stack([ms.fmask(t)[: H // 2] for t in range(len(ms.DATES))]).astype(np.uint8)
    ms.write_geotiff(tmp_path / "half_fmask.tif", masks, nodata=None)
    with pytest.raises(SourceError, match=r"half_fmask.tif: covers 50 % of its image"):
        open_series(path, dates=ms.DATES, bands=ms.BANDS, mask=tmp_path / "half_fmask.tif", patch_size=4)
    left, top = ms.ORIGIN
    top_half = f"{ms.CRS},{ms.RES},{left},{top - H // 2 * ms.RES},{left + W * ms.RES},{top}"
    cube = open_series(path, dates=ms.DATES, bands=ms.BANDS, mask=tmp_path / "half_fmask.tif", patch_size=4, grid=top_half)
    assert cube.sizes["y"] == H // 2 and (cube.quality.values[:, 0:4, 0:6] == Quality.CLOUD).all()


def test_stacked_errors_say_the_numbers(tmp_path):
    path = ms.stacked_file(tmp_path / "stack.tif")
    with pytest.raises(SourceError, match=r"stack.tif: a stacked GeoTIFF \(12 bands\) does not say its dates"):
        open_series(path)
    with pytest.raises(SourceError, match=r"stack.tif: has 12 bands but 3 dates x 5 bands = 15"):
        open_series(path, dates=ms.DATES, bands=["a", "b", "c", "d", "e"])
    with pytest.raises(SourceError, match=r"stack.tif: has 12 bands and no band descriptions; pass --bands.* 4 bands "
                                          r"of one date if it holds the 3 dates --dates gives \(else check --dates\)"):
        open_series(path, dates=ms.DATES)
    # a date too many, without descriptions: the dates are named, not --bands (was "the names of the ? bands")
    with pytest.raises(SourceError, match=r"stack.tif: has 12 bands, which 5 dates cannot share evenly; check --dates"):
        open_series(path, dates=[*ms.DATES, "2021-01-01", "2021-02-01"])
    with pytest.raises(ConfigError, match=r"stack.tif: --dates holds 'soon', which is not a date: expected YYYY-MM-DD"):
        open_series(path, dates=["2020-01-01", "soon", "later"], bands=ms.BANDS)
    with pytest.raises(SourceError, match="stack.tif: holds 12 mask bands but the series has 3 dates"):
        open_series(path, dates=ms.DATES, bands=ms.BANDS, mask=path, mask_convention="fmask")


def test_messages_name_the_cli_options_not_python_arguments(tmp_path):
    path = ms.stacked_file(tmp_path / "stack.tif")
    for kwargs in ({}, {"dates": ms.DATES}, {"dates": ms.DATES, "bands": ["a", "b", "c", "d", "e"]}):
        with pytest.raises(SourceError) as err:
            open_series(path, **kwargs)
        message = str(err.value)
        assert "--dates" in message or "--bands" in message
        assert "dates=" not in message and "bands=" not in message
    with pytest.raises(SourceError, match=r"check --dates and --bands"):
        open_series(path, dates=ms.DATES, bands=["a", "b", "c", "d", "e"])


@pytest.mark.parametrize(
    "dates, message",
    [
        # the first two dates swapped: the blocks would silently take each other's dates
        ((ms.DATES[1], ms.DATES[0], ms.DATES[2]), r"date 2 \(2020-03-01\) is earlier than date 1 \(2020-04-10\)"),
        ((ms.DATES[0], ms.DATES[2], ms.DATES[1]), r"date 3 \(2020-04-10\) is earlier than date 2 \(2020-05-20\)"),
        ((ms.DATES[0], ms.DATES[1], ms.DATES[1]), r"date 3 \(2020-04-10\) is the same date as date 2 \(2020-04-10\)"),
    ],
)
def test_dates_out_of_order_are_refused(tmp_path, dates, message):
    path = ms.stacked_file(tmp_path / "stack.tif")
    with pytest.raises(SourceError, match=r"stack.tif: --dates must be strictly increasing.*" + message):
        open_series(path, dates=list(dates), bands=ms.BANDS)


def test_duplicate_band_names_are_refused_whatever_their_origin(tmp_path):
    path = ms.stacked_file(tmp_path / "stack.tif")
    # --bands: one band would be silently dropped, the count check passing on the list's length
    with pytest.raises(SourceError, match=r"stack.tif: band names must be unique, but B04 occurs more than once in --bands"):
        open_series(path, dates=ms.DATES, bands=["B02", "B04", "B04", "B08"])
    with pytest.raises(SourceError, match=r"B04 occurs more than once in --bands"):  # the source called directly
        stacked.open(path, dates=ms.DATES, bands=["B02", "B04", "B04", "B08"])
    # band descriptions
    data = np.concatenate([ms.scene(t) for t in range(len(ms.DATES))])
    named = ms.write_geotiff(tmp_path / "named.tif", data, descriptions=["B02", "B03", "B03", "B08"] * len(ms.DATES))
    with pytest.raises(SourceError, match=r"named.tif: band names must be unique, but B03 occurs more than once in the band descriptions"):
        open_series(named, dates=ms.DATES)


def test_real_bouconne_duplicate_band_and_swapped_dates(real_data):
    path = real_data / "s2_timeseries_bouconne" / "2018_3A_Theia_Bouconne.tif"
    dates = "2018-04-29,2018-05-13,2018-07-08,2018-08-15,2018-09-15,2018-10-15,2018-11-15".split(",")
    bands = "B02,B03,B04,B08,B05,B06,B07,B8A,B11,B12".split(",")
    with pytest.raises(SourceError, match=r"Bouconne.tif: band names must be unique, but B11 occurs more than once"):
        open_series(path, kind="stacked", dates=dates, bands=bands[:-1] + ["B11"])
    swapped = [dates[1], dates[0], *dates[2:]]
    with pytest.raises(SourceError, match=r"Bouconne.tif: --dates must be strictly increasing.*\(2018-04-29\).*\(2018-05-13\)"):
        open_series(path, kind="stacked", dates=swapped, bands=bands)
