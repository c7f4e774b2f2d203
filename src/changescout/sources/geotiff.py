"""A folder of GeoTIFFs, one image (or several tiles) per date.

Two layouts, possibly with one sub-folder per date:

* one multi-band file per date (``2020-01-01.tif``, ``S2A_MSIL2A_20200101T..._.tif``);
* one single-band file per band per date, the band named by the file-name suffix
  (``LE70350322008118EDC00/LE70350322008118EDC00_b3.tif``, ``..._B04.tif``, ``..._fmask.tif``; Sentinel-2 L2A
  ``<product>.SAFE/.../T31TCJ_..._B04_10m.jp2`` or ``.tif``, the resolution dropped, ``QI_DATA`` left out; Landsat Collection 2
  ``<ID>/<ID>_SR_B4.TIF`` named ``SR_B4`` (as USGS names it: red on Landsat 8-9, near infrared on 4-7), and ``<ID>_QA_PIXEL.TIF`` its mask). The other layers of those
  deliveries (thermal ``ST_B10``, ``QA_RADSAT``, ``SR_QA_AEROSOL``, angles; ``AOT``, ``WVP``, ``TCI``) are left
  out and listed in the cube's ``ignored_files``.

Dates come from the file (or sub-folder) names (see :mod:`.dates`) or from ``dates=[...]`` (``--dates``), one
per image in sorted file order. Unlike a stacked file's date blocks, these need not be increasing: each one
labels a named file, and names need not sort by date (``scene_10.tif`` sorts before ``scene_9.tif``), so the
images are put in date order; a date given twice is an error naming both files. Images whose names give one
date are the tiles of that date (``..._T31TCJ_20200101...`` and ``..._T31TCH_20200101...``): the date is their
mosaic, each pixel from the first of them in file order that has every band there; two over the same ground (one
scene twice: more than 80 % of the smaller one's box) are refused (:func:`.warp.open_scenes`). Band names come from band
descriptions, else file suffixes; then ``bands`` selects among them. Without such names ``bands`` names the
bands, else they are ``b1..bN``. Band names must be unique. A band named ``fmask``, ``SCL``,
``qa`` or ``mask`` is the quality mask of its date, not a reflectance band; so is a single-band file beside a
multi-band image and named after it with such a suffix (``<product>.tif`` and ``<product>_SCL.tif``). Each
date's mask is read by the convention its own name says (``--mask-convention`` sets one for all), so a folder may
mix Sentinel-2 dates with ``_SCL`` masks and Landsat dates with ``_QA_PIXEL`` ones. A band whose file declares a
scale and offset (GDAL band metadata) is read with them (see :func:`.warp.open_scenes`).

NASA's HLS v2 delivers Sentinel-2 dates (``HLS.S30...``) and Landsat 8-9 dates (``HLS.L30...``) of one tile,
harmonised to be used together, but numbers their bands as each sensor does (L30's ``B05`` is the near
infrared, S30's a red edge). A folder of both is read under S30's names: L30's ``B01``-``B04`` as they are,
``B05`` as ``B8A`` (both the narrow near infrared HLS harmonises), ``B06`` as ``B11``, ``B07`` as ``B12`` and its
cirrus ``B09`` as ``B10`` (:data:`HLS_L30_AS_S30`), and only the bands both products have are kept (S30's red edges,
broad near infrared and water vapour are left out; ``--bands`` picks among the shared ones by their S30 names). A
date that lacks a band the other dates of its product have is refused, as in a folder of one product, and an
L30 image that shares its date and tile with an S30 image is left out for it (:func:`hls_second_sensor`). The
cube's ``band_harmonisation`` and ``hls_second_sensor`` attributes say so. A folder that mixes HLS S30 and L30
with other products is refused, naming one of their files (their band numbers are their own).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from rasterio.warp import transform_bounds

from ..cube import check_band_names
from ..errors import SourceError
from .dates import ACCEPTED_PATTERNS, HLS_NAME, hls_product, impossible_date, parse_date, to_times
from .masks import convention_for, infer_convention, is_mask_name, lookup_table
from .warp import Layer, Scene, as_grid, open_scenes, probe

_EXTENSIONS = (".tif", ".tiff", ".jp2")  # (JPEG 2000: Sentinel-2 products' band files as delivered)
#: Folders of a delivered product that hold no image of it: Sentinel-2's quality indicators (cloud and snow
#: probabilities, detector footprints, a preview) and auxiliary data.
_NOT_IMAGES = {"QI_DATA", "AUX_DATA"}
_BAND_SUFFIX = re.compile(  # Sentinel-2 L2A ``..._B04_10m``; Landsat Collection 2 ``..._SR_B4``, ``..._QA_PIXEL``;
    r"^(?:(?P<stem>.+?)[_.-])?"  # HLS ``...v2.0.B04``
    r"(?P<band>(?:SR_)?B\d{1,2}A?|band_?\d{1,2}|red|green|blue|nir|swir_?[12]|fmask|scl|qa_pixel|qa|mask)(?:[_-]\d{1,3}m)?$", re.I
)

#: Layers of standard deliveries that are not surface reflectance nor a cloud mask, left out of a folder (and
#: listed in the cube's ``ignored_files``): Landsat Collection 2 thermal and its QA, radiometric saturation,
#: aerosol and angle bands; Sentinel-2 L2A aerosol optical thickness, water vapour and the true-colour image.
_AUXILIARY = re.compile(
    r"[_.-](?:ST_[A-Z0-9]+|QA_RADSAT|SR_QA_AEROSOL|SR_CLOUD_QA|SR_ATMOS_OPACITY|[SV][AZ]A|AOT|WVP|TCI)(?:[_-]\d{1,3}m)?$"
    r"|(?<![A-Z0-9])HLS\.L30\..*\.B1[01]$", re.I  # (HLS L30's B10 and B11 are thermal: S30's are cirrus and SWIR)
)


#: HLS L30's band numbers -> the S30 bands HLS harmonises them with (see the module docstring).
HLS_L30_AS_S30 = {"B01": "B01", "B02": "B02", "B03": "B03", "B04": "B04", "B05": "B8A", "B06": "B11", "B07": "B12",
                  "B09": "B10"}
#: How HLS L30's renamed bands read, in messages and the cube's ``band_harmonisation``.
_HLS_RENAMED = ", ".join(f"{l30} -> {s30}" for l30, s30 in HLS_L30_AS_S30.items() if l30 != s30)


def hls_second_sensor(times, names: list[str], products: list) -> list[bool]:
    """Which dates to keep of HLS S30 and L30 ones (``names``: their file or item names): an L30 image that
    shares its date and tile with an S30 image is left out for it. A series holds one image a date (its tiles
    mosaicked), and the two sensors' images of one day are two acquisitions of the same ground, which were
    refused as one scene twice, or, acquired within minutes, one taken for a reprocessing of the other (a
    review)."""
    tile = [hls_product(n)[1] for n in names]
    s30 = {(pd.Timestamp(t), k) for t, k, p in zip(times, tile, products) if p == "S30"}
    return [not (p == "L30" and (pd.Timestamp(t), k) in s30) for t, k, p in zip(times, tile, products)]


def _hls_product(files: list[Path]) -> str | None:
    """``"S30"``, ``"L30"`` or None: the HLS product a date's files are of (by their names)."""
    found = {hls_product(f.name)[0] for f in files}
    return found.pop() if len(found) == 1 else None


