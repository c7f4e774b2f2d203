"""Lazy warping of raster files onto one output grid.

A source describes its series as :class:`Scene` objects (one per date: the file bands that hold its
reflectance bands and, optionally, its mask band). :func:`build_cube` turns them into a SeriesCube whose dask
chunks each read one spatial block of one date, or of several consecutive dates that come from the same files
(a stacked GeoTIFF): every file a chunk needs is read once for all of its dates, since GDAL decodes a block of
a pixel-interleaved file for all its bands at once. A chunk spans at most dask's ``array.chunk-size`` bytes
(at least one date), so memory stays bounded by the chunk size.

Where the output grid is the file's own grid (same CRS and pixel size, origin on a whole pixel of the file)
a block is a plain windowed read (NaN outside the file and where it has no data): the values the warper
would give, without it. Otherwise a rasterio ``WarpedVRT`` warps the block (bilinear for reflectance,
nearest for masks), GDAL reading only the source window the block needs.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import rasterio
import rasterio.warp
from affine import Affine
from dask.base import tokenize
from dask.utils import parse_bytes
from pyproj import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from ..cube import OutputGrid, Quality, check_bounds, crs_unit, make_cube, validate_cube
from ..errors import ConfigError, GridError, NetworkError, SourceError
from .dates import parse_level, parse_platform
from .masks import check_values, convention_of, lookup_table, to_quality

#: Integer rasters (and float rasters whose 99th percentile exceeds this) are reflectance x 10000.
DEFAULT_SCALE = 1e-4
_FLOAT_SCALED_ABOVE = 2.0


@dataclass(frozen=True)
class Layer:
    """One band (1-based ``index``) of one raster file; ``scaling`` is the ``(scale, offset)`` that the file
    declares for it (GDAL band metadata: ``gdal_translate -a_scale -a_offset``), ``None`` when it declares none;
    ``nodata``, a no-data value declared beside the file (a STAC asset's ``raster:bands``), read as no data where
    the file itself declares none (GDAL's warper takes one value a band: the file's own wins)."""

    path: str
    index: int = 1
    scaling: tuple[float, float] | None = None
    nodata: float | None = None


@dataclass(frozen=True)
class Scene:
    """One date: the layers of its reflectance bands, in band order, and an optional mask layer whose classes
    follow ``convention`` (:mod:`.masks`; empty: the series' one)."""

    time: pd.Timestamp
    layers: tuple[Layer, ...]
    mask: Layer | None = None
    name: str = ""
    convention: str = ""


@dataclass(frozen=True)
class RasterInfo:
    """What :func:`probe` learns from a raster's header."""

    path: str
    crs: str
    transform: Affine
    shape: tuple[int, int]
    count: int
    dtype: str
    descriptions: tuple[str | None, ...]
    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    #: whether the file says where it has no data (a nodata value, a mask or an alpha band)
    declares_nodata: bool = False
    #: whether the file ends in an alpha band (its colour interpretation, and no band name of its own in its
    #: description): left out of ``count`` and the descriptions, it is where the image has data (GDAL reads it
    #: as the other bands' mask), not a band
    alpha: bool = False
    #: whether GDAL takes the last band for the others' alpha (RGBA: 4 bands of bytes unless told otherwise),
    #: whether or not the file names it a band of its own (B08)
    marked_alpha: bool = False

    @property
    def bands_said(self) -> str:
        """How many bands the file has, for a message: with its alpha band, when it has one, and how to read
        that band as a band (GDAL marks the 4th of 4 bands of bytes alpha unless told otherwise)."""
        if not self.alpha:
            return f"{self.count} bands"
        return (f"{self.count} bands and an alpha band (its colour interpretation: read as its mask; if it is a "
                f"spectral band, mark it so: rio edit-info --colorinterp {','.join(['undefined'] * (self.count + 1))} FILE)")

    @property
    def fills_with_zero(self) -> bool:
        """Whether 0 is this file's unsaid nodata: integer values wider than 8 bits (reflectance digital numbers,
        as Sentinel-2 and Landsat deliver them, whose NODATA value is 0) and no nodata declared. (Not 8-bit
        images, where 0 is black, nor floats, nor files that say where their nodata is.)"""
        dtype = np.dtype(self.dtype)
        return not self.declares_nodata and np.issubdtype(dtype, np.integer) and dtype.itemsize > 1

    def declared_scaling(self, index: int) -> tuple[float, float] | None:
        """The ``(scale, offset)`` band ``index`` (1-based) declares, or ``None`` where it declares (1, 0)."""
        if not self.scales:
            return None
        scale, offset = float(self.scales[index - 1]), float(self.offsets[index - 1])
        return None if (scale, offset) == (1.0, 0.0) or not np.isfinite(scale) or scale == 0 else (scale, offset)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return rasterio.transform.array_bounds(*self.shape, self.transform)

    @property
    def resolution(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)


_PROBE_LOCK = threading.Lock()


@lru_cache(maxsize=4096)
def _probe(path: str, mtime: float) -> RasterInfo:
    try:
        # rasterio warns (NotGeoreferencedWarning) on opening a raster without a geotransform; such a raster is
        # refused below with an error naming the file, so the warning would only repeat it on stderr. The
        # warning filters are process-wide: one probe at a time changes them (probes are cached, so rare).
        with _PROBE_LOCK, warnings.catch_warnings(), network(path):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
        with network(path), src:
            if src.crs is None and (src.gcps[0] or src.rpcs):
                raise SourceError(f"the raster is georeferenced by {'ground control points' if src.gcps[0] else 'RPCs'} "
                                  f"only, not on a grid; warp it onto one first (gdalwarp {'-tps' if src.gcps[0] else '-rpc'} "
                                  "-t_srs EPSG:... in.tif out.tif)", shown(path))
            if src.crs is None:
                raise SourceError("the raster has no CRS; write one (e.g. gdal_edit.py -a_srs EPSG:32631)", shown(path))
            if src.transform.is_identity and not src.gcps[0] and not src.rpcs:
                raise SourceError(
                    "the raster has a CRS but no geotransform (pixel size and origin); write one "
                    "(e.g. gdal_edit.py -a_ullr ULX ULY LRX LRY)",
                    shown(path),
                )
            if src.transform.b or src.transform.d:
                raise SourceError("rotated rasters are not supported; warp it north-up first", shown(path))
            if src.transform.e > 0 or src.transform.a < 0:
                raise SourceError(f"the raster is stored {'south-up' if src.transform.e > 0 else 'east-to-west'} "
                                  f"(pixel size {src.transform.a:g} x {src.transform.e:g}); warp it north-up first "
                                  "(e.g. gdalwarp in.tif out.tif)", shown(path))
            # RGBA: GDAL's default for 4 bands of bytes, so that a band described by a name of its own (B08, nir)
            # stays a band; and only where GDAL reads it as the others' mask (gray + alpha, RGBA: not the last of
            # 5 bands, which would be dropped and mask nothing)
            marked = src.count > 1 and src.colorinterp[-1] == ColorInterp.alpha and MaskFlags.alpha in src.mask_flag_enums[0]
            alpha = marked and str(src.descriptions[-1] or "alpha").strip().lower() in ("alpha", "mask", "")
            n = src.count - alpha
            return RasterInfo(path, src.crs.to_string(), src.transform, src.shape, n, src.dtypes[0], src.descriptions[:n],
                              tuple(src.scales[:n]), tuple(src.offsets[:n]),
                              any(f != [MaskFlags.all_valid] for f in src.mask_flag_enums) and alpha == marked,
                              alpha, marked)
    except RasterioError as exc:
        hint = "; download the assets first (stac-asset download)" if is_remote(path) else ""
        raise SourceError(f"not a readable raster ({exc}){hint}", shown(path)) from exc


#: URL schemes GDAL reads through its virtual file systems (/vsicurl/, /vsis3/, /vsigs/, /vsiaz/).
REMOTE_SCHEMES = ("http://", "https://", "s3://", "gs://", "az://")


def is_remote(path) -> bool:
    """Whether ``path`` is a URL that GDAL reads over the network (a STAC asset's href), not a local file."""
    return str(path).lower().startswith(REMOTE_SCHEMES)


#: GDAL's settings for reading a URL, where the environment sets none (seconds): without them GDAL lists each
#: URL's "folder" for side-car files (a request per file for nothing) and waits for a stalled host for ever,
#: where no signal (Ctrl-C, a batch job's SIGTERM) gets through. Set around each remote read only
#: (:func:`network`): local files keep reading their side-cars (.aux.xml, .msk).
GDAL_HTTP = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_CONNECTTIMEOUT": "30", "GDAL_HTTP_TIMEOUT": "120",
             "GDAL_HTTP_MAX_RETRY": "3", "GDAL_HTTP_RETRY_DELAY": "2"}


def _name(path) -> str:
    """A file's name in a message (a URL's last part, without its query)."""
    return shown(path).rsplit("/", 1)[-1] if is_remote(path) else Path(path).name


def network(path):
    """A context for reading ``path``: :data:`GDAL_HTTP` (those the environment does not set) for a URL, nothing
    for a local file. Entered in the task that reads, so that a cluster's workers read with it too."""
    if not is_remote(path):
        return contextlib.nullcontext()
    return rasterio.Env(**{k: v for k, v in GDAL_HTTP.items() if k not in os.environ})


def shown(path) -> str:
    """``path`` as messages and records show it: a URL without its query (a signed URL's token, which expires
    and must not be written into config.json, nor tell a re-signed URL from the same file) nor fragment."""
    path = str(path)
    return path.split("?", 1)[0].split("#", 1)[0] if is_remote(path) else path


def probe(path: str | os.PathLike) -> RasterInfo:
    """Read a raster's header; :class:`SourceError` naming the file if it is unreadable or has no CRS. A URL
    (:func:`is_remote`) is read once per process: it has no modification time to tell a new version by."""
    if is_remote(path):
        return _probe(str(path), 0.0)
    path = os.path.abspath(path)
    if os.path.isdir(path):  # (--kind stacked on a folder: "does not exist" misled, a UAT)
        raise SourceError("is a folder, not a raster file: give one file (a stacked GeoTIFF), or leave --kind out (a folder "
                          "of GeoTIFFs is --kind geotiff)", path)
    if not os.path.isfile(path):
        raise SourceError("does not exist or is not a file", path)
    return _probe(path, os.path.getmtime(path))


# -- the output grid -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridSpec:
    """What the user asks of the output grid; unset fields come from the data (see :func:`resolve_grid`)."""

    crs: str | None = None
    resolution: float | None = None
    bounds: tuple[float, float, float, float] | None = None

    def __post_init__(self):
        # bounds in the wrong order are the option's fault, not the source's: told here, before any file is
        # read (OutputGrid.from_bounds, later, would say it under the name of the source being read)
        if self.bounds is not None:
            try:
                check_bounds(self.bounds)
            except GridError as exc:
                raise ConfigError(f"grid {exc.message}") from None

    @classmethod
    def parse(cls, text: str) -> GridSpec:
        """``"EPSG:32631"``, ``"EPSG:32631,10"`` or ``"EPSG:32631,10,left,bottom,right,top"``."""
        parts = [p.strip() for p in str(text).split(",")]
        usage = "expected CRS[,RESOLUTION[,LEFT,BOTTOM,RIGHT,TOP]], e.g. 'EPSG:32631,10'"
        if len(parts) not in (1, 2, 6):
            raise ConfigError(f"grid {text!r}: {usage}")
        try:
            crs = CRS.from_user_input(parts[0]).to_string() if parts[0] else None
        except Exception as exc:  # pyproj.CRSError
            raise ConfigError(f"grid {text!r}: {parts[0]!r} is not a CRS ({usage})") from exc
        try:
            numbers = [float(p) for p in parts[1:]]
        except ValueError as exc:
            raise ConfigError(f"grid {text!r}: resolution and bounds must be numbers ({usage})") from exc
        if numbers and not (numbers[0] > 0 and math.isfinite(numbers[0])):
            raise ConfigError(f"grid {text!r}: the resolution must be a positive number of CRS units")
        try:
            return cls(crs, numbers[0] if numbers else None, tuple(numbers[1:]) or None)
        except ConfigError as exc:
            raise ConfigError(f"grid {text!r}: {exc.message.removeprefix('grid ')}") from None


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def grid_text(spec: GridSpec) -> str:
    """The one spelling of ``spec`` as :meth:`GridSpec.parse` reads it (``"EPSG:32631,10,300000,..."``): a rerun
    that writes the same --grid otherwise (``epsg:32631``, ``10.0``, spaces) is the same configuration."""
    return ",".join([spec.crs or "", *([] if spec.resolution is None else [_number_text(spec.resolution)]),
                     *(_number_text(b) for b in spec.bounds or ())])


def as_grid(grid) -> GridSpec | OutputGrid:
    """Accept ``None``, a :class:`GridSpec`, an :class:`OutputGrid`, its dict form or :meth:`GridSpec.parse` text."""
    if grid is None:
        return GridSpec()
    if isinstance(grid, (GridSpec, OutputGrid)):
        return grid
    if isinstance(grid, dict):
        return OutputGrid.from_dict(grid)
    if isinstance(grid, str):
        return GridSpec.parse(grid)
    raise ConfigError(f"grid must be a GridSpec, an OutputGrid or text like 'EPSG:32631,10', got {type(grid).__name__}")


#: How many times finer than the input's own a --grid resolution may be (Landsat's 30 m at 10 m is 3): a
#: resolution of 0.01 for 10 m made a 128 000 x 128 000 px grid whose first graph filled the memory.
MAX_UPSAMPLING = 8


def resolve_grid(grid, first: RasterInfo, footprints, patch_size: int) -> OutputGrid:
    """The output grid: the CRS and resolution of ``first`` (the first date) unless ``grid`` sets them, and
    the union of ``footprints`` (``(crs, bounds)`` pairs) unless it sets the bounds.

    The origin is snapped to whole patches (``OutputGrid.from_bounds(..., snap=patch_size * res)``) on a
    lattice that keeps the pixel phase of ``first`` when the grid has its CRS and resolution: a Landsat grid
    at ``x = 15 + 30 k`` stays on it rather than being resampled by half a pixel.
    """
    spec = as_grid(grid)
    if isinstance(spec, OutputGrid):
        return _overlapping(spec, footprints)
    crs = spec.crs or first.crs
    own_crs = same_crs(crs, first.crs)
    if own_crs:
        native = first.resolution
    else:
        t, _, _ = calculate_default_transform(first.crs, crs, first.shape[1], first.shape[0], *first.bounds)
        native = (abs(t.a), abs(t.e))
    res = (spec.resolution, spec.resolution) if spec.resolution else native
    if spec.resolution and spec.resolution * MAX_UPSAMPLING < min(native):
        raise GridError(f"--grid resolution {spec.resolution:g} is {min(native) / spec.resolution:.0f} times finer than the "
                        f"input's ({min(native):.6g} in {crs} units): a finer grid only interpolates, and this one would "
                        f"hold {min(native) / spec.resolution:.0f}^2 times as many pixels; check the resolution (at most "
                        f"{MAX_UPSAMPLING} times finer)")
    bounds = spec.bounds or _union(_boxes(footprints, crs))
    if not spec.bounds:
        w, h = (bounds[2] - bounds[0]) / res[0], (bounds[3] - bounds[1]) / res[1]
        if min(w, h) < patch_size and spec.resolution and spec.resolution > max(native):  # the RES given, not the area
            raise GridError(f"at the --grid resolution {spec.resolution:g} ({crs_unit(crs)}s of {crs} per pixel) the images "
                            f"cover {w:.0f} x {h:.0f} px, less than one patch of {patch_size} px a side; their own pixels are "
                            f"{min(native):.6g} {crs_unit(crs)}s there: check RES, which is in the CRS's units")
        if min(w, h) < patch_size:  # (it ended in "too few clear pixels ... mostly nodata or cloud")
            raise GridError(f"the images cover {w:.0f} x {h:.0f} px, less than one patch of {patch_size} px a side: "
                            "use a smaller --patch-size, or images of a larger area")
    px, py = (first.transform.c % res[0], first.transform.f % res[1]) if own_crs and res == first.resolution else (0, 0)
    left, bottom, right, top = bounds
    out = OutputGrid.from_bounds(crs, res, (left - px, bottom - py, right - px, top - py), snap=patch_size * res[0])
    a, b, c, d, e, f = out.transform
    out = OutputGrid(out.crs, (a, b, c + px, d, e, f + py), out.shape)
    return _overlapping(out, footprints, given=spec.bounds) if spec.bounds else out  # (a grid on the data's own bounds covers it)


def _boxes(footprints, crs) -> np.ndarray:
    """``(n, 4)``: each ``(crs, bounds)`` footprint's bounds in ``crs``; a :class:`GridError` for a footprint that
    crosses the antimeridian there (its box would run from 179.9 round to -179.9: a grid cannot hold it)."""
    boxes = np.array([transform_bounds(c, crs, *b, densify_pts=21) for c, b in footprints])
    for (c, b), box in zip(footprints, boxes):
        if box[0] > box[2]:
            raise GridError(f"the images cross the antimeridian (180 degrees) in {crs}, where a footprint in {c} "
                            f"({_bounds_text(b, c)}) runs from {box[0]:.6f} round to {box[2]:.6f}: a grid in {crs} cannot "
                            f"hold it; choose a --grid CRS in which it does not cross, such as the files' own ({c})")
    return boxes


def _union(boxes: np.ndarray) -> tuple[float, float, float, float]:
    return (*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0))


