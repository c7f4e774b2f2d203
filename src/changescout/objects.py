"""Change objects: touching patch changes of one date pair that change alike, ranked as one change.

An analyst thinks in objects (a clear-cut, a flooded field), not in 16 px patches, and the rarity of a
change type is a matter of how many *objects* show it: eight clear-cuts of five patches each are a common
type, two construction sites are a rare one, whatever the patch counts. So:

1. *Candidates* are the events whose ``surprise`` stands out from the run's bulk (robust z-score above
   ``min_z``: median and MAD of all events), and those the patch ranking puts in its top ``event_top``
   (1 %) by ``atypicality``. A patch change of modest size in a rare direction, unusual for its place, tops
   the patch list without standing out by its size; on the real Bouconne series four of the top 8 patch
   events (false-alarm rates 0.08-0.33 %) were left out of every object, and candidate objects whose best
   patch ranked 53rd or lower were listed above them (UAT). On the planted series the top 1 % adds no
   candidate that changes a measure (rare objects in the top 10, clouds in the top 20 and precision@5
   identical over seeds 0-9, both backgrounds). And since 0.3.30 the events whose ``spectral`` score (the
   change of their most changed 4 px blocks of pixels, :mod:`changescout.spectral`) stands far out of the
   run's (robust z above ``spectral_z``, 20): a road 2-3 px wide across the corner of a patch hardly moves
   its embedding's mean, and such patches cut roads into objects too short to show their line.
2. Candidates of the same ``t1`` that touch (8-neighbourhood) and whose change vectors, joined by the states
   after the change when given (:func:`without_before`), point the same way (cosine >= ``min_cosine``) join
   one object; a construction site next to a field harvested the same month stays apart (both lost their
   vegetation, but one became a roof and the other bare soil). On the planted series (benchmarks/planted.py)
   joining by the change vector alone merged such neighbours, and the construction was lost inside a harvest.
   A group of them whose every date pair spans a cloud at the ``t1`` of a touching group joins that group: it
   saw the same change one or more dates late (its onset patches are still those of the object's first
   ``t1``; :func:`group_objects`). On the planted Bouconne series (rcf, seed 3) a pond that dried at a cloudy
   date was three objects, ranks 1, 3 and 5. Every other event is an object of its own.
2a. *Mixed patches*: single linkage lets one patch that changed like both join a construction site or a road
   to the clear-cut beside it; such an object is cut in two where one part is a common change and the other,
   larger or smaller, differs from it and is not common (:func:`split_mixed`; ``split_cosine``, None turns it off; not
   with ``continuations``, against a fixed date or a year before, where a part cut at one date was continued as
   an object of its own). The cut is made at the object's onset; patches that saw the change a date late (a
   cloud at the onset) go with the part they touch and changed like. Until 0.3.25 an object with such a patch
   was never cut: on the planted Bouconne series (rcf, seed 0) a construction stayed inside the clear-cut beside
   it, one of whose patches was clouded at the onset.
2b. *Episodes*: a candidate object that undoes an earlier one at the same place (they share a patch and their
   change vectors point opposite ways, cosine <= -``min_cosine``: a flood receding, a crop regrowing after a
   clearing) joins that earlier object, whose ``t_end`` becomes its date. The analyst then sees the flood
   once, from its onset to its end, rather than twice; the object's descriptor comes from its onset alone.
   An end must lie mostly on the object it ends (half of its patches at least) and bring the shared patches
   back nearer to where the onset started them than to where it left them (a flooded patch whose
   surroundings green up changes the other way while still flooded), and a seasonal onset (its change
   recurs a year apart: a crop's green-up) takes no end, or every harvest would be hidden inside the
   field's cycle (:func:`join_episodes`).
3. Each candidate object gets a descriptor (the surprise-weighted mean of its change vectors), a rarity
   (mean distance to its ``n_neighbors`` nearest other candidate objects, :class:`changescout.rank.RarityScorer`
   on unit descriptors) and a magnitude (its largest ``surprise`` and ``zscore``); its score is the geometric mean
   of their percentiles (magnitude counted twice), and its ``atypicality`` that score (optionally weighted
   geometrically with the percentile of its most atypical patch event, ``event_weight``, 0 by default: see
   below), multiplied by ``transient_weight`` when the object is transient (the median persistence of its onset
   patches, weighted by their ``surprise``, is 0: a
   cloud), and down to ``1 - seasonal_weight`` when it recurs: the median ``recurrence`` of its onset patches
   (the same change, in direction and size, at the same place a year apart:
   :func:`changescout.change.recurrence`; known for at least half of them) above ``min_recurrence``, scaled
   linearly to 1. On the two-year planted synthetic series (benchmarks/planted.py) the background's own crop
   cycles held places in the top 10 objects (median cosine with the change a year apart 0.89 among the top 30
   objects) while no rare planted object went above 0.63; the demotion took the rare objects in the top 10
   from 30 to 32 of 40. Patch events keep their atypicality (planted harvests recur like the crops they
   replace, and are positives there). Objects made of non-candidates rank after every candidate object, in
   the order of their event atypicality.

*Objects are ranked among objects*: ``event_weight`` (0.5 until 0.3.3, 0 now) multiplied the score by the
percentile of the object's most atypical patch event over the whole run. Patch events know nothing of shape,
so it held down what the object's shape makes rare: a road's patches look like clearing patches. On the
planted series (benchmarks/planted.py, 5 seeds each) ``event_weight`` 0, 0.15, 0.3 and 0.5 put 33, 32, 31 and
30 of 40 rare objects in the top 10 on Bouconne with rcf (every road now in; 40 of 40 on the synthetic
background throughout) and 31, 31, 28 and 25 with galileo-nano (synthetic 34, 33, 33, 33); with clouds
lasting two dates, 0 and 2 clouds among the top 20 objects on Bouconne at 0 and 0.5. It was added when the
ranking had no cloud screen, seasonal demotion or shape term (clouds in the top 20 objects 3 -> 2 then).

*Shape*: rarity compares the objects' unit descriptors joined by ``shape_weight`` times their
``elongation`` (:func:`elongation`: how much longer than wide their onset patches lie). At 16 px a new road
is a thin clearing: its change vectors look like those of the run's clear-cuts and harvests, and only its
line of patches tells it apart (object-based image analysis uses shape the same way). On the planted series
(benchmarks/planted.py, rcf, 5 seeds each) ``shape_weight`` 0, 0.4, 1.0 and 1.5 put 39, 40, 40 and 39 of 40
rare objects in the top 10 on the synthetic background and 28, 29, 30 and 31 on Bouconne (galileo-nano
32 -> 33 and 25 -> 25 with 1.0); 1.0 is the default. A linear artefact (a misregistered field edge, a
river bank) gains rarity the same way; co-registration and the seasonal demotion hold most of those down.

``n_neighbors`` is 8: a type needs more instances than that before its objects stop looking rare. With 4, a
rare type of 2-3 instances had its siblings among the 4 and looked half common; on the planted series (8
instances of each common type, 2 of each rare one) rare objects in the top 10 went 60 -> 64 of 80 with rcf
(k = 2, 3, 4, 6, 8, 12: 54, 54, 60, 64, 64, 62).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.base import BaseEstimator

from .change import comparable
from .cube import on_earth
from .errors import ConfigError, check_columns, check_param
from .events import damaged_output, missing_output, schema_metadata, write_parquet
from .rank import RANK_BY, RarityScorer, false_alarm_rate, magnitude_score, percentile

_NEIGHBOURS = ((0, 1), (1, -1), (1, 0), (1, 1))

#: Dates, counted in the series' dates from an object's onset ``t1`` (0), at which :func:`trajectory_profiles`
#: places its patches' state: the second and third dates before ``t1`` (the first is usually ``t0``, 0 by
#: definition) and the three after it.
TRAJECTORY_OFFSETS = (-3, -2, 1, 2, 3)
#: Their columns in the objects table.
TRAJECTORY_COLUMNS = tuple(f"trajectory_{'m' if o < 0 else 'p'}{abs(o)}" for o in TRAJECTORY_OFFSETS)


OBJECT_SCHEMA: dict[str, tuple[str, str]] = {
    "object_id": ("int64", "object id, unique within the run; events.parquet refers to it"),
    "t0": ("datetime64[ns]", "earliest t0 of its patches"),
    "t1": ("datetime64[ns]", "date of the new state (the onset, shared by its first patch events)"),
    "t_end": ("datetime64[ns]", "date a later change undid it (e.g. a flood receding; those patch events belong to the object); NaT when none did"),
    "n_patches": ("int32", "number of distinct patches (places) the object covers"),
    "n_events": ("int32", "number of its patch events (events.parquet rows with its object_id): its patches at "
                          "its onset (some seen at a later date, where a cloud hid the onset), and again at its end or, "
                          "against a fixed date, at each later date"),
    "area_ha": ("float64", "area of the dissolved polygon of its patches in hectares (whole patches: at least the area that changed; at the images' edges, the part of a patch that the images cover; equal-area projection where the CRS distorts areas; NaN for pixel grids)"),
    "magnitude": ("float32", "largest magnitude of its patches; higher = larger change"),
    "surprise": ("float32", "largest surprise of its patches; higher = more unexpected"),
    "zscore": ("float32", "largest zscore of its patches; higher = more unusual for the place; NaN = unknown (no patch has a history)"),
    "persistence": ("float32", "median persistence of its onset patches, weighted by their surprise (0 = transient); "
                               "NaN = unknown (the patches of known persistence carry less than half of the surprise)"),
    "recurrence": ("float32", "median recurrence of its onset patches (same change a year apart; near 1 = seasonal, demoted); NaN = no date a year apart, or not --compare consecutive"),
    **{c: ("float32", f"where its onset patches stand {abs(o)} date{'s' if abs(o) > 1 else ''} {'before' if o < 0 else 'after'} "
                      "its onset t1, along their change (0 = as before it, 1 = as just after it; trajectory_profiles): "
                      "similar --objects compares these; NaN = unknown (no clear date there)")
       for o, c in zip(TRAJECTORY_OFFSETS, TRAJECTORY_COLUMNS)},
    "elongation": ("float32", "log ratio of the spread of its onset patches along and across their main axis; 0 = compact "
                              "or fewer than 3 patches, about 2 for a road across 10 patches"),
    "candidate": ("bool", "true when its patches stand out from the run's bulk (robust z of surprise > min_z) or top the "
                          "patch ranking (the top 1 % by atypicality)"),
    "cluster": ("int32", "change type: the cluster (clusters.parquet) of the onset patches carrying most of its surprise; -1 when the events have none"),
    "change": ("str", "what changed, in words, from the changed pixels of its onset patches (NDVI, brightness, NDWI: "
                      "changescout.describe); for the 500 best-ranked candidates; empty for the others, where no "
                      "pixel is usable at both dates, and without green, red and near-infrared bands"),
    "rarity": ("float32", "0..1, higher = fewer similar change objects in the run; 0 when not a candidate"),
    "atypicality": ("float32", "0..1, higher = more atypical object; 0 when not a candidate (those rank after "
                               "every candidate, in the order of their patch event's atypicality)"),
    "rank": ("int32", "1 = most atypical object"),
    "event_id": ("str", "its most atypical onset patch event (events.parquet), which stands for it: "
                        "`changescout similar RUN EVENT_ID --objects` searches from it"),
    "false_alarm_rate": ("float32", "calibrated score of its most atypical onset patch (events.parquet): fraction of the run's "
                                    "unchanged-looking patch events scoring at least as high; lower = more certainly a change"),
}


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(v - median) / (1.4826 MAD)`` over all values (NaN-safe; a zero MAD falls back to the std)."""
    v = np.asarray(values, dtype=float)
    med = np.nanmedian(v) if len(v) else 0.0
    mad = 1.4826 * np.nanmedian(np.abs(v - med)) if len(v) else 0.0
    if not np.isfinite(mad) or mad <= 0:
        mad = np.nanstd(v) if len(v) else 1.0
    return (v - med) / (mad if mad > 0 else 1.0)