def sniff(path) -> bool:
    """A folder that is not a Zarr store."""
    from .datacube import sniff as is_datacube

    return Path(path).is_dir() and not is_datacube(path)


def open(path, *, dates=None, bands=None, grid=None, patch_size=16, mask=None, mask_convention=None,
         chunks=1024, level=None, scale_factor=None, offset=None):
    """Open a folder of GeoTIFFs as a SeriesCube (see the module docstring)."""
    root = Path(path)
    walked: list[Path] = []
    files = list_rasters(root, walked)
    ignored = [f for f in files if _AUXILIARY.search(f.stem)]
    if len(ignored) == len(files):
        raise SourceError(f"holds only auxiliary layers ({ignored[0].name}, ...): no reflectance image", root)
    _check_products_have_images(walked, [f for f in files if f not in ignored], ignored)
    groups = _groups(root, [f for f in files if f not in ignored])
    times, redated = _times(groups, dates, root)
    products = [_hls_product(files) for files in groups.values()]
    harmonised = set(products) == {"S30", "L30"}  # (HLS S30 and L30 dates alone: read under S30's band names)
    if {"S30", "L30"} < set(products):  # with other products, whose band numbers are their own
        other = next(fs[0] for fs, p in zip(groups.values(), products) if p is None)
        raise SourceError("is not an HLS file, in a folder of HLS S30 and L30 dates: HLS's two sensors are read together "
                          "under S30's band names on their own only; move the other products' files out, or run them apart",
                          other)
    second: list[str] = []
    if harmonised and not all(keep := hls_second_sensor(times, [fs[0].name for fs in groups.values()], products)):
        second = [_name(fs[0], root) for fs, k in zip(groups.values(), keep) if not k]
        groups = {key: fs for (key, fs), k in zip(groups.items(), keep) if k}
        times, products = [t for t, k in zip(times, keep) if k], [p for p, k in zip(products, keep) if k]
    renames = [HLS_L30_AS_S30 if harmonised and p == "L30" else None for p in products]
    left_out: list[str] = []
    if harmonised:
        bands, left_out = _hls_bands(groups, products, renames, bands, root)
    per_date = [_bands_of(files, bands, root, rename) for files, rename in zip(groups.values(), renames)]
    ref_names, ref_file = per_date[0][0], next(iter(groups.values()))[0]
    for (names, _, _), files in zip(per_date, groups.values()):
        # (the date's first file is named; say which band it lacks, not only how many: a missing B08 was told as
        # "S2_20210701_B02.tif: has 3 bands")
        missing, more = [n for n in ref_names if n not in names], [n for n in names if n not in ref_names]
        which = "; ".join([*([f"it lacks {missing}"] if missing else []), *([f"it has {more} more"] if more else [])])
        hint = f" ({which})" if which and len(set(ref_names)) == len(ref_names) else ""
        if _unnamed(names) != _unnamed(ref_names):  # b1..bN against named bands: which names it lacks says nothing
            hint = f" ({'it' if _unnamed(names) else ref_file.name} has no band descriptions)"
        if len(names) != len(ref_names):
            raise SourceError(f"has {len(names)} bands but {ref_file.name} has {len(ref_names)}{hint}; every date needs the "
                              "same bands (--bands NAMES reads those of every date)", files[0])
        if names != ref_names and [_spelling(n) for n in names] == [_spelling(n) for n in ref_names]:
            # (B2 against B02: --bands, which the message below advises, picks bands by name and so fails on one
            # date or the other; a review)
            raise SourceError(f"names its bands {names} and {ref_file.name} {ref_names}: the same bands spelt otherwise; "
                              "give every date's files the same band descriptions (with rasterio: "
                              "dataset.set_band_description(index, name)), or run the dates apart", files[0])
        if names != ref_names:
            raise SourceError(f"has bands {names} but {ref_file.name} has {ref_names}; every date needs the same bands "
                              "(--bands NAMES reads those of every date)", files[0])
    # each date's mask read by its own convention: a folder may mix Sentinel-2 dates (SCL) and Landsat dates
    # (QA_PIXEL), whose codes mean other things (SCL 4, vegetation, is QA_PIXEL's cirrus bit)
    scenes = [
        Scene(t, tuple(layers), m[1] if m else None, name=_name(files[0], root),
              convention=convention_for(_mask_name(m), mask_convention, m[1].path) if m else "")
        for t, (_, layers, m), files in zip(times, per_date, groups.values())
    ]
    lut = None
    if mask is not None:
        scenes, lut = external_masks(mask, scenes, mask_convention, grid)
    cube = open_scenes(scenes, ref_names, source=root, grid=grid, patch_size=patch_size, chunks=chunks, lut=lut,
                       scale_factor=scale_factor, offset=offset, level=level)
    if ignored:
        cube.attrs["ignored_files"] = [_name(f, root) for f in ignored]
    if redated:
        cube.attrs["redated_files"] = redated
    return hls_attrs(cube, harmonised, left_out, second, "dates")


