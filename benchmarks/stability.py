"""Stability of the ranking across pipeline seeds, on one series with planted changes.

The same series (synthetic background seed ``--series-seed``, and the same planted changes in the Bouconne
series when ``--shared`` holds it) runs with pipeline seeds ``--seeds``. The rcf encoder (random filters and
fit sample) and the clustering (sample, PCA, Gaussian mixture: the event rarity) take the seed; ``--vary``
says which follow it: ``all`` (RunConfig(seed=s), what changing ``--seed`` does), ``encoder`` (clustering
seed fixed), ``ranking`` (embeddings fixed). Encoders without a seed (galileo-nano) embed once: only the
clustering seed varies. Per pair of seeds: overlap of the top 10 / top 20 patch events (same row, col, t0,
t1), Spearman correlation of atypicality over all events, overlap of the top 10 change objects (same date
pair, patch sets IoU >= 0.5); per seed: AUROC/AP of atypicality, rare planted objects in the top 10 events
and objects, number of clusters (their spread over seeds is reported).

    python benchmarks/stability.py [--seeds 0,1,2,3,4] [--series-seed 0] [--encoder rcf] [--vary all,encoder,ranking]
        [--shared ../shared] [--out benchmarks/results]
    CHANGESCOUT_WEIGHTS_DIR=../shared/models python benchmarks/stability.py --encoder rcf,galileo-nano
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from changescout.evaluate.stability import PAIR_MEASURES, RUN_SCORES, VARY, SeedRuns, stability
from changescout.evaluate.synthetic import BOUCONNE, series

LABELS = {"events_top10_overlap": "events top-10 overlap", "events_top20_overlap": "events top-20 overlap",
          "atypicality_spearman": "atypicality Spearman", "objects_top10_overlap": "objects top-10 overlap",
          "auroc": "AUROC", "ap": "AP", "rare_in_top10": "rare in top-10 events",
          "objects_rare_in_top10": "rare in top-10 objects", "n_clusters": "clusters"}


def tables(results: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(pair measures mean [min], score spreads min-max, per-seed scores) as readable tables."""
    pairs, spread, runs = [], [], []
    keep = ("seed",) + RUN_SCORES  # timings (cached runs show 0 s) stay in the JSON
    for r in results:
        head = {"encoder": r["encoder"], "background": r["background"], "varies": r["vary"]}
        pairs.append(head | {LABELS[m]: f"{r['summary'][m]['mean']:.2f} [{r['summary'][m]['min']:.2f}]" for m in PAIR_MEASURES})
        n_rare = r["runs"][0]["n_rare"]
        fmt = lambda m, v: f"{v:.3f}" if m in ("auroc", "ap") else f"{v:.0f}"  # noqa: E731
        spread.append(head | {LABELS[m] + (f" (of {n_rare})" if "rare" in m else ""):
                              f"{fmt(m, r['spread'][m]['min'])}-{fmt(m, r['spread'][m]['max'])}" for m in RUN_SCORES})
        runs += [head | {k: (round(v, 3) if isinstance(v, float) else v) for k, v in run.items() if k in keep} for run in r["runs"]]
    return pd.DataFrame(pairs), pd.DataFrame(spread), pd.DataFrame(runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4", help="pipeline seeds (RunConfig.seed)")
    ap.add_argument("--series-seed", type=int, default=0, help="seed of the series and its planted changes (fixed)")
    ap.add_argument("--encoder", default="rcf", help="comma list: rcf (default), galileo-nano (needs "
                                                     "$CHANGESCOUT_WEIGHTS_DIR), ...; all go into one report")
    ap.add_argument("--vary", default=None, help=f"comma list of {','.join(VARY)}; default all three for rcf, "
                                                 "ranking for encoders without a seed")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    backgrounds = ["synthetic"] + (["bouconne"] if (Path(args.shared) / BOUCONNE).exists() else [])
    results, notes = [], []
    for encoder in args.encoder.split(","):
        seeded = encoder == "rcf"
        vary = args.vary.split(",") if args.vary else (list(VARY) if seeded else ["ranking"])
        if not seeded:
            vary = list(dict.fromkeys("ranking" if v == "all" else v for v in vary if v != "encoder"))
            notes.append(f"The {encoder} encoder takes no seed: its embeddings are computed once and only the "
                         "clustering/ranking seed varies.")
            print(notes[-1])
        for bg in backgrounds:
            t = time.perf_counter()
            cube, truth = series(args.series_seed, bg, args.shared)
            runs = SeedRuns(cube, truth, encoder)
            for v in vary:
                r = stability(cube, truth, seeds, encoder, v, runs=runs)
                results.append({"background": bg, "series_seed": args.series_seed, **r})
                print(encoder, bg, v, json.dumps(r["summary"]), json.dumps(r["spread"]), flush=True)
            print(f"{encoder} {bg}: {time.perf_counter() - t:.0f} s", flush=True)
    pairs, spread, per_seed = tables(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stability.json").write_text(json.dumps({"seeds": seeds, "notes": notes, "results": results},
                                                   indent=2, default=str) + "\n")
    md = [f"# Ranking stability across pipeline seeds {args.seeds}", "",
          f"One series per background (series seed {args.series_seed}: same data, same planted changes); only the "
          "pipeline seed changes. *varies*: `all` = RunConfig(seed=s) (encoder and clustering), `encoder` = the "
          "rcf seed only, `ranking` = the clustering seed only (embeddings shared). " + " ".join(notes), "",
          "Pairs of seeds: mean [min] over the pairs. Top-k overlaps: fraction of the top k shared by both runs "
          "(events: same row, col, t0, t1; objects: same date pair and patch sets IoU >= 0.5). Spearman: "
          "atypicality of all events.", "", pairs.to_markdown(index=False), "",
          "Scores over the seeds: min-max.", "", spread.to_markdown(index=False), "",
          "Per seed.", "", per_seed.to_markdown(index=False), ""]
    (out / "stability.md").write_text("\n".join(md))
    print(pairs.to_string(index=False))
    print(spread.to_string(index=False))


if __name__ == "__main__":
    main()
