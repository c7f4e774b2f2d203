"""``changescout benchmark``: encoders and classic baselines against labelled change.

Every labelled pair of a dataset (an OSCD city, a LEVIR-CD style A/B pair, two consecutive DynamicEarthNet
months) is scored by each method into a per-pixel change map, and the maps are evaluated with
:mod:`changescout.evaluate.metrics` at pixel level and at patch level (16 and 32 px), pooled over all items.

* Baselines (``uses_embeddings = False``): :data:`changescout.evaluate.baselines.BASELINES` on all bands.
* Encoders (``uses_embeddings = True``): both dates are embedded on one identical window grid with fine
  patches of ``fine_patch`` px (the encoder's own normalisation, or the project's per-date one); the change
  score of a fine patch is the distance between its two embeddings (``spec.distance``), spread over its
  pixels. Patch-level scores are then means of fine-patch distances: fine distances aggregated upward, which
  measured better than comparing averaged embeddings (issue 4).

Outputs in ``out``: ``metrics.json`` (``dataset``, ``root``, ``rows``, ``per_item``, ``notes``), ``metrics.md``,
``per_item.csv``, ``roc.png`` and ``pr.png`` (patch-16 curves of every method).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_json
from ..encoders.base import select_bands
from ..errors import BandError, ConfigError, InputError
from .baselines import BASELINES
from .metrics import Item, evaluate_items, spread

DATASETS = ("oscd", "pairs", "dynamicearthnet", "synthetic")
#: Encoder options for two-date benchmarks: Presto embeds each date alone (a trailing window would mix in the
#: other date) and pools every 4th pixel of each axis (the same pooled AUROC on OSCD, 16 times faster).
ENCODER_OPTIONS = {"presto": {"mode": "single", "pixel_stride": 4}}
PATCH_SIZES = (16, 32)


@dataclass
class Pair:
    """One labelled date pair: ``a`` and ``b`` ``(band, H, W)`` reflectance, its label and valid mask."""

    name: str
    cube: object  # two-date SeriesCube (time, band, y, x), loaded
    label: np.ndarray
    valid: np.ndarray
    notes: list = field(default_factory=list)


def load_pairs(dataset: str, root: str | Path) -> list[Pair]:
    """The labelled date pairs of ``dataset`` under ``root``."""
    root = Path(root)
    if dataset == "oscd":
        from ..sources import oscd

        return [_pair(oscd.load_item(root, c)) for c in oscd.list_items(root)]
    if dataset == "pairs":
        from ..sources import pairs

        return [_pair(pairs.load_item(root, n), ["pixel coordinates: the pairs have no CRS and no dates"]) for n in pairs.list_items(root)]
    if dataset == "dynamicearthnet":
        from ..sources import dynamicearthnet as den

        out = []
        for name in den.list_items(root):
            item = den.load_item(root, name)
            cube = item.cube.compute()
            for i in range(cube.sizes["time"] - 1):
                label, valid = item.labels.binary(i)
                tag = f"{name}-{pd.Timestamp(cube['time'].values[i]):%Y%m}"
                out.append(Pair(tag, cube.isel(time=[i, i + 1]), label, valid & _finite(cube.isel(time=[i, i + 1]))))
        return out
    raise ConfigError(f"unknown benchmark dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def _finite(cube) -> np.ndarray:
    return np.isfinite(np.asarray(cube.values)).all(axis=(0, 1))


def _pair(item, notes=()) -> Pair:
    cube = item.cube.compute()
    return Pair(item.name, cube, np.asarray(item.label, bool), np.asarray(item.valid, bool), list(notes))


def baseline_scores(name: str, pair: Pair) -> np.ndarray:
    values = np.asarray(pair.cube.values, dtype=np.float32)
    return BASELINES[name](values[0], values[1])


def encoder_scores(encoder, pair: Pair, fine_patch: int) -> np.ndarray:
    """Per-pixel change score: distance between the two dates' fine-patch embeddings, spread over the patch."""
    from ..cube import grid_of
    from ..embed import embed_cube
    from ..tiling import PatchGrid

    cube = pair.cube
    pg = PatchGrid(grid_of(cube), fine_patch)
    with tempfile.TemporaryDirectory() as tmp:
        ds = embed_cube(cube, encoder, pg, Path(tmp) / "e.zarr", "benchmark")
        emb = ds["embedding"].values  # (2, rows, cols, dim)
    d = change_distance(emb[0], emb[1], getattr(encoder.spec, "distance", "euclidean"))
    h, w = pair.label.shape
    out = np.full((h, w), np.nan, np.float32)
    nr, nc = d.shape
    out[: nr * fine_patch, : nc * fine_patch] = np.kron(d, np.ones((fine_patch, fine_patch), np.float32))
    return out


