"""Scores of a change map against labels: pixel and patch level, per item and pooled over a dataset.

A *score* is a float map, higher = more change, NaN where there is none; a *label* is a boolean map of true
change. :func:`ranking_metrics` gives every metric of a ``metrics.json`` row from one set of scores and
labels (AUROC, AP, best F1 over thresholds, F1 and IoU at an Otsu threshold, precision in the top 1 %).
Patch level aggregates pixels to non-overlapping ``p`` x ``p`` patches counted from the top-left corner
(incomplete patches at the bottom and right dropped, as :class:`changescout.tiling.PatchGrid` does): the patch
score is the mean pixel score and a patch is changed when at least 5 % of its pixels are.
:func:`evaluate_items` pools the pixels (or patches) of all items of a dataset (micro aggregation) into one
:class:`MetricsRow` and lists the per-item values, whose spread :func:`spread` summarises. A metric that is
undefined (one class only, nothing predicted) is NaN, never an exception.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from ..errors import ConfigError, InputError
from ..tiling import check_patch_size

#: Metric keys of a ``metrics.json`` row, in order.
METRIC_KEYS = ("auroc", "ap", "best_f1", "otsu_f1", "otsu_iou", "p_at_1pct")
NAN = float("nan")


def otsu_threshold(values, bins: int = 256) -> float:
    """Otsu's threshold of the finite ``values``: the histogram bin edge maximising the between-class variance.

    Values ``>= threshold`` form the upper class; among equally good cuts (empty bins between two modes) the
    middle one is taken. NaN when there are no finite values; the value itself when all are equal.
    Otsu, "A threshold selection method from gray-level histograms", IEEE Trans. SMC 9(1), 1979.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return NAN
    lo, hi = v.min(), v.max()
    if lo == hi:
        return float(lo)
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1]  # pixels in bins 0..k, for a cut after bin k
    w1 = v.size - w0
    s0 = np.cumsum(counts * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (np.sum(counts * centres) - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    ties = np.flatnonzero(between >= between.max() * (1 - 1e-12))  # empty bins between two modes tie
    return float(edges[ties[len(ties) // 2] + 1])


def _pairs(score, label, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """Flattened finite scores and their labels (``valid`` False and NaN scores left out)."""
    s = np.asarray(score, dtype=np.float64)
    y = _labels(label, valid)
    if s.shape != y.shape:
        raise InputError(f"score and label must have the same shape; got {s.shape} and {y.shape}")
    keep = np.isfinite(s)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != s.shape:
            raise InputError(f"valid must have the shape of the score {s.shape}; got {valid.shape}")
        keep &= valid
    return s[keep], y[keep].astype(bool)


def _labels(label, valid=None) -> np.ndarray:
    """``label`` as it is, or an :class:`InputError` when it holds NaN where ``valid`` (or anywhere without it): an
    unlabelled pixel read as change (NaN is true); leave those out with ``valid`` instead."""
    y = np.asarray(label)
    if y.dtype.kind == "f":
        nan = np.isnan(y)
        if valid is not None and np.shape(valid) == y.shape:
            nan &= np.asarray(valid, dtype=bool)
        if nan.any():
            raise InputError(f"labels hold {int(nan.sum())} NaN (unlabelled?): give 0/1 labels and leave the "
                             "unlabelled pixels out with valid=False")
    return y


def _maps(**arrays) -> None:
    """An :class:`InputError` unless every given (not None) array is a 2-D map of the first one's shape."""
    first = None
    for name, a in arrays.items():
        if a is None:
            continue
        shape = np.shape(a)
        if len(shape) != 2:
            raise InputError(f"{name} must be a 2-D map (rows, cols); got shape {shape}")
        if first is not None and shape != first[1]:
            raise InputError(f"{name} must have the shape of the {first[0]} {first[1]}; got {shape}")
        first = first or (name, shape)


def _binary_scores(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """F1 and IoU of the positive class; NaN when both ``pred`` and ``y`` are empty."""
    tp = np.sum(pred & y)
    fp, fn = np.sum(pred & ~y), np.sum(~pred & y)
    if tp + fp + fn == 0:
        return NAN, NAN
    return float(2 * tp / (2 * tp + fp + fn)), float(tp / (tp + fp + fn))


def precision_at_top(score, label, fraction: float = 0.01) -> float:
    """Share of changed items among the ``ceil(fraction * n)`` highest scores (ties broken by position)."""
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction!r}")
    s, y = _pairs(score, label)
    if s.size == 0:
        return NAN
    k = max(1, math.ceil(fraction * s.size))
    top = np.argsort(-s, kind="stable")[:k]
    return float(y[top].mean())


def ranking_metrics(score, label, valid=None) -> dict[str, float]:
    """AUROC, AP, best F1, Otsu F1 and IoU, and precision at the top 1 % of ``score`` against boolean ``label``.

    ``valid`` (optional boolean map) and NaN scores exclude entries. AUROC and AP are NaN unless both classes
    are present; best F1 is the maximum over all thresholds of the precision-recall curve; Otsu F1 / IoU take
    ``score >= otsu_threshold(score)`` as predicted change.
    """
    s, y = _pairs(score, label, valid)
    out = dict.fromkeys(METRIC_KEYS, NAN)
    if s.size == 0:
        return out
    n_pos = int(y.sum())
    if 0 < n_pos < y.size:
        out["auroc"] = float(roc_auc_score(y, s))
        out["ap"] = float(average_precision_score(y, s))
    if n_pos > 0:
        precision, recall, _ = precision_recall_curve(y, s)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-300)
        out["best_f1"] = float(f1.max())
    out["otsu_f1"], out["otsu_iou"] = _binary_scores(s >= otsu_threshold(s), y)
    out["p_at_1pct"] = precision_at_top(s, y)
    return out


def _blocks(x: np.ndarray, p: int) -> np.ndarray:
    """``(H, W)`` -> ``(H // p, W // p, p * p)``, incomplete patches dropped."""
    r, c = x.shape[0] // p, x.shape[1] // p
    return x[: r * p, : c * p].reshape(r, p, c, p).transpose(0, 2, 1, 3).reshape(r, c, p * p)


def patch_scores(score, patch_size: int, valid=None) -> np.ndarray:
    """Mean pixel score of each ``patch_size`` patch (NaN and ``valid`` False pixels left out; NaN if none)."""
    p = check_patch_size(patch_size)
    _maps(score=score, valid=valid)
    s = np.asarray(score, dtype=np.float64)
    if valid is not None:
        s = np.where(np.asarray(valid, dtype=bool), s, np.nan)
    blocks = _blocks(s, p)
    n = np.isfinite(blocks).sum(axis=2)
    total = np.where(np.isfinite(blocks), blocks, 0.0).sum(axis=2)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def patch_labels(label, patch_size: int, min_fraction: float = 0.05, valid=None) -> np.ndarray:
    """A patch is changed when at least ``min_fraction`` of its (valid) pixels are labelled change."""
    p = check_patch_size(patch_size)
    _maps(label=label, valid=valid)
    y = np.asarray(_labels(label, valid), dtype=bool)  # (NaN where not valid: left out below)
    ok = np.ones_like(y) if valid is None else np.asarray(valid, dtype=bool)
    changed = _blocks(y & ok, p).sum(axis=2)
    counted = _blocks(ok, p).sum(axis=2)
    return (counted > 0) & (changed >= min_fraction * counted)


def _crop_to(patches: np.ndarray, label, patch_size: int, min_fraction: float, valid):
    lab = patch_labels(label, patch_size, min_fraction, valid)
    r, c = min(patches.shape[0], lab.shape[0]), min(patches.shape[1], lab.shape[1])
    return patches[:r, :c], lab[:r, :c]


def patch_level(score, label, patch_size: int, min_fraction: float = 0.05, valid=None, scores_are_patches=False):
    """Patch scores and labels ``(rows, cols)`` from a pixel ``label`` map and pixel or patch ``score``.

    With ``scores_are_patches`` the ``score`` is already one value per patch (an encoder's embedding distance
    on the same patch grid); both are cropped to the patches they have in common.
    """
    patches = np.asarray(score, dtype=np.float64) if scores_are_patches else patch_scores(score, patch_size, valid)
    return _crop_to(patches, label, patch_size, min_fraction, valid)


def binary_change_iou(pred_change, true_change, valid=None) -> float:
    """IoU of the change class between boolean predicted and true change maps (DynamicEarthNet's binary change).

    Maps may be stacks ``(pair, H, W)`` of consecutive-month changes: intersections and unions are summed over
    all of them before dividing. NaN when neither map has any change. Toker et al., "DynamicEarthNet: daily
    multi-spectral satellite dataset for semantic change segmentation", CVPR 2022.
    """
    pred, true = np.asarray(pred_change, dtype=bool), np.asarray(true_change, dtype=bool)
    if pred.shape != true.shape:
        raise InputError(f"predicted and true change maps must have the same shape; got {pred.shape} and {true.shape}")
    if valid is not None:
        valid = np.broadcast_to(np.asarray(valid, dtype=bool), pred.shape)
        pred, true = pred & valid, true & valid
    union = np.sum(pred | true)
    return float(np.sum(pred & true) / union) if union else NAN


def change_between_months(maps) -> np.ndarray:
    """Binary change ``(T - 1, H, W)`` between consecutive maps of a ``(T, H, W)`` class-map series."""
    maps = np.asarray(maps)
    if maps.ndim != 3 or len(maps) < 2:
        raise InputError(f"expected a (T, H, W) series of at least two class maps, got shape {maps.shape}")
    return maps[1:] != maps[:-1]


@dataclass
class MetricsRow:
    """One row of ``metrics.json``: a method's metrics at one level, pooled over ``n_items`` items."""

    method: str
    uses_embeddings: bool
    level: str
    patch_size: int | None
    n_items: int
    auroc: float = NAN
    ap: float = NAN
    best_f1: float = NAN
    otsu_f1: float = NAN
    otsu_iou: float = NAN
    p_at_1pct: float = NAN
    seconds: float = NAN

    def __post_init__(self):
        if self.level not in ("pixel", "patch"):
            raise ConfigError(f"level must be 'pixel' or 'patch', got {self.level!r}")
        if self.level == "patch" and self.patch_size is None:
            raise ConfigError("a patch-level row needs its patch_size")

    def to_dict(self) -> dict:
        """The row as a JSON-ready dict (NaN becomes None)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


@dataclass
class Item:
    """One labelled pair of a dataset: its ``name``, a ``score`` map, a boolean ``label`` map, optional ``valid``."""

    name: str
    score: np.ndarray
    label: np.ndarray
    valid: np.ndarray | None = None


def evaluate_items(
    method: str,
    items: Iterable[Item],
    level: str = "pixel",
    patch_size: int | None = None,
    uses_embeddings: bool = False,
    seconds: float = NAN,
    min_fraction: float = 0.05,
    scores_are_patches: bool = False,
) -> tuple[MetricsRow, list[dict]]:
    """Micro (pooled) metrics of ``method`` over all ``items`` and each item's own metrics.

    At ``level="patch"`` pixel scores are averaged over ``patch_size`` patches (or taken as they are with
    ``scores_are_patches``) and patches labelled with ``min_fraction``. The pooled row concatenates every
    pixel or patch of every item; the per-item list holds ``{"item": name, **metrics}``.
    """
    if level == "patch":
        check_patch_size(patch_size)
    elif level != "pixel":
        raise ConfigError(f"level must be 'pixel' or 'patch', got {level!r}")
    scores, labels, per_item = [], [], []
    for item in items:
        if level == "patch":
            s, y = patch_level(item.score, item.label, patch_size, min_fraction, item.valid, scores_are_patches)
        else:
            s, y = _pairs(item.score, item.label, item.valid)
        s, y = _pairs(s, y)
        scores.append(s)
        labels.append(y)
        per_item.append({"item": item.name, **ranking_metrics(s, y)})
    if not per_item:
        raise InputError("no items to evaluate")
    pooled = ranking_metrics(np.concatenate(scores), np.concatenate(labels))
    row = MetricsRow(
        method=method,
        uses_embeddings=uses_embeddings,
        level=level,
        patch_size=patch_size if level == "patch" else None,
        n_items=len(per_item),
        seconds=seconds,
        **pooled,
    )
    return row, per_item


def spread(per_item: Sequence[dict], keys: Sequence[str] = METRIC_KEYS) -> dict[str, dict[str, float]]:
    """Mean, std, min and max over items of each metric in ``keys`` (NaN items left out; all NaN -> NaN)."""
    out = {}
    for key in keys:
        v = np.array([row[key] for row in per_item], dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            out[key] = dict.fromkeys(("mean", "std", "min", "max"), NAN)
        else:
            out[key] = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}
    return out
