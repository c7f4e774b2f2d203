import numpy as np
import pandas as pd
import pytest
import xarray as xr

import make_sources as ms
from changescout.cube import Quality, grid_of
from changescout.errors import ConfigError, SourceError
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
    assert cube.attrs["quality_mask"] is True  # (the auto cloud screen trusts it)
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


def test_a_reprojected_cube_reads_the_same_whatever_the_chunks(tmp_path):
    """Patch (row, col) is the same place with the same values whatever the chunking: each block was warped with
    a kernel scaled from its own windows (white noise differed by 0.08 between 8 px and 1024 px blocks)."""
    import rioxarray  # noqa: F401

    rng = np.random.default_rng(0)
    x, y = 700000 + 10 * (np.arange(96) + 0.5), 5000000 - 10 * (np.arange(96) + 0.5)
    da = xr.DataArray(rng.random((2, 1, 96, 96), np.float32) * 0.5, dims=("time", "band", "y", "x"), name="reflectance",
                      coords={"time": pd.to_datetime(["2020-01-01", "2020-02-01"]), "band": ["B04"], "y": y, "x": x})
    da.rio.write_crs("EPSG:32631").to_dataset().to_netcdf(tmp_path / "c.nc")
    for grid in ("EPSG:32632,10", "EPSG:32632,30"):
        big, small = (open_series(tmp_path / "c.nc", patch_size=4, grid=grid, chunks=c).isel(time=0).values for c in (1024, 8))
        assert (np.isfinite(big) == np.isfinite(small)).all()
        np.testing.assert_allclose(big, small, atol=2e-3)


def test_a_cube_stored_east_to_west_is_read_west_to_east(tmp_path):
    path = ms.datacube(tmp_path / "cube.nc")
    with xr.open_dataset(path) as ds:
        flipped = ds.isel(x=slice(None, None, -1)).load()
    flipped.to_netcdf(tmp_path / "east_to_west.nc")
    a, b = (open_series(p, patch_size=4) for p in (path, tmp_path / "east_to_west.nc"))
    assert grid_of(a) == grid_of(b)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.quality.values, b.quality.values)


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


def rewrite(tmp_path, name, edit, **to_netcdf):
    """The test cube, changed by ``edit(dataset)``, written as ``tmp_path/name``."""
    with xr.open_dataset(ms.datacube(tmp_path / f"base_{name}")) as src:
        ds = edit(src.load())
    ds.to_netcdf(tmp_path / name, **to_netcdf)
    return tmp_path / name


def with_mask(name, values, dtype=np.uint8):
    """Replace the ``quality`` variable by a mask ``name`` holding ``values[0]`` where it is clear and
    ``values[1]`` where it is cloud."""
    def edit(ds):
        codes = np.where(ds["quality"].values == Quality.CLOUD, values[1], values[0]).astype(dtype)
        return ds.drop_vars("quality").assign({name: (("time", "y", "x"), codes)})
    return edit


def expected_quality(tmp_path):
    with xr.open_dataset(ms.datacube(tmp_path / "expected.nc")) as ds:
        return ds["quality"].values


@pytest.mark.parametrize("name, values, dtype, convention", [
    ("SCL", (4, 9), np.uint8, None),                  # Sentinel-2 scene classification: vegetation, cloud
    ("SCL_20m", (5, 8), np.uint8, None),
    ("scl", (4, 10), np.uint8, "scl"),
    ("Fmask", (0, 4), np.uint8, None),
    ("QA_PIXEL", (1 << 6, 1 << 3), np.uint16, None),  # Landsat Collection 2 flags: clear, cloud
    ("cloud_mask", (4, 9), np.uint8, "scl"),
    ("Fmask", (64, 66), np.uint8, "hls"),              # HLS v2 bit flags: clear land (low aerosol), cloud
])
def test_a_mask_variable_named_as_a_mask_is_read_with_its_convention(tmp_path, name, values, dtype, convention):
    """Only a variable named exactly ``quality`` was read: an ``SCL`` mask was ignored without a word."""
    path = rewrite(tmp_path, "masked.nc", with_mask(name, values, dtype))
    cube = open_series(path, mask_convention=convention)
    np.testing.assert_array_equal(native(cube).quality.values, expected_quality(tmp_path))