def change_distance(e0: np.ndarray, e1: np.ndarray, kind: str) -> np.ndarray:
    """Distance between embeddings along the last axis: ``euclidean`` (RMS difference) or ``cosine``."""
    if kind == "cosine":
        n0, n1 = np.linalg.norm(e0, axis=-1), np.linalg.norm(e1, axis=-1)
        return (1 - (e0 * e1).sum(-1) / np.maximum(n0 * n1, 1e-12)).astype(np.float32)
    if kind == "euclidean":
        return np.sqrt(((e0 - e1) ** 2).mean(axis=-1)).astype(np.float32)
    raise ConfigError(f"unknown embedding distance {kind!r} (euclidean or cosine)")


def available_encoders_with_weights(names=None) -> list[str]:
    """``names`` or every registered encoder whose weights can be found (rcf needs none)."""
    from ..encoders import available_encoders, get_encoder

    out = []
    for name in available_encoders() if names is None else names:
        try:
            get_encoder(name)
        except InputError:
            if names is not None:
                raise
            continue
        out.append(name)
    return out


def run_benchmark(dataset: str, root: str | Path, encoders=None, out: str | Path | None = None,
                  baselines=None, fine_patch: int = 8, log=print, seeds=(0, 1, 2, 3, 4)) -> dict:
    """Score every item with every method; write the outputs in ``out`` (if given); return ``metrics.json``."""
    from ..encoders import get_encoder

    if dataset == "synthetic":
        result = run_synthetic(root, encoders, seeds=seeds, log=log)
        if out is not None:
            write_outputs(Path(out), result, {})
        return result
    pairs = load_pairs(dataset, root)
    if not pairs:
        raise InputError(f"no labelled items found for dataset {dataset!r}", root)
    methods = [(b, False) for b in (baselines or BASELINES)] + [(e, True) for e in available_encoders_with_weights(encoders)]
    rows, per_item, curves, skipped, spreads = [], [], {}, [], []
    bands = [str(b) for b in pairs[0].cube["band"].values]
    for method, uses_emb in methods:
        encoder = None
        if uses_emb:
            encoder = get_encoder(method, patch_size=fine_patch, **ENCODER_OPTIONS.get(method, {}))
            try:
                select_bands(bands, encoder.spec)
            except BandError as exc:
                if encoders is not None:
                    raise
                skipped.append(f"{method} skipped: {exc.message}")
                log(skipped[-1])
                continue
        t = time.perf_counter()
        items = []
        for pair in pairs:
            if uses_emb:
                # Pretrained weights load once; an encoder that learns from the data (rcf) starts afresh per item.
                fresh = encoder if encoder.is_fitted else get_encoder(method, patch_size=fine_patch, **ENCODER_OPTIONS.get(method, {}))
                score = encoder_scores(fresh, pair, fine_patch)
            else:
                score = baseline_scores(method, pair)
            items.append(Item(pair.name, score, pair.label, pair.valid))
        seconds = time.perf_counter() - t
        log(f"{method}: {len(items)} items in {seconds:.1f} s")
        levels = [("pixel", None)] + [("patch", p) for p in PATCH_SIZES]
        for level, p in levels:
            row, items_metrics = evaluate_items(method, items, level=level, patch_size=p, uses_embeddings=uses_emb,
                                                seconds=round(seconds, 2))
            rows.append(row.to_dict())
            per_item += [{"method": method, "level": level, "patch_size": p, **m} for m in items_metrics]
            spreads.append({"method": method, "level": level, "patch_size": p, **spread(items_metrics, ("auroc", "ap"))})
        curves[method] = _curve_data(items, PATCH_SIZES[0])
    notes = sorted({n for pair in pairs for n in pair.notes}) + skipped
    result = {"dataset": dataset, "root": str(root), "rows": rows, "spread": _clean_nested(spreads),
              "per_item": _clean(per_item), "notes": notes}
    if out is not None:
        write_outputs(Path(out), result, curves)
    return result


SYNTHETIC_KEYS = ("auroc", "ap", "recall_rare_at_10", "clouds_in_top20", "cluster_ari", "similar_p_at_5", "rare_other_in_top10")


