"""Lazy warping of raster files onto one output grid.

A source describes its series as :class:`Scene` objects (one per date: the file bands that hold its
reflectance bands and, optionally, its mask band). :func:`build_cube` turns them into a SeriesCube whose dask
chunks each warp one date over one spatial block with a rasterio ``WarpedVRT`` (bilinear for reflectance,
nearest for masks): GDAL reads only the source window a block needs, so memory is bounded by the chunk size.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from dask.base import tokenize
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds

from ..cube import OutputGrid, make_cube, validate_cube
from ..errors import ConfigError, SourceError
from .dates import parse_level, parse_platform
from .masks import to_quality

#: Integer rasters (and float rasters whose 99th percentile exceeds this) are reflectance x 10000.
DEFAULT_SCALE = 1e-4
_FLOAT_SCALED_ABOVE = 2.0


@dataclass(frozen=True)
class Layer:
    """One band (1-based ``index``) of one raster file."""

    path: str
    index: int = 1


@dataclass(frozen=True)
class Scene:
    """One date: the layers of its reflectance bands, in band order, and an optional mask layer."""

    time: pd.Timestamp
    layers: tuple[Layer, ...]
    mask: Layer | None = None
    name: str = ""


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

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return rasterio.transform.array_bounds(*self.shape, self.transform)

    @property
    def resolution(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)


@lru_cache(maxsize=4096)
def _probe(path: str, mtime: float) -> RasterInfo:
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise SourceError("the raster has no CRS; write one (e.g. gdal_edit.py -a_srs EPSG:32631)", path)
            if src.transform.b or src.transform.d:
                raise SourceError("rotated rasters are not supported; warp it north-up first", path)
            return RasterInfo(path, src.crs.to_string(), src.transform, src.shape, src.count, src.dtypes[0], src.descriptions)
    except RasterioError as exc:
        raise SourceError(f"not a readable raster ({exc})", path) from exc


def probe(path: str | os.PathLike) -> RasterInfo:
    """Read a raster's header; :class:`SourceError` naming the file if it is unreadable or has no CRS."""
    path = os.path.abspath(path)
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
        return cls(crs, numbers[0] if numbers else None, tuple(numbers[1:]) or None)


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


def resolve_grid(grid, first: RasterInfo, footprints, patch_size: int) -> OutputGrid:
    """The output grid: the CRS and resolution of ``first`` (the first date) unless ``grid`` sets them, and
    the union of ``footprints`` (``(crs, bounds)`` pairs) unless it sets the bounds.

    The origin is snapped to whole patches (``OutputGrid.from_bounds(..., snap=patch_size * res)``) on a
    lattice that keeps the pixel phase of ``first`` when the grid has its CRS and resolution: a Landsat grid
    at ``x = 15 + 30 k`` stays on it rather than being resampled by half a pixel.
    """
    spec = as_grid(grid)
    if isinstance(spec, OutputGrid):
        return spec
    crs = spec.crs or first.crs
    same_crs = CRS.from_user_input(crs) == CRS.from_user_input(first.crs)
    if spec.resolution:
        res = (spec.resolution, spec.resolution)
    elif same_crs:
        res = first.resolution
    else:
        t, _, _ = calculate_default_transform(first.crs, crs, first.shape[1], first.shape[0], *first.bounds)
        res = (abs(t.a), abs(t.e))
    if spec.bounds:
        bounds = spec.bounds
    else:
        boxes = np.array([transform_bounds(c, crs, *b, densify_pts=21) for c, b in footprints])
        bounds = (*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0))
    px, py = (first.transform.c % res[0], first.transform.f % res[1]) if same_crs and res == first.resolution else (0, 0)
    left, bottom, right, top = bounds
    out = OutputGrid.from_bounds(crs, res, (left - px, bottom - py, right - px, top - py), snap=patch_size * res[0])
    a, b, c, d, e, f = out.transform
    return OutputGrid(out.crs, (a, b, c + px, d, e, f + py), out.shape)


# -- reading -------------------------------------------------------------------------------------------
def read_warped(path: str, indexes, crs: str, transform: Affine, shape, resampling: Resampling) -> np.ndarray:
    """Bands ``indexes`` of ``path`` warped onto ``(crs, transform, shape)``: float32, NaN where no data."""
    try:
        with rasterio.open(path) as src, WarpedVRT(
            src, crs=crs, transform=transform, height=shape[0], width=shape[1],
            resampling=resampling, dtype="float32", nodata=np.nan,
        ) as vrt:
            return vrt.read(list(indexes), masked=True).filled(np.nan).astype(np.float32, copy=False)
    except RasterioError as exc:
        raise SourceError(f"cannot read the raster ({exc})", path) from exc


