"""Quality masks: map the classes of a mask band (Fmask, Sentinel-2 SCL) to :class:`~changescout.cube.Quality`.

Conventions:

* ``fmask``: 0 clear land, 1 water, 2 cloud shadow, 3 snow, 4 cloud, 255 fill;
* ``scl`` (Sentinel-2 Scene Classification): 0 nodata and 1 saturated -> nodata, 2 dark area and 3 cloud shadow
  -> shadow, 4 vegetation, 5 bare soil and 7 unclassified -> clear, 6 water, 8/9 cloud and 10 cirrus -> cloud,
  11 snow;
* ``quality``: the values already are changescout :class:`Quality` classes (0..5);
* ``qa_pixel`` (Landsat Collection 2 ``QA_PIXEL``, 16 bit flags): bit 0 fill -> nodata; bit 1 dilated cloud,
  2 cirrus or 3 cloud -> cloud; 4 cloud shadow -> shadow; 5 snow -> snow; 7 water -> water; 6 clear -> clear;
  no flag at all (0: a warped file's empty pixels) -> nodata.

Any other value and pixels outside the mask's footprint become ``NODATA``. The mask file's own nodata value is
read by the convention as any other value (Fmask's 255, SCL's 0 and QA_PIXEL's fill bit are nodata there): a
GeoTIFF has one nodata value for all its bands, and a reflectance nodata of 0 is Fmask's clear land.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from ..cube import Quality
from ..errors import SourceError

_Q = Quality
_TABLES = {
    "fmask": {0: _Q.CLEAR, 1: _Q.WATER, 2: _Q.SHADOW, 3: _Q.SNOW, 4: _Q.CLOUD},
    "scl": {2: _Q.SHADOW, 3: _Q.SHADOW, 4: _Q.CLEAR, 5: _Q.CLEAR, 6: _Q.WATER, 7: _Q.CLEAR,
            8: _Q.CLOUD, 9: _Q.CLOUD, 10: _Q.CLOUD, 11: _Q.SNOW},
    "quality": {int(q): q for q in Quality},
}
CONVENTIONS = (*_TABLES, "qa_pixel")

#: Band or file-name suffixes that mark a mask rather than a reflectance band.
_MASK_NAME = re.compile(r"^(fmask|scl|qa|qa_pixel|mask|cloud_?mask|quality)$", re.I)


def is_mask_name(name: str) -> bool:
    """Whether a band named ``name`` is a quality mask (``fmask``, ``SCL``, ``qa``, ``mask``...)."""
    return bool(_MASK_NAME.match(str(name)))


def convention_for(name: str, given: str | None, where: str) -> str:
    """The mask convention: ``given`` when set, else inferred from the band or file ``name``."""
    conv = (given or "").lower() or infer_convention(name)
    if conv not in CONVENTIONS:
        if given:
            raise SourceError(f"unknown mask convention {given!r}; use one of {list(CONVENTIONS)}", where)
        raise SourceError(
            f"cannot tell the convention of the mask {name!r} from its name; "
            f"pass --mask-convention, one of {list(CONVENTIONS)}",
            where,
        )
    return conv


def infer_convention(name: str) -> str:
    """The convention a band or file name says (``..._QA_PIXEL``, ``..._Fmask``, ``..._SCL``), or ``""``."""
    low = str(name).lower()
    if "qa_pixel" in low:
        return "qa_pixel"
    if "fmask" in low:
        return "fmask"
    if "scl" in low:
        return "scl"
    return ""


@functools.cache
def lookup_table(convention: str) -> np.ndarray:
    """A uint8 table from mask value to quality class (unlisted values -> NODATA): 256 entries, or 65 536 for
    the 16 bit flags of ``qa_pixel`` (one read-only table per convention, shared)."""
    if convention == "qa_pixel":
        v = np.arange(1 << 16)
        bit = lambda i: (v >> i) & 1 == 1  # noqa: E731
        lut = np.select([bit(0), bit(1) | bit(2) | bit(3), bit(4), bit(5), bit(7), bit(6)],
                        [_Q.NODATA, _Q.CLOUD, _Q.SHADOW, _Q.SNOW, _Q.WATER, _Q.CLEAR], _Q.NODATA).astype(np.uint8)
    else:
        lut = np.full(256, Quality.NODATA, dtype=np.uint8)
        for value, quality in _TABLES[convention].items():
            lut[value] = quality
    lut.flags.writeable = False
    return lut


def to_quality(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map raw mask values (float, NaN where no data) to quality classes with ``lut``."""
    valid = np.isfinite(values) & (values >= 0) & (values < len(lut)) & (values == np.round(values))
    idx = np.where(valid, values, 0).astype(np.intp)
    return np.where(valid, lut[idx], np.uint8(Quality.NODATA)).astype(np.uint8)
