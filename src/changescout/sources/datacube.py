"""A NetCDF or Zarr data cube: a ``(time, band, y, x)`` variable, or one ``(time, y, x)`` variable per band.

NetCDF-4 files are read with h5netcdf (netCDF4 without h5py), NetCDF-3 ones (classic, 64-bit offset: what scipy,
CDO and NCO write) with scipy. Dims named ``lat``/``latitude``, ``lon``/``longitude``, ``t`` and ``variable`` (from
``Dataset.to_array()``) or ``bands`` (openEO's names) are read as ``y``, ``x``, ``time`` and ``band`` when that name
is free. A band's ``nodata`` attribute (odc-stac's) is no data, as ``_FillValue`` and ``missing_value`` are; in
integers wider than 8 bits that declare none, a pixel 0 in every band of its date is (as in GeoTIFFs: Sentinel-2's
and Landsat's NODATA value). ``time`` needs CF units (``days since 2000-01-01``) in the standard calendar, or
dates written as text (``2018-04-29``, ``2018-04-29T10:30:00Z``). The scaling is worked out from the first date
that has data.

The reflectance is ``variable=``, else the only 4-D variable that is not a mask, else the ``(time, y, x)``
numeric variables that are not masks, stacked into bands in variable order and named after them (the
odc-stac/openEO layout; those of ``bands`` only when it names them; integer and float ones together are refused,
as one scaling is worked out for them). Its CRS comes from the CF grid mapping (``spatial_ref``/``crs`` variable, read by
rioxarray; the dataset's only one when the variable lost its ``grid_mapping`` attribute) or a ``crs`` attribute;
``x``/``y`` hold evenly spaced pixel centres (an uneven axis, or none, is refused: pixels would land elsewhere).

The quality mask is ``mask_variable=``, else the variable named as a mask (``quality``, ``SCL``, ``SCL_20m``,
``Fmask``, ``QA_PIXEL``, ``mask``, ``cloud_mask``...; two of them are refused), ``(time, y, x)``. ``quality``
holds :class:`~changescout.cube.Quality` classes (0-5; other values are refused), the others the classes of
their convention, told by their name or ``mask_convention``. Each chunk of the output grid reads only the source
window it needs and, unless the cube already sits on that grid, is reprojected (bilinear; nearest for the
quality).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window, from_bounds
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from pyproj import CRS
from dask.base import tokenize
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject, transform_bounds
from xarray.backends import BackendArray
from xarray.core import indexing

from ..cube import USABLE, check_band_names
from ..errors import SourceError
from .dates import to_times
from .geotiff import split_band_suffix
from .masks import CONVENTIONS, check_values, convention_for, is_mask_name, lookup_table, to_quality
from .warp import WARP_TOLERANCE, RasterInfo, blank_zeros, build_cube, resolve_grid, scaling, storage, warp_scales

_DIMS = ("time", "band", "y", "x")
_PIXEL_DIMS = {"time", "y", "x"}
#: Other names of the cube's dims, read as the changescout name when that one is not taken.
_ALIASES = {"lat": "y", "latitude": "y", "lon": "x", "longitude": "x", "variable": "band", "t": "time", "bands": "band"}
_CALENDARS = ("standard", "gregorian", "proleptic_gregorian")
_LAYOUT = ("a cube needs one (time, band, y, x) variable or one (time, y, x) variable per band "
           "(xarray: ds.to_dataarray('band') makes the first from the second; select one value of any other dim)")

# rasterio's reproject of numpy arrays run from several threads at once emits this spuriously (results are exact).
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio.warp")


def sniff(path) -> bool:
    """A ``.zarr`` folder, a folder holding ``.zgroup``/``zarr.json``, or a ``.nc``/``.nc4``/``.h5`` file."""
    p = Path(path)
    if p.is_dir():
        return p.suffix.lower() == ".zarr" or (p / ".zgroup").exists() or (p / "zarr.json").exists()
    return p.is_file() and p.suffix.lower() in (".nc", ".nc4", ".h5")


_DEGREES = {"y": ("degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn"),
            "x": ("degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese")}


def _cf_lonlat(var) -> bool:
    """Whether ``var``'s y and x coordinates are CF latitude and longitude (by ``units`` or ``standard_name``): a
    cube without a grid mapping is then in WGS 84 (EPSG:4326), as CF reads such coordinates."""
    names = {"y": "latitude", "x": "longitude"}
    for axis in ("y", "x"):
        attrs = var[axis].attrs if axis in var.coords else {}
        if str(attrs.get("units", "")).lower() not in _DEGREES[axis] and attrs.get("standard_name") != names[axis]:
            return False
    return True


def _lone_grid_mapping(ds):
    """The CRS of the dataset's only CF grid-mapping variable, when the data variable lost its ``grid_mapping``
    attribute (xarray drops it in some selections, and a re-saved cube then holds an orphan ``spatial_ref``)."""
    found = [v for v in ds.variables.values() if {"grid_mapping_name", "crs_wkt", "spatial_ref"} & set(v.attrs)]
    if len(found) != 1:
        return None
    try:
        return CRS.from_cf(found[0].attrs).to_wkt()
    except Exception:  # pyproj's CRSError and friends: not a usable grid mapping
        return None


def open(path, *, dates=None, bands=None, grid=None, patch_size=16, mask=None, mask_convention=None,
         chunks=1024, variable=None, mask_variable=None, level=None, scale_factor=None, offset=None):
    """Open a data cube file as a SeriesCube (see the module docstring)."""
    path = Path(path)
    if dates is not None or mask is not None:
        raise SourceError("a data cube carries its own dates and quality; --dates and --mask do not apply", path)
    ds = _open_dataset(path)
    var = _variable(ds, variable, path, bands)
    if var.y.size > 1 and var.y[1] > var.y[0]:  # stored south-up: read north-up
        var = var.isel(y=slice(None, None, -1))
    if var.x.size > 1 and var.x[1] < var.x[0]:  # stored east to west: read west to east
        var = var.isel(x=slice(None, None, -1))
    crs, lonlat_assumed = _crs(ds, var, path)
    _check_axes(var, path)
    try:
        transform = var.rio.transform(recalc=True)
    except Exception as exc:  # rioxarray raises several types for missing or irregular coordinates
        raise SourceError(f"the variable {var.name!r} needs regular 1-D x and y pixel-centre coordinates ({exc})", path) from exc
    shape = (var.sizes["y"], var.sizes["x"])
    empty = [d for d in ("time", "band", "y", "x") if var.sizes[d] == 0]
    if empty:  # (an IndexError, or GDAL's "nBandCount=0", from deep inside)
        raise SourceError(f"the variable {var.name!r} holds no data: its {' and '.join(empty)} dimension"
                          f"{'s are' if len(empty) > 1 else ' is'} empty (sizes {dict(var.sizes)})", path)
    info = RasterInfo(str(path), str(crs), transform, shape, var.sizes["band"], str(var.dtype), ())
    out = resolve_grid(grid, info, [(info.crs, info.bounds)], patch_size)
    quality, lut = _mask(ds, mask_variable, variable, mask_convention, path)
    if quality is not None and var.y.size > 1 and quality.y[0] != var.y[0]:
        quality = quality.isel(y=slice(None, None, -1))
    if quality is not None and var.x.size > 1 and quality.x[0] != var.x[0]:
        quality = quality.isel(x=slice(None, None, -1))

    nodata = _nodata(ds, var)

    def sample():  # of the first date that has data (an empty first date read 10 000 times too bright: a review)
        step = max(1, max(shape) // 256)
        for t in range(var.sizes["time"]):
            values = _masked(var.isel(time=t, y=slice(None, None, step), x=slice(None, None, step)).values, nodata)
            if np.isfinite(values).any():
                break
        return values

    scale, off = scaling(var.dtype, sample, scale_factor, offset)
    names = [str(b) for b in var["band"].values] if "band" in var.coords else [f"b{i + 1}" for i in range(var.sizes["band"])]
    check_band_names(names, path, f"the band coordinate of {var.name!r}")
    # 0 in every band is the unsaid no data of digital numbers wider than 8 bits, as in GeoTIFFs (RasterInfo.
    # fills_with_zero): not where a band declares its own (a _FillValue is decoded to NaN: the values are floats)
    zeros = np.issubdtype(var.dtype, np.integer) and np.dtype(var.dtype).itemsize > 1 and not np.isfinite(nodata).any()
    array = ReprojectedCube(var, quality, info, out, scale, off, lut, nodata, zeros)
    if bands is not None:
        bands = check_band_names(bands, path, "--bands")
        missing = [b for b in bands if b not in names]
        if missing:
            raise SourceError(f"has no band(s) {missing}; its bands are {names}", path)
    attrs = {
        "label": path.stem,
        "source": str(path.resolve()),
        "source_files": [str(path.resolve())],
        "level": str(level or ds.attrs.get("level") or var.attrs.get("level") or "unknown"),
        "quality_mask": quality is not None,
        "scale_factor": scale,
        "offset": off,
        "storage": storage(var.dtype),  # as xarray gives them (CF-packed integers come decoded, as floats)
    }
    if lonlat_assumed:
        attrs["crs_assumed"] = "EPSG:4326 (WGS 84), from its CF latitude and longitude coordinates (it has no grid mapping)"
    time_coords = {k: c.values.tolist() for k, c in var.coords.items() if c.dims == ("time",) and k != "time"}
    cube = build_cube(array, var["time"].values, names, out, chunks=chunks, attrs=attrs, time_coords=time_coords)
    return cube if bands is None else cube.sel(band=bands)


def _crs(ds: xr.Dataset, var: xr.DataArray, path) -> tuple[str, bool]:
    """``(WKT, assumed)``: the cube's CRS, from the variable's grid mapping, the dataset's, a ``crs`` attribute or
    the lone grid mapping variable, else (``assumed``) WGS 84 for CF latitude and longitude coordinates; refused
    when there is none or it is not a CRS."""
    try:
        # inside a rasterio environment, GDAL's complaint about a code PROJ does not know goes to the log: without
        # one it printed "ERROR 1: PROJ: ... crs not found" on the terminal above the message below (rioxarray
        # parses a 'crs' attribute with rasterio)
        with rasterio.Env():
            crs = var.rio.crs or ds.rio.crs or var.attrs.get("crs") or ds.attrs.get("crs") or _lone_grid_mapping(ds)
        if crs:
            return CRS.from_user_input(crs).to_wkt(), False
        if _cf_lonlat(var):  # CF: latitude and longitude coordinates say a geographic CRS, WGS 84 unless given
            return CRS.from_epsg(4326).to_wkt(), True
    except Exception as exc:  # pyproj's CRSError (rioxarray parses a 'crs' attribute too)
        raise SourceError(f"the CRS of the variable {var.name!r} is not one that PROJ knows ({exc}): write its grid "
                          "mapping (spatial_ref) or 'crs' attribute as an EPSG code or WKT", path) from exc
    raise SourceError(f"the variable {var.name!r} has no CRS: add a CF grid mapping (spatial_ref) or a 'crs' attribute "
                      "(or, for latitude and longitude, units degrees_north and degrees_east on its y and x)", path)


def _check_axes(var: xr.DataArray, path) -> None:
    """x and y must be 1-D coordinates of at least two pixel centres, evenly spaced (to 1 % of a pixel): the
    transform is worked out from their ends, so an uneven axis would put pixels elsewhere without a word."""
    for axis in ("x", "y"):
        if axis not in var.coords or var[axis].ndim != 1 or not np.issubdtype(var[axis].dtype, np.number):
            raise SourceError(f"the variable {var.name!r} needs regular 1-D x and y pixel-centre coordinates: it has no "
                              f"1-D numeric {axis} coordinate (2-D lat/lon grids must be regridded first)", path)
        raw = var[axis].values
        values = raw.astype(np.float64)
        if values.size < 2:
            raise SourceError(f"the variable {var.name!r} has {values.size} pixel along {axis}: its pixel size "
                              "cannot be told (a cube needs at least 2 pixels along x and y)", path)
        steps = np.diff(values)
        # 1 % of a pixel, or what the coordinates' own precision leaves (float32 degrees: 4 % of 1e-4 at 43 N)
        ulp = float(np.spacing(np.abs(raw).max())) if np.issubdtype(raw.dtype, np.floating) else 0.0
        uneven = np.flatnonzero(~(np.abs(steps - steps[0]) <= max(0.01 * abs(steps[0]), 4 * ulp)))  # (NaN steps too)
        if steps[0] == 0 or uneven.size:
            at = uneven[0] if uneven.size else 0
            raise SourceError(f"the variable {var.name!r} needs regular 1-D x and y pixel-centre coordinates: its {axis} "
                              f"steps are {steps[0]:g} from {axis} = {values[0]:g}, then {steps[at]:g} between "
                              f"{values[at]:g} and {values[at + 1]:g}", path)


def _open_dataset(path: Path) -> xr.Dataset:
    """The dataset, its dims under changescout's names and its times decoded (refused where they cannot be)."""
    try:
        if path.is_dir():
            ds = xr.open_zarr(path, chunks=None, decode_coords="all", decode_times=False)
        else:
            ds = xr.open_dataset(path, engine=_netcdf_engine(path), chunks=None, decode_coords="all",
                                 decode_times=False)
    except Exception as exc:  # xarray, zarr, h5py and scipy raise many types
        raise SourceError(f"cannot open the data cube ({type(exc).__name__}: {exc})", path) from exc
    ds = _rename_dims(ds)
    if "time" in ds.dims and ds["time"].dtype.kind in "USO":  # dates written as text ("2018-04-29"): read as dates
        times = to_times([str(v) for v in ds["time"].values], path, "the time coordinate")
        ds = ds.assign_coords(time=("time", pd.DatetimeIndex(times).values))
    if "time" in ds.dims:
        _check_time(ds["time"], path)
    try:
        ds = xr.decode_cf(ds, decode_coords="all")
    except Exception as exc:  # a time unit that is not one ("fortnights since ...")
        raise SourceError(f"cannot decode the data cube ({type(exc).__name__}: {exc})", path) from exc
    if "time" in ds.coords and pd.isnull(ds["time"].values).any():
        missing = np.flatnonzero(pd.isnull(ds["time"].values)).tolist()
        raise SourceError(f"the time coordinate has no date at position(s) {missing} of {ds.sizes['time']} (a fill "
                          "value or NaT): give every image its date", path)
    return ds


