"""Classic unsupervised change detection between two images: the baselines encoders are compared with.

Every baseline takes two float arrays ``a`` (first date) and ``b`` (second date) of the same shape
``(band, H, W)`` (a single ``(H, W)`` band is accepted too) and returns an ``(H, W)`` float score, higher =
more change. NaN marks nodata: a pixel is used only where every band of both dates is finite, statistics are
computed over those pixels only, and the score is NaN elsewhere. All of them are deterministic.

- ``cva-raw``: change vector analysis on bands standardised with statistics pooled over both dates.
- ``cva-z``: change vector analysis on bands z-scored per date (robust to per-date gain and offset).
- ``irmad``: iteratively reweighted multivariate alteration detection (Nielsen 2007).
- ``pca-kmeans``: PCA of difference-image blocks and k-means with k = 2 (Celik 2009).

:data:`BASELINES` maps these names to the functions.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import linalg, stats
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from ..errors import ConfigError, InputError


def _pair(a, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a`` and ``b`` as float64 ``(band, H, W)`` and the mask of pixels valid in every band of both dates."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if b.ndim == 2:
        b = b[None]
    if a.ndim != 3 or a.shape != b.shape:
        raise InputError(
            f"the two dates must be arrays of the same shape (band, H, W); got {np.shape(a)} and {np.shape(b)}"
        )
    valid = np.isfinite(a).all(axis=0) & np.isfinite(b).all(axis=0)
    if not valid.any():
        raise InputError("no pixel has finite values in every band of both dates")
    return a, b, valid


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per band; a constant band (std 0) becomes 0 instead of NaN."""
    safe = np.where(std > 0, std, 1.0)
    return (x - mean[:, None, None]) / safe[:, None, None]