def _overlapping(grid: OutputGrid, footprints, given=None) -> OutputGrid:
    """``grid``, or a :class:`GridError` when it covers none of ``footprints`` (the series would be all nodata);
    the message quotes the bounds as ``given`` (before they were snapped to whole patches) when known."""
    boxes = _boxes(footprints, grid.crs)
    if _intersects(grid.bounds, boxes).any():
        return grid
    crs = CRS.from_user_input(grid.crs)
    covers = _union(boxes)
    hint = ""
    if given is not None and not crs.is_geographic and _look_like_degrees(given) and not _look_like_degrees(covers):
        hint = (f"; they look like degrees, but {grid.crs}'s bounds are in {crs_unit(grid.crs)}s: give them in its "
                f"units, or give a geographic CRS (--grid EPSG:4326,RES,...)")
    raise GridError(f"--grid bounds {_bounds_text(given if given is not None else grid.bounds, grid.crs)} ({grid.crs}) do "
                    f"not overlap the input, which covers {_bounds_text(covers, grid.crs)} there (left, bottom, right, "
                    f"top){hint}")


def _look_like_degrees(bounds) -> bool:
    """Whether ``bounds`` (left, bottom, right, top) could be longitudes and latitudes."""
    left, bottom, right, top = bounds
    return all(-180 <= v <= 180 for v in (left, right)) and all(-90 <= v <= 90 for v in (bottom, top))