def candidates(events: pd.DataFrame, min_z: float = 3.0, event_top: float = 0.0, spectral_z: float | None = None) -> np.ndarray:
    """The events that can make objects (see the module docstring): a ``surprise`` whose robust z is above
    ``min_z``, a ``spectral`` score (:mod:`changescout.spectral`, when the table has it) whose robust z is
    above ``spectral_z``, or an ``atypicality`` among the top ``event_top`` fraction of the events (when the
    table has it)."""
    out = (robust_z(events["surprise"].to_numpy(float)) > min_z) | _top_events(events, event_top)
    if spectral_z is not None and "spectral" in events:
        spectral = events["spectral"].to_numpy(float)
        if np.isfinite(spectral).any():  # (runs before 0.3.30 have none: NaN)
            out |= np.nan_to_num(robust_z(spectral), nan=-np.inf) > spectral_z
    return out


def _top_events(events: pd.DataFrame, event_top: float) -> np.ndarray:
    """The events in the top ``event_top`` fraction by ``atypicality`` (none without the column)."""
    if event_top <= 0 or "atypicality" not in events or not len(events):
        return np.zeros(len(events), bool)
    return percentile(events["atypicality"].to_numpy(float)) > 1.0 - event_top


def group_objects(events: pd.DataFrame, vectors: np.ndarray, min_z: float = 3.0, min_cosine: float = 0.5,
                  candidate: np.ndarray | None = None, gaps: bool = True) -> np.ndarray:
    """Object id of each event (row order of ``events``; ``vec`` indexes ``vectors``); ``candidate`` (default:
    :func:`candidates` with ``min_z``) says which events can join others.

    Touching candidates of the same ``t1`` join. With ``gaps`` (each event compares its place's previous clear
    date, as ``--compare consecutive`` does), a group whose every date pair spans the ``t1`` of a touching group
    (its patches were all under a cloud then, and saw the change a date or more late) joins that group, the one
    it changed most alike with when there are several. On the planted Bouconne series (seed 3) a pond that dried
    at a cloudy date was three objects, ranks 1, 3 and 5. A group only some of whose patches span the other
    date does not join: on seed 2 one patch of a clear-cut, clouded until the clear-cut's date, spanned a flood's
    onset beside it, and the flood vanished into the clear-cut."""
    n = len(events)
    if n == 0:
        return np.zeros(0, np.int64)
    cand = candidates(events, min_z) if candidate is None else np.asarray(candidate, bool)
    idx = np.flatnonzero(cand)
    t0 = pd.to_datetime(events["t0"]).to_numpy("datetime64[D]").astype(np.int64)[idx]
    t1 = pd.to_datetime(events["t1"]).to_numpy("datetime64[D]").astype(np.int64)[idx]
    rows, cols = events["row"].to_numpy(np.int64)[idx], events["col"].to_numpy(np.int64)[idx]
    unit = vectors[events["vec"].to_numpy(np.int64)[idx]].astype(np.float32)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    where: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(rows.tolist(), cols.tolist())):
        where.setdefault(key, []).append(i)
    a, b, late = [], [], []  # same-date joins; (i, j, cosine) where j's date lies inside i's pair
    around = _NEIGHBOURS + tuple((-dr, -dc) for dr, dc in _NEIGHBOURS)  # all 8 (the first 4: each pair once)
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        for dr, dc in around:
            for j in where.get((r + dr, c + dc), ()):
                same_date = t1[i] == t1[j] and (dr, dc) in _NEIGHBOURS
                seen_late = gaps and t0[i] < t1[j] < t1[i]
                if (same_date or seen_late) and (cos := float(unit[i] @ unit[j])) >= min_cosine:
                    if same_date:
                        a.append(i)
                        b.append(j)
                    else:
                        late.append((i, j, cos))
    m = len(idx)
    n_comp, comp = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(m, m)), directed=False)
    if late:  # a group seen late joins the group whose date all its pairs span
        latest_t0 = pd.Series(t0).groupby(comp).max().to_numpy()  # of each group
        best: dict[int, tuple[float, int]] = {}
        for i, j, cos in late:
            g, h = comp[i], comp[j]
            if latest_t0[g] < t1[j] and cos > best.get(g, (-np.inf, -1))[0]:
                best[g] = (cos, h)
        if best:
            joins = coo_matrix((np.ones(len(best)), (list(best), [h for _, h in best.values()])), shape=(n_comp, n_comp))
            n_comp, merged = connected_components(joins, directed=False)
            comp = merged[comp]
    # Ids in a deterministic order: candidate objects first (by their first event), then the other events.
    first = np.full(n_comp, np.iinfo(np.int64).max)
    np.minimum.at(first, comp, idx)
    renum = np.empty(n_comp, np.int64)
    renum[np.argsort(first, kind="stable")] = np.arange(n_comp)
    out = np.empty(n, np.int64)
    out[idx] = renum[comp]
    out[~cand] = n_comp + np.arange(n - m)
    return out


