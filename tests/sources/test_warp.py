"""sources.warp: the plain windowed read on the file's own grid equals the warper; stacked files read in one pass."""

import numpy as np
import pytest
from affine import Affine
from rasterio.enums import Resampling

import make_sources as ms
from changescout.cube import OutputGrid, Quality
from changescout.sources import open_series, warp

H, W = ms.SHAPE


@pytest.fixture
def holey(tmp_path):
    """A 4-band int16 file with a nodata block and a few nodata pixels (reflectance), and a 1-band mask file."""
    data = ms.scene(0)
    data[:, 3:9, 5:12] = ms.NODATA
    data[1, 20, 30] = ms.NODATA
    data[:, H - 1, W - 1] = ms.NODATA
    return ms.write_geotiff(tmp_path / "r.tif", data), ms.write_geotiff(tmp_path / "m.tif", ms.fmask(0)[None].astype(np.uint8), nodata=255)


def block(col: float, row: float):
    """The transform of a block whose top-left corner is file pixel ``(row, col)`` (fractions: off the file grid)."""
    return ms.TRANSFORM @ Affine.translation(col, row)


@pytest.mark.parametrize(
    "row, col, shape",
    [
        (0, 0, (H, W)),  # the whole file
        (10, 12, (16, 16)),  # inside
        (-5, -3, (16, 16)),  # over the top-left corner: NaN outside
        (H - 8, W - 10, (16, 16)),  # over the bottom-right corner
        (-4, -6, (H + 10, W + 9)),  # larger than the file on every side
        (H + 3, 2, (8, 8)),  # beyond the file: all NaN
    ],
)
@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.nearest])
def test_plain_read_on_the_file_grid_equals_the_warper(holey, row, col, shape, resampling):
    for path in holey:
        info = warp.probe(path)
        transform = block(col, row)
        assert warp.aligned_offset(info, ms.CRS, transform, shape) == (row, col)
        idx = list(range(1, info.count + 1))
        fast = warp.read_aligned(str(path), idx, (row, col), shape)
        slow = warp.warp_vrt(str(path), idx, ms.CRS, transform, shape, resampling)
        assert fast.dtype == slow.dtype == np.float32 and fast.shape == slow.shape == (len(idx), *shape)
        np.testing.assert_array_equal(fast, slow)  # NaN in the same places


def test_nodata_and_outside_are_nan(holey):
    fast = warp.read_aligned(str(holey[0]), [1, 2], (-2, -2), (12, 16))
    assert np.isnan(fast[:, :2]).all() and np.isnan(fast[:, :, :2]).all()  # outside the file
    assert np.isnan(fast[:, 5:11, 7:14]).all()  # the nodata block
    assert np.isfinite(fast[:, 2:5, 2:]).all()


@pytest.mark.parametrize(
    "crs, transform",
    [
        (ms.CRS, block(0.5, 0)),  # half a pixel off
        (ms.CRS, block(0, 0.25)),
        (ms.CRS, Affine(ms.RES / 2, 0, ms.ORIGIN[0], 0, -ms.RES / 2, ms.ORIGIN[1])),  # another pixel size
        ("EPSG:32632", ms.TRANSFORM),  # another CRS, same numbers
    ],
)
def test_off_the_file_grid_is_not_the_file_grid(holey, crs, transform):
    """Blocks off the file's grid must be warped (the cube-level dispatch: the next test but one)."""
    assert warp.aligned_offset(warp.probe(holey[0]), crs, transform, (16, 16)) is None


def test_same_crs_written_differently_is_the_file_grid(holey):
    wkt = warp.CRS.from_user_input(ms.CRS).to_wkt()
    assert warp.aligned_offset(warp.probe(holey[0]), wkt, block(2, 3), (8, 8)) == (3, 2)


def test_misaligned_grid_cube_warps_and_aligned_cube_does_not(tmp_path, monkeypatch):
    """Through open_series: the native grid reads plainly; a grid half a pixel off goes through the warper."""
    path = ms.stacked_file(tmp_path / "stack.tif")
    calls = []
    real = warp.warp_vrt
    monkeypatch.setattr(warp, "warp_vrt", lambda *a, **kw: calls.append(a[0]) or real(*a, **kw))
    aligned = open_series(path, dates=list(ms.DATES), bands=ms.BANDS, patch_size=8)
    aligned.values
    assert calls == []
    left, top = ms.ORIGIN
    grid = OutputGrid(ms.CRS, (ms.RES, 0, left - 5, 0, -ms.RES, top + 5), (H + 1, W + 1))
    shifted = open_series(path, dates=list(ms.DATES), bands=ms.BANDS, patch_size=8, grid=grid)
    values = shifted.values
    assert calls and np.isfinite(values[:, :, 1:H, 1:W]).all()