def _rename_dims(ds: xr.Dataset) -> xr.Dataset:
    """``lat``/``lon``/``variable`` dims (and their coordinates) renamed ``y``/``x``/``band`` where that is
    unambiguous: one of the other names is there and the changescout name is free."""
    renames = {}
    for new in set(_ALIASES.values()):
        olds = [old for old, n in _ALIASES.items() if n == new and old in ds.dims]
        if len(olds) == 1 and new not in ds.dims and new not in ds.variables:
            renames[olds[0]] = new
    return ds.rename(renames)


def _check_time(time: xr.DataArray, path):
    """Refuse times that xarray would read as nanoseconds since 1970 (no units) or cannot read without cftime."""
    if np.issubdtype(time.dtype, np.datetime64):
        return
    if "units" not in time.attrs:
        raise SourceError(f"the time coordinate has no CF units (it holds {time.dtype} values "
                          f"{time.values[:3].tolist()}...); give it units such as 'days since 2000-01-01'", path)
    calendar = str(time.attrs.get("calendar", "standard")).lower()
    if calendar not in _CALENDARS:
        raise SourceError(f"the time coordinate uses the {calendar!r} calendar; changescout reads dates of the "
                          f"standard (Gregorian) calendar only: write the times as real dates "
                          f"(units 'days since ...', calendar 'standard')", path)


