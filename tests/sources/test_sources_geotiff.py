from pathlib import Path
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio import Affine
from rasterio.warp import transform

import make_sources as ms
from changescout.cube import OutputGrid, Quality, grid_of
from changescout.errors import ConfigError, GridError, SourceError
from changescout.sources import open_series, warp
from changescout.tiling import PatchGrid

H, W = ms.SHAPE


def footprint(cube):
    """The cube's pixels over the fixture's native grid (rows 0..H, cols 0..W)."""
    left, top = ms.ORIGIN
    return cube.sel(x=slice(left, left + W * ms.RES), y=slice(top, top - H * ms.RES))


def bright_xy(image):
    """Ground coordinates of the centre of the bright square in a (y, x) DataArray."""
    rows, cols = np.nonzero(np.nan_to_num(image.values) > 0.6)
    return image.x.values[cols].mean(), image.y.values[rows].mean()


def bright_centre(image):
    rows, cols = np.nonzero(np.nan_to_num(image) > 0.6)
    return rows.mean(), cols.mean()


def test_values_round_trip_with_nodata(tmp_path):
    ms.multiband_folder(tmp_path / "f")
    cube = open_series(tmp_path / "f", patch_size=16)
    assert isinstance(cube.data, da.Array) and cube.dtype == np.float32
    assert list(cube.band.values) == list(ms.BANDS)
    assert list(pd.DatetimeIndex(cube.time.values)) == list(pd.to_datetime(ms.DATES))
    values = footprint(cube).compute()
    assert values.shape == (3, 4, H, W)
    for t in range(3):
        expected = ms.scene(t).astype(np.float32) / 10000
        if t == 0:
            expected[:, 0:5, 0:8] = np.nan
        np.testing.assert_allclose(values.isel(time=t).values, expected, rtol=1e-6)
    q = values.quality.values
    assert (q[0, 0:5, 0:8] == Quality.NODATA).all() and (q[0, 5:, 8:] == Quality.CLEAR).all()
    left, _, _, top = grid_of(cube).bounds
    r0, c0 = round((top - ms.ORIGIN[1]) / ms.RES), round((ms.ORIGIN[0] - left) / ms.RES)
    inside = np.zeros(cube.quality.shape[1:], bool)
    inside[r0 : r0 + H, c0 : c0 + W] = True
    assert (cube.quality.values[:, ~inside] == Quality.NODATA).all()
    assert np.isnan(cube.values[cube.quality.values[:, None].repeat(4, 1) == Quality.NODATA]).all()


def test_attributes(tmp_path):
    files = ms.multiband_folder(tmp_path / "series")
    cube = open_series(tmp_path / "series")
    assert cube.attrs["label"] == "series"
    assert cube.attrs["source"] == str((tmp_path / "series").resolve())
    assert cube.attrs["source_kind"] == "geotiff"
    assert cube.attrs["source_files"] == sorted(str(f.resolve()) for f in files)
    assert cube.attrs["level"] == "unknown"
    assert cube.attrs["scale_factor"] == pytest.approx(1e-4) and cube.attrs["offset"] == 0.0
    again = open_series(tmp_path / "series", scale_factor=1e-3, offset=-0.1, level="L2A")
    assert again.attrs["scale_factor"] == 1e-3 and again.attrs["level"] == "L2A"
    np.testing.assert_allclose(footprint(again).values[1], ms.scene(1) * 1e-3 - 0.1, rtol=1e-5)


def test_grid_origin_snapped_to_patches(tmp_path):
    ms.multiband_folder(tmp_path / "f")
    cube = open_series(tmp_path / "f", patch_size=16)
    grid = grid_of(cube)
    left, bottom, right, top = grid.bounds
    size = 16 * ms.RES
    assert left % size == 0 and top % size == 0
    assert grid.shape[0] % 16 == 0 and grid.shape[1] % 16 == 0
    assert left <= ms.ORIGIN[0] and top >= ms.ORIGIN[1]
    assert right >= ms.ORIGIN[0] + W * ms.RES and bottom <= ms.ORIGIN[1] - H * ms.RES


def test_a_grid_resolution_far_finer_than_the_input_is_refused(tmp_path):
    """A typo such as 0.01 for 10 m would make a 1000 times finer grid: refused at once with the ratio, instead
    of a run whose first task graph fills the memory; Landsat's 30 m at 10 m (3 times) and up to 8 times pass."""
    ms.multiband_folder(tmp_path / "f")
    with pytest.raises(GridError, match=r"--grid resolution 0.01 is 1000 times finer than the input's \(10 "):
        open_series(tmp_path / "f", patch_size=16, grid=f"{ms.CRS},0.01")
    assert grid_of(open_series(tmp_path / "f", patch_size=16, grid=f"{ms.CRS},{ms.RES / 8}")).resolution == (ms.RES / 8, ms.RES / 8)


def test_scene_folders_linked_in_from_an_archive_are_read(tmp_path):
    """Choosing scenes by linking their folders into a new one (a common way to pick dates from an archive)
    reads them as the same folders copied would; a link back up the tree does not loop."""
    ms.multiband_folder(tmp_path / "archive" / "a")
    ms.multiband_folder(tmp_path / "archive" / "b", names=[f"x_{d}.tif" for d in ms.DATES])
    picked = tmp_path / "picked"
    picked.mkdir()
    (picked / "a").symlink_to(tmp_path / "archive" / "a", target_is_directory=True)
    (picked / "loop").symlink_to(picked, target_is_directory=True)
    cube = open_series(picked, patch_size=16)
    direct = open_series(tmp_path / "archive" / "a", patch_size=16)
    np.testing.assert_array_equal(cube.time.values, direct.time.values)
    np.testing.assert_array_equal(cube.values, direct.values)


def test_same_patches_whatever_the_file_order_and_chunks(tmp_path):
    ms.multiband_folder(tmp_path / "a")
    ms.multiband_folder(tmp_path / "b", names=[f"{p}_{d}.tif" for p, d in zip("cab", ms.DATES)])
    a = open_series(tmp_path / "a", patch_size=8, chunks=1024)
    b = open_series(tmp_path / "b", patch_size=8, chunks=16)
    assert b.data.chunksize == (1, 4, 16, 16)
    assert grid_of(a) == grid_of(b)
    np.testing.assert_array_equal(a.time.values, b.time.values)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.quality.values, b.quality.values)
    patches = PatchGrid(grid_of(a), 8)
    row, col = patches.locate((ms.SQUARE[0] + ms.SQUARE[2]) / 2, (ms.SQUARE[1] + ms.SQUARE[3]) / 2)
    rs, cs = patches.pixel_window(row, col)
    assert (b.isel(y=rs, x=cs).sel(band="B02").values > 0.6).mean() > 0.2


def test_dates_in_other_crs_land_in_place(tmp_path):
    folder = tmp_path / "mixed"
    ms.reprojected(folder / "a_2020-06-01.tif", crs="EPSG:4326")  # first in file order, not in time
    ms.multiband_folder(folder, dates=["2020-03-01"], names=["b_2020-03-01.tif"], with_nodata=False)
    ms.reprojected(folder / "c_2020-07-01.tif", crs=ms.CRS, shift=(25.0, -15.0))
    cube = open_series(folder, patch_size=16)
    grid = grid_of(cube)
    assert grid.crs == ms.CRS and grid.resolution == (ms.RES, ms.RES)  # from the first date by time
    images = footprint(cube).sel(band="B02").values
    expected = bright_centre(ms.scene(0)[0] / 10000)
    for t, image in enumerate(images):
        r, c = bright_centre(image)
        assert abs(r - expected[0]) < 0.75 and abs(c - expected[1]) < 0.75, (t, r, c, expected)
    np.testing.assert_allclose(images[0], ms.scene(0)[0] / 10000, rtol=1e-6)
    # the run says which files it resampled (UAT: a date in another CRS was warped without a word)
    assert [Path(f).name for f in cube.attrs["resampled_files"]] == ["a_2020-06-01.tif", "c_2020-07-01.tif"]
    from changescout.pipeline import input_notes

    notes = input_notes(cube, {}, grid, given_grid=False)
    assert any(n.startswith("note: 2 file(s) are not on the grid's pixels") and "a_2020-06-01.tif, c_2020-07-01.tif" in n
               for n in notes)
    same = tmp_path / "same"
    ms.multiband_folder(same, dates=["2020-03-01", "2020-04-01"], names=["b_2020-03-01.tif", "b_2020-04-01.tif"], with_nodata=False)
    assert open_series(same, patch_size=16).attrs["resampled_files"] == []


def test_explicit_grid(tmp_path):
    ms.multiband_folder(tmp_path / "f")
    centre = ((ms.SQUARE[0] + ms.SQUARE[2]) / 2, (ms.SQUARE[1] + ms.SQUARE[3]) / 2)
    cube = open_series(tmp_path / "f", grid="EPSG:32631,20", patch_size=4)
    assert grid_of(cube).resolution == (20.0, 20.0)
    assert np.allclose(bright_xy(cube.isel(time=1).sel(band="B08")), centre, atol=20)
    lonlat = open_series(tmp_path / "f", grid="EPSG:4326", patch_size=4)
    grid = grid_of(lonlat)
    assert grid.crs == "EPSG:4326" and grid.resolution[0] < 2e-4
    lon, lat = transform(ms.CRS, "EPSG:4326", [centre[0]], [centre[1]])
    assert np.allclose(bright_xy(lonlat.isel(time=1).sel(band="B08")), (lon[0], lat[0]), atol=1.5 * grid.resolution[0])
    for same in (grid, grid.to_dict()):  # a previous run's grid is reused as it is
        assert grid_of(open_series(tmp_path / "f", grid=same, patch_size=4)) == grid
    with pytest.raises(ConfigError, match="chunks must be a positive number of pixels, got 0"):
        open_series(tmp_path / "f", chunks=0)


def test_a_grid_that_misses_the_input_is_refused(tmp_path):
    """It gave an all-nodata series, and then a puzzling "too few clear pixels to sample rcf filters"."""
    ms.multiband_folder(tmp_path / "f")
    # the bounds as given, not as snapped to whole patches (0,0,160,160: numbers the user never typed; a review)
    with pytest.raises(GridError, match=r"--grid bounds 0,0,100,100 \(EPSG:32631\) do not overlap the input, which "
                                        r"covers 355000,4834600,355440,4835000 there \(left, bottom, right, top\)$"):
        open_series(tmp_path / "f", grid="EPSG:32631,10,0,0,100,100", patch_size=16)
    # degrees for a CRS in metres, the commonest way to miss: said
    with pytest.raises(GridError, match=r"--grid bounds 1,43,1.1,43.1 \(EPSG:32631\) do not overlap the input.*they look "
                                        r"like degrees, but EPSG:32631's bounds are in metres"):
        open_series(tmp_path / "f", grid="EPSG:32631,10,1.0,43.0,1.1,43.1", patch_size=16)
    far = OutputGrid("EPSG:32631", (10.0, 0.0, 0.0, 0.0, -10.0, 160.0), (16, 16))  # a previous run's grid too
    with pytest.raises(GridError, match="do not overlap"):
        open_series(tmp_path / "f", grid=far, patch_size=16)


