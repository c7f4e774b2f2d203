"""DynamicEarthNet (Toker et al., CVPR 2022): daily Planet Fusion cubes with monthly land-cover labels.

Layout under ``root`` (the official download, unzipped):

* images: ``<root>/planet.<zone>/<cube>/PF-SR/YYYY-MM-DD.tif`` (a ``<lon-lat>`` folder between the zone and the
  cube, as inside the official zips, is accepted too): daily Planet Fusion, 1024 x 1024 px at 3 m, georeferenced,
  4 bands blue, green, red, NIR, surface reflectance x 10000 (read as ``DN / 10000``, level ``"L3"``);
* labels: ``<root>/labels/<cube>_<zone>/Labels/Raster/<tile>/<tile>-YYYY_MM_01.tif`` (``YYYY-MM-01`` also occurs),
  one per month, 7 bands, one per class of :data:`CLASSES`; 255 in the band of a pixel's class.

:func:`load_labels` turns the labels into class maps, ``(H, W)`` uint8 class indices with :data:`IGNORE` (255)
where a pixel has no class, several classes, or snow & ice (ignored, as in the paper's benchmark), and into the
binary change between consecutive labelled months (0/1, :data:`IGNORE` where either month is ignored).

As a SeriesCube source (``changescout run <root>/planet.<zone>/<cube>``), ``images=`` chooses the dates:

* ``"labelled"`` (the default when the labels are found beside the images): the image of the first day of each
  month that has a label (the earliest image of that month when the first is missing; months without any image
  are left out);
* ``"monthly"`` (the default without labels): the first image of every month;
* ``"all"``: every daily image.

The output grid is the images' own grid (not snapped to a patch lattice), so labels line up pixel for pixel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import xarray as xr
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject

from ..cube import OutputGrid, check_band_names, grid_of
from ..errors import ConfigError, SourceError
from .dates import to_times
from .warp import Layer, Scene, as_grid, open_scenes, probe, resolve_grid

BANDS = ("blue", "green", "red", "nir")
CLASSES = ("impervious", "agriculture", "forest_other_vegetation", "wetlands", "soil", "water", "snow_ice")
#: Class indices that are ignored (set to :data:`IGNORE`) in the class maps: snow & ice.
IGNORED_CLASSES = (6,)
IGNORE = 255
LEVEL = "L3"
IMAGE_RULES = ("labelled", "monthly", "all")
_IMAGE_NAME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})\.tiff?$", re.I)
_LABEL_NAME = re.compile(r"(\d{4})[-_](\d{2})[-_](\d{2})\.tiff?$", re.I)
_IMAGE_PATTERNS = ("planet*/*/PF-SR", "planet*/*/*/PF-SR", "planet*/*/*/*/PF-SR")


@dataclass(eq=False)
class Labels:
    """Monthly class maps and the change between consecutive labelled months of one cube.

    ``classes`` ``(T, H, W)`` uint8 (index into :data:`CLASSES`, :data:`IGNORE` = ignore); ``change``
    ``(T - 1, H, W)`` uint8, 1 where the class of month ``t + 1`` differs from month ``t``, 0 where it is the
    same, :data:`IGNORE` where either is ignored. ``times`` are the months' first days.
    """

    times: pd.DatetimeIndex
    classes: np.ndarray
    change: np.ndarray
    grid: OutputGrid | None
    files: list = field(default_factory=list)

    @property
    def pairs(self) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        return list(zip(self.times[:-1], self.times[1:]))

    def binary(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(label, valid)`` ``(H, W)`` bool arrays of the change between month ``i`` and ``i + 1``."""
        return self.change[i] == 1, self.change[i] != IGNORE


@dataclass(eq=False)
class DynamicEarthNetItem:
    """One labelled cube: the monthly SeriesCube (lazy) and its labels, on the same grid and months."""

    name: str
    cube: xr.DataArray
    labels: Labels