def _netcdf_engine(path: Path) -> str:
    """scipy for NetCDF-3 (its files start with ``CDF``); for NetCDF-4, h5netcdf when its h5py backend is
    installed, else netCDF4 (h5netcdf >= 1.8 no longer pulls in h5py)."""
    with path.open("rb") as f:
        if f.read(3) == b"CDF":
            return "scipy"
    return "h5netcdf" if importlib.util.find_spec("h5py") else "netcdf4"


def _is_mask(name) -> bool:
    """Whether a variable is named as a quality mask: ``quality``, ``SCL``, ``SCL_20m``, ``Fmask``, ``cloud_mask``..."""
    return is_mask_name(name) or is_mask_name(split_band_suffix(str(name))[1])


def _variable(ds: xr.Dataset, name, path, bands=None) -> xr.DataArray:
    """The reflectance ``(time, band, y, x)``: ``name``, the only 4-D variable that is not a mask, or the
    ``(time, y, x)`` variables stacked into bands (see the module docstring; only those of ``bands`` when it
    names some of them, so that one scaling is worked out from the bands read)."""
    if name is not None:
        if name not in ds.data_vars:
            raise SourceError(f"has no variable {name!r}; its variables are {list(ds.data_vars)}", path)
        chosen = [name]
    else:
        chosen = [v for v in ds.data_vars if ds[v].ndim == 4 and not _is_mask(v)]
        if len(chosen) > 1:
            raise SourceError(f"has {len(chosen)} 4-D variables {chosen}; name the one to read with variable= "
                              '(the Python API) or, for the command line, in a --config file: '
                              '{"source_options": {"variable": "NAME"}}', path)
        chosen = chosen or [v for v in ds.data_vars if set(ds[v].dims) == _PIXEL_DIMS and not _is_mask(v)
                            and np.issubdtype(ds[v].dtype, np.number)]
    if len(chosen) == 1 and set(ds[chosen[0]].dims) == set(_DIMS):
        return ds[chosen[0]].transpose(*_DIMS)
    if chosen and all(set(ds[v].dims) == _PIXEL_DIMS for v in chosen):
        if bands is not None and set(bands) <= set(chosen):
            chosen = [v for v in chosen if v in bands]
        floats = [np.issubdtype(ds[v].dtype, np.floating) for v in chosen]
        if any(floats) and not all(floats):  # one scaling is worked out for the stack: one part would read as ~0
            kinds = ", ".join(f"{v} {ds[v].dtype}" for v in chosen)
            raise SourceError(f"its band variables mix integer and floating-point types ({kinds}), so their values are "
                              "likely on different scales (digital numbers against reflectance): write every band "
                              "variable with one type and scale, or read bands of one type (--bands)", path)
        return _stack(ds, chosen)
    listed = ", ".join(f"{v} {ds[v].dims}" for v in ([name] if name else ds.data_vars))
    raise SourceError(f"has no reflectance to read: {_LAYOUT}; its variables are {listed or 'none'}", path)