def test_mask_variables_that_cannot_be_read_are_refused_not_ignored(tmp_path):
    no_convention = rewrite(tmp_path, "mask.nc", with_mask("mask", (4, 9)))
    with pytest.raises(SourceError, match=r"mask.nc: cannot tell the convention of the mask 'mask' .*--mask-convention"):
        open_series(no_convention)
    two = rewrite(tmp_path, "two.nc", lambda ds: with_mask("SCL", (4, 9))(ds).assign(quality=ds["quality"]))
    with pytest.raises(SourceError, match=r"two.nc: has 2 mask variables \['SCL', 'quality'\]; name the one to read "
                                          r"with mask_variable= .*\{\"source_options\": \{\"mask_variable\""):
        open_series(two)
    cube = open_series(two, mask_variable="SCL")
    np.testing.assert_array_equal(native(cube).quality.values, expected_quality(tmp_path))
    hls = rewrite(tmp_path, "hls.nc", with_mask("Fmask", (64, 66)))  # read by the classic codes: all nodata
    with pytest.raises(SourceError, match=r"hls.nc \(mask variable 'Fmask'\): ([\d,]+) of the \1 known pixels sampled from "
                                          r"the mask \(100.0%\) hold values the 'fmask' convention does not list \(64, 66\).*they read as 'hls'"):
        open_series(hls)

    def outside(ds):  # an Fmask whose nodata attribute (odc-stac's) fills the first dates: outside the footprint
        ds = with_mask("Fmask", (0, 4), np.int16)(ds)
        ds["Fmask"][:-1] = -9999
        ds["Fmask"].attrs["nodata"] = -9999
        return ds
    cube = open_series(rewrite(tmp_path, "outside.nc", outside))  # its fill is no unlisted code (a review)
    assert (native(cube).quality.values[:-1] == Quality.NODATA).all()
    unmasked = rewrite(tmp_path, "unmasked.nc", lambda ds: ds.drop_vars("quality"))
    with pytest.raises(SourceError, match=r"unmasked.nc: --mask-convention scl is given but no variable is named as "
                                          r"a mask .*its variables are \['reflectance'\]"):
        open_series(unmasked, mask_convention="scl")


def test_a_4d_mask_variable_is_refused_naming_the_file(tmp_path):
    """A (time, qband, y, x) quality variable crashed the run with xarray's ValueError (exit 1)."""
    path = rewrite(tmp_path, "q4d.nc", lambda ds: ds.assign(quality=ds["quality"].expand_dims("qband", axis=1)))
    with pytest.raises(SourceError, match=r"q4d.nc: the mask variable 'quality' has dims "
                                          r"\('time', 'qband', 'y', 'x'\); it must be \(time, y, x\)") as err:
        open_series(path, variable="reflectance")
    assert err.value.exit_code == 2


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT"])
def test_netcdf3_files_are_read(tmp_path, fmt):
    """scipy, CDO and NCO write NetCDF-3; it was opened with h5netcdf and refused with an HDF5 error."""
    path = rewrite(tmp_path, "nc3.nc", lambda ds: ds, engine="scipy", format=fmt)
    values = native(open_series(path))
    for t in range(3):
        np.testing.assert_allclose(values.isel(time=t).values, ms.scene(t) / 10000, rtol=1e-6)
    np.testing.assert_array_equal(values.quality.values, expected_quality(tmp_path))


def per_band(ds):
    bands = {b: ds["reflectance"].sel(band=b, drop=True) for b in ms.BANDS}
    return xr.Dataset({**bands, "quality": ds["quality"]}).rio.write_crs(ms.CRS)


def test_one_variable_per_band_is_stacked_into_bands(tmp_path):
    """The odc-stac/openEO layout: B02, B03... each (time, y, x); it was refused as '0 4-D variables'."""
    path = rewrite(tmp_path, "perband.nc", per_band)
    cube = open_series(path, patch_size=16, chunks=32)
    assert list(cube.band.values) == list(ms.BANDS) and grid_of(cube).crs == ms.CRS
    values = native(cube)
    for t in range(3):
        np.testing.assert_allclose(values.isel(time=t).values, ms.scene(t) / 10000, rtol=1e-6)
    np.testing.assert_array_equal(values.quality.values, expected_quality(tmp_path))
    b08 = native(open_series(path, bands=["B08"]))
    np.testing.assert_allclose(b08.values[1, 0], ms.scene(1)[3] / 10000, rtol=1e-6)
    one = native(open_series(path, variable="B03"))  # named as the message of a refused layout advised
    assert list(one.band.values) == ["B03"]
    np.testing.assert_allclose(one.values[2, 0], ms.scene(2)[1] / 10000, rtol=1e-6)


