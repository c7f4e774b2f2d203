"""Stability of the analyst's ranking when only the random seed changes.

One series (same data, same planted truth) goes through the stages of :func:`..synthetic.evaluate`
(screen_clouds, embed_cube, compute_changes, rank_events) with several pipeline seeds. Two things take a seed:
the rcf encoder (its fit sample and random filters) and the clustering (sample, PCA, Gaussian mixture), whose
clusters and PCA space feed the event rarity. ``vary`` says which of them follows the seed:

* ``all``: ``RunConfig(seed=s)``, what a user changing ``--seed`` gets;
* ``encoder``: the encoder seed is ``s``, the clustering seed stays the first seed;
* ``ranking``: the clustering seed is ``s``, the encoder seed stays the first seed (the embeddings are shared).

Encoders without a seed (pretrained ones such as galileo-nano) embed once; only the clustering seed varies.

For each pair of seeds: overlap of the top-k patch events (matched by ``row, col, t0, t1``), Spearman
correlation of ``atypicality`` over all events, overlap of the top change objects (matched when they share
their date pair ``t0, t1`` and their patch sets have IoU >= ``min_iou``, one-to-one). Per seed: AUROC/AP of
atypicality and the rare planted objects among the top 10 events and top 10 objects (:mod:`.planted`).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr

from ..errors import ConfigError
from .planted import label_events, label_objects, planted_object_scores, planted_scores
from .synthetic import embed_changes

KEY = ["row", "col", "t0", "t1"]
VARY = ("all", "encoder", "ranking")
#: Pair measures, in report order.
PAIR_MEASURES = ("events_top10_overlap", "events_top20_overlap", "atypicality_spearman", "objects_top10_overlap")
#: Per-run scores whose spread over seeds is reported.
RUN_SCORES = ("auroc", "ap", "rare_in_top10", "objects_rare_in_top10", "n_clusters")


def _config(encoder: str, encoder_seed: int | None, cluster_seed: int, base=None):
    from ..pipeline import RunConfig

    base = base or RunConfig(source="planted", encoder=encoder)
    options = dict(base.encoder_options)
    if encoder_seed is not None:
        options["seed"] = encoder_seed  # _build_encoder lets encoder_options override config.seed
    return RunConfig.from_dict({**base.to_dict(), "encoder": encoder, "seed": cluster_seed, "encoder_options": options})


def run_scores(ranked: pd.DataFrame, objects: pd.DataFrame, truth, patch_size: int) -> dict:
    """AUROC, AP, rare planted objects among the top 10 events and among the top 10 objects (counts, of
    ``n_rare``), number of change clusters."""
    lab = label_events(ranked, truth, patch_size)
    s = planted_scores(lab, truth=truth)
    o = planted_object_scores(label_objects(lab, objects), truth)
    return {"auroc": s["auroc"], "ap": s["ap"], "rare_in_top10": len(s["rare_in_top10"]),
            "objects_rare_in_top10": len(o["objects_rare_in_top10"]), "n_rare": len(s["rare_in_top10"]) + len(s["rare_missing_top10"]),
            "n_clusters": int(ranked["cluster"].nunique())}


def top_overlap(a: pd.DataFrame, b: pd.DataFrame, k: int) -> float:
    """Fraction of the top ``k`` events (by ``rank``) of ``a`` that are in the top ``k`` of ``b`` (same ``row, col, t0, t1``)."""
    ta, tb = a.nsmallest(k, "rank")[KEY], b.nsmallest(k, "rank")[KEY]
    k = min(len(ta), len(tb))
    return len(ta.merge(tb, on=KEY)) / k if k else float("nan")


def atypicality_correlation(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Spearman correlation of ``atypicality`` over the events both tables hold (matched by ``row, col, t0, t1``)."""
    both = a[KEY + ["atypicality"]].merge(b[KEY + ["atypicality"]], on=KEY, suffixes=("_a", "_b"))
    if len(both) < 2:
        return float("nan")
    return float(spearmanr(both["atypicality_a"], both["atypicality_b"]).statistic)


def _patch_sets(events: pd.DataFrame, ids) -> dict:
    sel = events[events["object_id"].isin(ids)]
    return {o: set(zip(g["row"].tolist(), g["col"].tolist())) for o, g in sel.groupby("object_id")}


def match_objects(events_a: pd.DataFrame, objects_a: pd.DataFrame, events_b: pd.DataFrame, objects_b: pd.DataFrame,
                  top: int = 10, min_iou: float = 0.5) -> pd.DataFrame:
    """One-to-one matches between the top ``top`` objects (by ``rank``) of two runs.

    Objects (``object_id``, ``t0``, ``t1``, ``rank``) match when they share their date pair ``(t0, t1)`` and the
    sets of patches ``(row, col)`` of their events (``object_id`` in ``events_*``) have an IoU >= ``min_iou``;
    among several candidates the assignment maximising the total IoU is kept. Returns ``object_id_a``,
    ``object_id_b``, ``iou``."""
    ta, tb = objects_a.nsmallest(top, "rank"), objects_b.nsmallest(top, "rank")
    pairs = ta[["object_id", "t0", "t1"]].merge(tb[["object_id", "t0", "t1"]], on=["t0", "t1"], suffixes=("_a", "_b"))
    empty = pd.DataFrame({"object_id_a": pd.Series(dtype="int64"), "object_id_b": pd.Series(dtype="int64"),
                          "iou": pd.Series(dtype="float64")})
    if pairs.empty:
        return empty
    pa, pb = _patch_sets(events_a, ta["object_id"]), _patch_sets(events_b, tb["object_id"])
    iou = [len(pa.get(i, set()) & pb.get(j, set())) / max(len(pa.get(i, set()) | pb.get(j, set())), 1)
           for i, j in zip(pairs["object_id_a"], pairs["object_id_b"])]
    pairs = pairs.assign(iou=iou)
    pairs = pairs[pairs["iou"] >= min_iou]
    if pairs.empty:
        return empty
    ia, ua = pd.factorize(pairs["object_id_a"])
    ib, ub = pd.factorize(pairs["object_id_b"])
    m = np.zeros((len(ua), len(ub)))
    m[ia, ib] = pairs["iou"].to_numpy()
    r, c = linear_sum_assignment(m, maximize=True)
    keep = m[r, c] >= min_iou
    return pd.DataFrame({"object_id_a": ua.to_numpy()[r[keep]].astype(np.int64),
                         "object_id_b": ub.to_numpy()[c[keep]].astype(np.int64), "iou": m[r, c][keep]})


