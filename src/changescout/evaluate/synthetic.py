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
from ..objects import object_descriptors
from ..search import SimilarChangeIndex
from ..tiling import PatchGrid
from .planted import label_events, label_objects, planted_object_scores, planted_scores

BOUCONNE = "data/s2_timeseries_bouconne/2018_3A_Theia_Bouconne.tif"
BOUCONNE_DATES = "2018-04-29,2018-05-13,2018-07-08,2018-08-15,2018-09-15,2018-10-15,2018-11-15".split(",")
BOUCONNE_BANDS = "B02,B03,B04,B08,B05,B06,B07,B8A,B11,B12".split(",")


def evaluate(cube, truth, seed: int, config=None, encoder: str = "rcf") -> dict:
    from ..pipeline import RunConfig, _build_encoder, rank_events, screen_clouds

    config = config or RunConfig(source="planted", seed=seed, encoder=encoder)
    cube = screen_clouds(cube, config.cloud_screen)
    pg = PatchGrid(grid_of(cube), config.patch_size)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ds = embed_cube(cube, _build_encoder(config), pg, Path(tmp) / "e.zarr", "bench")
        events, vectors = compute_changes(ds, Comparison.parse(config.compare, min_clear=config.min_clear))
        events["event_id"] = events["vec"].astype(str)
        ranked, clusters, objects = rank_events(events, vectors, config)
        seconds = time.perf_counter() - t
    lab = label_events(ranked, truth, config.patch_size)
    scores = planted_scores(lab)
    scores.update(similar_scores(lab, vectors), seconds=round(seconds, 1), n_clusters=int(len(clusters)))
    objs = label_objects(lab, objects)
    scores.update(planted_object_scores(objs, truth))
    scores.update(similar_object_scores(lab, objs, vectors))
    best = lab[lab["label"] == 1].groupby("truth_object")["rank"].min()
    scores["best_rank_per_object"] = {int(k): int(v) for k, v in best.items()}
    pos = lab[lab["label"] == 1]
    scores["cluster_ari"] = round(float(adjusted_rand_score(pos["truth_type"], pos["cluster"])), 3) if len(pos) else None
    return scores


def similar_scores(lab: pd.DataFrame, vectors: np.ndarray) -> dict:
    index = SimilarChangeIndex().fit(vectors, lab["vec"].to_numpy())
    pos = lab[lab["label"] == 1]
    common_p5, rare_found = [], {}
    for obj, group in pos.groupby("truth_object"):
        query = group.sort_values("rank").iloc[0]
        own = lab.loc[lab["truth_object"] == obj, "vec"].to_numpy()
        res = index.search(vectors[int(query["vec"])][None], k=10, exclude=own)
        hits = lab.set_index("vec").loc[res.keys[0]]
        if query["truth_kind"] == "common":
            top5 = hits.head(5)
            common_p5.append(float(((top5["label"] == 1) & (top5["truth_type"] == query["truth_type"])).mean()))
        else:
            others = set(pos.loc[(pos["truth_type"] == query["truth_type"]) & (pos["truth_object"] != obj), "truth_object"])
            rare_found[int(obj)] = bool(others & set(hits["truth_object"]))
    return {"similar_common_p_at_5": round(float(np.mean(common_p5)), 3) if common_p5 else None,
            "similar_rare_other_in_top10": rare_found}


def similar_object_scores(lab: pd.DataFrame, objs: pd.DataFrame, vectors: np.ndarray) -> dict:
    """Similar-change search on objects (descriptor: surprise-weighted mean change vector), one query per planted
    object (its best-ranked object), the query's own planted object excluded."""
    cand = objs[objs["candidate"]].reset_index(drop=True)
    index = SimilarChangeIndex().fit(object_descriptors(lab, vectors, cand["object_id"].to_numpy()), cand["object_id"].to_numpy())
    desc = dict(zip(cand["object_id"], object_descriptors(lab, vectors, cand["object_id"].to_numpy())))
    by_id = cand.set_index("object_id")
    p5, rare_found = [], {}
    for obj, group in cand[cand["truth_object"] >= 0].sort_values("rank").groupby("truth_object"):
        query = group.iloc[0]
        own = cand.loc[cand["truth_object"] == obj, "object_id"].to_numpy()
        hits = by_id.loc[index.search(desc[query["object_id"]][None], k=10, exclude=own).keys[0]]
        if query["truth_kind"] == "common":
            p5.append(float((hits.head(5)["truth_type"] == query["truth_type"]).mean()))
        else:
            rare_found[int(obj)] = bool((hits["truth_type"] == query["truth_type"]).any())
    return {"objects_similar_common_p_at_5": round(float(np.mean(p5)), 3) if p5 else None,
            "objects_similar_rare_other_in_top10": rare_found}


def series(seed: int, background: str = "synthetic", shared: str | Path | None = None):
    """``(cube, truth)``: the synthetic series of ``seed``, or its changes planted into the Bouconne series."""
    from ..sources.synthetic import make_series, plant_changes

    if background == "synthetic":
        return make_series(seed=seed)
    from ..sources import open_series

    base = open_series(str(Path(shared) / BOUCONNE), kind="stacked", dates=BOUCONNE_DATES, bands=BOUCONNE_BANDS)
    return plant_changes(base, seed=seed)
