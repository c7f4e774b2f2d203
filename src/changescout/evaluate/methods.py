"""How a benchmark method is named and scored: the method names (:func:`parse_method`), the evidence of one pair
shared by every method (:class:`Sources`, with the on-disk embedding cache) and the per-pixel score of a method
(:func:`score_method`), for :mod:`changescout.evaluate.benchmark`.

Methods (:func:`parse_method`; ``uses_embeddings`` is True exactly when an encoder is part of the method, and
``evidence`` says ``spectra``, ``embedding`` or ``embedding+spectra``, the ablation a row belongs to):

* baselines :data:`changescout.evaluate.baselines.BASELINES` on all bands (``cva-z``...);
* encoders: both dates embedded on one identical window grid with fine patches of ``fine_patch`` px; the
  score of a fine patch is the distance between its two embeddings (``spec.distance``), spread over its
  pixels, so that patch-level scores are means of fine-patch distances (fine distances aggregated upward);
* evidence variants (:mod:`changescout.evaluate.evidence`): ``-pN`` fine patches of N px, ``-sN`` fine scores
  smoothed by a Gaussian of N fine patches, ``-max`` / ``-topK`` aggregation to 16 px patches, ``-ms``
  multi-scale, ``-whitened`` / ``-lw`` whitened embedding distances,
  ``<encoder>+<baseline>`` embedding and spectral evidence combined (mean of per-item robust z-scores), and
  ``-cal``: per-item calibration (robust z) before pooling, for baselines and encoders alike.

Without ``methods``/``encoders`` a run holds the ablation of :func:`default_methods`. Embeddings of pretrained
encoders can be cached on disk (``cache=`` or ``$CHANGESCOUT_BENCHMARK_CACHE``).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..cube import grid_of
from ..errors import ConfigError, InputError
from .baselines import BASELINES
from .evidence import (aggregate_up, aggregation_of, block_means, calibrate, combine, embedding_distance, smooth_fine, spread_patches,
                       whitened_distance)

if TYPE_CHECKING:
    from .benchmark import Pair

#: Encoder options for two-date benchmarks: Presto embeds each date alone (a trailing window would mix in the
#: other date) and pools every 4th pixel of each axis (the same pooled AUROC on OSCD, 16 times faster).
ENCODER_OPTIONS = {"presto": {"mode": "single", "pixel_stride": 4}}
PATCH_SIZES = (16, 32)


# -- methods ---------------------------------------------------------------------------------------------------------
MONTHS = ("first", "second", "actual")
#: Modifiers of a part of a method name (suffixes), see :func:`parse_method`.
_MODIFIER = re.compile(r"-(whitened|lw|ms|max|top\d+|p\d+|s\d+(?:\.\d+)?)$")
_EMBEDDING_ONLY = ("whitened", "lw", "ms")
#: Per-image calibration and combination statistics are taken over block means of this many px (the first
#: evaluation patch size), the level at which methods are compared.
SUPPORT = PATCH_SIZES[0]
#: Whitened distance: PCA whitening keeping this fraction of the pooled variance, then this distance. On the 7
#: OSCD cities no setting (16 or 32 components, 0.95, 0.99 or all of the variance; Euclidean or cosine;
#: Ledoit-Wolf) beat the plain distance (benchmarks/results/oscd_ablation.md); 0.95 and Euclidean is the ablation.
WHITEN_COMPONENTS = 0.95
WHITEN_DISTANCE = "euclidean"
#: The largest ``-sN`` smoothing, in fine patches (a Gaussian of 8N + 1 taps: beyond, it averages whole cities)
MAX_SMOOTHING = 16


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
      of the mean; ``-sN``: fine scores first smoothed by a Gaussian of N fine patches (:func:`evidence.smooth_fine`,
      ``-s1``, ``-s0.5``); embedding part only: ``-whitened`` (PCA-whitened embeddings, per image, both dates pooled),
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
        smoothings = [x for x in mods if x.startswith("s")]
        if len(aggregations) > 1 or len(sizes) > 1 or len(smoothings) > 1 or ("whitened" in mods and "lw" in mods):
            raise ConfigError(f"benchmark method {name!r}: {part!r} combines modifiers that exclude each other")
        if "p0" in sizes or any(not 0 < float(x[1:]) <= MAX_SMOOTHING for x in smoothings):
            raise ConfigError(f"benchmark method {name!r}: -pN takes fine patches of N >= 1 px, and -sN a smoothing of "
                              f"N > 0 and at most {MAX_SMOOTHING} fine patches")
        # told here, before any data is read, not once the other methods had run, as a fault of the first item
        # (a review: rcf-p3-max, rcf-top0)
        if any(SUPPORT % int(x[1:]) for x in sizes):
            raise ConfigError(f"benchmark method {name!r}: -pN takes fine patches that divide the {SUPPORT} px patches "
                              f"the benchmark scores (1, 2, 4, 8 or 16 px), got -{sizes[0]}")
        for how in aggregations:
            try:
                aggregation_of(how)
            except ConfigError as exc:
                raise ConfigError(f"benchmark method {name!r}: {exc.message}") from None
        if part in BASELINES and baseline is None and not set(mods) & set(_EMBEDDING_ONLY):
            baseline, baseline_modifiers = part, tuple(mods)
        elif part in known and encoder is None:
            encoder, modifiers = part, tuple(mods)
        else:
            raise ConfigError(f"unknown benchmark method {name!r}: {part!r} is neither a baseline ({', '.join(BASELINES)}) "
                              f"nor an encoder ({', '.join(sorted(known))}) with modifiers that fit it, or is given "
                              "twice; method names are explained in docs/benchmarks.md")
    return Method(name, encoder, baseline, modifiers, baseline_modifiers, calibrated)


def default_methods(baselines, encoders) -> list[str]:
    """The ablation: every baseline raw and calibrated, and ``cva-z`` aggregated upward (smoothed too); per encoder
    its fine distance and evidence variants (scales, aggregation, smoothing, whitening), alone and combined with
    spectra."""
    out = [*baselines, *(f"{b}-cal" for b in baselines)]
    spec = "cva-z" if "cva-z" in baselines else None
    if spec:
        out += [f"{spec}-p4-max", f"{spec}-p4-max-cal", f"{spec}-p4-top4", f"{spec}-p4-top4-cal", f"{spec}-p4-s1-top4-cal"]
    for e in encoders:
        out += [e, f"{e}-cal", f"{e}-p4", f"{e}-p4-cal", f"{e}-max", f"{e}-p4-max", f"{e}-p4-top4", f"{e}-p4-top4-cal",
                f"{e}-p4-s1-top4", f"{e}-p4-s1-top4-cal",
                f"{e}-ms", f"{e}-ms-cal", f"{e}-whitened", f"{e}-whitened-cal", f"{e}-lw-cal"]
        if spec:
            out += [f"{e}+{spec}", f"{e}+{spec}-cal", f"{e}-p4+{spec}", f"{e}-ms+{spec}", f"{e}-whitened+{spec}",
                    f"{e}-p4-max+{spec}", f"{e}-p4-top4+{spec}", f"{e}-p4-top4+{spec}-cal",
                    f"{e}-p4-top4+{spec}-p4-max", f"{e}-p4-top4+{spec}-p4-top4", f"{e}-p4-s1-top4+{spec}",
                    f"{e}-p4-s1-top4+{spec}-p4-top4"]
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
        """``(2, rows, cols, dim)`` embeddings of the two dates' ``p`` px fine patches (none for an item smaller
        than one: its scores are NaN, and :func:`~.benchmark.label_notes` names it)."""
        h, w = self.shape
        if h < p or w < p:  # (the embedding stage refused it, naming --patch-size, which the benchmark has not)
            return np.zeros((2, h // p, w // p, 1), np.float32)
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
        cube = self.pair.cube if self.pair.encoder_cube is None else self.pair.encoder_cube
        encoder = self.pool.get(name, p)
        encoder = encoder.for_bands(cube) if hasattr(encoder, "for_bands") else encoder  # (galileo-nano on RGB pairs)
        encoder = encoder.for_cube(cube) if hasattr(encoder, "for_cube") else encoder  # (hf: 8-bit photographs' stretch)
        path = None
        token = getattr(encoder, "__dask_tokenize__", None)
        if self.cache is not None and getattr(encoder, "is_fitted", True) and token is not None:
            h = hashlib.sha1(repr((token(), self.months, EMBED_CACHE_VERSION)).encode())
            h.update(self.data_digest().encode())
            h.update(_code_digest(encoder).encode())  # a change to the embedding code invalidates the cache
            path = self.cache / f"{_safe(self.pair.name)}-{_safe(name)}-p{p}-{h.hexdigest()[:16]}.npy"
            if path.exists():
                return np.load(path)
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
            # what the encoders are told beside the pixels: the dates (galileo-nano's and presto's month) and
            # the grid (presto's location); a pair with corrected dates reused the other month's embeddings
            h.update(repr([str(t) for t in cube["time"].values]).encode())
            h.update(repr(grid_of(cube)).encode())
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


def scored_unit(method: Method, fine_patch: int) -> int:
    """The side in px of the squares ``method`` scores whole (1: every pixel): its fine patches, or ``SUPPORT``
    where it aggregates them; outside whole squares, at an image's bottom and right edges, it has no score."""
    units = []
    if method.encoder is not None:
        p, agg = _size_and_aggregation(method.modifiers, fine_patch)
        units.append(SUPPORT if agg else p)
    if method.baseline is not None:
        p, agg = _size_and_aggregation(method.baseline_modifiers, 1)
        units.append(SUPPORT if agg else p)
    return max(units)


