"""Synthetic Sentinel-2-like series with planted changes and their ground truth.

:func:`make_series` draws a scene (crop fields, forest, grassland, villages, lakes and ponds) with seasonal
phenology, a per-date illumination/haze factor, sensor noise and **unmasked** clouds, then plants changes of
known type, place and date. :func:`plant_changes` paints the same changes and clouds into any SeriesCube (real
imagery included), choosing places from the cube's own pixels. Both return the cube and a :class:`PlantedTruth`.

Change types (:data:`CHANGE_TYPES`):

* common: ``harvest`` (a green field turns bare for 2-4 dates, then regrows), ``clearcut`` (a forest polygon
  turns to slash and bare soil, slow regrowth);
* rare (``rare_per_type`` instances each): ``construction`` (vegetation -> roofs and concrete), ``road`` (a
  bright line 2-4 px wide, gently curving), ``flood`` (land -> muddy water for 2-3 dates, then back: onset and
  recession are both changes), ``drying`` (a pond -> mud, its mixed shore pixels with it; where the cube has
  no pond free, one is painted from the first date and dries at the onset).

Every change is abrupt between two consecutive dates, never at the first date. Clouds (kind ``"cloud"``) are
each present on one date only, sometimes with a shadow, and are kept off objects on the dates they change.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from rasterio import features
from scipy import ndimage, signal

from ..cube import OutputGrid, band_names, grid_of, make_cube, sentinel2_band, validate_cube
from ..errors import BandError, ConfigError, SourceError, check_param
from ..evaluate.planted import PlantedTruth

__all__ = ["BANDS", "CHANGE_TYPES", "PlantedTruth", "make_series", "open", "plant_changes", "sniff"]

BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
CHANGE_TYPES = {"harvest": "common", "clearcut": "common", "construction": "rare", "road": "rare", "flood": "rare", "drying": "rare"}
_ALIASES = {"BLUE": "B02", "GREEN": "B03", "RED": "B04", "NIR": "B08"}
#: Typical surface reflectance, in BANDS order.
_SPECTRA = {
    k: np.array(v, np.float32)
    for k, v in {
        "forest_winter": [0.035, 0.050, 0.040, 0.080, 0.150, 0.180, 0.200, 0.210, 0.160, 0.085],
        "forest_summer": [0.025, 0.045, 0.022, 0.075, 0.250, 0.310, 0.340, 0.350, 0.150, 0.065],
        "grass_dry": [0.055, 0.080, 0.085, 0.120, 0.170, 0.195, 0.210, 0.225, 0.260, 0.170],
        "grass_green": [0.035, 0.070, 0.040, 0.100, 0.260, 0.310, 0.340, 0.350, 0.210, 0.110],
        "soil": [0.070, 0.095, 0.120, 0.150, 0.180, 0.200, 0.215, 0.230, 0.300, 0.240],
        "crop": [0.030, 0.070, 0.030, 0.100, 0.300, 0.400, 0.450, 0.460, 0.200, 0.090],
        "water": [0.050, 0.060, 0.040, 0.030, 0.020, 0.018, 0.015, 0.012, 0.008, 0.005],
        "urban": [0.090, 0.100, 0.110, 0.130, 0.160, 0.170, 0.180, 0.190, 0.220, 0.190],
        "roof": [0.160, 0.180, 0.200, 0.220, 0.240, 0.250, 0.260, 0.270, 0.300, 0.270],
        "road": [0.130, 0.150, 0.170, 0.190, 0.210, 0.220, 0.230, 0.240, 0.290, 0.260],
        "slash": [0.045, 0.065, 0.075, 0.105, 0.160, 0.180, 0.195, 0.205, 0.260, 0.190],
        "floodwater": [0.070, 0.090, 0.080, 0.070, 0.050, 0.045, 0.040, 0.035, 0.020, 0.012],
        "mud": [0.060, 0.080, 0.095, 0.115, 0.135, 0.145, 0.155, 0.165, 0.200, 0.165],
        "cloud": [0.420, 0.420, 0.430, 0.440, 0.450, 0.450, 0.460, 0.460, 0.360, 0.260],
    }.items()
}
_NEW_STATE = {"harvest": "soil", "clearcut": "slash", "construction": "roof", "road": "road", "flood": "floodwater", "drying": "mud"}
GRASS, FOREST, CROP, WATER, URBAN = range(5)
#: (dormant, peak) spectra per cover class.
_COVERS = [("grass_dry", "grass_green"), ("forest_winter", "forest_summer"), ("soil", "crop"), ("water", "water"), ("urban", "urban")]


# -- public entry points ------------------------------------------------------------------------------
def make_series(
    seed: int = 0, size: int = 256, n_dates: int = 24, start: str = "2021-01-15", freq: str | None = None, patch_size: int = 16,
    n_common: int | None = None, rare_per_type: int = 2, n_clouds: int | None = None, types=None, cloud_dates: int | None = None,
) -> tuple[xr.DataArray, PlantedTruth]:
    """A ``size`` x ``size`` px, ``n_dates`` series (monthly from ``start`` unless a pandas ``freq`` is given).

    Deterministic from ``seed``. ``n_common`` instances of each common type (default 8, fewer for short or
    small series), ``rare_per_type`` of each rare type, ``n_clouds`` clouds (default a third of the dates)
    lasting ``cloud_dates`` dates each (1, the default, or 2).
    """
    params = {k: v for k, v in locals().items() if v is not None}
    for name in ("seed", "size", "n_dates", "patch_size", "n_common", "rare_per_type", "n_clouds", "cloud_dates"):
        if params.get(name) is not None:  # ("size=abc" was told as "'<' not supported between 'str' and 'int'")
            check_param("synthetic", name, params[name], 0, None, integer=True)
    if size < 128 or n_dates < 4:
        raise ConfigError(f"a synthetic series needs size >= 128 px and n_dates >= 4, got size={size}, n_dates={n_dates}")
    rng = np.random.default_rng(seed)
    times = _dates(start, n_dates, freq)
    surf, crop_fields, green = _scene(rng, size, times)
    bidx = np.arange(len(BANDS))
    plan = _plan(rng, n_dates, (size, size), n_common, rare_per_type, types)
    records = _plant_changes(surf, times, bidx, rng, plan, crop_fields, noise=0.0)
    gain = 1 + 0.03 * rng.standard_normal(n_dates)
    haze = 0.008 * np.abs(rng.standard_normal(n_dates))[:, None] * np.linspace(1, 0.1, len(BANDS))
    surf *= gain[:, None, None, None].astype(np.float32)
    surf += haze[..., None, None].astype(np.float32)
    surf += 0.004 * rng.standard_normal(surf.shape, dtype=np.float32)
    records += _plant_clouds(surf, rng, _n_clouds(n_clouds, n_dates), records, bidx, _cloud_dates(cloud_dates))
    np.clip(surf, 0, 1, out=surf)
    snap = patch_size * 10.0
    left, top = round(372_000 / snap) * snap, round(4_836_000 / snap) * snap  # near Toulouse, on whole patches
    grid = OutputGrid("EPSG:32631", (10.0, 0.0, left, 0.0, -10.0, top), (size, size))
    source = "synthetic:" + ",".join(f"{k}={'+'.join(v) if k == 'types' else v}" for k, v in params.items())
    attrs = {"label": "synthetic", "source": source, "source_kind": "synthetic", "source_files": [], "level": "synthetic"}
    cube = make_cube(da.from_array(surf, chunks=(1, -1, 256, 256)), times, BANDS, grid, attrs=attrs)
    return cube, _truth(records, times, grid, green)


def write_geotiffs(folder, seed: int = 0, size: int = 256, n_dates: int = 24) -> Path:
    """The series of :func:`make_series` as a user's folder of GeoTIFFs: one file per date named
    ``YYYY-MM-DD.tif``, int16 reflectance x 10000, band descriptions, EPSG:32631, tiled 256 px. Returns ``folder``.

    For runs that read files (the CLI on a folder, a dask cluster reading them lazily) of any size."""
    import rasterio

    cube, _ = make_series(seed=seed, size=size, n_dates=n_dates)
    grid = grid_of(cube)
    data = np.round(np.nan_to_num(cube.values, nan=0.0) * 10000).astype(np.int16)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=size, height=size, count=data.shape[1], dtype="int16", crs=grid.crs,
                   transform=rasterio.Affine(*grid.transform[:6]), tiled=True, blockxsize=256, blockysize=256)
    for t, when in enumerate(pd.DatetimeIndex(cube["time"].values)):
        with rasterio.open(folder / f"{when:%Y-%m-%d}.tif", "w", **profile) as dst:
            dst.write(data[t])
            dst.descriptions = tuple(str(b) for b in cube["band"].values)
    return folder


def plant_changes(
    cube: xr.DataArray, seed: int = 0, n_common: int | None = None, rare_per_type: int = 2, n_clouds: int | None = None, types=None,
    cloud_dates: int | None = None,
) -> tuple[xr.DataArray, PlantedTruth]:
    """Paint planted changes and clouds into ``cube`` (computed); same grid, coords and attrs plus ``planted_seed``.

    Places come from the cube's pixels: harvest where green at the date before onset and, left alone, still
    green at it (not a field the scene harvests then), clear-cuts where green on every date up to onset,
    construction on vegetation, floods and roads on dry land, drying on a pond.
    Bands are matched by name; pixels that were NaN stay NaN. ``n_common`` defaults to 8 instances of each
    common type (fewer on scenes smaller than 256 x 256 px), however few the dates.
    """
    validate_cube(cube)
    bidx = _band_index(band_names(cube))
    data = np.array(cube.values, dtype=np.float32)
    nodata = np.isnan(data)
    times = pd.DatetimeIndex(cube["time"].values)
    rng = np.random.default_rng(seed)
    if n_common is None:  # common means many: as many as in a long synthetic series, whatever the dates
        n_common = _n_common(8, data.shape[2:])
    plan = _plan(rng, len(times), data.shape[2:], n_common, rare_per_type, types)
    records = _plant_changes(data, times, bidx, rng, plan, None, noise=0.004)
    records += _plant_clouds(data, rng, _n_clouds(n_clouds, len(times)), records, bidx, _cloud_dates(cloud_dates))
    data[nodata] = np.nan
    out = cube.copy(data=da.from_array(data, chunks=cube.chunks or (1, -1, 256, 256)))
    out.attrs["planted_seed"] = seed
    return out, _truth(records, times, grid_of(cube))


def sniff(path) -> bool:
    """True for ``"synthetic"`` or ``"synthetic:key=value,..."``."""
    return str(path) == "synthetic" or str(path).startswith("synthetic:")


def open(path="synthetic", **opts) -> xr.DataArray:
    """The cube of :func:`make_series`; parameters from ``"synthetic:seed=1,size=128"`` and/or ``opts``.

    The options every source is given (``patch_size``, ``chunks``) are ignored; ``dates``, ``bands``, ``grid``
    and ``mask`` are refused (the series makes its own: a run's ``--grid`` was ignored without a word), and so
    is any other option that :func:`make_series` does not take, as in the ``synthetic:`` form.
    """
    if not sniff(path):
        raise SourceError(f"not a synthetic source: {path!r} (use 'synthetic' or 'synthetic:seed=1,size=128')")
    known = inspect.signature(make_series).parameters
    params = {}
    for item in filter(None, str(path).partition(":")[2].split(",")):
        key, _, value = item.partition("=")
        if key not in known:
            raise ConfigError(f"unknown synthetic parameter {key!r} in {path!r}; known: {', '.join(known)}")
        params[key] = [t for t in value.split("+") if t] if key == "types" else int(value) if value.lstrip("-").isdigit() else value
    given = [k for k in ("dates", "bands", "grid", "mask", "mask_convention") if opts.get(k) is not None]
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ConfigError(f"{flags} {'does' if len(given) == 1 else 'do'} not apply to the synthetic source, which makes "
                          f"its own dates, bands and grid (choose them with its parameters: {', '.join(known)})")
    unknown = sorted(set(opts) - set(known) - _COMMON_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown synthetic parameter {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    params.update({k: v for k, v in opts.items() if k in known and v is not None})
    try:
        return make_series(**params)[0]
    except TypeError as exc:  # size="big": a value of the wrong type
        raise ConfigError(f"synthetic parameters {params}: {exc}") from None


#: Options every source is given, which the synthetic series has no use for.
_COMMON_OPTIONS = {"patch_size", "chunks", "dates", "bands", "grid", "mask", "mask_convention"}


# -- scene ---------------------------------------------------------------------------------------------
def _dates(start, n, freq) -> pd.DatetimeIndex:
    if freq is None:
        return pd.DatetimeIndex([pd.Timestamp(start) + pd.DateOffset(months=i) for i in range(n)])
    return pd.date_range(start, periods=n, freq=freq)


def _scene(rng, size, times):
    """Surface reflectance ``(time, band, y, x)`` float32, the crop-field label map (0 off crops) and the crops'
    phenology weight ``(time, y, x)`` float32 (0 bare soil, up to 1 full green; NaN off crops)."""
    fields, n, y = np.zeros((size, size), np.int32), 0, 0
    while y < size:  # strips of rectangular fields
        dy, x = int(rng.integers(20, 41)), 0
        while x < size:
            dx, n = int(rng.integers(20, 49)), n + 1
            fields[y : y + dy, x : x + dx] = n
            x += dx
        y += dy
    cover = rng.choice(np.array([CROP, GRASS, URBAN]), size=n + 1, p=[0.6, 0.32, 0.08])[fields]
    cover[_smooth(rng, (size, size), size / 12) > 0.55] = FOREST
    for r in [size / 10, *rng.uniform(9, 13, 3)]:  # a lake and three ponds
        m = _blob(rng, r)
        y0, x0 = rng.integers(0, size - np.array(m.shape) + 1)
        cover[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]][m] = WATER
    is_crop = cover == CROP
    peak = np.where(is_crop, rng.uniform(80, 240, n + 1)[fields], np.where(cover == FOREST, 195.0, 130.0))
    peak += 8 * _smooth(rng, (size, size), 4)
    half = np.where(is_crop, rng.uniform(55, 100, n + 1)[fields], 182.5)
    amp = np.select([is_crop, cover == FOREST, cover == GRASS], [rng.uniform(0.75, 1, n + 1)[fields], 1.0, 0.85], 0.0)
    d = np.abs((times.day_of_year.values[:, None, None] - peak + 182.5) % 365 - 182.5)
    w = ((cover == GRASS) * 0.1 + amp * np.cos(np.pi / 2 * np.minimum(d / half, 1)) ** 2).astype(np.float32)
    bright = (rng.uniform(0.9, 1.1, n + 1)[fields] * (1 + 0.04 * _smooth(rng, (size, size), 1.5)))[..., None]
    low = np.stack([_SPECTRA[a] for a, _ in _COVERS])[cover] * bright
    high = np.stack([_SPECTRA[b] for _, b in _COVERS])[cover] * bright
    low, delta = (np.moveaxis(a, -1, 0).astype(np.float32) for a in (low, high - low))
    return low[None] + w[:, None] * delta[None], np.where(is_crop, fields, 0), np.where(is_crop[None], w, np.nan)


def _smooth(rng, shape, sigma) -> np.ndarray:
    """Smooth Gaussian noise with unit standard deviation."""
    z = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return z / (z.std() + 1e-12)


# -- shapes (local boolean masks) ----------------------------------------------------------------------
def _crop(m) -> np.ndarray:
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _raster(geom, shape) -> np.ndarray:
    return _crop(features.rasterize([geom], out_shape=shape).astype(bool))


def _blob(rng, r) -> np.ndarray:
    """Rounded, wobbly, elongated blob of radius about ``r`` px."""
    n = int(np.ceil(1.5 * r))
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
    k = np.arange(2, 5)[:, None, None]
    wobble = 1 + 0.12 * (rng.uniform(-1, 1, (3, 1, 1)) * np.cos(k * np.arctan2(yy, xx) + rng.uniform(0, 2 * np.pi, (3, 1, 1)))).sum(0)
    th, e = rng.uniform(0, np.pi), rng.uniform(0.6, 1)
    u, v = xx * np.cos(th) + yy * np.sin(th), (yy * np.cos(th) - xx * np.sin(th)) / e
    return _crop(np.hypot(u, v) <= r * wobble)


def _polygon(rng, r) -> np.ndarray:
    """Irregular straight-edged polygon of radius about ``r`` px (a forest cut)."""
    k = int(rng.integers(5, 9))
    ang = (np.arange(k) + rng.uniform(-0.3, 0.3, k)) * 2 * np.pi / k
    rad, n = r * rng.uniform(0.7, 1.1, k), int(np.ceil(1.1 * r)) + 1
    return _raster(shapely.Polygon(np.c_[n + rad * np.cos(ang), n + rad * np.sin(ang)]), (2 * n + 1, 2 * n + 1))


def _site(rng) -> np.ndarray:
    """Two or three overlapping rectangles (buildings, car parks)."""
    m = np.zeros((44, 44), bool)
    for _ in range(int(rng.integers(2, 4))):
        (h, w), (cy, cx) = rng.integers(10, 23, 2), 22 + rng.integers(-4, 5, 2)
        m[cy - h // 2 : cy - h // 2 + h, cx - w // 2 : cx - w // 2 + w] = True
    return _crop(m)


def _road(rng, length) -> np.ndarray:
    """A gently curving line ``length`` px long and 2-4 px wide."""
    width, step = int(rng.integers(2, 5)), 8.0
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.uniform(-0.12, 0.12, int(length / step)))
    pts = np.vstack([[0.0, 0.0], np.c_[np.cos(heading), np.sin(heading)].cumsum(0) * step])
    pts -= pts.min(0) - width
    shape = (int(pts[:, 1].max()) + 2 * width, int(pts[:, 0].max()) + 2 * width)
    return _raster(shapely.LineString(pts).buffer(width / 2, cap_style="flat"), shape)


def _cloud(rng, r) -> np.ndarray:
    """Soft-edged cloud opacity (0..1) of radius about ``r`` px, exactly 0 beyond 1.5 r."""
    n = int(np.ceil(1.5 * r))
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
    d = np.hypot(yy, xx) / r
    a = np.clip((1 - d + 0.3 * _smooth(rng, d.shape, r / 4)) / 0.6, 0, 1) * np.clip((1.5 - d) / 0.5, 0, 1)
    return a * a * (3 - 2 * a)


def _pasted(a, y0, x0, shape) -> np.ndarray:
    """``a`` placed with its top-left corner at ``(y0, x0)`` in a zero array of ``shape`` (clipped)."""
    out = np.zeros(shape, a.dtype)
    ys = slice(max(y0, 0), min(y0 + a.shape[0], shape[0]))
    xs = slice(max(x0, 0), min(x0 + a.shape[1], shape[1]))
    if ys.stop > ys.start and xs.stop > xs.start:
        out[ys, xs] = a[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return out


# -- planting ------------------------------------------------------------------------------------------
def _band_index(bands) -> np.ndarray:
    names = [_ALIASES.get(b.upper(), sentinel2_band(b).upper()) for b in bands]  # (B2, b02: B02)
    unknown = [b for b, n in zip(bands, names) if n not in BANDS]
    if unknown:
        raise BandError(f"cannot plant changes into bands {unknown}: known bands are {', '.join(BANDS)} (or blue, green, red, nir)")
    return np.array([BANDS.index(n) for n in names])


def _indices(data, bidx):
    """NDVI (NaN -> 0) and a water mask (NDWI > 0), both ``(time, y, x)``."""
    pos = {BANDS[i]: j for j, i in enumerate(bidx)}
    nir = pos.get("B08", pos.get("B8A"))
    if nir is None or "B03" not in pos or "B04" not in pos:
        got = [BANDS[i] for i in bidx]
        raise BandError(f"planting changes needs the green (B03), red (B04) and near-infrared (B08 or B8A) bands, got {got}")
    g, r, n = data[:, pos["B03"]], data[:, pos["B04"]], data[:, nir]
    with np.errstate(all="ignore"):
        return np.nan_to_num((n - r) / (n + r)), (g - n) / (g + n) > 0


def _with_shore(data, bidx, sl, m, o, occupied, reach: int = 2):
    """A pond of the cube, ``(sl, m)``, widened to its shore: the free pixels within ``reach`` px whose
    near-infrared before the onset ``o`` lies nearer the pond's than the land's around it. They are more water
    than land (mixed pixels, outside the NDWI > 0 mask), and a pond that dries leaves no water there: painting
    mud inside the mask alone left a dark outline of the old shore around it, which the encoders saw as an
    edge that barely moved (a real pond of the Bouconne series)."""
    h, w = data.shape[2:]
    pad = reach + 3
    y0, y1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, h)
    x0, x1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, w)
    pond = np.zeros((y1 - y0, x1 - x0), bool)
    pond[sl[0].start - y0 : sl[0].stop - y0, sl[1].start - x0 : sl[1].stop - x0] = m
    near = ndimage.binary_dilation(pond, iterations=reach)
    land = ndimage.binary_dilation(pond, iterations=pad) & ~near
    pos = {BANDS[i]: j for j, i in enumerate(bidx)}
    with np.errstate(all="ignore"):
        nir = np.nanmedian(data[:o, pos.get("B08", pos.get("B8A")), y0:y1, x0:x1], axis=0)
    water, ground = np.nanmedian(nir[pond]), np.nanmedian(nir[land]) if land.any() else np.nan
    if not np.isfinite(water) or not np.isfinite(ground) or ground <= water:
        return sl, m
    shore = near & ~pond & (nir < (water + ground) / 2) & ~occupied[y0:y1, x0:x1]
    return np.s_[y0:y1, x0:x1], pond | shore


def _onsets(rng, n, lo, hi) -> np.ndarray:
    """``n`` date indices in ``[lo, hi]``, stratified so they spread over the range, in random order."""
    return lo + np.floor((rng.permutation(n) + rng.random(n)) * (hi - lo + 1) / max(n, 1)).astype(int)


def _cloud_dates(dates) -> int:
    dates = 1 if dates is None else dates
    if dates not in (1, 2):
        raise ConfigError(f"cloud_dates must be 1 or 2 (how many dates a planted cloud lasts), got {dates!r}")
    return int(dates)


def _n_clouds(n_clouds, n_dates) -> int:
    return max(2, round(n_dates / 3)) if n_clouds is None else n_clouds


def _n_common(base: int, shape) -> int:
    """Instances of each common type: ``base`` on a 256 x 256 px scene or larger, fewer (at least 2) on smaller ones."""
    return int(max(2, min(base, round(base * 1.5 * shape[0] * shape[1] / 256**2))))


def _plan(rng, n_dates, shape, n_common, rare_per_type, types) -> list[tuple[str, int]]:
    """``(type, onset index)`` of each object to plant, rare types first."""
    types = list(CHANGE_TYPES) if types is None else list(types)
    unknown = sorted(set(types) - set(CHANGE_TYPES))
    if unknown:
        raise ConfigError(f"unknown change types {unknown}; known: {', '.join(CHANGE_TYPES)}")
    if n_common is None:
        n_common = _n_common(8 if n_dates >= 12 else 4, shape)
    plan = []
    for kind in sorted(types, key=lambda k: CHANGE_TYPES[k] != "rare"):
        n = rare_per_type if CHANGE_TYPES[kind] == "rare" else n_common
        plan += [(kind, int(o)) for o in _onsets(rng, n, 1, _last_onset(kind, n_dates))]
    return plan


def _last_onset(kind, n_dates) -> int:
    return n_dates - 1 - ((3 if n_dates >= 12 else 2) if kind == "flood" else 0)  # a flood recedes in the series


def _regions(labels, lo, hi) -> list:
    """``(slices, mask)`` of each labelled region of ``lo`` to ``hi`` pixels."""
    regions = [(sl, labels[sl] == i + 1) for i, sl in enumerate(ndimage.find_objects(labels)) if sl is not None]
    return [(sl, m) for sl, m in regions if lo <= m.sum() <= hi]


def _pick(rng, scores):
    """Random index among the best ``scores`` (>= 0.9, or the best one); None when all are negative."""
    scores = np.asarray(scores, float).ravel()
    if not scores.size or scores.max() < 0:
        return None
    return int(rng.choice(np.flatnonzero(scores >= min(0.9, scores.max()))))


def _fit(rng, m, ok, occupied):
    """``(score, (slices, m))`` at a random position off ``occupied`` among those where ``m`` best fits ``ok``."""
    m = m[: occupied.shape[0], : occupied.shape[1]]
    k = m[::-1, ::-1].astype(np.float32)
    free = signal.fftconvolve(occupied.astype(np.float32), k, mode="valid") < 0.5
    score = np.where(free, signal.fftconvolve(ok.astype(np.float32), k, mode="valid") / m.sum(), -1.0)
    i = _pick(rng, score)
    if i is None:
        return -1.0, None
    y0, x0 = np.unravel_index(i, score.shape)
    return score.flat[i], (np.s_[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]], m)


def _schedule(kind, o, times, rng):
    """Blend factor toward the original pixels per date (1 = untouched) and the end index (or None)."""
    t, n = np.arange(len(times)), len(times)
    r, end = np.where(t >= o, 0.0, 1.0), None
    if kind == "harvest":  # bare for k dates, then regrowth over three dates
        k = 2 if n < 12 else int(rng.integers(2, 5))
        r = np.where(t >= o + k, np.clip((t - o - k + 1) / 3, 0, 1), r)
    elif kind == "clearcut":  # slow regrowth
        r = np.where(t >= o, np.minimum(0.4, 0.02 * (times - times[o]).days.values / 30.44), 1.0)
    elif kind == "flood":
        end = o + (2 if n < 12 else int(rng.integers(2, 4)))
        r[end:] = 1.0
    return r, end


def _paint(data, sl, m, spec, r, tex, noise, rng):
    grain = 1 + 0.06 * tex[sl][m]
    for t in np.flatnonzero(r < 1):
        view = data[t][(slice(None), *sl)]
        new = spec[:, None] * grain + noise * rng.standard_normal((len(spec), grain.size), dtype=np.float32)
        view[:, m] = (1 - r[t]) * new + r[t] * view[:, m]


def _plant_changes(data, times, bidx, rng, plan, crop_fields, noise):
    """Paint the planned objects into ``data`` (time, band, y, x) in place; return their records."""
    shape = data.shape[2:]
    ndvi, wet = _indices(data, bidx)
    dry = ~wet.any(0)
    tex, occupied = _smooth(rng, shape, 3), np.isnan(data).any(axis=(0, 1))  # no objects on nodata
    fields = [] if crop_fields is None else _regions(crop_fields, 200, np.inf)
    road_len = min(180, 0.7 * min(shape))
    makers = {
        "harvest": lambda: np.ones(rng.integers(18, 41, 2), bool),
        "clearcut": lambda: _polygon(rng, rng.uniform(11, 20)),
        "construction": lambda: _site(rng),
        "road": lambda: _road(rng, rng.uniform(0.65, 1) * road_len),
        "flood": lambda: _blob(rng, rng.uniform(12, 22)),
        "drying": lambda: _blob(rng, rng.uniform(9, 14)),
    }

    def find(kind, o):
        """``(score, (slices, mask), is_pond)``: the best free place for ``kind`` with onset ``o``."""
        ok = {
            # green before and, left alone, still as green at the onset (NDVI down by 0.1 at most): a field the
            # scene's own crop cycle harvests at that date would be the scene's change, not the planted one (half
            # the planted harvests of seeds 0-4 were 17-72 % the background's own; a review of the truth)
            "harvest": (ndvi[o - 1] > 0.5) & (ndvi[o] > np.maximum(0.5, ndvi[o - 1] - 0.1)),
            "clearcut": (ndvi[:o].min(0) > 0.55) & dry,
            "construction": (ndvi[o - 1] > 0.4) & dry,
            "flood": (ndvi[o - 1] > 0.3) & dry,
        }.get(kind, dry)
        cands = fields if kind == "harvest" else []  # whole crop fields where the scene has them
        if kind == "drying":  # ponds of the cube
            cands = _regions(ndimage.label(wet[:o].all(0))[0], 80, 2000)
        cands = [(sl, m) for sl, m in cands if not (occupied[sl] & m).any()]
        if cands:
            scores = [1.0 if kind == "drying" else ok[sl][m].mean() for sl, m in cands]
            i = _pick(rng, scores)
            return scores[i], cands[i], kind == "drying"
        for _ in range(5):  # a new shape when one does not fit
            score, found = _fit(rng, makers[kind](), ok, occupied)
            if found:
                return score, found, False
        return -1.0, None, False

    records = []
    for kind, o0 in plan:  # at the planned onset, or the nearest one where the object finds a suitable place
        best = (-1.0, None, False, o0)
        for o in sorted(range(1, _last_onset(kind, len(times)) + 1), key=lambda o: abs(o - o0)):
            score, found, pond = find(kind, o)
            best = max(best, (score, found, pond, o), key=lambda b: b[0])
            if score >= 0.8:
                break
        _, found, pond, o = best
        if found is None:
            raise SourceError(f"no free place left to plant a {kind}: use a larger image or fewer objects (n_common, types)")
        sl, m = found
        if kind == "drying" and pond:
            sl, m = _with_shore(data, bidx, sl, m, o, occupied)
        if kind == "drying" and not pond:  # no pond to dry: paint one from the first date
            _paint(data, sl, m, _SPECTRA["water"][bidx], np.where(np.arange(len(times)) < o, 0.0, 1.0), tex, noise, rng)
        occupied[sl] |= m
        r, end = _schedule(kind, o, times, rng)
        _paint(data, sl, m, _SPECTRA[_NEW_STATE[kind]][bidx], r, tex, noise, rng)
        records.append((kind, o, end, _pasted(m, sl[0].start, sl[1].start, shape)))
    return records


def _plant_clouds(data, rng, n, records, bidx, dates: int = 1):
    """Paint ``n`` clouds (some with a shadow) that last ``dates`` dates each, kept off objects on the dates
    they change. Two dates: the same cloud on consecutive composites of overlapping periods."""
    n_t, _, h, w = data.shape
    busy = np.zeros((n_t, h, w), bool)
    for _, o, end, m in records:
        for t in {o - 1, o} | (set() if end is None else {end - 1, end}):
            busy[t] |= m
    sun, spec, out = rng.uniform(0, 2 * np.pi), _SPECTRA["cloud"][bidx][:, None, None], []
    for t in _onsets(rng, n, 0, n_t - dates):
        for _ in range(30):
            r = rng.uniform(8, max(9.0, min(h, w) / 5))
            a = (_cloud(rng, r) * rng.uniform(0.7, 0.95)).astype(np.float32)
            y0, x0 = rng.integers(-a.shape[0] // 3, np.array([h, w]) - 2 * a.shape[0] // 3)
            off = r * rng.uniform(0.8, 1.4)
            cloud = _pasted(a, y0, x0, (h, w))
            dy, dx = round(off * np.sin(sun)), round(off * np.cos(sun))
            shadow = _pasted(a / a.max(), y0 + dy, x0 + dx, (h, w)) * (rng.random() < 0.6)
            mask = (cloud > 0) | (shadow > 0)
            if not (mask & busy[t:t + dates].any(axis=0)).any():
                break
        for u in range(t, t + dates):
            data[u] *= 1 - 0.5 * shadow
            data[u] += cloud * (spec - data[u])
        out.append(("cloud", int(t), int(t) + dates if t + dates < n_t else None, mask))
    return out


def _truth(records, times, grid, green=None) -> PlantedTruth:
    masks = np.stack([m for *_, m in records]) if records else np.zeros((0, *grid.shape), bool)
    objects = pd.DataFrame({
        "object_id": np.arange(len(records)),
        "type": [k for k, *_ in records],
        "kind": [CHANGE_TYPES.get(k, "cloud") for k, *_ in records],
        "onset": pd.DatetimeIndex([times[o] for _, o, _, _ in records]),
        "end": pd.DatetimeIndex([pd.NaT if e is None else times[e] for _, _, e, _ in records]),
        "pixels": masks.sum(axis=(1, 2)),
    })
    return PlantedTruth(objects=objects, masks=masks, grid=grid, green=green, times=pd.DatetimeIndex(times))
