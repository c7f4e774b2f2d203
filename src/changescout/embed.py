"""Run an encoder over a SeriesCube, window by window, and write the EmbeddingCube (zarr).

Every date is encoded on the identical window grid (windows are whole multiples of the patch size, counted
from the grid origin), so an embedding never depends on where a chunk happened to start. An encoder that
reads pixels beyond a patch (rcf's convolution: ``spec.halo``) gets them from the neighbouring windows, so
that with the same weights and normalisation a crop of whole patches gives its inner patches the embeddings
of the whole scene; pretrained transformers see their window only. The work is a dask
graph of one task per window (every date of it, in batches): it runs on the local threads or, given a ``dask.distributed`` client,
on a cluster; memory stays bounded by the window size. On local threads the windows that run at once share
torch's intra-op threads (no oversubscription), and the results are written in zarr chunks of whole windows
at least ``WRITE_PX`` px a side.

Encoders that publish their own normalisation (pretrained models, ``spec.input == "reflectance"``) receive
the cube's reflectance and normalise it themselves; the others get each date centred on the series' median
shifted by the date's offset on its most stable pixels, and each band scaled by one series-wide robust scale
(:func:`date_statistics`). Encoders that need the whole series (``spec.temporal``, Presto)
get every date of a window at once through ``encode_series``.

EmbeddingCube: ``embedding (time, row, col, dim)`` float32, ``clear_fraction (time, row, col)`` (of the patch's
pixels that the images cover, those usable at that date: :func:`clear_fractions`), ``cloud_fraction (time, row,
col)`` (of the same pixels, those flagged CLOUD at that date: :func:`cloud_fractions`), ``footprint (row, col,
footprint_byte)`` uint8 (which of each patch's pixels the images cover, as packed bits:
:func:`changescout.tiling.unpack_footprint`; the tables cut the edge patches' polygons to it), patch-centre
coordinates ``x (col)`` and ``y (row)``, attributes naming the encoder, its weights' SHA-256, patch size,
stride, grid and the normalisation parameters.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.system import CPU_COUNT

from .atomic import atomic_path
from .cube import OutputGrid, Quality, grid_of, usable_mask
from .quality import FAMILY_NAMES, band_family, fill_gaps, fill_unseen
from .scheduler import default_client
from .encoders.base import Encoder, select_bands
from .errors import BandError, ConfigError, EncoderOutputError, GridError, InputError, OutputError
from .intact import ALL_CHUNKS, zarr_problem
from .tiling import PatchGrid, pack_footprint

NORMALISATION = ("each band centred on its series-wide median plus the date's offset on its most stable pixels "
                 "(pseudo-invariant features); divided by the band's series-wide IQR/1.349 (usable pixels)")
#: Share of the sampled pixels, the least variable over the series, whose per-date offset centres each date.
#: Rounds of the offsets' median polish (:func:`series_statistics`)
OFFSET_ROUNDS = 5
STABLE_FRACTION = 0.2
STABLE_SAMPLE = 16384  # pixels the pseudo-invariant ones are chosen among


def normalisation_method(spec) -> str:
    """What the encoder's input was: the project's normalisation, or the encoder's own published one."""
    return NORMALISATION if spec.input not in ("reflectance", "embeddings") else f"encoder's own: {spec.scaling}"


def shares_space(encoder) -> bool:
    """Whether runs with this encoder's weights share one embedding space: pretrained encoders (fixed weights,
    their own input normalisation) do; an encoder that learns from the data does when its weights carry the
    input normalisation they were learnt with (rcf weights written before they did: each run normalised its
    input on its own area, and its change vectors cannot be compared with another run's). An encoder that says
    nothing of it (a plugin) shares one unless it reads the stage's per-date z-scores (``spec.input ==
    "normalised"``), which are each run's own."""
    if not hasattr(encoder, "input_normalisation"):  # (a plugin fed the stage's per-date z-scores: this run's own)
        return encoder.spec.input != "normalised"
    return encoder.input_normalisation is not None