def hls_attrs(cube, harmonised: bool, left_out: list[str], second: list[str], what: str):
    """``cube`` with the attributes that say how HLS S30 and L30 ``what`` (dates, items) were read together:
    ``band_harmonisation`` (and the bands left out) and ``hls_second_sensor`` (the L30 ones left out)."""
    if second:
        cube.attrs["hls_second_sensor"] = second
    if harmonised:
        cube.attrs["band_harmonisation"] = (
            f"HLS S30 and L30 {what} read together under S30's band names (L30 {_HLS_RENAMED})"
            + (f"; bands one of the two has not, left out: {', '.join(left_out)}" if left_out else ""))
    return cube


#: How many folders deep a source folder is searched for GeoTIFFs (product folders hold them 1-3 deep).
MAX_DEPTH = 6


def is_run_dir(folder: Path) -> bool:
    """Whether ``folder`` is a changescout run directory."""
    return (folder / "config.json").is_file() and (folder / "state.json").is_file()


def _spelling(name: str) -> str:
    """A band name without what its spellings differ in: case and the zeros before a number (B2, b02, B02)."""
    return re.sub(r"(?<!\d)0+(?=\d)", "", str(name).lower())


def _unnamed(names) -> bool:
    """Whether ``names`` are the ``b1..bN`` given to bands without descriptions or band suffixes."""
    return all(re.fullmatch(r"b\d+", n) for n in names)


