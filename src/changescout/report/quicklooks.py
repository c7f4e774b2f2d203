"""Quicklooks: a true-colour PNG per date and a before | after chip per top event.

One percentile stretch (2-98 %, per band) is computed over the whole series so that dates are comparable.
Dates are read one at a time and downsampled so the long side is at most :data:`MAX_SIDE` pixels; the
downsampled images wait in a temporary memory-mapped file, so memory stays bounded by one date.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_path
from ..quality import BLUE, GREEN, RED, find_bands
from ..tiling import PatchGrid

MAX_SIDE = 1024
CHIP_SIDE = 240  # chips smaller than this are enlarged (nearest neighbour)
PERCENTILES = (2.0, 98.0)
_BINS = 4096  # histogram bins over 0..1 reflectance for the series-wide stretch
OUTLINE = (255, 220, 0)
OVERVIEW_SIDE = 768  # a smaller overview map of the objects is enlarged (nearest neighbour) to about this many
# pixels; a larger one stays at the quicklooks' scale (up to MAX_SIDE), where a patch of a whole Sentinel-2 tile
# is about 1.5 px wide


def rgb_bands(cube: xr.DataArray) -> list[str]:
    """Red, green and blue band names of ``cube``; the first three bands (or the first, as grey) otherwise."""
    names = [str(b) for b in cube["band"].values]
    found = find_bands(cube, RED, GREEN, BLUE)  # as the screens read them (a Sentinel-2 B4, a Landsat SR_B3)
    if None not in found:
        return [names[i] for i in found]
    return names[:3] if len(names) >= 3 else [names[0]] * 3


#: Largest true-colour series (float32 bytes) held in memory while the quicklooks are drawn; a larger one is read
#: once for the dates' images and once, together, for the chips' windows.
PERSIST_BYTES = 1 << 30


def write_quicklooks(cube: xr.DataArray, events: gpd.GeoDataFrame, patch_grid: PatchGrid, out_dir: str | Path,
                     top: int = 12, objects: gpd.GeoDataFrame | None = None) -> dict:
    """Write ``date_YYYYMMDD.png`` per date and ``event_<rank>.png`` per top-``top`` event into ``out_dir``,
    and with ``objects`` (the objects to show: ``rank`` and their dissolved polygons in the grid's CRS, as
    objects.parquet holds them) ``objects.png``: the outlines and ranks of those that are candidates (all of them
    without a ``candidate`` column; none: no overview) over the series' median image, and
    ``object_<rank>.png`` per object (with ``object_id``, ``t0`` and ``t1``): its dates, around its whole outline.

    Returns ``{"dates": [path, ...], "events": {event_id: path}, "objects": path or None,
    "object_chips": {object_id: path}}``.
    """
    out_dir = Path(out_dir)
    rgb = cube.sel(band=rgb_bands(cube)).reset_coords(drop=True)
    if rgb.chunks is not None and rgb.size * 4 <= PERSIST_BYTES:
        rgb = rgb.persist()  # read the files once, not once per date and once per chip
    times = pd.DatetimeIndex(cube["time"].values)
    step = max(1, math.ceil(max(cube.sizes["y"], cube.sizes["x"]) / MAX_SIDE))
    shape = (len(times), cube.sizes["y"] // step, cube.sizes["x"] // step, 3)
    hist = np.zeros((3, _BINS), dtype=np.int64)
    dates = []
    with tempfile.TemporaryDirectory(prefix="changescout-ql-") as tmp:
        store = np.lib.format.open_memmap(Path(tmp) / "rgb.npy", mode="w+", dtype=np.float16, shape=shape)
        embeddings = bool(cube.attrs.get("embedding_bands"))  # (values of -1..1, or any range: not reflectance)
        for i in range(len(times)):
            img = _downsample(rgb.isel(time=i), step)
            store[i] = img
            for b in range(3 * (not embeddings)):
                hist[b] += np.histogram(np.clip(img[..., b], 0, 1), bins=_BINS, range=(0, 1))[0]
        lo, hi = _own_limits(store) if embeddings else _stretch_limits(hist)
        for i, t in enumerate(times):
            dates.append(_save_png(_to_uint8(store[i], lo, hi), out_dir / f"date_{t:%Y%m%d}.png"))
        overview = None
        outlined = _standing_out(objects)
        if outlined is not None and len(outlined):
            background = _to_uint8(_median_image(store), lo, hi)
            a, _, c, _, e, f = patch_grid.grid.transform  # (north-up) CRS -> pixel of the downsampled image
            to_image = [1 / (a * step), 0, 0, 1 / (e * step), -c / (a * step), -f / (e * step)]
            overview = _save_png(_outline_objects(background, outlined, to_image), out_dir / "objects.png")
        del store
    shown = [("event", ev.event_id, ev.rank, _event_chip(ev, patch_grid))
             for ev in events.sort_values("rank").head(top).itertuples()]
    if objects is not None and {"object_id", "t0", "t1"} <= set(objects.columns):
        shown += [("object", ob.object_id, ob.rank, _object_chip(ob, patch_grid)) for ob in objects.sort_values("rank").itertuples()]
    # every chip's windows in one computation: of a series too large to hold, each chip read (and cloud-screened)
    # its blocks again, two at a time (4096 x 2048 px, 12 dates: 40 chips took 9 of the run's 17 minutes; a review)
    windows = _windows(rgb, [w for *_, spec in shown for w in _chip_windows(spec, patch_grid)])
    chips, object_chips = {}, {}
    for n, (kind, key, rank, spec) in enumerate(shown):
        chip = _chip(windows[2 * n: 2 * n + 2], patch_grid, lo, hi, *spec)
        (chips if kind == "event" else object_chips)[key] = _save_png(chip, out_dir / f"{kind}_{rank}.png")
    return {"dates": dates, "events": chips, "objects": overview, "object_chips": object_chips}


def _windows(rgb: xr.DataArray, wanted: list[tuple]) -> list[np.ndarray]:
    """``(band, y, x)`` float32 of ``rgb`` for each ``(time, y0, y1, x0, x1, step)`` of ``wanted``, computed
    together (the blocks they share read once)."""
    parts = [rgb.sel(time=np.datetime64(pd.Timestamp(t))).isel(y=slice(y0, y1, step), x=slice(x0, x1, step)).data
             for t, y0, y1, x0, x1, step in wanted]
    if rgb.chunks is not None:
        parts = dask.compute(*parts)
    return [np.asarray(part, dtype=np.float32) for part in parts]


def _standing_out(objects: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame | None:
    """The objects the overview outlines: the candidates (objects that stand out from the run's bulk) when the
    table says which; the single patch changes ranked after them would be numbered like change objects."""
    if objects is None or "candidate" not in objects:
        return objects
    return objects[objects["candidate"].to_numpy(bool)]


def _median_image(store: np.ndarray, n_dates: int = 24, rows: int = 128) -> np.ndarray:
    """Per-pixel median of up to ``n_dates`` dates spread over the series (clouds and seasons fade), NaN where
    no date has data; computed ``rows`` image rows at a time."""
    pick = np.unique(np.linspace(0, len(store) - 1, min(n_dates, len(store))).round().astype(int))
    out = np.empty(store.shape[1:], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        for y in range(0, store.shape[1], rows):
            out[y:y + rows] = np.nanmedian(np.asarray(store[pick, y:y + rows], np.float32), axis=0)
    return out


def _outline_objects(img: np.ndarray, objects: gpd.GeoDataFrame, to_image: list[float]) -> Image.Image:
    """``img`` enlarged to about ``OVERVIEW_SIDE`` px with each object's outline (its polygon, taken to image
    pixels by the affine ``to_image``) and its rank written inside its top-left corner (below those of smaller
    rank that share it); rank 1 is drawn last (on top)."""
    zoom = max(1, OVERVIEW_SIDE // max(img.shape[:2]))
    canvas = Image.fromarray(np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1))
    draw = ImageDraw.Draw(canvas)
    shapes = objects.geometry.affine_transform(to_image).scale(zoom, zoom, origin=(0, 0)).to_numpy()
    ranks = objects["rank"].to_numpy()
    corners = [min((round(y), round(x)) for x, y in shapely.get_coordinates(g)) for g in shapes]
    order = np.argsort(ranks, kind="stable")
    stack = {corner: [ranks[i] for i in order if corners[i] == corner] for corner in set(corners)}
    for i in order[::-1]:
        for part in getattr(shapes[i], "geoms", [shapes[i]]):
            for ring in [part.exterior, *part.interiors]:
                draw.line([(x - 0.5, y - 0.5) for x, y in ring.coords], fill=OUTLINE, width=2)
        (y, x), label = corners[i], str(int(ranks[i]))
        w, h = draw.textbbox((0, 0), label)[2:]
        at = (x + 2, y + 2 + stack[corners[i]].index(ranks[i]) * (h + 4))
        # inside the picture: at the right edge a rank 19 was cut to a "1" beside the real rank 1
        at = (max(0, min(at[0], canvas.width - w - 3)), max(0, min(at[1], canvas.height - h - 3)))
        draw.rectangle((at[0], at[1], at[0] + w + 2, at[1] + h + 2), fill=(0, 0, 0))
        draw.text((at[0] + 1, at[1] + 1), label, fill=OUTLINE)
    return canvas


def _downsample(date: xr.DataArray, step: int) -> np.ndarray:
    """``(band, y, x)`` of one date -> ``(y, x, band)`` float32, block-averaged by ``step`` (NaN ignored)."""
    if step > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
            date = date.coarsen(y=step, x=step, boundary="trim").mean()
    return np.moveaxis(np.asarray(date.values, dtype=np.float32), 0, -1)


def _stretch_limits(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2 and 98 percentiles from histograms over 0..1 (0 and 1 where a band has no data)."""
    lo, hi = np.zeros(3), np.ones(3)
    centres = (np.arange(_BINS) + 0.5) / _BINS
    for b in range(3):
        total = hist[b].sum()
        if total:
            cdf = np.cumsum(hist[b]) / total
            lo[b], hi[b] = (centres[np.searchsorted(cdf, q / 100)] for q in PERCENTILES)
    return lo, np.maximum(hi, lo + 1e-6)