def test_a_layout_that_is_not_a_cube_is_refused_with_its_variables_and_dims(tmp_path):
    path = rewrite(tmp_path, "fived.nc", lambda ds: ds.assign(reflectance=ds["reflectance"].expand_dims("member", axis=-1)))
    with pytest.raises(SourceError, match=r"fived.nc: has no reflectance to read: a cube needs one \(time, band, y, x\) "
                                          r"variable or one \(time, y, x\) variable per band .*its variables are "
                                          r"reflectance \('time', 'band', 'y', 'x', 'member'\)"):
        open_series(path)


@pytest.mark.parametrize("quality, found", [
    (9, r"the mask variable 'quality' holds values \[9\] that are not changescout quality classes"),
    (4, r"no pixel of the mask variable 'quality' is clear \(0\) or water"),
])
def test_a_quality_variable_holding_other_codes_is_refused(tmp_path, quality, found):
    """SCL codes in 'quality' read 4 (vegetation) as snow: no pixel was clear and the run failed far later."""
    def edit(ds):
        return ds.assign(quality=xr.where(ds["quality"] == Quality.CLOUD, quality, 4).astype(np.uint8))
    path = rewrite(tmp_path, "qscl.nc", edit)
    with pytest.raises(SourceError, match=rf"qscl.nc: {found}.*pass --mask-convention, one of .*'scl'"):
        open_series(path)
    if quality == 9:
        np.testing.assert_array_equal(native(open_series(path, mask_convention="scl")).quality.values,
                                      expected_quality(tmp_path))


def test_times_that_are_not_cf_dates_in_the_standard_calendar_are_refused(tmp_path):
    """Days without units were read as nanoseconds since 1970 (three images of 1970-01-01)."""
    days = np.array([7365, 7405, 7445])
    no_units = rewrite(tmp_path, "nounits.nc", lambda ds: ds.assign_coords(time=("time", days)))
    with pytest.raises(SourceError, match=r"nounits.nc: the time coordinate has no CF units .*'days since 2000-01-01'"):
        open_series(no_units)
    for calendar in ("noleap", "360_day"):
        attrs = {"units": "days since 2000-01-01", "calendar": calendar}
        path = rewrite(tmp_path, f"{calendar}.nc", lambda ds: ds.assign_coords(time=("time", days, attrs)))
        with pytest.raises(SourceError, match=rf"{calendar}.nc: the time coordinate uses the '{calendar}' calendar"):
            open_series(path)
    units = {"units": "days since 2000-01-01"}
    standard = rewrite(tmp_path, "days.nc", lambda ds: ds.assign_coords(time=("time", days, units)))
    assert [str(t)[:10] for t in open_series(standard).time.values] == ["2020-03-01", "2020-04-10", "2020-05-20"]
    # dates written as text are dates (the advice to give them units led to an xarray error about cftime)
    text = rewrite(tmp_path, "text.nc", lambda ds: ds.assign_coords(time=("time", ["2020-03-01", "2020-04-10", "2020-05-20"])))
    assert [str(t)[:10] for t in open_series(text).time.values] == ["2020-03-01", "2020-04-10", "2020-05-20"]
    bad = rewrite(tmp_path, "badtext.nc", lambda ds: ds.assign_coords(time=("time", ["2020-03-01", "March", "2020-05-20"])))
    with pytest.raises(ConfigError, match=r"badtext.nc: the time coordinate holds 'March', which is not a date"):
        open_series(bad)


def test_lat_lon_and_variable_dims_are_read_as_y_x_and_band(tmp_path):
    """Dims named lat/lon, and the band dim of Dataset.to_array(), were refused by name."""
    path = rewrite(tmp_path, "latlon.nc", lambda ds: ds.rename(y="lat", x="lon", band="variable"))
    values = native(open_series(path))
    assert list(values.band.values) == list(ms.BANDS)
    for t in range(3):
        np.testing.assert_allclose(values.isel(time=t).values, ms.scene(t) / 10000, rtol=1e-6)
    np.testing.assert_array_equal(values.quality.values, expected_quality(tmp_path))