def date_statistics(cube: xr.DataArray, band_index: list[int], max_pixels: int = 65536,
                    reference: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per date and band robust centre, and per band series-wide scale, over usable pixels: ``(time, band, 2)``.

    ``reference``: a series-wide ``(centre, scale)`` per band to use instead of this cube's own (those of the
    run an encoder's weights were learnt on, :func:`series_statistics`), so that two runs sharing the weights
    share one embedding space; each date's offset is still measured on this cube.

    Centre: the band's series-wide level plus the date's offset, the median departure of the *pseudo-invariant*
    pixels (among the sampled pixels usable at that date, the ``STABLE_FRACTION`` that vary least, each against
    its own median over time, on the other dates) at that date; a date with none of them usable keeps its own
    median. Each pixel's median over time is taken with the dates' offsets removed, and the offsets measured
    again, ``OFFSET_ROUNDS`` times (a median polish of date x pixel); the level is the pixels' median, the
    offsets' median over the dates 0. Taken on the raw values, a haze on one date moved every pixel's median
    and so every other date's centre: +0.03 on one date of ten moved them by up to 0.25-0.31 of a band's scale,
    against 0.01 after five rounds (synthetic series; an invariance review). A global shift of a date
    (haze, illumination, calibration) moves those pixels too and is removed, as relative radiometric
    normalisation on invariant features does (Schott et al. 1988); a season that greens or browns the scene
    around a bare field or a roof is not, so those stay put. Centring each date on its whole scene's median,
    as this function did before, made a bare field look changed between May and July because the forest
    around it changed: on the planted Bouconne series such harvests were demoted as transient (patch AUROC
    0.964-0.997 then, 0.994-0.999 now, with ``change.PERSISTENCE_TOLERANCE``; synthetic 0.952-0.989 then,
    0.957-0.990 now).

    Scale: one per band for the whole series (the median of the dates' IQR/1.349), which keeps the contrast of
    an unchanged object the same at every date (a per-date scale would inflate it on dates whose scene happens
    to be uniform, such as a green forest in May).
    """
    return stack_statistics(*series_statistics(cube, band_index, max_pixels), reference=reference)


def stack_statistics(centre: np.ndarray, scale: np.ndarray, offset: np.ndarray,
                     reference: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``(time, band, 2)`` statistics of :func:`date_statistics` from :func:`series_statistics`' parts, the
    series-wide centre and scale replaced by ``reference`` when given."""
    if reference is not None:
        ref_centre, ref_scale = (np.asarray(a, np.float64) for a in reference)
        if ref_centre.shape != centre.shape or ref_scale.shape != scale.shape:
            raise BandError(f"the encoder's input normalisation was learnt on {ref_centre.shape[0]} bands; "
                            f"this cube has {centre.shape[0]}")
        centre, scale = ref_centre, ref_scale
    centres = centre[None, :] + offset
    return np.stack([centres, np.broadcast_to(scale, centres.shape)], axis=-1)


def series_statistics(cube: xr.DataArray, band_index: list[int], max_pixels: int = 65536
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(centre (band,), scale (band,), offset (time, band))`` of :func:`date_statistics`: the series-wide
    centre and scale, and each date's offset (the median departure of its pseudo-invariant pixels from their
    own medians over time; for a date with none of them usable, its median minus the series centre)."""
    ny, nx, nt = cube.sizes["y"], cube.sizes["x"], cube.sizes["time"]
    max_pixels = max(4096, min(max_pixels, (1 << 24) // max(1, nt * len(band_index))))  # bounded for long series
    step = max(1, int(np.ceil(np.sqrt(ny * nx / max_pixels))))
    sub = cube.isel(band=band_index, y=slice(None, None, step), x=slice(None, None, step))
    vals, qual = dask.compute(sub.data, sub["quality"].data)
    ok = usable_mask(qual)[:, None] & np.isfinite(vals)
    v = np.where(ok, vals, np.nan).reshape(*vals.shape[:2], -1)  # (time, band, pixel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q25, med, q75 = np.nanpercentile(v, [25, 50, 75], axis=2)
        iqr = (q75 - q25) / 1.349
        scale = np.nanmedian(np.where(iqr > 1e-6, iqr, np.nan), axis=0)  # dates without spread tell nothing
        scale = np.where(np.isfinite(scale), scale, 1.0)
        centre = np.nanmedian(med, axis=0)
        centre = np.where(np.isfinite(centre), centre, 0.0)
        # pseudo-invariant pixels among at most STABLE_SAMPLE of the sampled ones
        keep = slice(None, None, max(1, int(np.ceil(v.shape[2] / STABLE_SAMPLE))))
        v = v[:, :, keep]
        usable = np.isfinite(v).all(axis=1)  # (time, pixel): every band usable
        dates_with_data = int(usable.any(axis=1).sum())  # a date clouded everywhere does not count
        fallback = med - centre  # a date none of whose stable pixels is usable keeps its own median
        # Each date's offset: the median departure of its stable pixels from their own median over time. That
        # median is taken with the dates' offsets removed, and the stable pixels and offsets found again (a
        # median polish of date x pixel): on the raw values a haze on one date moved every pixel's median, and
        # with it every other date's offset (an invariance review). The polish leaves a constant free between
        # the pixels and the dates: the offsets' median over the dates is 0, and the series' level the pixels'.
        offset, measured = np.zeros_like(fallback), np.zeros(len(v), bool)
        for _ in range(OFFSET_ROUNDS):
            shifted = v - offset[:, :, None]
            own = np.median(shifted, axis=0)  # each pixel's median over time, per band (fast where nothing is missing) ...
            gaps = np.isnan(own)
            own[gaps] = np.nanmedian(shifted[:, gaps], axis=0)  # ... over its usable dates elsewhere
            size = np.where(usable, np.nansum(np.abs(shifted - own) / scale[None, :, None], axis=1), 0.0)  # (time, pixel)
            total, count = size.sum(axis=0), usable.sum(axis=0)
            offset = fallback.copy()
            for t in range(len(v)):
                # the least variable of the pixels usable at that date, judged on the *other* dates (a date's own
                # shift must not choose the pixels that measure it), each seen on half of them at least
                n = count - usable[t]
                spread = np.where(usable[t] & (n >= max(2, (dates_with_data - 1) / 2)), (total - size[t]) / np.maximum(n, 1), np.inf)
                here = np.argsort(spread, kind="stable")[: int(np.isfinite(spread).sum())]
                if len(here):
                    stable = here[: max(min(16, len(here)), int(STABLE_FRACTION * len(here)))]
                    offset[t] = np.median(v[t][:, stable] - own[:, stable], axis=1)
                    measured[t] = True
            offset = offset - np.nanmedian(offset[measured], axis=0) if measured.any() else offset
            offset = np.where(np.isfinite(offset), offset, 0.0)
        level = np.nanmedian(own, axis=1)
        centre = np.where(np.isfinite(level), level, centre)
        offset[~measured] = (med - centre)[~measured]  # (its own median, about the series' level)
    return centre, scale, np.where(np.isfinite(offset), offset, 0.0)


def normalise(x: np.ndarray, stats: np.ndarray, usable: np.ndarray | None = None) -> np.ndarray:
    """``(..., band, H, W)`` reflectance -> robust z-scores with ``stats`` ``(..., band, 2)`` (one date, or every
    date at once); NaN (and pixels not ``usable`` ``(..., H, W)``, when given) -> 0 (the median).

    Computed in the precision of ``x`` and ``stats`` (float64 statistics: float64) and rounded once to float32,
    exactly as ``nan_to_num(z).astype(float32)`` would, in fewer passes; every date in turn (``(time, band, H,
    W)``), so that the float64 intermediates of one date stay in cache (about twice as fast as all at once)."""
    if x.ndim == 4 and stats.ndim == 3 and len(x) == len(stats) > 1 and (usable is None or usable.ndim == 3):
        out = np.empty(x.shape, np.float32)
        for t in range(len(x)):
            out[t] = normalise(x[t], stats[t], None if usable is None else usable[t])
        return out
    z = np.subtract(x, stats[..., 0, None, None], dtype=np.result_type(x, stats))
    z /= stats[..., 1, None, None]
    out = z.astype(np.float32)
    bad = ~np.isfinite(z)
    if usable is not None:
        bad |= ~usable[..., None, :, :]
    np.copyto(out, np.float32(0), where=bad)
    return out


def fit_sample(cube: xr.DataArray, band_index: list[int], stats: np.ndarray, size: int = 128,
               n_windows: int = 12, seed: int = 0) -> np.ndarray:
    """Random normalised windows ``(n, band, size, size)`` from random dates, for encoders that learn from data.

    The windows are read in one computation: on a lazy cube the source chunks (and the cloud screen, which
    needs the dates around each one) that several windows share are then computed once, not once a window."""
    rng = np.random.default_rng(seed)
    ny, nx, nt = cube.sizes["y"], cube.sizes["x"], cube.sizes["time"]
    size = min(size, ny, nx)
    where = []
    for _ in range(n_windows):
        t = int(rng.integers(nt))
        where.append((t, int(rng.integers(ny - size + 1)), int(rng.integers(nx - size + 1))))
    blocks = [cube.isel(time=t, band=band_index, y=slice(y0, y0 + size), x=slice(x0, x0 + size)) for t, y0, x0 in where]
    read = dask.compute(*[(b.data, b["quality"].data) for b in blocks])
    out = []
    for (t, _, _), (vals, qual) in zip(where, read):
        vals = np.where(usable_mask(qual)[None], vals, np.nan)
        out.append(np.where(np.isfinite(vals), (vals - stats[t, :, 0, None, None]) / stats[t, :, 1, None, None], np.nan))
    return np.stack(out).astype(np.float32)


def _prepare(values: np.ndarray, quality: np.ndarray, stats: np.ndarray, spec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(time, band, h, w)`` values -> (encoder input, usable ``(time, h, w)``, covered ``(h, w)``): the
    project's per-date normalisation, or the cube's reflectance for encoders that normalise themselves; the
    clear fraction counts the ``usable`` pixels of the ``covered`` ones (the images' footprint: data at some
    date, cloudy or not; nodata at every date is off the images)."""
    finite = np.isfinite(values).all(axis=1)
    usable = usable_mask(quality) & finite
    covered = covered_pixels(quality, finite)
    known = usable.any(axis=0)
    # a cloud or nodata pixel takes its nearest usable date's value (quality.fill_gaps): a patch partly
    # masked at one date then does not look changed; pixels usable at no date take the mean of those usable
    # at some date, per date and band (quality.fill_unseen). The project's input is filled once each date is
    # normalised, in z-scores: a pixel filled with another date's reflectance kept that date's haze or
    # illumination, and on a date 0.05 brighter everywhere an unchanged patch 19 % clouded moved 0.40
    # (unchanged patches 0.02, a new roof 1.41)
    if spec.input == "embeddings":  # a patch is the mean of the vectors its images hold: off them, no vector (NaN,
        # which the encoder leaves out), not the window's mean vector, which moves with the rest of the window and
        # made an edge patch whose every covered pixel held still read as changed
        filled = np.array(fill_gaps(values, usable), dtype=np.float32)
        filled[:, :, ~known] = np.nan
        return filled, usable, covered
    if spec.input == "reflectance":
        filled = np.array(fill_gaps(values, usable), dtype=np.float32)  # (a copy: the window's values are the cube's)
        return fill_unseen(filled, known), usable, covered
    z = fill_gaps(normalise(values, stats), usable)  # (normalise's own array, or its copy: both ours)
    return fill_unseen(z, known), usable, covered


def _embed_window(values: np.ndarray, quality: np.ndarray, stats: np.ndarray, months: np.ndarray,
                  encoder: Encoder, p: int, latlon: tuple[float, float] | None = None,
                  threads: tuple[int, int] | None = None) -> np.ndarray:
    """Every date of one window: ``(time, band, h, w)`` -> ``(time, h/p, w/p, dim + 1)`` (last: clear fraction).

    Per-date encoders see the dates in batches of ``spec.batch_size``; temporal encoders see the series.
    ``threads`` ``(n, back)``: torch runs this task on ``n`` intra-op threads (a per-thread setting), then goes
    back to ``back``, so that windows running side by side on local threads do not oversubscribe the cores."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads[0])
        try:
            return _embed_window(values, quality, stats, months, encoder, p, latlon)
        finally:
            torch.set_num_threads(threads[1])
    spec = encoder.spec
    x, usable, covered = _prepare(values, quality, stats, spec)
    h = spec.halo  # context read from the neighbouring windows (embedding_graph)
    if h:
        usable, covered = usable[:, h:-h, h:-h], covered[h:-h, h:-h]
    if spec.temporal:
        emb = encoder.encode_series(x, months, usable, latlon=latlon)
    else:
        b = max(1, int(spec.batch_size))
        context = {"halo": h} if h else {}
        emb = np.concatenate([encoder.encode(x[i:i + b], months[i:i + b], **context) for i in range(0, len(x), b)])
    check_output(emb, spec, (len(x), usable.shape[1] // p, usable.shape[2] // p), x[..., h:-h, h:-h] if h else x)
    out = np.empty((*emb.shape[:1], *emb.shape[2:], emb.shape[1] + 1), np.float32)
    out[..., :-1] = emb.transpose(0, 2, 3, 1)
    out[..., -1] = clear_fractions(usable, p, covered)
    return out


#: Input values past this size are no reflectance nor z-score (GDAL's float nodata, -3.4e38, undeclared): an
#: encoder's NaN at a patch holding one is the input's, not the encoder's (:func:`check_output`).
PLAUSIBLE_INPUT = 1e6


def _plausible_patches(x: np.ndarray, p: int) -> np.ndarray:
    """``(dates, bands, H, W)`` encoder input -> ``(dates, H/p, W/p)``: every value of the patch finite and within
    :data:`PLAUSIBLE_INPUT`."""
    t, _, hh, ww = x.shape
    ok = (np.isfinite(x) & (np.abs(x) < PLAUSIBLE_INPUT)).all(axis=1)
    return ok.reshape(t, hh // p, p, ww // p, p).all(axis=(2, 4))


def check_output(emb, spec, shape: tuple[int, int, int], inputs: np.ndarray | None = None) -> None:
    """An encoder's output for ``shape`` = ``(dates, patch rows, patch cols)`` is ``(dates, spec.dim, rows, cols)``
    of finite values where its ``inputs`` (``(dates, bands, H, W)``, those of the output's pixels; default: every
    patch's plausible) were plausible (:func:`_plausible_patches`, read only where an output is not finite),
    else an :class:`EncoderOutputError` naming the encoder: a plugin returning another shape failed inside dask
    ("chunk size unknown"), and one returning NaN or inf had its patches taken for cloudy (no change at them, or
    "no patch clear enough" blaming the source). A NaN where the input held values past any reflectance (an
    undeclared float nodata) is the input's: those patches are unclear, as before."""
    want = (shape[0], spec.dim, shape[1], shape[2])
    got = tuple(getattr(emb, "shape", ()))
    if got != want:
        configure = (" (it declares no dimension: configure it for the cube first, e.g. precomputed's n_bands or "
                     "for_cube)" if not spec.dim else "")
        raise EncoderOutputError(f"encoder {spec.name!r} returned embeddings of shape {got} for a window of {shape[0]} "
                                 f"date(s) x {shape[1]} x {shape[2]} patches; its spec (dim {spec.dim}, patch_size "
                                 f"{spec.patch_size}) says {want}: (dates, dim, rows, cols){configure}")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any() and inputs is not None:
        bad &= _plausible_patches(inputs, inputs.shape[2] // shape[1])
    if bad.any():
        raise EncoderOutputError(f"encoder {spec.name!r} returned values that are not finite (NaN or inf) at "
                                 f"{int(bad.sum())} of {bad.size} patch embeddings of a window: an encoder returns finite "
                                 "embeddings (the embedding stage says which patches are clear)")


#: Least share of a patch that the images must cover (data at some date) for the patch to be used at all.
MIN_COVER = 0.25


def clear_fractions(usable: np.ndarray, p: int, covered: np.ndarray) -> np.ndarray:
    """``usable (time, h, w)`` -> ``(time, h/p, w/p)``: each patch's usable pixels at each date, as a fraction of
    its pixels that the images cover (``covered (h, w)``: data at some date, cloudy or not), so that a patch on
    the edge of the images, or of a tile's nodata corner, is judged by the part they cover; 0 for a patch of
    which they cover less than a quarter.

    (As a fraction of the whole patch, the edge patches of a grid snapped to whole patches never reached
    --min-clear: 38 % of a 61 x 61 px Landsat image went unseen. A pixel cloudy at every date stays in the
    count: a patch mostly under a lasting cloud is no clear patch.)"""
    t, h, w = usable.shape
    clear = usable.reshape(t, h // p, p, w // p, p).mean(axis=(2, 4))
    cover = covered.reshape(h // p, p, w // p, p).mean(axis=(1, 3))
    return np.where(cover >= MIN_COVER, clear / np.maximum(cover, MIN_COVER), np.float32(0)).astype(np.float32)


def _torch_threads(n_tasks: int) -> tuple[int, int] | None:
    """``(intra-op threads per window task, the caller's setting)`` on dask's local threads: the torch threads
    the caller has, shared among the windows that run at once. ``None`` (leave torch alone) when that changes
    nothing (one window alone keeps them all), on a distributed cluster, whose workers own their threads, or
    without torch."""
    torch = sys.modules.get("torch")
    if torch is None or default_client() is not None:
        return None
    scheduler = dask.config.get("scheduler", None)
    if scheduler in ("sync", "synchronous", "single-threaded"):
        workers = 1
    elif scheduler not in (None, "threads", "threading"):
        return None  # processes or a custom scheduler: not ours to divide
    else:
        pool = dask.config.get("pool", None)  # an Executor (_max_workers) or a multiprocessing ThreadPool (_processes)
        workers = (getattr(pool, "_max_workers", None) or getattr(pool, "_processes", None)
                   or dask.config.get("num_workers", None) or CPU_COUNT)
    mine = torch.get_num_threads()
    each = max(1, mine // max(1, min(int(workers), n_tasks)))
    return (each, mine) if each != mine else None


def _window_centres(patch_grid: PatchGrid):
    """``(y0, y1, x0, x1) -> (lat, lon)`` of a window's centre (temporal encoders such as Presto take a location)."""
    from pyproj import Transformer

    a, b, c, d, e, f = patch_grid.grid.transform[:6]
    try:
        to_wgs84 = Transformer.from_crs(patch_grid.grid.crs, "EPSG:4326", always_xy=True)
    except Exception:  # a pixel or engineering CRS has no geographic location
        return lambda *_: None

    def centre(y0, y1, x0, x1):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        lon, lat = to_wgs84.transform(c + a * cx + b * cy, f + d * cx + e * cy)
        return (float(lat), float(lon)) if np.isfinite(lat) and np.isfinite(lon) else None

    return centre


def window_px(spec, p: int) -> int:
    """Side of the encoder's windows in pixels: its ``window``, a whole number of ``p`` px patches (at least one)."""
    return max(p, spec.window // p * p)


def _embed_block(values: np.ndarray, quality: np.ndarray, where, stats: np.ndarray, months: np.ndarray,
                 encoder: Encoder, p: int, threads: tuple[int, int] | None) -> np.ndarray:
    """One block of :func:`embedding_graph` (one window, every date): ``where`` is the window's ``(lat, lon)``
    in a ``(1, 1)`` object array (temporal encoders), else ``None``."""
    latlon = None if where is None else where[0, 0]
    return _embed_window(values, quality, stats, months, encoder, p, latlon, threads)


def _window_chunks(n: int, win: int) -> tuple[int, ...]:
    """Chunk sizes that cut ``n`` px into windows of ``win`` px from the origin (the last one shorter)."""
    return tuple(min(win, n - i) for i in range(0, n, win))


def _on_windows(cube: xr.DataArray, patch_grid: PatchGrid, win: int, band_index: list[int]):
    """The cube's values ``(time, band, y, x)`` and quality ``(time, y, x)`` over whole patches, rechunked onto
    the window grid (every date and band of a window in one chunk), with the windows' heights and widths.
    The graphs built on them share these tasks: computed together, the files are read once."""
    p = patch_grid.patch_size
    nr, nc = patch_grid.shape
    ys, xs = _window_chunks(nr * p, win), _window_chunks(nc * p, win)
    data = da.asarray(cube.data)
    if list(band_index) != list(range(data.shape[1])):
        data = data[:, list(band_index)]
    # each window gathers its slices of the source chunks in one step: task rechunking (not a P2P shuffle on a
    # cluster), without the intermediate chunks (extra copies of the cube) a multi-step plan would add
    onto_windows = dict(method="tasks", threshold=float("inf"))
    values = data[:, :, : nr * p, : nc * p].rechunk((-1, -1, ys, xs), **onto_windows)
    quality = da.asarray(cube["quality"].data)[:, : nr * p, : nc * p].rechunk((-1, ys, xs), **onto_windows)
    return values, quality, ys, xs


def covered_pixels(quality: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """``(time, h, w)`` quality and finiteness (every band has a value) -> ``(h, w)``: the pixels the images cover
    (data at some date, cloudy or not; nodata at every date is off the images)."""
    return ((quality != Quality.NODATA) & finite).any(axis=0)


def _footprint_block(values: np.ndarray, quality: np.ndarray, p: int) -> np.ndarray:
    return pack_footprint(covered_pixels(quality, np.isfinite(values).all(axis=1)), p)


def cloud_fractions(quality: np.ndarray, p: int, covered: np.ndarray) -> np.ndarray:
    """``quality (time, h, w)`` -> ``(time, h/p, w/p)``: each patch's pixels flagged CLOUD at each date, as a
    fraction of its pixels that the images cover (as :func:`clear_fractions` counts them; 0 for a patch of which
    they cover less than ``MIN_COVER``). The change stage reads a thin cloud's fringe from it
    (:data:`changescout.change.CLOUD_FRINGE`)."""
    cloud = (quality == Quality.CLOUD) & covered
    return clear_fractions(cloud, p, covered)


def _cloud_block(values: np.ndarray, quality: np.ndarray, p: int) -> np.ndarray:
    return cloud_fractions(quality, p, covered_pixels(quality, np.isfinite(values).all(axis=1)))


def cloud_graph(cube: xr.DataArray, encoder: Encoder, patch_grid: PatchGrid, band_index: list[int]) -> da.Array:
    """Lazy ``(time, row, col)`` float32 :func:`cloud_fractions`, on the windows of :func:`embedding_graph`
    (written with the embeddings, the source is read once for all)."""
    p = patch_grid.patch_size
    values, quality, _, _ = _on_windows(cube, patch_grid, window_px(encoder.spec, p), band_index)
    return da.blockwise(_cloud_block, "tyx", values, "tbyx", quality, "tyx", p, None,
                        adjust_chunks={"y": lambda n: n // p, "x": lambda n: n // p}, concatenate=True,
                        dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))


def footprint_graph(cube: xr.DataArray, encoder: Encoder, patch_grid: PatchGrid, band_index: list[int]) -> da.Array:
    """Lazy ``(row, col, ceil(p*p/8))`` uint8: which pixels of each patch the images cover, packed
    (:func:`pack_footprint`). Built on the windows of :func:`embedding_graph`: written with the embeddings, the
    source is read once for both."""
    p = patch_grid.patch_size
    values, quality, _, _ = _on_windows(cube, patch_grid, window_px(encoder.spec, p), band_index)
    nbytes = -(-p * p // 8)
    return da.blockwise(_footprint_block, "yxd", values, "tbyx", quality, "tyx", p, None, new_axes={"d": nbytes},
                        adjust_chunks={"y": lambda n: n // p, "x": lambda n: n // p}, concatenate=True,
                        dtype=np.uint8, meta=np.empty((0, 0, 0), np.uint8))


def embedding_graph(cube: xr.DataArray, encoder: Encoder, patch_grid: PatchGrid, stats: np.ndarray,
                    band_index: list[int]) -> da.Array:
    """Lazy ``(time, row, col, dim + 1)`` array: one dask task per window (all dates of it), every date on the
    identical window grid counted from the grid origin.

    The cube is rechunked onto the window grid (every date and band in one chunk per window) and the windows are
    mapped blockwise: a graph built in a few array operations whatever the number of windows."""
    spec = encoder.spec
    p = patch_grid.patch_size
    if p != spec.patch_size:
        raise ConfigError(f"patch grid has {p} px patches but the encoder {spec.name!r} was built for {spec.patch_size}")
    values, quality, ys, xs = _on_windows(cube, patch_grid, window_px(spec, p), band_index)
    halo = spec.halo
    if halo:  # each window with its neighbours' pixels around it (the grid's own edge repeated at its edge)
        values = da.overlap.overlap(values, depth={2: halo, 3: halo}, boundary={2: "nearest", 3: "nearest"})
        quality = da.overlap.overlap(quality, depth={1: halo, 2: halo}, boundary={1: "nearest", 2: "nearest"})
    months = (pd.DatetimeIndex(cube["time"].values).month.to_numpy() - 1).astype(np.int64)
    where = (None, None)
    if spec.temporal:  # each window's centre in degrees, one block per window
        centre = _window_centres(patch_grid)
        cells = np.empty((len(ys), len(xs)), object)
        for i, y0 in enumerate(np.cumsum((0,) + ys[:-1])):
            for j, x0 in enumerate(np.cumsum((0,) + xs[:-1])):
                cells[i, j] = centre(int(y0), int(y0) + ys[i], int(x0), int(x0) + xs[j])
        where = (da.from_array(cells, chunks=1), "yx")
    enc = dask.delayed(encoder, pure=True, traverse=False)
    threads = _torch_threads(len(ys) * len(xs))
    return da.blockwise(
        _embed_block, "tyxd", values, "tbyx", quality, "tyx", *where, stats, None, months, None, enc, None, p, None,
        threads, None, new_axes={"d": spec.dim + 1},
        adjust_chunks={"y": lambda n: (n - 2 * halo) // p, "x": lambda n: (n - 2 * halo) // p},
        concatenate=True, align_arrays=False, dtype=np.float32, meta=np.empty((0, 0, 0, 0), np.float32),
    )


IN_MEMORY_BYTES = 2 << 30
WRITE_PX = 256  # a zarr chunk of the EmbeddingCube covers at least this many pixels a side (whole windows)...
WRITE_BYTES = 64 << 20  # ...unless that would exceed this many bytes


def write_chunks(arr: da.Array, win: int, p: int) -> da.Array:
    """``arr`` (one chunk per window) regrouped into chunks of whole windows at least ``WRITE_PX`` px a side
    (as long as a chunk stays under ``WRITE_BYTES``): small windows (Galileo's 64 px) otherwise make one tiny
    zarr chunk each, and writing costs about as much per chunk as per byte. Values are unchanged."""
    k = max(1, WRITE_PX // win)
    per_patch = arr.shape[0] * arr.shape[-1] * arr.dtype.itemsize
    while k > 1 and (k * win // p) ** 2 * per_patch > WRITE_BYTES:
        k -= 1
    return arr if k == 1 else arr.rechunk({1: k * win // p, 2: k * win // p})


def _cluster_memory(client) -> float:
    """Total memory limit of the cluster's workers in bytes (inf when a worker has none)."""
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info().get("workers", {}).values()]
    return float("inf") if not limits or min(limits) <= 0 else float(sum(limits))


def _read_once(cube: xr.DataArray, limit: int = IN_MEMORY_BYTES) -> xr.DataArray:
    """``cube`` persisted (in this process' memory, or on a cluster's workers) when it is small enough:
    statistics, the fit sample and every window then read the files (and screen the clouds) once, not three
    times. On a cluster "small enough" also means at most a quarter of its workers' memory. Larger cubes stay
    lazy, memory bounded by the window size."""
    if cube.chunks is None or cube.size * 4 > limit:
        return cube
    client = default_client()
    if client is not None and cube.size * 4 > _cluster_memory(client) / 4:
        return cube
    return cube.persist()


def embed_cube(cube: xr.DataArray, encoder: Encoder, patch_grid: PatchGrid, out: Path, series: str,
               progress=None) -> xr.Dataset:
    """Normalise, fit (if the encoder learns from data), embed every date and write ``out`` (zarr) atomically."""
    if "quality" not in cube.coords:  # (a cube built by hand: a bare KeyError inside, a review)
        raise ConfigError("embed_cube needs a SeriesCube: a (time, band, y, x) cube with its per-pixel quality class "
                          "(the coordinate 'quality', (time, y, x) uint8), as changescout.cube.make_cube and the sources "
                          "give it")
    if patch_grid.grid != grid_of(cube):  # its patches' coordinates would be written over other pixels
        raise GridError(f"the patch grid is not the cube's ({patch_grid.grid} against {grid_of(cube)}): build it "
                        "with PatchGrid(grid_of(cube), patch_size)")
    cube = _read_once(cube.isel(band=select_bands(cube, encoder.spec)))
    bands = [str(b) for b in cube["band"].values]
    band_index = list(range(len(bands)))  # the cube now holds the encoder's bands, in its order
    # an encoder that learns from the data (rcf) learns this run's input normalisation with its weights, and
    # a run given those weights normalises with it: both runs' embeddings then live in one space
    centre, scale, offset = series_statistics(cube, band_index)
    shared = getattr(encoder, "input_normalisation", None)
    learnt_on = getattr(encoder, "input_bands", None)
    if shared is not None and learnt_on is not None and list(learnt_on) != bands:
        raise BandError(f"the encoder's weights were learnt on the bands {list(learnt_on)}; this cube has {bands}")
    family, learnt_family = band_family(cube), getattr(encoder, "input_family", None)
    if shared is not None and None not in (family, learnt_family) and family != learnt_family:  # same names, other bands
        raise BandError(f"the encoder's weights were learnt on {FAMILY_NAMES[learnt_family]} bands {list(learnt_on or [])}; "
                        f"this cube's bands of the same names are {FAMILY_NAMES[family]}'s, which number them otherwise "
                        "(Landsat 8's B2 is blue, Landsat 7's green): learn weights on this series instead")
    stats = stack_statistics(centre, scale, offset, reference=shared)
    if hasattr(encoder, "is_fitted") and not encoder.is_fitted:
        try:
            encoder.fit(fit_sample(cube, band_index, stats, seed=getattr(encoder, "seed", 0)))
        except InputError as exc:  # (too few clear pixels to learn from: the series' fault, so named by its source)
            if exc.path is not None or not cube.attrs.get("source"):
                raise
            raise type(exc)(exc.message, cube.attrs["source"]) from exc
        if hasattr(encoder, "set_input_normalisation"):
            encoder.set_input_normalisation(centre, scale, bands, band_family(cube))
    spec = encoder.spec
    p = patch_grid.patch_size
    arr = write_chunks(embedding_graph(cube, encoder, patch_grid, stats, band_index), window_px(spec, p), p)
    footprint = footprint_graph(cube, encoder, patch_grid, band_index).rechunk((arr.chunks[1], arr.chunks[2], -1))
    cloud = cloud_graph(cube, encoder, patch_grid, band_index).rechunk(arr.chunks[:3])
    xs, ys = patch_grid.centres()
    nr, nc = patch_grid.shape
    ds = xr.Dataset(
        {
            "embedding": (("time", "row", "col", "dim"), arr[..., :-1]),
            "clear_fraction": (("time", "row", "col"), arr[..., -1]),
            "cloud_fraction": (("time", "row", "col"), cloud),
            "footprint": (("row", "col", "footprint_byte"), footprint),
        },
        coords={"time": cube["time"].values, "row": np.arange(nr), "col": np.arange(nc), "x": ("col", xs), "y": ("row", ys)},
        attrs={
            "encoder": spec.name,
            "encoder_version": spec.version,
            "weights_sha256": encoder.weights_digest(),
            # options that change the space (galileo-nano's token size, presto's mode...): "" at the defaults
            "encoder_options": encoder_options(encoder),
            "patch_size": patch_grid.patch_size,
            "stride": patch_grid.stride,
            "grid": json.dumps(patch_grid.grid.to_dict()),
            "series": series,
            "bands": json.dumps(bands),
            "distance": spec.distance,
            ALL_CHUNKS: "all",  # written with every chunk: one missing is damage (intact.zarr_problem)
            "new_state_weight": float(spec.new_state_weight),
            "normalisation": json.dumps({"method": normalisation_method(spec), "centre_scale": np.round(stats, 6).tolist(),
                                         "shared": shares_space(encoder)}),
        },
    )
    with atomic_path(out) as tmp:
        client = default_client()
        write = ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2, write_empty_chunks=True,  # (intact.zarr_problem)
                           compute=False)
        with (progress or _NullProgress()) as bar:
            if client is None or not hasattr(bar, "follow"):
                write.compute()
            else:  # on a cluster: the bar follows the tasks the scheduler counts (dask's local callbacks see none)
                future = client.compute(write)
                try:
                    bar.follow(future)
                    future.result()
                except BaseException:
                    future.cancel()
                    raise
        if client is not None and (why := zarr_problem(tmp)) is not None:
            # dask workers write the chunks: on a cluster that does not see this folder at the same path they land
            # elsewhere, and read back as NaN, the run blamed the source ("no patch clear enough") (a review)
            raise OutputError(f"the dask workers' writes did not reach it ({why}): the workers must see the run directory "
                              "at the same path as this process (a shared file system), or run without --scheduler",
                              out.parent)
    return open_embeddings(out)


def encoder_options(encoder) -> str:
    """The encoder's options that change its embedding space where they differ from its defaults, as JSON
    (``""`` at the defaults, as for runs that did not record them): part of what makes runs comparable."""
    options = encoder.space_options() if hasattr(encoder, "space_options") else {}
    return json.dumps(options, sort_keys=True) if options else ""


class _NullProgress:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def open_embeddings(path: Path) -> xr.Dataset:
    """A run's ``embeddings.zarr`` (the EmbeddingCube: ``embedding (time, row, col, dim)``, ``clear_fraction``), lazily;
    ``path``: the store or the run directory."""
    from .events import run_store

    return xr.open_zarr(run_store(path, "embeddings.zarr"), consolidated=True)


def embedding_grid(ds: xr.Dataset) -> PatchGrid:
    """The patch grid an EmbeddingCube was made on (from its ``grid`` and ``patch_size`` attributes)."""
    return PatchGrid(OutputGrid.from_dict(json.loads(ds.attrs["grid"])), int(ds.attrs["patch_size"]))