def _intersects(box, boxes: np.ndarray) -> np.ndarray:
    """Which of ``boxes`` ``(n, 4)`` share an area with ``box`` (left, bottom, right, top)."""
    left, bottom, right, top = box
    return (boxes[:, 0] < right) & (left < boxes[:, 2]) & (boxes[:, 1] < top) & (bottom < boxes[:, 3])


def _bounds_text(bounds, crs) -> str:
    """Bounds in readable digits: degrees to about 0.1 m, metres to 0.1."""
    digits = 6 if CRS.from_user_input(crs).is_geographic else 1
    return ",".join(f"{v:.{digits}f}".rstrip("0").rstrip(".") for v in bounds)


# -- reading -------------------------------------------------------------------------------------------
#: A block whose origin is within this fraction of a pixel of a file pixel corner is on the file's grid.
_ALIGNED_PX = 1e-6


@lru_cache(maxsize=256)
def same_crs(a: str, b: str) -> bool:
    """Whether two CRS texts (``EPSG:32631``, WKT...) name one CRS."""
    return a == b or CRS.from_user_input(a) == CRS.from_user_input(b)


def aligned_offset(info: RasterInfo, crs: str, transform: Affine, shape) -> tuple[int, int] | None:
    """``(row, col)`` of the block ``(crs, transform, shape)`` in the pixels of the file ``info`` when the block
    lies on the file's own grid (same CRS, same north-up pixel size, origin on a pixel corner), else ``None``."""
    f = info.transform
    if transform.b or transform.d or f.b or f.d or not (f.a > 0 > f.e):
        return None
    if not (math.isclose(transform.a, f.a, rel_tol=1e-9) and math.isclose(transform.e, f.e, rel_tol=1e-9)):
        return None
    col, row = (transform.c - f.c) / f.a, (transform.f - f.f) / f.e
    if abs(col - round(col)) > _ALIGNED_PX or abs(row - round(row)) > _ALIGNED_PX or not same_crs(crs, info.crs):
        return None
    return round(row), round(col)


