"""Detection quality on series with planted changes (synthetic and real-background Bouconne).

Positives: every planted change but clouds (patch coverage >= 25 %); negatives: everything else, clouds
included; patches marginally covered by a planted change are left out. Reports per seed: AUROC and AP of
atypicality, the rare planted objects with an event in the top 10, clouds in the top 20, and similar-change
search: precision@5 of common types and whether the other instance of a rare type is in the top 10, the
query's own object excluded. The same measures on change objects (objects.py: the analyst's list): rare
planted objects among the top 10 objects, clouds among the top 20 objects, similar search between objects.

    python benchmarks/planted.py --seeds 0,1,2,3,4 [--encoder rcf] [--shared ../shared] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from changescout.change import Comparison, compute_changes
from changescout.cube import grid_of
from changescout.embed import embed_cube
from changescout.evaluate.planted import label_events, label_objects, planted_object_scores, planted_scores
from changescout.objects import object_descriptors
from changescout.pipeline import RunConfig, _build_encoder, rank_events, screen_clouds
from changescout.search import SimilarChangeIndex
from changescout.sources.synthetic import make_series, plant_changes
from changescout.tiling import PatchGrid

BOUCONNE_DATES = "2018-04-29,2018-05-13,2018-07-08,2018-08-15,2018-09-15,2018-10-15,2018-11-15".split(",")
BOUCONNE_BANDS = "B02,B03,B04,B08,B05,B06,B07,B8A,B11,B12".split(",")


def evaluate(cube, truth, seed: int, config: RunConfig | None = None, encoder: str = "rcf") -> dict:
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--encoder", default="rcf", help="rcf (default), galileo-nano (needs $CHANGESCOUT_WEIGHTS_DIR), ...")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    bouconne = Path(args.shared) / "data/s2_timeseries_bouconne/2018_3A_Theia_Bouconne.tif"
    for seed in seeds:
        cube, truth = make_series(seed=seed)
        rows.append({"background": "synthetic", "seed": seed, **evaluate(cube, truth, seed, encoder=args.encoder)})
        print(json.dumps(rows[-1], default=str))
        if bouconne.exists():
            from changescout.sources import open_series

            base = open_series(str(bouconne), kind="stacked", dates=BOUCONNE_DATES, bands=BOUCONNE_BANDS)
            cube, truth = plant_changes(base, seed=seed)
            rows.append({"background": "bouconne", "seed": seed, **evaluate(cube, truth, seed, encoder=args.encoder)})
            print(json.dumps(rows[-1], default=str))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "planted" if args.encoder == "rcf" else f"planted_{args.encoder}"
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    skip = ("best_rank_per_object", "similar_rare_other_in_top10", "rare_missing_top10", "objects_best_rank",
            "objects_rare_missing_top10", "objects_similar_rare_other_in_top10")
    found = lambda d: f"{sum(d.values())}/{len(d)}"  # noqa: E731
    table = pd.DataFrame([{k: (len(v) if isinstance(v, list) else v) for k, v in r.items() if k not in skip}
                          | {"rare_other_found": found(r["similar_rare_other_in_top10"]),
                             "objects_rare_other_found": found(r["objects_similar_rare_other_in_top10"])}
                          for r in rows])
    (out / f"{stem}.md").write_text(table.to_markdown(index=False) + "\n")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