def test_landsat_layout_with_fmask(tmp_path):
    files = ms.landsat_folder(tmp_path / "lsts")
    cube = open_series(tmp_path / "lsts", patch_size=4)
    assert list(cube.band.values) == ["b3", "b4", "b5"]
    assert list(cube.platform.values) == ["landsat-7", "landsat-5", "landsat-7"]
    assert cube.attrs["source_files"] == sorted(str(f.resolve()) for f in files)
    values = footprint(cube).compute()
    q = values.quality.values
    expected = {4: Quality.CLOUD, 2: Quality.SHADOW, 1: Quality.WATER, 3: Quality.SNOW, 255: Quality.NODATA}
    for rows, cols, value in ms.FMASK_PATCHES:
        assert (q[:, rows, cols] == expected[value]).all(), value
    assert (q[:, 20:30, 0:20] == Quality.CLEAR).all()
    assert np.isnan(values.values[:, :, 36:40, 40:44]).all()  # fill and nodata
    np.testing.assert_allclose(values.values[2, 1, 0:4, 0:6], ms.scene(2, 3)[1, 0:4, 0:6] / 10000, rtol=1e-6)  # cloud kept
    scl = open_series(tmp_path / "lsts", patch_size=4, mask_convention="scl")
    assert (footprint(scl).quality.values[:, 0:4, 0:6] == Quality.CLEAR).all()  # SCL 4 is vegetation


def test_landsat_collection_2_folders_with_qa_pixel(tmp_path):
    """``<ID>/<ID>_SR_B2.TIF ... _QA_PIXEL.TIF`` and the other files of a Collection 2 Level-2 scene: bands
    SR_B2..SR_B4, the thermal, saturation, aerosol and angle files left out (listed in ``ignored_files``), the
    QA_PIXEL flags as each date's mask, and the Collection 2 scaling; QA_PIXEL was taken for another image of
    the same date before."""
    from changescout.quality import BLUE, RED, find_bands
    from changescout.radiometry import apply_offsets

    dn = np.full((3, 20, 22), 10000, np.uint16)
    qa = np.full((1, 20, 22), 21824, np.uint16)  # clear land
    qa[0, 0:4, 0:6], qa[0, 10:14, 10:14] = 22280, 21952  # cloud, water
    for date in ms.DATES:
        sid = f"LC08_L2SP_198030_{date.replace('-', '')}_20200901_02_T1"
        for b in range(3):
            ms.write_geotiff(tmp_path / "c2" / sid / f"{sid}_SR_B{b + 2}.TIF", dn[b : b + 1], nodata=0)
        ms.write_geotiff(tmp_path / "c2" / sid / f"{sid}_QA_PIXEL.TIF", qa, nodata=1)
        for aux in ("ST_B10", "QA_RADSAT", "SR_QA_AEROSOL", "VZA"):  # the rest of a delivery: left out, listed
            ms.write_geotiff(tmp_path / "c2" / sid / f"{sid}_{aux}.TIF", dn[:1], nodata=0)
    cube = open_series(tmp_path / "c2", patch_size=4)
    assert len(cube.attrs["ignored_files"]) == 12 and cube.attrs["ignored_files"][0].endswith("_QA_RADSAT.TIF")
    assert list(cube.band.values) == ["SR_B2", "SR_B3", "SR_B4"]
    assert find_bands(cube, BLUE, RED) == (0, 2)  # USGS's names: what the cloud screen and the words look for
    q = footprint(cube).quality.values
    assert (q[:, 0:4, 0:6] == Quality.CLOUD).all() and (q[:, 10:14, 10:14] == Quality.WATER).all()
    assert (q[:, 16:20, 16:20] == Quality.CLEAR).all()
    out, record = apply_offsets(cube)
    assert {d["status"] for d in record["dates"].values()} == {"applied"}
    np.testing.assert_allclose(footprint(out).values[:, :, 16:20, 16:20], 10000 * 2.75e-5 - 0.2, atol=1e-6)


def test_landsat_4_7_and_8_9_dates_under_numbered_band_names_are_refused(tmp_path):
    """SR_B4 is near-infrared on TM and red on OLI: a folder of both families read with --bands (which the error
    of their band counts advises) swapped red and near-infrared between dates without a word (a review)."""
    from changescout.errors import BandError

    dn = np.full((1, 20, 22), 10000, np.uint16)
    for i, (sensor, date) in enumerate((("LT05", ms.DATES[0]), ("LC08", ms.DATES[1]), ("LT05", ms.DATES[2]))):
        sid = f"{sensor}_L2SP_198030_{date.replace('-', '')}_20200901_02_T1"
        for b in (1, 2, 3, 4, 5, 7):
            ms.write_geotiff(tmp_path / "mix" / sid / f"{sid}_SR_B{b}.TIF", dn, nodata=0)
    with pytest.raises(BandError, match=r"mixes Landsat 4-7 \(landsat-5\) and Landsat 8-9 \(landsat-8\) dates, whose band "
                                        r"numbers name different bands"):
        open_series(tmp_path / "mix", bands="SR_B1,SR_B2,SR_B3,SR_B4,SR_B5,SR_B7", patch_size=4)


def test_external_mask_folder(tmp_path):
    ms.multiband_folder(tmp_path / "f", with_nodata=False)
    for t, date in enumerate(ms.DATES):
        ms.write_geotiff(tmp_path / "masks_fmask" / f"{date}.tif", ms.fmask(t)[None], nodata=None)
    cube = open_series(tmp_path / "f", mask=tmp_path / "masks_fmask", patch_size=4)
    q = footprint(cube).quality.values
    assert (q[:, 0:4, 0:6] == Quality.CLOUD).all() and (q[:, 30:34, 30:36] == Quality.WATER).all()
    with pytest.raises(SourceError, match=r"no_masks: does not exist \(the --mask given\)"):  # a typo in --mask
        open_series(tmp_path / "f", mask=tmp_path / "no_masks", patch_size=4)
    with pytest.raises(SourceError, match=r"has no mask for the date\(s\) \['2020-05-20'\]"):
        (tmp_path / "masks_fmask" / "2020-05-20.tif").unlink()
        open_series(tmp_path / "f", mask=tmp_path / "masks_fmask")


def test_a_mask_that_calls_every_pixel_clear_is_trusted_by_the_auto_cloud_screen(tmp_path):
    """The auto screen told a given mask by the cloud classes it holds: an all-clear Fmask counted as no mask,
    and the screen marked thousands of the pixels it called clear as cloud or shadow."""
    from changescout.pipeline import screen_clouds

    ms.multiband_folder(tmp_path / "f", with_nodata=False)
    for date in ms.DATES:
        ms.write_geotiff(tmp_path / "masks_fmask" / f"{date}.tif", np.zeros((1, *ms.SHAPE), np.uint8), nodata=None)
    masked = open_series(tmp_path / "f", mask=tmp_path / "masks_fmask", patch_size=4)
    assert masked.attrs["quality_mask"] is True
    assert screen_clouds(masked, "auto").attrs["cloud_screen"] == "none: the source gave a quality mask"
    bare = open_series(tmp_path / "f", patch_size=4)
    assert bare.attrs["quality_mask"] is False
    assert not screen_clouds(bare, "auto").attrs["cloud_screen"].startswith("none")


