"""The registry of input sources: built-in kinds plus plugins of the ``changescout.sources`` entry-point group.

A source is a module (or any object) with ``open(path, **options) -> SeriesCube`` and ``sniff(path) -> bool``.
Built-ins are imported only when used; a plugin that fails to load warns and is skipped.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..cube import check_band_names, pad_to_patches, validate_cube
from ..errors import BandError, InputError, SourceError, check_options

ENTRY_POINT_GROUP = "changescout.sources"

#: Built-in kinds and their modules.
BUILTIN = {
    "datacube": "changescout.sources.datacube",
    "oscd": "changescout.sources.oscd",
    "dynamicearthnet": "changescout.sources.dynamicearthnet",
    "pairs": "changescout.sources.pairs",
    "stac": "changescout.sources.stac",
    "stacked": "changescout.sources.stacked",
    "geotiff": "changescout.sources.geotiff",
    "synthetic": "changescout.sources.synthetic",
}
#: Built-ins whose ``sniff`` is tried, in this order: dataset layouts before the generic GeoTIFF folder, which
#: accepts any folder (``synthetic`` is named, not sniffed).
SNIFF_ORDER = ("datacube", "stac", "oscd", "dynamicearthnet", "pairs", "stacked", "geotiff")


def _plugins() -> dict:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN}


def available_sources() -> list[str]:
    """Names of the source kinds that can be used: built-ins that are installed, then plugins."""
    builtin = [name for name, module in BUILTIN.items() if importlib.util.find_spec(module) is not None]
    return builtin + sorted(_plugins())


def get_source(kind: str):
    """The source registered as ``kind``; :class:`SourceError` listing the available kinds if there is none."""
    if kind in BUILTIN and importlib.util.find_spec(BUILTIN[kind]) is not None:
        return importlib.import_module(BUILTIN[kind])
    plugins = _plugins()
    if kind in plugins:
        try:
            return plugins[kind].load()
        except Exception as exc:  # a broken plugin must not hide the others
            raise SourceError(f"the source plugin {kind!r} failed to load: {type(exc).__name__}: {exc}") from exc
    raise SourceError(f"unknown source kind {kind!r}; available kinds: {', '.join(available_sources())}")


def check_exists(source) -> None:
    """:class:`SourceError` unless ``source`` names the synthetic series or a path that exists (what a source of
    unknown kind must be; cheap, so the pipeline checks it before any other work)."""
    if str(source).partition(":")[0] != "synthetic" and not Path(source).exists():
        raise SourceError("does not exist", Path(source))


def sniff_kind(source) -> str:
    """The kind of ``source``: ``"synthetic"`` (or ``"synthetic:seed=1,..."``) by name, else the first source
    whose ``sniff`` accepts it."""
    check_exists(source)
    if str(source).partition(":")[0] == "synthetic":
        return "synthetic"
    path = Path(source)
    for kind in SNIFF_ORDER:
        if kind == "geotiff" and (many := _dataset_root(path)):  # (before a folder of GeoTIFFs takes it)
            raise SourceError(many, path)
        if get_source(kind).sniff(path):
            return kind
    for kind, ep in _plugins().items():
        try:
            if ep.load().sniff(path):
                return kind
        except Exception as exc:  # a broken plugin warns and is skipped
            warnings.warn(f"source plugin {kind!r} failed: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
    raise SourceError(
        "cannot tell what kind of source this is (expected a folder of GeoTIFFs, a .tif, a .nc/.h5 file, a "
        ".zarr store, a STAC catalog or ItemCollection (.json), an OSCD city folder, a DynamicEarthNet cube folder or an A/B pairs folder); pass --kind, one "
        f"of: {', '.join(available_sources())}",
        path,
    )


def _dataset_root(path: Path) -> str | None:
    """What to do with the folder of a whole labelled dataset given to a run (OSCD's cities, DynamicEarthNet's
    cubes), or None: a run takes one city or cube. Read as a folder of GeoTIFFs, OSCD's root was refused for a
    label file's CRS ("write one with gdal_edit.py": the dataset's label), and DynamicEarthNet's for band counts
    (a review)."""
    if not path.is_dir():
        return None
    from . import dynamicearthnet, oscd

    found = []
    for name, module, what in (("OSCD", oscd, ("city", "cities")), ("DynamicEarthNet", dynamicearthnet, ("cube", "cubes"))):
        try:
            items = module.list_items(path, labelled=False)
        except InputError:
            continue
        if len(items) > 1 or (items and not module.sniff(path)):
            found.append((name, what, items))
    if not found:
        return None
    name, what, items = found[0]
    more = ", ..." if len(items) > 5 else ""
    return (f"holds {len(items)} {name} {what[len(items) > 1]} ({', '.join(items[:5])}{more}), and a run takes one: pass "
            f"one {what[0]} folder as SOURCE (changescout benchmark {name.lower()} --root takes them all)")


def open_series(source, *, kind=None, dates=None, bands=None, grid=None, patch_size=16, mask=None,
                mask_convention=None, chunks=1024, **options):
    """Open ``source`` as a validated, lazy SeriesCube on a patch-snapped output grid.

    ``kind`` is a registered source name (:func:`available_sources`) or ``None`` to guess it from the path.
    ``grid`` is ``None`` (the first date's CRS and resolution, the union of all footprints), a
    :class:`~changescout.sources.warp.GridSpec`, its text form ``"EPSG:32631,10"`` or an ``OutputGrid``.
    ``options`` go to the source (``level=``, ``scale_factor=``, ``offset=``, ``variable=``, ``seed=``...).
    ``dates``: text ``"2018-04-29,2018-05-13"`` or any sequence of dates (strings, Timestamps, a DatetimeIndex,
    datetime64 values).
    """
    if dates is not None and not isinstance(dates, str):  # (a DatetimeIndex: "truth value ... is ambiguous")
        dates = list(dates)
    if bands is not None:
        # --bands once for every kind, before any file is read: a name given twice would make two bands that
        # cannot be told apart (a source keeping bands by name silently drops one of them)
        bands = [b.strip() for b in bands.split(",") if b.strip()] if isinstance(bands, str) else list(bands)
        check_band_names(bands, source, "--bands")
    from ..tiling import check_patch_size
    from .warp import GridSpec

    patch_size = check_patch_size(patch_size)
    if isinstance(grid, str):  # a bad CRS or bounds in the wrong order: the option's fault, told before the source
        GridSpec.parse(grid)  # is read, and not under its name (below)
    kind = kind or sniff_kind(source)
    module = get_source(kind)
    given = {"dates": dates, "bands": bands, "grid": grid, "mask": mask, "mask_convention": mask_convention}
    opts = {k: v for k, v in given.items() if v is not None}
    check_options(module.open, {**opts, **options}, f"source kind {kind!r}")
    try:
        cube = pad_to_patches(module.open(source, patch_size=patch_size, chunks=chunks, **opts, **options), patch_size)
        cube.attrs["source_kind"] = kind
        cube.attrs.setdefault("label", Path(str(source)).stem)
        cube.attrs.setdefault("source", str(source))
        check_band_numbering(cube)
        return validate_cube(cube)
    except InputError as exc:
        if exc.path is not None or not isinstance(source, (str, os.PathLike)):
            raise
        raise type(exc)(exc.message, source) from None  # a problem of the series as a whole: name its source


#: Landsat band names by number (``SR_B4``, ``B4``, ``ST_B10``): what the number names depends on the sensor.
_LANDSAT_NUMBERED = re.compile(r"(?:SR_|ST_|TOA_)?B\d{1,2}", re.I)


def check_band_numbering(cube) -> None:
    """A :class:`BandError` for a series that mixes Landsat 4-7 (TM, ETM+) and Landsat 8-9 (OLI) dates under band
    names by number: SR_B4 is the near-infrared of TM and the red of OLI, and such a series read with ``--bands``
    (which the error of their different band counts advises) swapped red and near-infrared between its dates
    without a word (a review)."""
    from ..quality import OLI_PLATFORMS, TM_PLATFORMS

    if "platform" not in cube.coords or cube.attrs.get("band_harmonisation"):  # (HLS L30 read under S30's names)
        return
    platforms = {str(v).lower().replace("_", "-") for v in np.atleast_1d(cube["platform"].values)}
    tm, oli = sorted(platforms & TM_PLATFORMS), sorted(platforms & OLI_PLATFORMS)
    numbered = [str(b) for b in cube["band"].values if _LANDSAT_NUMBERED.fullmatch(str(b))]
    if "landsat-8-9" in platforms and any(p.startswith("sentinel-2") for p in platforms) and numbered:
        raise BandError(f"the series mixes HLS S30 (Sentinel-2) and L30 (Landsat 8-9) dates, whose band numbers name "
                        f"different bands (B05 is a red edge on S30, the near infrared on L30; B8A and B12 are S30's "
                        f"only): bands {', '.join(numbered[:4])}{', ...' if len(numbered) > 4 else ''} would mean one "
                        "thing at some dates and another at the others. Run them as two series (HLS's own S30 and L30 files, alone in a "
                        "folder, or their STAC items, are read together under S30's band names, L30's B05 as B8A), or rename each file's bands by role "
                        "(blue, green, red, nir, swir16, swir22) and give those names")
    if tm and oli and numbered:
        raise BandError(f"the series mixes Landsat 4-7 ({', '.join(tm)}) and Landsat 8-9 ({', '.join(oli)}) dates, whose band "
                        f"numbers name different bands (SR_B4 is near-infrared on TM and ETM+, red on OLI): bands "
                        f"{', '.join(numbered[:4])}{', ...' if len(numbered) > 4 else ''} would mean one thing at some dates "
                        "and another at the others. Run the two families as two series, or rename each file's bands by "
                        "role (blue, green, red, nir, swir16, swir22) and give those names")
