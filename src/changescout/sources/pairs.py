"""Bi-temporal image pairs with change labels, LEVIR-CD style: ``<root>/A/``, ``<root>/B/``, ``<root>/label/``.

The three folders hold same-named images (matched by file name without extension; PNG, TIF or JPG): ``A`` the
first date, ``B`` the second, ``label`` the change mask (0 = no change, 255 = change; a 0/1 mask is read too; an
RGB label is change wherever any of its colour bands is set, whatever the colour: see :func:`read_label`).
Images are RGB uint8 (an alpha band is dropped); reflectance-like values are ``DN / 255``, bands
``red``, ``green``, ``blue``. Other integer images (uint16...) are refused: convert them to 8-bit RGB, or give
``scale_factor=`` from Python.

Such pairs carry neither a CRS nor dates:

* coordinates are **pixels**: the cube's CRS is :data:`PIXEL_CRS` (a local engineering CRS, unit "pixel") with the
  transform ``(1, 0, 0, 0, -1, H)``, so ``x = col + 0.5`` and ``y = H - row - 0.5``; ``attrs["crs_fallback"]`` is
  ``"pixel"`` (see :func:`is_pixel_grid`). A pair whose ``A`` image is a georeferenced GeoTIFF keeps its CRS; a
  ``B`` image georeferenced on another grid is refused (the pair is compared pixel for pixel).
* the two dates are placeholders, :data:`PLACEHOLDER_DATES`; ``attrs["dates"]`` says so (LEVIR-CD pairs are
  5 to 14 years apart, at dates the files do not tell).

The output grid is the image grid as it is (not snapped to a patch lattice), so the label lines up pixel for pixel.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import rasterio
import xarray as xr
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from ..cube import OutputGrid, check_band_names, make_cube, validate_cube
from ..errors import SourceError
from .labelled import LabelledPair

BANDS = ("red", "green", "blue")
FOLDERS = ("A", "B", "label")
PLACEHOLDER_DATES = ("2000-01-01", "2001-01-01")
#: A local engineering CRS whose unit is one image pixel: the CRS of cubes made from non-georeferenced pairs.
PIXEL_CRS = ('ENGCRS["changescout pixel grid",EDATUM["image pixels"],CS[Cartesian,2],'
             'AXIS["x",east,ORDER[1],LENGTHUNIT["pixel",1]],AXIS["y",north,ORDER[2],LENGTHUNIT["pixel",1]]]')
_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


PairItem = LabelledPair


def is_pixel_grid(cube: xr.DataArray) -> bool:
    """Whether ``cube`` is in pixel coordinates (no real CRS; see the module docstring)."""
    return cube.attrs.get("crs_fallback") == "pixel"


def has_placeholder_dates(cube: xr.DataArray) -> bool:
    """Whether ``cube``'s dates stand in for dates the pair does not have (:data:`PLACEHOLDER_DATES`)."""
    return str(cube.attrs.get("dates", "")).startswith("placeholder")


# -- the dataset ----------------------------------------------------------------------------------------
def list_items(root, *, labelled: bool = True) -> list[str]:
    """Names (file names without extension) of the pairs under ``root``, sorted.

    :class:`SourceError` naming the file when a name of ``A`` is missing from ``B`` (or from ``label`` when
    ``labelled``), or the other way round.
    """
    root = Path(root)
    folders = FOLDERS if labelled else FOLDERS[:2]
    found = {name: _images(root / name) for name in folders}
    names = set(found["A"])
    for name in folders[1:]:
        other = set(found[name])
        if other - names:
            first = sorted(other - names)[0]
            raise SourceError(f"has no counterpart A/{first}.*; A, B and label need the same file names", found[name][first])
        if names - other:
            first = sorted(names - other)[0]
            raise SourceError(f"has no counterpart {name}/{first}.*; A, B and label need the same file names",
                              found["A"][first])
    if not names:
        raise SourceError("A/ holds no image (.png, .tif, .jpg)", root / "A")
    return sorted(names)


def load_item(root, name: str, *, chunks: int = 1024) -> PairItem:
    """The cube, change label and valid mask of the pair ``name`` (see :func:`list_items`)."""
    root = Path(root)
    label_path = _find(root / "label", name)
    cube = open(root, item=name, chunks=chunks).persist()
    label = read_label(label_path)
    if label.shape != (cube.sizes["y"], cube.sizes["x"]):
        raise SourceError(f"the label is {label.shape[0]}x{label.shape[1]} px but A/{name} is "
                          f"{cube.sizes['y']}x{cube.sizes['x']} px", label_path)
    valid = np.asarray((cube["quality"] == 0).all("time").values)
    files = {"A": cube.attrs["source_files"][0], "B": cube.attrs["source_files"][1], "label": str(label_path)}
    return PairItem(name, cube, np.asarray(label, bool), valid, files)