def list_rasters(root: Path, folders: list[Path] | None = None) -> list[Path]:
    """GeoTIFF and JPEG 2000 files under ``root`` (recursively; hidden ones, and a Sentinel-2 product's
    ``QI_DATA`` and ``AUX_DATA``, skipped), sorted; :class:`SourceError` if none. ``folders``: a list the folders
    walked are added to (each once, as the files are searched)."""
    if not root.is_dir():
        raise SourceError("is not a folder" if root.exists() else "does not exist", root)
    files, seen = [], set()
    # scene folders linked in from an archive count (os.walk follows the links; pathlib's rglob did not, and the
    # folder was refused as holding no GeoTIFF); a link back up the tree is walked once, and no deeper than
    # MAX_DEPTH folders
    for folder, dirs, names in os.walk(root, followlinks=True):
        here, real = Path(folder), os.path.realpath(folder)
        if real in seen or (here != root and is_run_dir(here)):  # a run written inside the folder: its maps are outputs
            dirs[:] = []
            continue
        seen.add(real)
        if folders is not None:
            folders.append(here)
        for d in dirs:
            if Path(d).suffix.lower() in _EXTENSIONS:
                raise SourceError("is a folder (or a link to one), not a GeoTIFF", here / d)
        dirs[:] = ([d for d in dirs if not d.startswith(".") and d.upper() not in _NOT_IMAGES]
                   if len(here.relative_to(root).parts) < MAX_DEPTH else [])
        for n in names:
            p = here / n
            if n.startswith(".") or p.suffix.lower() not in _EXTENSIONS:
                continue
            if p.is_symlink() and not p.exists():  # a date the user placed there would drop out without a word
                raise SourceError(f"is a broken link (to {os.readlink(p)}, which does not exist)", p)
            if p.is_file():
                files.append(p)
    files.sort()
    if not files:
        raise SourceError("holds no GeoTIFF or JPEG 2000 (.tif, .tiff, .jp2) files", root)
    return files


#: Sentinel-2 L2A products keep their band files in one folder per resolution (``IMG_DATA/R10m``, ``R20m``, ``R60m``).
_RESOLUTION_FOLDER = re.compile(r"^R\d{1,3}m$")