def read_aligned(path: str, indexes, offset: tuple[int, int], shape, raw=(), nodata: float | None = None) -> np.ndarray:
    """Bands ``indexes`` of ``path`` over ``shape`` pixels from file pixel ``offset`` ``(row, col)``, which may
    reach beyond the file: float32, NaN outside the file and where it has no data (what :func:`warp_vrt`
    gives on the file's own grid, without the warper); the bands in ``raw`` (mask bands) keep the file's nodata
    value as it is (NaN outside the file only); ``nodata``: a value declared beside the file (:attr:`Layer.nodata`),
    no data in the other bands too."""
    row, col = offset
    out = np.full((len(indexes), *shape), np.nan, np.float32)
    try:
        with network(path), rasterio.open(path) as src:
            r0, r1 = max(row, 0), min(row + shape[0], src.height)
            c0, c1 = max(col, 0), min(col + shape[1], src.width)
            if r0 >= r1 or c0 >= c1:
                return out
            window = Window(c0, r0, c1 - c0, r1 - r0)
            part = out[:, r0 - row : r1 - row, c0 - col : c1 - col]
            part[...] = src.read(list(indexes), window=window)  # cast to float32 in place
            masked = [j for j, i in enumerate(indexes) if i not in raw and src.mask_flag_enums[i - 1] != [MaskFlags.all_valid]]
            info = probe(path)
            if info.marked_alpha and not info.alpha:  # GDAL's alpha is a band here (B08): it masks nothing
                masked = []
            if masked:  # nodata, mask or alpha
                masks = src.read_masks([indexes[j] for j in masked], window=window)
                part[masked] = np.where(masks == 0, np.nan, part[masked])
            if nodata is not None:
                values = [j for j, i in enumerate(indexes) if i not in raw]
                part[values] = np.where(part[values] == np.float32(nodata), np.nan, part[values])
    except RasterioError as exc:
        raise read_error(exc, path) from exc
    return out


#: GDAL's approximate transformer error, in source pixels (0.125 by default): its linear pieces follow the block,
#: so a pixel's value depended on the block size (up to 0.003 reflectance on white noise across UTM zones); at
#: 1e-3 px, 0.0002, for no measurable time (an exact transformer took 2.6 times as long).
WARP_TOLERANCE = 1e-3


#: A source nodata value no mask value is (they are whole numbers): mask bands are warped with their file's
#: nodata value kept, for their convention to read (:func:`.masks.to_quality`).
_NO_CLASS = -1.5


def warp_scales(src_crs: str, src_transform: Affine, src_shape, crs: str, resolution) -> dict[str, float]:
    """GDAL's ``XSCALE``/``YSCALE`` warp options (destination pixels per source pixel, at most 1) for source
    pixels warped onto a grid of ``crs`` and ``resolution``, from one source pixel at the source's centre.

    Left to itself GDAL derives them from each block's source and destination windows, whose margins make the
    ratio, and so the width of the bilinear kernel, depend on the block size: the same pixel read in 32 px
    blocks and in 1024 px blocks differed by 0.005 reflectance, with a seam at an image's last partial block.
    Fixed from the pixel sizes, every block is read alike, and a coarser grid still averages its source pixels."""
    h, w = src_shape
    cols, rows = np.array([w / 2, w / 2 + 1, w / 2]), np.array([h / 2, h / 2, h / 2 + 1])
    t = src_transform
    xs, ys = t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f
    if not same_crs(src_crs, crs):
        xs, ys = map(np.asarray, rasterio.warp.transform(src_crs, crs, xs, ys))
    step_x, step_y = math.hypot(xs[1] - xs[0], ys[1] - ys[0]), math.hypot(xs[2] - xs[0], ys[2] - ys[0])
    return {"XSCALE": min(1.0, step_x / abs(resolution[0])), "YSCALE": min(1.0, step_y / abs(resolution[1]))}


@lru_cache(maxsize=256)
def _file_scales(path: str, crs: str, resolution) -> dict[str, float]:
    """:func:`warp_scales` of a file onto a grid: the same for every block it is read in."""
    info = probe(path)
    return warp_scales(info.crs, info.transform, info.shape, crs, resolution)


def warp_vrt(path: str, indexes, crs: str, transform: Affine, shape, resampling: Resampling,
             scales: dict[str, float] | None = None, raw: bool = False, zero_nodata: bool = False,
             nodata: float | None = None) -> np.ndarray:
    """Bands ``indexes`` of ``path`` warped onto ``(crs, transform, shape)`` through a ``WarpedVRT``: float32,
    NaN where no data; ``scales``: :func:`warp_scales` (the same for every block of a grid); ``raw`` (mask
    bands): the file's nodata value kept as it is (NaN outside the file only); ``zero_nodata``: the file's 0
    is its unsaid nodata (:attr:`RasterInfo.fills_with_zero`); ``nodata``: the value declared beside a file that
    declares none (:attr:`Layer.nodata`), taken as its nodata.

    Each band's nodata is its own (``UNIFIED_SRC_NODATA=NO``): by default GDAL takes a pixel for nodata only
    where every band of the file is, so a date missing from a stacked file would be read as -9999 reflectance
    (and blended into its neighbours) whenever another date has data there. With ``zero_nodata``, a file has
    none where every band it holds is 0 (Sentinel-2's and Landsat's NODATA value, a band file's swath edge):
    left out of the resampling, not blended into its neighbours as values toward 0 (a 20 m band's edge read
    -0.05 beside a 10 m band's nodata, and the edge ranked as a change). "Every band" is every band read: the
    file is seen through a VRT of those bands alone (GDAL's ``vrt://``), so that a mask band inside the file (an
    Fmask band, whose fill is 255) or another date's bands of a stacked file do not keep a date's zeros in.
    (A path holding a ``?``, such as a signed URL, cannot be given to ``vrt://``: it is read whole, as before.)

    A mask file whose last band GDAL takes for alpha (4 bands of bytes: a mask stack of 4 dates) is warped band
    by band as values: a ``WarpedVRT`` took that band as the others' alpha, and every pixel read as nodata.
    A reflectance file's alpha band says where it has data (above 0), as a read on the grid's own pixels takes it:
    GDAL's warper weighs each pixel by alpha / 255 against the NaN it starts from, and a date to resample whose
    alpha was below 255 (a feathered edge; the near-infrared of 4 bands of bytes, which GDAL marks alpha) read
    as no data where the same file on the grid's pixels read whole (a review)."""
    info = probe(path)
    options = ({"src_nodata": _NO_CLASS, "UNIFIED_SRC_NODATA": "NO"} if raw
               else {"src_nodata": 0, "UNIFIED_SRC_NODATA": "YES"} if zero_nodata else {"UNIFIED_SRC_NODATA": "NO"})
    if nodata is not None and not raw and not zero_nodata:
        options["src_nodata"] = nodata
    if not raw and info.alpha:  # (alpha / SRC_ALPHA_MAX, clipped to 1: any alpha above 0 is data)
        options["SRC_ALPHA_MAX"] = 1
    indexes, opened = list(indexes), path
    if zero_nodata and not raw and "?" not in path and len(set(indexes)) < info.count:  # (no alpha: it declares nodata)
        bands = sorted(set(indexes))
        opened, indexes = f"vrt://{path}?bands={','.join(map(str, bands))}", [bands.index(i) + 1 for i in indexes]
    try:
        # a band GDAL takes for alpha that is a band here (a mask stack's 4th date; a 4th band named B08): warped as
        # the values it holds, band by band (a WarpedVRT weighed the others by it: a near-infrared below 255 made
        # a resampled date no data, a review)
        if (raw and info.alpha) or (not raw and info.marked_alpha and not info.alpha):
            out = np.full((len(indexes), *shape), np.nan, np.float32)
            with network(path), rasterio.open(path) as src:
                kept = None if raw else 0 if zero_nodata else nodata if nodata is not None else src.nodata  # (raw alpha: none to keep)
                rasterio.warp.reproject(rasterio.band(src, indexes), out, dst_transform=transform, dst_crs=crs,
                                        src_nodata=kept, dst_nodata=np.nan, resampling=resampling,
                                        tolerance=WARP_TOLERANCE, UNIFIED_SRC_NODATA="YES" if zero_nodata and not raw else "NO",
                                        **(scales or {}))
            return out
        with network(path), rasterio.open(opened) as src:
            with WarpedVRT(src, crs=crs, transform=transform, height=shape[0], width=shape[1], resampling=resampling,
                           dtype="float32", nodata=np.nan, tolerance=WARP_TOLERANCE, **options, **(scales or {})) as vrt:
                with warnings.catch_warnings():  # (the warped NaN, not the source's alpha, marks no data: as meant)
                    warnings.simplefilter("ignore", NodataShadowWarning)
                    return vrt.read(list(indexes), masked=True).filled(np.nan).astype(np.float32, copy=False)
    except RasterioError as exc:
        raise read_error(exc, path) from exc


