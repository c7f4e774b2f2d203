"""``changescout benchmark``: encoders, classic baselines and their combinations against labelled change.

Every labelled pair of a dataset (an OSCD city, a LEVIR-CD style A/B pair, two consecutive DynamicEarthNet
months) is scored by each method into a per-pixel change map, and the maps are evaluated with
:mod:`changescout.evaluate.metrics` at pixel level and at patch level (16 and 32 px), pooled over all items
and per item.

Preprocessing, the same for every method: the second date is co-registered onto the first
(:func:`coregistered`, ``coregister="auto"``). Encoders are told the same month for both dates
(``months="first"``, :func:`with_months`): a protocol choice for two-date change detection, since the month is
an input of galileo-nano's tokens and two dates of different seasons would otherwise differ by the month code
alone (7 OSCD cities, 8 px tokens: pooled patch-16 AUROC 0.830 with the first date's month, 0.832 with the
second's, 0.768 with each date's own).

Methods (:func:`parse_method`; ``uses_embeddings`` is True exactly when an encoder is part of the method, and
``evidence`` says ``spectra``, ``embedding`` or ``embedding+spectra``, the ablation a row belongs to):

* baselines :data:`changescout.evaluate.baselines.BASELINES` on all bands (``cva-z``...);
* encoders: both dates embedded on one identical window grid with fine patches of ``fine_patch`` px; the
  score of a fine patch is the distance between its two embeddings (``spec.distance``), spread over its
  pixels, so that patch-level scores are means of fine-patch distances (fine distances aggregated upward);
* evidence variants (:mod:`changescout.evaluate.evidence`): ``-pN`` fine patches of N px, ``-max`` / ``-topK``
  aggregation to 16 px patches, ``-ms`` multi-scale, ``-whitened`` / ``-lw`` whitened embedding distances,
  ``<encoder>+<baseline>`` embedding and spectral evidence combined (mean of per-item robust z-scores), and
  ``-cal``: per-item calibration (robust z) before pooling, for baselines and encoders alike.

Without ``methods``/``encoders`` a run holds the ablation of :func:`default_methods`. Embeddings of pretrained
encoders can be cached on disk (``cache=`` or ``$CHANGESCOUT_BENCHMARK_CACHE``).

Outputs in ``out`` (:data:`OUTPUTS`): ``metrics.json`` (``dataset``, ``root``, ``rows``, ``spread``,
``per_item``, ``notes``, ``protocol``), ``metrics.md``, ``per_item.csv``, ``ablation.md``
(:func:`ablation_markdown`: best baseline variant, best method per kind of evidence, margins, per item, leave one
item out), ``roc.png`` and ``pr.png`` (patch-16 curves, at most :data:`MAX_CURVES` methods). They are written
into a temporary folder beside ``out`` and moved in once all are written (:func:`write_outputs`): a failed run
leaves ``out`` as it was, a finished one leaves no output of an earlier run beside its own.

A metric that is undefined is NaN (null in ``metrics.json``): an item needs both changed and unchanged pixels (or
patches) for its AUROC and AP, and an item smaller than a patch has no patch at that level. The notes say which
items and levels; a dataset with no changed pixel at all (or no unchanged one) is refused before any scoring.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_json
from ..encoders.base import select_bands
from ..errors import BandError, ConfigError, InputError, OutputError
from .baselines import BASELINES
from .evidence import aggregate_up, block_means, calibrate, combine, embedding_distance, spread_patches, whitened_distance
from .metrics import Item, evaluate_items, patch_level, spread

DATASETS = ("oscd", "pairs", "dynamicearthnet", "synthetic")
#: Encoder options for two-date benchmarks: Presto embeds each date alone (a trailing window would mix in the
#: other date) and pools every 4th pixel of each axis (the same pooled AUROC on OSCD, 16 times faster).
ENCODER_OPTIONS = {"presto": {"mode": "single", "pixel_stride": 4}}
PATCH_SIZES = (16, 32)
#: Every file a benchmark writes in ``out``: a finished run removes those of an earlier run that it did not write.
OUTPUTS = ("metrics.json", "metrics.md", "per_item.csv", "ablation.md", "roc.png", "pr.png")


@dataclass
class Pair:
    """One labelled date pair: ``a`` and ``b`` ``(band, H, W)`` reflectance, its label and valid mask."""

    name: str
    cube: object  # two-date SeriesCube (time, band, y, x), loaded
    label: np.ndarray
    valid: np.ndarray
    notes: list = field(default_factory=list)
    records: dict = field(default_factory=dict)
    encoder_cube: object = None  # what encoders see, when it differs from ``cube`` (see :func:`coregistered`)


def load_pairs(dataset: str, root: str | Path) -> list[Pair]:
    """The labelled date pairs of ``dataset`` under ``root``."""
    root = Path(root)
    if dataset == "oscd":
        from ..sources import oscd

        return [_pair(oscd.load_item(root, c)) for c in oscd.list_items(root)]
    if dataset == "pairs":
        from ..sources import pairs

        out = []
        for name in pairs.list_items(root):
            item = pairs.load_item(root, name)
            note = ("pixel coordinates: the pairs have no CRS and no dates" if pairs.is_pixel_grid(item.cube) else
                    f"the pairs have no dates: {', '.join(pairs.PLACEHOLDER_DATES)} stand for them")
            out.append(_pair(item, [note]))
        return out
    if dataset == "dynamicearthnet":
        from ..sources import dynamicearthnet as den

        out = []
        for name in den.list_items(root):
            item = den.load_item(root, name)
            cube = item.cube.compute()
            for i in range(cube.sizes["time"] - 1):
                label, valid = item.labels.binary(i)
                tag = f"{name}-{pd.Timestamp(cube['time'].values[i]):%Y%m}"
                out.append(Pair(tag, cube.isel(time=[i, i + 1]), label, valid & _finite(cube.isel(time=[i, i + 1]))))
        return out
    raise ConfigError(f"unknown benchmark dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def dataset_notes(dataset: str, root: str | Path) -> list[str]:
    """What the dataset under ``root`` holds but :func:`load_pairs` leaves out (OSCD: cities with no change
    label, folders that are not cities), one sentence each."""
    if dataset == "oscd":
        from ..sources import oscd

        return oscd.skipped(root)
    return []


def _finite(cube) -> np.ndarray:
    return np.isfinite(np.asarray(cube.values)).all(axis=(0, 1))


def _pair(item, notes=()) -> Pair:
    cube = item.cube.compute()
    return Pair(item.name, cube, np.asarray(item.label, bool), np.asarray(item.valid, bool), list(notes))


# -- preprocessing shared by every method ------------------------------------------------------------------------
def coregistered(pair: Pair, mode: str = "auto") -> Pair:
    """``pair`` with its second date co-registered onto the first (:func:`changescout.coregister.coregister`,
    reference = the first date, on whose grid the labels sit). Pixels moved in from outside the image become
    NaN and invalid (left out of every method's evaluation); for encoders, which cannot take NaN, they are
    filled with the nearest pixel of the same date (:func:`fill_moved_in`)."""
    from ..coregister import coregister

    cube, record = coregister(pair.cube, mode, reference="first", edge="nodata")  # moved-in pixels: see above
    if record.get("status") != "done":
        return Pair(pair.name, pair.cube, pair.label, pair.valid, [*pair.notes], {"coregister": record})
    cube = cube.compute()
    return Pair(pair.name, cube, pair.label, pair.valid & _finite(cube), [*pair.notes], {"coregister": record},
                fill_moved_in(cube, pair.cube))


def fill_moved_in(cube, before):
    """``cube`` where pixels that were finite in ``before`` but are NaN now (moved in from outside the grid by
    co-registration) take the value of the nearest finite pixel of the same date and their quality in ``before``.
    (What the pipeline's co-registration does itself, ``edge="nearest"``; the benchmark shifts with
    ``edge="nodata"`` so that its evaluation can leave those pixels out.)

    Left as NaN (NODATA), an encoder would see them as 0: the border tokens of the moved date then differ from
    the other date's for no reason, and their distances (measured: galileo-nano on the 7 OSCD cities, pooled
    calibrated patch-16 AP 0.42 instead of 0.52) top the ranking."""
    from scipy import ndimage

    v = np.array(cube.values, dtype=np.float32)
    q = np.array(cube["quality"].values)
    v0, q0 = np.asarray(before.values), np.asarray(before["quality"].values)
    changed = False
    for t in range(v.shape[0]):
        now = np.isfinite(v[t]).all(axis=0)
        moved_in = ~now & np.isfinite(v0[t]).all(axis=0)
        if not moved_in.any() or not now.any():
            continue
        idx = ndimage.distance_transform_edt(~now, return_distances=False, return_indices=True)
        nearest = v[t][:, idx[0], idx[1]]
        v[t][:, moved_in] = nearest[:, moved_in]
        q[t][moved_in] = q0[t][moved_in]
        changed = True
    return cube.copy(data=v).assign_coords(quality=(("time", "y", "x"), q)) if changed else cube


def with_months(cube, months: str):
    """The cube with the month the encoder is told for each date: ``actual`` (the dates' own months), ``first``
    or ``second`` (both dates told the first's, or the second's, month; the dates become one second apart).

    Telling both dates the same month is a protocol choice for two-date change detection: the encoder's month
    input shifts the embedding of an unchanged scene, so two dates of different seasons would otherwise differ
    by the month code alone (galileo-nano: the months of the dates are an input of every token)."""
    if months == "actual":
        return cube
    if months not in MONTHS:
        raise ConfigError(f"months must be one of {', '.join(MONTHS)}, got {months!r}")
    t = pd.DatetimeIndex(cube["time"].values)
    one = pd.Timedelta(seconds=1)
    times = [t[0], t[0] + one] if months == "first" else [t[-1] - one, t[-1]]
    return cube.assign_coords(time=np.array(times, dtype="datetime64[ns]"))


# -- methods ---------------------------------------------------------------------------------------------------------
MONTHS = ("first", "second", "actual")
#: Modifiers of a part of a method name (suffixes), see :func:`parse_method`.
_MODIFIER = re.compile(r"-(whitened|lw|ms|max|top\d+|p\d+)$")
_EMBEDDING_ONLY = ("whitened", "lw", "ms")
#: Per-image calibration and combination statistics are taken over block means of this many px (the first
#: evaluation patch size), the level at which methods are compared.
SUPPORT = PATCH_SIZES[0]
#: Whitened distance: PCA whitening keeping this fraction of the pooled variance, then this distance. On the 7
#: OSCD cities no setting (16 or 32 components, 0.95, 0.99 or all of the variance; Euclidean or cosine;
#: Ledoit-Wolf) beat the plain distance (benchmarks/results/oscd_ablation.md); 0.95 and Euclidean is the ablation.
WHITEN_COMPONENTS = 0.95
WHITEN_DISTANCE = "euclidean"


@dataclass(frozen=True)
class Method:
    """A benchmark method, parsed from its name (:func:`parse_method`)."""

    name: str
    encoder: str | None = None
    baseline: str | None = None
    modifiers: tuple = ()  # of the embedding part
    baseline_modifiers: tuple = ()  # of the spectral part
    calibrated: bool = False

    @property
    def uses_embeddings(self) -> bool:
        return self.encoder is not None

    @property
    def evidence(self) -> str:
        """``spectra``, ``embedding`` or ``embedding+spectra``: the ablation a method belongs to."""
        return "embedding+spectra" if self.encoder and self.baseline else "embedding" if self.encoder else "spectra"


def parse_method(name: str, encoders=None) -> Method:
    """A method name: ``[<encoder>[-modifiers]][+][<baseline>[-modifiers]][-cal]``.

    * ``<baseline>`` (``cva-z``, ``pca-kmeans``...): a classic baseline's per-pixel score (spectra only);
    * ``<encoder>`` (``galileo-nano``, ``rcf``...): the distance between the two dates' fine-patch embeddings,
      spread over each fine patch, so that the evaluation's patch mean aggregates fine distances upward;
    * modifiers of either part: ``-pN`` fine patches of N px (embedding: the encoder's patches, default
      ``fine_patch``; spectra: block means of the pixel score, default the pixels themselves); ``-max`` /
      ``-topK``: fine scores aggregated to 16 px patches by their maximum / the mean of the K largest instead
      of the mean; embedding part only: ``-whitened`` (PCA-whitened embeddings, per image, both dates pooled),
      ``-lw`` (Ledoit-Wolf whitening), ``-ms`` (multi-scale: combined with the same distance at half the fine
      patch size);
    * ``<encoder>+<baseline>``: both, each robust-z scored per image, averaged (:func:`evidence.combine`);
    * ``-cal`` at the end: the whole score calibrated per image (robust z) before items are pooled.
    """
    from ..encoders import available_encoders

    known = set(available_encoders()) if encoders is None else set(encoders)
    rest, calibrated = (name[:-4], True) if name.endswith("-cal") else (name, False)
    encoder = baseline = None
    modifiers: tuple = ()
    baseline_modifiers: tuple = ()
    for part in rest.split("+"):
        mods = []
        while (m := _MODIFIER.search(part)) and part not in BASELINES and part not in known:
            mods.insert(0, m.group(1))
            part = part[: m.start()]
        aggregations = [x for x in mods if x == "max" or x.startswith("top")]
        sizes = [x for x in mods if re.fullmatch(r"p\d+", x)]
        if len(aggregations) > 1 or len(sizes) > 1 or ("whitened" in mods and "lw" in mods) or "p0" in sizes:
            raise ConfigError(f"benchmark method {name!r}: {part!r} combines modifiers that exclude each other")
        if part in BASELINES and baseline is None and not set(mods) & set(_EMBEDDING_ONLY):
            baseline, baseline_modifiers = part, tuple(mods)
        elif part in known and encoder is None:
            encoder, modifiers = part, tuple(mods)
        else:
            raise ConfigError(f"unknown benchmark method {name!r}: {part!r} is neither a baseline ({', '.join(BASELINES)}) "
                              f"nor an encoder ({', '.join(sorted(known))}) with modifiers that fit it, or is given "
                              "twice; see parse_method")
    return Method(name, encoder, baseline, modifiers, baseline_modifiers, calibrated)


def default_methods(baselines, encoders) -> list[str]:
    """The ablation: every baseline raw and calibrated, and ``cva-z`` aggregated upward; per encoder its fine
    distance and evidence variants (scales, aggregation, whitening), alone and combined with spectra."""
    out = [*baselines, *(f"{b}-cal" for b in baselines)]
    spec = "cva-z" if "cva-z" in baselines else None
    if spec:
        out += [f"{spec}-p4-max", f"{spec}-p4-max-cal", f"{spec}-p4-top4", f"{spec}-p4-top4-cal"]
    for e in encoders:
        out += [e, f"{e}-cal", f"{e}-p4", f"{e}-p4-cal", f"{e}-max", f"{e}-p4-max", f"{e}-p4-top4", f"{e}-p4-top4-cal",
                f"{e}-ms", f"{e}-ms-cal", f"{e}-whitened", f"{e}-whitened-cal", f"{e}-lw-cal"]
        if spec:
            out += [f"{e}+{spec}", f"{e}+{spec}-cal", f"{e}-p4+{spec}", f"{e}-ms+{spec}", f"{e}-whitened+{spec}",
                    f"{e}-p4-max+{spec}", f"{e}-p4-top4+{spec}", f"{e}-p4-top4+{spec}-cal",
                    f"{e}-p4-top4+{spec}-p4-max", f"{e}-p4-top4+{spec}-p4-top4"]
    return out


class EncoderPool:
    """One instance per (encoder, fine patch) of pretrained encoders; encoders that learn from the data (rcf)
    come fresh for every item."""

    def __init__(self):
        self._cache = {}

    def get(self, name: str, fine_patch: int):
        from ..encoders import get_encoder

        key = (name, fine_patch)
        if key not in self._cache:
            self._cache[key] = get_encoder(name, **encoder_options(name, fine_patch))
        enc = self._cache[key]
        return enc if getattr(enc, "is_fitted", True) else get_encoder(name, **encoder_options(name, fine_patch))


def encoder_options(name: str, fine_patch: int) -> dict:
    opts = {"patch_size": fine_patch, **ENCODER_OPTIONS.get(name, {})}
    if name == "galileo-nano":
        opts["token_size"] = min(fine_patch, 8)  # tokens of the fine patch itself (at most the 8 px kernels)
    return opts


class Sources:
    """The evidence of one pair, computed once and shared by every method: spectral baseline maps and the
    dates' fine-patch embeddings (optionally cached on disk in ``cache``, keyed by the data and the encoder),
    with the seconds each took (a method's ``seconds`` sum the sources it used)."""

    def __init__(self, pair: Pair, fine_patch: int = 8, months: str = "first", cache=None, pool=None):
        self.pair, self.fine_patch, self.months = pair, fine_patch, months
        self.cache = None if cache is None else Path(cache)
        self.pool = pool or EncoderPool()
        self.seconds: dict = {}
        self.used: set = set()
        self._memo: dict = {}
        self._values = None
        self._digest = None

    def _get(self, key, fn):
        if key not in self._memo:
            t = time.perf_counter()
            self._memo[key] = fn()
            self.seconds[key] = time.perf_counter() - t
        self.used.add(key)
        return self._memo[key]

    @property
    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = np.asarray(self.pair.cube.values, dtype=np.float32)
        return self._values

    @property
    def shape(self) -> tuple[int, int]:
        return self.pair.label.shape

    def spectral(self, baseline: str) -> np.ndarray:
        return self._get(("baseline", baseline), lambda: BASELINES[baseline](self.values[0], self.values[1]))

    def embeddings(self, encoder: str, p: int) -> np.ndarray:
        """``(2, rows, cols, dim)`` embeddings of the two dates' ``p`` px fine patches."""
        return self._get(("embeddings", encoder, p), lambda: self._embed(encoder, p))

    def distance(self, encoder: str, p: int, whitening: str | None = None) -> np.ndarray:
        """``(rows, cols)`` distance between the two dates' fine-patch embeddings (whitened per image or not)."""
        emb = self.embeddings(encoder, p)  # outside the timed step: each source's seconds are its own

        def compute():
            if whitening is None:
                kind = getattr(self.pool.get(encoder, p).spec, "distance", "euclidean")
                return embedding_distance(emb[0], emb[1], kind)
            method = "pca" if whitening == "whitened" else "ledoit-wolf"
            return whitened_distance(emb[0], emb[1], method, WHITEN_DISTANCE,
                                     WHITEN_COMPONENTS if method == "pca" else None)
        return self._get(("distance", encoder, p, whitening), compute)

    def _embed(self, name: str, p: int) -> np.ndarray:
        encoder = self.pool.get(name, p)
        path = None
        token = getattr(encoder, "__dask_tokenize__", None)
        if self.cache is not None and getattr(encoder, "is_fitted", True) and token is not None:
            h = hashlib.sha1(repr((token(), self.months, EMBED_CACHE_VERSION)).encode())
            h.update(self.data_digest().encode())
            h.update(_code_digest(encoder).encode())  # a change to the embedding code invalidates the cache
            path = self.cache / f"{_safe(self.pair.name)}-{_safe(name)}-p{p}-{h.hexdigest()[:16]}.npy"
            if path.exists():
                return np.load(path)
        cube = self.pair.cube if self.pair.encoder_cube is None else self.pair.encoder_cube
        emb = embed_pair(encoder, with_months(cube, self.months), p)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, emb)
        return emb

    def data_digest(self) -> str:
        if self._digest is None:
            cube = self.pair.cube if self.pair.encoder_cube is None else self.pair.encoder_cube
            h = hashlib.sha1(np.ascontiguousarray(cube.values).tobytes())
            h.update(np.ascontiguousarray(cube["quality"].values).tobytes())
            h.update(repr([str(b) for b in self.pair.cube["band"].values]).encode())
            self._digest = h.hexdigest()
        return self._digest


EMBED_CACHE_VERSION = 1


def _code_digest(encoder) -> str:
    """Digest of the source of the embedding stage and of the encoder's module."""
    import inspect
    import sys

    from .. import embed

    h = hashlib.sha1()
    for mod in (embed, sys.modules.get(type(encoder).__module__)):
        try:
            h.update(Path(inspect.getfile(mod)).read_bytes())
        except (TypeError, OSError):
            pass
    return h.hexdigest()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def embed_pair(encoder, cube, fine_patch: int) -> np.ndarray:
    """``(2, rows, cols, dim)``: both dates embedded on one identical window grid of ``fine_patch`` px patches."""
    from ..cube import grid_of
    from ..embed import embed_cube
    from ..tiling import PatchGrid

    pg = PatchGrid(grid_of(cube), fine_patch)
    with tempfile.TemporaryDirectory() as tmp:
        ds = embed_cube(cube, encoder, pg, Path(tmp) / "e.zarr", "benchmark")
        return np.asarray(ds["embedding"].values, dtype=np.float32)


def score_method(method: Method, src: Sources) -> np.ndarray:
    """The per-pixel change score of ``method`` on the pair of ``src``."""
    valid = src.pair.valid
    maps = []
    if method.encoder is not None:
        maps.append(_embedding_map(method, src))
    if method.baseline is not None:
        maps.append(_spectral_map(method, src))
    score = maps[0] if len(maps) == 1 else combine(maps, valid, "robust-z", support=SUPPORT)
    if method.calibrated:
        score = calibrate(score, valid, "robust-z", support=SUPPORT)
    return np.asarray(score, dtype=np.float32)


def _size_and_aggregation(mods, default: int) -> tuple[int, str | None]:
    size = next((int(m[1:]) for m in mods if re.fullmatch(r"p\d+", m)), default)
    return size, next((m for m in mods if m == "max" or m.startswith("top")), None)


def _upward(fine: np.ndarray, p: int, agg: str | None, src: Sources, name: str) -> np.ndarray:
    """Fine scores of ``p`` px patches on the pixel grid: as they are (the evaluation's patch mean aggregates
    them), or aggregated to ``SUPPORT`` px patches by ``agg`` first."""
    if agg is None:
        return spread_patches(fine, p, src.shape)
    if SUPPORT % p:
        raise ConfigError(f"{name}: {SUPPORT} px patches are not a whole number of {p} px fine patches")
    return spread_patches(aggregate_up(fine, SUPPORT // p, agg), SUPPORT, src.shape)


def _spectral_map(method: Method, src: Sources) -> np.ndarray:
    score = src.spectral(method.baseline)
    if not method.baseline_modifiers:
        return score
    p, agg = _size_and_aggregation(method.baseline_modifiers, 1)
    return _upward(block_means(score, p, src.pair.valid), p, agg, src, method.name)


def _embedding_map(method: Method, src: Sources) -> np.ndarray:
    mods = method.modifiers
    whitening = "whitened" if "whitened" in mods else "lw" if "lw" in mods else None
    p, agg = _size_and_aggregation(mods, src.fine_patch)
    scales = [p] + ([p // 2] if "ms" in mods else [])
    if min(scales) < 1:
        raise ConfigError(f"{method.name}: multi-scale needs fine patches of at least 2 px")
    maps = [_upward(src.distance(method.encoder, q, whitening), q, agg, src, method.name) for q in scales]
    return maps[0] if len(maps) == 1 else combine(maps, src.pair.valid, "robust-z", support=SUPPORT)


def available_encoders_with_weights(names=None) -> list[str]:
    """``names`` or every registered encoder whose weights can be found (rcf needs none)."""
    from ..encoders import available_encoders, get_encoder

    out = []
    for name in available_encoders() if names is None else names:
        try:
            get_encoder(name)
        except InputError:
            if names is not None:
                raise
            continue
        out.append(name)
    return out


def resolve_methods(baselines=None, encoders=None, methods=None) -> list[Method]:
    """The methods to run: ``methods`` when given; else ``baselines`` (names of spectral methods, default every
    baseline raw and calibrated) and ``encoders`` (names of embedding methods, default every encoder whose
    weights are found with its evidence variants, :func:`default_methods`)."""
    from ..encoders import available_encoders

    if methods is None:
        if encoders is None:
            found = available_encoders_with_weights()
            names = default_methods(baselines or list(BASELINES), found)
            if baselines is not None:  # the given baselines as they are, then the encoders' variants
                names = list(baselines) + [n for n in names if parse_method(n).encoder is not None]
        else:
            names = list(baselines if baselines is not None else
                         [*BASELINES, *(f"{b}-cal" for b in BASELINES)]) + list(encoders)
    else:
        names = list(methods)
    parsed = [parse_method(n, available_encoders()) for n in dict.fromkeys(names)]
    for m in parsed:
        if m.encoder is not None:
            available_encoders_with_weights([m.encoder])  # a clear error when its weights are missing
    return parsed


def run_benchmark(dataset: str, root: str | Path, encoders=None, out: str | Path | None = None,
                  baselines=None, fine_patch: int = 8, log=print, seeds=(0, 1, 2, 3, 4), methods=None,
                  coregister: str = "auto", months: str = "first", cache=None) -> dict:
    """Score every item with every method; write the outputs in ``out`` (if given); return ``metrics.json``.

    ``methods`` (names, :func:`parse_method`) overrides ``baselines`` and ``encoders``. Every item is
    co-registered first (``coregister``: auto, on, off; the same for every method); encoders are told the
    month ``months`` (:func:`with_months`). ``cache`` (default ``$CHANGESCOUT_BENCHMARK_CACHE``) keeps the
    embeddings of pretrained encoders on disk between runs. :class:`OutputError` before any work when ``out``
    cannot be a folder of outputs; :class:`InputError` when no item has both changed and unchanged pixels."""
    if out is not None:
        out = check_out(out)
    if dataset == "synthetic":
        result = run_synthetic(root, encoders, seeds=seeds, log=log)
        if out is not None:
            write_outputs(out, result, {})
        return result
    if months not in MONTHS:
        raise ConfigError(f"months must be one of {', '.join(MONTHS)}, got {months!r}")
    cache = cache if cache is not None else os.environ.get("CHANGESCOUT_BENCHMARK_CACHE") or None
    pairs = load_pairs(dataset, root)
    if not pairs:
        raise InputError(f"no labelled items found for dataset {dataset!r}", root)
    found = dataset_notes(dataset, root)
    for note in found:
        log(f"note: {note}")
    check_scorable(pairs, root)
    wanted = resolve_methods(baselines, encoders, methods)
    t = time.perf_counter()
    pairs = [coregistered(p, coregister) for p in pairs]
    log(f"co-registration ({coregister}): {time.perf_counter() - t:.1f} s")
    undefined = label_notes(pairs)
    for note in undefined:
        log(f"note: {note}")
    pool = EncoderPool()
    sources = [Sources(p, fine_patch, months, cache, pool) for p in pairs]
    bands = [str(b) for b in pairs[0].cube["band"].values]
    rows, per_item, curves, skipped, spreads = [], [], {}, [], []
    explicit = encoders is not None or methods is not None
    unusable = {}
    for method in wanted:
        if method.encoder is not None:
            if method.encoder not in unusable:
                unusable[method.encoder] = None
                try:
                    select_bands(bands, pool.get(method.encoder, fine_patch).spec)
                except BandError as exc:
                    if explicit:
                        raise
                    unusable[method.encoder] = exc.message
                    skipped.append(f"{method.encoder} skipped (and its variants): {exc.message}")
                    log(skipped[-1])
            if unusable[method.encoder] is not None:
                continue
        items, seconds = [], 0.0
        for src in sources:
            src.used, before = set(), set(src.seconds)
            t = time.perf_counter()
            score = score_method(method, src)
            # the method's own work, plus every source it used (computed now or shared with an earlier method)
            own = time.perf_counter() - t - sum(v for k, v in src.seconds.items() if k not in before)
            seconds += max(own, 0.0) + sum(src.seconds[k] for k in src.used)
            items.append(Item(src.pair.name, score, src.pair.label, src.pair.valid))
        log(f"{method.name}: {len(items)} items in {seconds:.1f} s")
        levels = [("pixel", None)] + [("patch", p) for p in PATCH_SIZES]
        for level, p in levels:
            row, items_metrics = evaluate_items(method.name, items, level=level, patch_size=p,
                                                uses_embeddings=method.uses_embeddings, seconds=round(seconds, 2))
            rows.append({**row.to_dict(), "evidence": method.evidence})
            per_item += [{"method": method.name, "level": level, "patch_size": p, **m} for m in items_metrics]
            spreads.append({"method": method.name, "level": level, "patch_size": p, **spread(items_metrics, ("auroc", "ap"))})
        curves[method.name] = _curve_data(items, PATCH_SIZES[0])
    notes = (found + sorted({n for pair in pairs for n in pair.notes}) + undefined + skipped
             + _preprocessing_notes(pairs, coregister, months, wanted))
    result = {"dataset": dataset, "root": str(root), "rows": rows, "spread": _clean_nested(spreads),
              "per_item": _clean(per_item), "notes": notes,
              "protocol": {"coregister": coregister, "months": months, "fine_patch": fine_patch, "support": SUPPORT,
                           "whiten_components": WHITEN_COMPONENTS, "whiten_distance": WHITEN_DISTANCE,
                           "coregistration": {p.name: p.records.get("coregister") for p in pairs}}}
    if out is not None:
        write_outputs(out, result, curves)
    return result


def check_scorable(pairs: list[Pair], root) -> None:
    """:class:`InputError` unless the valid pixels of ``pairs``, pooled, hold both changed and unchanged ones:
    otherwise no AUROC or AP can be computed at any level, and the labels were likely misread."""
    labels = [p.label[p.valid] for p in pairs]
    n = sum(y.size for y in labels)
    changed = sum(int(y.sum()) for y in labels)
    if n and 0 < changed < n:
        return
    items = f"the {len(pairs)} labelled item(s) ({_listed([p.name for p in pairs], 5)})"
    what = (f"no pixel of {items} is valid" if not n else
            f"every pixel of {items} is labelled as {'no change' if not changed else 'change'}")
    raise InputError(f"nothing to score: {what}, so AUROC and AP are undefined; check the label files and how they "
                     "code change", root)


def _level_labels(pair: Pair, p: int | None) -> np.ndarray:
    """The labels of ``pair``'s valid pixels (``p`` None) or of its ``p`` px patches that hold a valid pixel."""
    if p is None:
        return pair.label[pair.valid]
    counted, labels = patch_level(np.ones(pair.label.shape, np.float32), pair.label, p, valid=pair.valid)
    return labels[np.isfinite(counted)]


def _listed(names: list[str], most: int = 10) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _level_name(p: int | None) -> str:
    return "pixel level" if p is None else f"{p} px patches"


def label_notes(pairs: list[Pair]) -> list[str]:
    """Where metrics will be undefined (NaN), and why: items smaller than a patch (scored at pixel level, or
    at the smaller patch size, only), and per level the items that have only changed or only unchanged pixels
    or patches (their own AUROC and AP are NaN; the pooled ones too when no item has both)."""
    notes, small = [], {}
    for pair in pairs:
        h, w = pair.label.shape
        sizes = tuple(p for p in PATCH_SIZES if h < p or w < p)
        if sizes:
            small.setdefault(sizes, []).append(f"{pair.name} ({h}x{w} px)")
    for sizes, names in small.items():
        px = " and ".join(map(str, sizes))
        what = "scored at pixel level only" if len(sizes) == len(PATCH_SIZES) else f"not in the {px} px patch rows"
        notes.append(f"too small for {px} px patches ({what}): {_listed(names)}")
    one_class: dict = {}  # (no change or only change, levels) -> items
    for pair in pairs:
        states = {}
        for p in (None, *PATCH_SIZES):
            y = _level_labels(pair, p)
            if y.size and (y.all() or not y.any()):
                states.setdefault("only change" if y.all() else "no change", []).append(p)
        for state, levels in states.items():
            one_class.setdefault((state, tuple(levels)), []).append(pair.name)
    for (state, levels), names in one_class.items():
        notes.append(f"{state} in {_listed(names)}: per-item AUROC and AP undefined (NaN) at "
                     f"{', '.join(_level_name(p) for p in levels)}")
    for p in (None, *PATCH_SIZES):
        labels = [y for y in (_level_labels(pair, p) for pair in pairs) if y.size]
        if labels and all(y.all() or not y.any() for y in labels):
            y = np.concatenate(labels)
            pooled = ", the pooled ones too" if y.all() or not y.any() else ""
            unit = "pixels" if p is None else f"{p} px patches"
            notes.append(f"no item has both changed and unchanged {unit}: per-item AUROC and AP undefined "
                         f"(NaN) at that level{pooled}")
    return notes


def check_out(out) -> Path:
    """``out`` as a path, or :class:`OutputError` naming it when it cannot be a folder of benchmark outputs: a
    file, under a file, or in a folder this user cannot write (checked before any work)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError("is a file, not a folder; --out names the folder for the benchmark outputs "
                          f"({', '.join(OUTPUTS)}): choose another --out", out)
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot be created: {parent} is a file, not a folder; choose another --out", out)
    for folder in {parent, out} if out.exists() else {parent}:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"cannot be written ({folder} does not let this user write in it); choose another "
                              "--out", out)
    return out


def _preprocessing_notes(pairs, coregister, months, methods) -> list[str]:
    shifted = []
    for p in pairs:
        rec = p.records.get("coregister") or {}
        for date, s in (rec.get("shifts") or {}).items():
            if s.get("applied"):
                shifted.append(f"{p.name} {s['dy']:+.2f},{s['dx']:+.2f}")
    notes = [f"co-registration {coregister} (second date onto the first, every method): "
             + (f"shifted (dy,dx px) {'; '.join(shifted)}" if shifted else "no shift applied")]
    if any(m.uses_embeddings for m in methods):
        notes.append(f"encoders told the month: {months} (both dates the same month unless 'actual')")
    if any(m.calibrated or m.evidence == "embedding+spectra" or "ms" in m.modifiers for m in methods):
        notes.append(f"-cal and combinations: robust z per image (median, 1.4826 MAD of {SUPPORT} px block means)")
    return notes


SYNTHETIC_KEYS = ("auroc", "ap", "recall_rare_at_10", "clouds_in_top20", "cluster_ari", "similar_p_at_5", "rare_other_in_top10")


def run_synthetic(root, encoders=None, seeds=(0, 1, 2, 3, 4), log=print) -> dict:
    """Every encoder through the whole pipeline on planted-change series (``evaluate/synthetic.py``): the
    synthetic series of each seed and, when ``root`` holds the shared Bouconne series, the same changes
    planted into it. One row per encoder and background, the measures averaged over seeds."""
    from .synthetic import BOUCONNE, evaluate, series

    backgrounds = ["synthetic"] + (["bouconne"] if root is not None and (Path(root) / BOUCONNE).exists() else [])
    rows, per_item = [], []
    for method in available_encoders_with_weights(encoders):
        for bg in backgrounds:
            t = time.perf_counter()
            items = []
            for seed in seeds:
                cube, truth = series(seed, bg, root)
                sc = evaluate(cube, truth, seed, encoder=method)
                rare = sc["objects_rare_in_top10"] + sc["objects_rare_missing_top10"]
                items.append({"item": f"{bg}-{seed}", "auroc": sc["auroc"], "ap": sc["ap"],
                              "recall_rare_at_10": len(sc["objects_rare_in_top10"]) / max(len(rare), 1),
                              "clouds_in_top20": sc["objects_clouds_in_top20"], "cluster_ari": sc["cluster_ari"],
                              "similar_p_at_5": sc["objects_similar_common_p_at_5"],
                              "rare_other_in_top10": float(np.mean(list(sc["objects_similar_rare_other_in_top10"].values()) or [np.nan]))})
                log(f"{method} {bg} seed {seed}: AUROC {sc['auroc']:.3f}, rare in top 10 {items[-1]['recall_rare_at_10']:.2f}")
            mean = {k: float(np.nanmean([np.nan if i[k] is None else i[k] for i in items])) for k in SYNTHETIC_KEYS}
            rows.append({"method": method, "uses_embeddings": True, "level": f"objects ({bg})", "patch_size": None,
                         "n_items": len(items), **mean, "seconds": round(time.perf_counter() - t, 1)})
            per_item += [{"method": method, **i} for i in items]
    return {"dataset": "synthetic", "root": None if root is None else str(root), "rows": _clean(rows),
            "per_item": _clean(per_item), "notes": ["means over seeds " + ",".join(map(str, seeds))]}


def _clean(rows: list[dict]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


def _clean_nested(rows: list[dict]) -> list[dict]:
    return [{k: (_clean([v])[0] if isinstance(v, dict) else v) for k, v in r.items()} for r in rows]


def _curve_data(items, p: int):
    s, y = zip(*(patch_level(i.score, i.label, p, 0.05, i.valid) for i in items))
    s, y = np.concatenate([a.ravel() for a in s]), np.concatenate([a.ravel() for a in y])
    keep = np.isfinite(s)
    return s[keep], y[keep]


def metrics_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    cols = ["method", "uses_embeddings", "evidence", "level", "patch_size", "n_items", "auroc", "ap", "best_f1", "otsu_f1",
            "otsu_iou", "p_at_1pct", *SYNTHETIC_KEYS[2:], "seconds"]
    return df[[c for c in cols if c in df.columns]].sort_values(["level", "patch_size", "auroc"], ascending=[True, True, False], na_position="first")


def write_outputs(out: Path, result: dict, curves: dict) -> None:
    """Write the outputs of ``result`` (:data:`OUTPUTS`) into ``out``: all into a temporary folder beside it
    first, then moved in; the outputs of an earlier run that this one did not write are removed (other files
    in ``out`` are left alone). An error before the move leaves ``out`` as it was."""
    out = check_out(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot be written: {exc.strerror or exc}; choose another --out", out) from exc
    try:
        _write_all(staging, result, curves)
        written = sorted(f.name for f in staging.iterdir())
        try:
            out.mkdir(exist_ok=True)
            for name in written:
                os.replace(staging / name, out / name)
            for name in OUTPUTS:
                if name not in written and (out / name).is_file():
                    (out / name).unlink()
        except OSError as exc:
            raise OutputError(f"cannot be written: {exc.strerror or exc}; choose another --out", out) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_all(out: Path, result: dict, curves: dict) -> None:
    write_json(out / "metrics.json", result)
    table = metrics_table(result["rows"])
    if "patch_size" in table:  # whole pixels, and "pixel" rows have none: not 16.000 and nan
        table["patch_size"] = table["patch_size"].map(lambda v: "-" if pd.isna(v) else str(int(v)))
    text = f"# Benchmark: {result['dataset']} ({result['root']})\n\n" + table.to_markdown(index=False, floatfmt=".3f") + "\n"
    if result.get("spread"):
        text += f"\nSpread over items, patches of {PATCH_SIZES[0]} px (mean +- std [min, max]):\n\n"
        text += "| method | AUROC | AP |\n|---|---|---|\n"
        fmt = lambda d: "-" if d["mean"] is None else f"{d['mean']:.3f} +- {d['std']:.3f} [{d['min']:.3f}, {d['max']:.3f}]"  # noqa: E731
        for sp in result["spread"]:
            if sp["level"] == "patch" and sp["patch_size"] == PATCH_SIZES[0]:
                text += f"| {sp['method']} | {fmt(sp['auroc'])} | {fmt(sp['ap'])} |\n"
    if result["notes"]:
        text += "\n" + "\n".join(f"- {n}" for n in result["notes"]) + "\n"
    with atomic_path(out / "metrics.md") as tmp:
        tmp.write_text(text)
    with atomic_path(out / "per_item.csv") as tmp:
        pd.DataFrame(result["per_item"]).to_csv(tmp, index=False)
    if result.get("rows") and any(r.get("evidence") for r in result["rows"]):
        with atomic_path(out / "ablation.md") as tmp:
            tmp.write_text(ablation_markdown(result))
    _plot_curves(out, curves)


#: Margins of issue 6: the best method using embeddings against the best variant (raw or calibrated) of the
#: four baselines, on pooled patch-16 AUROC (difference) and AP (ratio).
MARGIN_AUROC, MARGIN_AP = 0.03, 1.3


def ablation_markdown(result: dict, patch: int = PATCH_SIZES[0]) -> str:
    """Patch-``patch`` ablation of a run: pooled and per-item AUROC/AP of the best baseline variant, the best
    method per kind of evidence (spectra only, embedding only, combined), the margins of the best method that
    uses embeddings, and a leave-one-item-out check of the choice of method.

    Methods whose AUROC/AP is undefined (NaN: no item with both changed and unchanged patches, items smaller
    than a patch) are never chosen as the best; when no baseline has a pooled AUROC the ablation says so, and
    the notes of the run say why."""
    rows = pd.DataFrame(result["rows"])
    rows = rows[(rows["level"] == "patch") & (rows["patch_size"] == patch)].set_index("method")
    per = pd.DataFrame(result["per_item"])
    per = per[(per["level"] == "patch") & (per["patch_size"] == patch)]
    auc, ap = per.pivot(index="item", columns="method", values="auroc"), per.pivot(index="item", columns="method", values="ap")
    four = [m for m in rows.index if m in BASELINES or (m.endswith("-cal") and m[:-4] in BASELINES)]
    kinds = {k: list(rows.index[rows["evidence"] == k]) for k in ("spectra", "embedding", "embedding+spectra")}
    emb = kinds["embedding"] + kinds["embedding+spectra"]

    def best(names, key):  # the method with the highest finite value, None when none has one
        values = rows.loc[list(names), key].astype(float).dropna()
        return values.idxmax() if len(values) else None

    notes = [n for n in result.get("notes", []) if "undefined" in n or "too small" in n]
    notes = (["## Notes", "", *(f"- {n}" for n in notes), ""]) if notes else []
    text = [f"# Ablation: {result['dataset']}, patches of {patch} px", "",
            "Pooled over items (micro) and per item. 'Four baselines' are cva-raw, cva-z, irmad and pca-kmeans, raw "
            "or calibrated (robust z per item, the same calibration as every -cal method). Calibration does not "
            "change an item's own AUROC/AP, only the pooled ones.", ""]
    if not four:
        return "\n".join(text + ["No baseline in this run."] + notes) + "\n"
    ref_auc, ref_ap = best(four, "auroc"), best(four, "ap")
    if ref_auc is None or ref_ap is None:
        return "\n".join(text + [f"No baseline variant has a pooled AUROC and AP at {patch} px patches (undefined: "
                                 "see the notes), so there is nothing to compare against.", ""] + notes) + "\n"
    a0, p0 = float(rows.loc[ref_auc, "auroc"]), float(rows.loc[ref_ap, "ap"])
    text += [f"Best baseline variant: AUROC {a0:.3f} ({ref_auc}), AP {p0:.3f} ({ref_ap}). Margins asked: AUROC "
             f">= {a0 + MARGIN_AUROC:.3f} and AP >= {MARGIN_AP * p0:.3f}.", ""]
    # pooled table: best few per kind
    table = []
    groups = (("four baselines", four), ("spectra, other", [m for m in kinds["spectra"] if m not in four]),
              ("embedding", kinds["embedding"]), ("embedding+spectra", kinds["embedding+spectra"]))
    for kind, names in groups:
        for m in rows.loc[names].sort_values("auroc", ascending=False).index:
            a, p = float(rows.loc[m, "auroc"]), float(rows.loc[m, "ap"])
            table.append({"evidence": kind, "method": m, "auroc": a, "ap": p, "d_auroc": a - a0, "ap_ratio": p / p0,
                          "margins": "yes" if (a - a0 >= MARGIN_AUROC and p / p0 >= MARGIN_AP) else "no"})
    text += ["## Pooled", "", pd.DataFrame(table).to_markdown(index=False, floatfmt=".3f"), ""]
    # verdict
    b_auc, b_ap = (best(emb, "auroc"), best(emb, "ap")) if emb else (None, None)
    if emb and (b_auc is None or b_ap is None):
        text += ["## Verdict", "", f"- No method using embeddings has a pooled AUROC and AP at {patch} px patches.", ""]
    elif emb:
        both = [r["method"] for r in table if r["margins"] == "yes"]
        spectra_any = kinds["spectra"]
        s_auc, s_ap = best(spectra_any, "auroc"), best(spectra_any, "ap")
        text += ["## Verdict", "",
                 f"- Best method using embeddings by AUROC: {b_auc}, AUROC {rows.loc[b_auc, 'auroc']:.3f} "
                 f"({rows.loc[b_auc, 'auroc'] - a0:+.3f}), AP {rows.loc[b_auc, 'ap']:.3f} ({rows.loc[b_auc, 'ap'] / p0:.2f}x).",
                 f"- Best method using embeddings by AP: {b_ap}, AUROC {rows.loc[b_ap, 'auroc']:.3f} "
                 f"({rows.loc[b_ap, 'auroc'] - a0:+.3f}), AP {rows.loc[b_ap, 'ap']:.3f} ({rows.loc[b_ap, 'ap'] / p0:.2f}x).",
                 f"- Methods meeting both margins (+{MARGIN_AUROC} AUROC and {MARGIN_AP}x AP): "
                 + (", ".join(both) if both else "none") + ".",
                 f"- Best spectra-only method of any kind (incl. the aggregation variants): AUROC {rows.loc[s_auc, 'auroc']:.3f} "
                 f"({s_auc}), AP {rows.loc[s_ap, 'ap']:.3f} ({s_ap}); the best embedding method against it: AUROC "
                 f"{rows.loc[b_auc, 'auroc'] - rows.loc[s_auc, 'auroc']:+.3f}, AP {rows.loc[b_ap, 'ap'] / rows.loc[s_ap, 'ap']:.2f}x.", ""]
    # per item
    cols = dict.fromkeys([ref_auc, ref_ap] + [best(n, "auroc") for n in kinds.values() if n]
                         + [best(n, "ap") for n in kinds.values() if n])
    cols = [c for c in cols if c is not None]
    for key, frame in (("AUROC", auc), ("AP", ap)):
        t = frame[cols].copy()
        t.loc["mean over items"] = t.mean()
        text += [f"## Per item: {key}", "", t.to_markdown(floatfmt=".3f"), ""]
    # leave one item out: choose the method on the other items (mean per-item AUROC), score the held-out item
    scored = auc.dropna(how="all")  # items with a defined AUROC for some method
    if len(scored) < 3 <= len(auc):
        text += ["## Leave one item out", "", f"Not done: {len(scored)} item(s) of {len(auc)} have a defined AUROC at "
                 f"{patch} px patches, at least 3 are needed.", ""]
    if len(scored) >= 3:
        loo = []
        for family, names in (("four baselines", four), ("spectra only", kinds["spectra"]),
                               ("embedding only", kinds["embedding"]), ("combined", kinds["embedding+spectra"]),
                               ("any using embeddings", emb)):
            if not names:
                continue
            picks, a_held, p_held = [], [], []
            for item in scored.index:
                others = scored.drop(index=item)[names].mean().dropna()
                if not len(others):
                    continue
                m = others.idxmax()
                picks.append(m)
                a_held.append(scored.loc[item, m])
                p_held.append(ap.loc[item, m])
            if not picks:
                continue
            loo.append({"family": family, "held-out AUROC (mean)": _finite_mean(a_held),
                        "held-out AP (mean)": _finite_mean(p_held),
                        "methods chosen": ", ".join(f"{m} x{picks.count(m)}" for m in dict.fromkeys(picks))})
        text += ["## Leave one item out", "",
                 "For each item, the method of a family with the best mean per-item AUROC on the other items, "
                 "scored on the held-out item (an estimate free of choosing the method on the item itself).", "",
                 pd.DataFrame(loo).to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(text + notes) + "\n"


def _finite_mean(values) -> float:
    """Mean of the finite ``values``; NaN (without numpy's warning) when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


MAX_CURVES = 12


def _is_plain(name: str) -> bool:
    """A baseline or an encoder as it is: no modifier, no combination, no calibration."""
    try:
        m = parse_method(name)
    except ConfigError:
        return False
    return not (m.modifiers or m.baseline_modifiers or m.calibrated or m.evidence == "embedding+spectra")


def _plot_curves(out: Path, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    if len(curves) > MAX_CURVES:  # the plain methods and the best others, by AUROC, readable in one plot
        from sklearn.metrics import roc_auc_score

        auc = {m: roc_auc_score(y, s) if len(np.unique(y)) == 2 else 0.0 for m, (s, y) in curves.items()}
        plain = [m for m in curves if _is_plain(m)]
        keep = dict.fromkeys(sorted(plain, key=auc.get, reverse=True)[:MAX_CURVES // 2]
                             + sorted(curves, key=auc.get, reverse=True))
        curves = {m: curves[m] for m in list(keep)[:MAX_CURVES]}
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(5, 5))
        drawn = 0
        for method, (s, y) in curves.items():
            if len(np.unique(y)) < 2:
                continue
            drawn += 1
            if kind == "roc":
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, label=method)
            else:
                prec, rec, _ = precision_recall_curve(y, s)
                ax.plot(rec, prec, label=method)
        ax.set_xlabel("false positive rate" if kind == "roc" else "recall")
        ax.set_ylabel("true positive rate" if kind == "roc" else "precision")
        ax.set_title(f"{kind.upper()}, patches of {PATCH_SIZES[0]} px")
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no curve: the {PATCH_SIZES[0]} px patches are\nnot both changed and unchanged",
                    ha="center", va="center", transform=ax.transAxes)
        with atomic_path(out / f"{kind}.png") as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
        plt.close(fig)