class WarpedSeries:
    """Array-like ``(time, band + 1, y, x)`` view of scenes on a grid; the last band holds the quality class.

    Dask calls ``__getitem__`` once per chunk, which warps only that block.
    """

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(self, scenes, n_bands: int, grid: OutputGrid, scale: float, offset: float, lut):
        self.scenes, self.n_bands, self.grid = tuple(scenes), n_bands, grid
        self.scale, self.offset, self.lut = scale, offset, lut
        self.shape = (len(self.scenes), n_bands + 1, *grid.shape)

    def __dask_tokenize__(self):
        return tokenize(self.scenes, self.n_bands, self.grid, self.scale, self.offset, None if self.lut is None else self.lut.tobytes())

    def __getitem__(self, key):
        t, b, ys, xs = (range(*k.indices(n)) for k, n in zip(key, self.shape))
        return np.stack([self._read(self.scenes[i], ys, xs) for i in t])[:, b.start : b.stop : b.step]

    def _read(self, scene: Scene, ys: range, xs: range) -> np.ndarray:
        shape = (len(ys), len(xs))
        transform = self.grid.affine @ Affine.translation(xs.start, ys.start)
        out = np.empty((self.n_bands + 1, *shape), np.float32)
        by_file: dict[str, list[tuple[int, int]]] = {}
        for pos, layer in enumerate(scene.layers):
            by_file.setdefault(layer.path, []).append((pos, layer.index))
        for path, items in by_file.items():
            pos, idx = zip(*items)
            out[list(pos)] = read_warped(path, idx, self.grid.crs, transform, shape, Resampling.bilinear)
        out[: self.n_bands] = out[: self.n_bands] * self.scale + self.offset
        if scene.mask is None:
            out[-1] = 0  # Quality.CLEAR; make_cube marks NaN pixels NODATA
        else:
            raw = read_warped(scene.mask.path, [scene.mask.index], self.grid.crs, transform, shape, Resampling.nearest)
            out[-1] = to_quality(raw[0], self.lut)
        return out


def scaling(dtype, sample, scale_factor=None, offset=None) -> tuple[float, float]:
    """``(scale, offset)`` taking file values to 0..1 reflectance: given values win; integer rasters, and float
    rasters whose 99th percentile (of ``sample()``, a few thousand values) exceeds 2, are x 10000."""
    offset = float(offset or 0.0)
    if scale_factor is not None:
        return float(scale_factor), offset
    if np.issubdtype(np.dtype(dtype), np.integer):
        return DEFAULT_SCALE, offset
    values = np.asarray(sample(), dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    large = values.size and np.percentile(values, 99) > _FLOAT_SCALED_ABOVE
    return (DEFAULT_SCALE if large else 1.0), offset


def sample_raster(path: str, index: int) -> np.ndarray:
    """A decimated read (about 256 x 256 values, nodata as NaN) of one band, to decide the scaling."""
    with rasterio.open(path) as src:
        step = max(1, max(src.shape) // 256)
        out_shape = (max(1, src.height // step), max(1, src.width // step))
        return src.read(index, out_shape=out_shape, masked=True).astype(np.float64).filled(np.nan)


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
    out = resolve_grid(grid, first, sorted(footprints), patch_size)
    head = scenes[0].layers[0]
    scale, off = scaling(infos[head.path].dtype, lambda: sample_raster(head.path, head.index), scale_factor, offset)
    source = Path(source).resolve()
    attrs = {
        "label": source.name if source.is_dir() else source.stem,
        "source": str(source),
        "source_files": files,
        "level": level_of([s.name for s in scenes], level),
        "scale_factor": scale,
        "offset": off,
    }
    platforms = [parse_platform(s.name) or "unknown" for s in scenes]
    series = WarpedSeries(scenes, len(bands), out, scale, off, lut)
    return build_cube(
        series, [s.time for s in scenes], bands, out, chunks=chunks, attrs=attrs,
        time_coords={"platform": platforms} if set(platforms) != {"unknown"} else None,
    )


def build_cube(array, times, bands, grid: OutputGrid, *, chunks: int, attrs: dict, time_coords=None):
    """Wrap an array-like ``(time, band + 1, y, x)`` whose last band is the quality class into a SeriesCube."""
    if not isinstance(chunks, (int, np.integer)) or isinstance(chunks, bool) or chunks < 1:
        raise ConfigError(f"chunks must be a positive number of pixels, got {chunks!r}")
    full = da.from_array(
        array, chunks=(1, -1, chunks, chunks), name=f"{type(array).__name__}-{tokenize(array, chunks)}",
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