def _check_products_have_images(folders: list[Path], images: list[Path], ignored: list[Path]) -> None:
    """A :class:`SourceError` naming a product folder (``S2B_MSIL2A_....SAFE``, a Landsat scene's folder) among
    the ``folders`` :func:`list_rasters` walked (not hidden ones, each once) that holds no reflectance image,
    only auxiliary layers or nothing: an interrupted download or an unpacking that kept the preview, which lost
    its date from the series without a word (a review)."""
    from ..radiometry import is_product_name

    holding = {q for f in images for q in f.parents}
    for here in folders[1:]:  # (the first is the source folder itself)
        name = here.name[:-5] if here.name.upper().endswith(".SAFE") else here.name
        if (is_product_name(name) or HLS_NAME.search(name)) and here not in holding and not any(p in holding and is_product_name(p.name) for p in here.parents):
            kept = [f.name for f in ignored if here in f.parents]
            what = f"only auxiliary layers ({', '.join(kept[:2])}{', ...' if len(kept) > 2 else ''})" if kept else "no image"
            raise SourceError(f"is a product folder that holds {what}: no reflectance image, so its date would be left out "
                              "of the series (an interrupted download?); complete it or move it out of the folder", here)


def _groups(root: Path, files: list[Path]) -> dict[str, list[Path]]:
    """``files`` grouped by date key: the path without the band suffix for single-band files (a Sentinel-2
    resolution folder, ``R10m``, left out of it), else the path. A band delivered at several resolutions (B02
    in R10m, R20m and R60m) is read from its finest."""
    groups: dict[str, list[Path]] = {}
    for f in files:
        rest, band = split_band_suffix(f.stem)
        single = bool(band) and probe(f).count == 1
        parent = f.relative_to(root).parent
        if single and _RESOLUTION_FOLDER.match(parent.name):
            parent = parent.parent
        key = str(parent / rest if single else f.relative_to(root).with_suffix(""))
        groups.setdefault(key, []).append(f)
    for key, group in groups.items():  # (two files of one band at one resolution stay, to be refused as such)
        band = pd.Series([_suffix(f).upper() or str(f) for f in group])
        res = pd.Series([probe(f).resolution[0] for f in group])
        groups[key] = [f for f, keep in zip(group, res == res.groupby(band).transform("min")) if keep]
    return {k: sorted(v, key=lambda f: _band_order(_suffix(f))) for k, v in sorted(groups.items())}


def _times(groups: dict[str, list[Path]], dates, root: Path) -> tuple[list, list[str]]:
    """The date of each image (``dates`` in sorted file order, else its name's), and the images ``dates`` gives
    another date than their names say (``"name: given (its name says named)"``, which the run notes)."""
    if dates is not None:
        times = to_times(dates, root)
        if len(times) != len(groups):
            raise SourceError(f"holds {len(groups)} images (dates) but {len(times)} dates were given", root)
        seen = {}
        for t, files in zip(times, groups.values()):
            name = files[0].relative_to(root)
            if t in seen:
                raise SourceError(
                    f"--dates gives {name} the same date {t:%Y-%m-%d} as {seen[t]} (dates are given one per image, "
                    "in sorted file order); give one image per date",
                    root,
                )
            seen[t] = name
        named = [_date_of(files[0], root) for files in groups.values()]
        if None not in named and sorted(named) == sorted(times) and named != list(times):
            # the dates of the names, in another order: --dates dates the images in sorted file order (S2A_... sorts
            # before S2B_... whatever their dates), and a list in date order swapped them without a word (a review)
            i = next(i for i, (a, b) in enumerate(zip(named, times)) if a != b)
            raise SourceError(f"--dates gives {list(groups.values())[i][0].relative_to(root)} the date {times[i]:%Y-%m-%d}, "
                              f"but its name says {named[i]:%Y-%m-%d}: --dates dates the images in sorted file order, "
                              "and lists the dates of the names in another; leave --dates out to date them by their names",
                              root)
        redated = [f"{_name(files[0], root)}: {t:%Y-%m-%d} (its name says {n:%Y-%m-%d})"
                   for files, t, n in zip(groups.values(), times, named) if n is not None and n != t]
        return times, redated
    times = []
    for files in groups.values():
        t = _date_of(files[0], root)
        if t is None and (bad := impossible_date(files[0].relative_to(root))):
            raise SourceError(f"{bad} in the name is no date of the calendar; rename the file, or pass --dates (one per "
                              "image, in sorted file order)", files[0])
        if t is None:
            raise SourceError(
                f"no date in the name; name files or folders with one of: {'; '.join(ACCEPTED_PATTERNS)}, "
                "or pass --dates (one per image, in sorted file order)",
                files[0],
            )
        # images of one date are its tiles (mosaicked: open_scenes refuses two over the same ground)
        times.append(t)
    return times, []


