"""Rank changes as atypical by rarity and magnitude.

* :class:`RarityScorer` scores how empty a change's neighbourhood is in change-vector space: the mean
  distance to its ``n_neighbors`` nearest changes (faiss: an exact search up to ``max_exact`` changes, an
  inverted file beyond, whose cost grows as n^1.5 rather than n^2). It follows scikit-learn's
  outlier convention: ``score_samples`` is lower for rarer changes, ``decision_function = score_samples -
  offset_`` is negative for the ``contamination`` rarest.
* :class:`AtypicalityRanker` turns an events table into scores where higher always means more:
  ``rarity`` (0..1: rare neighbourhood and small change type), a magnitude score (size of the change, and
  how unusual it is for the patch's own history), and ``atypicality`` = rarity, magnitude score, or their
  geometric mean (``by="combined"``, the default). Transient changes (``persistence == 0``: a state seen at
  one date only, such as a cloud) are multiplied by ``transient_weight``.
"""

from __future__ import annotations

import numbers

import faiss
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import ConfigError, check_columns, check_param

RANK_BY = ("combined", "rarity", "magnitude")


class RarityScorer(OutlierMixin, BaseEstimator):
    """k-nearest-neighbour rarity of change vectors (lower ``score_samples`` = rarer).

    Up to ``max_exact`` training points the search is exact (``faiss.IndexFlatL2``); it costs the square of
    the number of changes, which a large run cannot pay (2048 x 2048 px, 12 dates: 178 000 changes, 88 s for
    the two exact searches of 0.3.3 against 7 s at 1024 px; a Sentinel-2 tile would take hours). Beyond it, an inverted-file
    index (``faiss.IndexIVFFlat``: ``4 sqrt(n)`` lists, k-means seeded by ``random_state``, ``n_probe`` lists
    searched), whose cost grows as ``n^1.5``; the neighbours it misses make a few scores slightly larger.
    On the 178 000 changes of that run (benchmarks/rarity_scale.py, results/rarity_scale.md): 2.3 s against
    36 s for the exact search, Spearman correlation of the scores 1.000, 99.3 % of the exact 1 % rarest among
    its 1 % rarest, no percentile moved by more than 0.07. faiss finds the neighbours; their distances are
    then measured again in float64, so that the scores do not depend on the number of threads (faiss's
    float32 sums do: 2491 of 11 000 scores moved, by up to 3e-6, between 1 and 2 threads, and in a run 4
    events and 4 objects swapped ranks; an invariance review). An inverted file's own k-means may still
    place a neighbour otherwise.
    """

    def __init__(self, n_neighbors=10, contamination=0.01, max_exact=50_000, n_probe=16, random_state=0):
        self.n_neighbors = n_neighbors
        self.contamination = contamination
        self.max_exact = max_exact
        self.n_probe = n_probe
        self.random_state = random_state

    def fit(self, X, y=None):
        check_param("RarityScorer", "n_neighbors", self.n_neighbors, 1, integer=True)
        check_param("RarityScorer", "contamination", self.contamination, 0, 0.5)
        X = np.ascontiguousarray(validate_data(self, X, dtype=np.float32))
        self.n_train_ = X.shape[0]
        # identical rows are indexed once, with their count: an inverted file put them all in one list that each
        # of them scanned whole (200 000 changes, half of them one vector as gap-filled composites repeat: 107 s
        # against 6 s, growing as the square; a review); the neighbours and distances are the same
        self.counts_, rows = None, X
        if len(X) > 1:
            unique, counts = np.unique(X, axis=0, return_counts=True)
            if len(unique) < len(X):
                rows, self.counts_ = np.ascontiguousarray(unique), counts
        self.index_ = self._index(rows)
        self.train_ = rows
        # One search gives both: the training points ranked without themselves (each is its own nearest
        # neighbour), and the scores score_samples gives them, on which the threshold is learnt so that
        # predict(X_train) flags the contamination fraction.
        d = self._distances(X, min(self.n_neighbors + 1, self.n_train_))
        k = min(self.n_neighbors, self.n_train_)
        self.train_scores_ = -(d[:, 1:] if d.shape[1] > 1 else d).mean(axis=1) if len(X) else np.zeros(0)
        self.offset_ = float(np.quantile(-d[:, :k].mean(axis=1), self.contamination)) if len(X) else 0.0
        return self

    def _index(self, X):
        n, dim = X.shape
        if n <= self.max_exact:
            index = faiss.IndexFlatL2(dim)
        else:
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, max(1, min(int(4 * np.sqrt(n)), n)))
            seed = self.random_state  # (None or a RandomState, as scikit-learn takes: a seed drawn from it)
            index.cp.seed = int(seed) if isinstance(seed, numbers.Integral) else int(check_random_state(seed).randint(2 ** 31 - 1))
            index.train(X)
            index.nprobe = int(self.n_probe)
        index.add(X)
        return index

    def _distances(self, X, k, block_bytes=32 << 20):
        """Euclidean distances to the ``k`` nearest training points, nearest first (measured in float64 between
        the points faiss finds, as many query rows at a time as hold their neighbours in ``block_bytes``: 4096
        rows of 768-dim object descriptors and their 9 neighbours took 0.3 GB twice over, 7 KB per change of a
        run; a scale review)."""
        if k == 0:
            return np.zeros((len(X), 1))
        X = np.ascontiguousarray(X, dtype=np.float32)
        _, ids = self.index_.search(X, min(k, len(self.train_)))  # (distinct rows: k of them hold k points at least)
        missing = ids < 0
        d = np.empty(ids.shape)
        block = max(1, block_bytes // (8 * max(1, ids.shape[1] * X.shape[1])))
        for i in range(0, len(X), block):
            near = self.train_[np.maximum(ids[i:i + block], 0)].astype(np.float64)
            d[i:i + block] = np.sqrt(((near - X[i:i + block, None, :].astype(np.float64)) ** 2).sum(axis=2))
        d = np.where(missing, np.inf, d)
        order = np.argsort(d, axis=1, kind="stable")  # (float64 may order near-ties otherwise than faiss did)
        d = np.take_along_axis(d, order, axis=1)
        if self.counts_ is not None:  # each distinct row as many times as it was given, the first k
            held = np.cumsum(np.where(missing, 0, self.counts_[np.maximum(ids, 0)])[np.arange(len(ids))[:, None], order], axis=1)
            at = np.minimum((held[:, None, :] <= np.arange(k)[None, :, None]).sum(axis=2), d.shape[1] - 1)
            d = np.where(np.arange(k)[None, :] < held[:, -1:], np.take_along_axis(d, at, axis=1), np.inf)
        missing = ~np.isfinite(d)  # an inverted file whose probed lists hold fewer than k points: as far as the farthest found
        if missing.any():
            d[missing] = np.nan
            d = np.where(missing, np.nanmax(np.where(missing.all(axis=1, keepdims=True), 0.0, d), axis=1, keepdims=True), d)
        return d

    def score_samples(self, X):
        check_is_fitted(self, "index_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return -self._distances(X, min(self.n_neighbors, self.n_train_)).mean(axis=1)

    def decision_function(self, X):
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        return np.where(self.decision_function(X) < 0, -1, 1)


def percentile(values) -> np.ndarray:
    """Rank of each value scaled to (0, 1], ties averaged (higher value -> higher score)."""
    v = pd.Series(np.asarray(values, dtype=float))
    return (v.rank(method="average") / max(len(v), 1)).to_numpy()


def magnitude_score(surprise, zscore) -> np.ndarray:
    """The magnitude term of the ranking: the geometric mean of the percentiles of ``surprise`` and
    ``zscore``. An unknown zscore (NaN: no history for the patch) counts as the middle, 0.5, so that an image
    pair ranks by surprise alone, as when every zscore was 0; known ones take their percentile among the
    known ones."""
    z = pd.Series(np.asarray(zscore, dtype=float))
    known = z.notna()
    pz = np.full(len(z), 0.5)
    pz[known.to_numpy()] = percentile(z[known])
    return np.sqrt(percentile(surprise) * pz)


class AtypicalityRanker(BaseEstimator):
    """Compute ``rarity``, ``atypicality`` and ``rank`` for an events table."""

    def __init__(self, by="combined", transient_weight=0.2, n_neighbors=10):
        self.by = by
        self.transient_weight = transient_weight
        self.n_neighbors = n_neighbors

    def rank(self, events: pd.DataFrame, reduced: np.ndarray) -> pd.DataFrame:
        """``events`` needs magnitude, zscore, persistence, cluster and vec (the key that breaks ties);
        ``reduced`` are the change vectors in the clustering space, in the same row order (one row per event).
        Returns a copy with rarity, atypicality, rank."""
        check_columns(events, ["magnitude", "zscore", "persistence", "cluster", "vec"], "AtypicalityRanker.rank")
        if self.by not in RANK_BY:
            raise ConfigError(f"AtypicalityRanker: by must be one of {RANK_BY}, got {self.by!r}")
        check_param("AtypicalityRanker", "transient_weight", self.transient_weight, 0, 1)
        check_param("AtypicalityRanker", "n_neighbors", self.n_neighbors, 1, integer=True)
        if len(np.asarray(reduced)) != len(events):
            raise ConfigError(f"AtypicalityRanker.rank: reduced has {len(np.asarray(reduced))} rows for {len(events)} events "
                              "(one row per event, in the events' order)")
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
        mag = magnitude_score(ev["surprise"], ev["zscore"])
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