def read_error(exc: Exception, path: str) -> SourceError | NetworkError:
    """The error of a read that failed after the file's header was read: a local file that went bad is the
    source's fault (exit 2); a URL's read failed on the network (a host down, a timeout, an expired signature),
    which a rerun resumes (:class:`NetworkError`, exit 1: the run is kept)."""
    cause = exc.__cause__ or exc.__context__
    detail = f"{exc}" + (f": {cause}" if cause is not None and str(cause) not in str(exc) else "")
    if is_remote(path):
        return NetworkError(f"reading it over the network failed ({detail}); the run is kept: rerun the same command "
                            "to resume once the host answers, or download the assets (stac-asset download)", shown(path))
    return SourceError(f"cannot read the raster ({detail})", path)


class WarpedSeries:
    """Array-like ``(time, band + 1, y, x)`` view of scenes on a grid; the last band holds the quality class.

    Dask calls ``__getitem__`` once per chunk, which reads only that block: each file once for every date of
    the chunk that it holds (reflectance and mask bands together where no warping is needed).

    Consecutive scenes of one time are the tiles of one date (STAC items of one pass over several tiles): the
    date is their mosaic, each pixel taken whole from the first tile that has every band there (rasterio.merge's
    "first"). A tile whose footprint misses a block is not read for it.
    """

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(self, scenes, n_bands: int, grid: OutputGrid, scale: float, offset: float, lut):
        dates = by_time(scenes)  # (scenes in time order, as open_scenes gives them: each date's tiles together)
        self.scenes, self.n_bands, self.grid = tuple(s for tiles in dates.values() for s in tiles), n_bands, grid
        self.scale, self.offset, self.lut = scale, offset, lut
        ends = np.cumsum([len(tiles) for tiles in dates.values()]).tolist()
        self.dates = tuple(zip([0, *ends[:-1]], ends))  # (first, last + 1) scene of each date
        self.shape = (len(self.dates), n_bands + 1, *grid.shape)
        # files whose 0 is their unsaid nodata (RasterInfo.fills_with_zero): told once, not at every chunk
        # values declared no data beside their files (STAC raster:bands), which then have no unsaid one
        self.declared_nodata = {la.path: la.nodata for s in self.scenes for la in s.layers
                                if la.nodata is not None and not probe(la.path).declares_nodata}
        self.zero_nodata = frozenset(la.path for s in self.scenes for la in s.layers
                                     if probe(la.path).fills_with_zero and la.path not in self.declared_nodata)
        # the footprint of each tile of a mosaicked date on the grid (None: a date of one scene, read whole)
        tiled = {k for a, b in self.dates if b - a > 1 for k in range(a, b)}
        self.boxes = {k: np.array(_union(_boxes([(probe(la.path).crs, probe(la.path).bounds) for la in self.scenes[k].layers],
                                       grid.crs))) for k in sorted(tiled)}

    def __dask_tokenize__(self):
        return tokenize(self.scenes, self.n_bands, self.grid, self.scale, self.offset, None if self.lut is None else self.lut.tobytes())

    def time_chunks(self, chunks: int) -> tuple[int, ...]:
        """Runs of consecutive dates read from the same files (a stacked GeoTIFF: all its dates; one file per
        date: one), each cut to at most dask's ``array.chunk-size`` bytes at ``chunks`` px a side (one date at least)."""
        px = min(chunks, self.shape[2]) * min(chunks, self.shape[3])
        most = max(1, parse_bytes(dask.config.get("array.chunk-size")) // (px * self.shape[1] * self.dtype.itemsize))
        files = [frozenset(layer.path for s in self.scenes[a:b] for layer in (*s.layers, *([s.mask] if s.mask else ())))
                 for a, b in self.dates]
        out: list[int] = []
        for i, f in enumerate(files):
            if i and f == files[i - 1] and out[-1] < most:
                out[-1] += 1
            else:
                out.append(1)
        return tuple(out)

    def __getitem__(self, key):
        t, b, ys, xs = (range(*k.indices(n)) for k, n in zip(key, self.shape))
        spans = [self.dates[i] for i in t]
        if all(stop - start == 1 for start, stop in spans):
            return self._read([self.scenes[start] for start, _ in spans], ys, xs)[:, b.start : b.stop : b.step]
        # mosaicked dates: every tile read as a date of its own (those whose footprint misses the block skipped),
        # then fused
        ks = [k for start, stop in spans for k in range(start, stop)]
        transform = self.grid.affine @ Affine.translation(xs.start, ys.start)
        left, top = transform @ (0, 0)
        right, bottom = transform @ (len(xs), len(ys))
        block = (min(left, right), min(bottom, top), max(left, right), max(bottom, top))
        missed = {i for i, k in enumerate(ks) if k in self.boxes and not _intersects(block, self.boxes[k][None])[0]}
        tiles = self._read([self.scenes[k] for k in ks], ys, xs, skip=missed)
        out = np.empty((len(spans), *tiles.shape[1:]), np.float32)
        i = 0
        for d, (start, stop) in enumerate(spans):
            out[d] = tiles[i]
            for j in range(i + 1, i + stop - start):  # a pixel lacking a band (nodata) taken whole from a tile with all
                fill = np.isnan(out[d, : self.n_bands]).any(axis=0) & ~np.isnan(tiles[j, : self.n_bands]).any(axis=0)
                out[d][:, fill] = tiles[j][:, fill]
            i += stop - start
        return out[:, b.start : b.stop : b.step]

    def _read(self, scenes, ys: range, xs: range, skip=frozenset()) -> np.ndarray:
        """Each of ``scenes`` over the block; those at the positions in ``skip`` are not read (all nodata)."""
        shape = (len(ys), len(xs))
        transform = self.grid.affine @ Affine.translation(xs.start, ys.start)
        nb = self.n_bands
        out = np.empty((len(scenes), nb + 1, *shape), np.float32)
        # (file, resampling, date) -> [(date, row of out, band index)]; on the file's own grid resampling plays no
        # part (None), so that its reflectance and mask bands are read together; a file whose 0 is its unsaid
        # nodata is warped one date at a time (a date of a stacked file is nodata where its own bands are all 0,
        # whatever the other dates hold there: warp_vrt); the others at once (date -1)
        reads: dict[tuple[str, Resampling | None, int], list[tuple[int, int, int]]] = {}
        offsets: dict[str, tuple[int, int] | None] = {}

        def want(layer: Layer, k: int, pos: int, resampling: Resampling):
            if layer.path not in offsets:
                offsets[layer.path] = aligned_offset(probe(layer.path), self.grid.crs, transform, shape)
            resampling = None if offsets[layer.path] else resampling
            by_date = resampling is not None and layer.path in self.zero_nodata
            reads.setdefault((layer.path, resampling, k if by_date else -1), []).append((k, pos, layer.index))

        for k, scene in enumerate(scenes):
            if k in skip:
                out[k, :nb], out[k, nb] = np.nan, Quality.NODATA
                continue
            for pos, layer in enumerate(scene.layers):
                want(layer, k, pos, Resampling.bilinear)
            if scene.mask is None:
                out[k, nb] = 0  # Quality.CLEAR; make_cube marks NaN pixels NODATA
            else:
                want(scene.mask, k, nb, Resampling.nearest)
        for (path, resampling, _), items in reads.items():
            k, pos, idx = (list(v) for v in zip(*items))
            # a mask band's values are read by its convention, the file's nodata value too: a file whose nodata
            # is 0 for its reflectance has Fmask's clear land 0 in its mask band (all its clear pixels were nodata)
            raw = {i for i, p in zip(idx, pos) if p == nb}
            nodata = self.declared_nodata.get(path)
            if resampling is None:
                out[k, pos] = read_aligned(path, idx, offsets[path], shape, raw, nodata=nodata)
            else:
                out[k, pos] = warp_vrt(path, idx, self.grid.crs, transform, shape, resampling,
                                       _file_scales(path, self.grid.crs, self.grid.resolution), bool(raw),
                                       zero_nodata=path in self.zero_nodata, nodata=nodata)
        values = out[:, :nb]
        # a pixel 0 in every band of a date whose files hold reflectance digital numbers and declare no nodata
        # is Sentinel-2's and Landsat's NODATA value 0, unsaid: nodata. (Scaled and offset, Sentinel-2 baseline
        # 04.00's -1000 made a swath edge of DN 0 read -0.1, and the edge ranked among the top changes.)
        for k, scene in enumerate(scenes):
            if nb > 1 and all(la.path in self.zero_nodata for la in scene.layers):
                blank_zeros(values[k])
        # each band as its file declares it, else the series' scaling (the user's, or the default for its type)
        scaling = np.array([[la.scaling or (self.scale, self.offset) for la in s.layers] for s in scenes], np.float32)
        values *= scaling[:, :, 0, None, None]
        values += scaling[:, :, 1, None, None]
        for k, scene in enumerate(scenes):
            if scene.mask is not None and k not in skip:
                out[k, nb] = to_quality(out[k, nb], lookup_table(scene.convention) if scene.convention else self.lut)
        return out


def scaling(dtype, sample, scale_factor=None, offset=None) -> tuple[float, float]:
    """``(scale, offset)`` taking file values to 0..1 reflectance: given values win; 8-bit rasters (RGB aerial or
    drone images: no reflectance product is stored in 8 bits) are / 255, as image pairs are; other integer
    rasters, and float rasters whose 99th percentile (of ``sample()``, a few thousand values) exceeds 2, are
    x 10000."""
    offset = float(offset or 0.0)
    if scale_factor is not None:
        return float(scale_factor), offset
    if np.dtype(dtype) == np.uint8:  # (as x 10000 they read 0..0.0255: darker than any land for the cloud screen)
        return 1.0 / 255.0, offset
    if np.issubdtype(np.dtype(dtype), np.integer):
        return DEFAULT_SCALE, offset
    values = np.asarray(sample(), dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    large = values.size and np.percentile(values, 99) > _FLOAT_SCALED_ABOVE
    return (DEFAULT_SCALE if large else 1.0), offset


def _check_masks(scenes, lut, most_dates: int = 3) -> None:
    """Refuse masks whose values their convention does not read (:func:`.masks.check_values`), from a decimated
    read of the first, middle and last dates' masks: an HLS ``Fmask`` (bit flags: clear land is 64) read by the
    classic Fmask codes made every pixel of the series nodata, and the run stopped at "too few clear pixels"."""
    masked = [s for s in scenes if s.mask]
    if not masked:
        return
    picks = sorted({0, len(masked) // 2, len(masked) - 1})[:most_dates]
    for s in (masked[i] for i in picks):
        convention = s.convention or convention_of(lut)
        if not convention:
            continue
        try:
            values = sample_raster(s.mask.path, s.mask.index)  # (the file's own nodata as NaN, left out)
        except RasterioError as exc:  # (its header read, its pixels not: a truncated file)
            raise SourceError(f"cannot read the mask: {exc}", shown(s.mask.path)) from None
        check_values(values, convention, shown(s.mask.path))


def sample_raster(path: str, index: int, nodata: float | None = None) -> np.ndarray:
    """A decimated read (about 256 x 256 values, nodata as NaN) of one band, to decide the scaling or check a
    mask's values; ``nodata``: a value declared beside the file (:attr:`Layer.nodata`), NaN too where the file
    declares none."""
    with network(path), rasterio.open(path) as src:
        step = max(1, max(src.shape) // 256)
        out_shape = (max(1, src.height // step), max(1, src.width // step))
        values = src.read(index, out_shape=out_shape, masked=True).astype(np.float64).filled(np.nan)
        if nodata is not None and src.nodata is None:
            values[values == (np.float32(nodata) if src.dtypes[index - 1] == "float32" else nodata)] = np.nan  # (as stored)
        return values


def open_scenes(scenes, bands, *, source, grid, patch_size, chunks, lut=None, scale_factor=None, offset=None, level=None):
    """The SeriesCube of file-backed ``scenes`` (shared by the GeoTIFF folder and stacked sources)."""
    if not bands:
        raise SourceError("has no reflectance band (only a mask)", source)
    scenes = sorted(scenes, key=lambda s: s.time)
    layers = [layer for s in scenes for layer in s.layers]
    files = sorted({layer.path for layer in layers} | {s.mask.path for s in scenes if s.mask})
    infos = {f: probe(f) for f in files}
    first = min((infos[layer.path] for layer in scenes[0].layers), key=lambda i: i.resolution[0])
    footprints = {(infos[layer.path].crs, infos[layer.path].bounds) for layer in layers}
    _check_files(scenes, infos, first, grid)
    _check_masks(scenes, lut)
    out = resolve_grid(grid, first, sorted(footprints), patch_size)
    head, sample = _sampled_head(scenes, infos) if scale_factor is None else (scenes[0].layers[0], None)
    scale, off = scaling(infos[head.path].dtype, lambda: np.zeros(0) if sample is None else sample, scale_factor, offset)
    declared = {}
    if scale_factor is None and offset is None:  # what the files declare wins over the default; the user's over both
        scenes = [replace(s, layers=tuple(replace(la, scaling=la.scaling or infos[la.path].declared_scaling(la.index))
                                          for la in s.layers))
                  for s in scenes]
        dated = {t: [la for s in tiles for la in s.layers] for t, tiles in by_time(scenes).items()}  # all its tiles' layers
        declared = {f"{t:%Y-%m-%d}": list(layers[0].scaling) for t, layers in dated.items() if all(la.scaling for la in layers)}
        partly = next(((t, layers) for t, layers in dated.items()
                       if any(la.scaling for la in layers) and not all(la.scaling for la in layers)), None)
        if partly is not None:  # (its undeclared bands would take neither their own scaling nor the radiometry rule)
            odd = next(la for la in partly[1] if not la.scaling)
            raise SourceError(f"declares no scale and offset (GDAL band metadata) while other bands or tiles of its date "
                              f"({partly[0]:%Y-%m-%d}) do; declare them for every band (gdal_edit.py -scale S -offset O), "
                              "or give the scaling of all with scale_factor= and offset=", shown(odd.path))
        if len(declared) == len(dated) and len({tuple(v) for v in declared.values()}) == 1:
            scale, off = next(iter(declared.values()))
        elif (np.dtype(infos[head.path].dtype).kind == "f"  # (the head's own scaling, given or declared, is none)
              and not (head.scaling or infos[head.path].declared_scaling(head.index))):
            _check_float_scaling(scenes, infos, head, scale, off)
    source = Path(source).resolve()
    attrs = {
        "label": source.name if source.is_dir() else source.stem,
        "source": str(source),
        "source_files": files,
        # what radiometry must not read a product (and its offset) from: a mask file's name is not the image's
        "mask_files": sorted({s.mask.path for s in scenes if s.mask} - {layer.path for layer in layers}),
        # a quality mask was read (a band or files): the auto cloud screen trusts it, clear as it may be
        "quality_mask": any(s.mask for s in scenes),
        # which dates it was read for: the auto screen still screens those without one (a folder mixing L1C
        # products, which have no SCL, with L2A ones; a review)
        "masked_dates": [all(bool(s.mask) for s in tiles) for tiles in by_time(scenes).values()],  # (per date: its tiles')
        "level": level_of([s.name for s in scenes], level),
        # files off the grid's own pixels (another CRS, pixel size or origin): read resampled (bilinear), and said
        "resampled_files": sorted({la.path for la in layers if aligned_offset(infos[la.path], out.crs, out.affine, out.shape) is None}),
        "scale_factor": scale,
        "offset": off,
        "storage": storage(infos[head.path].dtype),  # how the first date stores its values (integers, floats)
        # dates whose files declare their own (scale, offset): read with it (radiometry applies no rule over it)
        "declared_scaling": declared,
        # files whose last band is an alpha band: read as where they have data, not as a band (and said)
        "alpha_files": sorted({la.path for la in layers if infos[la.path].alpha}),
    }
    series = WarpedSeries(scenes, len(bands), out, scale, off, lut)
    _check_tiles(series, source)
    heads = [tiles[0] for tiles in by_time(scenes).values()]  # each date's first tile
    platforms = [parse_platform(s.name) or "unknown" for s in heads]
    return build_cube(
        series, [s.time for s in heads], bands, out, chunks=chunks, attrs=attrs,
        time_coords={"platform": platforms} if set(platforms) != {"unknown"} else None,
    )


#: Tiles of one date that share more than this fraction of the smaller one's footprint are one scene twice
#: (bounding boxes on the grid: a tile from the next UTM zone looks larger than it is; Sentinel-2's 31TGM and
#: 32TLR, which share 43 % of their ground, share 48 % of their boxes).
MOSAIC_OVERLAP = 0.8


def by_time(scenes) -> dict:
    """``scenes`` by their time, in their order: one date's tiles (more than one scene of a time: mosaicked)."""
    out: dict = {}
    for s in scenes:
        out.setdefault(s.time, []).append(s)
    return out


def shared_fraction(a, b) -> float:
    """The share of the smaller of two ``(left, bottom, right, top)`` boxes that the other covers (0 apart)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return max(w, 0) * max(h, 0) / max(smaller, 1e-300)


def blank_zeros(values: np.ndarray, band_axis: int = 0) -> np.ndarray:
    """``values`` (float) with every band NaN where every band is 0: the unsaid NODATA of digital numbers
    (:attr:`RasterInfo.fills_with_zero`), in place."""
    values[np.broadcast_to((values == 0).all(axis=band_axis, keepdims=True), values.shape)] = np.nan
    return values


def _check_tiles(series: WarpedSeries, source) -> None:
    """:class:`SourceError` for scenes of one date (tiles, mosaicked) that cover much the same ground: one scene
    twice (reprocessed, or another product level), whose mosaic would hide which one was read. Tiles of one pass
    overlap by a margin (Sentinel-2's 10 km of 110). Their boxes on the grid are those the series reads them by."""
    for start, stop in series.dates:
        if stop - start < 2:
            continue
        tiles, time = series.scenes[start:stop], series.scenes[start].time
        boxes = [series.boxes[k] for k in range(start, stop)]
        for i in range(len(tiles)):
            for j in range(i + 1, len(tiles)):
                shared = shared_fraction(boxes[i], boxes[j])
                if shared > MOSAIC_OVERLAP:
                    a, b = (t.name or _name(t.layers[0].path) for t in (tiles[i], tiles[j]))
                    single = all(len(t.layers) == 1 for t in (tiles[i], tiles[j]))  # bands of one image, unnamed?
                    raise SourceError(f"has two images of {time:%Y-%m-%d} over the same ground ({a} and {b}: "
                                      f"{100 * min(shared, 1):.0f} % of the smaller one): one scene twice? Keep one "
                                      "(tiles of one date are mosaicked where they meet, not where they repeat)"
                                      + ("; if they are bands of one image, end their names with a band suffix: _B04, "
                                         "_B8A, _SR_B4, _SCL, _Fmask, _QA_PIXEL, then perhaps a resolution, _10m" if single else ""),
                                      source)


#: How a raster stores its values, as :func:`scaling` reads them (in the order the error names them).
_STORAGES = ("integers", "8-bit integers", "floats")


def storage(dtype) -> str:
    """How values of ``dtype`` are stored, in words: 8-bit integers, integers or floats."""
    dtype = np.dtype(dtype)
    return "8-bit integers" if dtype == np.uint8 else "integers" if dtype.kind in "iub" else "floats"


def _sampled_head(scenes, infos: dict):
    """``(layer, sample)``: the first layer (by date, then band) of a float series whose decimated sample
    (:func:`sample_raster`) holds data, which decides the scaling, and that sample; the first layer and ``None``
    for integer storage (its scaling needs no sample) or when no layer holds data. A stacked file of reflectance
    x 10000 whose first date is empty (or a blue band missing there) was read as 0..1 from the empty sample: every
    date 10 000 times too bright, and the run went on (a review)."""
    first = scenes[0].layers[0]
    if np.dtype(infos[first.path].dtype).kind != "f":
        return first, None
    for layer in (la for s in scenes for la in s.layers):
        values = sample_raster(layer.path, layer.index, layer.nodata)
        if np.isfinite(values).any():
            return layer, values
    return first, None


def _check_float_scaling(scenes, infos: dict, head, scale: float, offset: float) -> None:
    """:class:`SourceError` for a float series whose dates are stored at different scales (0..1 reflectance in
    one, x 10000 in another): one scaling, read from the first date with data (``head``, the layer that decided
    ``scale``), was applied to all, and the run went on (exit 0) with a date 10 000 times too bright. Dates whose
    files declare their own scaling are left out."""
    for s in scenes:
        layer = s.layers[0]
        # (the dates of one stacked file are stored alike; a band with no data tells nothing, and read as 0..1)
        if layer.scaling or layer.path == head.path or np.dtype(infos[layer.path].dtype).kind != "f":
            continue
        values = sample_raster(layer.path, layer.index, layer.nodata)
        if not np.isfinite(values).any():
            continue
        own, _ = scaling(infos[layer.path].dtype, lambda: values, None, offset)
        if own != scale:
            stored = {1.0: "0..1 reflectance", DEFAULT_SCALE: "reflectance x 10000"}
            raise SourceError(f"holds {stored.get(own, own)} (as floats) while {_name(head.path)}, the first date with data, holds "
                              f"{stored.get(scale, scale)}: one scaling is read for every date; store them alike, declare "
                              "each file's own (gdal_edit.py -scale 0.0001 on those x 10000), or run them apart", shown(layer.path))


def _check_files(scenes, infos: dict, first: RasterInfo, grid) -> None:
    """:class:`SourceError` for files that cannot make one series: reflectance stored both as floats and as
    integers (one scaling is read from the first file: a date of 0..1 floats among x10000 integers looked
    wholly changed), and, on the grid drawn around every file, a date that overlaps no other (a file of
    another place, or in another UTM zone by mistake: the grid spanning both took the memory for ever)."""
    kinds = {}
    for s in scenes:
        for layer in s.layers:
            if np.dtype(infos[layer.path].dtype).kind == "c":  # (cast to real with a ComplexWarning, exit 0)
                raise SourceError(f"holds complex values ({infos[layer.path].dtype}), not reflectance", shown(layer.path))
            kinds.setdefault(storage(infos[layer.path].dtype), layer.path)
    if len(kinds) > 1:  # (8-bit images are / 255, other integers x 1e-4: a uint8 date among uint16 ones read 40 x darker)
        (a, pa), (b, pb) = sorted(kinds.items(), key=lambda kv: _STORAGES.index(kv[0]))[:2]
        raise SourceError(f"mixes reflectance stored as {a} ({_name(pa)}: {infos[pa].dtype}) and as {b} "
                          f"({_name(pb)}: {infos[pb].dtype}); one scaling is read for every date: store them alike, "
                          "or run them apart", shown(pb).rsplit("/", 1)[0] if is_remote(pb) else Path(pb).parent)
    spec = as_grid(grid)
    if len(scenes) < 2 or isinstance(spec, OutputGrid) or spec.bounds is not None:
        return
    crs = spec.crs or first.crs
    footprints = sorted({(infos[la.path].crs, infos[la.path].bounds) for s in scenes for la in s.layers})
    box_of = dict(zip(footprints, _boxes(footprints, crs)))  # each footprint transformed once
    dates = by_time(scenes)  # the tiles of a date are one footprint
    if len(dates) < 2:
        return
    boxes = np.array([_union(np.array([box_of[(infos[la.path].crs, infos[la.path].bounds)] for s in tiles for la in s.layers]))
                      for tiles in dates.values()])
    for i, tiles in enumerate(dates.values()):
        others = np.delete(boxes, i, axis=0)
        if not _intersects(boxes[i], others).any():
            path = tiles[0].layers[0].path
            raise SourceError(f"overlaps no other date of the series (in {crs}: {_bounds_text(boxes[i], crs)} against "
                              f"{_bounds_text(_union(others), crs)} for the others, left, bottom, right, top; its CRS "
                              f"is {infos[path].crs}): a file of another place?", path)


def build_cube(array, times, bands, grid: OutputGrid, *, chunks: int, attrs: dict, time_coords=None):
    """Wrap an array-like ``(time, band + 1, y, x)`` whose last band is the quality class into a SeriesCube:
    chunks of ``chunks`` px a side and one date each, or the runs of ``array.time_chunks(chunks)`` when it has them."""
    if not isinstance(chunks, (int, np.integer)) or isinstance(chunks, bool) or chunks < 1:
        raise ConfigError(f"chunks must be a positive number of pixels, got {chunks!r}")
    per_time = array.time_chunks(int(chunks)) if hasattr(array, "time_chunks") else 1
    full = da.from_array(
        array, chunks=(per_time, -1, chunks, chunks), name=f"{type(array).__name__}-{tokenize(array, chunks, per_time)}",
        lock=False, meta=np.empty((0, 0, 0, 0), np.float32),
    )
    nb = len(bands)
    cube = make_cube(full[:, :nb], times, bands, grid, quality=full[:, nb].astype(np.uint8), attrs=attrs, time_coords=time_coords)
    return validate_cube(cube)


def level_of(names, given: str | None) -> str:
    """Processing level: ``given``, else the one level the names agree on, ``"mixed"`` or ``"unknown"``."""
    if given:
        return str(given)
    levels = {lv for lv in map(parse_level, names) if lv}
    return levels.pop() if len(levels) == 1 else ("mixed" if levels else "unknown")