def object_overlap(events_a, objects_a, events_b, objects_b, top: int = 10, min_iou: float = 0.5) -> float:
    """Fraction of the top ``top`` objects of the two runs matched one-to-one (:func:`match_objects`)."""
    n = min(top, len(objects_a), len(objects_b))
    return len(match_objects(events_a, objects_a, events_b, objects_b, top, min_iou)) / n if n else float("nan")


def compare_runs(a: tuple[pd.DataFrame, pd.DataFrame], b: tuple[pd.DataFrame, pd.DataFrame], min_iou: float = 0.5) -> dict:
    """The pair measures (:data:`PAIR_MEASURES`) between two ``(ranked events, objects)`` runs."""
    (ea, oa), (eb, ob) = a, b
    return {"events_top10_overlap": top_overlap(ea, eb, 10), "events_top20_overlap": top_overlap(ea, eb, 20),
            "atypicality_spearman": atypicality_correlation(ea, eb),
            "objects_top10_overlap": object_overlap(ea, oa, eb, ob, 10, min_iou)}


class SeedRuns:
    """The stages on one series, cached by (encoder seed, clustering seed): modes share their runs.

    ``encoder_seeded`` is False for encoders that take no seed; their embeddings are computed once."""

    def __init__(self, cube, truth, encoder: str = "rcf", config=None):
        self.cube, self.truth, self.encoder, self.base = cube, truth, encoder, config
        self.encoder_seeded = encoder == "rcf"
        self._changes: dict = {}
        self._runs: dict = {}

    def config(self, encoder_seed: int, cluster_seed: int):
        return _config(self.encoder, encoder_seed if self.encoder_seeded else None, cluster_seed, self.base)

    def run(self, encoder_seed: int, cluster_seed: int) -> dict:
        """``{"ranked", "objects", "scores"}`` of one run (scores carry the embed/rank seconds)."""
        key = (encoder_seed if self.encoder_seeded else None, cluster_seed)
        if key not in self._runs:
            config = self.config(encoder_seed, cluster_seed)
            embed_seconds = 0.0
            if key[0] not in self._changes:
                t = time.perf_counter()
                self._changes[key[0]] = embed_changes(self.cube, config)
                embed_seconds = time.perf_counter() - t
            t = time.perf_counter()
            from ..pipeline import rank_events

            events, vectors, states, _ = self._changes[key[0]]
            ranked, _, objects = rank_events(events, vectors, config, states)
            scores = run_scores(ranked, objects, self.truth, config.patch_size)
            scores.update(embed_seconds=round(embed_seconds, 1), rank_seconds=round(time.perf_counter() - t, 1))
            self._runs[key] = {"ranked": ranked, "objects": objects, "scores": scores}
        return self._runs[key]


def _seed_pair(vary: str, s: int, first: int) -> tuple[int, int]:
    return {"all": (s, s), "encoder": (s, first), "ranking": (first, s)}[vary]


def stability(cube, truth, seeds, encoder: str = "rcf", vary: str = "all", config=None, runs: SeedRuns | None = None,
              min_iou: float = 0.5) -> dict:
    """Stability of the ranking of ``cube`` over ``seeds`` (see the module docstring).

    Returns ``{"vary", "encoder", "encoder_seeded", "seeds", "runs": [per seed scores], "pairs": [per pair
    measures], "summary": {measure: {"mean", "min"}}, "spread": {score: {"min", "max"}}}``. Pass ``runs`` (a
    :class:`SeedRuns` of the same series) to share runs between calls."""
    if vary not in VARY:
        raise ConfigError(f"vary must be one of {VARY}, got {vary!r}")
    seeds = [int(s) for s in seeds]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"stability needs at least two distinct seeds, got {seeds}")
    runs = runs or SeedRuns(cube, truth, encoder, config)
    done = {s: runs.run(*_seed_pair(vary, s, seeds[0])) for s in seeds}
    per_run = [{"seed": s, **done[s]["scores"]} for s in seeds]
    pairs = [{"seed_a": a, "seed_b": b,
              **compare_runs((done[a]["ranked"], done[a]["objects"]), (done[b]["ranked"], done[b]["objects"]), min_iou)}
             for a, b in itertools.combinations(seeds, 2)]
    pf, rf = pd.DataFrame(pairs), pd.DataFrame(per_run)
    return {
        "vary": vary, "encoder": encoder, "encoder_seeded": runs.encoder_seeded, "seeds": seeds,
        "runs": per_run, "pairs": pairs,
        "summary": {m: {"mean": float(pf[m].mean()), "min": float(pf[m].min())} for m in PAIR_MEASURES},
        "spread": {m: {"min": float(rf[m].min()), "max": float(rf[m].max())} for m in RUN_SCORES},
    }
