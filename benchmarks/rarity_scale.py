"""Rarity of change vectors on large runs: the exact k-nearest-neighbour search against the inverted file
(``RarityScorer(max_exact=...)``) that replaces it beyond ``max_exact`` changes.

Scores the change vectors of a run directory (its ``changes.zarr``, reduced by the run's clustering as
``changescout run`` does), or of a generated mixture of change types when no run is given, in growing
subsets, both ways. Reports the seconds of each (measured in the same process, one after the other), their
ratio, and how far the approximate ranking is from the exact one: Spearman correlation of the scores, the
share of the exact 1 % rarest that the approximate search also puts in its 1 % rarest, and the largest
change of a percentile.

    python benchmarks/rarity_scale.py [--run RUN_DIR] [--sizes 50000,100000,178000] [--out benchmarks/results]

``--identical 0.5``: that share of the vectors made one and the same (areas a gap-filled composite repeats
from one date to the next), which an inverted file put in one list that each of them scanned whole; the
results go to ``rarity_scale_identical.*``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from changescout.cluster import ChangeClusterer
from changescout.rank import RarityScorer, percentile


def vectors(run: str | None, n: int, seed: int = 0) -> np.ndarray:
    """``n`` change vectors in the clustering's PCA space (16 dimensions)."""
    rng = np.random.default_rng(seed)
    if run:
        import xarray as xr

        v = xr.open_zarr(Path(run) / "changes.zarr")["vector"]
        keep = np.sort(rng.choice(v.sizes["vec"], min(n, v.sizes["vec"]), replace=False))
        X = v.isel(vec=keep).values
    else:  # a few common types, many weak changes, a sprinkle of rare ones
        centres = rng.standard_normal((12, 64)) * np.r_[np.full(4, 3.0), np.full(8, 1.0)][:, None]
        labels = rng.choice(12, n, p=np.r_[np.full(4, 0.2), np.full(8, 0.025)])
        X = centres[labels] + rng.standard_normal((n, 64)) * 0.7
        X[rng.choice(n, n // 1000, replace=False)] += rng.standard_normal((n // 1000, 64)) * 6
    return ChangeClusterer(random_state=seed).fit(X).transform(X).astype(np.float32)


def compare(X: np.ndarray, k: int = 10) -> dict:
    t = time.perf_counter()
    exact = RarityScorer(n_neighbors=k, max_exact=len(X)).fit(X).train_scores_
    t_exact = time.perf_counter() - t
    t = time.perf_counter()
    approx = RarityScorer(n_neighbors=k, max_exact=0).fit(X).train_scores_
    t_approx = time.perf_counter() - t
    top = max(1, len(X) // 100)
    rare_exact, rare_approx = np.argsort(exact)[:top], np.argsort(approx)[:top]
    return {"n": len(X), "exact_s": round(t_exact, 2), "ivf_s": round(t_approx, 2),
            "speedup": round(t_exact / max(t_approx, 1e-9), 1),
            "spearman": round(float(spearmanr(exact, approx).statistic), 4),
            "rarest_1pct_overlap": round(len(np.intersect1d(rare_exact, rare_approx)) / top, 3),
            "max_percentile_shift": round(float(np.abs(percentile(-exact) - percentile(-approx)).max()), 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a run directory whose change vectors to use")
    ap.add_argument("--sizes", default="25000,50000,100000,178000")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--identical", type=float, default=0.0, help="share of the vectors made identical")
    args = ap.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        X = vectors(args.run, n)
        X[:int(args.identical * len(X))] = X[0]
        rows.append({"input": args.run or "generated mixture", "identical": args.identical, **compare(X)})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "rarity_scale_identical" if args.identical else "rarity_scale"
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    (out / f"{stem}.md").write_text(pd.DataFrame(rows).to_markdown(index=False) + "\n")


if __name__ == "__main__":
    main()