def _size_and_aggregation(mods, default: int) -> tuple[int, str | None]:
    size = next((int(m[1:]) for m in mods if re.fullmatch(r"p\d+", m)), default)
    return size, next((m for m in mods if m == "max" or m.startswith("top")), None)


def _smoothing(mods) -> float | None:
    """The ``-sN`` modifier's sigma in fine patches, None without one."""
    return next((float(m[1:]) for m in mods if m.startswith("s")), None)


def _upward(fine: np.ndarray, p: int, agg: str | None, src: Sources, name: str, sigma: float | None = None) -> np.ndarray:
    """Fine scores of ``p`` px patches on the pixel grid, smoothed first when ``sigma`` is given: as they are (the
    evaluation's patch mean aggregates them), or aggregated to ``SUPPORT`` px patches by ``agg`` first."""
    if sigma is not None:
        fine = smooth_fine(fine, sigma)
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
    return _upward(block_means(score, p, src.pair.valid), p, agg, src, method.name, _smoothing(method.baseline_modifiers))


def _embedding_map(method: Method, src: Sources) -> np.ndarray:
    mods = method.modifiers
    whitening = "whitened" if "whitened" in mods else "lw" if "lw" in mods else None
    p, agg = _size_and_aggregation(mods, src.fine_patch)
    scales = [p] + ([p // 2] if "ms" in mods else [])
    if min(scales) < 1:
        raise ConfigError(f"{method.name}: multi-scale needs fine patches of at least 2 px")
    maps = [_upward(src.distance(method.encoder, q, whitening), q, agg, src, method.name, _smoothing(mods)) for q in scales]
    return maps[0] if len(maps) == 1 else combine(maps, src.pair.valid, "robust-z", support=SUPPORT)


def available_encoders_with_weights(names=None, skipped: list | None = None) -> list[str]:
    """``names`` or every registered encoder whose weights can be found (rcf needs none), but those that read
    embeddings made elsewhere (``precomputed``: on a dataset's reflectance it would score band means as an
    embedding method). An encoder whose weights file is there but will not load (another file, cut short) is left
    out with its reason added to ``skipped``: it was left out without a word (a review); those whose file is
    absent are named together in one line of ``skipped`` (the tables' notes: which encoders did not run, and why)."""
    from ..encoders import available_encoders, get_encoder

    out, absent = [], []
    for name in available_encoders() if names is None else names:
        try:
            encoder = get_encoder(name)
        except InputError as exc:
            if names is not None:
                raise
            if skipped is not None and exc.path is not None and Path(exc.path).exists():
                skipped.append(f"{name} skipped (and its variants): {exc}")
            else:
                absent.append(name)
            continue
        if names is None and encoder.spec.input == "embeddings":
            continue
        out.append(name)
    if absent and skipped is not None:
        skipped.append(f"{', '.join(absent)} not run: no weights found (CHANGESCOUT_WEIGHTS_DIR, or --weights-dir)")
    return out


def resolve_methods(baselines=None, encoders=None, methods=None, skipped: list | None = None) -> list[Method]:
    """The methods to run: ``methods`` when given; else ``baselines`` (names of spectral methods, default every
    baseline raw and calibrated) and ``encoders`` (names of embedding methods, default every encoder whose
    weights are found with its evidence variants, :func:`default_methods`; those whose weights will not load are
    named in ``skipped``)."""
    from ..encoders import available_encoders

    if methods is None:
        if encoders is None:
            found = available_encoders_with_weights(skipped=skipped)
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