# -- the dataset ----------------------------------------------------------------------------------------
def list_items(root, *, labelled: bool = True) -> list[str]:
    """The cube ids under ``root`` (sorted); with ``labelled`` only those that have at least one label."""
    root = _existing_dir(root)
    cubes = sorted(_image_dirs(root))
    if labelled:
        cubes = [c for c in cubes if _label_dir(root / "labels", c) is not None]
    if not cubes:
        what = "cube with images and labels" if labelled else "cube"
        raise SourceError(f"holds no DynamicEarthNet {what} (planet.<zone>/<cube>/PF-SR/YYYY-MM-DD.tif"
                          f"{', labels/<cube>_<zone>/Labels/Raster/<tile>/<tile>-YYYY_MM_01.tif' if labelled else ''})", root)
    return cubes


def skipped(root) -> list[str]:
    """Sentences naming what a benchmark leaves out under ``root``: the cubes that have images but no labels (a
    label folder named otherwise than ``labels/<cube>_<zone>`` is the usual cause), the labelled months that
    have no image, and the cubes left with fewer than two labelled months with an image (no pair); none when
    nothing is left out. The last two were left out without a word (a review)."""
    dirs = _image_dirs(_existing_dir(root))
    cubes = sorted(dirs)
    lacking = [c for c in cubes if _label_dir(Path(root) / "labels", c) is None]
    out = []
    if lacking and len(lacking) < len(cubes):  # (none labelled: list_items refuses the root, naming the layout)
        more = f" and {len(lacking) - 8} more" if len(lacking) > 8 else ""
        out.append(f"{len(lacking)} cube(s) skipped: images but no labels found (expected labels/<cube>_<zone>/Labels/"
                   f"Raster/<tile>/<tile>-YYYY_MM_01.tif): {', '.join(lacking[:8])}{more}")
    for cube in (c for c in cubes if c not in lacking):
        imaged = {t.to_period("M").to_timestamp() for t in _image_files(dirs[cube])}
        labelled = list(label_files(root, cube))
        unseen = [f"{t:%Y-%m}" for t in labelled if t not in imaged]
        if unseen:
            out.append(f"cube {cube}: the labelled month(s) {unseen} have no image (PF-SR/YYYY-MM-DD.tif): left out")
        if len(labelled) - len(unseen) < 2:
            out.append(f"cube {cube}: fewer than two labelled months with an image: no pair to score")
    return out


def image_dir(root, cube: str) -> Path:
    """The ``PF-SR`` folder of ``cube``."""
    dirs = _image_dirs(_existing_dir(root))
    if cube not in dirs:
        raise SourceError(f"no images of the cube {cube!r} (planet.<zone>/{cube}/PF-SR/); "
                          f"cubes found: {sorted(dirs)[:8]}", root)
    return dirs[cube]


def label_files(root, cube: str) -> dict[pd.Timestamp, Path]:
    """``{month (first day): label file}`` of ``cube``, sorted by month; empty when it has no labels."""
    folder = _label_dir(Path(root) / "labels", cube)
    return {} if folder is None else _label_files_in(folder)


def load_labels(root, cube: str, *, months=None, grid: OutputGrid | None = None, whole: bool = False) -> Labels:
    """The monthly class maps and consecutive changes of ``cube`` (see :class:`Labels`).

    ``months`` keeps those months only (dates in the month, e.g. the cube's dates). ``grid`` puts the maps on
    that grid (nearest; :data:`IGNORE` outside the label footprint); by default they stay on their own grid.
    ``whole``: a label must cover the whole ``grid`` (the cube's images, as the benchmark scores them), else a
    :class:`SourceError` names it (a label cut short left its pixels out of the scores without a word).
    """
    files = label_files(root, cube)
    if not files:
        raise SourceError(f"no labels of the cube {cube!r} (labels/{cube}_<zone>/Labels/Raster/<tile>/*.tif)", root)
    if months is not None:
        wanted = [t.to_period("M").to_timestamp() for t in pd.DatetimeIndex(to_times(months))]
        missing = [f"{t:%Y-%m}" for t in wanted if t not in files]
        if missing:
            raise SourceError(f"the cube {cube!r} has no label for the month(s) {missing}", root)
        files = {t: files[t] for t in wanted}
    maps, label_grid = [], None
    for path in files.values():
        classes, own = _read_classes(path)
        if grid is not None:
            classes = _to_grid(classes, own, grid, path, whole)
        elif label_grid is not None and own != label_grid:
            raise SourceError(f"is not on the grid of {next(iter(files.values())).name}; pass grid= to align the labels", path)
        if label_grid is None:
            label_grid = grid or own
        maps.append(classes)
    classes = np.stack(maps)
    times = pd.DatetimeIndex(list(files)).as_unit("ns")
    return Labels(times, classes, change_maps(classes), label_grid, [str(p) for p in files.values()])