def _nodata(ds: xr.Dataset, var: xr.DataArray) -> np.ndarray:
    """``(band,)`` the value each band declares as no data in a ``nodata`` attribute (odc-stac, rioxarray's
    ``write_nodata`` without encoding), NaN where none does (``_FillValue`` and ``missing_value`` are decoded to
    NaN by xarray already): a band variable's own, else the cube variable's."""
    names = [str(b) for b in var["band"].values] if "band" in var.coords else []
    stacked = names and all(n in ds.data_vars and set(ds[n].dims) == _PIXEL_DIMS for n in names)
    said = [ds[n].attrs.get("nodata") for n in names] if stacked else [var.attrs.get("nodata")] * var.sizes["band"]
    out = []
    for v in said:
        try:
            out.append(float(v) if v is not None else np.nan)
        except (TypeError, ValueError):  # (text that is no number: not a no-data value)
            out.append(np.nan)
    return np.array(out, np.float64)


def _masked(values: np.ndarray, nodata: np.ndarray, band_axis: int = 0) -> np.ndarray:
    """``values`` as float32 with each band's no-data value NaN (``band_axis``: where the bands are)."""
    values = np.asarray(values, dtype=np.float32)
    if np.isfinite(nodata).any():
        shape = [1] * values.ndim
        shape[band_axis] = len(nodata)
        values = np.where(values == nodata.astype(np.float32).reshape(shape), np.float32(np.nan), values)
    return values


