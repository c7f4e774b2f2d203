"""A NetCDF (h5netcdf, or netCDF4 without h5py) or Zarr data cube with a ``(time, band, y, x)`` variable.

The variable is ``variable=`` or the only 4-D variable; its CRS comes from the CF grid mapping
(``spatial_ref``/``crs`` variable, read by rioxarray; the dataset's only one when the variable lost its
``grid_mapping`` attribute) or a ``crs`` attribute; ``x``/``y`` hold pixel centres.
An optional ``quality`` variable ``(time, y, x)`` holds :class:`~changescout.cube.Quality` classes (or the
classes of ``mask_convention``). Each chunk of the output grid reads only the source window it needs and, unless
the cube already sits on that grid, is reprojected (bilinear; nearest for the quality).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
from rasterio.windows import Window, from_bounds
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from pyproj import CRS
from dask.base import tokenize
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject, transform_bounds

from ..cube import check_band_names
from ..errors import SourceError
from .masks import lookup_table, to_quality
from .warp import RasterInfo, build_cube, resolve_grid, scaling

_DIMS = ("time", "band", "y", "x")

# rasterio's reproject of numpy arrays run from several threads at once emits this spuriously (results are exact).
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio.warp")


def sniff(path) -> bool:
    """A ``.zarr`` folder, a folder holding ``.zgroup``/``zarr.json``, or a ``.nc``/``.nc4``/``.h5`` file."""
    p = Path(path)
    if p.is_dir():
        return p.suffix.lower() == ".zarr" or (p / ".zgroup").exists() or (p / "zarr.json").exists()
    return p.is_file() and p.suffix.lower() in (".nc", ".nc4", ".h5")


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
         chunks=1024, variable=None, level=None, scale_factor=None, offset=None):
    """Open a data cube file as a SeriesCube (see the module docstring)."""
    path = Path(path)
    if dates is not None or mask is not None:
        raise SourceError("a data cube carries its own dates and quality; --dates and --mask do not apply", path)
    ds = _open_dataset(path)
    var = _variable(ds, variable, path)
    if var.y.size > 1 and var.y[1] > var.y[0]:
        var = var.isel(y=slice(None, None, -1))
    crs = var.rio.crs or ds.rio.crs or var.attrs.get("crs") or ds.attrs.get("crs") or _lone_grid_mapping(ds)
    if not crs:
        raise SourceError(
            f"the variable {var.name!r} has no CRS: add a CF grid mapping (spatial_ref) or a 'crs' attribute", path
        )
    try:
        transform = var.rio.transform(recalc=True)
    except Exception as exc:  # rioxarray raises several types for missing or irregular coordinates
        raise SourceError(f"the variable {var.name!r} needs regular 1-D x and y pixel-centre coordinates ({exc})", path) from exc
    shape = (var.sizes["y"], var.sizes["x"])
    info = RasterInfo(str(path), str(crs), transform, shape, var.sizes["band"], str(var.dtype), ())
    out = resolve_grid(grid, info, [(info.crs, info.bounds)], patch_size)
    quality = ds["quality"].transpose("time", "y", "x") if "quality" in ds and var.name != "quality" else None
    if quality is not None and var.y.size > 1 and quality.y[0] != var.y[0]:
        quality = quality.isel(y=slice(None, None, -1))
    lut = lookup_table(mask_convention or "quality") if quality is not None else None

    def sample():
        step = max(1, max(shape) // 256)
        return var.isel(time=0, y=slice(None, None, step), x=slice(None, None, step)).values

    scale, off = scaling(var.dtype, sample, scale_factor, offset)
    names = [str(b) for b in var["band"].values] if "band" in var.coords else [f"b{i + 1}" for i in range(var.sizes["band"])]
    check_band_names(names, path, f"the band coordinate of {var.name!r}")
    array = ReprojectedCube(var, quality, info, out, scale, off, lut)
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
        "scale_factor": scale,
        "offset": off,
    }
    time_coords = {k: c.values.tolist() for k, c in var.coords.items() if c.dims == ("time",) and k != "time"}
    cube = build_cube(array, var["time"].values, names, out, chunks=chunks, attrs=attrs, time_coords=time_coords)
    return cube if bands is None else cube.sel(band=bands)


def _open_dataset(path: Path) -> xr.Dataset:
    try:
        if path.is_dir():
            return xr.open_zarr(path, chunks=None, decode_coords="all")
        return xr.open_dataset(path, engine=_netcdf_engine(), chunks=None, decode_coords="all")
    except Exception as exc:  # xarray, zarr and h5py raise many types
        raise SourceError(f"cannot open the data cube ({type(exc).__name__}: {exc})", path) from exc


def _netcdf_engine() -> str:
    """h5netcdf when its h5py backend is installed, else netCDF4 (h5netcdf >= 1.8 no longer pulls in h5py)."""
    return "h5netcdf" if importlib.util.find_spec("h5py") else "netcdf4"


def _variable(ds: xr.Dataset, name, path) -> xr.DataArray:
    if name is not None:
        if name not in ds.data_vars:
            raise SourceError(f"has no variable {name!r}; its variables are {list(ds.data_vars)}", path)
        var = ds[name]
    else:
        cubes = [v for v in ds.data_vars if ds[v].ndim == 4]
        if len(cubes) != 1:
            raise SourceError(f"has {len(cubes)} 4-D variables {cubes}; name the one to read with variable= "
                              '(the Python API) or, for the command line, in a --config file: '
                              '{"source_options": {"variable": "NAME"}}', path)
        var = ds[cubes[0]]
    if set(var.dims) != set(_DIMS):
        raise SourceError(f"the variable {var.name!r} has dims {var.dims}, expected {_DIMS}", path)
    return var.transpose(*_DIMS)


class ReprojectedCube:
    """Array-like ``(time, band + 1, y, x)`` of a cube variable on the output grid; the last band is quality."""

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(self, var, quality, info: RasterInfo, grid, scale, offset, lut):
        self.var, self.quality, self.info, self.grid = var, quality, info, grid
        self.scale, self.offset, self.lut = scale, offset, lut
        self.shape = (var.sizes["time"], var.sizes["band"] + 1, *grid.shape)

    def __dask_tokenize__(self):
        return tokenize(self.info, self.var.name, self.grid, self.scale, self.offset)

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
            data = self.var.isel(time=times, y=rows, x=cols).values.astype(np.float32)
            out[:, :-1] = self._warp(data, src, dst, shape, Resampling.bilinear) * self.scale + self.offset
            if self.quality is not None:
                q = self.quality.isel(time=times, y=rows, x=cols).values.astype(np.float32)
                out[:, -1] = to_quality(self._warp(q, src, dst, shape, Resampling.nearest), self.lut)
        return out[:, b.start : b.stop : b.step]

    def _source_window(self, dst: Affine, shape):
        """The source pixels (plus a 2-pixel margin for bilinear) under a destination block, or ``None``."""
        left, top = dst @ (0, 0)
        right, bottom = dst @ (shape[1], shape[0])
        bounds = transform_bounds(self.grid.crs, self.info.crs, left, bottom, right, top, densify_pts=21)
        win = from_bounds(*bounds, transform=self.info.transform)
        height, width = self.info.shape
        c0, r0 = max(0, math.floor(win.col_off) - 2), max(0, math.floor(win.row_off) - 2)
        c1 = min(width, math.ceil(win.col_off + win.width) + 2)
        r1 = min(height, math.ceil(win.row_off + win.height) + 2)
        return Window(c0, r0, c1 - c0, r1 - r0) if c1 > c0 and r1 > r0 else None

    def _warp(self, data, src: Affine, dst: Affine, shape, resampling) -> np.ndarray:
        lead = data.shape[:-2]
        flat = data.reshape(-1, *data.shape[-2:])
        dest = np.full((flat.shape[0], *shape), np.nan, np.float32)
        reproject(flat, dest, src_transform=src, src_crs=self.info.crs, dst_transform=dst, dst_crs=self.grid.crs,
                  src_nodata=np.nan, dst_nodata=np.nan, resampling=resampling)
        return dest.reshape(*lead, *shape)