def load_item(root, cube: str, *, chunks: int = 1024) -> DynamicEarthNetItem:
    """The cube's labelled months as a SeriesCube (see the module docstring) with their labels on its grid."""
    root = _existing_dir(root)
    labelled = label_files(root, cube)
    if not labelled:
        raise SourceError(f"no labels of the cube {cube!r} (labels/{cube}_<zone>/Labels/Raster/<tile>/*.tif)", root)
    series = _open_cube(image_dir(root, cube), cube, list(labelled), "labelled", chunks=chunks)
    labels = load_labels(root, cube, months=series["time"].values, grid=grid_of(series), whole=True)
    return DynamicEarthNetItem(cube, series, labels)


def decode_labels(raw: np.ndarray) -> np.ndarray:
    """A 7-band one-hot label (255 in the band of the class) as ``(H, W)`` uint8 class indices, :data:`IGNORE`
    where no band or several bands are set, or where the class is ignored (:data:`IGNORED_CLASSES`)."""
    if raw.ndim != 3 or raw.shape[0] != len(CLASSES):
        raise SourceError(f"a DynamicEarthNet label has {len(CLASSES)} bands (one per class), got shape {raw.shape}")
    hot = raw == 255
    classes = np.argmax(hot, axis=0).astype(np.uint8)
    ignore = (hot.sum(axis=0) != 1) | np.isin(classes, IGNORED_CLASSES)
    return np.where(ignore, np.uint8(IGNORE), classes).astype(np.uint8)


def change_maps(classes: np.ndarray) -> np.ndarray:
    """Binary change between consecutive class maps ``(T, H, W)``: ``(T - 1, H, W)`` uint8 0/1, :data:`IGNORE`
    where either month is ignored."""
    before, after = classes[:-1], classes[1:]
    change = (before != after).astype(np.uint8)
    return np.where((before == IGNORE) | (after == IGNORE), np.uint8(IGNORE), change).astype(np.uint8)


# -- the SeriesCube source ---------------------------------------------------------------------------------
def sniff(path) -> bool:
    """A cube folder (holding ``PF-SR/``) or a ``PF-SR`` folder of ``YYYY-MM-DD.tif`` images."""
    p = Path(path)
    folder = p / "PF-SR" if (p / "PF-SR").is_dir() else p
    return folder.is_dir() and folder.name == "PF-SR" and any(_IMAGE_NAME.match(f.name) for f in folder.iterdir())


def open(path, *, images=None, labels_root=None, dates=None, bands=None, grid=None, patch_size=16, mask=None,
         mask_convention=None, chunks=1024, level=None, scale_factor=None, offset=None):
    """Open a cube folder (or its ``PF-SR`` folder) as a SeriesCube (see the module docstring).

    ``labels_root`` is the folder of ``<cube>_<zone>`` label folders (found by default in a ``labels/`` folder
    beside an ancestor of the cube). ``dates=[...]`` picks the images of those days instead of ``images=``.
    """
    p = Path(path)
    pfsr = p / "PF-SR" if (p / "PF-SR").is_dir() else p
    if not sniff(pfsr):
        raise SourceError("is not a DynamicEarthNet cube folder (expected PF-SR/YYYY-MM-DD.tif)", p)
    if mask is not None:
        raise SourceError("Planet Fusion images are gap-filled and have no quality mask; --mask does not apply", p)
    cube = pfsr.parent.name
    if labels_root is not None:
        folder = _label_dir(Path(labels_root), cube)
    else:
        folder = next((d for a in list(pfsr.parents)[1:6] if (d := _label_dir(a / "labels", cube))), None)
    months = list(_label_files_in(folder)) if folder is not None else None
    if images is None:
        images = "labelled" if months else "monthly"
    return _open_cube(pfsr, cube, months, images, dates=dates, bands=bands, grid=grid, patch_size=patch_size,
                      chunks=chunks, level=level, scale_factor=scale_factor, offset=offset)


