"""The SeriesCube contract: one output grid, float32 reflectance, a quality class per pixel.

A SeriesCube is a lazy (dask-backed) :class:`xarray.DataArray` with dims ``("time", "band", "y", "x")``:

* ``time`` datetime64, strictly increasing; per-date metadata (``platform``, ``cloud_cover``, ...) are
  non-dimension coordinates on ``time``;
* ``band`` holds band names (``B02``... or ``red``, ``green``, ``blue``, ``nir``);
* ``x``/``y`` are pixel-centre coordinates in the cube's CRS (``cube.rio.crs``, ``cube.rio.transform()``);
* values are float32 reflectance on a 0..1 scale, NaN where there is no data; the processing level, the
  scale and offset that were applied are recorded in ``attrs``;
* the non-dimension coordinate ``quality`` ``(time, y, x)`` uint8 holds the :class:`Quality` class of each pixel.

Every date sits on one :class:`OutputGrid` whose origin is snapped to whole patches, so that patch
``(row, col)`` is the same place whatever the file order or the chunking.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass

import dask.array as da
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from pyproj import CRS
from pyproj.exceptions import CRSError

from .errors import GridError, SourceError

DIMS = ("time", "band", "y", "x")


class Quality(enum.IntEnum):
    """Per-pixel quality classes of the ``quality`` coordinate (Fmask / SCL style)."""

    CLEAR = 0
    NODATA = 1
    CLOUD = 2
    SHADOW = 3
    SNOW = 4
    WATER = 5


#: Classes whose pixels are valid observations of the surface (water is a surface, not a defect).
USABLE = (Quality.CLEAR, Quality.WATER)


@dataclass(frozen=True)
class OutputGrid:
    """A regular north-up raster grid: CRS, affine transform and shape ``(height, width)``."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]

    def __post_init__(self):
        a, b, _, d, e, _ = self.transform
        if b != 0 or d != 0 or a <= 0 or e >= 0:
            raise GridError(f"only north-up grids with positive pixel size are supported, got transform {self.transform}")
        if self.shape[0] <= 0 or self.shape[1] <= 0:
            raise GridError(f"grid shape must be positive, got {self.shape}")

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_bounds(
        cls,
        crs,
        resolution: float | tuple[float, float],
        bounds: tuple[float, float, float, float],
        snap: float | None = None,
    ) -> "OutputGrid":
        """Grid covering ``bounds`` (left, bottom, right, top) at ``resolution``.

        With ``snap`` (a length in CRS units, normally ``patch_size * resolution``) the origin is moved
        outward to a multiple of ``snap`` and the size rounded up to whole multiples, so patch boundaries
        fall on one lattice whatever the input extent.
        """
        xres, yres = (resolution, resolution) if np.isscalar(resolution) else resolution
        xres, yres = float(abs(xres)), float(abs(yres))
        if xres <= 0 or yres <= 0 or not math.isfinite(xres * yres):
            raise GridError(f"resolution must be positive, got {resolution}")
        left, bottom, right, top = check_bounds(bounds)
        if snap:
            sx = snap
            sy = snap * yres / xres
            left = math.floor(_round(left / sx)) * sx
            top = math.ceil(_round(top / sy)) * sy
            width = math.ceil(_round((right - left) / sx)) * round(sx / xres)
            height = math.ceil(_round((top - bottom) / sy)) * round(sy / yres)
        else:
            width = max(1, math.ceil(_round((right - left) / xres)))
            height = max(1, math.ceil(_round((top - bottom) / yres)))
        return cls(crs=_crs_string(crs), transform=(xres, 0.0, float(left), 0.0, -yres, float(top)), shape=(int(height), int(width)))

    @classmethod
    def from_dict(cls, d: dict) -> "OutputGrid":
        return cls(crs=d["crs"], transform=tuple(float(v) for v in d["transform"]), shape=tuple(int(v) for v in d["shape"]))

    def to_dict(self) -> dict:
        return {"crs": self.crs, "transform": list(self.transform), "shape": list(self.shape)}

    # -- derived --------------------------------------------------------------------------------
    @property
    def affine(self) -> Affine:
        a, b, c, d, e, f = self.transform
        return Affine(a, b, c, d, e, f)

    @property
    def resolution(self) -> tuple[float, float]:
        return self.transform[0], -self.transform[4]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a, _, c, _, e, f = self.transform
        h, w = self.shape
        return (c, f + e * h, c + a * w, f)

    @property
    def x(self) -> np.ndarray:
        a, _, c = self.transform[:3]
        return c + a * (np.arange(self.shape[1]) + 0.5)

    @property
    def y(self) -> np.ndarray:
        e, f = self.transform[4], self.transform[5]
        return f + e * (np.arange(self.shape[0]) + 0.5)

    @property
    def pyproj_crs(self) -> CRS:
        return CRS.from_user_input(self.crs)

    def digest(self) -> str:
        """Short stable hash of the grid (used in series ids)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _round(v: float) -> float:
    # Tolerate float noise so that 100.0000000001 does not become 101 cells.
    return round(v, 6)


def _crs_string(crs) -> str:
    try:
        c = CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises CRSError
        raise GridError(f"cannot understand CRS {crs!r}: {exc}") from exc
    epsg = c.to_epsg()
    return f"EPSG:{epsg}" if epsg else c.to_wkt()


# ---------------------------------------------------------------------------------------------------
def make_cube(
    data,
    times,
    bands,
    grid: OutputGrid,
    quality=None,
    attrs: dict | None = None,
    time_coords: dict | None = None,
    name: str = "reflectance",
) -> xr.DataArray:
    """Assemble a SeriesCube from a ``(time, band, y, x)`` array (numpy or dask) on ``grid``.

    ``quality`` is a ``(time, y, x)`` uint8 array of :class:`Quality` classes; when omitted it is derived
    from the data (NODATA where any band is NaN, CLEAR elsewhere). Pixels marked NODATA are set to NaN.
    """
    arr = data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=(1, -1, 1024, 1024))
    arr = arr.astype(np.float32)
    nt, nb, ny, nx = arr.shape
    if (ny, nx) != tuple(grid.shape):
        raise GridError(f"data is {ny}x{nx} pixels but the grid is {grid.shape[0]}x{grid.shape[1]}")
    times = pd.DatetimeIndex(pd.to_datetime(list(times)))
    if len(times) != nt or len(bands) != nb:
        raise SourceError(f"data has {nt} dates and {nb} bands, but {len(times)} dates and {len(bands)} band names were given")
    check_band_names(bands)
    nodata = da.isnan(arr).any(axis=1)
    if quality is None:
        q = da.where(nodata, np.uint8(Quality.NODATA), np.uint8(Quality.CLEAR)).astype(np.uint8)
    else:
        q = quality if isinstance(quality, da.Array) else da.from_array(np.asarray(quality), chunks=arr.chunksize[:1] + arr.chunksize[2:])
        q = da.where(nodata, np.uint8(Quality.NODATA), q.astype(np.uint8)).astype(np.uint8)
    arr = da.where((q == Quality.NODATA)[:, None], np.float32(np.nan), arr)
    coords = {
        "time": ("time", times.values.astype("datetime64[ns]")),
        "band": ("band", [str(b) for b in bands]),
        "y": ("y", grid.y),
        "x": ("x", grid.x),
        "quality": (("time", "y", "x"), q),
    }
    for key, values in (time_coords or {}).items():
        coords[key] = ("time", list(values))
    cube = xr.DataArray(arr, dims=DIMS, coords=coords, name=name, attrs=dict(attrs or {}))
    cube = cube.rio.write_crs(grid.crs).rio.write_transform(grid.affine)
    cube.attrs.setdefault("scale", "reflectance 0..1")
    return sort_by_time(cube)


def sort_by_time(cube: xr.DataArray) -> xr.DataArray:
    """Sort dates and refuse two images of one day (they must be mosaicked first: event ids and outputs name
    dates by day, so 10:30 and 10:35 of one day would give two changes one id)."""
    times = pd.DatetimeIndex(cube["time"].values)
    days = times.normalize()
    if days.has_duplicates:
        dup = sorted(set(days[days.duplicated()].strftime("%Y-%m-%d")))
        raise SourceError(f"the series has several images for the date(s) {dup}; give one image per date (mosaic "
                          "images of the same day first)")
    if not times.is_monotonic_increasing:
        cube = cube.isel(time=np.argsort(times.values, kind="stable"))
    return cube


def grid_of(cube: xr.DataArray) -> OutputGrid:
    """The :class:`OutputGrid` a cube sits on."""
    crs = cube.rio.crs
    if crs is None:
        raise GridError("the cube has no CRS (write one with cube.rio.write_crs)")
    t = cube.rio.transform()
    return OutputGrid(crs=_crs_string(crs), transform=(t.a, t.b, t.c, t.d, t.e, t.f), shape=(cube.sizes["y"], cube.sizes["x"]))


def pad_to_patches(cube: xr.DataArray, patch_size: int) -> xr.DataArray:
    """``cube`` extended at the bottom and right, as nodata, to whole patches of ``patch_size`` px (the origin,
    and so every pixel's place, unchanged); ``cube`` itself when its grid already holds whole patches.

    Sources read on the images' own grid (an OSCD city, an image pair, a DynamicEarthNet cube: their labels
    line up pixel for pixel) are rarely a multiple of the patch size, and a patch grid keeps whole patches only:
    a run of the OSCD city bercy never looked at 8.5 % of its labelled change, in the strips at its edges."""
    grid = grid_of(cube)
    pad_y, pad_x = -grid.shape[0] % patch_size, -grid.shape[1] % patch_size
    if not (pad_y or pad_x):
        return cube
    big = OutputGrid(grid.crs, grid.transform, (grid.shape[0] + pad_y, grid.shape[1] + pad_x))
    data = da.pad(da.asarray(cube.data), ((0, 0), (0, 0), (0, pad_y), (0, pad_x)), constant_values=np.float32(np.nan))
    quality = da.pad(da.asarray(cube["quality"].data), ((0, 0), (0, pad_y), (0, pad_x)),
                     constant_values=np.uint8(Quality.NODATA))
    coords = {name: c for name, c in cube.coords.items()  # per date and per band (sensor, level...), as they were
              if name not in ("y", "x", "quality", "spatial_ref") and set(c.dims) <= {"time", "band"}}
    coords |= {"y": ("y", big.y), "x": ("x", big.x), "quality": (("time", "y", "x"), quality)}
    attrs = {**cube.attrs, "extended_from": [int(v) for v in grid.shape]}  # (height, width) of the images' own grid
    out = xr.DataArray(data, dims=cube.dims, coords=coords, name=cube.name, attrs=attrs)
    return out.rio.write_crs(big.crs).rio.write_transform(big.affine)


def validate_cube(cube: xr.DataArray) -> xr.DataArray:
    """Check the SeriesCube contract and return the cube; raise :class:`SourceError` naming the problem."""
    if not isinstance(cube, xr.DataArray):
        raise SourceError(f"a SeriesCube is an xarray.DataArray, got {type(cube).__name__}")
    if tuple(cube.dims) != DIMS:
        raise SourceError(f"a SeriesCube has dims {DIMS}, got {tuple(cube.dims)}")
    if cube.dtype != np.float32:
        raise SourceError(f"a SeriesCube holds float32 reflectance, got {cube.dtype}")
    if not np.issubdtype(cube["time"].dtype, np.datetime64):
        raise SourceError(f"the time coordinate must be datetime64, got {cube['time'].dtype}")
    times = pd.DatetimeIndex(cube["time"].values)
    if not times.is_monotonic_increasing or times.normalize().has_duplicates:
        raise SourceError("dates must be strictly increasing, one image per day (use sort_by_time)")
    check_band_names(cube["band"].values)
    if "quality" not in cube.coords or cube["quality"].dims != ("time", "y", "x"):
        raise SourceError("a SeriesCube carries a 'quality' (time, y, x) uint8 coordinate")
    grid_of(cube)
    return cube


def check_band_names(names, where=None, what: str = "the band names") -> list[str]:
    """``names`` as strings; :class:`SourceError` (naming ``where``, a file) listing the names given twice or more
    (``what`` says where the names come from: ``"--bands"``, ``"the band descriptions"``...).

    Two bands of one name cannot be told apart: selecting or dropping one by name would silently drop the other."""
    names = [str(n) for n in names]
    if any(not n.strip() for n in names):
        raise SourceError(f"band names must not be empty, but {what} are {names}", where)
    dups = [n for n, count in Counter(names).items() if count > 1]
    if dups:
        raise SourceError(
            f"band names must be unique, but {', '.join(dups)} occur{'s' if len(dups) == 1 else ''} more than once "
            f"in {what} ({', '.join(names)})",
            where,
        )
    return names


def crs_unit(crs) -> str:
    """Name of the unit of ``crs``'s first axis (``metre``, ``degree``...), ``CRS-unit`` when it cannot be told."""
    try:
        return CRS.from_user_input(crs).axis_info[0].unit_name
    except (CRSError, IndexError):
        return "CRS-unit"