def _date_of(file: Path, root: Path):
    names = [split_band_suffix(file.stem)[0], *(p.name for p in file.relative_to(root).parents if p.name)]
    return next((t for t in map(parse_date, names) if t is not None), None)


def _hls_bands(groups: dict, products: list, renames: list, wanted, root: Path) -> tuple[list[str], list[str]]:
    """``(bands to read, bands left out)`` of a folder of HLS S30 and L30 dates (L30's under S30's names): the
    bands both products have (or the ``wanted`` ones, which they must both have), in S30's order. A date that
    lacks a band the other dates of its product have is refused, as a folder of one product refuses it: only
    what one product never has is left out (a review: one S30 date without its B04 took the red band off the
    whole series)."""
    named = [_bands_of(files, None, root, rename)[0] for files, rename in zip(groups.values(), renames)]
    files = [fs[0] for fs in groups.values()]
    both, left_out = hls_shared_bands(named, products, [f.name for f in files], lambda i: files[i])
    if wanted is not None:
        wanted = check_band_names(wanted, root, "--bands")
        lacking = [b for b in wanted if not is_mask_name(b) and b not in both]
        if lacking:
            raise SourceError(f"--bands {lacking}: not on every date of this folder of HLS S30 and L30 dates, read under "
                              f"S30's band names (L30 {_HLS_RENAMED}); the bands both have: {', '.join(both)}", root)
        return list(wanted), []
    return both, left_out


def hls_shared_bands(named: list[list[str]], products: list, labels: list[str], where) -> tuple[list[str], list[str]]:
    """``(the bands both HLS products have, in S30's order; the others)`` from each date's band names (L30's
    under S30's names) and product (``"S30"``/``"L30"``); a :class:`SourceError` at ``where(i)`` for a date ``i``
    whose bands differ from the first date of its product's (named by ``labels``)."""
    shared = {}
    for product in ("S30", "L30"):
        mine = [i for i, p in enumerate(products) if p == product]
        first = mine[0]
        for i in mine[1:]:
            missing, more = [n for n in named[first] if n not in named[i]], [n for n in named[i] if n not in named[first]]
            if missing or more:
                which = "; ".join([*([f"it lacks {missing}"] if missing else []), *([f"it has {more} more"] if more else [])])
                how = f" (L30's under S30's names: {_HLS_RENAMED})" if product == "L30" else ""
                raise SourceError(f"{labels[i]} has bands {named[i]} but {labels[first]} has {named[first]} ({which}); every "
                                  f"HLS {product} date needs the same bands{how}", where(i))
        shared[product] = named[first]
    both = [b for b in shared["S30"] if b in shared["L30"]]
    return both, sorted({b for n in named for b in n} - set(both), key=_band_order)