def test_stacked_file_is_read_once_per_block_for_all_dates(tmp_path, monkeypatch):
    path = ms.stacked_file(tmp_path / "stack.tif")
    calls, real = [], warp.read_aligned
    monkeypatch.setattr(warp, "read_aligned", lambda *a, **kw: calls.append(list(a[1])) or real(*a, **kw))
    cube = open_series(path, dates=list(ms.DATES), bands=ms.BANDS, patch_size=8, chunks=16)
    assert cube.data.chunks[0] == (len(ms.DATES),)  # every date of the file in one chunk
    block_ = cube.isel(y=slice(16, 32), x=slice(16, 32)).compute()
    assert calls == [list(range(1, len(ms.DATES) * len(ms.BANDS) + 1))]
    for t in range(len(ms.DATES)):
        left, top = ms.ORIGIN
        x0, y0 = int((float(block_.x[0]) - ms.RES / 2 - left) / ms.RES), int((top - float(block_.y[0]) - ms.RES / 2) / ms.RES)
        np.testing.assert_allclose(block_.values[t], ms.scene(t)[:, y0 : y0 + 16, x0 : x0 + 16] / 10000, rtol=1e-6)


def test_stacked_chunks_stay_bounded(tmp_path):
    """A chunk spans at most dask's array.chunk-size bytes: fewer dates per chunk, never fewer than one."""
    import dask

    path = ms.stacked_file(tmp_path / "stack.tif")
    per_date = 16 * 16 * (len(ms.BANDS) + 1) * 4
    for size, expected in [(10 * per_date, (3,)), (2 * per_date, (2, 1)), (per_date // 2, (1, 1, 1))]:
        with dask.config.set({"array.chunk-size": size}):
            cube = open_series(path, dates=list(ms.DATES), bands=ms.BANDS, patch_size=8, chunks=16)
        assert cube.data.chunks[0] == expected


def test_folder_of_files_keeps_one_date_per_chunk_and_masks(tmp_path):
    ms.landsat_folder(tmp_path / "l")
    cube = open_series(tmp_path / "l", patch_size=8, chunks=16)
    assert set(cube.data.chunks[0]) == {1}
    q = cube["quality"].values
    assert (q == Quality.CLEAR).any() and (q != Quality.CLEAR).any()


@pytest.mark.parametrize("shift", [0.0, 5.0])  # on the file grid (plain read), half a pixel off (warped)
def test_a_date_missing_from_a_stacked_file_is_nan_for_that_date_only(tmp_path, shift):
    """Every date of a stacked file is read at once: one date's nodata must not read as -9999 (nor blend into
    its neighbours) because other dates have data there."""
    data = np.concatenate([ms.scene(t) for t in range(len(ms.DATES))])
    n = len(ms.BANDS)
    data[n : 2 * n, 10:20, 10:20] = ms.NODATA  # date 1 missing over a block
    path = ms.write_geotiff(tmp_path / "stack.tif", data)
    left, top = ms.ORIGIN
    grid = OutputGrid(ms.CRS, (ms.RES, 0, left - shift, 0, -ms.RES, top + shift), (H + 1, W + 1))
    cube = open_series(path, dates=list(ms.DATES), bands=ms.BANDS, patch_size=8, grid=grid)
    assert cube.data.chunks[0] == (len(ms.DATES),)
    values, quality = cube.values, cube["quality"].values
    inside = (slice(None), slice(12, 18), slice(12, 18))
    assert np.isnan(values[1][inside]).all() and (quality[1][inside[1:]] == Quality.NODATA).all()
    assert np.isfinite(values[[0, 2]][(slice(None), *inside)]).all()
    assert np.nanmin(values) > 0  # no -9999 anywhere, blended or not


@pytest.mark.parametrize("layout", ["fmask band", "stacked"])
def test_a_dates_unsaid_zeros_are_not_blended_whatever_else_the_file_holds(tmp_path, layout):
    """Undeclared 0 in every band of a date is nodata, left out of resampling. GDAL tested "every band" over the
    whole file: an Fmask band inside the file (fill 255), or the other dates of a stacked file, kept the date's
    zero edge in, and half a pixel off the grid the next pixel read half its value, clear."""
    scenes = [ms.scene(t).astype(np.uint16) for t in range(len(ms.DATES))]
    scenes[1][:, :, :20], scenes[1][:, :, 20:] = 0, 3100  # date 1's swath edge (no data, unsaid), then even land
    if layout == "fmask band":
        for t, date in enumerate(ms.DATES):
            fmask = np.where(scenes[t][:1] == 0, 255, 0).astype(np.uint16)  # Fmask's fill is 255, clear land 0
            ms.write_geotiff(tmp_path / "f" / f"{date}.tif", np.concatenate([scenes[t], fmask]), nodata=None,
                             descriptions=[*ms.BANDS, "fmask"])
        source, kw = tmp_path / "f", {}
    else:
        source = ms.write_geotiff(tmp_path / "stack.tif", np.concatenate(scenes), nodata=None)
        kw = {"dates": list(ms.DATES), "bands": ms.BANDS}
    left, top = ms.ORIGIN
    grid = OutputGrid(ms.CRS, (ms.RES, 0, left - 5.0, 0, -ms.RES, top + 5.0), (H + 1, W + 1))  # half a pixel off
    values = open_series(source, patch_size=8, grid=grid, **kw).values[1]
    assert np.isnan(values[:, :, :20]).all()
    beyond = values[:, 1:H, 20:W]  # past the edge, every pixel as the land reads: none blended toward 0
    np.testing.assert_allclose(beyond, 0.31, rtol=1e-5)


def test_probe_reports_missing_georeference_without_rasterio_warnings(tmp_path):
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    from changescout.errors import SourceError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing without a geotransform warns too
        no_crs = ms.write_geotiff(tmp_path / "nocrs.tif", ms.scene(0), crs=None, transform=None)
        crs_only = ms.write_geotiff(tmp_path / "crsonly.tif", ms.scene(0), transform=None)
        import rasterio
        from rasterio.control import GroundControlPoint

        gcps = ms.write_geotiff(tmp_path / "gcps.tif", ms.scene(0), crs=None, transform=None)
        with rasterio.open(gcps, "r+") as dst:  # a scanned map or a raw swath: points, not a grid
            dst.gcps = ([GroundControlPoint(0, 0, 355000, 4835000), GroundControlPoint(40, 0, 355000, 4834600),
                         GroundControlPoint(0, 44, 355440, 4835000)], rasterio.crs.CRS.from_epsg(32631))
    for path, message in ((no_crs, "nocrs.tif: the raster has no CRS"),
                          (crs_only, "crsonly.tif: the raster has a CRS but no geotransform"),
                          (gcps, r"gcps.tif: the raster is georeferenced by ground control points only, not on a grid; "
                                 r"warp it onto one first \(gdalwarp -tps")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(SourceError, match=message):
                warp.probe(path)
        assert not [w for w in caught if issubclass(w.category, NotGeoreferencedWarning)]


def test_a_warped_read_is_the_same_whatever_the_chunks(tmp_path):
    """Patch (row, col) is the same place with the same values whatever the chunking. GDAL scaled the bilinear
    kernel, and placed its approximate transformer's pieces, by each block's windows: a file in UTM 31 read on a
    UTM 32 grid differed by up to 0.005 reflectance between 32 px and 1024 px blocks."""
    rng = np.random.default_rng(0)
    for date in ms.DATES[:2]:
        ms.write_geotiff(tmp_path / "f" / f"{date}.tif", rng.integers(1000, 6000, (1, 200, 200)).astype(np.int16),
                         transform=Affine(10, 0, 700000, 0, -10, 5000000))
    for grid in ("EPSG:32632,10", "EPSG:32632,30"):  # at 30 m each output pixel still averages its 3 x 3 sources
        big, small = (open_series(tmp_path / "f", patch_size=4, grid=grid, chunks=c).isel(time=0).values for c in (1024, 32))
        assert (np.isfinite(big) == np.isfinite(small)).all()
        np.testing.assert_allclose(big, small, atol=1e-3)
    fine, coarse = (open_series(tmp_path / "f", patch_size=4, grid=g).isel(time=0).values for g in ("EPSG:32632,10", "EPSG:32632,30"))
    assert np.nanstd(coarse) < 0.5 * np.nanstd(fine)  # averaged, not point-sampled
