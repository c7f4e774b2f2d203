"""How `changescout run` grows with the area: the synthetic series at several sizes, written as a folder of
GeoTIFFs (one per date, as a user's), run end to end by the CLI in a fresh process each.

Reports per size the patches and events, each stage's seconds (from the run's state.json), the whole wall
time, the peak memory of the run's process and the run directory's size, and each as a ratio to the first
size: with four times the pixels, a stage that grows linearly takes about four times as long.

    python benchmarks/run_scale.py [--sizes 1024,2048] [--dates 12] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from changescout.sources.synthetic import write_geotiffs


_PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r)")


def run(folder: Path, out: Path, *extra: str) -> dict:
    """``changescout -q run FOLDER --out OUT [extra...]`` in a fresh process: its stages' seconds, wall time and peak memory."""
    cli = [str(Path(sys.executable).with_name("changescout")), "-q", "run", str(folder), "--out", str(out), *extra]
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK, *cli], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode:
        raise SystemExit(f"changescout run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    stages = json.loads((out / "state.json").read_text())["stages"]
    return {"patches": stages["embed"]["patches"], "events": stages["changes"]["events"],
            **{f"{k}_s": round(v["seconds"], 1) for k, v in stages.items()}, "wall_s": round(wall, 1),
            "peak_rss_gb": round(int(done.stdout.split()[-1]) / 2**20, 2),
            "run_dir_mb": round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024,2048")
    ap.add_argument("--dates", type=int, default=12)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            folder = write_geotiffs(Path(tmp) / f"s{size}", size=size, n_dates=args.dates)
            rows.append({"size_px": size, "dates": args.dates, **run(folder, Path(tmp) / f"run{size}")})
            print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    for c in [c for c in df.columns if c.endswith("_s") or c in ("peak_rss_gb", "run_dir_mb")]:
        df[f"{c}_ratio"] = (df[c] / df[c].iloc[0]).round(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_scale.json").write_text(json.dumps(df.to_dict("records"), indent=1) + "\n")
    (out / "run_scale.md").write_text(df.T.to_markdown(headers=[f"{s} px" for s in df["size_px"]]) + "\n")


if __name__ == "__main__":
    main()