def on_earth(crs) -> bool:
    """Whether ``crs`` places the grid on Earth (geographic or projected); False for None and for a local
    engineering CRS (the pixel grid of image pairs without georeferencing)."""
    if crs is None:
        return False
    crs = CRS.from_user_input(crs)
    return bool(crs.is_geographic or crs.is_projected)


def usable_mask(quality) -> "da.Array | np.ndarray":
    """Boolean mask of pixels that observe the surface (clear or water)."""
    return (quality == Quality.CLEAR) | (quality == Quality.WATER)


def check_bounds(bounds) -> tuple[float, float, float, float]:
    """``bounds`` as floats ``(left, bottom, right, top)``; :class:`GridError` naming what is wrong otherwise."""
    if len(bounds) != 4:
        raise GridError(f"bounds must be 4 numbers LEFT,BOTTOM,RIGHT,TOP, got {len(bounds)}")
    left, bottom, right, top = map(float, bounds)
    wrong = ([f"RIGHT {right:g} is not above LEFT {left:g}"] if not right > left else []) + \
            ([f"TOP {top:g} is not above BOTTOM {bottom:g}"] if not top > bottom else [])
    if wrong:
        raise GridError(f"bounds must be LEFT,BOTTOM,RIGHT,TOP with RIGHT > LEFT and TOP > BOTTOM: {' and '.join(wrong)}")
    return left, bottom, right, top


def band_names(cube: xr.DataArray) -> list[str]:
    """The cube's band names, as str, in order."""
    return [str(b) for b in cube["band"].values]


_S2_BAND = re.compile(r"^B(?:0?([1-9])|(8A|1[0-2]))$", re.I)
#: Band names no Landsat band has (Landsat 4-7 stop at B7; Landsat 8-9's B10 and B11 are thermal): a series that
#: holds one of them is Sentinel-2's, and its bare numbers (``B2``) are Sentinel-2's (:func:`sentinel2_band`).
SENTINEL2_ONLY = ("B8A", "B12")


def sentinel2_band(name: str) -> str:
    """``name`` as Sentinel-2 spells its bands (``B2``, ``b02`` -> ``B02``; ``b8a`` -> ``B8A``; ``B11``), or
    ``name`` as it is when it is no Sentinel-2 band number. For looking up a band's role (red, near infrared)
    where the series is known to be Sentinel-2's (``quality.band_family``): ``B2`` of a Landsat series is
    another band. The cube keeps the names it was given."""
    m = _S2_BAND.match(str(name).strip())
    if m is None:
        return str(name)
    return f"B0{m.group(1)}" if m.group(1) else f"B{m.group(2).upper()}"
