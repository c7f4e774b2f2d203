"""The ``synthetic`` benchmark: the whole pipeline on series with planted changes, scored against their truth.

Per series: AUROC and AP of atypicality over patch events (clouds are negatives), the rare planted objects
among the top 10 objects (recall@10) and patch events, clouds among the top 20, the adjusted Rand index of the
change clusters against the planted types (positive events only), and similar-change search (precision@5 of
common types, the other instance of a rare type within the top 10), the query's own object excluded.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from ..change import Comparison, compute_changes
from ..cube import grid_of
from ..embed import embed_cube
from ..objects import TRAJECTORY_COLUMNS, change_states, object_descriptors
from ..search import SimilarChangeIndex, rank_augmented
from ..spectral import spectral_scores
from ..tiling import PatchGrid
from .planted import label_events, label_objects, planted_object_scores, planted_scores

BOUCONNE = "data/s2_timeseries_bouconne/2018_3A_Theia_Bouconne.tif"
BOUCONNE_DATES = "2018-04-29,2018-05-13,2018-07-08,2018-08-15,2018-09-15,2018-10-15,2018-11-15".split(",")
BOUCONNE_BANDS = "B02,B03,B04,B08,B05,B06,B07,B8A,B11,B12".split(",")


def embed_changes(cube, config) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """The pipeline's stages up to the changes, in memory: ``(events, vectors, states, search)`` of ``cube``
    under ``config`` (:func:`changescout.pipeline.prepare_cube`'s screens, co-registration and normalisation,
    embeddings, change vectors and their spectral scores, the states before and after each change, and the
    vectors that similar-change search compares)."""
    from ..pipeline import _build_encoder, prepare_cube

    cube, _ = prepare_cube(cube, config, log=lambda line: None)
    pg = PatchGrid(grid_of(cube), config.patch_size)
    with tempfile.TemporaryDirectory() as tmp:
        ds = embed_cube(cube, _build_encoder(config), pg, Path(tmp) / "e.zarr", "bench")
        events, vectors, search = compute_changes(ds, Comparison.parse(config.compare, min_clear=config.min_clear),
                                                  search=True)
        events["event_id"] = events["vec"].astype(str)
        events["spectral"] = spectral_scores(cube, events, config.patch_size)  # (as the pipeline's changes stage)
        states = change_states(ds, events, len(vectors))
    return events, vectors, states, search


def evaluate(cube, truth, seed: int, config=None, encoder: str = "rcf") -> dict:
    from ..pipeline import RunConfig, rank_events

    config = config or RunConfig(source="planted", seed=seed, encoder=encoder)
    t = time.perf_counter()
    events, vectors, states, search = embed_changes(cube, config)
    ranked, clusters, objects = rank_events(events, vectors, config, states)
    seconds = time.perf_counter() - t
    lab = label_events(ranked, truth, config.patch_size)
    scores = planted_scores(lab)
    rare = truth.objects.loc[truth.objects["kind"] == "rare", "object_id"].to_numpy()
    scores.update(similar_scores(lab, search, rare), seconds=round(seconds, 1), n_clusters=int(len(clusters)))
    objs = label_objects(lab, objects)
    scores.update(planted_object_scores(objs, truth))
    scores.update(similar_object_scores(lab, objs, search, rare))
    best = lab[lab["label"] == 1].groupby("truth_object")["rank"].min()
    scores["best_rank_per_object"] = {int(k): int(v) for k, v in best.items()}
    pos = lab[lab["label"] == 1]
    scores["cluster_ari"] = round(float(adjusted_rand_score(pos["truth_type"], pos["cluster"])), 3) if len(pos) else None
    return scores


def search_scores(table: pd.DataFrame, keys: np.ndarray, descriptors: np.ndarray, augmented: bool = False,
                  profiles: np.ndarray | None = None, rare_objects=(), shapes: np.ndarray | None = None
                  ) -> tuple[float | None, dict, dict]:
    """Similar-change search scored against the planted truth, one query per planted object (its best-ranked
    row), the rows of the query's own planted object excluded: mean precision@5 of common types (same planted
    type among the top 5); per rare object, whether another instance of its type is in the top 10; and where
    the top 5 of common queries come from: precision@5 per type and the share of neighbours of the same
    planted type, of another planted type, and unplanted (the background's own changes, clouds included), of
    which the background's own changes of the query's type (``truth_kind == "seasonal"``: a crop field of a
    synthetic scene harvested in its season, :mod:`changescout.evaluate.planted`); ``p_at_5_with_background``
    counts those as hits too. The rare objects ``rare_objects`` names (all of the truth's) count as not found
    where no row of theirs can be a query (no positive row in ``table``: a rare object that made no candidate
    object was left out of the count, which read 6 of 7 where 6 of 8 were found; a review).

    ``table`` rows (patch events or change objects) align with ``keys`` and ``descriptors``; it needs
    ``label`` (1 = planted change), ``truth_object``, ``truth_type``, ``truth_kind`` and ``rank``. With
    ``augmented``, rows are compared as ``changescout similar --objects`` compares objects
    (:func:`changescout.search.rank_augmented`), else through the run's patch index."""
    index = None if augmented else SimilarChangeIndex().fit(descriptors, keys)

    def nearest(row: int, own_rows: np.ndarray) -> np.ndarray:
        if augmented:
            return keys[rank_augmented(descriptors, descriptors[row], own=row, exclude=own_rows, profiles=profiles,
                                       query_profile=None if profiles is None else profiles[row], shapes=shapes,
                                       query_shape=None if shapes is None else shapes[row])[0][:10]]
        return index.search(descriptors[row][None], k=10, exclude=keys[own_rows]).keys[0]
    by_key = table.set_index(pd.Index(keys))
    pos = table[table["label"] == 1]
    rare_found, common = {int(o): False for o in rare_objects}, []
    for obj, group in pos.groupby("truth_object"):
        query = group.sort_values("rank").iloc[0]
        own = np.flatnonzero((table["truth_object"] == obj).to_numpy())
        hits = by_key.loc[nearest(table.index.get_loc(query.name), own)]
        planted = hits["label"] == 1
        same = planted & (hits["truth_type"] == query["truth_type"])
        seasonal = (hits["truth_kind"] == "seasonal") & (hits["truth_type"] == query["truth_type"])
        if query["truth_kind"] == "common":
            top = slice(0, 5)
            common.append({"type": query["truth_type"], "same type": float(same.iloc[top].mean()),
                           "other planted type": float((planted & ~same).iloc[top].mean()),
                           "unplanted": float((~planted).iloc[top].mean()),
                           "background of the same type": float(seasonal.iloc[top].mean())})
        else:
            rare_found[int(obj)] = bool(same.any())
    if not common:
        return None, rare_found, {}
    common = pd.DataFrame(common)
    common["with background"] = common["same type"] + common["background of the same type"]
    detail = {"p_at_5_by_type": common.groupby("type")["same type"].mean().round(3).to_dict(),
              "neighbours": common[["same type", "other planted type", "unplanted",
                                    "background of the same type"]].mean().round(3).to_dict(),
              "p_at_5_with_background": round(float(common["with background"].mean()), 3),
              "p_at_5_with_background_by_type": common.groupby("type")["with background"].mean().round(3).to_dict()}
    return round(float(common["same type"].mean()), 3), rare_found, detail


def similar_scores(lab: pd.DataFrame, vectors: np.ndarray, rare_objects=()) -> dict:
    """Search between patch events (``vectors``: what the search compares in a run, :func:`changescout.change.search_vectors`)."""
    keys = lab["vec"].to_numpy()
    p5, rare, detail = search_scores(lab, keys, vectors[keys], rare_objects=rare_objects)
    return {"similar_common_p_at_5": p5, "similar_rare_other_in_top10": rare, "similar_common_detail": detail}


def similar_object_scores(lab: pd.DataFrame, objs: pd.DataFrame, vectors: np.ndarray, rare_objects=()) -> dict:
    """Search between change objects as ``changescout similar --objects`` searches them: the candidate objects,
    each the surprise-weighted mean of its onset patches' ``vectors``, compared after augmentation, less the
    distance of their trajectories (the objects table's ``trajectory_*`` columns, as objects.parquet holds them)
    and the elongation they lack against the query's (``elongation``)."""
    cand = objs[objs["candidate"]].reset_index(drop=True)
    cand["label"] = (cand["truth_object"] >= 0).astype(int)
    keys = cand["object_id"].to_numpy()
    profiles = cand[list(TRAJECTORY_COLUMNS)].to_numpy(np.float64)
    p5, rare, detail = search_scores(cand, keys, object_descriptors(lab, vectors, keys), augmented=True, profiles=profiles,
                                     rare_objects=rare_objects, shapes=cand["elongation"].to_numpy(np.float64))
    return {"objects_similar_common_p_at_5": p5, "objects_similar_rare_other_in_top10": rare,
            "objects_similar_common_detail": detail}


def series(seed: int, background: str = "synthetic", shared: str | Path | None = None, cloud_dates: int | None = None):
    """``(cube, truth)``: the synthetic series of ``seed``, or its changes planted into the Bouconne series;
    planted clouds last ``cloud_dates`` dates (1 by default)."""
    from ..sources.synthetic import make_series, plant_changes

    if background == "synthetic":
        return make_series(seed=seed, cloud_dates=cloud_dates)
    from ..sources import open_series

    base = open_series(str(Path(shared) / BOUCONNE), kind="stacked", dates=BOUCONNE_DATES, bands=BOUCONNE_BANDS)
    return plant_changes(base, seed=seed, cloud_dates=cloud_dates)
