"""Embedding efficiency: throughput of the whole embedding stage divided by the bare encoder forward pass.

The pipeline side is ``embed_cube`` on the lazy cube (reading, warping, masking, normalisation, dask
scheduling, zarr writing). The bare side runs ``encoder.encode`` on the very same batches (the windows of
the identical window grid, prepared beforehand and held in memory). Goal: ratio >= 0.9.

Secondary, clearly labelled: rows ``input = in memory``, the same ``embed_cube`` on the cube already read into
memory (the ratio without the GeoTIFF read); ``read_s``, the time to read the lazy cube alone (``persist``);
``cpu_ratio``, the same quotient of process CPU seconds (all threads), steadier than wall time when other work
shares the machine. Runs alternate (disk, memory, bare, read) and the best of each is kept; the load average
at the start and the end is recorded.

``--baseline GIT_REF`` adds rows of the code as it was at that commit, timed in the same alternating runs:
``embed.py`` and the reading of the files (``sources/warp.py``, whose lazy cube the baseline's disk rows and
``read_s`` use). Until e65f5c9 only ``embed.py`` was swapped, so a baseline's disk rows already read the files
with the working tree's code; ``read_s`` is now measured per row (the row's own reader).

    CHANGESCOUT_WEIGHTS_DIR=../shared/models python benchmarks/embed_throughput.py [--encoders rcf,galileo-nano]
        [--repeats 3] [--baseline GIT_REF (same-run rows of embed.py and sources/warp.py at that commit)]
        [--input bouconne | synthetic:SIZE (a larger area: results in embed_throughput_syntheticSIZE.*)]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from changescout.cube import grid_of
from changescout.embed import _prepare, date_statistics, embed_cube, fit_sample, window_px
from changescout.encoders import get_encoder
from changescout.encoders.base import select_bands
from changescout.sources.synthetic import write_geotiffs
from changescout.tiling import PatchGrid

BOUCONNE = "data/s2_timeseries_bouconne/2018_3A_Theia_Bouconne.tif"
DATES = "2018-04-29,2018-05-13,2018-07-08,2018-08-15,2018-09-15,2018-10-15,2018-11-15".split(",")
BANDS = "B02,B03,B04,B08,B05,B06,B07,B8A,B11,B12".split(",")
DISK, MEMORY = "GeoTIFF on disk (lazy)", "in memory (secondary: read excluded)"


def open_cube(shared: Path, warp=None, synthetic: Path | None = None):
    """The lazy Bouconne cube, or (``synthetic``) the folder of GeoTIFFs that
    :func:`changescout.sources.synthetic.write_geotiffs` wrote; ``warp``: a ``sources/warp.py`` module whose reader to use (default: the working tree's)."""
    from changescout.sources import geotiff, open_series, stacked

    real = stacked.open_scenes, geotiff.open_scenes
    if warp is not None:
        stacked.open_scenes = geotiff.open_scenes = warp.open_scenes
    try:
        if synthetic is not None:
            return open_series(str(synthetic), kind="geotiff", patch_size=16)
        return open_series(str(shared / BOUCONNE), kind="stacked", dates=DATES, bands=BANDS, patch_size=16)
    finally:
        stacked.open_scenes, geotiff.open_scenes = real


class _Clock:
    """Wall and process CPU seconds (every thread of the process) of a ``with`` block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return False


def bare_forward(cube, encoder, pg, stats, band_index) -> tuple[float, float, int]:
    """Wall and CPU seconds of ``encoder.encode`` alone on the windows the embedding stage uses, batched the same
    way, and the number of images encoded (windows x dates)."""
    spec, p = encoder.spec, pg.patch_size
    win = window_px(spec, p)
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
    with _Clock() as c:
        for x, m in batches:
            encoder.encode(x, m)
    return c.wall, c.cpu, sum(len(x) for x, _ in batches)


def _module_at(ref: str, path: str, name: str):
    """``src/changescout/<path>`` as it was at git ``ref``, imported as ``changescout.<name>`` (its relative
    imports resolve to the working tree's package)."""
    import importlib.util
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{ref}:src/changescout/{path}"], cwd=root, check=True,
                          capture_output=True, text=True).stdout
    file = Path(tempfile.mkdtemp()) / Path(path).name
    file.write_text(text)
    spec = importlib.util.spec_from_file_location(f"changescout.{name}", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def baseline(ref: str, shared: Path, synthetic: Path | None = None):
    """``(embed_cube, lazy cube)`` of the code as it was at git ``ref``: its ``embed.py`` and its reader
    (``sources/warp.py``), for same-run before/after rows."""
    embed = _module_at(ref, "embed.py", "_embed_baseline")
    warp = _module_at(ref, "sources/warp.py", "sources._warp_baseline")
    return embed.embed_cube, open_cube(shared, warp, synthetic)


def measure(name: str, variants: dict, repeats: int = 3) -> list[dict]:
    """Rows of one encoder: for each ``variants`` (label -> ``(embed_cube, lazy cube)``, the working tree's first),
    the stage from the lazy cube and from memory against the same bare forward (on the first variant's cube)."""
    cube = next(iter(variants.values()))[1]
    encoder = get_encoder(name, patch_size=16)
    pg = PatchGrid(grid_of(cube), 16)
    band_index = select_bands([str(b) for b in cube["band"].values], encoder.spec)
    stats = date_statistics(cube, band_index)
    if not getattr(encoder, "is_fitted", True):
        encoder.fit(fit_sample(cube, band_index, stats))
    in_memory = {v: c.persist() for v, (_, c) in variants.items()}

    def embed(fn, c) -> _Clock:
        with tempfile.TemporaryDirectory() as tmp, _Clock() as clock:
            fn(c, encoder, pg, Path(tmp) / "e.zarr", "bench")
        return clock

    runs = {(v, label): [] for v in variants for label in (DISK, MEMORY)}
    read = {v: [] for v in variants}
    bare = []
    for _ in range(repeats):  # alternate, keep the best of each (noisy machines)
        for v, (fn, c) in variants.items():
            runs[v, DISK].append(embed(fn, c))
            runs[v, MEMORY].append(embed(fn, in_memory[v]))
        wall, cpu, n_images = bare_forward(cube, encoder, pg, stats, band_index)
        bare.append((wall, cpu))
        for v, (_, c) in variants.items():
            with _Clock() as clock:
                c.persist()
            read[v].append(clock)
    bare_s, bare_cpu = min(w for w, _ in bare), min(c for _, c in bare)
    patches = cube.sizes["time"] * pg.shape[0] * pg.shape[1]
    rows = []
    for (v, label), clocks in runs.items():
        pipe, pipe_cpu = min(c.wall for c in clocks), min(c.cpu for c in clocks)
        rows.append({"encoder": name, "code": v, "input": label, "dates": cube.sizes["time"], "patches": patches,
                     "windows_x_dates": n_images, "pipeline_s": round(pipe, 2), "bare_forward_s": round(bare_s, 2),
                     "read_s": round(min(c.wall for c in read[v]), 2), "pipeline_patches_per_s": round(patches / pipe, 1),
                     "ratio": round(bare_s / pipe, 3), "pipeline_cpu_s": round(pipe_cpu, 2), "bare_cpu_s": round(bare_cpu, 2),
                     "cpu_ratio": round(bare_cpu / pipe_cpu, 3)})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default="rcf,galileo-nano")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", metavar="GIT_REF", help="also time embed.py and sources/warp.py as they were at this "
                                                           "git ref, in the same alternating runs (before/after rows)")
    ap.add_argument("--input", default="bouconne", help="bouconne (the Sentinel-2 series, 256 x 240 px, 7 dates: one "
                    "rcf window) or synthetic:SIZE (a SIZE px, 8-date synthetic series written as GeoTIFFs: many windows)")
    args = ap.parse_args()
    shared = Path(args.shared)
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = None
        if args.input.startswith("synthetic:"):
            synthetic = write_geotiffs(Path(tmp) / "series", size=int(args.input.partition(":")[2]), n_dates=8)
        elif args.input != "bouconne":
            ap.error(f"unknown --input {args.input!r}")
        variants = {"working tree": (embed_cube, open_cube(shared, synthetic=synthetic))}
        if args.baseline:
            variants[args.baseline] = baseline(args.baseline, shared, synthetic)
        load0 = os.getloadavg()[0]
        rows = [{**r, "input": f"{r['input']}: {args.input}"} for n in args.encoders.split(",")
                for r in measure(n, variants, args.repeats)]
    for r in rows:
        print(json.dumps(r))
    import torch

    host = {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "embed_throughput" if args.input == "bouconne" else f"embed_throughput_{args.input.replace(':', '')}"
    (out / f"{stem}.json").write_text(json.dumps({"host": host, "rows": rows}, indent=2) + "\n")
    (out / f"{stem}.md").write_text(
        pd.DataFrame(rows).to_markdown(index=False) + "\n\n"
        f"ratio = bare_forward_s / pipeline_s (goal >= 0.9); cpu_ratio = bare_cpu_s / pipeline_cpu_s (process CPU "
        f"seconds, all threads); best of {args.repeats} alternating runs; "
        f"{host['cores']} cores, torch {host['torch_threads']} threads, 1-min load average "
        f"{host['load_average_1min'][0]} at the start, {host['load_average_1min'][1]} at the end.\n")


if __name__ == "__main__":
    main()