def _magnitude(d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    score = np.sqrt((d**2).sum(axis=0))
    score[~valid] = np.nan
    return score


def cva_raw(a, b) -> np.ndarray:
    """Change vector analysis: ``||b' - a'||`` with each band standardised by mean and std pooled over both dates.

    One linear scale per band (shared by the two dates) keeps bands of different ranges comparable while
    keeping a global brightness difference between the dates as change. Malila, "Change vector analysis: an
    approach for detecting forest changes with Landsat", LARS Symposia 1980.
    """
    a, b, valid = _pair(a, b)
    both = np.concatenate([a[:, valid], b[:, valid]], axis=1)
    mean, std = both.mean(axis=1), both.std(axis=1)
    return _magnitude(_standardise(b, mean, std) - _standardise(a, mean, std), valid)


def cva_z(a, b) -> np.ndarray:
    """Change vector analysis after z-scoring each band of each date on its own: ``||z(b) - z(a)||``.

    Invariant to a per-date, per-band gain (> 0) and offset (illumination, calibration, atmosphere), at the
    price of also removing a real change of the whole scene's mean. Malila 1980 (see :func:`cva_raw`).
    """
    a, b, valid = _pair(a, b)
    za = _standardise(a, a[:, valid].mean(axis=1), a[:, valid].std(axis=1))
    zb = _standardise(b, b[:, valid].mean(axis=1), b[:, valid].std(axis=1))
    return _magnitude(zb - za, valid)


def _weighted_cca(z: np.ndarray, w: np.ndarray, ridge: float):
    """Weighted canonical correlation analysis of the two halves (first date, second date) of ``z`` ``(2p, n)``.

    Returns the canonical correlations ``rho`` (ascending) and the MAD variates ``(p, n)``: ``U_i - V_i`` with
    ``U = A' x``, ``V = B' y``, ``A' S11 A = I``, ``B' S22 B = I`` and ``A' S12 B = diag(rho)``.
    """
    p = len(z) // 2
    mean = z @ w / w.sum()
    zc = z - mean[:, None]
    zs = zc * np.sqrt(w / w.sum())
    cov = zs @ zs.T
    for block in (slice(0, p), slice(p, 2 * p)):
        cov[block, block] += ridge * np.trace(cov[block, block]) / p * np.eye(p)
    s11, s22, s12 = cov[:p, :p], cov[p:, p:], cov[:p, p:]
    # S12 S22^-1 S21 a = rho^2 S11 a, eigenvectors normalised so that a' S11 a = 1
    s22_inv_s21 = linalg.solve(s22, s12.T, assume_a="pos")
    rho2, coef_a = linalg.eigh(s12 @ s22_inv_s21, s11)
    rho = np.sqrt(np.clip(rho2, 0.0, 1.0))
    coef_b = s22_inv_s21 @ coef_a / np.maximum(rho, 1e-12)  # b = S22^-1 S21 a / rho: unit variance, corr(u, v) = rho
    return rho, np.concatenate([coef_a, -coef_b]).T @ zc


def irmad(a, b, max_iter: int = 50, tol: float = 1e-6, ridge: float = 1e-9) -> np.ndarray:
    """Iteratively reweighted MAD: the chi-square statistic of the standardised MAD variates.

    The MAD variates are the differences ``U_i - V_i`` of the canonical variates of a canonical correlation
    analysis (CCA) of the two dates; their variance is ``2 (1 - rho_i)``. The statistic
    ``Z = sum_i MAD_i**2 / (2 (1 - rho_i))`` is about chi-square with ``band`` degrees of freedom where nothing
    changed, so each pixel's probability of no change ``P(chi2 > Z)`` becomes its weight in the next weighted
    CCA. Iterates until no canonical correlation moves by more than ``tol`` (or ``max_iter`` CCAs) and returns
    ``Z``. ``max_iter=1`` is the plain MAD transform (Nielsen, Conradsen and Simpson, Remote Sensing of
    Environment 64, 1998).

    If the weights collapse onto pixels related perfectly linearly (a canonical correlation within 1e-6 of 1,
    or singular covariances: saturated or quantised pixels equal in both dates), the previous iteration's ``Z``
    is returned. Reweighting down-weights the tail of the no-change distribution, so afterwards ``Z`` of
    unchanged pixels runs well above chi-square: read it as a ranking. Invariant to any invertible affine
    transform of the bands of either date; ``ridge`` (a fraction of the mean band variance added to the
    covariance diagonals) only guards near-constant bands. Nielsen, "The regularized iteratively reweighted MAD
    method for change detection in multi- and hyperspectral data", IEEE Transactions on Image Processing
    16(2), 2007.
    """
    if max_iter < 1:
        raise ConfigError(f"max_iter must be at least 1, got {max_iter}")
    a, b, valid = _pair(a, b)
    z = np.concatenate([a[:, valid], b[:, valid]])
    n_bands = len(a)
    w = np.ones(z.shape[1])
    chi2, rho_old = None, None
    for _ in range(max_iter):
        try:
            rho, mad = _weighted_cca(z, w, ridge)
        except linalg.LinAlgError:
            if chi2 is None:
                raise InputError("the bands of one date are constant or linearly dependent; drop them") from None
            break  # the weights collapsed onto a degenerate set of pixels: keep the last statistic
        if chi2 is not None and rho.max() > 1 - 1e-6:
            break  # collapsed onto a perfect linear relation: keep the last well-defined statistic
        chi2 = (mad**2 / np.maximum(2.0 * (1.0 - rho), 1e-12)[:, None]).sum(axis=0)
        if rho_old is not None and np.max(np.abs(rho - rho_old)) < tol:
            break
        rho_old = rho
        w = stats.chi2.sf(chi2, n_bands)
        if w.sum() <= 0:  # every pixel looks changed: no pixel left to fit the no-change relation
            break
    score = np.full(valid.shape, np.nan)
    score[valid] = chi2
    return score


def _neighbourhoods(d: np.ndarray, h: int) -> np.ndarray:
    """The ``h x h`` neighbourhood of every pixel of ``d`` (edge-padded), flattened: ``(H, W, h*h)``."""
    before, after = (h - 1) // 2, h // 2
    padded = np.pad(d, ((before, after), (before, after)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, h))
    return windows.reshape(d.shape[0], d.shape[1], h * h)


def pca_kmeans(
    a,
    b,
    block: int = 4,
    n_components: int = 3,
    random_state: int = 0,
    return_labels: bool = False,
):
    """PCA of non-overlapping difference-image blocks, then k-means with k = 2 on per-pixel projections.

    The difference image is the magnitude of the per-date z-scored difference vector (:func:`cva_z`; for a
    single band this is ``|z(b) - z(a)|``, the paper's absolute difference up to per-date scaling). It is cut
    into non-overlapping ``block`` x ``block`` blocks; PCA of the blocks (blocks with nodata left out) gives
    ``n_components`` (``S <= block**2``) orthonormal eigenvectors; each pixel's ``block x block`` neighbourhood
    is projected on them; k-means (k = 2, fixed ``random_state``) splits the projections, and the cluster whose
    pixels have the larger mean difference is "change". The score is the signed distance to the k-means
    decision boundary in units of the distance ``D`` between the centroids, ``(d_none**2 - d_change**2) / (2 D**2)``:
    0 on the boundary, -1/2 and +1/2 at the no-change and change centroids, so the k-means change map is
    ``score > 0`` and scores of different images share one scale (k-means on heavy-tailed differences may
    isolate a tiny cluster of outliers, with a large ``D``). With ``return_labels`` the function returns
    ``(score, changed)``. Celik, "Unsupervised change detection in
    satellite images using principal component analysis and k-means clustering", IEEE Geoscience and Remote
    Sensing Letters 6(4), 2009. ``block=4`` and ``n_components=3`` are our defaults.
    """
    if not isinstance(block, (int, np.integer)) or block < 2:
        raise ConfigError(f"block must be an integer of at least 2 pixels, got {block!r}")
    if not 1 <= n_components <= block * block:
        raise ConfigError(f"n_components must be between 1 and block**2 = {block * block}, got {n_components}")
    diff = cva_z(a, b)
    valid = np.isfinite(diff)
    height, width = diff.shape
    if height < block or width < block:
        raise InputError(f"the images ({height}x{width} px) are smaller than one {block} px block; use a smaller block")
    filled = np.where(valid, diff, np.nanmedian(diff) if valid.any() else 0.0)
    nr, nc = height // block, width // block
    crop = (slice(0, nr * block), slice(0, nc * block))
    blocks = filled[crop].reshape(nr, block, nc, block).transpose(0, 2, 1, 3).reshape(nr * nc, block * block)
    block_ok = valid[crop].reshape(nr, block, nc, block).all(axis=(1, 3)).ravel()
    if block_ok.sum() < n_components + 1:
        raise InputError(f"only {int(block_ok.sum())} {block} px blocks without nodata; PCA needs more")
    pca = PCA(n_components=n_components, svd_solver="full").fit(blocks[block_ok])
    features = pca.transform(_neighbourhoods(filled, block).reshape(-1, block * block))
    inside = valid.ravel()
    kmeans = KMeans(n_clusters=2, n_init=10, random_state=random_state).fit(features[inside])
    members = [kmeans.labels_ == k for k in (0, 1)]
    means = [diff.ravel()[inside][m].mean() if m.any() else -np.inf for m in members]
    change = int(np.argmax(means))
    c_change, c_none = kmeans.cluster_centers_[change], kmeans.cluster_centers_[1 - change]
    separation = max(float(np.sum((c_change - c_none) ** 2)), 1e-300)
    # (d_none^2 - d_change^2) / (2 D^2): position along the no-change -> change axis, boundary at 0
    d_none = np.sum((features - c_none) ** 2, axis=1)
    d_change = np.sum((features - c_change) ** 2, axis=1)
    score = ((d_none - d_change) / (2 * separation)).reshape(height, width)
    score[~valid] = np.nan
    if return_labels:
        return score, valid & (score > 0)
    return score


#: Baseline name (as in ``metrics.json``) -> scoring function ``f(a, b) -> (H, W) score``.
BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "cva-raw": cva_raw,
    "cva-z": cva_z,
    "irmad": irmad,
    "pca-kmeans": pca_kmeans,
}


def get_baseline(name: str) -> Callable[..., np.ndarray]:
    """The baseline registered under ``name``; the error lists the available ones."""
    try:
        return BASELINES[name]
    except KeyError:
        raise ConfigError(f"unknown baseline {name!r}; available: {', '.join(BASELINES)}") from None