def _open_cube(pfsr: Path, cube: str, months, images: str, *, dates=None, bands=None, grid=None, patch_size=16,
               chunks=1024, level=None, scale_factor=None, offset=None):
    files = _image_files(pfsr)
    chosen = _select(files, months, images, dates, pfsr)
    names = list(BANDS)
    scenes = [Scene(t, tuple(Layer(str(f.resolve()), i + 1) for i in range(len(names))), None, f.name)
              for t, f in chosen.items()]
    first = probe(next(iter(chosen.values())))
    if first.count != len(names):
        raise SourceError(f"has {first.count} bands; a Planet Fusion image has 4 (blue, green, red, NIR)", first.path)
    if grid is None:
        t = first.transform
        out = OutputGrid(first.crs, (t.a, t.b, t.c, t.d, t.e, t.f), first.shape)
    else:
        out = resolve_grid(as_grid(grid), first, [(first.crs, first.bounds)], patch_size)
    series = open_scenes(scenes, names, source=pfsr.parent, grid=out, patch_size=patch_size, chunks=chunks,
                         scale_factor=scale_factor, offset=offset, level=level or LEVEL)
    series.attrs.update(label=cube, dataset="dynamicearthnet", images=images if dates is None else "dates",
                        product="Planet Fusion surface reflectance (PF-SR)")
    if bands is not None:
        bands = check_band_names(bands, pfsr, "--bands")
        unknown = [b for b in bands if b not in names]
        if unknown:
            raise SourceError(f"has no band(s) {unknown}; its bands are {names}", pfsr)
        series = series.sel(band=bands)
    return series


def _select(files: dict[pd.Timestamp, Path], months, images: str, dates, where) -> dict[pd.Timestamp, Path]:
    """The images of the chosen dates, by rule ``images`` or by explicit ``dates``."""
    if dates is not None:
        wanted = to_times(dates, where)
        missing = [f"{t:%Y-%m-%d}" for t in wanted if t not in files]
        if missing:
            raise SourceError(f"has no image of the date(s) {missing}", where)
        return {t: files[t] for t in sorted(wanted)}
    if images not in IMAGE_RULES:
        raise ConfigError(f"images must be one of {list(IMAGE_RULES)}, got {images!r}")
    if images == "all":
        return files
    if images == "labelled" and not months:
        raise SourceError("no labels found for images='labelled'; pass labels_root= or images='monthly'", where)
    first_of_month: dict[pd.Timestamp, pd.Timestamp] = {}
    for t in files:  # sorted, so the first kept is the earliest of its month
        first_of_month.setdefault(t.to_period("M").to_timestamp(), t)
    keep = [m for m in (months if images == "labelled" else first_of_month) if m in first_of_month]
    if not keep:
        raise SourceError("has no image in any labelled month", where)
    return {first_of_month[m]: files[first_of_month[m]] for m in keep}


