"""One GeoTIFF whose bands are dates x bands, date-major: band ``n_bands * t + b`` (1-based: + 1).

A file does not say which dates its bands hold, so ``dates=[...]`` (``--dates``) is required: one per date
block in the file's order, which must be strictly increasing (dates out of order are far likelier a typo than a
file stored out of time order, and would silently give a block another block's date; reorder such a file with
``gdal_translate -b``).

Band names come from the band descriptions when every band has one: each date block must repeat the first's
(else ``--dates`` does not match the file: a date too many read 12 bands of 4 as 4 dates of 3, each block's
bands shifted by one, and only by chance did a name repeat), less a prefix or suffix that names the date and
differs between blocks (Earth Engine's ``toBands()`` names ``0_B2``, ``1_B2``...); ``bands=[...]`` (``--bands``)
then picks among them by name, in its order, as in a folder of GeoTIFFs (it used to rename the bands in the
file's order: ``--bands B08,B04,B03,B02`` read the blue band as B08). Without descriptions (or with one
repeated within a date, and ``--bands`` naming every band), ``--bands`` names the bands of one date. Names must
be unique. The processing level cannot be read
from such a file: it is ``"unknown"`` unless ``level=`` is given. A band named like a mask (``fmask``,
``SCL``...) is each date's quality mask.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..cube import check_band_names
from ..errors import SourceError
from .dates import check_increasing, to_times
from .geotiff import external_masks, split_mask
from .masks import convention_for, lookup_table
from .warp import Layer, Scene, open_scenes, probe


def sniff(path) -> bool:
    """A single ``.tif``/``.tiff`` file."""
    p = Path(path)
    return p.is_file() and p.suffix.lower() in (".tif", ".tiff")


def open(path, *, dates=None, bands=None, grid=None, patch_size=16, mask=None, mask_convention=None,
         chunks=1024, level=None, scale_factor=None, offset=None):
    """Open a date-major stacked GeoTIFF as a SeriesCube (see the module docstring)."""
    path = Path(path)
    info = probe(path)
    if not dates:
        raise SourceError(
            f"a stacked GeoTIFF ({info.count} bands) does not say its dates: pass --dates YYYY-MM-DD,..., one per date "
            "in the file's order (and --bands, the band names of one date)",
            path,
        )
    times = to_times(dates, path)
    check_increasing(times, path)
    n_dates = len(times)
    described = _described(info.descriptions, n_dates, bands, path)
    if described is None and bands is None:
        if info.count % n_dates:  # (the dates are what is wrong)
            raise SourceError(
                f"has {info.count} bands, which {n_dates} dates cannot share evenly; check --dates (one per date "
                "block in the file's order)",
                path,
            )
        raise SourceError(
            f"has {info.count} bands and no band descriptions; pass --bands, the names of the "
            f"{info.count // n_dates} bands of one date if it holds the {n_dates} dates --dates gives (else "
            "check --dates)",
            path,
        )
    names, wanted = (described, bands) if described is not None else (check_band_names(bands, path, "--bands"), None)
    if info.count != n_dates * len(names):
        raise SourceError(
            f"has {info.bands_said} but {n_dates} dates x {len(names)} bands = {n_dates * len(names)}; "
            "check --dates and --bands (band index = n_bands * date + band)",
            path,
        )
    file = str(path.resolve())
    scenes, reflectance, mask_name = [], names, None
    for t, when in enumerate(times):
        layers = [Layer(file, len(names) * t + b + 1) for b in range(len(names))]
        reflectance, kept, m = split_mask(names, layers, wanted, path)
        mask_name = m[0] if m else None
        scenes.append(Scene(when, tuple(kept), m[1] if m else None, name=path.name))
    lut = None
    if mask is not None:
        scenes, lut = external_masks(mask, scenes, mask_convention, grid)  # (covered where the grid reads it)
    elif mask_name:
        lut = lookup_table(convention_for(mask_name, mask_convention, path))
    return open_scenes(scenes, reflectance, source=path, grid=grid, patch_size=patch_size, chunks=chunks, lut=lut,
                       scale_factor=scale_factor, offset=offset, level=level or "unknown")


def _described(descriptions, n_dates: int, bands, path) -> list[str] | None:
    """The band names of one date from the descriptions (see the module docstring), or None where they do not
    name the bands: some band has none; or, with ``bands`` naming every band of a date, one repeats within a date,
    or they differ between dates without repeating at all (bands described by their date, "Band 1".."Band 12").
    A :class:`SourceError` when they repeat, but not every ``len / n_dates`` bands (``--dates`` does not match the
    file), and when they differ between dates without ``bands``."""
    count = len(descriptions)
    if not all(descriptions):
        return None
    if count % n_dates:
        raise SourceError(
            f"has {count} bands, which {n_dates} dates cannot share evenly; check --dates (one per date block in the "
            f"file's order){_period_hint(descriptions)}", path)
    size = count // n_dates
    blocks = _without_date_names([list(descriptions[t * size:(t + 1) * size]) for t in range(n_dates)])
    named = bands is not None and len(bands) == size
    if named and len(set(blocks[0])) < size:
        return None  # repeated descriptions, and a name for every band given: those name the bands (as in a folder)
    differ = next((t for t, block in enumerate(blocks[1:], start=1) if block != blocks[0]), None)
    if differ is None:
        return check_band_names(blocks[0], path, "the band descriptions")
    if _period(descriptions) is None:  # no band names that repeat: other descriptions (dates, numbers)
        if named:
            return None
        shown = ", ".join(map(repr, descriptions[:3])) + (", ..." if count > 3 else "")
        raise SourceError(f"describes its bands otherwise at each date ({shown}): pass --bands, the names of the "
                          f"{size} band(s) of one date", path)
    first = differ * size + next(i for i, (a, b) in enumerate(zip(blocks[differ], blocks[0])) if a != b)
    raise SourceError(
        f"describes its band {first + 1} as {descriptions[first]!r}, but read as {n_dates} dates of {size} bands "
        f"it would be date {differ + 1}'s {blocks[0][first - differ * size]!r} (date 1's bands: {', '.join(blocks[0])}); "
        f"check --dates (one per date block in the file's order){_period_hint(descriptions)}", path)


#: A date (or an image's number) before or after a band's name in a description: ``0_``, ``20200105_``,
#: ``20200105T103021_20200105T103025_`` (Earth Engine's toBands()), ``_2020_01_05``, ``-20200105``.
_DATE_PARTS = (re.compile(r"^\d[\dT:._-]*[_. -]"), re.compile(r"[_. -]\d[\dT:._-]*$"))


def _without_date_names(blocks: list[list[str]]) -> list[list[str]]:
    """``blocks`` less a date part (:data:`_DATE_PARTS`, a prefix or a suffix) that every name of a block shares
    and that differs between blocks, where what is left holds a letter and is the same in every block (band
    names keep their own separators: ``0_SR_B2`` is ``SR_B2``); else as they are."""
    if len(blocks) < 2 or all(b == blocks[0] for b in blocks):
        return blocks
    for pattern in _DATE_PARTS:
        found = [[pattern.search(n) for n in block] for block in blocks]
        if not all(m for ms in found for m in ms):
            continue
        dated = [{m.group() for m in ms} for ms in found]
        rest = [[n[:m.start()] + n[m.end():] for n, m in zip(block, ms)] for block, ms in zip(blocks, found)]
        if (all(len(d) == 1 for d in dated) and len({d.pop() for d in dated}) > 1
                and all(r == rest[0] for r in rest) and all(any(c.isalpha() for c in n) for n in rest[0])):
            return rest
    return blocks


def _period(descriptions) -> int | None:
    """The fewest bands after which ``descriptions`` repeat (distinct within), None when they do not repeat."""
    count = len(descriptions)
    for size in range(1, count):
        if count % size == 0 and all(descriptions[i] == descriptions[i % size] for i in range(count)) \
                and len(set(descriptions[:size])) == size:
            return size
    return None


def _period_hint(descriptions) -> str:
    """``"; its band descriptions repeat every N bands: D dates of N bands"`` when they do, else ``""``."""
    size = _period(descriptions)
    return "" if size is None else f"; its band descriptions repeat every {size} bands: {len(descriptions) // size} dates of {size} bands"
