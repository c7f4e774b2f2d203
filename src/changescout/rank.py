"""Rank changes as atypical by rarity and magnitude.

* :class:`RarityScorer` scores how empty a change's neighbourhood is in change-vector space: the mean
  distance to its ``n_neighbors`` nearest changes (exact search with faiss). It follows scikit-learn's
  outlier convention: ``score_samples`` is lower for rarer changes, ``decision_function = score_samples -
  offset_`` is negative for the ``contamination`` rarest.
* :class:`AtypicalityRanker` turns an events table into scores where higher always means more:
  ``rarity`` (0..1: rare neighbourhood and small change type), a magnitude score (size of the change, and
  how unusual it is for the patch's own history), and ``atypicality`` = rarity, magnitude score, or their
  geometric mean (``by="combined"``, the default). Transient changes (``persistence == 0``: a state seen at
  one date only, such as a cloud) are multiplied by ``transient_weight``.
"""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import ConfigError

RANK_BY = ("combined", "rarity", "magnitude")


class RarityScorer(OutlierMixin, BaseEstimator):
    """k-nearest-neighbour rarity of change vectors (lower ``score_samples`` = rarer)."""

    def __init__(self, n_neighbors=10, contamination=0.01):
        self.n_neighbors = n_neighbors
        self.contamination = contamination

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float32)
        self.index_ = faiss.IndexFlatL2(X.shape[1])
        self.index_.add(np.ascontiguousarray(X))
        self.n_train_ = X.shape[0]
        self.train_scores_ = self._scores(X, exclude_self=True)  # for ranking the training points themselves
        # The threshold is learnt on the scores score_samples gives the training points (each is its own
        # nearest neighbour there), so that predict(X_train) flags the contamination fraction.
        self.offset_ = float(np.quantile(self._scores(X, exclude_self=False), self.contamination)) if len(X) else 0.0
        return self

    def _scores(self, X, exclude_self):
        k = min(self.n_neighbors + int(exclude_self), self.n_train_)
        if k == 0:
            return np.zeros(len(X))
        d, _ = self.index_.search(np.ascontiguousarray(X, dtype=np.float32), k)
        d = np.sqrt(np.maximum(d, 0))
        if exclude_self:
            d = d[:, 1:] if k > 1 else d
        return -d.mean(axis=1).astype(np.float64)

    def score_samples(self, X):
        check_is_fitted(self, "index_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return self._scores(X, exclude_self=False)

    def decision_function(self, X):
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        return np.where(self.decision_function(X) < 0, -1, 1)


def percentile(values) -> np.ndarray:
    """Rank of each value scaled to (0, 1], ties averaged (higher value -> higher score)."""
    v = pd.Series(np.asarray(values, dtype=float))
    return (v.rank(method="average") / max(len(v), 1)).to_numpy()


class AtypicalityRanker:
    """Compute ``rarity``, ``atypicality`` and ``rank`` for an events table."""

    def __init__(self, by="combined", transient_weight=0.2, n_neighbors=10):
        if by not in RANK_BY:
            raise ConfigError(f"--rank-by must be one of {RANK_BY}, got {by!r}")
        self.by = by
        self.transient_weight = transient_weight
        self.n_neighbors = n_neighbors

    def rank(self, events: pd.DataFrame, reduced: np.ndarray) -> pd.DataFrame:
        """``events`` needs magnitude, zscore, persistence, cluster; ``reduced`` are the change vectors
        in the clustering space, in the same row order. Returns a copy with rarity, atypicality, rank."""
        ev = events.copy()
        if "surprise" not in ev:
            ev["surprise"] = ev["magnitude"]
        n = len(ev)
        if n == 0:
            for c in ("rarity", "atypicality"):
                ev[c] = np.zeros(0, np.float32)
            ev["rank"] = np.zeros(0, np.int32)
            return ev
        knn = -RarityScorer(n_neighbors=self.n_neighbors).fit(reduced).train_scores_
        sizes = ev.groupby("cluster")["cluster"].transform("size").to_numpy()
        type_rarity = -np.log(sizes / n)
        ev["cluster_size"] = sizes.astype(np.int32)
        ev["rarity"] = (0.5 * (percentile(knn) + percentile(type_rarity))).astype(np.float32)
        mag = np.sqrt(percentile(ev["surprise"]) * percentile(ev["zscore"]))
        score = {"rarity": ev["rarity"].to_numpy(), "magnitude": mag,
                 "combined": np.sqrt(ev["rarity"].to_numpy() * mag)}[self.by]
        transient = (ev["persistence"] == 0).fillna(False).to_numpy(bool)
        score = np.where(transient, score * self.transient_weight, score)
        ev["atypicality"] = score.astype(np.float32)
        order = np.lexsort((ev["vec"].to_numpy(), -ev["atypicality"].to_numpy()))
        rank = np.empty(n, np.int32)
        rank[order] = np.arange(1, n + 1)
        ev["rank"] = rank
        return ev


def false_alarm_rate(score, background) -> np.ndarray:
    """Empirical false-alarm rate of each score: the fraction of ``background`` scores (the run's
    unchanged-looking events) that are at least as high. 0 = nothing unchanged-looking scores this high;
    an analyst who stops where it reaches 0.01 expects about 1 % of the quiet patches above that point."""
    bg = np.sort(np.asarray(background, dtype=float))
    s = np.asarray(score, dtype=float)
    if bg.size == 0:
        return np.zeros(s.shape, np.float32)
    return ((bg.size - np.searchsorted(bg, s, side="left")) / bg.size).astype(np.float32)