@pytest.mark.parametrize("empty", ["time", "band"])
def test_a_cube_with_an_empty_time_or_band_dimension_is_refused(tmp_path, empty):
    """An empty time dimension ended in an IndexError, an empty band dimension in GDAL's "nBandCount=0": both
    internal errors (exit 1). They are bad input, named with the file."""
    cube = xr.open_dataset(ms.datacube(tmp_path / "full.nc")).load()
    cube.isel({empty: slice(0, 0)}).to_netcdf(tmp_path / "empty.nc")
    with pytest.raises(SourceError, match=f"holds no data: its {empty} dimension is empty"):
        open_series(tmp_path / "empty.nc")


def _uneven_x(ds):
    x = ds["x"].values.copy()
    x[W // 2:] += ms.RES  # one step of two pixels: the columns after it were read a pixel west of where they are
    return ds.assign_coords(x=("x", x, ds["x"].attrs))


@pytest.mark.parametrize("name, edit, message", [
    ("uneven.nc", _uneven_x, r"uneven.nc: the variable 'reflectance' needs regular 1-D x and y pixel-centre "
                             r"coordinates: its x steps are 10 from x = \S+, then 20 between"),
    ("noxy.nc", lambda ds: ds.drop_vars(["x", "y"]), r"noxy.nc: .*regular 1-D x and y .*no 1-D numeric x coordinate"),
    ("onecol.nc", lambda ds: ds.isel(x=slice(0, 1)), r"onecol.nc: the variable 'reflectance' has 1 pixel along x"),
    ("badcrs.nc", lambda ds: ds.drop_vars("spatial_ref").assign_attrs(crs="not a crs"),
     r"badcrs.nc: the CRS of the variable 'reflectance' is not one that PROJ knows"),
])
def test_a_cube_whose_pixels_cannot_be_placed_is_refused(tmp_path, name, edit, message):
    """An uneven axis was read from its ends and put pixels elsewhere without a word; a cube without x/y was
    placed at (0, 0) south-up and told as '64 x -64 px'; a 'crs' attribute that is not one was an internal error."""
    path = rewrite(tmp_path, name, edit)
    with pytest.raises(SourceError, match=message):
        open_series(path)


def test_a_crs_code_proj_does_not_know_is_refused_without_gdal_noise(tmp_path, capfd):
    """An EPSG code that PROJ does not know is named in the message, and GDAL's own "ERROR 1: PROJ: ..." line is
    not printed on the terminal above it."""
    path = rewrite(tmp_path, "epsg.nc", lambda ds: ds.drop_vars("spatial_ref").assign_attrs(crs="EPSG:99999"))
    capfd.readouterr()
    with pytest.raises(SourceError, match=r"epsg.nc: the CRS of the variable 'reflectance' is not one that PROJ knows.*EPSG:99999"):
        open_series(path)
    err = capfd.readouterr().err
    assert "PROJ" not in err and "ERROR" not in err, err


def test_a_missing_date_is_named(tmp_path):
    """A NaT among the times was told as 'dates must be strictly increasing ... (use sort_by_time)'."""
    def edit(ds):
        return ds.assign_coords(time=("time", np.array([ds["time"].values[0], "NaT", ds["time"].values[2]], "datetime64[ns]")))
    with pytest.raises(SourceError, match=r"nat.nc: the time coordinate has no date at position\(s\) \[1\] of 3"):
        open_series(rewrite(tmp_path, "nat.nc", edit))


def test_band_variables_of_integer_and_float_types_are_refused_unless_bands_of_one_type_are_read(tmp_path):
    """int16 digital numbers beside float reflectance were scaled as one (x 1e-4): the float bands read as ~0."""
    def edit(ds):
        ds = per_band(ds)
        return ds.assign(B02=(ds["B02"] * 10000).round().astype(np.int16))
    path = rewrite(tmp_path, "mixed.nc", edit)
    with pytest.raises(SourceError, match=r"mixed.nc: its band variables mix integer and floating-point types "
                                          r"\(B02 int16, B03 float32.*--bands"):
        open_series(path)
    b03 = native(open_series(path, bands=["B03"]))
    np.testing.assert_allclose(b03.values[1, 0], ms.scene(1)[1] / 10000, rtol=1e-6)
    b02 = native(open_series(path, bands=["B02"]))
    np.testing.assert_allclose(b02.values[1, 0], ms.scene(1)[0] / 10000, atol=1e-4)


def test_float32_coordinates_in_degrees_are_even_to_their_own_precision(tmp_path):
    """lat/lon of 1e-4 degrees (10 m) stored as float32 step by 4 % more or less at 43 N from rounding alone: the
    cube was refused as uneven."""
    n, res = 48, 1e-4
    lon = (1.25 + res * (np.arange(n) + 0.5)).astype(np.float32)
    lat = (43.6 - res * (np.arange(n) + 0.5)).astype(np.float32)
    values = np.random.default_rng(0).random((3, 2, n, n), np.float32) * 0.3
    cube = xr.DataArray(values, dims=("time", "band", "lat", "lon"), name="reflectance",
                        coords={"time": pd.to_datetime(list(ms.DATES)), "band": ["B04", "B08"], "lat": lat, "lon": lon})
    cube.rio.set_spatial_dims("lon", "lat").rio.write_crs("EPSG:4326").to_dataset().to_netcdf(tmp_path / "deg.nc")
    read = open_series(tmp_path / "deg.nc", patch_size=16)
    assert grid_of(read).resolution == pytest.approx((res, res), rel=1e-3)
    lon[n // 2:] += res  # a whole pixel more: still uneven
    cube.assign_coords(lon=lon).rio.write_crs("EPSG:4326").to_dataset().to_netcdf(tmp_path / "gap.nc")
    with pytest.raises(SourceError, match="gap.nc: .*its x steps are"):
        open_series(tmp_path / "gap.nc", patch_size=16)


def test_cf_latitude_and_longitude_without_a_grid_mapping_are_wgs84(tmp_path):
    """CF reads latitude/longitude coordinates (units degrees_north/east) as a geographic CRS; such a cube was
    refused for lack of a grid mapping (a review). It is read as EPSG:4326, as with the CRS written, and the run
    says so; plain y/x numbers without units stay refused."""
    n, res = 32, 1e-4
    lat, lon = 43.5 - res * (np.arange(n) + 0.5), 1.2 + res * (np.arange(n) + 0.5)
    values = np.random.default_rng(0).integers(500, 3000, (3, 2, n, n)).astype(np.uint16)
    ds = xr.Dataset({"reflectance": (("time", "band", "lat", "lon"), values)},
                    coords={"time": pd.to_datetime(list(ms.DATES)), "band": ["B04", "B08"], "lat": lat, "lon": lon})
    ds.lat.attrs.update(units="degrees_north")
    ds.lon.attrs.update(standard_name="longitude")
    ds.to_netcdf(tmp_path / "cf.nc")
    cube = open_series(tmp_path / "cf.nc", patch_size=16)
    written = ds["reflectance"].rio.set_spatial_dims("lon", "lat").rio.write_crs("EPSG:4326").to_dataset()
    written.to_netcdf(tmp_path / "with_crs.nc")
    same = open_series(tmp_path / "with_crs.nc", patch_size=16)
    assert grid_of(cube) == grid_of(same) and grid_of(cube).crs == "EPSG:4326"
    np.testing.assert_array_equal(cube.values, same.values)
    assert "EPSG:4326" in cube.attrs["crs_assumed"] and "crs_assumed" not in same.attrs
    ds.lat.attrs.pop("units")
    ds.to_netcdf(tmp_path / "plain.nc")
    with pytest.raises(SourceError, match=r"plain.nc: the variable 'reflectance' has no CRS: .*degrees_north"):
        open_series(tmp_path / "plain.nc", patch_size=16)


def test_a_first_date_without_data_does_not_decide_the_scaling(tmp_path):
    """Integers with a _FillValue (xarray decodes them to floats with NaN) whose first date is all fill: the scaling
    was guessed from that date alone, 1, and every date read 10 000 times too bright (a review)."""
    def empty_first(ds):
        data = np.round(ds["reflectance"].values * 10000).astype(np.int16)  # digital numbers
        data[0] = -9999
        return ds.assign(reflectance=(ds["reflectance"].dims, data))

    path = rewrite(tmp_path, "first_empty.nc", empty_first, encoding={"reflectance": {"_FillValue": -9999}})
    cube = open_series(path)
    assert cube.attrs["scale_factor"] == pytest.approx(1e-4)
    values = native(cube)
    assert np.isnan(values.isel(time=0).values).all()
    np.testing.assert_allclose(values.isel(time=1).values, ms.scene(1) / 10000, rtol=1e-6)


def test_a_nodata_attribute_is_no_data(tmp_path):
    """odc-stac's layout keeps each band's no-data value in a ``nodata`` attribute (0 for Sentinel-2): its pixels
    were read as clear zero reflectance, and a scene's edge became a change over a whole date (a review)."""
    def odc(ds):
        out = per_band(ds)
        for b in ms.BANDS:
            data = np.round(out[b].values * 10000).astype(np.uint16)  # digital numbers
            data[2, :, : W // 2] = 0  # the third date's left half: outside the scene
            out[b] = (out[b].dims, data, {"nodata": 0})
        return out

    path = rewrite(tmp_path, "odc.nc", odc)
    values = native(open_series(path))
    assert values.attrs["scale_factor"] == pytest.approx(1e-4)
    assert np.isnan(values.isel(time=2).values[:, :, : W // 2]).all()
    assert (values.quality.values[2, :, : W // 2] == Quality.NODATA).all()
    np.testing.assert_allclose(values.isel(time=2).values[:, :, W // 2:], ms.scene(2)[:, :, W // 2:] / 10000, rtol=1e-6)


def test_openeo_dims_and_text_times_with_a_zone_are_read(tmp_path):
    """openEO names its dims t and bands; text times with a zone (2020-03-01T10:30:00Z) were refused as no date."""
    def openeo(ds):
        times = [f"{t:%Y-%m-%d}T10:30:00Z" for t in pd.DatetimeIndex(ds["time"].values)]
        return ds.assign_coords(time=("time", times)).rename(time="t", band="bands")

    values = native(open_series(rewrite(tmp_path, "openeo.nc", openeo)))
    assert list(values.band.values) == list(ms.BANDS)
    assert [f"{t:%Y-%m-%d %H:%M}" for t in pd.DatetimeIndex(values["time"].values)] == [f"{d} 10:30" for d in ms.DATES]
    for t in range(3):
        np.testing.assert_allclose(values.isel(time=t).values, ms.scene(t) / 10000, rtol=1e-6)


def test_zeros_in_every_band_of_undeclared_integers_are_no_data_as_in_geotiffs(tmp_path):
    """Digital numbers (uint16) that declare no no-data value: a pixel 0 in every band of its date is no data, as
    the GeoTIFF sources read Sentinel-2's and Landsat's; a 0 in one band alone is a value; floats keep their 0s."""
    def dn(ds):
        data = np.round(ds["reflectance"].values * 10000).astype(np.uint16)
        data[2, :, :, : W // 2] = 0  # the third date's left half: outside the scene
        data[1, 0, 5, 5] = 0  # one band's 0: a value
        return ds.assign(reflectance=(ds["reflectance"].dims, data))

    values = native(open_series(rewrite(tmp_path, "dn.nc", dn)))
    assert np.isnan(values.isel(time=2).values[:, :, : W // 2]).all()
    assert (values.quality.values[2, :, : W // 2] == Quality.NODATA).all()
    assert values.isel(time=1).values[0, 5, 5] == 0 and np.isfinite(values.isel(time=1).values[:, 5, 5]).all()
    np.testing.assert_allclose(values.isel(time=2).values[:, :, W // 2:], ms.scene(2)[:, :, W // 2:] / 10000, rtol=1e-6)
    floats = native(open_series(rewrite(tmp_path, "zeros.nc", lambda ds: ds.assign(reflectance=ds["reflectance"] * 0))))
    assert (floats.values == 0).all()


def test_a_cube_without_any_data_is_refused_naming_the_file(tmp_path):
    """rcf found no clear pixel to learn its filters from, and said so without naming the file (a review)."""
    from changescout.pipeline import RunConfig, run_pipeline

    path = rewrite(tmp_path, "empty.nc", lambda ds: ds.assign(reflectance=ds["reflectance"] * np.nan))
    with pytest.raises(ConfigError, match=r"empty.nc: too few clear pixels to sample"):
        run_pipeline(RunConfig(source=str(path)), tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()