def _bands_of(files: list[Path], bands, root: Path, rename: dict | None = None):
    """``(reflectance band names, their layers, (mask name, mask layer) or None)`` of one date's files; ``rename``
    maps band names (upper case) to those they are read under (HLS L30's to S30's)."""
    whole = [f for f in files if not _suffix(f) or probe(f).count > 1]  # images, not single-band files
    if len(files) > 1 and whole:  # an image with its mask beside it (``<product>.tif``, ``<product>_SCL.tif``)
        sidecars = [f for f in files if f not in whole]
        if len(whole) > 1 or len(sidecars) > 1 or not is_mask_name(_suffix(sidecars[0])):
            raise SourceError(
                f"is one of the files {[f.name for f in files]} that share one date's name; a date is one "
                "multi-band image (with its mask file beside it: <name>_SCL.tif, <name>_Fmask.tif) or one "
                "single-band file per band, named by a band suffix (<name>_B04.tif)", files[0])
        names, layers, mask = _bands_of(whole, bands, root)
        if mask is not None:
            raise SourceError(f"has a mask band ({mask[0]}) and a mask file beside it ({sidecars[0].name}); "
                              "keep one", whole[0])
        return names, layers, (_suffix(sidecars[0]), Layer(str(sidecars[0].resolve()), 1))
    if len(files) > 1 or (_suffix(files[0]) and probe(files[0]).count == 1):
        native = check_band_names([_suffix(f) for f in files], files[0], "the band suffixes of the file names")
        native = [rename.get(n.upper(), n) for n in native] if rename else native
        layers = [Layer(str(f.resolve()), 1) for f in files]
    else:
        info = probe(files[0])
        layers = [Layer(str(files[0].resolve()), i + 1) for i in range(info.count)]
        native = None
        described = all(info.descriptions)
        if described and bands is not None and len(bands) == info.count and len(set(info.descriptions)) < info.count:
            described = False  # repeated descriptions, and a name for every band given: those name the bands
        if described:
            native = check_band_names(info.descriptions, files[0], "the band descriptions (or name every band with --bands)")
        if native is None and bands is not None:
            if len(bands) != info.count:
                raise SourceError(f"has {info.bands_said} but {len(bands)} band names were given ({list(bands)})", files[0])
            native, bands = check_band_names(bands, files[0], "--bands"), None
        native = native or [f"b{i + 1}" for i in range(info.count)]
    return split_mask(native, layers, bands, files[0])


def split_mask(names, layers, wanted, where):
    """Separate the mask band from the reflectance bands, then keep the ``wanted`` ones (all when ``None``)."""
    names = check_band_names(names, where)
    masks = [(n, layer) for n, layer in zip(names, layers) if is_mask_name(n)]
    keep = {n: layer for n, layer in zip(names, layers) if not is_mask_name(n)}
    if wanted is not None:
        wanted = [b for b in check_band_names(wanted, where, "--bands") if not is_mask_name(b)]
        missing = [b for b in wanted if b not in keep]
        if missing:
            raise SourceError(f"has no band(s) {missing}; its bands are {list(keep)}", where)
        keep = {b: keep[b] for b in wanted}
    return list(keep), list(keep.values()), masks[0] if masks else None


def external_masks(path, scenes: list[Scene], convention: str | None, grid=None):
    """Attach the masks of ``path`` (a folder of mask files named by their dates or like their images, or one
    file with one band per date in time order) to ``scenes``; return the scenes and the mask lookup table. Each
    mask must cover its image where the ``grid`` (``--grid``) reads it."""
    path = Path(path)
    if not path.exists():
        raise SourceError("does not exist (the --mask given)", path)
    times = sorted({s.time for s in scenes})  # (the tiles of a date share it)
    if path.is_file():
        info = probe(path)
        count = info.count + info.alpha  # (every band of a mask file is a mask: GDAL takes the 4th of 4 bytes for alpha)
        if count != len(times):
            raise SourceError(f"holds {count} mask bands but the series has {len(times)} dates", path)
        masks = {i: Layer(str(path.resolve()), times.index(s.time) + 1) for i, s in enumerate(scenes)}
    else:
        # each file goes to the date its name holds (to the tile of that date named like it, where the date has
        # tiles), else to the image named like it (scene_7.tif's mask is scene_7.tif or scene_7_fmask.tif): not
        # to the dates in file-name order, where mask_10 sorts before mask_2
        masks, source = {}, {}
        for f in list_rasters(path):
            key, t = _stem_key(f), _date_of(f, path)
            if t is not None:
                own = [i for i, s in enumerate(scenes) if s.time == t]
                own = [i for i in own if _stem_key(Path(scenes[i].name)) == key] or own
            else:
                own = [i for i, s in enumerate(scenes) if _stem_key(Path(s.name)) == key]
                if not own:
                    raise SourceError("has no date in its name and no image of the series is named like it: name each "
                                      "mask file by its date (2020-01-01_fmask.tif) or like its image, or give one file "
                                      "with one mask band per date", f)
            for i in own:
                if i in masks:
                    raise SourceError(f"is a second mask for {scenes[i].time:%Y-%m-%d} ({scenes[i].name}; with "
                                      f"{source[i].relative_to(path)}); keep one per date, or one per tile named like its "
                                      "image", f)
                masks[i], source[i] = Layer(str(f.resolve()), 1), f
        missing = sorted({f"{s.time:%Y-%m-%d}" for i, s in enumerate(scenes) if i not in masks})
        if missing:
            raise SourceError(f"has no mask for the date(s) {missing}", path)
    name = path.name  # it tells the convention, else a folder's files' names do (masks/2018-04-29_SCL.tif)
    if path.is_dir() and not convention and not infer_convention(name):
        named = {infer_convention(Path(m.path).name) for m in masks.values()} - {""}
        if len(named) > 1:
            raise SourceError(f"holds masks of {len(named)} conventions by their names ({', '.join(sorted(named))}); "
                              "give one --mask-convention, or one folder per convention", path)
        convention = named.pop() if named else convention
    lut = lookup_table(convention_for(name, convention, path))
    out = [Scene(s.time, s.layers, masks[i], s.name) for i, s in enumerate(scenes)]
    for s in out:
        _check_mask_cover(s, grid)
    return out, lut