#: Objects of more patches than this are left whole by :func:`split_mixed` (Ward's cost grows as their square).
MAX_SPLIT_PATCHES = 2000


def split_mixed(events: pd.DataFrame, join_features: np.ndarray, features: np.ndarray, object_ids: np.ndarray,
                candidate: np.ndarray, max_cosine: float = 0.75, max_common: float = 0.2, n_neighbors: int = 8,
                min_cosine: float = 0.5, min_patches: int = 4, apart_cosine: float = 0.2) -> np.ndarray:
    """Object ids (rows of ``events``, keyed like ``object_ids``) with a rare part taken out of a candidate
    object that joins it to a common change.

    Touching patches join by single linkage (:func:`group_objects`), so one mixed patch between a construction
    site or a road and the clear-cut or harvest beside it, changed like both, joins them; the object is then
    named and ranked after the common part, and the rare change is lost (5 of the 9 rare planted objects missing
    from the top 10 on the planted Bouconne series, seeds 0-4). The onset patch events (those of its first ``t1``)
    of each candidate object, when ``min_patches`` or more (up to :data:`MAX_SPLIT_PATCHES`), are cut in two by
    Ward on their unit ``join_features`` (its patches seen a date late, where a cloud hid the onset, go with
    the part of the touching onset patch they changed most alike with), each part held together by the joins of :func:`group_objects` (touching, cosine >=
    ``min_cosine``). The cut is kept only when the parts differ (the cosine of their descriptors, the
    surprise-weighted sums of ``features``, is below ``max_cosine``), one part is a common change (the
    mean distance of its unit descriptor to the ``n_neighbors`` nearest other candidate objects is within the
    ``max_common`` quantile of the candidate objects' own) and the other part is not (its distance is above
    that quantile; two parts of one size are left whole). The common part may be the smaller one: a road across a
    clear-cut holds more patches than the corner of the clear-cut its mixed patch joins it to (on the planted
    Bouconne series, rcf seed 2, a road of 9 patches ranked 9th under the name of the 4-patch clear-cut beside
    it; cut, it ranks 4th). A flood over forest and field is two
    different parts, but neither is common, so it stays whole; without the commonness test floods were cut
    everywhere (rcf, Bouconne seeds 0-4: 138 -> 166 objects, rare objects in the top 10 31 -> 29); its parts lie
    at a cosine of 0.49 or more. Parts that changed in directions all but unrelated (a cosine below
    ``apart_cosine``) are cut when one of them at least is not common: on the planted Bouconne series (rcf,
    seed 0) a pond drying beside a harvest, parts at a cosine of 0.06, the harvest just past the commonness
    quantile, ranked 1st as the harvest and the pond was lost. (Two common parts stay one object, however
    apart.) The smaller part takes a new id; a part is not cut again."""
    from sklearn.cluster import AgglomerativeClustering

    out = np.asarray(object_ids).copy()
    cand = np.asarray(candidate, bool)
    ev, own = events[cand], out[cand]
    ids = np.unique(own)
    if len(ids) <= n_neighbors:
        return out
    desc = _unit(object_descriptors(ev.assign(object_id=own), features, ids))
    scorer = RarityScorer(n_neighbors=n_neighbors).fit(desc)
    common = np.quantile(-scorer.train_scores_, max_common)
    vec = ev["vec"].to_numpy(np.int64)
    joins, weighted = _unit(join_features[vec]), features[vec] * np.maximum(ev["surprise"].to_numpy(float), 1e-6)[:, None]
    rows, cols, t1 = ev["row"].to_numpy(), ev["col"].to_numpy(), pd.to_datetime(ev["t1"]).to_numpy()
    cuts = []  # (object's row in ids, the smaller part, the larger part, the patches seen late): rows of ev
    for i, every in pd.Series(np.arange(len(ev))).groupby(np.searchsorted(ids, own)):
        every = every.to_numpy()
        onset = t1[every] == t1[every].min()
        m, late = every[onset], every[~onset]  # the onset is cut; patches seen late (a cloud) follow their part
        if not min_patches <= len(m) <= MAX_SPLIT_PATCHES:
            continue
        linked = ((np.abs(rows[m][:, None] - rows[m]) <= 1) & (np.abs(cols[m][:, None] - cols[m]) <= 1)
                  & (joins[m] @ joins[m].T >= min_cosine - 1e-6))  # (group_objects joined them in float32)
        labels = AgglomerativeClustering(n_clusters=2, linkage="ward", connectivity=linked.astype(int)).fit(joins[m]).labels_
        small, large = sorted((m[labels == 0], m[labels == 1]), key=len)
        # of one size, which part lies inside the other is not told: no cut (the part Ward labelled first decided
        # it; taking the rarer out lost a rare object in the top 10 on each planted background)
        if len(small) < len(large):
            cuts.append((i, small, large, late))
    if not cuts:
        return out
    parts = _unit(np.stack([weighted[p].sum(axis=0) for _, small, large, _ in cuts for p in (small, large)]))
    far = _distance_to_others(scorer, parts, np.repeat([i for i, *_ in cuts], 2), n_neighbors)
    where, next_id = np.flatnonzero(cand), int(out.max()) + 1
    for c, (_, small, large, late) in enumerate(cuts):
        lower, higher = sorted((far[2 * c], far[2 * c + 1]))  # the commoner part, the rarer part: one common, one not
        cosine = parts[2 * c] @ parts[2 * c + 1]
        if (cosine < max_cosine and lower <= common < higher) or (cosine < apart_cosine and common < higher):
            out[where[small]] = next_id
            out[where[late[_with_smaller(late, small, large, rows, cols, joins)]]] = next_id
            next_id += 1
    return out