def run_synthetic(root, encoders=None, seeds=(0, 1, 2, 3, 4), log=print) -> dict:
    """Every encoder through the whole pipeline on planted-change series (``evaluate/synthetic.py``): the
    synthetic series of each seed and, when ``root`` holds the shared Bouconne series, the same changes
    planted into it. One row per encoder and background, the measures averaged over seeds."""
    from .synthetic import BOUCONNE, evaluate, series

    backgrounds = ["synthetic"] + (["bouconne"] if root is not None and (Path(root) / BOUCONNE).exists() else [])
    rows, per_item = [], []
    for method in available_encoders_with_weights(encoders):
        for bg in backgrounds:
            t = time.perf_counter()
            items = []
            for seed in seeds:
                cube, truth = series(seed, bg, root)
                sc = evaluate(cube, truth, seed, encoder=method)
                rare = sc["objects_rare_in_top10"] + sc["objects_rare_missing_top10"]
                items.append({"item": f"{bg}-{seed}", "auroc": sc["auroc"], "ap": sc["ap"],
                              "recall_rare_at_10": len(sc["objects_rare_in_top10"]) / max(len(rare), 1),
                              "clouds_in_top20": sc["objects_clouds_in_top20"], "cluster_ari": sc["cluster_ari"],
                              "similar_p_at_5": sc["objects_similar_common_p_at_5"],
                              "rare_other_in_top10": float(np.mean(list(sc["objects_similar_rare_other_in_top10"].values()) or [np.nan]))})
                log(f"{method} {bg} seed {seed}: AUROC {sc['auroc']:.3f}, rare in top 10 {items[-1]['recall_rare_at_10']:.2f}")
            mean = {k: float(np.nanmean([np.nan if i[k] is None else i[k] for i in items])) for k in SYNTHETIC_KEYS}
            rows.append({"method": method, "uses_embeddings": True, "level": f"objects ({bg})", "patch_size": None,
                         "n_items": len(items), **mean, "seconds": round(time.perf_counter() - t, 1)})
            per_item += [{"method": method, **i} for i in items]
    return {"dataset": "synthetic", "root": None if root is None else str(root), "rows": _clean(rows),
            "per_item": _clean(per_item), "notes": ["means over seeds " + ",".join(map(str, seeds))]}


def _clean(rows: list[dict]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


def _clean_nested(rows: list[dict]) -> list[dict]:
    return [{k: (_clean([v])[0] if isinstance(v, dict) else v) for k, v in r.items()} for r in rows]


def _curve_data(items, p: int):
    from .metrics import patch_level

    s, y = zip(*(patch_level(i.score, i.label, p, 0.05, i.valid) for i in items))
    s, y = np.concatenate([a.ravel() for a in s]), np.concatenate([a.ravel() for a in y])
    keep = np.isfinite(s)
    return s[keep], y[keep]


def metrics_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    cols = ["method", "uses_embeddings", "level", "patch_size", "n_items", "auroc", "ap", "best_f1", "otsu_f1",
            "otsu_iou", "p_at_1pct", *SYNTHETIC_KEYS[2:], "seconds"]
    return df[[c for c in cols if c in df.columns]].sort_values(["level", "patch_size", "auroc"], ascending=[True, True, False], na_position="first")


def write_outputs(out: Path, result: dict, curves: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", result)
    table = metrics_table(result["rows"])
    text = f"# Benchmark: {result['dataset']} ({result['root']})\n\n" + table.to_markdown(index=False, floatfmt=".3f") + "\n"
    if result.get("spread"):
        text += f"\nSpread over items, patches of {PATCH_SIZES[0]} px (mean +- std [min, max]):\n\n"
        text += "| method | AUROC | AP |\n|---|---|---|\n"
        fmt = lambda d: "-" if d["mean"] is None else f"{d['mean']:.3f} +- {d['std']:.3f} [{d['min']:.3f}, {d['max']:.3f}]"  # noqa: E731
        for sp in result["spread"]:
            if sp["level"] == "patch" and sp["patch_size"] == PATCH_SIZES[0]:
                text += f"| {sp['method']} | {fmt(sp['auroc'])} | {fmt(sp['ap'])} |\n"
    if result["notes"]:
        text += "\n" + "\n".join(f"- {n}" for n in result["notes"]) + "\n"
    with atomic_path(out / "metrics.md") as tmp:
        tmp.write_text(text)
    with atomic_path(out / "per_item.csv") as tmp:
        pd.DataFrame(result["per_item"]).to_csv(tmp, index=False)
    _plot_curves(out, curves)


def _plot_curves(out: Path, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(5, 5))
        for method, (s, y) in curves.items():
            if len(np.unique(y)) < 2:
                continue
            if kind == "roc":
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, label=method)
            else:
                prec, rec, _ = precision_recall_curve(y, s)
                ax.plot(rec, prec, label=method)
        ax.set_xlabel("false positive rate" if kind == "roc" else "recall")
        ax.set_ylabel("true positive rate" if kind == "roc" else "precision")
        ax.set_title(f"{kind.upper()}, patches of {PATCH_SIZES[0]} px")
        ax.legend(fontsize=8)
        with atomic_path(out / f"{kind}.png") as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
        plt.close(fig)
