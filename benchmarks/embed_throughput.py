"""Embedding efficiency: throughput of the whole embedding stage divided by the bare encoder forward pass.

The pipeline side is ``embed_cube`` on the lazy cube (reading, warping, masking, normalisation, dask
scheduling, zarr writing). The bare side runs ``encoder.encode`` on the very same batches (the windows of
the identical window grid, prepared beforehand and held in memory). Goal: ratio >= 0.9.

    CHANGESCOUT_WEIGHTS_DIR=../shared/models python benchmarks/embed_throughput.py [--encoders rcf,galileo-nano]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from changescout.cube import grid_of
from changescout.embed import _prepare, date_statistics, embed_cube, fit_sample
from changescout.encoders import get_encoder
from changescout.encoders.base import select_bands
from changescout.tiling import PatchGrid

BOUCONNE = "data/s2_timeseries_bouconne/2018_3A_Theia_Bouconne.tif"
DATES = "2018-04-29,2018-05-13,2018-07-08,2018-08-15,2018-09-15,2018-10-15,2018-11-15".split(",")
BANDS = "B02,B03,B04,B08,B05,B06,B07,B8A,B11,B12".split(",")


def open_cube(shared: Path):
    from changescout.sources import open_series

    return open_series(str(shared / BOUCONNE), kind="stacked", dates=DATES, bands=BANDS, patch_size=16)


def bare_forward(cube, encoder, pg, stats, band_index) -> tuple[float, int]:
    """Seconds of ``encoder.encode`` alone on the windows the embedding stage uses, batched the same way."""
    spec, p = encoder.spec, pg.patch_size
    win = max(p, spec.window // p * p)
    nr, nc = pg.shape
    months = (pd.DatetimeIndex(cube["time"].values).month.to_numpy() - 1).astype(np.int64)
    batches = []
    for y0 in range(0, nr * p, win):
        for x0 in range(0, nc * p, win):
            block = cube.isel(band=band_index, y=slice(y0, min(y0 + win, nr * p)), x=slice(x0, min(x0 + win, nc * p)))
            values, quality = dask.compute(block.data, block["quality"].data)
            x, _ = _prepare(values, quality, stats, spec)
            b = max(1, int(spec.batch_size))
            batches += [(x[i:i + b], months[i:i + b]) for i in range(0, len(x), b)]
    t = time.perf_counter()
    for x, m in batches:
        encoder.encode(x, m)
    return time.perf_counter() - t, sum(len(x) for x, _ in batches)


def measure(name: str, cube, repeats: int = 2) -> dict:
    encoder = get_encoder(name, patch_size=16)
    pg = PatchGrid(grid_of(cube), 16)
    band_index = select_bands([str(b) for b in cube["band"].values], encoder.spec)
    stats = date_statistics(cube, band_index)
    if not getattr(encoder, "is_fitted", True):
        encoder.fit(fit_sample(cube, band_index, stats))
    pipe, bare = [], []
    for _ in range(repeats):  # alternate, keep the best of each (noisy machines)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            embed_cube(cube, encoder, pg, Path(tmp) / "e.zarr", "bench")
            pipe.append(time.perf_counter() - t)
        secs, n_windows = bare_forward(cube, encoder, pg, stats, band_index)
        bare.append(secs)
    patches = cube.sizes["time"] * pg.shape[0] * pg.shape[1]
    return {"encoder": name, "dates": cube.sizes["time"], "patches": patches, "windows_x_dates": n_windows,
            "pipeline_s": round(min(pipe), 2), "bare_forward_s": round(min(bare), 2),
            "pipeline_patches_per_s": round(patches / min(pipe), 1), "ratio": round(min(bare) / min(pipe), 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default="rcf,galileo-nano")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    cube = open_cube(Path(args.shared))
    rows = [measure(n, cube) for n in args.encoders.split(",")]
    for r in rows:
        print(json.dumps(r))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "embed_throughput.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "embed_throughput.md").write_text(pd.DataFrame(rows).to_markdown(index=False) + "\n")


if __name__ == "__main__":
    main()
