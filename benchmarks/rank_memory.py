"""Memory of the rank stage per change: what limits the area one machine can rank.

The rank stage holds every change of a run at once (its vectors, the embeddings before and after, and the
object features made from them), so its memory grows with the number of changes. For each size, the synthetic
series is written as a folder of GeoTIFFs and run by the CLI up to its change vectors; then the rank stage's
work (``objects.change_states`` and ``pipeline.rank_events``) is run again in this process under tracemalloc,
which counts numpy's arrays (not faiss's own buffers): the peak above what was held before, per change.

    python benchmarks/rank_memory.py [--sizes 512,1024] [--dates 12] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pandas as pd

from changescout.change import read_changes
from changescout.embed import open_embeddings
from changescout.objects import change_states
from changescout.pipeline import RunConfig, rank_events
from changescout.sources.synthetic import write_geotiffs


def measure(run: Path) -> dict:
    """The rank stage's traced peak over the changes of ``run`` (a run directory with changes.zarr)."""
    embeddings = open_embeddings(run / "embeddings.zarr")
    events, vectors, _ = read_changes(run / "changes.zarr")
    dates = pd.DatetimeIndex(embeddings["time"].values)
    for end in ("t0", "t1"):  # (as the rank stage places them)
        events[f"{end}i"] = dates.get_indexer(pd.to_datetime(events[end]))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t = time.perf_counter()
    states = change_states(embeddings, events, len(vectors))
    rank_events(events, vectors, RunConfig(source=str(run)), states)
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    return {"events": len(events), "dim": int(vectors.shape[1]), "rank_s": round(seconds, 1),
            "peak_mb": round(peak / 1e6), "kb_per_event": round(peak / len(events) / 1e3, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--dates", type=int, default=12)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    rows = []
    cli = str(Path(sys.executable).with_name("changescout"))
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            folder = write_geotiffs(Path(tmp) / f"s{size}", size=size, n_dates=args.dates)
            run = Path(tmp) / f"run{size}"
            subprocess.run([cli, "-q", "run", str(folder), "--out", str(run)], check=True)
            rows.append({"size_px": size, "dates": args.dates, **measure(run)})
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rank_memory.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "rank_memory.md").write_text(
        "# Rank stage: traced memory per change (benchmarks/rank_memory.py)\n\n"
        + pd.DataFrame(rows).to_markdown(index=False) + "\n")


if __name__ == "__main__":
    main()
