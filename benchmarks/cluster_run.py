"""The same `changescout run` on local threads and on a dask.distributed cluster (`--scheduler`): what the
cluster costs or saves per stage, and whether both write the same events.

The cluster is a LocalCluster on this machine (worker processes, started by this script); on one small machine
it competes with the client for the cores, so the ratio is an upper bound of the overhead, not a speed-up.
Peak memory is the CLI process' alone (the workers are not counted).

    python benchmarks/cluster_run.py [--size 512] [--dates 12] [--workers 1] [--threads 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from changescout.sources.synthetic import write_geotiffs
from run_scale import run  # benchmarks/ is on the path when this file runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--dates", type=int, default=12)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    from distributed import LocalCluster

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_geotiffs(Path(tmp) / "series", size=args.size, n_dates=args.dates)
        rows["local threads"] = run(folder, Path(tmp) / "local")
        with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads, processes=True,
                          dashboard_address=None) as cluster:
            rows[f"cluster ({args.workers} x {args.threads} threads)"] = run(folder, Path(tmp) / "cluster", "--scheduler",
                                                                         cluster.scheduler_address)
        a, b = (pd.read_parquet(Path(tmp) / d / "events.parquet") for d in ("local", "cluster"))
        same = a.equals(b)
    df = pd.DataFrame(rows).T
    ratio = (df.iloc[1] / df.iloc[0]).where(df.columns.str.endswith("_s")).dropna().round(2)
    df.loc["ratio cluster / local"] = ratio
    table = df.T.astype(object).where(df.T.notna(), "")
    print(table.to_string(), f"\nsame events: {same}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"size_px": args.size, "dates": args.dates, "same_events": bool(same)}
    measured = {k: {c: v for c, v in r.items() if pd.notna(v)} for k, r in df.to_dict("index").items()}
    (out / "cluster_run.json").write_text(json.dumps({**meta, "rows": measured}, indent=1) + "\n")
    (out / "cluster_run.md").write_text(f"{args.size} px, {args.dates} dates; the same events on both: {same}\n\n"
                                        + table.to_markdown() + "\n")


if __name__ == "__main__":
    main()
