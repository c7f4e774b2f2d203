import numpy as np
import pytest
import xarray as xr

import make_sources as ms
from changescout.cube import Quality, grid_of
from changescout.errors import SourceError
from changescout.sources import open_series

H, W = ms.SHAPE


def native(cube):
    left, top = ms.ORIGIN
    return cube.sel(x=slice(left, left + W * ms.RES), y=slice(top, top - H * ms.RES))


@pytest.mark.parametrize("name", ["cube.nc", "cube.zarr"])
def test_cube_round_trip(tmp_path, name):
    path = ms.datacube(tmp_path / name)
    cube = open_series(path, patch_size=16, chunks=32)
    assert cube.attrs["source_kind"] == "datacube" and cube.attrs["scale_factor"] == 1.0
    assert list(cube.band.values) == list(ms.BANDS) and grid_of(cube).crs == ms.CRS
    assert grid_of(cube).transform[2] % (16 * ms.RES) == 0
    values = native(cube)
    for t in range(3):
        np.testing.assert_allclose(values.isel(time=t).values, ms.scene(t) / 10000, rtol=1e-6)
    q = values.quality.values
    assert (q[:, 0:4, 0:6] == Quality.CLOUD).all() and (q[:, 20:30, 0:20] == Quality.CLEAR).all()
    assert (cube.quality.values == Quality.NODATA).sum() == cube.quality.size - q.size


def test_cube_integers_are_scaled_and_bands_selected(tmp_path):
    path = ms.datacube(tmp_path / "int.nc", float_scale=False)
    cube = open_series(path, bands=["B08"])
    assert cube.attrs["scale_factor"] == pytest.approx(1e-4) and list(cube.band.values) == ["B08"]
    np.testing.assert_allclose(native(cube).values[1, 0], ms.scene(1)[3] / 10000, rtol=1e-6)


def test_cube_reprojected_onto_another_grid(tmp_path):
    path = ms.datacube(tmp_path / "cube.nc")
    cube = open_series(path, grid="EPSG:32631,20", patch_size=4, chunks=8)
    image = cube.isel(time=0).sel(band="B02")
    rows, cols = np.nonzero(np.nan_to_num(image.values) > 0.6)
    centre = ((ms.SQUARE[0] + ms.SQUARE[2]) / 2, (ms.SQUARE[1] + ms.SQUARE[3]) / 2)
    assert np.allclose((image.x.values[cols].mean(), image.y.values[rows].mean()), centre, atol=20)
    assert (cube.quality.values[:, image.y > ms.ORIGIN[1]] == Quality.NODATA).all()


def test_cube_errors_name_the_file(tmp_path):
    no_crs = ms.datacube(tmp_path / "nocrs.nc", with_crs=False)
    with pytest.raises(SourceError, match=r"nocrs.nc: the variable 'reflectance' has no CRS"):
        open_series(no_crs)
    two = tmp_path / "two.nc"
    ds = xr.open_dataset(ms.datacube(tmp_path / "one.nc")).load()
    ds["other"] = ds["reflectance"] * 2
    ds.to_netcdf(two)
    with pytest.raises(SourceError, match=r"two.nc: has 2 4-D variables .*variable= .*--config file: \{\"source_options\""):
        open_series(two)
    assert open_series(two, variable="other").isel(time=0, band=0).max() > 1.5
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf")
    with pytest.raises(SourceError, match="bad.nc: cannot open the data cube"):
        open_series(bad)
    same_day = tmp_path / "sameday.nc"  # times of day: two images of one day would share event ids
    ds = xr.open_dataset(ms.datacube(tmp_path / "three.nc")).load()
    ds = ds.assign_coords(time=ds["time"].values[0] + np.array([0, 300, 86400 * 30], "timedelta64[s]"))
    ds.to_netcdf(same_day)
    with pytest.raises(SourceError, match=r"sameday.nc: the series has several images for the date\(s\)"):
        open_series(same_day)


def test_an_orphan_grid_mapping_still_gives_the_crs(tmp_path):
    """Some xarray selections drop the variable's ``grid_mapping`` attribute; the re-saved cube still holds its
    ``spatial_ref`` variable, and the error told the user to add what was there."""
    ds = xr.open_dataset(ms.datacube(tmp_path / "cube.nc"), decode_coords=False).load()
    ds["reflectance"].attrs.pop("grid_mapping")
    ds["quality"].attrs.pop("grid_mapping", None)
    ds.to_netcdf(tmp_path / "orphan.nc")
    assert "grid_mapping" not in xr.open_dataset(tmp_path / "orphan.nc", decode_coords=False)["reflectance"].attrs
    assert grid_of(open_series(tmp_path / "orphan.nc")).crs == ms.CRS


def test_cube_duplicate_band_names_are_refused(tmp_path):
    path = ms.datacube(tmp_path / "cube.nc")
    with pytest.raises(SourceError, match=r"cube.nc: band names must be unique, but B04 occurs more than once in --bands"):
        open_series(path, bands=["B04", "B04"])
    dup = tmp_path / "dup.nc"
    ds = xr.open_dataset(path).load()
    ds.assign_coords(band=["B02", "B03", "B03", "B08"]).to_netcdf(dup)
    with pytest.raises(SourceError, match=r"dup.nc: band names must be unique, but B03 occurs more than once in the band "
                                          r"coordinate of 'reflectance'"):
        open_series(dup)


def test_cube_options_that_do_not_apply_are_named_as_cli_options(tmp_path):
    path = ms.datacube(tmp_path / "cube.nc")
    with pytest.raises(SourceError, match="--dates and --mask do not apply"):
        open_series(path, dates=list(ms.DATES))
