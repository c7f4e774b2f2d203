"""Types of change: clustering of change vectors, scikit-learn style.

:class:`ChangeClusterer` reduces the change vectors with PCA and fits a diagonal Gaussian mixture. With
``n_clusters="auto"`` the number of types is chosen by the Bayesian information criterion on a fixed-size
random sample, so the cost grows linearly with the number of events (no O(n^2) step); every event is then
assigned with ``predict``. The candidates stop where the mixture would have more parameters than the sample
has changes (``2 * n_components + 1`` per type): a run of fewer than 66 changes is one type, one of 264 at most
8 types; the runs of the benchmarks, over a thousand changes, choose among the same candidates as before.
"""

from __future__ import annotations

import contextlib

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import check_param


class ChangeClusterer(ClusterMixin, TransformerMixin, BaseEstimator):
    """Cluster change vectors into types; fitted attributes end in ``_``.

    Parameters
    ----------
    n_clusters : int or "auto"
        Number of change types, or ``"auto"`` to choose it by BIC among ``candidates`` up to ``max_clusters``.
    max_clusters : int
        Upper bound for the automatic choice.
    n_components : int
        PCA dimensions the mixture is fitted in.
    sample_size : int
        Events sampled to fit PCA and the mixtures (all events are labelled).
    random_state : int
        Seed: the same data and seed give the same clusters.
    """

    def __init__(self, n_clusters="auto", max_clusters=24, n_components=16, sample_size=5000, random_state=0):
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.n_components = n_components
        self.sample_size = sample_size
        self.random_state = random_state

    def fit(self, X, y=None):
        check_param("ChangeClusterer", "n_components", self.n_components, 1, integer=True)
        check_param("ChangeClusterer", "sample_size", self.sample_size, 1, integer=True)
        check_param("ChangeClusterer", "max_clusters", self.max_clusters, 1, integer=True)
        if self.n_clusters != "auto":  # (or a number of types)
            check_param("ChangeClusterer", "n_clusters ('auto' or)", self.n_clusters, 1, integer=True)
        X = validate_data(self, X, dtype=_FLOATS)  # (float32 kept: a float64 copy of a million 256-d vectors is 2 GB)
        n = X.shape[0]
        rng = np.random.default_rng(self.random_state)
        sample = X if n <= self.sample_size else X[np.sort(rng.choice(n, self.sample_size, replace=False))]
        sample = sample.astype(np.float64)
        self.pca_ = PCA(n_components=max(1, min(self.n_components, X.shape[1], len(sample))), random_state=self.random_state)
        still = len(sample) < 2 or not np.ptp(sample, axis=0).any()  # one sample, or identical ones (two same images)
        with np.errstate(divide="ignore", invalid="ignore") if still else contextlib.nullcontext():
            Z = self.pca_.fit_transform(sample)  # (no variance to explain: numpy's warning was printed to the user)
        if hasattr(self, "bic_"):  # (of an earlier automatic fit: not this one's)
            del self.bic_
        if len(sample) < 2:  # one change is one type (a mixture needs two samples)
            if self.n_clusters != "auto" and int(self.n_clusters) != 1:
                raise ValueError(f"n_clusters must be between 1 and the number of samples (1), got {self.n_clusters}")
            self.mixture_ = None
            self.n_clusters_ = 1
            self.labels_ = self.predict(X)
            return self
        if self.n_clusters == "auto":
            # at most one parameter (a mean and a variance per dimension, a weight) per sampled change: past that,
            # components collapse onto single changes, whose likelihood BIC's penalty cannot hold back (12 changes
            # of one type made 12 types, 40 made 24; a type's rarity was then noise)
            most = min(self.max_clusters, len(sample) // (2 * Z.shape[1] + 1))
            ks = [k for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64) if k <= max(1, most)]
            fits = [self._mixture(k).fit(Z) for k in ks]
            bics = [m.bic(Z) for m in fits]
            self.bic_ = dict(zip(ks, bics))
            self.mixture_ = fits[int(np.argmin(bics))]
        else:
            k = int(self.n_clusters)
            if k < 1 or k > len(sample):
                raise ValueError(f"n_clusters must be between 1 and the number of samples ({len(sample)}), got {k}")
            self.mixture_ = self._mixture(k).fit(Z)
        self.n_clusters_ = int(self.mixture_.n_components)
        self.labels_ = self.predict(X)
        return self

    def _mixture(self, k):
        return GaussianMixture(n_components=k, covariance_type="diag", reg_covar=1e-4, max_iter=200,
                               n_init=1, init_params="k-means++", random_state=self.random_state)

    def transform(self, X):
        """Change vectors in the PCA space the clusters live in."""
        check_is_fitted(self, "mixture_")
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        return _by_blocks(X, self.pca_.transform, np.float64, self.pca_.n_components_)

    def predict(self, X):
        check_is_fitted(self, "mixture_")
        X = validate_data(self, X, dtype=_FLOATS, reset=False)  # (named ChangeClusterer, not its PCA)
        if self.mixture_ is None:
            return np.zeros(len(X), np.int32)
        return _by_blocks(X, lambda x: self.mixture_.predict(self.pca_.transform(x)), np.int32)


_FLOATS = (np.float64, np.float32)


def _by_blocks(X, fn, dtype, width=None, block=65536):
    """``fn`` over ``block`` rows of ``X`` at a time, each made float64 (the whole in float64 at once peaked at
    3.6 GB for a million 256-d float32 vectors; the rows come out the same)."""
    out = np.empty((len(X),) if width is None else (len(X), width), dtype)
    for i in range(0, len(X), block):
        out[i:i + block] = fn(np.asarray(X[i:i + block], dtype=np.float64))
    return out


CLUSTER_SCHEMA: dict[str, tuple[str, str]] = {
    "cluster": ("int32", "change type id (events.parquet and objects.parquet refer to it)"),
    "size": ("int64", "number of patch events of this type"),
    "mean_magnitude": ("float32", "mean magnitude of its events; higher = larger changes"),
    "mean_atypicality": ("float32", "mean atypicality of its events (0..1, higher = more atypical); the table's order"),
    "max_atypicality": ("float32", "highest atypicality of its events"),
    "first_t1": ("datetime64[ns]", "earliest date of a new state among its events"),
    "last_t1": ("datetime64[ns]", "latest date of a new state among its events"),
}


def write_clusters(table, path):
    """Write :func:`cluster_table` to parquet, atomically, with its column descriptions in the metadata."""
    from .events import schema_metadata, write_parquet

    return write_parquet(table, path, schema_metadata(CLUSTER_SCHEMA))


def cluster_table(events, magnitude="magnitude", atypicality="atypicality"):
    """One row per cluster: size and mean scores (``clusters.parquet``)."""
    import pandas as pd

    g = events.groupby("cluster")
    out = pd.DataFrame({
        "size": g.size(),
        "mean_magnitude": g[magnitude].mean(),
        "mean_atypicality": g[atypicality].mean(),
        "max_atypicality": g[atypicality].max(),
        "first_t1": g["t1"].min(),
        "last_t1": g["t1"].max(),
    }).reset_index()
    return out.sort_values("mean_atypicality", ascending=False).reset_index(drop=True)