def _with_smaller(late: np.ndarray, small: np.ndarray, large: np.ndarray, rows, cols, joins) -> np.ndarray:
    """Which of the patches seen ``late`` go with the ``small`` part of a cut rather than the ``large`` one: the
    part of the touching onset patch they changed most alike with (the join of :func:`group_objects`), else the
    part whose mean they changed most alike with."""
    onset = np.concatenate([small, large])
    in_small = np.arange(len(onset)) < len(small)
    touch = (np.abs(rows[late][:, None] - rows[onset]) <= 1) & (np.abs(cols[late][:, None] - cols[onset]) <= 1)
    cos = joins[late] @ joins[onset].T
    best = np.where(touch, cos, -np.inf).argmax(axis=1)
    means = np.stack([joins[small].mean(axis=0), joins[large].mean(axis=0)])
    return np.where(touch.any(axis=1), in_small[best], (joins[late] @ means.T).argmax(axis=1) == 0)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _distance_to_others(scorer: RarityScorer, queries: np.ndarray, owners: np.ndarray, k: int) -> np.ndarray:
    """Mean distance of each query to the ``k`` nearest points of ``scorer``'s training set other than its
    ``owners`` row (the object a part is cut from), measured in float64 between the points faiss finds."""
    _, found = scorer.index_.search(np.ascontiguousarray(queries, np.float32), k + 1)
    out = np.empty(len(queries))
    for q, (ids, owner) in enumerate(zip(found, owners)):
        ids = [j for j in ids if j >= 0 and j != owner][:k]
        out[q] = np.linalg.norm(scorer.train_[ids].astype(np.float64) - queries[q], axis=1).mean()
    return out


def join_episodes(events: pd.DataFrame, vectors: np.ndarray, object_ids: np.ndarray, candidate: np.ndarray,
                  min_cosine: float = 0.5, states: np.ndarray | None = None,
                  max_recurrence: float | None = None) -> np.ndarray:
    """Object ids with each candidate object that undoes an earlier candidate object given that object's id.

    B undoes A when at least half of B's patches are A's, B's patch events there start from A's state (their
    ``t0`` is A's ``t1`` or later) and their descriptors point opposite ways (cosine <= -``min_cosine``). A
    flood that covers a pond dried up a year before and a few fields around it is not the end of the drying
    (on planted synthetic seed 3 it was, and the drying was named after the flood). With ``states`` (the
    embeddings before and after each change, :func:`change_states`), B must also bring the shared patches
    back: after B, the median shared patch is nearer to its state before A than to its state after A. A
    flooded patch whose surroundings green up in the summer changes the other way while it is still flooded;
    that is not the flood's end (on the planted Bouconne series such a change took a flood's end, and the
    recession ranked as an object of its own).
    An object whose onset recurs a year apart (median ``recurrence`` of its events above ``max_recurrence``,
    known for at least half of them) takes no end: a crop's spring green-up is undone by every harvest, and
    a harvest planted into such a field was hidden as the end of the field's seasonal cycle.
    An object has at most one end: the earliest object that undoes it."""
    ev = pd.DataFrame({"o": object_ids, "vec": events["vec"].to_numpy(np.int64), "row": events["row"].to_numpy(),
                       "col": events["col"].to_numpy(), "t0": pd.to_datetime(events["t0"]).to_numpy(),
                       "t1": pd.to_datetime(events["t1"]).to_numpy()})[candidate]
    if ev.empty:
        return object_ids
    pairs = ev.merge(ev, on=["row", "col"], suffixes=("_a", "_b"))
    pairs = pairs[(pairs["t1_a"] < pairs["t1_b"]) & (pairs["t0_b"] >= pairs["t1_a"]) & (pairs["o_a"] != pairs["o_b"])]
    if max_recurrence is not None and "recurrence" in events:
        own = events[candidate].reset_index(drop=True).assign(object_id=ev["o"].to_numpy())
        rec = _onset_median(own, pd.Series(True, index=own.index), "recurrence")  # (with any seen late)
        pairs = pairs[~pairs["o_a"].isin(np.unique(ev["o"])[rec > max_recurrence])]
    if states is not None and len(pairs):
        d = states.shape[1] // 2
        va, vb = pairs["vec_a"].to_numpy(), pairs["vec_b"].to_numpy()
        to_start = np.linalg.norm(states[vb, d:] - states[va, :d], axis=1)
        to_onset = np.linalg.norm(states[vb, d:] - states[va, d:], axis=1)
        back = pd.Series(to_start / np.maximum(to_onset, 1e-12)).groupby([pairs["o_a"].to_numpy(), pairs["o_b"].to_numpy()])
        pairs = pairs[(back.transform("median") < 1).to_numpy()]
    if len(pairs):  # at least half of B lies on A: a flood over a pond that dried up a year before is no end of it
        shared = pairs.groupby(["o_a", "o_b"])["vec_b"].transform("nunique").to_numpy()
        pairs = pairs[2 * shared >= ev.groupby("o").size().reindex(pairs["o_b"]).to_numpy()]
    pairs = pairs.drop_duplicates(["o_a", "o_b"])
    if pairs.empty:
        return object_ids
    ids = np.unique(ev["o"].to_numpy())
    desc = object_descriptors(events.assign(object_id=object_ids), vectors, ids)
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    ia, ib = np.searchsorted(ids, pairs["o_a"].to_numpy()), np.searchsorted(ids, pairs["o_b"].to_numpy())
    pairs = pairs.assign(cos=(desc[ia] * desc[ib]).sum(axis=1))
    pairs = pairs[pairs["cos"] <= -min_cosine].sort_values(["t1_b", "cos"])
    ends: dict[int, int] = {}  # undoing object -> the object it ends
    ended: set[int] = set()
    for a, b in zip(pairs["o_a"].tolist(), pairs["o_b"].tolist()):
        if b not in ends and a not in ended and a not in ends:
            ends[b] = a
            ended.add(a)
    out = object_ids.copy()
    if ends:
        hit = pd.Index(np.fromiter(ends, np.int64)).get_indexer(out)
        out = np.where(hit >= 0, np.fromiter(ends.values(), np.int64)[hit], out)
    return out


