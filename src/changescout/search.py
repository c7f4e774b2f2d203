"""Find changes similar to a chosen one, in this run or in other runs (faiss).

Changes are compared by the cosine similarity of their search vectors (``search`` in ``changes.zarr``,
:func:`changescout.change.search_vectors`): the residual (the change vector less what patches in a similar
state did between the same dates, :func:`changescout.change.context_residual`) beside the new state (what
the patch turned into, less its area's mean state at that date). Two changes of one season are not alike
for the season they share: on the planted series (benchmarks/planted.py) a May harvest's nearest objects
were the other May changes. And two losses of green are told apart by what they left: slash or bare soil.
A change that most of its look-alikes made too has a small residual and a weak query: search from patches
where it stands out. The search runs through an inner-product faiss index over L2-normalised vectors whose
ids are the ``vec`` keys of the events table. The index is described by a faiss factory string (``"Flat"``
is exact; ``"IVF1024,Flat"`` scales). Negative feedback moves the query away from the changes the analyst
rejected (Rocchio) and drops them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from sklearn.base import BaseEstimator

from .atomic import atomic_path
from .errors import ConfigError, IncompatibleRunsError


@dataclass(frozen=True)
class SearchResult:
    """Keys and cosine similarities of the neighbours of each query; faiss' ``-1`` padding removed."""

    keys: list[np.ndarray]
    similarities: list[np.ndarray]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` (``(n, dim)``) as float32 rows at unit length (faiss' L2 normalisation), as the index holds them."""
    x = np.ascontiguousarray(x, dtype=np.float32).copy()
    faiss.normalize_L2(x)
    return x


class SimilarChangeIndex(BaseEstimator):
    """Cosine-similarity index of change vectors keyed by ``vec``."""

    def __init__(self, factory: str = "Flat"):
        self.factory = factory

    def fit(self, vectors: np.ndarray, keys: np.ndarray) -> "SimilarChangeIndex":
        """Index ``vectors`` ``(n, dim)`` (finite) under the unique integer ``keys`` ``(n,)``; a vector of zeros (a
        change of no direction) is 0 similar to every query."""
        vectors, keys = np.asarray(vectors), np.asarray(keys)
        if vectors.ndim != 2 or keys.shape != (len(vectors),):
            raise ConfigError(f"the index takes vectors (n, dim) and one key per vector; got vectors of shape "
                              f"{vectors.shape} and keys of shape {keys.shape}")
        if not np.isfinite(vectors).all():
            raise ConfigError(f"{int((~np.isfinite(vectors)).any(axis=1).sum())} of the {len(vectors)} vectors to index "
                              "hold NaN or inf")
        if len(keys) and not np.issubdtype(keys.dtype, np.integer):  # (400.5 was indexed as 400)
            raise ConfigError(f"keys must be integers (the events' vec), got {keys.dtype}")
        if len(np.unique(keys)) != len(keys):  # (a search returned one key for two vectors)
            raise ConfigError(f"keys must be unique: {len(keys) - len(np.unique(keys))} of the {len(keys)} repeat")
        x = unit_rows(vectors)
        try:
            index = faiss.index_factory(x.shape[1], self.factory, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:
                index.train(x)
        except RuntimeError as exc:
            raise ConfigError(f"faiss index {self.factory!r} cannot be built on {len(x)} vectors of {x.shape[1]} "
                              f"dimensions: {str(exc).strip().splitlines()[-1]}") from None
        self.index_ = faiss.IndexIDMap2(index)
        self.index_.add_with_ids(x, keys.astype(np.int64))
        return self

    def search(self, queries: np.ndarray, k: int = 10, exclude=()) -> SearchResult:
        """The ``k`` most similar indexed keys of each query ``(dim,)`` or ``(n, dim)``, ``exclude`` left out."""
        self._check_fitted("searching")
        queries = np.atleast_2d(np.asarray(queries))
        if queries.ndim != 2 or queries.shape[1] != self.index_.d:
            raise ConfigError(f"queries must have the index's {self.index_.d} dimensions; got shape {queries.shape}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a whole number >= 1, got {k!r}")
        exclude = set(int(e) for e in exclude)
        n = int(min(self.index_.ntotal, k + len(exclude)))  # (faiss takes no numpy integer)
        sims, ids = self.index_.search(unit_rows(queries), n)
        out_k, out_s = [], []
        for s, i in zip(sims, ids):
            keep = (i >= 0) & np.array([int(v) not in exclude for v in i], bool)
            out_k.append(i[keep][:k])
            out_s.append(s[keep][:k])
        return SearchResult(out_k, out_s)

    def _check_fitted(self, doing: str) -> None:
        if not hasattr(self, "index_"):
            raise ConfigError(f"the index is empty: fit it on vectors, or load one, before {doing}")

    def save(self, path: Path) -> None:
        self._check_fitted(f"saving it to {path}")  # (an AttributeError; the file is not touched)
        with atomic_path(path) as tmp:
            faiss.write_index(self.index_, str(tmp))

    @classmethod
    def load(cls, path: Path) -> "SimilarChangeIndex":
        """The index saved at ``path`` (:meth:`save`); its ``factory`` says what kind of index it is (:func:`_factory_of`)."""
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:  # (faiss' own error: a C++ source line and 'could not open ... for reading')
            why = "does not exist" if not Path(path).exists() else "is no faiss index that this faiss can read"
            raise ConfigError(f"{path} {why}") from None
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
        obj = cls(factory=_factory_of(inner))
        obj.index_ = index
        return obj


def _factory_of(index) -> str:
    """The faiss factory string of a loaded index, as far as the file tells it (it does not keep the string it
    was built from): ``Flat`` (what the runs build), ``HNSW<M>``, ``IVF<nlist>,Flat``; for other kinds the
    faiss class (``IndexPreTransform``), which says what the index is but cannot be built again by name."""
    if isinstance(index, faiss.IndexFlat):
        return "Flat"
    if isinstance(index, faiss.IndexHNSWFlat):
        return f"HNSW{index.hnsw.nb_neighbors(1)}"
    if isinstance(index, faiss.IndexIVFFlat):
        return f"IVF{index.nlist},Flat"
    return type(index).__name__


def feedback_query(positive: np.ndarray, negative: np.ndarray | None = None, beta: float = 0.5) -> np.ndarray:
    """Rocchio query: mean of the normalised positives minus ``beta`` times the mean of the negatives."""
    q = unit_rows(np.atleast_2d(positive)).mean(axis=0)
    if negative is not None and len(negative):
        q = q - beta * unit_rows(np.atleast_2d(negative)).mean(axis=0)
    return q[None].astype(np.float32)


def augment_neighbours(database: np.ndarray, queries: np.ndarray | None = None, k: int = 1, alpha: float = 2.0,
                       own: np.ndarray | None = None, groups: np.ndarray | None = None,
                       query_groups: np.ndarray | None = None) -> np.ndarray:
    """Descriptors drawn toward their nearest neighbours in ``database`` (database-side augmentation, DBA:
    Arandjelovic & Zisserman 2012; weights as Radenovic et al.'s alpha-QE): each unit descriptor plus its ``k``
    nearest other database rows, each weighted by its cosine (clipped at 0) to the power ``alpha``, normalised
    again. Without ``queries``, the database itself (each row's own entry is not its neighbour); with them, the
    ``queries``, where ``own`` gives each query's row in the database (-1: none) so that it is not its own
    neighbour. A change is then compared as it and its closest look-alike in the run are, which evens out the
    noise of a single object's patches: on the planted series (benchmarks/planted.py, objects' precision@5 of
    common types, seeds 0-4 / 5-9) Bouconne 0.795 / 0.757 -> 0.857 / 0.806, synthetic 0.548 / 0.585 -> 0.561 / 0.589.

    With ``groups`` (one label per database row: the run it comes from) and ``query_groups``, each descriptor's
    neighbours come from its own group alone: two overlapping runs see each change of their shared area, and a
    change drawn toward its own copy in the other run is not evened out at all, so that searching a run beside
    an overlapping one moved the scores and order of its own results (a review)."""
    db = unit_rows(np.atleast_2d(database))
    q = db if queries is None else unit_rows(np.atleast_2d(queries))
    if queries is None:
        own = np.arange(len(db))
        query_groups = groups
    own = np.full(len(q), -1) if own is None else np.asarray(own, np.int64)
    if groups is not None:
        groups, query_groups = np.asarray(groups), np.asarray(query_groups)
        out = q.copy()
        for g in np.unique(query_groups):
            sub, mine = np.flatnonzero(groups == g), np.flatnonzero(query_groups == g)
            inside = (own[mine] >= 0) & np.isin(own[mine], sub)
            sub_own = np.where(inside, np.searchsorted(sub, own[mine]), -1)
            out[mine] = augment_neighbours(db[sub], q[mine], k, alpha, own=sub_own) if len(sub) else q[mine]
        return out
    if len(db) < 2 or k < 1:
        return q
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    _, ids = index.search(q, min(len(db), k + 1))
    out, db64 = q.astype(np.float64), db.astype(np.float64)
    for i in range(len(q)):
        j = ids[i][(ids[i] >= 0) & (ids[i] != own[i])][:k]
        s = db64[j] @ out[i]  # again in float64: faiss' float32 sums depend on the thread count
        out[i] = out[i] + ((np.clip(s, 0, None) ** alpha)[:, None] * db64[j]).sum(axis=0)
    return unit_rows(out)


#: Weight of the trajectory distance in :func:`rank_augmented` (objects' precision@5 of common types on the planted
#: series, cached embeddings, rcf seeds 0-4: weights 0.1-6 tried, 1.5 chosen).
TRAJECTORY_WEIGHT = 1.5
#: Similarity a candidate loses per unit of elongation it lacks against the query's, in :func:`rank_augmented`
#: (:func:`changescout.objects.elongation`; the ranking's rarity uses the same shape). At 16 px a road is a thin
#: clearing: its descriptor is a clear-cut's, and only its line of patches tells it apart. On the planted series
#: (cached embeddings, seeds 0-9, rcf) the other road of a road query was outside its top 10 on Bouconne seeds 4
#: and 7 (behind five clear-cuts and harvests); with 0.2 the other instance of a rare type is found for 76 of 80
#: rare objects there (72 before; synthetic 76 both), precision@5 of common types 0.864 -> 0.862 (synthetic 0.653
#: -> 0.656; galileo-nano seeds 0-4: Bouconne 0.603 -> 0.587, synthetic 0.590 -> 0.580, rare 37 -> 37 and
#: 31 -> 31 of 40). One-sided: a compact query takes no notice of shape (a field's or a clearing's fragments
#: lie in all shapes; the same penalty both ways took galileo-nano's synthetic precision@5 to 0.560).
#: Weights 0.1-0.3 give 75-76 of 80; 0.5 loses precision (0.839).
SHAPE_WEIGHT = 0.2


def trajectory_distance(profiles: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Mean squared difference between each row of ``profiles`` (:func:`changescout.objects.trajectory_profiles`)
    and the ``query``'s, over the offsets both know. A row that shares no known offset with the query (a
    change at the series' start or end, under clouds, or of a run written before trajectories) gets the
    median of the others' distances: not known to unfold alike, nor otherwise (0, a perfect match, put such
    rows before near-identical ones)."""
    d = (np.asarray(profiles, np.float64) - np.asarray(query, np.float64)) ** 2
    known = np.isfinite(d)
    shared = known.any(axis=1)
    out = np.where(known, d, 0).sum(axis=1) / np.maximum(known.sum(axis=1), 1)
    out[~shared] = np.median(out[shared]) if shared.any() else 0.0
    return out


def rank_augmented(database: np.ndarray, query: np.ndarray, own: int = -1, exclude=(), negatives: np.ndarray | None = None,
                   negatives_own=None, shortlist: int = 2000, profiles: np.ndarray | None = None,
                   query_profile: np.ndarray | None = None, trajectory_weight: float = TRAJECTORY_WEIGHT,
                   groups: np.ndarray | None = None, negatives_groups=None, shapes: np.ndarray | None = None,
                   query_shape: float | None = None, shape_weight: float = SHAPE_WEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``database`` (``(n, dim)``), most similar to ``query`` (``(dim,)``) first, and their cosine
    similarities, both sides compared after :func:`augment_neighbours`; ``own`` is the query's row in the
    database (-1: none), ``exclude`` rows left out, ``negatives`` descriptors the search turns away from
    (Rocchio, :func:`feedback_query`; ``negatives_own`` their rows). Exact up to ``shortlist`` rows; a larger
    database is first cut to the ``shortlist`` rows nearest the query before augmentation. With ``profiles``
    (one row per database row, :func:`changescout.objects.trajectory_profiles`) and the ``query_profile``, each
    similarity less ``trajectory_weight`` times :func:`trajectory_distance`. With ``groups`` (the run of each
    database row; the query is of group 0, each negative of its ``negatives_groups``), every descriptor is drawn
    toward neighbours of its own run only (:func:`augment_neighbours`). With ``shapes`` (each row's
    ``elongation``) and the ``query_shape``, each similarity less ``shape_weight`` times the elongation it lacks
    against the query's (``SHAPE_WEIGHT``); a row of unknown shape (NaN: a run of changescout 0.3.2 or earlier
    among ``--in`` runs) loses the median of what the others lose, as an unknown trajectory does (losing
    nothing, it came before the same object of a newer run); with the query's unknown, the term is left out."""
    db = unit_rows(np.atleast_2d(database))
    groups = None if groups is None else np.asarray(groups)  # (without them, the query groups are not read)
    q = augment_neighbours(db, query, own=np.array([own]), groups=groups, query_groups=[0])
    if negatives is not None and len(negatives):
        q = feedback_query(q, augment_neighbours(db, negatives, own=negatives_own, groups=groups,
                                                 query_groups=negatives_groups))
    q = unit_rows(q)[0].astype(np.float64)
    rows = np.setdiff1d(np.arange(len(db)), np.asarray(list(exclude), np.int64))
    if len(rows) > shortlist:
        first = db[rows].astype(np.float64) @ q
        rows = np.sort(rows[np.argsort(-first, kind="stable")[:shortlist]])
    sims = augment_neighbours(db, db[rows], own=rows, groups=groups,
                              query_groups=None if groups is None else groups[rows]).astype(np.float64) @ q
    if profiles is not None and query_profile is not None and np.isfinite(query_profile).any() and trajectory_weight > 0:
        # less the trajectory distance: a change made in one step and undone soon is not a season's slow browning
        sims = sims - trajectory_weight * trajectory_distance(np.asarray(profiles)[rows], query_profile)
    if shapes is not None and query_shape is not None and np.isfinite(query_shape) and shape_weight > 0:
        # a line of patches (a road) is not a compact clearing, whatever their change vectors say
        lacks = np.clip(float(query_shape) - np.asarray(shapes, np.float64)[rows], 0, None)
        known = np.isfinite(lacks)
        lacks[~known] = np.median(lacks[known]) if known.any() else 0.0
        sims = sims - shape_weight * lacks
    order = np.argsort(-sims, kind="stable")
    return rows[order], sims[order]


#: Attributes two runs must share for their change vectors to be comparable.
COMPATIBILITY_KEYS = ("encoder", "encoder_version", "weights_sha256", "encoder_options", "patch_size", "normalisation_method", "search_vector",
                      "new_state_weight")


def check_compatible(a: dict, b: dict, name_a: str, name_b: str) -> None:
    """Refuse to compare runs whose encoder, weights, patch size, normalisation or searched vectors differ
    (``search_vector``: the residuals from 0.3.2, residual and new state since 0.3.9), or whose encoder
    normalised each run's input on its own area (rcf weights that do not carry their input normalisation)."""
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in COMPATIBILITY_KEYS if a.get(k) != b.get(k)]
    same_size = f" and --patch-size {a.get('patch_size')}" if a.get("patch_size") != b.get("patch_size") else ""
    rcf_hint = f" For rcf, run the other area with --weights {name_a}/rcf_weights.npz{same_size} to share one embedding space."
    if diffs:
        hint = rcf_hint if any(d.startswith("weights_sha256") for d in diffs) and a.get("encoder") == b.get("encoder") == "rcf" else ""
        if a.get("search_vector") != b.get("search_vector"):
            made = {"vector": "before 0.3.2, whose search compared the change vectors",
                    "residual": "from 0.3.2 to 0.3.8, whose search compared the residuals without the new state"}
            old = [(n, made[c["search_vector"]]) for n, c in ((name_a, a), (name_b, b)) if c.get("search_vector") in made]
            for name, when in old:
                hint += f" {name} was made by changescout {when}: run it again with this version (--overwrite) to search both."
        raise IncompatibleRunsError(f"change vectors of {name_a} and {name_b} cannot be compared ({'; '.join(diffs)}).{hint}")
    alone = [name for name, c in ((name_a, a), (name_b, b)) if not c.get("shared_space", True)]
    if alone and a.get("encoder") != "rcf":  # a plugin fed the stage's per-date z-scores (embed.shares_space)
        raise IncompatibleRunsError(
            f"change vectors of {name_a} and {name_b} cannot be compared: encoder {a.get('encoder')!r} reads the "
            "embedding stage's per-date z-scores of each band, which each run measures on its own area, so the same "
            "pixels embed otherwise in each run; compare runs of such an encoder within one run, or give it an "
            "input_normalisation of its own (a fixed centre and scale per band) to share one space")
    if alone:
        raise IncompatibleRunsError(
            f"change vectors of {name_a} and {name_b} cannot be compared: {' and '.join(alone)} normalised the "
            "encoder's input on its own area (rcf weights written before changescout 0.3.1 do not carry the input "
            f"normalisation).{rcf_hint} Re-run {name_a} first if its weights are that old.")


def compatibility(attrs: dict) -> dict:
    """What decides whether two runs' change vectors can be compared (encoder, version, weights, patch size, input
    normalisation, the vectors search compares), from a run's embeddings or changes attributes."""
    norm = attrs.get("normalisation")
    parsed = json.loads(norm) if isinstance(norm, str) and norm.startswith("{") else {}
    method = parsed.get("method", attrs.get("normalisation_method"))
    out = {k: attrs.get(k) for k in COMPATIBILITY_KEYS}
    out["normalisation_method"] = method
    out["patch_size"] = int(out["patch_size"]) if out["patch_size"] is not None else None
    out["encoder_options"] = attrs.get("encoder_options") or ""  # not recorded before 0.3.12: the defaults
    out["search_vector"] = attrs.get("search_vector", "vector")  # runs before 0.3.2 searched the change vectors
    out["new_state_weight"] = float(attrs.get("new_state_weight", 0.0))  # how the search vectors were made (0.3.9)
    shared = attrs.get("shared_space", parsed.get("shared"))
    if shared is None:  # a run made before 0.3.1: its rcf input was normalised on its own area
        shared = attrs.get("encoder") != "rcf"
    out["shared_space"] = bool(shared)
    return out
