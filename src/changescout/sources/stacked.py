"""One GeoTIFF whose bands are dates x bands, date-major: band ``n_bands * t + b`` (1-based: + 1).

A file does not say which dates its bands hold, so ``dates=[...]`` (``--dates``) is required: one per date
block in the file's order, which must be strictly increasing (dates out of order are far likelier a typo than a
file stored out of time order, and would silently give a block another block's date; reorder such a file with
``gdal_translate -b``). Band names come from ``bands=[...]`` (``--bands``) or the band descriptions of the
first ``n_bands`` bands, and must be unique. The processing level cannot be read
from such a file: it is ``"unknown"`` unless ``level=`` is given. A band named like a mask (``fmask``,
``SCL``...) is each date's quality mask.
"""

from __future__ import annotations

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
    if bands is None:
        if info.count % n_dates:  # (with or without descriptions: the dates are what is wrong)
            raise SourceError(
                f"has {info.count} bands, which {n_dates} dates cannot share evenly; check --dates (one per date "
                "block in the file's order)",
                path,
            )
        if not all(info.descriptions):
            raise SourceError(
                f"has {info.count} bands and no band descriptions; pass --bands, the names of the "
                f"{info.count // n_dates} bands of one date if it holds the {n_dates} dates --dates gives (else "
                "check --dates)",
                path,
            )
        names = check_band_names(info.descriptions[: info.count // n_dates], path, "the band descriptions")
    else:
        names = check_band_names(bands, path, "--bands")
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
        reflectance, kept, m = split_mask(names, layers, None, path)
        mask_name = m[0] if m else None
        scenes.append(Scene(when, tuple(kept), m[1] if m else None, name=path.name))
    lut = None
    if mask is not None:
        scenes, lut = external_masks(mask, scenes, mask_convention, grid)  # (covered where the grid reads it)
    elif mask_name:
        lut = lookup_table(convention_for(mask_name, mask_convention, path))
    return open_scenes(scenes, reflectance, source=path, grid=grid, patch_size=patch_size, chunks=chunks, lut=lut,
                       scale_factor=scale_factor, offset=offset, level=level or "unknown")