def _stack(ds: xr.Dataset, names) -> xr.DataArray:
    """The ``(time, y, x)`` variables ``names`` as one lazy ``(time, band, y, x)`` variable, bands named after them."""
    first = ds[names[0]]
    coords = {k: c for k, c in ds.coords.items() if set(c.dims) <= _PIXEL_DIMS}
    data = indexing.LazilyIndexedArray(_BandStack([ds[n].variable.transpose("time", "y", "x") for n in names]))
    var = xr.Variable(_DIMS, data, attrs=first.attrs, encoding={"grid_mapping": first.encoding.get("grid_mapping")})
    return xr.DataArray(var, coords={**coords, "band": list(names)}, name=", ".join(names))


class _BandStack(BackendArray):
    """``(time, y, x)`` variables read as one ``(time, band, y, x)`` array, only the part indexed."""

    def __init__(self, variables):
        self.variables = variables
        self.shape = (variables[0].shape[0], len(variables), *variables[0].shape[1:])
        self.dtype = np.result_type(*(v.dtype for v in variables))

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._read)

    def _read(self, key):
        ints = [isinstance(k, (int, np.integer)) for k in key]
        t, b, y, x = (slice(k, k + 1) if i else k for k, i in zip(key, ints))
        data = np.stack([v[t, y, x].values for v in self.variables[b]], axis=1).astype(self.dtype, copy=False)
        return data[tuple(0 if i else slice(None) for i in ints)]


