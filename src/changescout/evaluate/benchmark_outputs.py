"""The files a benchmark writes: the tables, the ablation and the curves of a run of
:func:`changescout.evaluate.benchmark.run_benchmark`, and the checks of the folder they go to.

Outputs in ``out`` (:data:`OUTPUTS`): ``metrics.json`` (``dataset``, ``root``, ``rows``, ``spread``,
``per_item``, ``notes``, ``protocol``), ``metrics.md``, ``per_item.csv``, ``ablation.md``
(:func:`ablation_markdown`: best baseline variant, best method per kind of evidence, margins, per item, leave one
item out), ``roc.png`` and ``pr.png`` (patch-16 curves, at most :data:`MAX_CURVES` methods). They are written
into a temporary folder beside ``out`` and moved in once all are written (:func:`write_outputs`): a failed run
leaves ``out`` as it was, a finished one leaves no output of an earlier run beside its own.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path, write_json
from ..errors import ConfigError, OutputError, RunExistsError
from .baselines import BASELINES
from .methods import PATCH_SIZES, parse_method
from .metrics import patch_level

#: Every file a benchmark writes in ``out``: a finished run removes those of an earlier run that it did not write.
OUTPUTS = ("metrics.json", "metrics.md", "per_item.csv", "ablation.md", "roc.png", "pr.png")
#: The measures of a synthetic run's rows (:func:`changescout.evaluate.benchmark.run_synthetic`), in the column
#: order of :func:`metrics_table`.
SYNTHETIC_KEYS = ("auroc", "ap", "recall_rare_at_10", "clouds_in_top20", "cluster_ari", "similar_p_at_5", "rare_other_in_top10")


def check_out(out, overwrite: bool = True) -> Path:
    """``out`` as a path, or :class:`OutputError` naming it when it cannot be a folder of benchmark outputs: a
    file, under a file, or in a folder this user cannot write (checked before any work); without ``overwrite``,
    :class:`RunExistsError` when it holds an earlier benchmark's outputs (the command's default: a measurement
    is not lost to a command run again with another --out in mind)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError("is a file, not a folder; --out names the folder for the benchmark outputs "
                          f"({', '.join(OUTPUTS)}): choose another --out", out)
    held = [n for n in OUTPUTS if (out / n).is_file()]
    if held and not overwrite:
        raise RunExistsError(f"holds an earlier benchmark's outputs ({', '.join(held)}); give --overwrite to replace "
                             "them, or choose another --out", out)
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot be created: {parent} is a file, not a folder; choose another --out", out)
    for folder in {parent, out} if out.exists() else {parent}:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"cannot be written ({folder} does not let this user write in it); choose another "
                              "--out", out)
    return out


