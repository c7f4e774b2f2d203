"""Spectral cloud and haze screening for series that come without a quality mask.

The haze-optimised transform (HOT; Zhang, Guindon & Cihlar 2002, also the first pass of Fmask) flags pixels
whose blue reflectance is high for their red: ``blue - 0.5 * red - 0.08 > 0``. Clear land, water, bare soil
and bright roofs stay below it; clouds and thick haze rise above it. Flags are dilated by a few pixels to
take cloud edges (as Fmask dilates its masks). Pixels that a mask already classifies are left alone.
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


def _screen_block(blue: np.ndarray, red: np.ndarray, quality: np.ndarray, offset: float, dilate: int) -> np.ndarray:
    hot = (blue - 0.5 * red - offset) > 0
    if dilate:
        structure = np.ones((1, 2 * dilate + 1, 2 * dilate + 1), bool)
        hot = ndimage.binary_dilation(hot, structure=structure)
    return np.where(hot & (quality == Quality.CLEAR), np.uint8(Quality.CLOUD), quality).astype(np.uint8)


def screen_haze(cube: xr.DataArray, offset: float = 0.08, dilate: int = 3) -> xr.DataArray:
    """A copy of ``cube`` whose ``quality`` marks HOT-flagged clear pixels as CLOUD (lazy, blockwise)."""
    bands = [str(b) for b in cube["band"].values]
    ib, ir = _find(bands, BLUE), _find(bands, RED)
    if ib is None or ir is None:
        return cube
    data = da.asarray(cube.data)
    q = da.asarray(cube["quality"].data)
    blue, red = data[:, ib].rechunk({0: 1}), data[:, ir].rechunk({0: 1})
    chunks = blue.chunks
    q = q.rechunk(chunks)
    screened = da.map_overlap(_screen_block, blue, red, q, depth={0: 0, 1: dilate, 2: dilate}, boundary="none",
                              dtype=np.uint8, offset=offset, dilate=dilate)
    out = cube.assign_coords(quality=(("time", "y", "x"), screened))
    out.attrs = {**cube.attrs, "cloud_screen": f"HOT > {offset}, dilated {dilate} px"}
    return out
