"""Quality masks: map the classes of a mask band (Fmask, Sentinel-2 SCL) to :class:`~changescout.cube.Quality`.

Conventions:

* ``fmask``: 0 clear land, 1 water, 2 cloud shadow, 3 snow, 4 cloud, 255 fill;
* ``scl`` (Sentinel-2 Scene Classification): 0 nodata and 1 saturated -> nodata, 2 dark area and 3 cloud shadow
  -> shadow, 4 vegetation, 5 bare soil and 7 unclassified -> clear, 6 water, 8/9 cloud and 10 cirrus -> cloud,
  11 snow;
* ``quality``: the values already are changescout :class:`Quality` classes (0..5);
* ``qa_pixel`` (Landsat Collection 2 ``QA_PIXEL``, 16 bit flags): bit 0 fill -> nodata; bit 1 dilated cloud,
  2 cirrus or 3 cloud -> cloud; 4 cloud shadow -> shadow; 5 snow -> snow; 7 water -> water; 6 clear -> clear;
  no flag at all (0: a warped file's empty pixels) -> nodata;
* ``hls`` (the ``Fmask`` layer of NASA's Harmonized Landsat Sentinel-2, HLS v2, 8 bit flags): 255 fill -> nodata;
  bit 0 cirrus, 1 cloud or 2 next to a cloud or its shadow -> cloud; 3 cloud shadow -> shadow; 4 snow or ice ->
  snow; 5 water -> water; else clear (bits 6-7, the aerosol level, are left aside: clear land reads 64). Its
  name says ``Fmask`` as the classic layer's does: ``HLS`` in a file or item name says which.

Any other value and pixels outside the mask's footprint become ``NODATA``; a mask most of whose pixels hold values
its convention does not list is refused (:func:`check_values`): read by the wrong convention, every pixel was
nodata, or SCL's vegetation snow. The mask file's own nodata value is
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
CONVENTIONS = (*_TABLES, "qa_pixel", "hls")

#: The values a convention reads as nodata on purpose (its fill), which :func:`check_values` does not count.
_FILL = {"fmask": (255,), "scl": (0, 1), "quality": (int(Quality.NODATA),), "hls": (255,), "qa_pixel": (0,)}

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
    if "fmask" in low:  # (HLS.S30.T31TCJ.2021001T105441.v2.0.Fmask.tif: bit flags, not the classic codes)
        return "hls" if re.search(r"(?<![a-z0-9])hls(?![a-z0-9])", low) else "fmask"
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
    elif convention == "hls":
        v = np.arange(256)
        bit = lambda i: (v >> i) & 1 == 1  # noqa: E731
        lut = np.select([v == 255, bit(0) | bit(1) | bit(2), bit(3), bit(4), bit(5)],
                        [_Q.NODATA, _Q.CLOUD, _Q.SHADOW, _Q.SNOW, _Q.WATER], _Q.CLEAR).astype(np.uint8)
    else:
        lut = np.full(256, Quality.NODATA, dtype=np.uint8)
        for value, quality in _TABLES[convention].items():
            lut[value] = quality
    lut.flags.writeable = False
    return lut


def convention_of(lut: np.ndarray | None) -> str:
    """The convention whose :func:`lookup_table` ``lut`` is (``""`` for none)."""
    return next((c for c in CONVENTIONS if lut is not None and lookup_table(c) is lut), "")


def to_quality(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map raw mask values (float, NaN where no data) to quality classes with ``lut``."""
    valid = np.isfinite(values) & (values >= 0) & (values < len(lut)) & (values == np.round(values))
    idx = np.where(valid, values, 0).astype(np.intp)
    return np.where(valid, lut[idx], np.uint8(Quality.NODATA)).astype(np.uint8)


def unlisted(values: np.ndarray, convention: str) -> np.ndarray:
    """Where ``values`` (NaN: no data) are not among what ``convention`` lists (its classes or flags, or its fill)."""
    v = np.asarray(values, dtype=np.float64)
    whole = np.isfinite(v) & (v == np.round(v)) & (v >= 0)
    if convention == "qa_pixel":  # 16 bits, of which one of the low 8 says what the pixel is (0: a warped file's fill)
        ok = whole & (v < 1 << 16)
        low = np.where(ok, v, 0).astype(np.int64) & 0xFF
        return np.isfinite(v) & ~(ok & ((low != 0) | (v == 0)))
    if convention == "hls":
        return np.isfinite(v) & ~(whole & (v < 256))
    listed = np.array([*_TABLES[convention], *_FILL.get(convention, ())], dtype=np.float64)
    return np.isfinite(v) & ~np.isin(v, listed)


def check_values(values: np.ndarray, convention: str, where, most: float = 0.5, nodata=None) -> None:
    """Refuse (:class:`SourceError` naming ``where``) a mask sample whose known pixels (not NaN, not the
    convention's fill, not the file's own ``nodata`` where the convention does not list it: Landsat's -9999
    outside the footprint) hold values ``convention`` does not list in more than ``most`` of them (any, for
    ``quality``, whose SCL codes would read 4 vegetation as snow and 5 bare soil as water), naming the values and
    the conventions that would read them."""
    v = np.asarray(values, dtype=np.float64).ravel()
    fill = list(_FILL.get(convention, ()))
    if nodata is not None and np.isfinite(float(nodata)) and unlisted(np.array([float(nodata)]), convention).all():
        fill.append(float(nodata))
    v = v[np.isfinite(v) & ~np.isin(v, fill)]
    if not v.size:
        return
    odd = unlisted(v, convention)
    if not odd.any() or (convention != "quality" and odd.mean() <= most):
        return
    # the code tables that list every value, else the bit flags of its width (both read any byte: 8 bits say HLS)
    fits = [c for c in _TABLES if c != convention and not unlisted(v, c).any()]
    fits = fits or [c for c in ("hls" if v.max() < 256 else "qa_pixel",) if c != convention and not unlisted(v, c).any()]
    seen = np.unique(v[odd])
    raise SourceError(
        f"{odd.sum():,} of the {odd.size:,} known pixels sampled from the mask ({odd.mean():.1%}) hold values the "
        f"{convention!r} convention does not list "
        f"({', '.join(f'{x:g}' for x in seen[:10])}{', ...' if len(seen) > 10 else ''}), which it would read as "
        f"nodata; {'they read as ' + ' or '.join(repr(c) for c in fits) + ': ' if fits else ''}"
        f"pass --mask-convention, one of {list(CONVENTIONS)} (fmask: 0-4, 255 fill; scl: Sentinel-2 scene "
        "classification 0-11; qa_pixel: Landsat Collection 2 bit flags; hls: HLS v2 Fmask bit flags; quality: "
        "changescout's 0-5)", where)
