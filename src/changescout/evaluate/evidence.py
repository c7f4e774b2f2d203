"""Change evidence of one image pair, and ways to combine it: the building blocks of the benchmark's methods.

Every function works on one pair's maps (numpy arrays), higher = more change, NaN where there is no score:

* fine-patch maps: ``(rows, cols)`` distances between the two dates' embeddings of ``p`` px fine patches;
  :func:`spread_patches` lays them onto the pixel grid, :func:`aggregate_up` takes them up to coarser patches by
  the mean, the maximum or the mean of the ``k`` largest (``"mean"``, ``"max"``, ``"top2"``...);
* :func:`whitened_distance`: the distance between embeddings after whitening them with statistics of this
  image alone, the embeddings of both dates pooled (PCA whitening, or the inverse square root of a Ledoit-Wolf
  covariance): a distance that no longer depends on how the encoder happens to spread this scene over its
  dimensions (invariant to any invertible linear map of the embedding space applied to both dates);
* spectral evidence: change vector analysis on per-date z-scored bands, per pixel (:func:`.baselines.cva_z`);
* :func:`calibrate` (per-image calibration): a robust z-score, ``(s - median) / (1.4826 MAD)``, with the
  statistics taken over the image's own valid pixels (or over its ``support`` px block means), or an
  empirical-CDF rank. The ranking inside an image does not change; scores of different images become
  comparable before they are pooled;
* :func:`combine`: the (weighted) mean of the calibrated maps of several sources of evidence (embedding
  distances at several scales, spectra...): a patch on which all of them agree ranks above one that only one
  of them flags.

Measured on the 7 dev OSCD cities: see ``benchmarks/results/oscd_ablation.md``.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from ..errors import ConfigError, InputError

#: Robust z-scores: the MAD of a normal sample times this is its standard deviation.
MAD_TO_STD = 1.4826
AGGREGATIONS = ("mean", "max", "topK (K >= 1)")
CALIBRATIONS = ("robust-z", "rank")
WHITENINGS = ("pca", "ledoit-wolf")


# -- fine patches and the pixel grid -------------------------------------------------------------------------
def spread_patches(fine, patch: int, shape: tuple[int, int]) -> np.ndarray:
    """``(rows, cols)`` values of ``patch`` px patches counted from the top-left corner -> ``shape`` pixel map,
    each value over its patch's pixels; pixels outside whole patches are NaN."""
    fine = np.asarray(fine, dtype=np.float32)
    h, w = shape
    nr, nc = min(fine.shape[0], h // patch), min(fine.shape[1], w // patch)
    out = np.full((h, w), np.nan, np.float32)
    out[: nr * patch, : nc * patch] = np.repeat(np.repeat(fine[:nr, :nc], patch, axis=0), patch, axis=1)
    return out


def block_means(score, patch: int, valid=None) -> np.ndarray:
    """Mean of the finite (and ``valid``) pixels of each whole ``patch`` px block; NaN where there are none."""
    s = np.asarray(score, dtype=np.float64)
    if valid is not None:
        s = np.where(np.asarray(valid, bool), s, np.nan)
    if patch == 1:
        return s
    r, c = s.shape[0] // patch, s.shape[1] // patch
    b = s[: r * patch, : c * patch].reshape(r, patch, c, patch).transpose(0, 2, 1, 3).reshape(r, c, patch * patch)
    n = np.isfinite(b).sum(axis=2)
    return np.where(n > 0, np.nansum(b, axis=2) / np.maximum(n, 1), np.nan)


def aggregation_of(how: str) -> tuple[str, int]:
    """``(kind, K)`` of an aggregation name: ``("mean", 0)``, ``("max", 0)`` or ``("top", K)`` for ``topK``."""
    if how in ("mean", "max"):
        return how, 0
    m = re.fullmatch(r"top(\d+)", how)
    if m and int(m.group(1)) >= 1:
        return "top", int(m.group(1))
    raise ConfigError(f"unknown aggregation {how!r}; use mean, max or topK (the mean of the K largest, K >= 1)")


def aggregate_up(fine, factor: int, how: str = "mean") -> np.ndarray:
    """Fine-patch scores ``(rows, cols)`` -> ``(rows // factor, cols // factor)``: the ``mean``, ``max`` or ``topK``
    (mean of the K largest) of the finite fine scores inside each coarse patch (NaN if none)."""
    kind, k = aggregation_of(how)
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ConfigError(f"factor must be a positive integer, got {factor!r}")
    f = np.asarray(fine, dtype=np.float64)
    r, c = f.shape[0] // factor, f.shape[1] // factor
    # (an explicit block size: an item smaller than one coarse patch has no block, and -1 cannot be inferred)
    b = f[: r * factor, : c * factor].reshape(r, factor, c, factor).transpose(0, 2, 1, 3).reshape(r, c, factor * factor)
    finite = np.isfinite(b)
    n = finite.sum(axis=2)
    if kind == "mean":
        out = np.where(finite, b, 0.0).sum(axis=2) / np.maximum(n, 1)
    else:
        desc = -np.sort(np.where(finite, -b, np.inf), axis=2)  # largest first, NaN (as -inf) last
        k = 1 if kind == "max" else min(k, b.shape[2])
        top = desc[..., :k]
        m = np.minimum(n, k)
        out = np.where(np.isfinite(top), top, 0.0).sum(axis=2) / np.maximum(m, 1)
    return np.where(n > 0, out, np.nan)


def smooth_fine(fine, sigma: float) -> np.ndarray:
    """Fine-patch scores ``(rows, cols)`` averaged with their neighbours' under a Gaussian of ``sigma`` fine
    patches (:func:`scipy.ndimage.gaussian_filter`, normalised over the finite scores, so that NaN cells and the
    image's edges do not pull their neighbours down); NaN stays NaN.

    A 4 px token of a pretrained encoder is a noisy witness: one token beside a field edge or a residual shift
    can stand out alone, while a new building changes several touching tokens. On the 7 OSCD dev cities
    galileo-nano's 4 px distances smoothed at ``sigma`` 1, then the 4 largest per 16 px patch averaged, raised the
    pooled AP from 0.582 to 0.602 (calibrated; 5 of 7 cities up); spectral scores (cva-z, pca-kmeans) at 4 px
    gained nothing (0.499 -> 0.495) (benchmarks/results/oscd_ablation.md)."""
    from scipy import ndimage

    if not sigma > 0:
        raise ConfigError(f"sigma must be a positive number of fine patches, got {sigma!r}")
    f = np.asarray(fine, dtype=np.float64)
    finite = np.isfinite(f)
    num = ndimage.gaussian_filter(np.where(finite, f, 0.0), sigma, mode="constant")
    den = ndimage.gaussian_filter(finite.astype(np.float64), sigma, mode="constant")
    return np.where(finite, num / np.maximum(den, 1e-12), np.nan)


# -- embedding distances --------------------------------------------------------------------------------------
def embedding_distance(e0, e1, kind: str = "cosine") -> np.ndarray:
    """Distance along the last axis: ``cosine`` (1 - cosine similarity) or ``euclidean`` (RMS difference)."""
    e0, e1 = np.asarray(e0, np.float64), np.asarray(e1, np.float64)
    if kind == "cosine":
        n0, n1 = np.linalg.norm(e0, axis=-1), np.linalg.norm(e1, axis=-1)
        return (1 - (e0 * e1).sum(-1) / np.maximum(n0 * n1, 1e-12)).astype(np.float32)
    if kind == "euclidean":
        return np.sqrt(((e0 - e1) ** 2).mean(axis=-1)).astype(np.float32)
    raise ConfigError(f"unknown embedding distance {kind!r} (euclidean or cosine)")


def whiten(e0, e1, method: str = "pca", n_components=None, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """Both dates' embeddings ``(..., dim)`` whitened with the mean and covariance of the two dates pooled.

    ``pca``: scikit-learn ``PCA(whiten=True)`` (``n_components``: an int, a variance fraction in (0, 1), or
    ``None`` for all); ``ledoit-wolf``: centred and multiplied by the inverse square root of the Ledoit-Wolf
    shrunk covariance (all dimensions, well conditioned). ``valid`` ``(...)`` chooses the vectors the statistics
    come from (default: the finite ones); vectors with a non-finite value come back NaN.
    """
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA

    e0, e1 = np.asarray(e0, np.float64), np.asarray(e1, np.float64)
    if e0.shape != e1.shape:
        raise InputError(f"the two dates' embeddings must have the same shape; got {e0.shape} and {e1.shape}")
    dim = e0.shape[-1]
    x0, x1 = e0.reshape(-1, dim), e1.reshape(-1, dim)
    ok = np.isfinite(x0).all(axis=1) & np.isfinite(x1).all(axis=1)
    fit_on = ok if valid is None else ok & np.asarray(valid, bool).reshape(-1)
    if fit_on.sum() < 3:
        raise InputError("whitening needs at least 3 embedding vectors finite at both dates")
    pooled = np.concatenate([x0[fit_on], x1[fit_on]])
    out = []
    if method == "pca":
        pca = PCA(n_components=n_components, whiten=True, svd_solver="full").fit(pooled)
        transform = pca.transform
    elif method == "ledoit-wolf":
        lw = LedoitWolf().fit(pooled)
        vals, vecs = np.linalg.eigh(lw.covariance_)
        root = vecs / np.sqrt(np.maximum(vals, 1e-12 * vals.max()))  # columns: eigenvectors / sqrt(eigenvalue)
        transform = lambda x: (x - lw.location_) @ root  # noqa: E731
    else:
        raise ConfigError(f"unknown whitening {method!r}; use one of {', '.join(WHITENINGS)}")
    n_out = transform(pooled[:1]).shape[1]
    for x in (x0, x1):
        w = np.full((len(x), n_out), np.nan)
        w[ok] = transform(x[ok])
        out.append(w.reshape(*e0.shape[:-1], w.shape[1]))
    return out[0], out[1]


def whitened_distance(e0, e1, method: str = "pca", kind: str = "euclidean", n_components=None, valid=None) -> np.ndarray:
    """:func:`embedding_distance` ``kind`` between the embeddings after :func:`whiten` (per image, both dates pooled).

    The Euclidean distance of PCA-whitened vectors with every component is the Mahalanobis distance under the
    pooled covariance; it is unchanged by any invertible linear map applied to both dates' embeddings."""
    w0, w1 = whiten(e0, e1, method, n_components, valid)
    return embedding_distance(w0, w1, kind)


# -- calibration and combination ------------------------------------------------------------------------------
def robust_z(score, valid=None, support: int = 1) -> np.ndarray:
    """``(score - median) / (1.4826 MAD)``: median and MAD of the finite, ``valid`` values of ``score``, or of its
    ``support`` px block means (so that a per-pixel map and a map constant over fine patches get the same
    scale at the level where they are compared). NaN stays NaN; a constant map gives 0."""
    s = np.asarray(score, dtype=np.float64)
    ref = block_means(s, support, valid) if support > 1 else (s if valid is None else np.where(np.asarray(valid, bool), s, np.nan))
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.full(s.shape, np.nan, np.float32)
    med = np.median(ref)
    mad = MAD_TO_STD * np.median(np.abs(ref - med))
    if not mad > 0:
        mad = ref.std()
    out = (s - med) / mad if mad > 0 else np.where(np.isfinite(s), 0.0, np.nan)
    return out.astype(np.float32)


def rank_scores(score, valid=None) -> np.ndarray:
    """Empirical CDF of each finite score among the finite, ``valid`` ones, in (0, 1] (ties share the highest rank)."""
    s = np.asarray(score, dtype=np.float64)
    ref = s if valid is None else np.where(np.asarray(valid, bool), s, np.nan)
    ref = np.sort(ref[np.isfinite(ref)])
    out = np.full(s.shape, np.nan, np.float32)
    if ref.size == 0:
        return out
    fin = np.isfinite(s)
    out[fin] = np.searchsorted(ref, s[fin], side="right") / ref.size
    return out


def calibrate(score, valid=None, how: str = "robust-z", support: int = 1) -> np.ndarray:
    """Per-image calibration of a score map: ``robust-z`` (:func:`robust_z`) or ``rank`` (:func:`rank_scores`).
    Monotone within the image (its own AUROC and AP do not change); makes images comparable when pooled."""
    if how == "robust-z":
        return robust_z(score, valid, support)
    if how == "rank":
        return rank_scores(score, valid)
    raise ConfigError(f"unknown calibration {how!r}; use one of {', '.join(CALIBRATIONS)}")


def combine(maps: Sequence[np.ndarray], valid=None, how: str = "robust-z", weights=None, support: int = 1) -> np.ndarray:
    """Weighted mean of the per-image calibrated ``maps`` (:func:`calibrate` ``how``, statistics at ``support``
    px): several sources of evidence on one scale. NaN where any map is NaN."""
    if not len(maps):
        raise InputError("combine needs at least one map")
    shape = np.shape(maps[0])
    if any(np.shape(m) != shape for m in maps):
        raise InputError(f"maps to combine must have one shape; got {[np.shape(m) for m in maps]}")
    w = np.ones(len(maps)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(maps),) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights must be {len(maps)} non-negative numbers with a positive sum, got {weights!r}")
    total = np.zeros(shape, np.float64)
    for m, wi in zip(maps, w):
        total += wi * calibrate(m, valid, how, support)
    return (total / w.sum()).astype(np.float32)