def _own_limits(store: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2 and 98 percentiles of the stored (downsampled) images' own values, whatever their range
    (embeddings made elsewhere: -1..1, where a 0..1 stretch left every negative value black)."""
    lo, hi = np.zeros(3), np.ones(3)
    for b in range(3):
        v = np.asarray(store[..., b], dtype=np.float32)
        v = v[np.isfinite(v)]
        if v.size:
            lo[b], hi[b] = np.percentile(v, PERCENTILES)
    return lo, np.maximum(hi, lo + 1e-6)


def _to_uint8(img: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Stretch ``(y, x, 3)`` reflectance to 0..255; pixels with any NaN band are black."""
    img = np.asarray(img, dtype=np.float32)
    out = np.clip((img - lo) / (hi - lo), 0, 1) * 255
    out[np.isnan(img).any(axis=-1)] = 0
    return out.astype(np.uint8)


def _save_png(arr: np.ndarray | Image.Image, path: Path) -> Path:
    img = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def _event_chip(ev, patch_grid: PatchGrid) -> tuple:
    """What an event's chip shows (``(t0, t1, ys, xs, rings)``, :func:`_chip`): t0 | t1 side by side, the patch
    with a margin of one patch, outlined, dates written on top."""
    p = patch_grid.patch_size
    square = [(ev.col * p, ev.row * p), ((ev.col + 1) * p, ev.row * p), ((ev.col + 1) * p, (ev.row + 1) * p),
              (ev.col * p, (ev.row + 1) * p), (ev.col * p, ev.row * p)]
    return ev.t0, ev.t1, (ev.row * p, (ev.row + 1) * p), (ev.col * p, (ev.col + 1) * p), [square]


def _object_chip(ob, patch_grid: PatchGrid) -> tuple:
    """What an object's chip shows (``(t0, t1, ys, xs, rings)``, :func:`_chip`): t0 | t1 of its own dates around
    its whole dissolved outline, with a margin of one patch; a window larger than :data:`MAX_CHIP` px a side is
    shown every few pixels."""
    a, _, c, _, e, f = patch_grid.grid.transform
    rings = [[((x - c) / a, (y - f) / e) for x, y in ring.coords]
             for part in getattr(ob.geometry, "geoms", [ob.geometry]) for ring in [part.exterior, *part.interiors]]
    xs, ys = np.concatenate([[x for x, _ in r] for r in rings]), np.concatenate([[y for _, y in r] for r in rings])

    def span(v):  # an object wider than 4 chips (a whole scene's seasonal change) is shown around its centre
        lo_, hi_ = int(np.floor(v.min())), int(np.ceil(v.max()))
        if hi_ - lo_ > 4 * MAX_CHIP:
            mid = (lo_ + hi_) // 2
            lo_, hi_ = mid - 2 * MAX_CHIP, mid + 2 * MAX_CHIP
        return lo_, hi_
    return ob.t0, ob.t1, span(ys), span(xs), rings


#: Largest chip window side in pixels before it is shown every few pixels.
MAX_CHIP = 480
_HEADER = 20
_FONT_PX = 14


def _frame(patch_grid: PatchGrid, ys, xs) -> tuple[int, int, int, int, int]:
    """``(y0, y1, x0, x1, step)``: the pixels a chip over rows ``ys`` and columns ``xs`` shows (a margin of one
    patch, every ``step`` pixels)."""
    p = patch_grid.patch_size
    h, w = patch_grid.grid.shape
    y0, y1 = max(0, ys[0] - p), min(h, ys[1] + p)
    x0, x1 = max(0, xs[0] - p), min(w, xs[1] + p)
    return y0, y1, x0, x1, max(1, math.ceil(max(y1 - y0, x1 - x0) / MAX_CHIP))


def _chip_windows(spec: tuple, patch_grid: PatchGrid) -> list[tuple]:
    """The two windows (``(time, y0, y1, x0, x1, step)``, at t0 and t1) a chip ``spec`` shows."""
    t0, t1, ys, xs, _ = spec
    return [(t, *_frame(patch_grid, ys, xs)) for t in (t0, t1)]


def _chip(windows: list[np.ndarray], patch_grid: PatchGrid, lo, hi, t0, t1, ys, xs, rings) -> Image.Image:
    """t0 | t1 side by side (``windows``: their ``(band, y, x)`` pixels, :func:`_chip_windows`) over the pixel
    rows ``ys`` and columns ``xs`` (start, stop) with a margin of one patch, the ``rings`` (outlines in pixel
    coordinates of the grid) drawn on both, the dates written on top."""
    y0, y1, x0, x1, step = _frame(patch_grid, ys, xs)
    zoom = max(1, CHIP_SIDE // max(y1 - y0, x1 - x0))
    scale = zoom / step
    sw, sh = len(range(x0, x1, step)) * zoom, len(range(y0, y1, step)) * zoom
    gap = 4
    font = ImageFont.load_default(size=_FONT_PX)
    labels = [f"{label} {pd.Timestamp(t):%Y-%m-%d}" for label, t in (("t0", t0), ("t1", t1))]
    # a panel at least as wide as its date: a tall, narrow object's 64 px panels wrote t1 over t0
    pw = max(sw, *(int(np.ceil(font.getlength(text))) + 4 for text in labels))
    canvas = Image.new("RGB", (2 * pw + gap, sh + _HEADER), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    width = max(1, min(3, zoom // 2))
    for k, (text, window) in enumerate(zip(labels, windows)):
        img = _to_uint8(np.moveaxis(window, 0, -1), lo, hi)
        img = np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)
        left = k * (pw + gap)
        canvas.paste(Image.fromarray(img), (left, _HEADER))
        for ring in rings:  # pixel edges -> the chip's pixels; the last row and column of a patch drawn inside it
            inner = width // 2  # (kept inside its own panel, line width included, where it runs beyond the window)
            pts = [(left + min(max((x - x0) * scale, inner), sw - 1 - inner),
                    _HEADER + min(max((y - y0) * scale, inner), sh - 1 - inner)) for x, y in ring]
            draw.line(pts, fill=OUTLINE, width=width)
        draw.text((left + 2, 2), text, fill=(0, 0, 0), font=font)
    return canvas
