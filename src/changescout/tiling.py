"""The patch grid: patch ``(row, col)`` <-> patch polygon in the series CRS.

Patches are ``patch_size`` x ``patch_size`` pixels, non-overlapping (stride = patch size), counted from the
grid origin (top-left). Because the output grid origin is snapped to whole patches, a patch index names the
same ground footprint whatever the file order or the chunking.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import shapely

from .cube import OutputGrid
from .errors import ConfigError, GridError


def pack_footprint(covered: np.ndarray, p: int) -> np.ndarray:
    """``covered (h, w)`` -> ``(h/p, w/p, ceil(p*p/8))`` uint8: which pixels of each ``p`` px patch the images
    cover, row by row, as bits (:func:`numpy.packbits`; :func:`unpack_footprint` reads them back)."""
    h, w = covered.shape
    cells = covered.reshape(h // p, p, w // p, p).transpose(0, 2, 1, 3).reshape(h // p, w // p, p * p)
    return np.packbits(cells, axis=-1)


def unpack_footprint(packed: np.ndarray, p: int) -> np.ndarray:
    """``(..., ceil(p*p/8))`` packed bits -> ``(..., p, p)`` booleans (:func:`pack_footprint`)."""
    bits = np.unpackbits(np.asarray(packed, np.uint8), axis=-1, count=p * p)
    return bits.reshape(*bits.shape[:-1], p, p).astype(bool)


def check_patch_size(patch_size) -> int:
    """``patch_size`` as an int, or a :class:`ConfigError`: a whole number of pixels >= 1 (a negative or
    fractional size snapped the grid and silently cropped the data)."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
        raise ConfigError(f"patch_size must be a positive integer number of pixels, got {patch_size!r}")
    return int(patch_size)