# -- helpers ----------------------------------------------------------------------------------------------
def _existing_dir(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise SourceError("does not exist or is not a folder", root)
    return root


def _image_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pattern in _IMAGE_PATTERNS:
        for pfsr in sorted(root.glob(pattern)):
            cube = pfsr.parent.name
            if cube in found and found[cube] != pfsr:
                raise SourceError(f"the cube {cube!r} is in two places: {found[cube]} and {pfsr}", root)
            found[cube] = pfsr
    return found


def _image_files(pfsr: Path) -> dict[pd.Timestamp, Path]:
    files = {}
    for f in sorted(pfsr.iterdir()):
        if m := _IMAGE_NAME.match(f.name):
            files[pd.Timestamp(int(m.group(1)), int(m.group(2)), int(m.group(3)))] = f
    if not files:
        raise SourceError("holds no image named YYYY-MM-DD.tif", pfsr)
    return files


def _label_dir(labels: Path, cube: str) -> Path | None:
    if not labels.is_dir():
        return None
    hits = sorted(d for d in labels.glob(f"{cube}_*") if (d / "Labels" / "Raster").is_dir())
    return hits[0] / "Labels" / "Raster" if hits else None


def _label_files_in(raster: Path) -> dict[pd.Timestamp, Path]:
    files: dict[pd.Timestamp, Path] = {}
    for f in sorted(raster.rglob("*")):
        if (m := _LABEL_NAME.search(f.name)) and f.is_file():
            month = pd.Timestamp(int(m.group(1)), int(m.group(2)), 1)
            if month in files:
                raise SourceError(f"two labels for {month:%Y-%m}: {files[month].name} and {f.name}", raster)
            files[month] = f
    return dict(sorted(files.items()))


def _read_classes(path: Path) -> tuple[np.ndarray, OutputGrid | None]:
    try:
        with rasterio.open(path) as src:
            raw = src.read()
            t = src.transform
            own = OutputGrid(src.crs.to_string(), (t.a, t.b, t.c, t.d, t.e, t.f), src.shape) if src.crs else None
    except RasterioError as exc:
        raise SourceError(f"not a readable raster ({exc})", path) from exc
    try:
        return decode_labels(raw), own
    except SourceError as exc:
        raise SourceError(exc.message, path) from exc


def _where(grid: OutputGrid) -> str:
    """A grid's bounds, in messages."""
    return f"{', '.join(f'{v:.0f}' for v in grid.bounds)} in {grid.crs}"


#: The least share of its images' grid a label must cover when it must cover them whole (edge pixels warped).
WHOLE_COVER = 0.99


def _to_grid(classes: np.ndarray, own: OutputGrid | None, grid: OutputGrid, path, whole: bool = False) -> np.ndarray:
    if own is None:
        if classes.shape != tuple(grid.shape):
            raise SourceError(f"the label has no georeference and is {classes.shape} px, not the grid's {grid.shape}", path)
        return classes
    if own == grid or (own.shape == tuple(grid.shape) and np.allclose(own.transform, grid.transform)
                       and own.pyproj_crs == grid.pyproj_crs):
        return classes
    out = np.full(grid.shape, IGNORE, np.uint8)
    reproject(classes, out, src_transform=Affine(*own.transform), src_crs=own.crs, src_nodata=IGNORE,
              dst_transform=grid.affine, dst_crs=grid.crs, dst_nodata=IGNORE, resampling=Resampling.nearest)
    if whole:  # the share of the grid that the label's footprint covers
        cover = np.zeros(grid.shape, np.uint8)
        reproject(np.ones(classes.shape, np.uint8), cover, src_transform=Affine(*own.transform), src_crs=own.crs,
                  src_nodata=0, dst_transform=grid.affine, dst_crs=grid.crs, dst_nodata=0, resampling=Resampling.nearest)
        if cover.mean() < WHOLE_COVER:
            raise SourceError(f"covers {100 * cover.mean():.0f} % of the images it labels (its bounds {_where(own)}; the "
                              f"images' {_where(grid)}): a label must cover its images (a file cut short, or of other images?)", path)
    if (out == IGNORE).all() and (classes != IGNORE).any():  # (scored, the item was an empty row of the tables)
        raise SourceError(f"lies off the images it labels (its bounds {_where(own)}; the images' {_where(grid)}): a label of other "
                          "images, or one whose georeference is wrong", path)
    return out
