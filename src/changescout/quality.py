"""Spectral cloud and haze screening for series that come without a quality mask.

The haze-optimised transform (HOT; Zhang, Guindon & Cihlar 2002, also the first pass of Fmask) flags pixels
whose blue reflectance is high for their red: ``blue - 0.5 * red - 0.08 > 0``. Clear land, water, bare soil
and bright roofs stay below it; clouds and thick haze rise above it. Flags are dilated by a few pixels to
take cloud edges (as Fmask dilates its masks). Pixels that a mask already classifies are left alone.

A fixed threshold misses thin clouds over dark vegetation, so a temporal test (in the manner of Tmask's
multi-temporal screening, Zhu & Woodcock 2014) also flags a pixel whose HOT stands ``spike`` above that of
both its neighbouring dates (for the first date: the next two). The last date has no later date to tell a
cloud from a new bright surface (a construction site), so it only gets the fixed threshold.

:func:`fill_gaps` then gives the encoder, for each masked pixel, the value of the nearest usable date of that
pixel, so that a patch partly under a cloud or outside a scene's footprint at one date does not look changed.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from .cube import Quality

BLUE = ("B02", "blue", "B1_blue", "SR_B2")
RED = ("B04", "red", "SR_B4")


def _find(bands: list[str], names) -> int | None:
    upper = {b.upper(): i for i, b in enumerate(bands)}
    for n in names:
        if n.upper() in upper:
            return upper[n.upper()]
    return None


def can_screen(cube: xr.DataArray) -> bool:
    bands = [str(b) for b in cube["band"].values]
    return _find(bands, BLUE) is not None and _find(bands, RED) is not None


def temporal_spikes(hot: np.ndarray, spike: float) -> np.ndarray:
    """``(time, h, w)`` HOT values -> pixels whose HOT exceeds both neighbouring dates' by more than ``spike``
    (first date: the next two; the last date is never flagged). NaN never flags."""
    out = np.zeros(hot.shape, bool)
    T = len(hot)
    if T < 3:
        return out
    with np.errstate(invalid="ignore"):
        for t in range(T - 1):
            a, b = (hot[1], hot[2]) if t == 0 else (hot[t - 1], hot[t + 1])
            out[t] = hot[t] - np.fmax(a, b) > spike
    return out


_PER_DATE = np.array([np.zeros((3, 3)), np.ones((3, 3)), np.zeros((3, 3))], bool)  # 8-connected, never across dates


def grow(core: np.ndarray, weak: np.ndarray, min_core: int = 64) -> np.ndarray:
    """Hysteresis per date: ``core`` plus the 8-connected regions of ``weak`` that hold a core region of at
    least ``min_core`` px (a cloud; the few bright pixels of a roof or a road do not grow)."""
    labels, n = ndimage.label(core, structure=_PER_DATE)
    if n == 0:
        return core
    sizes = np.bincount(labels.ravel())
    big = (sizes >= min_core)[labels] & core
    weak_labels, _ = ndimage.label(weak | big, structure=_PER_DATE)
    keep = np.unique(weak_labels[big])
    return core | np.isin(weak_labels, keep[keep > 0])


def _screen_block(blue: np.ndarray, red: np.ndarray, quality: np.ndarray, offset: float, dilate: int,
                  spike: float | None = None, edge: float | None = None) -> np.ndarray:
    index = blue - 0.5 * red
    with np.errstate(invalid="ignore"):
        hot = (index - offset) > 0
        if spike is not None:
            hot |= temporal_spikes(index, spike)
        if edge is not None:
            hot = grow(hot, index > edge)
    if dilate:
        structure = np.ones((1, 2 * dilate + 1, 2 * dilate + 1), bool)
        hot = ndimage.binary_dilation(hot, structure=structure)
    return np.where(hot & (quality == Quality.CLEAR), np.uint8(Quality.CLOUD), quality).astype(np.uint8)


def screen_haze(cube: xr.DataArray, offset: float = 0.08, dilate: int = 3, spike: float | None = 0.03,
                edge: float | None = 0.04) -> xr.DataArray:
    """A copy of ``cube`` whose ``quality`` marks HOT-flagged clear pixels as CLOUD (lazy, blockwise).

    ``spike``: the temporal test's margin (None: the fixed threshold only); it needs every date of a pixel in
    one block, so the screen then works on all dates at once, in spatial blocks."""
    bands = [str(b) for b in cube["band"].values]
    ib, ir = _find(bands, BLUE), _find(bands, RED)
    if ib is None or ir is None:
        return cube
    data = da.asarray(cube.data)
    q = da.asarray(cube["quality"].data)
    time_chunks = {0: -1} if spike is not None else {0: 1}
    blue, red = data[:, ib].rechunk(time_chunks), data[:, ir].rechunk(time_chunks)
    chunks = blue.chunks
    q = q.rechunk(chunks)
    screened = da.map_overlap(_screen_block, blue, red, q, depth={0: 0, 1: dilate, 2: dilate}, boundary="none",
                              dtype=np.uint8, offset=offset, dilate=dilate, spike=spike, edge=edge)
    out = cube.assign_coords(quality=(("time", "y", "x"), screened))
    rule = f"HOT > {offset}" + (f" or {spike} above both neighbouring dates" if spike is not None else "")
    rule += f", grown over HOT > {edge}" if edge is not None else ""
    out.attrs = {**cube.attrs, "cloud_screen": f"{rule}, dilated {dilate} px"}
    return out


def fill_gaps(values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """``(time, band, h, w)`` with ``usable (time, h, w)`` -> each unusable pixel takes the value of the nearest
    earlier usable date of that pixel (the nearest later one before the first); pixels usable at no date become
    NaN. A copy when anything is filled; ``values`` itself when every pixel is usable."""
    if usable.all():
        return values
    T = len(values)
    steps = np.arange(T)[:, None, None]
    prev = np.maximum.accumulate(np.where(usable, steps, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(usable, steps, T)[::-1], axis=0)[::-1]
    t, y, x = np.nonzero(~usable)
    src = np.where(prev[t, y, x] >= 0, prev[t, y, x], nxt[t, y, x])
    found = src < T
    out = values.astype(np.result_type(values, np.float32), copy=True)
    out[t[found], :, y[found], x[found]] = values[src[found], :, y[found], x[found]]
    out[t[~found], :, y[~found], x[~found]] = np.nan
    return out