@dataclass(frozen=True)
class PatchGrid:
    """Non-overlapping square patches of ``patch_size`` pixels over an :class:`OutputGrid`."""

    grid: OutputGrid
    patch_size: int

    def __post_init__(self):
        check_patch_size(self.patch_size)
        h, w = self.grid.shape
        if h < self.patch_size or w < self.patch_size:
            raise GridError(
                f"the grid ({h}x{w} px) is smaller than one patch ({self.patch_size} px); use a smaller --patch-size"
            )

    @property
    def stride(self) -> int:
        return self.patch_size

    @property
    def shape(self) -> tuple[int, int]:
        """Number of patch rows and columns (incomplete patches at the bottom/right edges are dropped)."""
        h, w = self.grid.shape
        return h // self.patch_size, w // self.patch_size

    @property
    def n_patches(self) -> int:
        r, c = self.shape
        return r * c

    def pixel_window(self, row: int, col: int) -> tuple[slice, slice]:
        """The ``(y, x)`` pixel slices of patch ``(row, col)`` on the grid."""
        p = self.patch_size
        return slice(row * p, (row + 1) * p), slice(col * p, (col + 1) * p)

    def bounds(self, row, col) -> np.ndarray:
        """Patch bounds ``(left, bottom, right, top)``; broadcasts over arrays of rows and cols."""
        row, col = np.asarray(row), np.asarray(col)
        xres, yres = self.grid.resolution
        left0, top0 = self.grid.transform[2], self.grid.transform[5]
        size_x, size_y = xres * self.patch_size, yres * self.patch_size
        left = left0 + col * size_x
        top = top0 - row * size_y
        return np.stack([left, top - size_y, left + size_x, top], axis=-1)

    def polygons(self, row, col, footprint: np.ndarray | None = None) -> np.ndarray:
        """Shapely polygons of patches (array in, array out). Given ``footprint``, the packed ``(row, col, byte)``
        pixels the images cover (:func:`pack_footprint`; the EmbeddingCube's ``footprint``), a patch that the
        images do not wholly cover is cut to the pixels they do (at the images' edges, a snapped grid's patches
        reach past them)."""
        row, col = np.atleast_1d(row), np.atleast_1d(col)
        b = self.bounds(row, col)
        boxes = shapely.box(b[..., 0], b[..., 1], b[..., 2], b[..., 3])
        if footprint is None or len(row) == 0:
            return boxes
        footprint = np.asarray(footprint)
        full = np.packbits(np.ones(self.patch_size**2, bool))
        partial = ~(footprint[row, col] == full).all(axis=-1)
        cells = {}
        for r, c in set(zip(row[partial].tolist(), col[partial].tolist())):
            cells[r, c] = self._covered_polygon(r, c, unpack_footprint(footprint[r, c], self.patch_size))
        boxes[partial] = [cells[r, c] for r, c in zip(row[partial].tolist(), col[partial].tolist())]
        return boxes

    def _covered_polygon(self, row: int, col: int, covered: np.ndarray):
        """The union of the ``covered (p, p)`` pixels of patch ``(row, col)`` (the whole patch when none is: a
        patch the images cover too little of is never analysed)."""
        from rasterio.features import shapes
        from rasterio.transform import Affine

        if not covered.any():
            return self.polygons(row, col)[0]
        xres, yres = self.grid.resolution
        left, _, _, top = self.bounds(row, col)
        parts = [shapely.geometry.shape(g) for g, _ in shapes(covered.astype(np.uint8), mask=covered,
                                                               transform=Affine(xres, 0, left, 0, -yres, top))]
        return shapely.union_all(parts)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Patch-centre coordinates: ``x`` per column and ``y`` per row."""
        xres, yres = self.grid.resolution
        p = self.patch_size
        x = self.grid.transform[2] + xres * p * (np.arange(self.shape[1]) + 0.5)
        y = self.grid.transform[5] - yres * p * (np.arange(self.shape[0]) + 0.5)
        return x, y

    def locate(self, x: float, y: float) -> tuple[int, int]:
        """Patch ``(row, col)`` holding the point ``(x, y)`` given in the grid CRS."""
        if not (np.isfinite(x) and np.isfinite(y)):  # (NaN compares False: it was an internal error below)
            raise GridError(f"point ({x}, {y}) is not a place: X and Y must be finite numbers in {self.grid.crs}")
        xres, yres = self.grid.resolution
        col = int(np.floor((x - self.grid.transform[2]) / (xres * self.patch_size)))
        row = int(np.floor((self.grid.transform[5] - y) / (yres * self.patch_size)))
        nr, nc = self.shape
        left, top = self.grid.transform[2], self.grid.transform[5]
        b = (left, top - yres * self.patch_size * nr, left + xres * self.patch_size * nc, top)  # whole patches
        row, col = row - (row == nr and y == b[1]), col - (col == nc and x == b[2])  # on the bottom and right edges
        if not (0 <= row < nr and 0 <= col < nc):
            raise GridError(
                f"point ({x}, {y}) is outside the patch grid (bounds {b[0]:.1f}, {b[1]:.1f}, {b[2]:.1f}, {b[3]:.1f} in {self.grid.crs})"
                + _lonlat_hint(x, y, self.grid.crs, b)
            )
        return row, col


def _lonlat_hint(x: float, y: float, crs, bounds) -> str:
    """Where ``(x, y)`` would be in ``crs`` if they were a longitude and latitude (as the report prints them
    beside X, Y), or a latitude and longitude, when ``crs`` is a projected one; the ``--at`` to give where one
    of them falls within ``bounds``; "" otherwise."""
    from pyproj import CRS, Transformer

    try:
        projected = CRS.from_user_input(crs).is_projected
    except Exception:  # noqa: BLE001 - a pixel grid's CRS, or none
        return ""
    if not (projected and max(abs(x), abs(y)) <= 180 and min(abs(x), abs(y)) <= 90):
        return ""
    to_grid = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    inside = lambda p: bounds[0] <= p[0] <= bounds[2] and bounds[1] <= p[1] <= bounds[3]  # noqa: E731
    for lon, lat, reading in ((x, y, "longitude, latitude"), (y, x, "latitude, longitude")):
        if abs(lat) <= 90 and inside(p := to_grid.transform(lon, lat)):
            return (f"; X, Y are in the grid's CRS: read as {reading} this point is {p[0]:.1f},{p[1]:.1f} there "
                    f"(--at {p[0]:.1f},{p[1]:.1f})")
    return "; X, Y are in the grid's CRS (read as longitude, latitude, or latitude, longitude, the point is outside the grid too)"


# -- series and event ids ---------------------------------------------------------------------------
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_]+")
MAX_LABEL = 32  # characters of the readable part of a series id


def series_id(label: str, source_digest: str, grid: OutputGrid, patch_size: int) -> str:
    """``<label>_<hash>``: a readable label plus a short hash of the source and the patch grid. Accented
    letters lose their accents (``Données été`` -> ``Donnees_ete``, not ``Donn_es_t_``)."""
    plain = unicodedata.normalize("NFKD", str(label)).encode("ascii", "ignore").decode()
    clean = _LABEL_BAD.sub("_", plain).strip("_")[:MAX_LABEL] or "series"
    h = hashlib.sha256(f"{source_digest}|{grid.digest()}|{patch_size}".encode()).hexdigest()[:8]
    return f"{clean}_{h}"


def event_id(series: str, t0, t1, row: int, col: int) -> str:
    """``<series>-<t0 YYYYMMDD>-<t1 YYYYMMDD>-r<row>-c<col>``."""
    return f"{series}-{_ymd(t0)}-{_ymd(t1)}-r{int(row)}-c{int(col)}"


def event_ids(series: str, t0, t1, rows, cols) -> np.ndarray:
    """Stable event ids ``<series>-<t0 YYYYMMDD>-<t1 YYYYMMDD>-r<row>-c<col>`` (no ``:`` or ``/``), one per row."""
    t0s = [_ymd(t) for t in np.atleast_1d(t0)]
    t1s = [_ymd(t) for t in np.atleast_1d(t1)]
    return np.array([f"{series}-{a}-{b}-r{int(r)}-c{int(c)}" for a, b, r, c in zip(t0s, t1s, rows, cols)], dtype=object)


def parse_event_id(eid: str) -> dict:
    """Split an event id into ``series``, ``t0``, ``t1`` (YYYYMMDD strings), ``row`` and ``col``."""
    m = re.fullmatch(r"(?P<series>.+)-(?P<t0>\d{8})-(?P<t1>\d{8})-r(?P<row>\d+)-c(?P<col>\d+)", eid)
    if not m:
        raise GridError(f"{eid!r} is not an event id of the form <series>-<YYYYMMDD>-<YYYYMMDD>-r<row>-c<col>")
    d = m.groupdict()
    d["row"], d["col"] = int(d["row"]), int(d["col"])
    return d


def _ymd(t) -> str:
    return np.datetime64(t, "D").astype(str).replace("-", "")