def test_pixels_0_in_every_band_of_files_that_declare_no_nodata_are_nodata(tmp_path):
    """Sentinel-2's and Landsat's NODATA value 0, undeclared: a block of 0 in every band was read as black
    reflectance and ranked as a change; a band file at 20 m blended its swath edge of 0 into its neighbours
    (-0.05 after the -1000 offset). A pixel 0 in one band only is a value."""
    h, w = ms.SHAPE
    for t, date in enumerate(ms.DATES):
        data = ms.scene(t)
        if t == 1:
            data[:, 0:10, 0:10] = 0  # undeclared nodata
            data[0, 30:32, 30:32] = 0  # one band 0: a value
        ms.write_geotiff(tmp_path / "f" / f"{date}.tif", data, nodata=None, descriptions=ms.BANDS)
    cube = footprint(open_series(tmp_path / "f", patch_size=4))
    v, q = cube.values, cube.quality.values
    assert np.isnan(v[1, :, 0:10, 0:10]).all() and (q[1, 0:10, 0:10] == Quality.NODATA).all()
    assert (v[1, 0, 30:32, 30:32] == 0).all() and (q[1, 30:32, 30:32] == Quality.CLEAR).all()
    assert np.isfinite(v[[0, 2]]).all()
    # a date at 20 m (resampled onto the 10 m grid) whose right third is 0: no value blended toward 0
    coarse = ms.scene(2)[:, ::2, ::2].copy()
    coarse[:, :, 2 * coarse.shape[2] // 3:] = 0
    (tmp_path / "f" / f"{ms.DATES[2]}.tif").unlink()
    ms.write_geotiff(tmp_path / "f" / f"{ms.DATES[2]}.tif", coarse, nodata=None, descriptions=ms.BANDS,
                     transform=ms.TRANSFORM * Affine.scale(2))
    v = footprint(open_series(tmp_path / "f", patch_size=4)).values[2]
    edge = 2 * (2 * coarse.shape[2] // 3)  # the first 10 m column of the 0 part
    assert np.isnan(v[:, :, edge:]).all() and np.isnan(v).any(axis=0).sum() < h * (w - edge + 3)
    assert np.nanmin(v) >= 300 / 10000 * 0.99  # (scene values are 300-3000 x 1e-4)


@pytest.mark.parametrize("dtype, nodata", [(np.int16, -9999), (np.uint8, None), (np.float32, None)])
def test_zeros_stay_values_where_the_file_declares_its_nodata_or_0_is_black_or_a_float(tmp_path, dtype, nodata):
    """The rule of 0 as unsaid nodata is for reflectance digital numbers without declared nodata only: it took the
    black of 8-bit images, float zeros and the zeros of files that declare another nodata value."""
    n = 3 if dtype == np.uint8 else 4  # (GDAL reads a 4th 8-bit band as alpha)
    for t, date in enumerate(ms.DATES):
        data = (ms.scene(t, n) // (20 if dtype == np.uint8 else 1)).astype(dtype)
        data[:, 0:8, 0:8] = 0
        ms.write_geotiff(tmp_path / "f" / f"{date}.tif", data, nodata=nodata, descriptions=ms.BANDS[:n])
    cube = footprint(open_series(tmp_path / "f", patch_size=4))
    assert (cube.values[:, :, 0:8, 0:8] == 0).all() and (cube.quality.values[:, 0:8, 0:8] == Quality.CLEAR).all()


def test_a_mask_that_does_not_cover_its_image_is_refused_naming_it(tmp_path):
    """A 100 px mask of a 160 px image was read without a word: the pixels it left out became nodata, and half
    the patches were never looked at. A mask at another resolution over the same footprint is read."""
    ms.multiband_folder(tmp_path / "f", with_nodata=False)
    h, w = ms.SHAPE
    for t, date in enumerate(ms.DATES):
        ms.write_geotiff(tmp_path / "masks_fmask" / f"{date}.tif", ms.fmask(t)[None, : h // 2], nodata=None)
        coarse = ms.fmask(t)[None, ::2, ::2]
        ms.write_geotiff(tmp_path / "coarse_fmask" / f"{date}.tif", coarse, nodata=None,
                         transform=ms.TRANSFORM * Affine.scale(2))
    with pytest.raises(SourceError, match=rf"masks_fmask/{ms.DATES[0]}.tif: covers 50 % of its image .*; mask {w} x {h // 2} px, "
                                          rf"image {w} x {h} px\): a mask must cover its image"):
        open_series(tmp_path / "f", mask=tmp_path / "masks_fmask", patch_size=4)
    cube = open_series(tmp_path / "f", mask=tmp_path / "coarse_fmask", patch_size=4)
    assert (footprint(cube).quality.values[:, 0:4, 0:6] == Quality.CLOUD).all()
    # a --grid over the part the masks cover reads no pixel they leave out (it was refused as well)
    left, top = ms.ORIGIN
    top_half = f"{ms.CRS},{ms.RES},{left},{top - h // 2 * ms.RES},{left + w * ms.RES},{top}"
    cube = open_series(tmp_path / "f", mask=tmp_path / "masks_fmask", patch_size=4, grid=top_half)
    assert cube.sizes["y"] == h // 2 and (cube.quality.values[:, 0:4, 0:6] == Quality.CLOUD).all()


def test_an_external_mask_folder_takes_its_convention_from_its_files_names(tmp_path):
    """masks/2020-03-01_fmask.tif...: the folder's name says nothing; its files' names do (the folder was refused
    unless named masks_fmask)."""
    ms.multiband_folder(tmp_path / "f", with_nodata=False)
    for t, date in enumerate(ms.DATES):
        ms.write_geotiff(tmp_path / "masks" / f"{date}_fmask.tif", ms.fmask(t)[None], nodata=None)
    q = footprint(open_series(tmp_path / "f", mask=tmp_path / "masks", patch_size=4)).quality.values
    assert (q[:, 0:4, 0:6] == Quality.CLOUD).all() and (q[:, 30:34, 30:36] == Quality.WATER).all()
    (tmp_path / "masks" / f"{ms.DATES[0]}_fmask.tif").rename(tmp_path / "masks" / f"{ms.DATES[0]}_SCL.tif")
    with pytest.raises(SourceError, match=r"masks: holds masks of 2 conventions by their names \(fmask, scl\)"):
        open_series(tmp_path / "f", mask=tmp_path / "masks", patch_size=4)
    q = footprint(open_series(tmp_path / "f", mask=tmp_path / "masks", mask_convention="fmask", patch_size=4)).quality.values
    assert (q[:, 0:4, 0:6] == Quality.CLOUD).all()


def test_sentinel2_names_give_platform_and_level(tmp_path):
    names = ["S2A_MSIL2A_20200301T105031_N0214_R051_T31TCJ_20200301T120000.tif",
             "S2B_MSIL2A_20200410T105031_N0214_R051_T31TCJ_20200410T120000.tif"]
    ms.multiband_folder(tmp_path / "s2", dates=ms.DATES[:2], names=names)
    cube = open_series(tmp_path / "s2")
    assert list(cube.platform.values) == ["sentinel-2a", "sentinel-2b"] and cube.attrs["level"] == "L2A"


def test_an_image_with_its_scl_file_beside_it(tmp_path):
    """``<product>.tif`` and ``<product>_SCL.tif`` (at 20 m): the image's bands, the SCL as its date's mask;
    read as two single-band files, the image lost all but its first band under an empty name."""
    names = ["S2A_MSIL2A_20200301T105031_N0214_R051_T31TCJ_20200301T120000.tif",
             "S2B_MSIL2A_20200410T105031_N0214_R051_T31TCJ_20200410T120000.tif"]
    ms.multiband_folder(tmp_path / "s2", dates=ms.DATES[:2], names=names, with_nodata=False)
    coarse = ms.TRANSFORM @ Affine.scale(2)
    for t, name in enumerate(names):
        scl = np.full((1, 20, 22), 4, np.uint8)  # vegetation
        scl[0, 0:2, 0:3] = 9 if t else 3  # cloud (date 1) or shadow (date 0), 20 m pixels
        ms.write_geotiff(tmp_path / "s2" / name.replace(".tif", "_SCL.tif"), scl, transform=coarse, nodata=None)
    cube = open_series(tmp_path / "s2", patch_size=4)
    assert list(cube.band.values) == list(ms.BANDS)
    q = footprint(cube).quality.values
    assert (q[0, 0:4, 0:6] == Quality.SHADOW).all() and (q[1, 0:4, 0:6] == Quality.CLOUD).all()
    assert (q[:, 10:30, 10:30] == Quality.CLEAR).all()
    ms.write_geotiff(tmp_path / "s2" / names[0].replace(".tif", "_B05.tif"), ms.scene(0, 1))
    with pytest.raises(SourceError, match=r"share one date's name; a date is one multi-band image"):
        open_series(tmp_path / "s2")


def test_dates_option_and_band_options(tmp_path):
    ms.multiband_folder(tmp_path / "f", names=["img_a.tif", "img_b.tif", "img_c.tif"])
    with pytest.raises(SourceError, match="no date in the name.*YYYY-MM-DD") as err:
        open_series(tmp_path / "f")
    assert "img_a.tif" in str(err.value)
    ms.multiband_folder(tmp_path / "typo", names=["2018-02-28.tif", "2018-02-30.tif", "2018-03-02.tif"])
    with pytest.raises(SourceError, match=r"2018-02-30.tif: 2018-02-30 in the name is no date of the calendar"):
        open_series(tmp_path / "typo")  # (it was "no date in the name; name files with one of: YYYY-MM-DD...")
    cube = open_series(tmp_path / "f", dates=["2021-01-01", "2021-02-01", "2021-03-01"], bands=["B08", "B04"])
    assert list(cube.band.values) == ["B08", "B04"]
    np.testing.assert_allclose(footprint(cube).sel(band="B04").values[1], ms.scene(1)[2] / 10000, rtol=1e-6)
    with pytest.raises(SourceError, match=r"has no band\(s\) \['B99'\]; its bands are \['B02', 'B03', 'B04', 'B08'\]"):
        open_series(tmp_path / "f", dates=["2021-01-01", "2021-02-01", "2021-03-01"], bands=["B99"])
    with pytest.raises(SourceError, match="holds 3 images .* but 2 dates were given"):
        open_series(tmp_path / "f", dates=["2021-01-01", "2021-02-01"])


def test_dates_option_for_a_folder_follows_sorted_file_order_unsorted_or_not(tmp_path):
    # names that do not sort by date: the dates given label the files in sorted file order, then the cube is sorted
    names = ["scene_10.tif", "scene_8.tif", "scene_9.tif"]  # sorted file order too
    ms.multiband_folder(tmp_path / "f", names=names, with_nodata=False)
    cube = open_series(tmp_path / "f", dates=["2021-03-01", "2021-01-01", "2021-02-01"])
    assert list(pd.DatetimeIndex(cube.time.values).strftime("%m")) == ["01", "02", "03"]
    values = footprint(cube).values
    for t, t_file in enumerate((1, 2, 0)):  # January is scene_8.tif, the second file written
        np.testing.assert_allclose(values[t], ms.scene(t_file) / 10000, rtol=1e-6)
    with pytest.raises(SourceError, match=r"f: --dates gives scene_9.tif the same date 2021-01-01 as scene_8.tif"):
        open_series(tmp_path / "f", dates=["2021-03-01", "2021-01-01", "2021-01-01"])
    with pytest.raises(ConfigError, match=r"f: --dates holds '2021-02-30', which is not a date: expected YYYY-MM-DD"):
        open_series(tmp_path / "f", dates=["2021-03-01", "2021-01-01", "2021-02-30"])
    with pytest.raises(SourceError, match=r"scene_10.tif: no date in the name.*or pass --dates \(one per image") as err:
        open_series(tmp_path / "f")
    assert "dates=" not in str(err.value)


def test_dates_option_listing_the_names_dates_in_another_order_is_refused(tmp_path):
    """S2A_... sorts before S2B_... whatever their dates: --dates in date order gave the 10 January image the
    5 January date and the other way round, without a word (a review). Dates that differ from the names' are the
    user's to give (a name may hold a processing date): taken in file order, as documented."""
    names = ["S2B_MSIL2A_20200105T105339_N0213_R051_T31TCJ_20200105T121000.tif",
             "S2A_MSIL2A_20200110T105339_N0213_R051_T31TCJ_20200110T121000.tif",
             "S2B_MSIL2A_20200115T105339_N0213_R051_T31TCJ_20200115T121000.tif"]
    ms.multiband_folder(tmp_path / "f", names=names, with_nodata=False)
    with pytest.raises(SourceError, match=r"f: --dates gives S2A_MSIL2A_20200110\S+ the date 2020-01-05, but its name says "
                                          r"2020-01-10: .* leave --dates out to date them by their names"):
        open_series(tmp_path / "f", dates=["2020-01-05", "2020-01-10", "2020-01-15"])
    by_names = open_series(tmp_path / "f")
    np.testing.assert_allclose(footprint(by_names).values[0], ms.scene(0) / 10000, rtol=1e-6)  # (written 1st, sorts 2nd)
    given = open_series(tmp_path / "f", dates=["2020-01-10", "2020-01-05", "2020-01-15"])  # file order: the names' own
    np.testing.assert_array_equal(footprint(given).values, footprint(by_names).values)
    other = open_series(tmp_path / "f", dates=["2021-01-01", "2021-02-01", "2021-03-01"])  # other dates: file order
    np.testing.assert_allclose(footprint(other).values[0], ms.scene(1) / 10000, rtol=1e-6)  # (S2A_... sorts 1st)
    # taken, but said: a typo in one date (2020-01-16 for the name's 2020-01-15) dated every id without a word (a UAT)
    from changescout.cube import grid_of
    from changescout.pipeline import input_notes

    typo = open_series(tmp_path / "f", dates=["2020-01-10", "2020-01-05", "2020-01-16"])
    assert typo.attrs["redated_files"] == ["S2B_MSIL2A_20200115T105339_N0213_R051_T31TCJ_20200115T121000.tif: 2020-01-16 "
                                           "(its name says 2020-01-15)"]
    assert any(n.startswith("note: --dates gives 1 image(s) another date than their name's: S2B_MSIL2A_20200115")
               for n in input_notes(typo, {}, grid_of(typo), given_grid=True))
    assert "redated_files" not in given.attrs and len(other.attrs["redated_files"]) == 3


def test_duplicate_band_names_in_a_folder_are_refused(tmp_path):
    ms.multiband_folder(tmp_path / "f")
    with pytest.raises(SourceError, match=r"band names must be unique, but B04 occurs more than once in --bands"):
        open_series(tmp_path / "f", bands=["B04", "B08", "B04"])
    for t, date in enumerate(ms.DATES[:2]):
        ms.write_geotiff(tmp_path / "g" / f"{date}.tif", ms.scene(t), descriptions=["B02", "B03", "B03", "B08"])
    with pytest.raises(SourceError, match=r"2020-03-01.tif: band names must be unique, but B03 occurs more than once in "
                                          r"the band descriptions"):
        open_series(tmp_path / "g")
    for t, date in enumerate(ms.DATES[:2]):
        ms.write_geotiff(tmp_path / "h" / f"{date}.tif", ms.scene(t))
    with pytest.raises(SourceError, match=r"2020-03-01.tif: band names must be unique, but red occurs more than once in "
                                          r"--bands"):
        open_folder_directly(tmp_path / "h", bands=["red", "nir", "red", "swir"])
    # single-band files whose names give one band twice (x_B04.tif and x-B04.tif)
    for name in ("2020-03-01_B04.tif", "2020-03-01-B04.tif"):
        ms.write_geotiff(tmp_path / "s" / name, ms.scene(0)[:1])
    with pytest.raises(SourceError, match=r"band names must be unique, but B04 occurs more than once in the band suffixes"):
        open_series(tmp_path / "s")


def open_folder_directly(path, **kwargs):
    """The folder source called directly (no open_series, whose own --bands check comes first)."""
    from changescout.sources import geotiff

    return geotiff.open(path, **kwargs)


def test_bands_without_descriptions(tmp_path):
    for t, date in enumerate(ms.DATES[:2]):
        ms.write_geotiff(tmp_path / "f" / f"{date}.tif", ms.scene(t))
    assert list(open_series(tmp_path / "f").band.values) == ["b1", "b2", "b3", "b4"]
    assert list(open_series(tmp_path / "f", bands=["blue", "green", "red", "nir"]).band.values) == ["blue", "green", "red", "nir"]
    with pytest.raises(SourceError, match=r"2020-03-01.tif: has 4 bands but 2 band names were given"):
        open_series(tmp_path / "f", bands=["red", "nir"])


def test_repeated_band_descriptions_are_overridden_by_naming_every_band(tmp_path):
    for t, date in enumerate(ms.DATES[:2]):
        ms.write_geotiff(tmp_path / "f" / f"{date}.tif", ms.scene(t), descriptions=["red", "red", "red", "nir"])
    with pytest.raises(SourceError, match=r"red occurs more than once in the band descriptions \(or name every band"):
        open_series(tmp_path / "f")
    cube = open_series(tmp_path / "f", bands=["blue", "green", "red", "nir"])
    assert list(cube.band.values) == ["blue", "green", "red", "nir"]


def test_band_count_mismatch_names_the_file(tmp_path):
    ms.multiband_folder(tmp_path / "f", dates=ms.DATES[:2])
    ms.write_geotiff(tmp_path / "f" / f"{ms.DATES[2]}.tif", ms.scene(2, 3), descriptions=ms.BANDS[:3])
    with pytest.raises(SourceError, match=r"2020-05-20.tif: has 3 bands but 2020-03-01.tif has 4 \(it lacks \['B08'\]\); every "
                                          r"date needs the same bands \(--bands NAMES reads those of every date\)"):
        open_series(tmp_path / "f")
    cube = open_series(tmp_path / "f", bands=["B02", "B03", "B04"])  # as the message says
    assert list(cube.band.values) == ["B02", "B03", "B04"] and len(cube.time) == 3
    # a file without band descriptions: it was said to lack every band and to have b1..b3 more
    ms.write_geotiff(tmp_path / "f" / f"{ms.DATES[2]}.tif", ms.scene(2, 3))
    with pytest.raises(SourceError, match=r"2020-05-20.tif: has 3 bands but 2020-03-01.tif has 4 \(it has no band "
                                          r"descriptions\); every date needs"):
        open_series(tmp_path / "f")
    # the same bands spelt otherwise (B2 and B02: files from two tools): --bands, which the message advised, picks
    # by name and fails on one date or the other, so the message says what to do instead (a review)
    ms.write_geotiff(tmp_path / "f" / f"{ms.DATES[2]}.tif", ms.scene(2), descriptions=["B2", "B3", "B4", "B8"])
    with pytest.raises(SourceError, match=r"2020-05-20.tif: names its bands \['B2', 'B3', 'B4', 'B8'\] and 2020-03-01.tif "
                                          r"\['B02', 'B03', 'B04', 'B08'\]: the same bands spelt otherwise; give every date's "
                                          r"files the same band descriptions"):
        open_series(tmp_path / "f")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.mkdir(), "holds no GeoTIFF"),
        (lambda p: ms.corrupt_tif(p / "2020-01-01.tif"), "2020-01-01.tif: not a readable raster"),
        (lambda p: ms.write_geotiff(p / "2020-01-01.tif", ms.scene(0), crs=None), "2020-01-01.tif: the raster has no CRS"),
        (lambda p: ms.write_geotiff(p / "2020-01-01.tif", ms.scene(0), crs=None, transform=None),
         "2020-01-01.tif: the raster has no CRS"),
        (lambda p: (ms.multiband_folder(p, dates=["2020-01-01", "2020-02-01"]),
                    ms.multiband_folder(p, names=["x_20200101.tif"], dates=["2020-01-01"])),
         r"f: has two images of 2020-01-01 over the same ground \(2020-01-01.tif and x_20200101.tif: 100 % of the "
         r"smaller one\): one scene twice\? Keep one"),
    ],
)
def test_folder_errors_name_the_file(tmp_path, make, message):
    make(tmp_path / "f")
    with pytest.raises(SourceError, match=message):
        open_series(tmp_path / "f")


def test_tiles_of_one_date_are_mosaicked_as_the_whole_image_reads(tmp_path):
    """Two images per date that meet with 8 columns of overlap (a pass over two tiles) read as the whole image
    does, the overlap from the first in file order; their products' processing baselines must agree."""
    from changescout.errors import InputError
    from changescout.radiometry import describe_dates

    ms.multiband_folder(tmp_path / "whole", with_nodata=False)
    for t, date in enumerate(ms.DATES):
        for name, cols, add in (("tileA", slice(0, 26), 0), ("tileB", slice(18, 44), 7)):
            ms.write_geotiff(tmp_path / "tiles" / f"{date}_{name}.tif", ms.scene(t)[:, :, cols] + add,
                             transform=ms.TRANSFORM @ Affine.translation(cols.start, 0), descriptions=ms.BANDS)
    a, b = open_series(tmp_path / "whole"), open_series(tmp_path / "tiles", chunks=16)
    assert list(b["time"].values) == list(a["time"].values) and b["x"].equals(a["x"]) and list(b.band.values) == list(ms.BANDS)
    assert b.attrs["masked_dates"] == [False] * len(ms.DATES)  # one entry a date, not a tile (the cloud screen reads it)
    va, vb = a.values, b.values
    left = np.searchsorted(a["x"].values, ms.ORIGIN[0])
    assert np.array_equal(np.isnan(va), np.isnan(vb))
    west, east = np.s_[..., : left + 26], np.s_[..., left + 26 :]
    np.testing.assert_allclose(vb[west][np.isfinite(vb[west])], va[west][np.isfinite(va[west])])
    np.testing.assert_allclose(vb[east][np.isfinite(vb[east])], va[east][np.isfinite(va[east])] + 7e-4, atol=1e-6)
    # a pixel of the first tile that lacks one band (its near infrared's edge 3 columns short) is the second tile's
    with rasterio.open(tmp_path / "tiles" / f"{ms.DATES[0]}_tileA.tif", "r+") as dst:
        nir = dst.read(4)
        nir[:, 23:] = ms.NODATA
        dst.write(nir, 4)
    short = open_series(tmp_path / "tiles").isel(time=0)
    edge = np.s_[..., left + 23 : left + 26]
    np.testing.assert_allclose(short.values[edge][np.isfinite(va[0][edge])], va[0][edge][np.isfinite(va[0][edge])] + 7e-4, atol=1e-6)
    assert (short["quality"].values[edge][np.isfinite(va[0][0][edge])] == Quality.CLEAR).all()
    with rasterio.open(tmp_path / "tiles" / f"{ms.DATES[1]}_tileA.tif", "r+") as dst:  # one tile declares its scaling
        dst.scales, dst.offsets = (1e-4,) * 4, (-0.1,) * 4
    with pytest.raises(SourceError, match=r"2020-04-10_tileB.tif: declares no scale and offset .* while other bands or "
                                          r"tiles of its date \(2020-04-10\) do"):
        open_series(tmp_path / "tiles")
    with rasterio.open(tmp_path / "tiles" / f"{ms.DATES[1]}_tileA.tif", "r+") as dst:
        dst.scales, dst.offsets = (1.0,) * 4, (0.0,) * 4
    for name, baseline in (("tileA", "N0400"), ("tileB", "N0500")):  # one date's tiles from two baselines
        (tmp_path / "tiles" / f"{ms.DATES[0]}_{name}.tif").rename(
            tmp_path / "tiles" / f"S2B_MSIL2A_20200301T105339_{baseline}_R051_{name}_20200301T120000.tif")
    with pytest.raises(InputError, match=r"images of 2020-03-01 \(tiles of one date, mosaicked: .*\) are products of "
                                         r"different processing baselines \(04.00, 05.00\)"):
        describe_dates(open_series(tmp_path / "tiles"))


def test_external_masks_of_tiled_dates_go_to_their_date_or_their_tile(tmp_path):
    """--mask with tiles of one date: a file of one band per date (not per tile), and a folder of one mask per
    tile named like its image, each pixel's quality that of the tile its values come from (a cloud in tile B's
    mask over the overlap, where tile A's values are read, is not a cloud of the date)."""
    for t, date in enumerate(ms.DATES):
        for name, cols in (("tileA", slice(0, 26)), ("tileB", slice(18, 44))):
            tile = dict(transform=ms.TRANSFORM @ Affine.translation(cols.start, 0))
            ms.write_geotiff(tmp_path / "f" / f"{date}_{name}.tif", ms.scene(t)[:, :, cols], descriptions=ms.BANDS, **tile)
            m = np.zeros((1, *ms.SHAPE), np.uint8)
            if t == 0 and name == "tileB":
                m[0, 0:4, 30:36] = m[0, 10:14, 20:24] = 4  # a cloud on B alone, and one in the overlap
            ms.write_geotiff(tmp_path / "tiles" / f"{date}_{name}_fmask.tif", m[:, :, cols], nodata=None, **tile)
    stacked = np.zeros((3, *ms.SHAPE), np.uint8)
    stacked[1, 0:4, 30:36] = 4
    ms.write_geotiff(tmp_path / "dates.tif", stacked, nodata=None)

    def clouds(mask):
        cube = open_series(tmp_path / "f", mask=mask, mask_convention="fmask")
        q = cube["quality"].sel(x=slice(ms.ORIGIN[0], ms.ORIGIN[0] + 440), y=slice(ms.ORIGIN[1], ms.ORIGIN[1] - 400)).values
        return [sorted({(r // 4, c // 4) for r, c in zip(*np.nonzero(qt == Quality.CLOUD))}) for qt in q]

    assert clouds(tmp_path / "dates.tif") == [[], [(0, 7), (0, 8)], []]
    assert clouds(tmp_path / "tiles") == [[(0, 7), (0, 8)], [], []]  # (not the overlap's: A's values, A's mask)


def test_a_mask_folder_laid_out_as_the_images_goes_by_date_and_unnamed_bands_are_told_to_take_a_suffix(tmp_path):
    """One folder per date, every image named image.tif, and its mask in masks/<date>/image_fmask.tif: each goes
    to its date (matched by name first, every date took the first date's mask: a review). Two single-band files
    of one date without band suffixes are told to take one, not only that they repeat one scene."""
    for t, date in enumerate(ms.DATES):
        ms.write_geotiff(tmp_path / "f" / date / "image.tif", ms.scene(t), descriptions=ms.BANDS)
        m = np.zeros((1, *ms.SHAPE), np.uint8)
        m[0, 0:4, 4 * t:4 * t + 4] = 4  # a cloud that moves east by a patch a date
        ms.write_geotiff(tmp_path / "masks" / date / "image_fmask.tif", m, nodata=None)
    cube = open_series(tmp_path / "f", mask=tmp_path / "masks", mask_convention="fmask", patch_size=4)
    q = cube["quality"].sel(x=slice(ms.ORIGIN[0], ms.ORIGIN[0] + 440), y=slice(ms.ORIGIN[1], ms.ORIGIN[1] - 400)).values
    assert [sorted({c // 4 for c in np.nonzero(qt == Quality.CLOUD)[1]}) for qt in q] == [[0], [1], [2]]
    for band in ("coastal", "rededge"):
        ms.write_geotiff(tmp_path / "g" / f"2020-03-01_{band}.tif", ms.scene(0)[:1], descriptions=["x"])
    ms.write_geotiff(tmp_path / "g" / "2020-04-10.tif", ms.scene(1)[:1], descriptions=["x"])
    with pytest.raises(SourceError, match=r"one scene twice\? Keep one .*; if they are bands of one image, end their "
                                          r"names with a band suffix: _B04"):
        open_series(tmp_path / "g")


def test_open_reads_no_pixels_and_a_chunk_reads_one_block(tmp_path, monkeypatch):
    ms.multiband_folder(tmp_path / "f")
    calls, aligned, warped = [], warp.read_aligned, warp.warp_vrt  # the two readers a block can use
    monkeypatch.setattr(warp, "read_aligned", lambda *args, **kw: calls.append(args[3]) or aligned(*args, **kw))
    monkeypatch.setattr(warp, "warp_vrt", lambda *args, **kw: calls.append(args[4]) or warped(*args, **kw))
    cube = open_series(tmp_path / "f", patch_size=8, chunks=16)
    assert calls == []
    block = cube.isel(time=1, y=slice(16, 32), x=slice(16, 32)).compute()
    assert calls == [(16, 16)] and np.isfinite(block.values).all()


@pytest.mark.parametrize("factor, scale", [(1.0, 1e-4), (1e-4, 1.0)])
def test_float_rasters_scaled_only_when_large(tmp_path, factor, scale):
    for t, date in enumerate(ms.DATES[:2]):
        ms.write_geotiff(tmp_path / "f" / f"{date}.tif", (ms.scene(t) * factor).astype(np.float32), nodata=None)
    cube = open_series(tmp_path / "f")
    assert cube.attrs["scale_factor"] == pytest.approx(scale)
    np.testing.assert_allclose(footprint(cube).values[1], ms.scene(1) / 10000, rtol=1e-5)


@pytest.mark.parametrize("empty", ["date", "band"])
def test_float_reflectance_x_10000_is_scaled_when_the_first_date_or_band_is_empty(tmp_path, empty):
    """The scaling was read from the first date's first band only: a stacked file of floats x 10000 whose first
    date (or its blue band) holds no data read as 0..1 reflectance, every date 10 000 times too bright (exit 0),
    and a folder of such files was refused as mixing scalings (a review)."""
    data = np.concatenate([ms.scene(t) for t in range(3)]).astype(np.float32)
    data[: (4 if empty == "date" else 1)] = np.nan
    path = ms.write_geotiff(tmp_path / "stack.tif", data, nodata=np.nan)
    cube = open_series(path, kind="stacked", dates=ms.DATES, bands=ms.BANDS)
    assert cube.attrs["scale_factor"] == pytest.approx(1e-4)
    np.testing.assert_allclose(footprint(cube).values[1], ms.scene(1) / 10000, rtol=1e-5)
    for t, date in enumerate(ms.DATES):
        ms.write_geotiff(tmp_path / "f" / f"{date}.tif", data[4 * t: 4 * t + 4], nodata=np.nan, descriptions=ms.BANDS)
    assert open_series(tmp_path / "f").attrs["scale_factor"] == pytest.approx(1e-4)


def test_a_run_written_inside_the_source_folder_is_not_read_as_images(tmp_path):
    """`run folder --out folder/run` worked once, then every run on the folder (its own resume too) read the
    run's maps as dates ("maps/atypicality.tif: no date in the name")."""
    ms.multiband_folder(tmp_path / "f")
    before = open_series(tmp_path / "f", patch_size=16)
    run = tmp_path / "f" / "run"
    (run / "maps").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "state.json").write_text("{}")
    ms.multiband_folder(run / "maps", names=["atypicality.tif", "magnitude.tif", "cluster.tif"])
    after = open_series(tmp_path / "f", patch_size=16)
    np.testing.assert_array_equal(after.time.values, before.time.values)


def test_a_broken_link_or_a_folder_named_like_a_geotiff_is_named(tmp_path):
    """A dangling link to a date's file dropped that date without a word; a link named x.tif to a folder was
    walked (into all of /tmp in an acceptance test) and the error named a file found there."""
    ms.multiband_folder(tmp_path / "f")
    (tmp_path / "f" / "2021-09-01.tif").symlink_to(tmp_path / "gone.tif")
    with pytest.raises(SourceError, match=r"2021-09-01.tif: is a broken link \(to .*gone.tif, which does not exist\)"):
        open_series(tmp_path / "f", patch_size=16)
    (tmp_path / "f" / "2021-09-01.tif").unlink()
    (tmp_path / "f" / "2021-10-01.tif").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(SourceError, match=r"2021-10-01.tif: is a folder \(or a link to one\), not a GeoTIFF"):
        open_series(tmp_path / "f", patch_size=16)


def test_a_date_of_another_place_or_stored_otherwise_is_refused(tmp_path):
    """One date in another UTM zone by mistake made a grid spanning both (the run took 10 GB and went on); one
    100 km away ended in "too few clear pixels"; one stored as 0..1 floats among x10000 integers was scaled like
    them and the whole date looked changed (exit 0). Each is named now."""
    ms.multiband_folder(tmp_path / "far")
    ms.write_geotiff(tmp_path / "far" / "2021-09-01.tif", ms.scene(1), descriptions=ms.BANDS, crs="EPSG:32610")
    with pytest.raises(SourceError, match=r"2021-09-01.tif: overlaps no other date of the series .*its CRS is EPSG:32610"):
        open_series(tmp_path / "far", patch_size=16)
    ms.multiband_folder(tmp_path / "mixed")
    ms.write_geotiff(tmp_path / "mixed" / "2021-09-01.tif", (ms.scene(1) / 10000).astype("float32"), descriptions=ms.BANDS)
    with pytest.raises(SourceError, match=r"mixes reflectance stored as integers \(2020-03-01.tif: int16\) and as floats "
                                          r"\(2021-09-01.tif: float32\)"):
        open_series(tmp_path / "mixed", patch_size=16)
    # 8-bit images are / 255 and other integers x 1e-4: a uint8 date among int16 ones was read 40 x too dark (exit 0)
    ms.multiband_folder(tmp_path / "u8")
    ms.write_geotiff(tmp_path / "u8" / "2021-09-01.tif", (ms.scene(1) // 40).astype("uint8"), descriptions=ms.BANDS, nodata=None)
    with pytest.raises(SourceError, match=r"u8: mixes reflectance stored as integers \(2020-03-01.tif: int16\) and as "
                                          r"8-bit integers \(2021-09-01.tif: uint8\)"):
        open_series(tmp_path / "u8", patch_size=16)
    # floats at two scales: the first date's (0..1) was applied to dates stored x 10000, and the run went on
    for t, date in enumerate(ms.DATES):
        ms.write_geotiff(tmp_path / "floats" / f"{date}.tif", (ms.scene(t) / (10000 if t == 0 else 1)).astype("float32"),
                         descriptions=ms.BANDS)
    with pytest.raises(SourceError, match=r"floats/2020-04-10.tif: holds reflectance x 10000 \(as floats\) while "
                                          r"2020-03-01.tif, the first date with data, holds 0..1 reflectance"):
        open_series(tmp_path / "floats", patch_size=16)
    (tmp_path / "floats" / "2020-03-01.tif").unlink()  # the others alike: read x 1e-4
    cube = open_series(tmp_path / "floats", patch_size=16)
    np.testing.assert_allclose(footprint(cube).values[0], ms.scene(1) / 10000, rtol=1e-5)
    # a date whose first band holds no data tells nothing of its scale (review: it was refused as 0..1)
    empty = ms.scene(2).astype("float32")
    empty[0] = ms.NODATA
    ms.write_geotiff(tmp_path / "floats" / "2020-05-20.tif", empty, descriptions=ms.BANDS)
    assert np.isnan(footprint(open_series(tmp_path / "floats", patch_size=16)).values[1, 0]).all()


def test_sentinel2_band_files_in_their_resolution_folders_make_one_date(tmp_path):
    """An L2A product keeps its band files in IMG_DATA/R10m, R20m and R60m, B02 in each: they were refused as
    two images of one date. The bands of one product are one date, each read from its finest resolution."""
    for t, date in enumerate(ms.DATES[:2]):
        d = date.replace("-", "")
        img = tmp_path / "s2" / f"S2A_MSIL2A_{d}T105031_N0300_R051_T31TCJ_{d}T120000.SAFE" / "GRANULE" / "IMG_DATA"
        data = ms.scene(t)
        for k, band in enumerate(ms.BANDS):
            ms.write_geotiff(img / "R10m" / f"T31TCJ_{d}T105031_{band}_10m.tif", data[k : k + 1])
        coarse = ms.TRANSFORM @ Affine.scale(2)
        ms.write_geotiff(img / "R20m" / f"T31TCJ_{d}T105031_B02_20m.tif", np.full((1, 20, 22), 7000, np.int16), transform=coarse)
        ms.write_geotiff(img / "R20m" / f"T31TCJ_{d}T105031_B11_20m.tif", data[:1, ::2, ::2], transform=coarse)
        scl = np.full((1, 20, 22), 4, np.uint8)
        ms.write_geotiff(img / "R20m" / f"T31TCJ_{d}T105031_SCL_20m.tif", scl, transform=coarse, nodata=None)
        ms.write_geotiff(img / "R60m" / f"T31TCJ_{d}T105031_SCL_60m.tif", scl[:, ::3, ::3] * 0 + 9, nodata=None,
                         transform=ms.TRANSFORM @ Affine.scale(6))
    cube = open_series(tmp_path / "s2", patch_size=4)
    assert len(cube.time) == 2 and list(cube.band.values) == [*ms.BANDS, "B11"]
    np.testing.assert_allclose(footprint(cube).sel(band="B02").values[1], ms.scene(1)[0] / 10000, rtol=1e-6)  # the 10 m file
    assert (footprint(cube).quality.values == Quality.CLEAR).all()  # the 20 m SCL (vegetation), not the 60 m one (cloud)


def test_a_product_folder_without_a_reflectance_image_is_named(tmp_path):
    """A product whose download stopped, or that kept only its true-colour preview, lost its date from the
    series without a word (a review): it is named."""
    for t, date in enumerate(ms.DATES):
        d = date.replace("-", "")
        img = tmp_path / "s2" / f"S2A_MSIL2A_{d}T105031_N0300_R051_T31TCJ_{d}T120000.SAFE" / "GRANULE" / "IMG_DATA" / "R10m"
        for k, band in enumerate(ms.BANDS if t < 2 else ["TCI"]):
            ms.write_geotiff(img / f"T31TCJ_{d}T105031_{band}_10m.tif", ms.scene(t)[k : k + 1])
    third = ms.DATES[2].replace("-", "")
    with pytest.raises(SourceError, match=rf"S2A_MSIL2A_{third}T105031_.*\.SAFE: is a product folder that holds only "
                                          r"auxiliary layers \(T31TCJ_.*_TCI_10m.tif\): no reflectance image"):
        open_series(tmp_path / "s2", patch_size=4)
    for f in (tmp_path / "s2").glob(f"*{third}*/**/*.tif"):
        f.unlink()  # an empty product folder: the same
    with pytest.raises(SourceError, match=r"is a product folder that holds no image: no reflectance image"):
        open_series(tmp_path / "s2", patch_size=4)
    import shutil

    shutil.rmtree(next((tmp_path / "s2").glob(f"*{third}*")))
    assert len(open_series(tmp_path / "s2", patch_size=4).time) == 2
    # what the reader does not read is not checked: a product left in a hidden folder (a drive's .Trash-1000),
    # and links back up the tree are walked once (the check walked them again and again: the run hung)
    (tmp_path / "s2" / ".Trash-1000" / f"S2B_MSIL2A_{third}T105339_N0400_R051_T31TCJ_{third}T140000.SAFE").mkdir(parents=True)
    (tmp_path / "s2" / "up1").symlink_to(tmp_path / "s2")
    (tmp_path / "s2" / "up2").symlink_to(tmp_path / "s2")
    assert len(open_series(tmp_path / "s2", patch_size=4).time) == 2


def test_sentinel2_products_as_delivered_in_jpeg2000_are_read_leaving_out_their_quality_indicators(tmp_path):
    """An L2A product as delivered (.jp2 band files; cloud and snow probabilities in QI_DATA) was refused as
    "holds no GeoTIFF (.tif, .tiff) files"."""
    import rasterio

    with rasterio.Env() as env:
        if "JP2OpenJPEG" not in env.drivers():
            pytest.skip("GDAL has no JPEG 2000 driver here")

    def jp2(path, data, transform=ms.TRANSFORM):
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", driver="JP2OpenJPEG", height=data.shape[1], width=data.shape[2], count=1,
                           dtype=data.dtype.name, crs=ms.CRS, transform=transform, QUALITY=100, REVERSIBLE="YES") as dst:
            dst.write(data)

    for t, date in enumerate(ms.DATES[:3]):
        d = date.replace("-", "")
        granule = tmp_path / "s2" / f"S2A_MSIL2A_{d}T105031_N0300_R051_T31TCJ_{d}T120000.SAFE" / "GRANULE" / "L2A_T31TCJ"
        data = ms.scene(t).astype(np.uint16)
        for k, band in enumerate(ms.BANDS):
            jp2(granule / "IMG_DATA" / "R10m" / f"T31TCJ_{d}T105031_{band}_10m.jp2", data[k : k + 1])
        jp2(granule / "IMG_DATA" / "R20m" / f"T31TCJ_{d}T105031_SCL_20m.jp2", np.full((1, 20, 22), 4, np.uint8),
            transform=ms.TRANSFORM @ Affine.scale(2))
        jp2(granule / "QI_DATA" / "MSK_CLDPRB_20m.jp2", np.full((1, 20, 22), 90, np.uint8), transform=ms.TRANSFORM @ Affine.scale(2))
    cube = open_series(tmp_path / "s2", patch_size=4)
    assert len(cube.time) == 3 and list(cube.band.values) == list(ms.BANDS)
    for t in range(3):
        np.testing.assert_allclose(footprint(cube).values[t], ms.scene(t) / 10000, rtol=1e-6)
    assert (footprint(cube).quality.values == Quality.CLEAR).all()  # the SCL (vegetation) read as the mask


def test_a_south_up_raster_is_named_with_what_to_do(tmp_path):
    """A south-up file was refused with the folder's name and numpy reprs of "bounds must be (left, bottom, ...)"."""
    ms.multiband_folder(tmp_path / "f")
    up = Affine(ms.RES, 0, ms.ORIGIN[0], 0, ms.RES, ms.ORIGIN[1] - 40 * ms.RES)
    ms.write_geotiff(tmp_path / "f" / "2021-09-01.tif", ms.scene(1), descriptions=ms.BANDS, transform=up)
    with pytest.raises(SourceError, match=r"2021-09-01.tif: the raster is stored south-up \(pixel size 10 x 10\); warp it north-up"):
        open_series(tmp_path / "f", patch_size=16)


def test_images_narrower_than_a_patch_or_complex_valued_are_refused(tmp_path):
    """A 1 px wide series ended in "too few clear pixels ... mostly nodata or cloud"; complex values were cast
    to real with a ComplexWarning and ran (exit 0)."""
    for t, date in enumerate(ms.DATES[:3]):
        ms.write_geotiff(tmp_path / "thin" / f"{date}.tif", ms.scene(t)[:, :, :1], descriptions=ms.BANDS)
    with pytest.raises(GridError, match=r"the images cover 1 x \d+ px, less than one patch of 16 px a side"):
        open_series(tmp_path / "thin", patch_size=16)
    ms.multiband_folder(tmp_path / "c")
    ms.write_geotiff(tmp_path / "c" / "2021-09-01.tif", ms.scene(1).astype("complex64"), descriptions=ms.BANDS)
    with pytest.raises(SourceError, match=r"2021-09-01.tif: holds complex values \(complex64\), not reflectance"):
        open_series(tmp_path / "c", patch_size=16)


def test_grid_bounds_in_the_wrong_order_are_the_grids_fault_not_the_sources(tmp_path):
    """They were told under the source's name (open_series names the source of an error without a path)."""
    ms.multiband_folder(tmp_path / "f")
    grid = f"{ms.CRS},10,358310,4833220,356040,4835680"
    with pytest.raises(ConfigError, match=r"grid '.*': bounds must be LEFT,BOTTOM,RIGHT,TOP with RIGHT > LEFT and TOP "
                                          r"> BOTTOM: RIGHT 356040 is not above LEFT 358310") as err:
        open_series(tmp_path / "f", grid=grid, patch_size=16)
    assert err.value.path is None
    with pytest.raises(ConfigError, match="TOP 0 is not above BOTTOM 100"):  # built from Python too
        warp.GridSpec(ms.CRS, 10.0, (0.0, 100.0, 100.0, 0.0))


def test_each_date_mask_is_read_by_its_own_convention(tmp_path):
    # a harmonised series: Sentinel-2 dates with SCL masks, Landsat dates with QA_PIXEL flags; SCL 4 (vegetation,
    # clear) read as QA_PIXEL flags is the cirrus bit, and QA_PIXEL's clear value is no SCL class at all
    s2 = "S2A_MSIL2A_20200301T105031_N0214_R051_T31TCJ_20200301T120000"
    lc = "LC08_L2SP_198030_20200410_20200822_02_T1"
    for t, name in enumerate((s2, lc)):
        ms.write_geotiff(tmp_path / "f" / f"{name}.tif", ms.scene(t), descriptions=ms.BANDS)
    scl = np.full(ms.SHAPE, 4, np.uint8)
    scl[0:4, 0:6] = 9  # cloud, high probability
    qa = np.full(ms.SHAPE, 0b1000000, np.uint16)  # clear
    qa[10:14, 10:14] = 0b10000000  # water
    ms.write_geotiff(tmp_path / "f" / f"{s2}_SCL.tif", scl[None], nodata=None)
    ms.write_geotiff(tmp_path / "f" / f"{lc}_QA_PIXEL.tif", qa[None], nodata=None)
    q = footprint(open_series(tmp_path / "f", patch_size=4)).quality.values
    assert (q[0, 0:4, 0:6] == Quality.CLOUD).all() and (q[0, 10:40, 10:40] == Quality.CLEAR).all()
    assert (q[1, 10:14, 10:14] == Quality.WATER).all() and (q[1, 20:40, 20:40] == Quality.CLEAR).all()


def test_hls_fmask_bit_flags_are_read_as_such_and_masks_of_another_convention_are_refused(tmp_path):
    """HLS v2 names its bit-flag layer Fmask (clear land 64, cloud 66, water 96): read by the classic Fmask codes
    every pixel was nodata and the run stopped at "too few clear pixels"; SCL masks read as changescout's
    classes made vegetation snow and bare soil water, silently (a review)."""
    doy = [pd.Timestamp(d).dayofyear for d in ms.DATES[:2]]
    hls = [f"HLS.S30.T31TCJ.2020{day:03d}T105031.v2.0" for day in doy]
    flags = np.full(ms.SHAPE, 64, np.uint8)  # clear land, low aerosol
    flags[0:4, 0:6] = 66  # cloud
    flags[10:14, 10:14] = 96  # water
    flags[20:22, 20:22] = 72  # cloud shadow
    for t, name in enumerate(hls):  # (HLS names hold the day of the year)
        ms.write_geotiff(tmp_path / "f" / f"{name}.tif", ms.scene(t), descriptions=ms.BANDS)
        ms.write_geotiff(tmp_path / "m" / f"{name}.Fmask.tif", flags[None], nodata=255)
    q = footprint(open_series(tmp_path / "f", mask=tmp_path / "m", patch_size=4)).quality.values
    assert (q[:, 0:4, 0:6] == Quality.CLOUD).all() and (q[:, 10:14, 10:14] == Quality.WATER).all()
    assert (q[:, 20:22, 20:22] == Quality.SHADOW).all() and (q[:, 30:40, 30:40] == Quality.CLEAR).all()
    # a mask file beside its image, named so: its whole name says HLS, not only its _Fmask suffix (a review)
    for t, d in enumerate(ms.DATES[:2]):
        name = f"HLS_S30_T31TCJ_{d.replace('-', '')}"
        ms.write_geotiff(tmp_path / "beside" / f"{name}.tif", ms.scene(t), descriptions=ms.BANDS)
        ms.write_geotiff(tmp_path / "beside" / f"{name}_Fmask.tif", flags[None], nodata=255)
    q = footprint(open_series(tmp_path / "beside", patch_size=4)).quality.values
    assert (q[:, 0:4, 0:6] == Quality.CLOUD).all() and (q[:, 10:14, 10:14] == Quality.WATER).all()
    # the same flags named as classic Fmask files: refused, naming the file and the convention that reads them
    for d in ms.DATES[:2]:
        ms.write_geotiff(tmp_path / "c" / f"{d}_fmask.tif", flags[None], nodata=255)
    with pytest.raises(SourceError, match=r"2020-\d\d-\d\d_fmask.tif: ([\d,]+) of the \1 known pixels sampled from the mask \(100.0%\) hold values the "
                                          r"'fmask' convention does not list \(64, 66, 72, 96\).*they read as 'hls'"):
        open_series(tmp_path / "f", mask=tmp_path / "c", dates=list(ms.DATES[:2]), patch_size=4)
    # Sentinel-2 SCL codes given as changescout's quality classes: 9 (cloud) is none, and SCL fits
    scl = np.full(ms.SHAPE, 4, np.uint8)
    scl[0:4, 0:6] = 9
    for d in ms.DATES[:2]:
        ms.write_geotiff(tmp_path / "s" / f"{d}_mask.tif", scl[None], nodata=None)
    with pytest.raises(SourceError, match=r"_mask.tif: \d+ of the [\d,]+ known pixels sampled from the mask \(1.\d%\) hold values the 'quality' convention does not list \(9\).*they "
                                          r"read as 'scl'"):
        open_series(tmp_path / "f", mask=tmp_path / "s", mask_convention="quality", dates=list(ms.DATES[:2]),
                    patch_size=4)
    assert footprint(open_series(tmp_path / "f", mask=tmp_path / "s", mask_convention="scl", dates=list(ms.DATES[:2]),
                                 patch_size=4)).quality.values[0, 0, 0] == Quality.CLOUD


def test_a_mask_whose_pixels_cannot_be_read_is_named(tmp_path):
    """The mask check reads each mask's pixels when the series opens: a truncated file (its header whole) is a
    SourceError naming it, not an internal error."""
    ms.multiband_folder(tmp_path / "f")
    codes = np.random.default_rng(0).integers(0, 5, (1, *ms.SHAPE)).astype(np.uint8)
    for d in ms.DATES:
        ms.write_geotiff(tmp_path / "m" / f"{d}_fmask.tif", codes, nodata=255)
    bad = tmp_path / "m" / f"{ms.DATES[0]}_fmask.tif"
    with open(bad, "r+b") as f:
        f.truncate(bad.stat().st_size - 200)
    with pytest.raises(SourceError, match=rf"{ms.DATES[0]}_fmask.tif: cannot read the mask"):
        open_series(tmp_path / "f", mask=tmp_path / "m", patch_size=4)


def test_a_scale_and_offset_declared_by_the_file_are_used(tmp_path):
    import rasterio

    from changescout.radiometry import apply_offsets

    # Landsat Collection 2 Level-2 DN declared in the files (gdal_translate -a_scale -a_offset), named by dates only
    dn = np.full((2, *ms.SHAPE), round((0.25 + 0.2) / 2.75e-5), np.uint16)
    for date in ms.DATES[:2]:
        path = ms.write_geotiff(tmp_path / "f" / f"{date}.tif", dn, nodata=0, descriptions=("B04", "B08"))
        with rasterio.open(path, "r+") as dst:
            dst.scales, dst.offsets = (2.75e-5, 2.75e-5), (-0.2, -0.2)
    cube = open_series(tmp_path / "f", patch_size=4)
    np.testing.assert_allclose(footprint(cube).values, 0.25, atol=1e-5)  # not DN / 10000 = 1.64
    assert (cube.attrs["scale_factor"], cube.attrs["offset"]) == (2.75e-5, -0.2)
    out, record = apply_offsets(cube)  # no rule applied over what the files declare
    assert {d["status"] for d in record["dates"].values()} == {"declared by the file"}
    np.testing.assert_allclose(footprint(out).values, 0.25, atol=1e-5)
    # one band of a date declaring and another not: which scaling holds is unknown, so say which file
    path = ms.write_geotiff(tmp_path / "g" / "x_B04.tif", dn[:1], nodata=0)
    ms.write_geotiff(tmp_path / "g" / "x_B08.tif", dn[:1], nodata=0)
    with rasterio.open(path, "r+") as dst:
        dst.scales, dst.offsets = (2.75e-5,), (-0.2,)
    with pytest.raises(SourceError, match=r"x_B08.tif: declares no scale and offset .* while other bands or tiles of its date"):
        open_series(tmp_path / "g", dates=["2020-03-01"], patch_size=4)


def test_external_masks_go_to_their_dates_or_images_never_to_file_order(tmp_path):
    names = [f"scene_{i}.tif" for i in (1, 2, 10)]  # sorted by name: scene_1, scene_10, scene_2
    ms.multiband_folder(tmp_path / "f", names=names, with_nodata=False)
    dates = list(ms.DATES)  # one per image, in sorted file order (scene_1, scene_10, scene_2)
    for i, name in enumerate(names):
        m = np.zeros(ms.SHAPE, np.uint8)
        m[0:4, 0:6] = 4 if name == "scene_10.tif" else 0  # only scene_10 has a cloud
        ms.write_geotiff(tmp_path / "masks" / name.replace(".tif", "_fmask.tif"), m[None], nodata=None)
    cube = open_series(tmp_path / "f", dates=dates, mask=tmp_path / "masks", mask_convention="fmask", patch_size=4)
    q = footprint(cube).quality.values
    cloudy = [str(t)[:10] for t, qt in zip(cube.time.values, q) if (qt[0:4, 0:6] == Quality.CLOUD).all()]
    assert cloudy == [dates[1]]  # scene_10's date: the second in sorted file order
    ms.write_geotiff(tmp_path / "masks" / "mask_7.tif", np.zeros((1, *ms.SHAPE), np.uint8), nodata=None)
    with pytest.raises(SourceError, match=r"mask_7.tif: has no date in its name and no image of the series is named like it"):
        open_series(tmp_path / "f", dates=dates, mask=tmp_path / "masks", mask_convention="fmask", patch_size=4)
    (tmp_path / "masks" / "mask_7.tif").unlink()
    ms.write_geotiff(tmp_path / "masks" / f"old_{dates[0]}.tif", np.zeros((1, *ms.SHAPE), np.uint8), nodata=None)
    with pytest.raises(SourceError, match=rf"fmask.tif: is a second mask for {dates[0]} \(scene_1.tif; with old_{dates[0]}.tif\)"):
        open_series(tmp_path / "f", dates=dates, mask=tmp_path / "masks", mask_convention="fmask", patch_size=4)


def test_a_grid_across_the_antimeridian_is_refused_with_the_reason(tmp_path):
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32760", always_xy=True).transform(179.998, -16.8)
    transform = Affine(10, 0, x - 200, 0, -10, y + 200)
    for t, date in enumerate(ms.DATES[:2]):
        ms.write_geotiff(tmp_path / "f" / f"{date}.tif", ms.scene(t), crs="EPSG:32760", transform=transform)
    assert open_series(tmp_path / "f", patch_size=4).sizes["time"] == 2  # in its own CRS
    with pytest.raises(GridError, match=r"cross the antimeridian .* in EPSG:4326.*such as the files' own \(EPSG:32760\)"):
        open_series(tmp_path / "f", patch_size=4, grid="EPSG:4326")


@pytest.mark.parametrize("grid", [None, "EPSG:32631,5"])  # read on the file's own pixels, and warped
def test_a_mask_band_reads_the_files_nodata_value_by_its_convention(tmp_path, grid):
    # one nodata value for all bands of a GeoTIFF: 0 for the reflectance is Fmask's clear land in its mask band
    for t, date in enumerate(ms.DATES):
        data = np.concatenate([ms.scene(t, 3), ms.fmask(t)[None].astype(np.int16)])
        data[:3, 36:40, 0:4] = 0  # no reflectance there: nodata whatever the mask says
        ms.write_geotiff(tmp_path / "f" / f"{date}.tif", data, nodata=0, descriptions=("B04", "B08", "B11", "fmask"))
    cube = open_series(tmp_path / "f", patch_size=4, grid=grid)
    q = footprint(cube).quality.values
    if grid:
        q = q[:, ::2, ::2]  # 5 m pixels: every other one lies in a 10 m pixel of the files
    assert (q[:, 0:4, 0:6] == Quality.CLOUD).all() and (q[:, 20:30, 0:20] == Quality.CLEAR).all()
    assert (q[:, 37:40, 0:3] == Quality.NODATA).all() and (q[:, 36:40, 40:44] == Quality.NODATA).all()  # fmask 255


def test_8_bit_images_are_read_as_0_to_1_not_as_reflectance_x_10000(tmp_path):
    # an RGB aerial or drone image: 0..255 read as x 10000 was 0..0.0255, darker than any land for the cloud screen
    for t, date in enumerate(ms.DATES[:2]):
        ms.write_geotiff(tmp_path / "f" / f"{date}.tif", np.full((3, *ms.SHAPE), 51 * (t + 1), np.uint8), nodata=None,
                         descriptions=("red", "green", "blue"))
    cube = open_series(tmp_path / "f", patch_size=4)
    assert cube.attrs["scale_factor"] == pytest.approx(1 / 255)
    np.testing.assert_allclose(footprint(cube).values[:, 0, 0, 0], [0.2, 0.4], rtol=1e-6)


@pytest.mark.parametrize("grid, unit", [("EPSG:4326,10", "degrees"), ("EPSG:32631,5000", "metres")])
def test_a_grid_resolution_coarser_than_the_scene_is_named_as_the_cause(tmp_path, grid, unit):
    """RES read as metres in a degree CRS (10 degrees a pixel) was told 'use a smaller --patch-size'."""
    ms.multiband_folder(tmp_path / "f")
    with pytest.raises(GridError, match=rf"at the --grid resolution \d+ \({unit} of .* per pixel\) the images cover 0 x 0 px"
                                        rf".*check RES, which is in the CRS's units"):
        open_series(tmp_path / "f", grid=grid)


def test_a_last_band_marked_alpha_is_where_the_image_has_data_not_a_band(tmp_path):
    """GDAL writes a 4-band 8-bit GeoTIFF as RGBA unless told otherwise. Its alpha band was read as a fourth
    band (0/255, as if spectral) while also masking the others: it is the image's mask, the run says so, and a
    file whose fourth band is marked otherwise (rio edit-info --colorinterp), or described by a band name of
    its own (B08), keeps it as a band."""
    from rasterio.enums import ColorInterp

    from changescout.pipeline import input_notes

    rng = np.random.default_rng(0)
    for date in ms.DATES[:3]:
        data = rng.integers(1, 255, (4, H, W)).astype(np.uint8)
        data[3] = 255
        data[3, :5] = 0  # the image holds no data in its first 5 rows
        ms.write_geotiff(tmp_path / "rgba" / f"{date}.tif", data, nodata=None)
    cube = open_series(tmp_path / "rgba")
    assert list(cube["band"].values) == ["b1", "b2", "b3"]
    values = footprint(cube).isel(time=0).values
    assert np.isnan(values[:, :5]).all() and np.isfinite(values[:, 5:]).all() and np.nanmax(values) < 1
    with pytest.raises(SourceError, match=r"has 3 bands and an alpha band .* rio edit-info --colorinterp undefined,"
                                          r"undefined,undefined,undefined FILE\) but 4 band names were given"):
        open_series(tmp_path / "rgba", bands="blue,green,red,nir")  # (it said 3 bands: gdalinfo shows 4)
    note = [n for n in input_notes(cube, {}, grid_of(cube), True) if "alpha band" in n]
    assert note and f"{ms.DATES[0]}.tif" in note[0] and "rio edit-info --colorinterp red,green,blue,undefined" in note[0]
    for f in (tmp_path / "rgba").iterdir():
        with rasterio.open(f, "r+") as dst:
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
    warp._probe.cache_clear()
    cube = open_series(tmp_path / "rgba")
    assert list(cube["band"].values) == ["b1", "b2", "b3", "b4"] and not cube.attrs.get("alpha_files")
    ms.write_geotiff(tmp_path / "named" / "2021-01-01.tif", data, nodata=None, descriptions=ms.BANDS)  # (GDAL's RGBA)
    assert list(open_series(tmp_path / "named" / "2021-01-01.tif", dates=["2021-01-01"])["band"].values) == list(ms.BANDS)
    # a date to resample reads where its alpha is above 0, as the dates on the grid's pixels do: GDAL's warper
    # weighed each pixel by alpha / 255 against NaN, and a feathered alpha (or the near-infrared of 4 bands of
    # bytes, which GDAL marks alpha) read as no data (a review)
    data[3, 5:] = rng.integers(1, 255, (H - 5, W))
    for date in ms.DATES[:2]:
        ms.write_geotiff(tmp_path / "soft" / f"{date}.tif", data, nodata=None)
    ms.write_geotiff(tmp_path / "soft" / f"{ms.DATES[2]}.tif", data, nodata=None,
                     transform=ms.TRANSFORM @ Affine.translation(0.5, 0.5))  # half a pixel off: resampled
    warp._probe.cache_clear()
    values = footprint(open_series(tmp_path / "soft")).values
    assert np.isnan(values[0, :, :5]).all() and np.isfinite(values[0, :, 5:]).all()
    assert np.isfinite(values[2, :, 6:-1, 1:-1]).all() and np.nanmax(values[2]) < 1
    # the same files with their 4th band named (B08): a band, warped as its values, not the others' weights
    for date in ms.DATES[:2]:
        ms.write_geotiff(tmp_path / "named4" / f"{date}.tif", data, nodata=None, descriptions=ms.BANDS)
    ms.write_geotiff(tmp_path / "named4" / f"{ms.DATES[2]}.tif", data, nodata=None, descriptions=ms.BANDS,
                     transform=ms.TRANSFORM @ Affine.translation(0.5, 0.5))
    cube = open_series(tmp_path / "named4")
    values = footprint(cube).values
    assert list(cube["band"].values) == list(ms.BANDS) and np.isfinite(values[2, :, 6:-1, 1:-1]).all()
    np.testing.assert_allclose(values[0], data / 255, rtol=1e-6)
    # the last of 5 bands marked alpha: GDAL masks nothing with it, so it stays a band (it was dropped, and its
    # zeros read as clear data)
    five = ms.write_geotiff(tmp_path / "five" / "2021-01-01.tif", np.concatenate([data, data[3:]]), nodata=None)
    with rasterio.open(five, "r+") as dst:
        dst.colorinterp = [ColorInterp.gray] * 4 + [ColorInterp.alpha]
    warp._probe.cache_clear()
    assert open_series(five, dates=["2021-01-01"], bands="B02,B03,B04,B08,X").sizes["band"] == 5


def test_an_hls_folder_reads_its_dates_bands_mask_and_radiometry_from_the_names(tmp_path):
    """NASA's HLS v2 delivers one file a band (HLS.S30.T31TCJ.2020061T105031.v2.0.B04.tif): the date is a day of
    the year, the band follows a dot, the Fmask is bit flags, the angle layers are no bands, and S30 and L30
    number their bands differently (L30's B05 is the near infrared, its B10 and B11 thermal)."""
    from changescout.errors import BandError
    from changescout.quality import NIR, find_bands
    from changescout.radiometry import describe_dates
    from changescout.sources.registry import check_band_numbering

    flags = np.full(ms.SHAPE, 64, np.uint8)
    flags[0:4, 0:6] = 66
    bands = {"S30": ("B02", "B03", "B04", "B05", "B8A"), "L30": ("B02", "B03", "B04", "B05", "B10", "B11")}
    for product, days in (("S30", (61, 101)), ("L30", (81, 121))):
        for t, day in enumerate(days):
            name = f"HLS.{product}.T31TCJ.2020{day:03d}T105031.v2.0"
            data = ms.scene(t, n_bands=len(bands[product]))
            for b, band in enumerate(bands[product]):
                ms.write_geotiff(tmp_path / product / f"{name}.{band}.tif", data[b:b + 1], nodata=-9999)
            ms.write_geotiff(tmp_path / product / f"{name}.Fmask.tif", flags[None], nodata=255)
            ms.write_geotiff(tmp_path / product / f"{name}.SAA.tif", data[:1], nodata=-9999)
    s30 = open_series(tmp_path / "S30", patch_size=4)
    assert list(pd.DatetimeIndex(s30["time"].values).strftime("%Y-%m-%d")) == ["2020-03-01", "2020-04-10"]
    assert list(s30["band"].values) == ["B02", "B03", "B04", "B05", "B8A"]
    assert (footprint(s30).quality.values[:, 0:4, 0:6] == Quality.CLOUD).all()
    assert any(f.endswith(".SAA.tif") for f in s30.attrs["ignored_files"])
    assert find_bands(s30, NIR)[0] == 4  # B8A: Sentinel-2's narrow near infrared
    dates = describe_dates(s30)
    assert dates["2020-03-01"]["platform"] == "sentinel-2" and "HLS v2" in dates["2020-03-01"]["rule"]
    l30 = open_series(tmp_path / "L30", patch_size=4)
    assert list(l30["band"].values) == ["B02", "B03", "B04", "B05"]  # B10, B11: thermal, left out
    assert find_bands(l30, NIR)[0] == 3  # B05 on OLI numbering
    assert describe_dates(l30)["2020-03-21"]["platform"] == "landsat-8-9"
    l30_nir, s30_nir = l30.sel(band="B05").values, s30.sel(band="B8A").values  # (read before their files move)
    for f in (tmp_path / "L30").iterdir():  # the two products in one folder: read together under S30's names
        f.rename(tmp_path / "S30" / f.name)
    both = open_series(tmp_path / "S30", patch_size=4)
    assert list(pd.DatetimeIndex(both["time"].values).strftime("%m-%d")) == ["03-01", "03-21", "04-10", "04-30"]
    assert list(both["band"].values) == ["B02", "B03", "B04", "B8A"]  # S30's red edge B05: not on the L30 dates
    assert "L30 B05 -> B8A" in both.attrs["band_harmonisation"] and "left out: B05" in both.attrs["band_harmonisation"]
    assert find_bands(both, NIR)[0] == 3
    from changescout.cube import grid_of as _grid_of
    from changescout.pipeline import input_notes
    assert any(n.startswith("note: HLS S30 and L30 dates read together") and "left out: B05" in n
               for n in input_notes(both, {}, _grid_of(both), given_grid=True))  # the run says so before it starts
    # an L30 date's B8A is its B05 file (the near infrared), an S30 date's its own B8A
    np.testing.assert_allclose(both.sel(band="B8A").values[[1, 3]], l30_nir)
    np.testing.assert_allclose(both.sel(band="B8A").values[[0, 2]], s30_nir)
    assert (footprint(both).quality.values[:, 0:4, 0:6] == Quality.CLOUD).all()  # the Fmask of both, as HLS flags
    picked = open_series(tmp_path / "S30", bands=["B04", "B8A"], patch_size=4)  # --bands by S30's names
    assert list(picked["band"].values) == ["B04", "B8A"]
    with pytest.raises(SourceError, match=r"--bands \['B05'\]: not on every date .* read under S30's band names "
                                          r"\(L30 B05 -> B8A, .*\); the bands both have: B02, B03, B04, B8A"):
        open_series(tmp_path / "S30", bands=["B04", "B05"], patch_size=4)  # a red edge L30 has not
    # a date that lacks a band its product's other dates have is refused, not a band taken off every date (a review:
    # one S30 date without B04 lost the red band of the series)
    lost = next((tmp_path / "S30").glob("HLS.S30.*2020101*.B04.tif"))
    lost.rename(tmp_path / lost.name)
    with pytest.raises(SourceError, match=r"2020101.*has bands \['B02', 'B03', 'B05', 'B8A'\] but .* \(it lacks \['B04'\]\); "
                                          r"every HLS S30 date needs the same bands"):
        open_series(tmp_path / "S30", patch_size=4)
    (tmp_path / lost.name).rename(lost)
    # an L30 image of the date and tile of an S30 image: left out for it, and said (a review: refused as one scene twice)
    twin = "HLS.L30.T31TCJ.2020061T104031.v2.0"
    for band in ("B02", "B03", "B04", "B05"):
        ms.write_geotiff(tmp_path / "S30" / f"{twin}.{band}.tif", ms.scene(5, n_bands=1), nodata=-9999)
    with_twin = open_series(tmp_path / "S30", patch_size=4)
    assert len(with_twin["time"]) == 4 and [Path(n).name for n in with_twin.attrs["hls_second_sensor"]] == [f"{twin}.B02.tif"]
    np.testing.assert_allclose(with_twin.sel(band="B8A").values[0], s30_nir[0])  # the S30 image is read
    assert any("1 HLS L30 image(s) share their date and tile with an S30 image" in n
               for n in input_notes(with_twin, {}, _grid_of(with_twin), given_grid=True))
    for f in (tmp_path / "S30").glob(f"{twin}.*"):
        f.unlink()
    # HLS with another product's files: refused, naming one (its band numbers are its own)
    other = ms.write_geotiff(tmp_path / "S30" / "S2B_MSIL2A_20200320T105031_N0400_R051_T31TCJ_20200320T120000_B02.tif",
                             ms.scene(2, n_bands=1), nodata=0)
    with pytest.raises(SourceError, match=r"S2B_MSIL2A_.*_B02.tif: is not an HLS file, in a folder of HLS S30 and L30 dates"):
        open_series(tmp_path / "S30", patch_size=4)
    other.unlink()
    # an unfinished granule folder (its angles only) is named, not a date silently lost (a review)
    granule = tmp_path / "S30" / "HLS.L30.T31TCJ.2020141T105031.v2.0"
    ms.write_geotiff(granule / f"{granule.name}.SAA.tif", ms.scene(0, n_bands=1), nodata=-9999)
    with pytest.raises(SourceError, match=r"HLS.L30.T31TCJ.2020141T105031.v2.0: is a product folder that holds only auxiliary"):
        open_series(tmp_path / "S30", patch_size=4)
    # the same dates as a datacube of band numbers, not the folder: still refused (B05 means two bands)
    both.attrs.pop("band_harmonisation")
    both = both.assign_coords(band=["B02", "B03", "B04", "B05"])
    with pytest.raises(BandError, match=r"mixes HLS S30 .* and L30 .*\(B05 is a red edge on S30, the near infrared on L30"):
        check_band_numbering(both)