def _mask(ds: xr.Dataset, name, variable, convention, path):
    """The quality mask ``(time, y, x)`` and the lookup table of its convention, or ``(None, None)``."""
    if name is None:
        found = [v for v in ds.data_vars if _is_mask(v) and v != variable]
        if len(found) > 1:
            raise SourceError(f"has {len(found)} mask variables {found}; name the one to read with mask_variable= "
                              '(the Python API) or, for the command line, in a --config file: '
                              '{"source_options": {"mask_variable": "NAME"}}', path)
        if not found:
            if convention:
                raise SourceError(f"--mask-convention {convention} is given but no variable is named as a mask "
                                  f"(quality, SCL, Fmask, QA_PIXEL, mask...); its variables are {list(ds.data_vars)}: "
                                  'name the mask in a --config file: {"source_options": {"mask_variable": "NAME"}}',
                                  path)
            return None, None
        name = found[0]
    elif name not in ds.data_vars:
        raise SourceError(f"has no variable {name!r} (mask_variable); its variables are {list(ds.data_vars)}", path)
    mask = ds[name]
    if set(mask.dims) != _PIXEL_DIMS:
        raise SourceError(f"the mask variable {name!r} has dims {mask.dims}; it must be (time, y, x)", path)
    convention = convention_for(name, convention or ("quality" if name.lower() == "quality" else None), path)
    mask = mask.transpose("time", "y", "x")
    _check_classes(mask, path, convention)
    return mask, lookup_table(convention)


