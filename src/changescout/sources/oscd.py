"""OSCD (Onera Satellite Change Detection): Sentinel-2 L1C image pairs of cities with urban change labels.

Layouts under ``root`` (both are found by :func:`list_items` and :func:`load_item`):

* one tree of city folders, as in ``../shared/data/oscd``: ``<root>/<city>/imgs_1/*.tif``, ``imgs_2/*.tif``,
  ``dates.txt`` and ``cm/<city>-cm.tif``;
* the official download, an images tree and a labels tree side by side, e.g.
  ``<root>/Onera Satellite Change Detection dataset - Images/<city>/imgs_1/...`` and
  ``<root>/Onera Satellite Change Detection dataset - Train Labels/<city>/cm/<city>-cm.tif`` (and ``Test Labels``):
  any sub-folder of ``root`` holding city folders counts, or pass ``labels_root=``.

Each date is 13 single-band GeoTIFFs (``..._B01.tif`` .. ``_B12.tif``, ``_B8A.tif``): uint16 top-of-atmosphere
reflectance x 10000 in EPSG:4326, each band at its native 10/20/60 m. Every band of both dates is warped by its own
geotransform onto the 10 m grid of ``imgs_1`` B02 (rasterio ``reproject``, bilinear, float32; DN 0, the Sentinel-2
no-data value, becomes NaN). That grid is the output grid as it is, not snapped to a patch lattice: the labels are
aligned with it pixel for pixel (its origin is the B02 file's corner, so patches still do not depend on file order).
In abudhabi the ``imgs_2`` rasters have a few pixels fewer over the same bounds; warping by geotransform (not
cropping or padding) keeps them in place. About one pixel of misregistration between the dates remains in some
cities.

Labels: ``cm/<city>-cm.tif`` holds 1 = no change, 2 = change (the dataset README says 0/1; both are read: a map
with a 0 is taken as 0/1), has no georeference and sits on the imgs_1 B02 grid. ``cm/cm.png`` (0/255) is used when
the ``.tif`` is missing. The dates come from ``dates.txt`` (``date_1: 20160120``).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import reproject

from ..cube import OutputGrid, check_band_names, make_cube, usable_mask, validate_cube
from ..errors import SourceError
from .labelled import LabelledPair
from .warp import DEFAULT_SCALE, as_grid, probe, resolve_grid

#: Band names of an OSCD cube, in Sentinel-2 order (B8A after B08, as elsewhere in changescout).
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
DATE_FOLDERS = ("imgs_1", "imgs_2")
LEVEL = "L1C"
_BAND_FILE = re.compile(r"_(B\d{2}|B8A)\.tiff?$", re.I)
_DATE_LINE = re.compile(r"^\s*date_([12])\s*:\s*(\d{8})\s*$")


OSCDItem = LabelledPair


# -- the dataset ----------------------------------------------------------------------------------------
def list_items(root, *, labelled: bool = True, labels_root=None) -> list[str]:
    """Names of the cities under ``root`` (sorted); with ``labelled`` only those that have a change label."""
    root = _existing_dir(root)
    found = cities = sorted(set().union(*(_cities_in(d) for d in _candidates(root))))
    if labelled:
        cities = [c for c in cities if _label_file(root, c, labels_root) is not None]
    if not cities:
        what = "labelled OSCD city folder (<city>/imgs_1, imgs_2 and <city>/cm/<city>-cm.tif)" if labelled else \
            "OSCD city folder (<city>/imgs_1 and imgs_2)"
        unlabelled = [_no_label(root, c, labels_root) for c in found[:5]]  # (cities there are, all without a label)
        unlabelled = f": {'; '.join(unlabelled)}{' ...' if len(found) > 5 else ''}" if found else ""
        # a city folder given itself (its imgs_1/ and imgs_2/ inside): the benchmark reads the folder of cities
        itself = " (it is a city folder itself: give the folder that holds the cities)" if all(
            (root / d).is_dir() for d in DATE_FOLDERS) else ""
        raise SourceError(f"holds no {what}, neither directly nor in a sub-folder{unlabelled}{itself}", root)
    return cities


def skipped(root, *, labels_root=None) -> list[str]:
    """What :func:`list_items` (``labelled=True``) leaves out under ``root``, one sentence each: every city with
    no change label (naming the file expected), and every sub-folder of ``root`` that is not a city folder
    (``imgs_1/`` and ``imgs_2/``) and holds neither city folders nor labels (an empty or unfinished city)."""
    root = _existing_dir(root)
    notes = []
    bases = _candidates(root)
    for city in list_items(root, labelled=False, labels_root=labels_root):
        if _label_file(root, city, labels_root) is None:
            notes.append(f"{city} skipped: {_no_label(root, city, labels_root)}")
    for base in bases[1:]:
        if _cities_in(base) or any((d / "cm").is_dir() for d in base.iterdir() if d.is_dir()):
            continue  # a tree of cities, or of their labels (the official download's layout)
        missing = " and ".join(f"{d}/" for d in DATE_FOLDERS if not (base / d).is_dir())
        notes.append(f"{base.name}/ skipped: not an OSCD city folder (it has no {missing}) and holds no city folders")
    return notes


def _no_label(root: Path, city: str, labels_root=None) -> str:
    """What a city without a change label lacks: the file expected. In the official download's layout (images
    and labels in sibling trees) the labels tree is named, not the images' folder (a review: the note sent the
    user to ``Images/<city>/cm``, where no label of that layout lies)."""
    if labels_root is None:
        trees = [b for b in _candidates(root)[1:]  # (trees of labels alone: not trees of cities with their own cm/)
                 if not _cities_in(b) and any((d / "cm").is_dir() for d in b.iterdir() if d.is_dir())]
        if trees:
            return (f"no change label, expected {city}/cm/{city}-cm.tif (or cm.png) in one of the label trees "
                    f"({', '.join(b.name for b in trees)})")
    where = (city_folder(root, city) if labels_root is None else Path(labels_root) / city) / "cm"
    return f"no change label, expected {where / f'{city}-cm.tif'} (or cm.png beside it)"


def load_item(root, city: str, *, labels_root=None, chunks: int = 1024) -> OSCDItem:
    """The cube (on the imgs_1 B02 grid, computed into memory), change label and valid mask of ``city``."""
    root = _existing_dir(root)
    folder = city_folder(root, city)
    label_path = _label_file(root, city, labels_root)
    if label_path is None:
        raise SourceError(f"no change label for {city!r}: expected {city}/cm/{city}-cm.tif (or cm.png) under {root} "
                          "or one of its sub-folders (pass labels_root= for another labels tree)", root)
    cube = open(folder, chunks=chunks).persist()  # a city is small (< 200 MB); warp it once, not per use
    label = read_label(label_path)
    shape = (cube.sizes["y"], cube.sizes["x"])
    if label.shape != shape:
        raise SourceError(f"the label is {label.shape[0]}x{label.shape[1]} px but the imgs_1 B02 grid is "
                          f"{shape[0]}x{shape[1]} px; the label must be aligned with imgs_1 B02", label_path)
    valid = np.asarray(usable_mask(cube["quality"]).all("time").values)
    files = {"images": str(folder), "label": str(label_path)}
    return OSCDItem(city, cube, label, valid, files)


def city_folder(root, city: str) -> Path:
    """The folder holding ``imgs_1``/``imgs_2`` of ``city`` (in ``root`` or one of its sub-folders)."""
    root = _existing_dir(root)
    for base in _candidates(root):
        if _is_city(base / city):
            return base / city
    raise SourceError(f"no OSCD city {city!r} (a folder {city}/ with imgs_1/ and imgs_2/); "
                      f"cities found: {list_items(root, labelled=False)}", root)


def read_label(path) -> np.ndarray:
    """An OSCD change map as an ``(H, W)`` bool array (True = change), from ``<city>-cm.tif`` or ``cm.png``."""
    path = Path(path)
    raw = _read_plain(path)
    values = set(np.unique(raw).tolist())
    if path.suffix.lower() == ".png":
        change = raw > 127
    elif values <= {1, 2}:
        change = raw == 2
    elif values <= {0, 1}:
        change = raw == 1
    else:
        raise SourceError(f"a change map holds 1 = no change, 2 = change (or 0/1), found values {sorted(values)[:8]}", path)
    return np.asarray(change, bool)


def read_dates(folder) -> list[pd.Timestamp]:
    """The two dates of a city folder, from its ``dates.txt`` (``date_1: YYYYMMDD``, ``date_2: YYYYMMDD``)."""
    path = Path(folder) / "dates.txt"
    if not path.is_file():
        raise SourceError("no dates.txt: add one with the lines 'date_1: YYYYMMDD' and 'date_2: YYYYMMDD' (as OSCD's "
                          "cities have; changescout run also takes --dates D1,D2)", folder)
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := _DATE_LINE.match(line):
            try:
                found[int(m.group(1))] = pd.Timestamp(m.group(2))
            except ValueError:
                raise SourceError(f"date_{m.group(1)}: {m.group(2)} is not a date (YYYYMMDD)", path) from None
    if set(found) != {1, 2}:
        raise SourceError("expected the lines 'date_1: YYYYMMDD' and 'date_2: YYYYMMDD'", path)
    if not found[2] > found[1]:  # imgs_2 is the later image: swapped dates would turn every change around
        raise SourceError(f"date_2 ({found[2]:%Y-%m-%d}) must be after date_1 ({found[1]:%Y-%m-%d}): imgs_1 holds "
                          "the earlier image", path)
    return [found[1], found[2]]


def band_files(folder) -> dict[str, Path]:
    """``{band name: file}`` of one date folder (``imgs_1`` or ``imgs_2``); :class:`SourceError` if incomplete."""
    folder = Path(folder)
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()) if folder.is_dir() else []:
        if m := _BAND_FILE.search(f.name):
            band = m.group(1).upper()
            if band in found:
                raise SourceError(f"two files for band {band}: {found[band].name} and {f.name}", folder)
            found[band] = f
    missing = [b for b in BANDS if b not in found]
    if missing:
        raise SourceError(f"has no file for band(s) {missing} (expected 13 files named like ..._B01.tif .. _B8A.tif)", folder)
    return {b: found[b] for b in BANDS}


# -- the SeriesCube source ---------------------------------------------------------------------------------
def sniff(path) -> bool:
    """A city folder: ``imgs_1/`` and ``imgs_2/`` sub-folders."""
    return _is_city(Path(path))


def open(path, *, dates=None, bands=None, grid=None, patch_size=16, mask=None, mask_convention=None,
         chunks=1024, level=None, scale_factor=None, offset=None):
    """Open an OSCD city folder as a two-date SeriesCube (see the module docstring).

    ``grid=None`` keeps the imgs_1 B02 grid; another grid (``GridSpec``, its text form or an ``OutputGrid``) is
    resolved from B02 as for other sources. ``dates`` overrides ``dates.txt`` (imgs_1's date then imgs_2's,
    increasing); ``bands`` selects bands.
    """
    folder = Path(path)
    if not _is_city(folder):
        raise SourceError("is not an OSCD city folder (expected imgs_1/ and imgs_2/ sub-folders)", folder)
    if mask is not None:
        raise SourceError("OSCD images have no quality mask; --mask does not apply", folder)
    times = read_dates(folder) if dates is None else _two_dates(dates, folder)
    files = [band_files(folder / d) for d in DATE_FOLDERS]
    names = list(BANDS) if bands is None else check_band_names(bands, folder, "--bands")
    unknown = [b for b in names if b not in BANDS]
    if unknown:
        raise SourceError(f"has no band(s) {unknown}; its bands are {list(BANDS)}", folder)
    ref = probe(files[0]["B02"])
    if grid is None:
        t = ref.transform
        out = OutputGrid(ref.crs, (t.a, t.b, t.c, t.d, t.e, t.f), ref.shape)
    else:
        footprints = sorted({(probe(f).crs, probe(f).bounds) for d in files for f in d.values()})
        out = resolve_grid(as_grid(grid), ref, footprints, patch_size)
    scale = DEFAULT_SCALE if scale_factor is None else float(scale_factor)
    off = float(offset or 0.0)
    per_date = [
        da.from_delayed(dask.delayed(_warp_date)([str(d[b]) for b in names], out, scale, off),
                        shape=(len(names), *out.shape), dtype=np.float32)
        for d in files
    ]
    data = da.stack(per_date).rechunk((1, -1, chunks, chunks))
    attrs = {
        "label": folder.name,
        "source": str(folder.resolve()),
        "source_files": sorted(str(d[b].resolve()) for d in files for b in names),
        "level": str(level or LEVEL),
        "scale_factor": scale,
        "offset": off,
        "dataset": "oscd",
    }
    return validate_cube(make_cube(data, times, names, out, attrs=attrs))


def _warp_date(paths: list[str], grid: OutputGrid, scale: float, offset: float) -> np.ndarray:
    """The bands ``paths`` of one date warped onto ``grid``: bilinear, float32 reflectance, NaN where no data."""
    out = np.full((len(paths), *grid.shape), np.nan, np.float32)
    for i, path in enumerate(paths):
        try:
            with rasterio.open(path) as src:
                if src.crs is None or src.transform.is_identity:
                    raise SourceError("has no georeferencing (CRS and geotransform): it cannot be put on the city's grid", path)
                with warnings.catch_warnings():  # rasterio's own warning for the destination array, georeferenced here
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    reproject(rasterio.band(src, 1), out[i], src_nodata=src.nodata if src.nodata is not None else 0,
                              dst_transform=grid.affine, dst_crs=grid.crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
        except RasterioError as exc:
            raise SourceError(f"cannot read the raster ({exc})", path) from exc
    return out * np.float32(scale) + np.float32(offset)


# -- helpers ----------------------------------------------------------------------------------------------
def _existing_dir(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise SourceError("does not exist or is not a folder", root)
    return root


def _candidates(root: Path) -> list[Path]:
    """``root`` and its sub-folders (not hidden) that are not themselves city folders: where trees of cities live."""
    subs = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and not _is_city(p)]
    return [root, *subs]


def _cities_in(base: Path) -> set[str]:
    return {p.name for p in base.iterdir() if _is_city(p)} if base.is_dir() else set()


def _is_city(path: Path) -> bool:
    return all((path / d).is_dir() for d in DATE_FOLDERS)


def _label_file(root: Path, city: str, labels_root=None) -> Path | None:
    bases = [Path(labels_root)] if labels_root is not None else _candidates(root)
    for base in bases:
        for name in (f"{city}-cm.tif", f"{city}-cm.tiff", "cm.png"):
            if (base / city / "cm" / name).is_file():
                return base / city / "cm" / name
    return None


def _read_plain(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.read(1)
    except RasterioError as exc:
        raise SourceError(f"not a readable raster ({exc})", path) from exc


def _two_dates(dates, where) -> list[pd.Timestamp]:
    from .dates import check_increasing, to_times

    times = to_times(dates, where)
    if len(times) != 2:
        raise SourceError(f"an OSCD city has 2 dates, {len(times)} were given", where)
    check_increasing(times, where, "imgs_1/ and imgs_2/")
    return times