def read_label(path) -> np.ndarray:
    """A change mask as an ``(H, W)`` bool array, True = change.

    A pixel is change where its value is set: from 128 up in a 0..255 mask (0/255; a lossy JPEG's noise around 0
    and 255 stays on its side), 1 in a 0/1 mask (no value above 1). A multi-band (RGB) mask is change wherever
    **any** of its colour bands is set, whatever the colour (white, red, green or blue change all read as change);
    an alpha band is ignored, and a palette image is read through its colours.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                data = src.read()
                interp = list(src.colorinterp)
                colormap = src.colormap(1) if interp and interp[0] == ColorInterp.palette else None
    except RasterioError as exc:
        raise SourceError(f"not a readable image ({exc})", path) from exc
    if colormap is not None:  # palette indices -> their RGB colours
        lut = np.zeros((int(data.max()) + 1, 3), np.uint8)
        for index, rgba in colormap.items():
            if index < len(lut):
                lut[index] = rgba[:3]
        data = np.moveaxis(lut[data[0]], -1, 0)
    elif data.shape[0] > 1:
        colour = [i for i, c in enumerate(interp) if c != ColorInterp.alpha]
        data = data[colour or [0]]
    return (data >= (128 if data.max() > 1 else 1)).any(axis=0)


# -- the SeriesCube source ---------------------------------------------------------------------------------
def sniff(path) -> bool:
    """A folder with ``A/`` and ``B/`` sub-folders, or an image in an ``A/`` folder whose sibling ``B/`` exists,
    or in ``B/`` beside an ``A/``: either image of a pair names the pair (a user holding the second date's image
    should not need ``--kind pairs`` where the first date's needs none)."""
    p = Path(path)
    if p.is_dir():
        return (p / "A").is_dir() and (p / "B").is_dir()
    other = {"A": "B", "B": "A"}.get(p.parent.name)
    return p.is_file() and other is not None and (p.parent.parent / other).is_dir() and p.suffix.lower() in _EXTENSIONS


def open(path, *, item=None, dates=None, bands=None, grid=None, patch_size=16, mask=None, mask_convention=None,
         chunks=1024, level=None, scale_factor=None, offset=None):
    """Open one pair as a two-date SeriesCube: ``path`` is the root with ``item=`` a pair name (optional when
    the root holds one pair), or an image file in ``A/`` or ``B/`` (the same pair either way). ``dates`` replaces
    the placeholder dates: A's date then B's, increasing."""
    path = Path(path)
    if path.is_file():
        root, item = path.parent.parent, path.stem
    else:
        root = path
        if item is None:
            names = list_items(root, labelled=False)
            if len(names) != 1:
                raise SourceError(_one_pair(root, names), root)
            item = names[0]
    if grid is not None or mask is not None:
        raise SourceError("an image pair is read on its own pixel grid and has no quality mask; --grid and --mask "
                          "do not apply", root)
    files = [_find(root / "A", item), _find(root / "B", item)]
    arrays, georef = zip(*(_read(f, with_georef=True) for f in files))
    for f, a in zip(files[1:], arrays[1:]):
        if a.shape[1:] != arrays[0].shape[1:]:
            raise SourceError(f"is {a.shape[1]}x{a.shape[2]} px but {files[0].name} in A/ is "
                              f"{arrays[0].shape[1]}x{arrays[0].shape[2]} px", f)
    if georef[0] and georef[1] and not _same_georef(*georef):  # stacked pixel for pixel, B would sit off its place
        raise SourceError(f"is georeferenced on another grid than {files[0].name} in A/ ({_georef_text(georef[1])} "
                          f"against {_georef_text(georef[0])}): a pair is compared pixel for pixel; warp it onto A's grid "
                          "(gdalwarp -t_srs, -te and -tr of A's), or put the two images, named by their dates, in a "
                          "folder and run that folder, which resamples every date onto one grid", files[1])
    for f, a in zip(files, arrays):
        if a.shape[0] < 3:
            raise SourceError(f"has {a.shape[0]} band(s); expected an RGB image", f)
        if a.dtype != np.uint8 and scale_factor is None:
            raise SourceError(f"holds {a.dtype} values, not 8-bit RGB: convert the images to 8-bit RGB (e.g. "
                              "gdal_translate -ot Byte -scale MIN MAX 0 255 IN OUT, with the value range of the "
                              "images), or, from Python, pass scale_factor= (file value to 0..1)", f)
    h, w = arrays[0].shape[1:]
    crs, transform = georef[0] or (PIXEL_CRS, (1.0, 0.0, 0.0, 0.0, -1.0, float(h)))
    out = OutputGrid(crs, transform, (h, w))
    scale = float(scale_factor) if scale_factor is not None else 1.0 / 255.0
    data = np.stack([a[:3] for a in arrays]).astype(np.float32) * np.float32(scale) + np.float32(offset or 0.0)
    names = list(BANDS)
    attrs = {
        "label": item,
        "source": str(root.resolve()),
        "source_files": [str(f.resolve()) for f in files],
        "level": str(level or "unknown"),
        "scale_factor": scale,
        "offset": float(offset or 0.0),
        "dataset": "pairs",
        "dates": "given" if dates is not None else f"placeholder: the pair has no dates; {PLACEHOLDER_DATES} stand for them",
    }
    if georef[0] is None:
        attrs["crs_fallback"] = "pixel"
    times = list(PLACEHOLDER_DATES) if dates is None else _two_dates(dates, root)
    cube = make_cube(da.from_array(data, chunks=(1, -1, chunks, chunks)), times, names, out, attrs=attrs)
    if bands is not None:
        bands = check_band_names(bands, root, "--bands")
        unknown = [b for b in bands if b not in names]
        if unknown:
            raise SourceError(f"has no band(s) {unknown}; its bands are {names}", root)
        cube = cube.sel(band=bands)
    return validate_cube(cube)


# -- helpers ----------------------------------------------------------------------------------------------
def _one_pair(root: Path, names: list[str]) -> str:
    """What to do with a root of several pairs: a run takes one. The command line has no ``item`` option, so the
    way that works there comes first (an image of the pair as SOURCE); ``item`` is for Python and --config."""
    more = ", ..." if len(names) > 5 else ""
    example = _find(root / "A", names[0])
    return (f"holds {len(names)} pairs, and a run takes one: pass one pair's A image as SOURCE, e.g. {example} "
            f"(pairs: {', '.join(names[:5])}{more}); from Python, item=NAME; in a --config file, "
            '"source_options": {"item": NAME}')


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise SourceError(f"missing: a pairs root holds {', '.join(f + '/' for f in FOLDERS)} with the same file names", folder)
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in _EXTENSIONS and not f.name.startswith("."):
            if f.stem in found:
                raise SourceError(f"two images named {f.stem!r}: {found[f.stem].name} and {f.name}", folder)
            found[f.stem] = f
    return found


def _find(folder: Path, name: str) -> Path:
    found = _images(folder)
    if name not in found:
        raise SourceError(f"has no image named {name!r} (.png, .tif or .jpg); A, B and label need the same file names", folder)
    return found[name]


def _read(path: Path, with_georef: bool = False):
    """``(bands, H, W)`` uint8 array of an image and, with ``with_georef``, its ``(crs, transform)`` or ``None``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                data = src.read()
                t = src.transform
                north_up = src.crs is not None and not t.b and not t.d and t.e < 0
                georef = (src.crs.to_string(), (t.a, t.b, t.c, t.d, t.e, t.f)) if north_up else None
    except RasterioError as exc:
        raise SourceError(f"not a readable image ({exc})", path) from exc
    return (data, georef) if with_georef else data


def _same_georef(a, b) -> bool:
    """Whether two ``(crs, transform)`` put the pixels of images of one shape on the same ground (to 1e-3 px)."""
    from .warp import same_crs

    (crs_a, ta), (crs_b, tb) = a, b
    return same_crs(crs_a, crs_b) and bool(np.allclose(ta, tb, rtol=0, atol=1e-3 * min(abs(ta[0]), abs(ta[4]))))


def _georef_text(g) -> str:
    crs, t = g
    return f"{crs}, origin {t[2]:.10g}, {t[5]:.10g}, pixel {t[0]:.10g} x {-t[4]:.10g}"


def _two_dates(dates, where):
    from .dates import check_increasing, to_times

    times = to_times(dates, where)
    if len(times) != 2:
        raise SourceError(f"a pair has 2 dates, {len(times)} were given", where)
    check_increasing(times, where, "the images in A/ and B/")
    return times