def _check_classes(mask: xr.DataArray, path, convention: str = "quality"):
    """Refuse a mask read as changescout classes whose values are not (SCL codes would read 4 vegetation as snow),
    or one of another convention most of whose values it does not list (:func:`.masks.check_values`), from a
    decimated read of its first, middle and last dates."""
    step = max(1, max(mask.sizes["y"], mask.sizes["x"]) // 256)
    if convention != "quality":
        dates = sorted({0, mask.sizes["time"] // 2, mask.sizes["time"] - 1})
        check_values(mask.isel(time=dates, y=slice(None, None, step), x=slice(None, None, step)).values, convention,
                     f"{path} (mask variable {mask.name!r})", nodata=mask.attrs.get("nodata"))  # (odc-stac's, as the bands')
        return
    values = np.unique(mask.isel(y=slice(None, None, step), x=slice(None, None, step)).values)
    values = values[np.isfinite(values)]
    odd = values[(values < 0) | (values > 5) | (values != np.round(values))]
    hint = (f"if it holds the codes of another convention, pass --mask-convention, one of {list(CONVENTIONS)} "
            "(scl: Sentinel-2 scene classification 0-11; fmask: 0-4, 255 fill; qa_pixel: Landsat bit flags)")
    if odd.size:
        raise SourceError(f"the mask variable {mask.name!r} holds values {odd[:10].tolist()} that are not changescout "
                          f"quality classes (0 clear .. 5 water); {hint}", path)
    if not np.isin(values, [int(q) for q in USABLE]).any():
        raise SourceError(f"no pixel of the mask variable {mask.name!r} is clear (0) or water (5) on any date (its "
                          f"values are {values.tolist()}): nothing could be compared; {hint}", path)


class ReprojectedCube:
    """Array-like ``(time, band + 1, y, x)`` of a cube variable on the output grid; the last band is quality."""

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(self, var, quality, info: RasterInfo, grid, scale, offset, lut, nodata=None, zeros=False):
        self.var, self.quality, self.info, self.grid = var, quality, info, grid
        self.scale, self.offset, self.lut = scale, offset, lut
        self.nodata = np.full(var.sizes["band"], np.nan) if nodata is None else np.asarray(nodata, np.float64)
        self.zeros = bool(zeros)  # a pixel 0 in every band of its date is no data
        self.shape = (var.sizes["time"], var.sizes["band"] + 1, *grid.shape)
        # the bilinear kernel's scale, fixed from the pixel sizes for every block (:func:`.warp.warp_scales`)
        self.scales = warp_scales(info.crs, info.transform, info.shape, grid.crs, grid.resolution)

    def __dask_tokenize__(self):
        return tokenize(self.info, self.var.name, self.grid, self.scale, self.offset, self.nodata.tolist(), self.zeros)

    def __getitem__(self, key):
        t, b, ys, xs = (range(*k.indices(n)) for k, n in zip(key, self.shape))
        shape = (len(ys), len(xs))
        dst = self.grid.affine @ Affine.translation(xs.start, ys.start)
        out = np.full((len(t), self.shape[1], *shape), np.nan, np.float32)
        out[:, -1] = 0  # Quality.CLEAR; make_cube marks NaN pixels NODATA
        window = self._source_window(dst, shape)
        if window is not None:
            rows, cols = window.toslices()
            src = self.info.transform @ Affine.translation(window.col_off, window.row_off)
            times = slice(t.start, t.stop, t.step)
            data = _masked(self.var.isel(time=times, y=rows, x=cols).values, self.nodata, band_axis=1)
            if self.zeros:  # (over the bands the variable holds)
                blank_zeros(data, band_axis=1)
            out[:, :-1] = self._warp(data, src, dst, shape, Resampling.bilinear) * self.scale + self.offset
            if self.quality is not None:
                q = self.quality.isel(time=times, y=rows, x=cols).values.astype(np.float32)
                out[:, -1] = to_quality(self._warp(q, src, dst, shape, Resampling.nearest), self.lut)
        return out[:, b.start : b.stop : b.step]

    def _source_window(self, dst: Affine, shape):
        """The source pixels under a destination block, plus a margin for the bilinear kernel (2 pixels, and the
        width it takes where the grid is coarser than the source), or ``None``."""
        left, top = dst @ (0, 0)
        right, bottom = dst @ (shape[1], shape[0])
        bounds = transform_bounds(self.grid.crs, self.info.crs, left, bottom, right, top, densify_pts=21)
        win = from_bounds(*bounds, transform=self.info.transform)
        height, width = self.info.shape
        m = 2 + math.ceil(1 / min(self.scales.values()))
        c0, r0 = max(0, math.floor(win.col_off) - m), max(0, math.floor(win.row_off) - m)
        c1 = min(width, math.ceil(win.col_off + win.width) + m)
        r1 = min(height, math.ceil(win.row_off + win.height) + m)
        return Window(c0, r0, c1 - c0, r1 - r0) if c1 > c0 and r1 > r0 else None

    def _warp(self, data, src: Affine, dst: Affine, shape, resampling) -> np.ndarray:
        lead = data.shape[:-2]
        flat = data.reshape(-1, *data.shape[-2:])
        dest = np.full((flat.shape[0], *shape), np.nan, np.float32)
        reproject(flat, dest, src_transform=src, src_crs=self.info.crs, dst_transform=dst, dst_crs=self.grid.crs,
                  src_nodata=np.nan, dst_nodata=np.nan, resampling=resampling, tolerance=WARP_TOLERANCE, **self.scales)
        return dest.reshape(*lead, *shape)
