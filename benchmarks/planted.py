"""Detection quality on series with planted changes (synthetic and real-background Bouconne).

Positives: every planted change but clouds, where it covers at least 25 % of the patch, or half of its best
patch's cover when that is under 50 % (a road covers 8-14 % of each patch it crosses;
changescout.evaluate.planted); negatives: everything else, clouds included; patches marginally covered by a
planted change are left out. Reports per seed: AUROC and AP of
atypicality, the rare planted objects with an event in the top 10, clouds in the top 20, and similar-change
search: precision@5 of common types and whether the other instance of a rare type is in the top 10, the
query's own object excluded. Adjusted Rand index of the clusters against the planted types. The same measures
on change objects (objects.py: the analyst's list): rare planted objects among the top 10 objects, clouds
among the top 20 objects, similar search between objects, whose precision@5 the table also gives per type
with where the wrong neighbours come from (another planted type, or the background's own changes; the JSON
has the same breakdown for patch events), and again counting the synthetic background's own harvests (crop
fields going bare in their season, which the planted truth does not list) as harvests.

    python benchmarks/planted.py --seeds 0,1,2,3,4 [--encoder rcf] [--shared ../shared] [--out benchmarks/results]

``--cloud-dates 2``: every planted cloud lasts two dates (as on composites of overlapping periods);
``--rise none``: the cloud screen without its blue test (quality.lasting_spikes), to measure what it does.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import pandas as pd

from changescout.evaluate.synthetic import evaluate, series


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--encoder", default="rcf", help="rcf (default), galileo-nano (needs $CHANGESCOUT_WEIGHTS_DIR), ...")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--cloud-dates", type=int, default=None, help="dates each planted cloud lasts: 1 (default) or 2")
    ap.add_argument("--rise", default=None, help="the cloud screen's blue-test margin; 'none' turns the test off")
    args = ap.parse_args()
    if args.rise is not None:
        import changescout.quality

        rise = None if args.rise.lower() == "none" else float(args.rise)
        changescout.quality.screen_haze = functools.partial(changescout.quality.screen_haze, rise=rise)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    bouconne = Path(args.shared) / "data/s2_timeseries_bouconne/2018_3A_Theia_Bouconne.tif"
    if not bouconne.exists():  # the real-background rows are half the benchmark: say they are left out
        print(f"note: {bouconne} not found: the Bouconne (real background) series are left out; give --shared",
              file=sys.stderr)
    for seed in seeds:
        cube, truth = series(seed, cloud_dates=args.cloud_dates)
        rows.append({"background": "synthetic", "seed": seed, **evaluate(cube, truth, seed, encoder=args.encoder)})
        print(json.dumps(rows[-1], default=str))
        if bouconne.exists():
            cube, truth = series(seed, "bouconne", args.shared, cloud_dates=args.cloud_dates)
            rows.append({"background": "bouconne", "seed": seed, **evaluate(cube, truth, seed, encoder=args.encoder)})
            print(json.dumps(rows[-1], default=str))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "planted" if args.encoder == "rcf" else f"planted_{args.encoder}"
    stem += "_clouds2" if args.cloud_dates == 2 else ""
    stem += f"_rise-{args.rise}" if args.rise is not None else ""
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    skip = ("best_rank_per_object", "similar_rare_other_in_top10", "rare_missing_top10", "objects_best_rank",
            "objects_rare_missing_top10", "objects_similar_rare_other_in_top10", "similar_common_detail",
            "objects_similar_common_detail")
    found = lambda d: f"{sum(d.values())}/{len(d)}"  # noqa: E731
    table = pd.DataFrame([{k: (len(v) if isinstance(v, list) else v) for k, v in r.items() if k not in skip}
                          | {"rare_other_found": found(r["similar_rare_other_in_top10"]),
                             "objects_rare_other_found": found(r["objects_similar_rare_other_in_top10"])}
                          | search_detail(r["objects_similar_common_detail"])
                          for r in rows])
    (out / f"{stem}.md").write_text(table.to_markdown(index=False) + "\n")
    print(table.to_string(index=False))


def search_detail(detail: dict) -> dict:
    """Objects' similar search, common queries: precision@5 per type, the share of their top 5 that are
    another planted type or unplanted (the background's own changes), and precision@5 counting the background's
    own harvests as harvests (synthetic series only: changescout.evaluate.planted)."""
    return ({f"objects_p_at_5_{t}": v for t, v in detail.get("p_at_5_by_type", {}).items()}
            | {"objects_top5_other_type": detail.get("neighbours", {}).get("other planted type"),
               "objects_top5_unplanted": detail.get("neighbours", {}).get("unplanted"),
               "objects_p_at_5_with_background": detail.get("p_at_5_with_background")})


if __name__ == "__main__":
    main()