def _check_mask_cover(scene: Scene, grid=None, least: float = 0.99) -> None:
    """A mask must cover its image (within the bounds of ``grid``, when it sets them): the pixels it leaves out
    would be nodata (a 100 px mask of a 160 px image was read without a word, and half the patches were never
    looked at)."""
    image, mask = probe(scene.layers[0].path), probe(scene.mask.path)
    box = mask.bounds
    if image.crs and mask.crs and image.crs != mask.crs:
        box = transform_bounds(mask.crs, image.crs, *box, densify_pts=21)
    left, bottom, right, top = image.bounds
    spec = as_grid(grid)
    if getattr(spec, "bounds", None) is not None:  # only the part of the image that the grid reads
        g = spec.bounds if not spec.crs or spec.crs == image.crs else transform_bounds(spec.crs, image.crs, *spec.bounds, densify_pts=21)
        left, bottom, right, top = max(left, g[0]), max(bottom, g[1]), min(right, g[2]), min(top, g[3])
        if left >= right or bottom >= top:
            return  # (the grid reads none of this image: its own error tells it)
    wide = max(0.0, min(right, box[2]) - max(left, box[0])) * max(0.0, min(top, box[3]) - max(bottom, box[1]))
    share = wide / ((right - left) * (top - bottom))
    if share < least:
        raise SourceError(f"covers {100 * share:.0f} % of its image {Path(scene.layers[0].path).name} ({scene.time:%Y-%m-%d}; "
                          f"mask {mask.shape[1]} x {mask.shape[0]} px, image {image.shape[1]} x {image.shape[0]} px): a mask "
                          "must cover its image, whose pixels it leaves out would be nodata", scene.mask.path)


def _mask_name(mask) -> str:
    """What tells a mask file's convention: its band suffix (``_Fmask``, ``_SCL``), or its whole name where that
    says more (``HLS_S30_..._Fmask.tif``: HLS's bit flags, not the classic Fmask codes; a review)."""
    suffix, layer = mask
    whole = Path(layer.path).name
    return whole if infer_convention(whole) == "hls" else suffix


def _stem_key(file: Path) -> str:
    """A file's name less its extension and band suffix: what an image and its mask file share."""
    return (split_band_suffix(file.stem)[0] or file.stem).lower()


def split_band_suffix(stem: str) -> tuple[str, str]:
    """``(the rest, the band)`` of a file stem that ends in a band suffix (``("LC08_..._T1", "SR_B4")``,
    ``("T31TCJ_20220301T105031", "B04")`` for ``..._B04_10m``, ``("", "B02")`` for ``B02``); ``(stem, "")``
    without one."""
    m = _BAND_SUFFIX.match(stem)
    return (m.group("stem") or "", m.group("band")) if m else (stem, "")


def _suffix(file: Path) -> str:
    return split_band_suffix(file.stem)[1]


def _band_order(name: str):
    """Natural order of band names: B2 < B8 < B8A < B11."""
    m = re.search(r"(\d+)(\D*)$", name)
    return (0, int(m.group(1)), m.group(2).lower(), name) if m else (1, 0, "", name.lower())


def _name(file: Path, root: Path) -> str:
    return str(file.relative_to(root))
