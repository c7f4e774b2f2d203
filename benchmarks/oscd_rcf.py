"""Patch-level change ranking of the rcf encoder on the OSCD cities, against per-date z-scored CVA.

Each city's 13 bands of both dates are warped onto the 10 m grid of imgs_1 B02; a 16 px patch is changed
when >= 5 % of its pixels are labelled change. Scores: the rcf embedding distance as the pipeline computes
it (per-date centring, one scale per band), the same features compared by cosine distance, and CVA on
per-date z-scored bands (the baseline the core issue quotes). Pooled (micro) AUROC / AP over all cities.

    python benchmarks/oscd_rcf.py --root ../shared/data/oscd
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import Resampling, reproject
from sklearn.metrics import average_precision_score, roc_auc_score

from changescout.cube import OutputGrid, make_cube
from changescout.embed import embed_cube
from changescout.encoders import get_encoder
from changescout.tiling import PatchGrid

BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def load_city(city: Path):
    ref = next((city / "imgs_1").glob("*_B02.tif"))
    with rasterio.open(ref) as src:
        crs, transform, shape = src.crs, src.transform, src.shape
    out = np.zeros((2, len(BANDS)) + shape, np.float32)
    for t, folder in enumerate(("imgs_1", "imgs_2")):
        for b, band in enumerate(BANDS):
            path = next((city / folder).glob(f"*_{band}.tif"))
            with rasterio.open(path) as src:
                reproject(rasterio.band(src, 1), out[t, b], dst_transform=transform, dst_crs=crs, resampling=Resampling.bilinear)
    with rasterio.open(next((city / "cm").glob("*-cm.tif"))) as src:
        label = src.read(1) == 2
    dates = [line.split(":")[1].strip() for line in (city / "dates.txt").read_text().splitlines() if ":" in line]
    grid = OutputGrid(crs=crs.to_string(), transform=tuple(transform)[:6], shape=shape)
    return make_cube(out / 10000.0, dates, BANDS, grid), label


def patch_labels(label: np.ndarray, p: int) -> np.ndarray:
    h, w = label.shape[0] // p * p, label.shape[1] // p * p
    return label[:h, :w].reshape(h // p, p, w // p, p).mean(axis=(1, 3)) >= 0.05


def cva_z(cube, p: int) -> np.ndarray:
    x = cube.values
    z = (x - np.nanmean(x, axis=(2, 3), keepdims=True)) / np.nanstd(x, axis=(2, 3), keepdims=True)
    d = np.sqrt(((z[1] - z[0]) ** 2).sum(axis=0))
    h, w = d.shape[0] // p * p, d.shape[1] // p * p
    return d[:h, :w].reshape(h // p, p, w // p, p).mean(axis=(1, 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared/data/oscd"))
    ap.add_argument("--patch-size", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    p = args.patch_size
    scores = {"rcf-euclidean": [], "rcf-cosine": [], "cva-z": []}
    labels = []
    import tempfile

    for city in sorted(d for d in Path(args.root).iterdir() if (d / "imgs_1").is_dir()):
        cube, label = load_city(city)
        pg = PatchGrid(OutputGrid(crs=cube.rio.crs.to_string(), transform=tuple(cube.rio.transform())[:6], shape=label.shape), p)
        with tempfile.TemporaryDirectory() as tmp:
            ds = embed_cube(cube, get_encoder("rcf", patch_size=p), pg, Path(tmp) / "e.zarr", city.name)
            e = ds["embedding"].values
        euc = np.sqrt(((e[1] - e[0]) ** 2).mean(axis=-1))
        cos = 1 - (e[0] * e[1]).sum(-1) / (np.linalg.norm(e[0], axis=-1) * np.linalg.norm(e[1], axis=-1) + 1e-9)
        lab = patch_labels(label, p)
        r, c = lab.shape
        scores["rcf-euclidean"].append(euc[:r, :c].ravel())
        scores["rcf-cosine"].append(cos[:r, :c].ravel())
        scores["cva-z"].append(cva_z(cube, p)[:r, :c].ravel())
        labels.append(lab.ravel())
        print(city.name, {k: round(roc_auc_score(lab.ravel(), v[-1]), 3) for k, v in scores.items()})
    y = np.concatenate(labels)
    result = {k: {"auroc": round(float(roc_auc_score(y, np.concatenate(v))), 3),
                  "ap": round(float(average_precision_score(y, np.concatenate(v))), 3)} for k, v in scores.items()}
    result["n_patches"], result["positives"] = int(len(y)), int(y.sum())
    print(json.dumps(result, indent=1))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"oscd_rcf_p{p}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