def _clean(rows: list[dict]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


def _clean_nested(rows: list[dict]) -> list[dict]:
    return [{k: (_clean([v])[0] if isinstance(v, dict) else v) for k, v in r.items()} for r in rows]


def _curve_data(items, p: int):
    s, y = zip(*(patch_level(i.score, i.label, p, 0.05, i.valid) for i in items))
    s, y = np.concatenate([a.ravel() for a in s]), np.concatenate([a.ravel() for a in y])
    keep = np.isfinite(s)
    return s[keep], y[keep]


def metrics_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    cols = ["method", "uses_embeddings", "evidence", "level", "patch_size", "n_items", "auroc", "ap", "best_f1", "otsu_f1",
            "otsu_iou", "p_at_1pct", *SYNTHETIC_KEYS[2:], "seconds"]
    return df[[c for c in cols if c in df.columns]].sort_values(["level", "patch_size", "auroc"], ascending=[True, True, False], na_position="first")


def write_outputs(out: Path, result: dict, curves: dict) -> None:
    """Write the outputs of ``result`` (:data:`OUTPUTS`) into ``out``: all into a temporary folder beside it
    first, then moved in; the outputs of an earlier run that this one did not write are removed (other files
    in ``out`` are left alone). An error before the move leaves ``out`` as it was."""
    out = check_out(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot be written: {exc.strerror or exc}; choose another --out", out) from exc
    try:
        _write_all(staging, result, curves)
        written = sorted(f.name for f in staging.iterdir())
        taken = [name for name in written if (out / name).exists() and not (out / name).is_file()]
        if taken:  # before the first move: a half-moved set mixed two runs' outputs
            raise OutputError(f"holds {', '.join(taken)} as a folder, where the benchmark writes a file of that name; "
                              "move it or choose another --out", out)
        try:
            out.mkdir(exist_ok=True)
            for name in written:
                os.replace(staging / name, out / name)
            for name in OUTPUTS:
                if name not in written and (out / name).is_file():
                    (out / name).unlink()
        except OSError as exc:
            raise OutputError(f"cannot be written: {exc.strerror or exc}; choose another --out", out) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def produced_by(result: dict) -> str:
    """One line: the changescout version and the settings that produced ``result`` (what a reader of the
    markdown needs to match it to a run: a --fine-patch 4 run read like one of 8 px)."""
    protocol, settings = result.get("protocol") or {}, result.get("settings") or {}
    parts = [f"changescout {result.get('changescout', 'version not recorded')}"]
    if "fine_patch" in protocol:
        parts.append(f"encoders embed {protocol['fine_patch']} px fine patches")
    if "coregister" in protocol:
        parts.append(f"co-registration {protocol['coregister']}, months {protocol.get('months')}")
    if settings.get("seeds"):
        parts.append("seeds " + ",".join(map(str, settings["seeds"])))
    for name, record in (protocol.get("encoders") or {}).items():  # (a seed, pretrained weights by their digest)
        said = ([f"seed {record['seed']}"] if "seed" in record else []) + (
            [f"weights sha256 {record['weights_sha256'][:12]}"] if record.get("weights_sha256") else [])
        if said:
            parts.append(f"{name} {', '.join(said)}")
    return "Produced by " + "; ".join(parts) + "."


def _write_all(out: Path, result: dict, curves: dict) -> None:
    write_json(out / "metrics.json", result)
    table = metrics_table(result["rows"])
    if "patch_size" in table:  # whole pixels, and "pixel" rows have none: not 16.000 and nan
        table["patch_size"] = table["patch_size"].map(lambda v: "-" if pd.isna(v) else str(int(v)))
    where = f" ({result['root']})" if result.get("root") else ""  # (the synthetic series have no root of their own)
    text = (f"# Benchmark: {result['dataset']}{where}\n\n{produced_by(result)}\n\n"
            + table.to_markdown(index=False, floatfmt=".3f") + "\n")
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
        tmp.write_text(text, encoding="utf-8")
    with atomic_path(out / "per_item.csv") as tmp:
        pd.DataFrame(result["per_item"]).to_csv(tmp, index=False)
    if result.get("rows") and any(r.get("evidence") for r in result["rows"]):
        with atomic_path(out / "ablation.md") as tmp:
            tmp.write_text(ablation_markdown(result), encoding="utf-8")
    if curves:  # (the synthetic benchmark scores whole runs: it has no score maps to draw curves of)
        _plot_curves(out, curves)


#: Margins of issue 6: the best method using embeddings against the best variant (raw or calibrated) of the
#: four baselines, on pooled patch-16 AUROC (difference) and AP (ratio).
MARGIN_AUROC, MARGIN_AP = 0.03, 1.3


def ablation_markdown(result: dict, patch: int = PATCH_SIZES[0]) -> str:
    """Patch-``patch`` ablation of a run: pooled and per-item AUROC/AP of the best baseline variant, the best
    method per kind of evidence (spectra only, embedding only, combined), the margins of the best method that
    uses embeddings, and a leave-one-item-out check of the choice of method.

    Methods whose AUROC/AP is undefined (NaN: no item with both changed and unchanged patches, items smaller
    than a patch) are never chosen as the best; when no baseline has a pooled AUROC the ablation says so, and
    the notes of the run say why."""
    rows = pd.DataFrame(result["rows"])
    rows = rows[(rows["level"] == "patch") & (rows["patch_size"] == patch)].set_index("method")
    per = pd.DataFrame(result["per_item"])
    per = per[(per["level"] == "patch") & (per["patch_size"] == patch)]
    auc, ap = per.pivot(index="item", columns="method", values="auroc"), per.pivot(index="item", columns="method", values="ap")
    four = [m for m in rows.index if m in BASELINES or (m.endswith("-cal") and m[:-4] in BASELINES)]
    kinds = {k: list(rows.index[rows["evidence"] == k]) for k in ("spectra", "embedding", "embedding+spectra")}
    emb = kinds["embedding"] + kinds["embedding+spectra"]

    def best(names, key):  # the method with the highest finite value, None when none has one
        values = rows.loc[list(names), key].astype(float).dropna()
        return values.idxmax() if len(values) else None

    notes = [n for n in result.get("notes", []) if "undefined" in n or "too small" in n]
    notes = (["## Notes", "", *(f"- {n}" for n in notes), ""]) if notes else []
    text = [f"# Ablation: {result['dataset']}, patches of {patch} px", "", produced_by(result), "",
            "Pooled over items (micro) and per item. 'Four baselines' are cva-raw, cva-z, irmad and pca-kmeans, raw "
            "or calibrated (robust z per item, the same calibration as every -cal method). Calibration does not "
            "change an item's own AUROC/AP, only the pooled ones.", ""]
    if not four:
        return "\n".join(text + ["No baseline in this run."] + notes) + "\n"
    ref_auc, ref_ap = best(four, "auroc"), best(four, "ap")
    if ref_auc is None or ref_ap is None:
        return "\n".join(text + [f"No baseline variant has a pooled AUROC and AP at {patch} px patches (undefined: "
                                 "see the notes), so there is nothing to compare against.", ""] + notes) + "\n"
    a0, p0 = float(rows.loc[ref_auc, "auroc"]), float(rows.loc[ref_ap, "ap"])
    text += [f"Best baseline variant: AUROC {a0:.3f} ({ref_auc}), AP {p0:.3f} ({ref_ap}). Margins asked: AUROC "
             f">= {a0 + MARGIN_AUROC:.3f} and AP >= {MARGIN_AP * p0:.3f}.", ""]
    # pooled table: best few per kind
    table = []
    groups = (("four baselines", four), ("spectra, other", [m for m in kinds["spectra"] if m not in four]),
              ("embedding", kinds["embedding"]), ("embedding+spectra", kinds["embedding+spectra"]))
    for kind, names in groups:
        for m in rows.loc[names].sort_values("auroc", ascending=False).index:
            a, p = float(rows.loc[m, "auroc"]), float(rows.loc[m, "ap"])
            table.append({"evidence": kind, "method": m, "auroc": a, "ap": p, "d_auroc": a - a0, "ap_ratio": p / p0,
                          "margins": "yes" if (a - a0 >= MARGIN_AUROC and p / p0 >= MARGIN_AP) else "no"})
    text += ["## Pooled", "", pd.DataFrame(table).to_markdown(index=False, floatfmt=".3f"), ""]
    # verdict
    b_auc, b_ap = (best(emb, "auroc"), best(emb, "ap")) if emb else (None, None)
    if emb and (b_auc is None or b_ap is None):
        text += ["## Verdict", "", f"- No method using embeddings has a pooled AUROC and AP at {patch} px patches.", ""]
    elif emb:
        both = [r["method"] for r in table if r["margins"] == "yes"]
        spectra_any = kinds["spectra"]
        s_auc, s_ap = best(spectra_any, "auroc"), best(spectra_any, "ap")
        text += ["## Verdict", "",
                 f"- Best method using embeddings by AUROC: {b_auc}, AUROC {rows.loc[b_auc, 'auroc']:.3f} "
                 f"({rows.loc[b_auc, 'auroc'] - a0:+.3f}), AP {rows.loc[b_auc, 'ap']:.3f} ({rows.loc[b_auc, 'ap'] / p0:.2f}x).",
                 f"- Best method using embeddings by AP: {b_ap}, AUROC {rows.loc[b_ap, 'auroc']:.3f} "
                 f"({rows.loc[b_ap, 'auroc'] - a0:+.3f}), AP {rows.loc[b_ap, 'ap']:.3f} ({rows.loc[b_ap, 'ap'] / p0:.2f}x).",
                 f"- Methods meeting both margins (+{MARGIN_AUROC} AUROC and {MARGIN_AP}x AP): "
                 + (", ".join(both) if both else "none") + ".",
                 f"- Best spectra-only method of any kind (incl. the aggregation variants): AUROC {rows.loc[s_auc, 'auroc']:.3f} "
                 f"({s_auc}), AP {rows.loc[s_ap, 'ap']:.3f} ({s_ap}); the best embedding method against it: AUROC "
                 f"{rows.loc[b_auc, 'auroc'] - rows.loc[s_auc, 'auroc']:+.3f}, AP {rows.loc[b_ap, 'ap'] / rows.loc[s_ap, 'ap']:.2f}x.", ""]
    # per item
    cols = dict.fromkeys([ref_auc, ref_ap] + [best(n, "auroc") for n in kinds.values() if n]
                         + [best(n, "ap") for n in kinds.values() if n])
    cols = [c for c in cols if c is not None]
    for key, frame in (("AUROC", auc), ("AP", ap)):
        t = frame[cols].copy()
        t.loc["mean over items"] = t.mean()
        text += [f"## Per item: {key}", "", t.to_markdown(floatfmt=".3f"), ""]
    # leave one item out: choose the method on the other items (mean per-item AUROC), score the held-out item
    scored = auc.dropna(how="all")  # items with a defined AUROC for some method
    if len(scored) < 3 <= len(auc):
        text += ["## Leave one item out", "", f"Not done: {len(scored)} item(s) of {len(auc)} have a defined AUROC at "
                 f"{patch} px patches, at least 3 are needed.", ""]
    if len(scored) >= 3:
        loo = []
        for family, names in (("four baselines", four), ("spectra only", kinds["spectra"]),
                               ("embedding only", kinds["embedding"]), ("combined", kinds["embedding+spectra"]),
                               ("any using embeddings", emb)):
            if not names:
                continue
            picks, a_held, p_held = [], [], []
            for item in scored.index:
                others = scored.drop(index=item)[names].mean().dropna()
                if not len(others):
                    continue
                m = others.idxmax()
                picks.append(m)
                a_held.append(scored.loc[item, m])
                p_held.append(ap.loc[item, m])
            if not picks:
                continue
            loo.append({"family": family, "held-out AUROC (mean)": _finite_mean(a_held),
                        "held-out AP (mean)": _finite_mean(p_held),
                        "methods chosen": ", ".join(f"{m} x{picks.count(m)}" for m in dict.fromkeys(picks))})
        text += ["## Leave one item out", "",
                 "For each item, the method of a family with the best mean per-item AUROC on the other items, "
                 "scored on the held-out item (an estimate free of choosing the method on the item itself).", "",
                 pd.DataFrame(loo).to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(text + notes) + "\n"


def _finite_mean(values) -> float:
    """Mean of the finite ``values``; NaN (without numpy's warning) when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


MAX_CURVES = 12


def _is_plain(name: str) -> bool:
    """A baseline or an encoder as it is: no modifier, no combination, no calibration."""
    try:
        m = parse_method(name)
    except ConfigError:
        return False
    return not (m.modifiers or m.baseline_modifiers or m.calibrated or m.evidence == "embedding+spectra")


def _plot_curves(out: Path, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    if len(curves) > MAX_CURVES:  # the plain methods and the best others, by AUROC, readable in one plot
        from sklearn.metrics import roc_auc_score

        auc = {m: roc_auc_score(y, s) if len(np.unique(y)) == 2 else 0.0 for m, (s, y) in curves.items()}
        plain = [m for m in curves if _is_plain(m)]
        keep = dict.fromkeys(sorted(plain, key=auc.get, reverse=True)[:MAX_CURVES // 2]
                             + sorted(curves, key=auc.get, reverse=True))
        curves = {m: curves[m] for m in list(keep)[:MAX_CURVES]}
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(5, 5))
        drawn = 0
        for method, (s, y) in curves.items():
            if len(np.unique(y)) < 2:
                continue
            drawn += 1
            if kind == "roc":
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, label=method)
            else:
                prec, rec, _ = precision_recall_curve(y, s)
                ax.plot(rec, prec, label=method)
        ax.set_xlabel("false positive rate" if kind == "roc" else "recall")
        ax.set_ylabel("true positive rate" if kind == "roc" else "precision")
        ax.set_title(f"{kind.upper()}, patches of {PATCH_SIZES[0]} px")
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no curve: the {PATCH_SIZES[0]} px patches are\nnot both changed and unchanged",
                    ha="center", va="center", transform=ax.transAxes)
        with atomic_path(out / f"{kind}.png") as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
        plt.close(fig)