def join_continuations(events: pd.DataFrame, vectors: np.ndarray, object_ids: np.ndarray, candidate: np.ndarray,
                       min_cosine: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Object ids with each candidate object that continues an earlier one given that object's id, and the mask
    of the events that continue (those of the joined objects).

    Against a fixed reference date (``--compare reference:DATE``) a lasting change differs from the reference
    at every later date: on the Landsat series one place held 8 of the top 10 objects, once per later date.
    Against a year before (``--compare anniversary``) it differs at every date of the year after it: on the
    synthetic series (24 monthly dates, seeds 0-4) the top 10 objects held 35 distinct changes of 50, one
    harvest three times (ranks 1, 4, 12 of seed 0: a review); joined, 49 of 50, and rare planted changes in
    the top 10 15 -> 23 of 40.
    B continues A when at least half of B's patches are A's, B's patch events there compare a date before A's
    onset (their ``t0`` is before A's ``t1``: B still spans A's change) and their descriptors point the same
    way (cosine >= ``min_cosine``). B joins the earliest object it continues (and so a chain of them, one)."""
    ev = pd.DataFrame({"o": object_ids, "row": events["row"].to_numpy(), "col": events["col"].to_numpy(),
                       "t0": pd.to_datetime(events["t0"]).to_numpy(), "t1": pd.to_datetime(events["t1"]).to_numpy()})[candidate]
    none = np.zeros(len(object_ids), bool)
    if ev.empty:
        return object_ids, none
    pairs = ev.merge(ev, on=["row", "col"], suffixes=("_a", "_b"))
    pairs = pairs[(pairs["t1_a"] < pairs["t1_b"]) & (pairs["t0_b"] < pairs["t1_a"]) & (pairs["o_a"] != pairs["o_b"])]
    if len(pairs):  # (patches counted once: an object may hold two events of a patch, its onset and its end)
        pairs = pairs.drop_duplicates(["o_a", "o_b", "row", "col"])
        shared = pairs.groupby(["o_a", "o_b"])["t1_b"].transform("size").to_numpy()
        places = ev.drop_duplicates(["o", "row", "col"]).groupby("o").size()
        pairs = pairs[2 * shared >= places.reindex(pairs["o_b"]).to_numpy()].drop_duplicates(["o_a", "o_b"])
    if pairs.empty:
        return object_ids, none
    ids = np.unique(ev["o"].to_numpy())
    desc = object_descriptors(events.assign(object_id=object_ids), vectors, ids)
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    ia, ib = np.searchsorted(ids, pairs["o_a"].to_numpy()), np.searchsorted(ids, pairs["o_b"].to_numpy())
    pairs = pairs[(desc[ia] * desc[ib]).sum(axis=1) >= min_cosine].sort_values(["t1_b", "t1_a"])
    root: dict[int, int] = {}
    for a, b in zip(pairs["o_a"].tolist(), pairs["o_b"].tolist()):
        if b not in root:  # the earliest object it continues (already joined to its own root, if any)
            root[b] = root.get(a, a)
    if not root:
        return object_ids, none
    hit = pd.Index(np.fromiter(root, np.int64)).get_indexer(object_ids)
    return np.where(hit >= 0, np.fromiter(root.values(), np.int64)[hit], object_ids), hit >= 0


def change_states(embeddings, events: pd.DataFrame, n_vectors: int | None = None) -> np.ndarray:
    """``(n_vec, 2 dim)``: each event's embedding at ``t0`` and at ``t1``, in the rows of its ``vec`` key
    (as the change stage compares them: :func:`changescout.change.comparable`)."""
    E = embeddings["embedding"]
    times = pd.DatetimeIndex(embeddings["time"].values)
    rows, cols = events["row"].to_numpy(), events["col"].to_numpy()
    out = np.zeros((n_vectors or int(events["vec"].max()) + 1, 2 * E.sizes["dim"]), np.float32)
    for half, col in enumerate(("t0", "t1")):
        idx = times.get_indexer(pd.to_datetime(events[col]))
        if (idx < 0).any():  # (isel would take -1 as the last date)
            raise ValueError(f"events name {col} dates that the embeddings do not have")
        pick = {k: xr.DataArray(v, dims="event") for k, v in (("time", idx), ("row", rows), ("col", cols))}
        vals = E.isel(pick).transpose("event", "dim").values
        vals = comparable(vals, embeddings.attrs.get("distance"))
        out[events["vec"].to_numpy(), half * E.sizes["dim"]:(half + 1) * E.sizes["dim"]] = vals
    return out


def change_features(vectors: np.ndarray, states: np.ndarray | None, weight: float) -> np.ndarray:
    """Change vectors, joined by the (centred) states before and after when given, each part scaled by its
    median norm and the states by ``weight``: what a change turned into what, for rarity and episodes
    (columns: vector, state before, state after; :func:`without_before` drops the middle part)."""
    if states is None or weight <= 0:
        return vectors
    d, nv = states.shape[1] // 2, vectors.shape[1]
    # each part made in its place in the output (the parts, then their stack and its float32 copy, held 9 KB per
    # change at once; a scale review), by the same operations in the same order
    out = np.empty((len(vectors), nv + 2 * d), np.float32)
    parts = [(out[:, :nv], vectors, None)] + [(out[:, nv + i * d:nv + (i + 1) * d], s, weight)
                                             for i, s in enumerate((states[:, :d], states[:, d:]))]
    for part, values, w in parts:  # (one part's copy at a time, in its own precision, then stored)
        x = np.array(values, dtype=np.result_type(values.dtype, np.float32))
        if w is not None:  # a state: centred, scaled, weighted
            x -= values.mean(axis=0)
        x /= max(float(np.median(np.linalg.norm(x, axis=1))), 1e-12)
        if w is not None:
            x *= w
        part[...] = x
    return out


def without_before(features: np.ndarray, n_vector: int) -> np.ndarray:
    """:func:`change_features` less the state before (what a change turned into): ``features`` as they are when
    they hold the change vector (``n_vector`` columns) alone."""
    d = (features.shape[1] - n_vector) // 2
    return features if d == 0 else np.delete(features, np.s_[n_vector:n_vector + d], axis=1)


def object_descriptors(events: pd.DataFrame, vectors: np.ndarray, object_ids: np.ndarray) -> np.ndarray:
    """Surprise-weighted mean change vector per object from its onset patch events (those of its first ``t1``;
    the events of an episode's end point the other way), rows in the order of ``object_ids``."""
    pos = pd.Index(object_ids).get_indexer(events["object_id"].to_numpy())
    t1 = pd.to_datetime(events["t1"])
    keep = (pos >= 0) & (t1 == t1.groupby(events["object_id"].to_numpy()).transform("min")).to_numpy()
    w = np.maximum(events["surprise"].to_numpy(float)[keep], 1e-6)
    vec = vectors[events["vec"].to_numpy(np.int64)[keep]].astype(np.float64)
    out = np.zeros((len(object_ids), vectors.shape[1]))
    total = np.zeros(len(object_ids))
    np.add.at(out, pos[keep], vec * w[:, None])
    np.add.at(total, pos[keep], w)
    return (out / np.maximum(total, 1e-12)[:, None]).astype(np.float32)


def trajectory_profiles(events: pd.DataFrame, states: np.ndarray, object_ids: np.ndarray,
                        offsets=TRAJECTORY_OFFSETS, block: int = 8192) -> np.ndarray:
    """Where each object's onset patches stand before and after their change, along that change: per object
    (rows in the order of ``object_ids``) and date offset (columns, ``offsets`` counted in the series' dates from
    the onset ``t1``), the surprise-weighted mean over its onset patch events of
    ``<state(t1 + offset) - state(t0), state(t1) - state(t0)> / |state(t1) - state(t0)|^2``: 0 = as before the
    change, 1 = as just after it. A change made in one step and kept reads 0 before and 1 after; a field that
    browns over three months reads below 0 before (greener) and above 1 after (browner still); a change that
    regrows falls back toward 0. A patch's state at a date is known where one of its events starts or ends there
    (its ``t0`` or ``t1``: between consecutive clear dates, every clear date; against a year before, the dates of
    the first year too); NaN where no onset patch's state is known at that date (cloud, the series' ends). Until
    0.3.25 only the events ending at a date counted: against a year before, the objects of the second year had
    no state before their onset (26 of 189 candidate objects of a synthetic series), and between consecutive
    dates a patch's first clear date was unknown (a review).

    ``events`` need ``object_id``, ``row``, ``col``, ``t0``, ``t1``, ``vec`` and ``surprise``, and ``t0i`` and
    ``t1i``, the places of ``t0`` and ``t1`` among the series' dates (:func:`changescout.change.compute_changes`
    gives them; changes.zarr does not keep them; with ``t1i`` alone, a ``t0`` is placed where some event ends at
    its date, and without either, dates are counted among those some event starts or ends at); ``states`` is :func:`change_states` (each event's state at ``t0`` and at ``t1``, in the
    rows of ``vec``)."""
    offsets = np.asarray(offsets, np.int64)
    out = np.full((len(object_ids), len(offsets)), np.nan)
    if not len(events) or not len(object_ids):
        return out
    dim = states.shape[1] // 2
    pos = pd.Index(object_ids).get_indexer(events["object_id"].to_numpy())
    t1 = pd.to_datetime(events["t1"])
    onset = np.flatnonzero((pos >= 0) & (t1 == t1.groupby(events["object_id"].to_numpy()).transform("min")).to_numpy())
    rows, cols = events["row"].to_numpy(np.int64), events["col"].to_numpy(np.int64)
    t0 = pd.to_datetime(events["t0"])
    if "t1i" in events and "t0i" in events:
        t0i, t1i = events["t0i"].to_numpy(np.int64), events["t1i"].to_numpy(np.int64)
    elif "t1i" in events:  # (t0i from the dates some event ends at; a date none ends at is not looked up)
        t1i = events["t1i"].to_numpy(np.int64)
        place = pd.Series(t1i, index=t1.to_numpy()).groupby(level=0).first()
        t0i = place.reindex(t0.to_numpy()).fillna(-(2 ** 40)).to_numpy(np.int64)
    else:  # the dates' places among the events' dates (events.parquet does not keep the index)
        dates = np.unique(np.concatenate([t0.to_numpy(), t1.to_numpy()]))
        t0i, t1i = (np.searchsorted(dates, t.to_numpy()).astype(np.int64) for t in (t0, t1))
    vec = events["vec"].to_numpy(np.int64)
    # each patch's state at each date some event of it ends at (t1) or starts from (t0): the first event that
    # gives it, its t1 half before any t0 half (``at``: i < n, the t1 half of event i; n + i, its t0 half), found by
    # a flat key of (row, col, date) (a pandas MultiIndex of them, and the states copied out, held 11 KB per change
    # of a run; a scale review)
    n = len(vec)
    dates = np.r_[t1i, t0i]
    given = np.flatnonzero(dates >= 0)  # (a t0 of no known place: none to give)
    n_dates = int(dates[given].max()) + 1 if len(given) else 1
    n_cols = int(cols.max()) + 1

    def key(r, c, t):
        return (r.astype(np.int64) * n_cols + c) * n_dates + t

    keys, first = np.unique(key(np.r_[rows, rows][given], np.r_[cols, cols][given], dates[given]), return_index=True)
    held = given[first]
    num, den = np.zeros((len(object_ids), len(offsets))), np.zeros((len(object_ids), len(offsets)))
    w_all = np.maximum(events["surprise"].to_numpy(float), 1e-6)
    for start in range(0, len(onset), block):  # (float64 copies of a block's states at a time; the sums, each
        these = onset[start:start + block]     # object's in the same order as whole)
        s0 = states[vec[these], :dim].astype(np.float64)
        v0 = states[vec[these], dim:].astype(np.float64) - s0
        n2 = np.maximum((v0 * v0).sum(axis=1), 1e-12)
        w = w_all[these]
        for j, off in enumerate(offsets):
            t = t1i[these] + off
            inside = (t >= 0) & (t < n_dates)
            q = key(rows[these], cols[these], np.clip(t, 0, n_dates - 1))
            k = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
            ok = inside & (keys[k] == q) if len(keys) else np.zeros(len(q), bool)
            at = held[k[ok]]
            late = at < n  # a t1 half: the state after that event; else the state before the event n places on
            known = np.empty((len(at), dim), states.dtype)
            known[late] = states[vec[at[late]], dim:]
            known[~late] = states[vec[at[~late] - n], :dim]
            x = ((known - s0[ok]) * v0[ok]).sum(axis=1) / n2[ok]
            np.add.at(num[:, j], pos[these][ok], w[ok] * x)
            np.add.at(den[:, j], pos[these][ok], w[ok])
    seen = den > 0
    out[seen] = num[seen] / den[seen]
    return out


def elongation(events: pd.DataFrame, onset: np.ndarray, object_ids: np.ndarray) -> np.ndarray:
    """Per object (rows in the order of ``object_ids``): ``log((s1 + 0.5) / (s2 + 0.5))``, where ``s1 >= s2``
    are the standard deviations of its onset patches' (row, col) along and across their main axis; 0 for
    objects of fewer than 3 onset patches (their shape is not known at patch size)."""
    ev = events[np.asarray(onset, bool)]
    pos = pd.Index(object_ids).get_indexer(ev["object_id"].to_numpy())
    keep = pos >= 0
    r, c = ev["row"].to_numpy(float)[keep], ev["col"].to_numpy(float)[keep]
    g = pd.DataFrame({"o": pos[keep], "r": r, "c": c, "rr": r * r, "cc": c * c, "rc": r * c}).groupby("o")
    m, n = g.mean(), g.size()
    vr, vc, cov = m["rr"] - m["r"] ** 2, m["cc"] - m["c"] ** 2, m["rc"] - m["r"] * m["c"]
    half, gap = (vr + vc) / 2, np.sqrt(((vr - vc) / 2) ** 2 + cov**2)  # eigenvalues of the 2 x 2 covariance
    s1, s2 = np.sqrt(np.maximum(half + gap, 0)), np.sqrt(np.maximum(half - gap, 0))
    out = np.zeros(len(object_ids))
    big = (n >= 3).to_numpy()
    out[m.index.to_numpy()[big]] = np.log((s1 + 0.5) / (s2 + 0.5)).to_numpy()[big]
    return out


def _knn_distance(desc: np.ndarray, k: int, extra: np.ndarray | None = None) -> np.ndarray:
    """Mean distance to the ``k`` nearest other rows, on unit ``desc`` joined by the ``extra`` columns."""
    if len(desc) < 2:
        return np.ones(len(desc))
    unit = _unit(desc)
    if extra is not None:
        unit = np.hstack([unit, extra])
    return -RarityScorer(n_neighbors=k).fit(unit).train_scores_  # (an inverted file for a very large run)


class ObjectRanker(BaseEstimator):
    """Group an events table into objects and rank them (see the module docstring).

    The defaults are those of changes between consecutive dates (``--compare consecutive``). For a table of
    changes against a year before or a fixed date, give ``gaps=False`` (every later date lies inside such a
    pair: it would join changes of other dates) and ``continuations=True``, as
    :func:`changescout.pipeline.rank_events` does."""

    def __init__(self, min_z=3.0, min_cosine=0.5, n_neighbors=8, transient_weight=0.2, by="combined", episodes=True,
                 state_weight=0.7, event_weight=0.0, seasonal_weight=0.5, min_recurrence=0.6, shape_weight=1.0,
                 continuations=False, event_top=0.01, gaps=True, split_cosine=0.75, spectral_z=20.0):
        self.spectral_z = spectral_z
        self.split_cosine = split_cosine
        self.seasonal_weight = seasonal_weight
        self.continuations = continuations
        self.gaps = gaps
        self.event_top = event_top
        self.shape_weight = shape_weight
        self.min_recurrence = min_recurrence
        self.event_weight = event_weight
        self.episodes = episodes
        self.state_weight = state_weight
        self.min_z = min_z
        self.min_cosine = min_cosine
        self.n_neighbors = n_neighbors
        self.transient_weight = transient_weight
        self.by = by

    def fit_transform(self, events: pd.DataFrame, vectors: np.ndarray, states: np.ndarray | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Returns ``(events + object_id + object_rank, objects table without geometry)``.

        ``states``: the embeddings before and after each change (:func:`change_states`, rows keyed like
        ``vectors``); when given, touching patches join by what they changed into, and episodes and rarity
        compare objects by what changed into what, not only by the change vector (:func:`change_features`).

        ``vectors`` (and ``states``) are keyed by the events' ``vec`` column: row ``v`` is the vector of the event
        whose ``vec`` is ``v``, as :func:`changescout.change.compute_changes` returns them and changes.zarr
        holds them (``read_vectors(path)`` without keys), not one row per event in the table's order."""
        check_columns(events, ["row", "col", "t0", "t1", "vec", "magnitude", "surprise", "zscore", "persistence"],
                      "ObjectRanker.fit_transform")
        if self.by not in RANK_BY:
            raise ConfigError(f"ObjectRanker: by must be one of {RANK_BY}, got {self.by!r}")
        for name, lo, hi in (("transient_weight", 0, 1), ("seasonal_weight", 0, 1), ("event_top", 0, 1),
                             ("min_cosine", -1, 1), ("min_recurrence", 0, 1), ("state_weight", 0, None),
                             ("event_weight", 0, 1), ("shape_weight", 0, None)):
            check_param("ObjectRanker", name, getattr(self, name), lo, hi)
        check_param("ObjectRanker", "n_neighbors", self.n_neighbors, 1, integer=True)
        if self.spectral_z is not None:  # (None: the spectral score makes no candidate)
            check_param("ObjectRanker", "spectral_z", self.spectral_z, 0, None)
        if self.split_cosine is not None:  # (None: objects are not split)
            check_param("ObjectRanker", "split_cosine", self.split_cosine, -1, 1)
        vec = events["vec"].to_numpy()
        for name, arr in (("vectors", vectors), ("states", states)):
            if arr is not None and len(vec) and (vec.min() < 0 or vec.max() >= len(arr)):
                raise ConfigError(f"ObjectRanker.fit_transform: {name} has {len(arr)} rows but the events' vec keys run "
                                  f"from {vec.min()} to {vec.max()}: rows are keyed by vec (changes.zarr's layout), "
                                  "not one per event in the table's order")
        # one order whatever the table's (events.parquet is sorted by rank): object ids, and the ties they break,
        # follow the vec keys; the events come back in the caller's order
        by_vec = np.argsort(events["vec"].to_numpy(), kind="stable")
        ev = events.iloc[by_vec].copy()
        # by its size, in its embedding or its pixels: what the false-alarm rates are measured against
        stands_out = candidates(ev, self.min_z, spectral_z=self.spectral_z)
        ev["_cand"] = stands_out | _top_events(ev, self.event_top)
        # touching patches join when they changed alike *into the same thing*: a new roof beside a field
        # harvested the same month both lost their vegetation, but are two objects
        features = change_features(vectors, states, self.state_weight)
        joins = without_before(features, vectors.shape[1])
        ids = group_objects(ev, joins, self.min_z, self.min_cosine, ev["_cand"].to_numpy(), self.gaps)
        # a rare part joined to a common change by a mixed patch: apart again (not against a fixed date or a year before, where a
        # lasting change is one object over its dates: a part cut at one date was continued as an object of its own)
        if self.split_cosine is not None and not self.continuations:
            ids = split_mixed(ev, joins, features, ids, ev["_cand"].to_numpy(), self.split_cosine,
                              n_neighbors=self.n_neighbors, min_cosine=self.min_cosine)
        vectors = features
        ev["object_id"] = (join_episodes(ev, vectors, ids, ev["_cand"].to_numpy(), self.min_cosine, states, self.min_recurrence)
                            if self.episodes else ids)
        ev["_end"] = ev["object_id"].to_numpy() != ids  # the patch events of an episode's end
        ev["_cont"] = False
        if self.continuations:  # against a fixed date or a year before, a lasting change is one object, not one per date
            ev["object_id"], ev["_cont"] = join_continuations(ev, vectors, ev["object_id"].to_numpy(), ev["_cand"].to_numpy(),
                                                              self.min_cosine)
        ev["_t1"] = pd.to_datetime(ev["t1"])
        onset = ev["_t1"] == ev.groupby("object_id")["_t1"].transform("min")
        ev["_persistence"] = ev["persistence"].astype("Float64").astype(float)  # null -> NaN, skipped by median
        g = ev.groupby("object_id", sort=True)
        obj = pd.DataFrame({
            "object_id": np.asarray(list(g.groups), dtype=np.int64),
            "t0": g["t0"].min().to_numpy(), "t1": g["_t1"].min().to_numpy(),
            "t_end": ev[ev["_end"]].groupby("object_id")["_t1"].min().reindex(list(g.groups)).to_numpy("datetime64[ns]"),
            "n_patches": ev.drop_duplicates(["object_id", "row", "col"]).groupby("object_id").size().to_numpy(np.int32),
            "n_events": g.size().to_numpy(np.int32),
            "magnitude": g["magnitude"].max().to_numpy(np.float32),
            "surprise": g["surprise"].max().to_numpy(np.float32),
            "zscore": g["zscore"].max().to_numpy(np.float32),
            "persistence": _onset_median(ev, onset, "_persistence", weight="surprise"),
            "recurrence": _onset_median(ev, onset, "recurrence"),
            "candidate": g["_cand"].first().to_numpy(bool),
        })
        # how each object unfolds around its onset, which similar --objects compares (NaN without the states)
        traj = (trajectory_profiles(ev, states, obj["object_id"].to_numpy()) if states is not None
                else np.full((len(obj), len(TRAJECTORY_OFFSETS)), np.nan))
        obj[list(TRAJECTORY_COLUMNS)] = traj.astype(np.float32)
        cand = obj["candidate"].to_numpy()
        # every other object is one patch event: 0 (only candidate events join), not worth a group-by of the run
        obj.insert(obj.columns.get_loc("candidate"), "elongation", np.zeros(len(obj), np.float32))
        obj.loc[cand, "elongation"] = elongation(ev[ev["_cand"]], onset[ev["_cand"]].to_numpy(),
                                                 obj.loc[cand, "object_id"].to_numpy()).astype(np.float32)
        event_score = g["atypicality"].max().to_numpy(float) if "atypicality" in ev else g["surprise"].max().to_numpy(float)
        rarity = np.zeros(len(obj))
        score = np.zeros(len(obj))
        if cand.any():
            desc = object_descriptors(ev, vectors, obj.loc[cand, "object_id"].to_numpy())
            shape = self.shape_weight * obj.loc[cand, "elongation"].to_numpy(float)[:, None] if self.shape_weight else None
            rarity[cand] = percentile(_knn_distance(desc, self.n_neighbors, shape))
            mag = magnitude_score(obj.loc[cand, "surprise"], obj.loc[cand, "zscore"])
            score[cand] = {"rarity": rarity[cand], "magnitude": mag,
                           "combined": np.cbrt(rarity[cand] * mag * mag)}[self.by]
            if self.by == "combined" and self.event_weight > 0 and "atypicality" in ev:  # its strongest patch vs all events
                score[cand] = score[cand] ** (1 - self.event_weight) * percentile(event_score[cand]) ** self.event_weight
        transient = (obj["persistence"] == 0).to_numpy()
        score = np.where(transient, score * self.transient_weight, score)
        score = score * self.seasonal_factor(obj["recurrence"].to_numpy(float))
        # Candidates first (by score), then the other events by their own score.
        order = np.lexsort((obj["object_id"].to_numpy(), -np.where(cand, score, event_score), ~cand))
        rank = np.empty(len(obj), np.int32)
        rank[order] = np.arange(1, len(obj) + 1)
        obj["rarity"] = rarity.astype(np.float32)
        obj["atypicality"] = np.where(cand, score, 0.0).astype(np.float32)
        obj["rank"] = rank
        ev["object_rank"] = ev["object_id"].map(obj.set_index("object_id")["rank"]).to_numpy(np.int32)
        obj.insert(obj.columns.get_loc("rarity"), "cluster", _onset_type(ev, onset, obj["object_id"]))
        obj.insert(obj.columns.get_loc("rarity"), "change", "")  # in words: changescout.describe, from the pixels
        if "atypicality" in ev:  # calibrated score: how many quiet patches score as high
            # against the events whose size does not stand out: those the top of the patch ranking made candidates
            # stay in the background, or the top ``event_top`` of every run, changes or none, would read 0
            ev["false_alarm_rate"] = false_alarm_rate(ev["atypicality"], ev.loc[~stands_out, "atypicality"])
        obj["false_alarm_rate"] = (ev["false_alarm_rate"].where(onset).groupby(ev["object_id"], sort=True).min()
                                   .reindex(obj["object_id"]).to_numpy(np.float32) if "false_alarm_rate" in ev
                                   else np.full(len(obj), np.nan, np.float32))
        return ev.drop(columns=["_cand", "_end", "_cont", "_persistence", "_t1"]).iloc[np.argsort(by_vec)], obj

    def seasonal_factor(self, recurrence: np.ndarray) -> np.ndarray:
        """Score multiplier: 1 up to ``min_recurrence`` (and for NaN), down to ``1 - seasonal_weight`` at 1."""
        r = np.nan_to_num(np.asarray(recurrence, float), nan=-1.0)
        over = np.clip((r - self.min_recurrence) / max(1.0 - self.min_recurrence, 1e-12), 0.0, 1.0)
        return 1.0 - self.seasonal_weight * over


def _onset_type(ev: pd.DataFrame, onset: pd.Series, object_ids: pd.Series) -> np.ndarray:
    """Per object (rows of ``object_ids``), the ``cluster`` of its onset patch events with the largest summed
    ``surprise`` (ties: the smaller cluster id); -1 without a cluster column."""
    if "cluster" not in ev:
        return np.full(len(object_ids), -1, np.int32)
    on = ev.loc[onset.to_numpy(), ["object_id", "cluster", "surprise"]]
    weight = on.groupby(["object_id", "cluster"], sort=True)["surprise"].sum().reset_index()
    best = weight.sort_values(["object_id", "surprise", "cluster"], ascending=[True, False, True]).drop_duplicates("object_id")
    return best.set_index("object_id")["cluster"].reindex(object_ids).fillna(-1).to_numpy(np.int32)


def _onset_median(ev: pd.DataFrame, onset: pd.Series, column: str, weight: str | None = None) -> np.ndarray:
    """Per object (sorted ids), the median of ``column`` over its onset patch events, weighted by ``weight``
    (default: equal weights, the plain median), unknown values left out; NaN where the known ones carry less
    than half of the weight (recurrence: one patch of four seen a year apart does not speak for the object),
    or without the column. The patches that carry the change speak for it: on the planted synthetic series a
    thin cloud over a field that changed with its season was an object of two patches, the cloud's (persistence
    0, surprise 0.91) and the field's (3, surprise 0.50), whose plain median, 1.5, was no transient (rank 11;
    two such in the top 20 objects of seeds 0-9, rcf; one of galileo-nano's seeds 0-4)."""
    ids = np.unique(ev["object_id"].to_numpy())
    if column not in ev:
        return np.full(len(ids), np.nan, np.float32)
    on = ev.loc[onset.to_numpy(), ["object_id", column]].rename(columns={column: "v"})
    w = ev.loc[onset.to_numpy(), weight].astype(float).fillna(0.0).clip(lower=1e-6) if weight else 1.0  # (NaN: least)
    on["w"] = w
    total = on.groupby("object_id")["w"].sum()
    on = on[on["v"].notna()].sort_values(["object_id", "v"], kind="stable")
    g = on.groupby("object_id")
    share = g["w"].cumsum() / g["w"].transform("sum")  # of the known weight, up to and with each value
    upper = on[share > 0.5 + 1e-9].drop_duplicates("object_id").set_index("object_id")["v"]
    lower = on[share >= 0.5 - 1e-9].drop_duplicates("object_id").set_index("object_id")["v"]
    median = 0.5 * (lower + upper.reindex(lower.index))  # the two halves' values: one unless the weight splits evenly
    enough = g["w"].sum().reindex(median.index) >= 0.5 * total.reindex(median.index) * (1 - 1e-9)
    return median[enough.to_numpy()].reindex(ids).to_numpy(np.float32)


def lead_events(events: pd.DataFrame, objects: pd.DataFrame) -> pd.DataFrame:
    """The patch event that stands for each object (indexed by ``object_id``): its most atypical onset patch
    (one of its ``t1``; an episode's later patches are how it ended, at other dates)."""
    onset_t1 = events["object_id"].map(objects.set_index("object_id")["t1"])
    onset = events[pd.to_datetime(events["t1"]).to_numpy() == pd.to_datetime(onset_t1).to_numpy()]
    return onset.sort_values(["atypicality", "event_id"], ascending=[False, True]).drop_duplicates("object_id").set_index("object_id")


def object_geometries(events: gpd.GeoDataFrame, objects: pd.DataFrame) -> gpd.GeoDataFrame:
    """The objects table with dissolved polygons (series CRS) and their area in hectares."""
    ids = events["object_id"].to_numpy()
    first = pd.Series(events.geometry.to_numpy(), index=ids)
    first = first[~first.index.duplicated()]  # most objects are one patch: their polygon as it is
    shared = pd.Index(ids).duplicated(keep=False)
    merged = events[shared].groupby("object_id")["geometry"].agg(lambda s: shapely.union_all(s.to_numpy()))
    first.loc[merged.index] = merged.to_numpy()
    gdf = gpd.GeoDataFrame(objects.copy(), geometry=first.reindex(objects["object_id"]).to_numpy(), crs=events.crs)
    gdf["area_ha"] = _area_ha(gdf)
    gdf["event_id"] = (lead_events(events, objects)["event_id"].reindex(objects["object_id"]).to_numpy()
                       if {"event_id", "atypicality"} <= set(events.columns) else "")  # (events not ranked yet: none)
    return gdf[list(OBJECT_SCHEMA) + ["geometry"]].sort_values("rank").reset_index(drop=True)


def _area_ha(gdf: gpd.GeoDataFrame) -> np.ndarray:
    """Ground area in hectares: measured in the table's CRS where it keeps areas (UTM: within 0.2 %), else in
    an equal-area projection (geographic CRSs; Web Mercator, whose areas at 43.6 degrees N are 1.9 times
    too large)."""
    if not on_earth(gdf.crs):  # a pixel grid (image pairs)
        return np.full(len(gdf), np.nan)
    if gdf.crs.is_geographic or not _keeps_area(gdf.crs, gdf.total_bounds):
        return gdf.geometry.to_crs("+proj=cea +ellps=WGS84").area.to_numpy() / 1e4
    factor = gdf.crs.axis_info[0].unit_conversion_factor if gdf.crs.axis_info else 1.0
    return gdf.geometry.area.to_numpy() * factor**2 / 1e4


def _keeps_area(crs, bounds, tolerance: float = 0.01) -> bool:
    """Whether the projected ``crs`` scales areas by less than ``tolerance`` at the corners and centre of
    ``bounds`` (pyproj's projection factors; False where they are not known)."""
    from pyproj import Proj, Transformer

    if not np.isfinite(bounds).all():
        return True  # an empty table: nothing to measure
    x0, y0, x1, y1 = bounds
    xs, ys = np.array([x0, x0, x1, x1, (x0 + x1) / 2]), np.array([y0, y1, y0, y1, (y0 + y1) / 2])
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    try:
        scale = np.asarray(Proj(crs).get_factors(lon, lat).areal_scale, float)
    except Exception:  # a projection without factors: measure on the ellipsoid
        return False
    return bool(np.isfinite(scale).all() and (np.abs(scale - 1) <= tolerance).all())


def write_objects(objects: gpd.GeoDataFrame, path) -> None:
    """Write the objects table as GeoParquet, atomically, with its column descriptions in the metadata."""
    write_parquet(objects, path, schema_metadata(OBJECT_SCHEMA))


def read_objects(path) -> gpd.GeoDataFrame:
    """The objects table of a run directory (or file), most atypical first."""
    path = Path(path)
    if path.is_dir():
        path = path / "objects.parquet"
    if not path.exists():
        raise missing_output("no objects table here", path)
    try:
        table = gpd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow's and geopandas' errors for a file cut short or of another kind
        raise damaged_output(path, f"cannot read the objects table ({exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise damaged_output(path, f"not a changescout objects table: columns {missing} are missing")
    if table.crs is None:  # (every run writes its events' CRS, a pixel grid's too)
        raise damaged_output(path, "the objects table has no CRS")
    if "false_alarm_rate" not in table.columns:  # tables before 0.3.5 lack it: unknown
        table["false_alarm_rate"] = np.full(len(table), np.nan, np.float32)
    for c in TRAJECTORY_COLUMNS:  # and before 0.3.16 the trajectories
        if c not in table.columns:
            table[c] = np.full(len(table), np.nan, np.float32)
    return table.sort_values("rank").reset_index(drop=True)


#: The columns of :data:`OBJECT_SCHEMA` that every objects table has had since they were written (0.3.0):
#: read_objects checks them (and fills ``false_alarm_rate``, added in 0.3.5).
REQUIRED_COLUMNS = ("object_id", "t0", "t1", "n_patches", "candidate", "atypicality", "rank", "geometry")
