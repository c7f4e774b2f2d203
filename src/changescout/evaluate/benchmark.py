"""``changescout benchmark``: encoders, classic baselines and their combinations against labelled change.

Every labelled pair of a dataset (an OSCD city, a LEVIR-CD style A/B pair, two consecutive DynamicEarthNet
months) is scored by each method into a per-pixel change map, and the maps are evaluated with
:mod:`changescout.evaluate.metrics` at pixel level and at patch level (16 and 32 px), pooled over all items
and per item.

Preprocessing, the same for every method: the second date is co-registered onto the first
(:func:`coregistered`, ``coregister="auto"``). Encoders are told the same month for both dates
(``months="first"``, :func:`with_months`): a protocol choice for two-date change detection, since the month is
an input of galileo-nano's tokens and two dates of different seasons would otherwise differ by the month code
alone (7 OSCD cities, 8 px tokens: pooled patch-16 AUROC 0.830 with the first date's month, 0.832 with the
second's, 0.768 with each date's own).

Methods (names, evidence, scores) are in :mod:`changescout.evaluate.methods`, the files a run writes in
:mod:`changescout.evaluate.benchmark_outputs`; the names other code imports from here are re-exported.

A metric that is undefined is NaN (null in ``metrics.json``): an item needs both changed and unchanged pixels (or
patches) for its AUROC and AP, and an item smaller than a patch has no patch at that level. The notes say which
items and levels; a dataset with no changed pixel at all (or no unchanged one) is refused before any scoring.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..encoders.base import PretrainedEncoder, select_bands
from ..errors import BandError, ConfigError, InputError, check_param
from .benchmark_outputs import OUTPUTS, metrics_table  # noqa: F401 (re-exported: the CLI imports them from here)
from .benchmark_outputs import SYNTHETIC_KEYS, _clean, _clean_nested, _curve_data, check_out, write_outputs
from .methods import parse_method, with_months  # noqa: F401 (re-exported)
from .methods import (MONTHS, PATCH_SIZES, SUPPORT, WHITEN_COMPONENTS, WHITEN_DISTANCE, EncoderPool, Sources,
                      available_encoders_with_weights, encoder_options, resolve_methods, score_method, scored_unit)
from .metrics import Item, evaluate_items, patch_level, spread

DATASETS = ("oscd", "pairs", "dynamicearthnet", "synthetic")


@dataclass
class Pair:
    """One labelled date pair: ``a`` and ``b`` ``(band, H, W)`` reflectance, its label and valid mask."""

    name: str
    cube: object  # two-date SeriesCube (time, band, y, x), loaded
    label: np.ndarray
    valid: np.ndarray
    notes: list = field(default_factory=list)
    records: dict = field(default_factory=dict)
    encoder_cube: object = None  # what encoders see, when it differs from ``cube`` (see :func:`coregistered`)
    files: tuple = ()  # the files it was read from, for messages


def load_pairs(dataset: str, root: str | Path) -> list[Pair]:
    """The labelled date pairs of ``dataset`` under ``root``."""
    root = Path(root)
    if not root.is_dir():  # (a file was told as "<file>/A: missing", a missing root as "<root>/A: missing")
        raise InputError("is a file, not the dataset's folder" if root.exists() else "does not exist", root)
    if dataset == "oscd":
        from ..sources import oscd

        return [_pair(oscd.load_item(root, c)) for c in oscd.list_items(root)]
    if dataset == "pairs":
        from ..sources import pairs

        out = []
        for name in pairs.list_items(root):
            item = pairs.load_item(root, name)
            note = ("pixel coordinates: the pairs have no CRS and no dates" if pairs.is_pixel_grid(item.cube) else
                    f"the pairs have no dates: {', '.join(pairs.PLACEHOLDER_DATES)} stand for them")
            out.append(_pair(item, [note]))
        return out
    if dataset == "dynamicearthnet":
        from ..sources import dynamicearthnet as den

        out = []
        for name in den.list_items(root):
            item = den.load_item(root, name)
            cube = item.cube.compute()
            for i in range(cube.sizes["time"] - 1):
                label, valid = item.labels.binary(i)
                t0, t1 = (pd.Period(cube["time"].values[j], "M") for j in (i, i + 1))
                # a month without image or label between them: the pair spans more, and says so (a review: it was
                # named after its first month alone, as a one-month pair)
                tag = f"{name}-{t0:%Y%m}" + (f"-{t1:%Y%m}" if (t1 - t0).n > 1 else "")
                notes = [f"{tag} spans {(t1 - t0).n} months: a month between has no image or no label"] if (t1 - t0).n > 1 else []
                out.append(Pair(tag, cube.isel(time=[i, i + 1]), label, valid & _finite(cube.isel(time=[i, i + 1])), notes))
        return out
    raise ConfigError(f"unknown benchmark dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def dataset_notes(dataset: str, root: str | Path) -> list[str]:
    """What the dataset under ``root`` holds but :func:`load_pairs` leaves out (OSCD: cities with no change
    label, folders that are not cities), one sentence each."""
    if dataset == "oscd":
        from ..sources import oscd

        return oscd.skipped(root)
    if dataset == "dynamicearthnet":
        from ..sources import dynamicearthnet as den

        return den.skipped(root)
    return []


def _finite(cube) -> np.ndarray:
    return np.isfinite(np.asarray(cube.values)).all(axis=(0, 1))


def _pair(item, notes=()) -> Pair:
    cube = item.cube.compute()
    return Pair(item.name, cube, np.asarray(item.label, bool), np.asarray(item.valid, bool), list(notes),
                files=_files(item))


def _files(item) -> tuple:
    """The image files of a loaded item (:attr:`.sources.labelled.LabelledPair.files`), for messages."""
    files = getattr(item, "files", None) or {}
    return tuple(str(f) for f in (files.values() if isinstance(files, dict) else files))


# -- preprocessing shared by every method ------------------------------------------------------------------------
def coregistered(pair: Pair, mode: str = "auto") -> Pair:
    """``pair`` with its second date co-registered onto the first (:func:`changescout.coregister.coregister`,
    reference = the first date, on whose grid the labels sit). Pixels moved in from outside the image become
    NaN and invalid (left out of every method's evaluation); for encoders, which cannot take NaN, they are
    filled with the nearest pixel of the same date (:func:`fill_moved_in`)."""
    from ..coregister import coregister

    cube, record = coregister(pair.cube, mode, reference="first", edge="nodata")  # moved-in pixels: see above
    if record.get("status") != "done":
        return replace(pair, notes=[*pair.notes], records={"coregister": record})
    cube = cube.compute()
    return replace(pair, cube=cube, valid=pair.valid & _finite(cube), notes=[*pair.notes], records={"coregister": record},
                   encoder_cube=fill_moved_in(cube, pair.cube))


def fill_moved_in(cube, before):
    """``cube`` where pixels that were finite in ``before`` but are NaN now (moved in from outside the grid by
    co-registration) take the value of the nearest finite pixel of the same date and their quality in ``before``.
    (What the pipeline's co-registration does itself, ``edge="nearest"``; the benchmark shifts with
    ``edge="nodata"`` so that its evaluation can leave those pixels out.)

    Left as NaN (NODATA), an encoder would see them as 0: the border tokens of the moved date then differ from
    the other date's for no reason, and their distances (measured: galileo-nano on the 7 OSCD cities, pooled
    calibrated patch-16 AP 0.42 instead of 0.52) top the ranking."""
    from scipy import ndimage

    v = np.array(cube.values, dtype=np.float32)
    q = np.array(cube["quality"].values)
    v0, q0 = np.asarray(before.values), np.asarray(before["quality"].values)
    changed = False
    for t in range(v.shape[0]):
        now = np.isfinite(v[t]).all(axis=0)
        moved_in = ~now & np.isfinite(v0[t]).all(axis=0)
        if not moved_in.any() or not now.any():
            continue
        idx = ndimage.distance_transform_edt(~now, return_distances=False, return_indices=True)
        nearest = v[t][:, idx[0], idx[1]]
        v[t][:, moved_in] = nearest[:, moved_in]
        q[t][moved_in] = q0[t][moved_in]
        changed = True
    return cube.copy(data=v).assign_coords(quality=(("time", "y", "x"), q)) if changed else cube


def run_benchmark(dataset: str, root: str | Path, encoders=None, out: str | Path | None = None,
                  baselines=None, fine_patch: int = 8, log=print, seeds=(0, 1, 2, 3, 4), methods=None,
                  coregister: str = "auto", months: str = "first", cache=None) -> dict:
    """Score every item with every method; write the outputs in ``out`` (if given); return ``metrics.json``.

    ``methods`` (names, :func:`parse_method`) overrides ``baselines`` and ``encoders``. Every item is
    co-registered first (``coregister``: auto, on, off; the same for every method); encoders are told the
    month ``months`` (:func:`with_months`). ``cache`` (default ``$CHANGESCOUT_BENCHMARK_CACHE``) keeps the
    embeddings of pretrained encoders on disk between runs. :class:`OutputError` before any work when ``out``
    cannot be a folder of outputs; :class:`InputError` when no item has both changed and unchanged pixels."""
    if out is not None:
        out = check_out(out)
    if dataset == "synthetic":
        if baselines:  # (taken and ignored)
            raise ConfigError("--baselines applies to the labelled datasets (oscd, pairs, dynamicearthnet); the synthetic "
                              "benchmark runs encoders through the whole pipeline")
        if encoders is not None and not encoders:  # (a KeyError once every series was made)
            raise ConfigError('--encoders "" leaves the synthetic benchmark nothing to run: it has no baselines')
        result = {**run_synthetic(root, encoders, seeds=seeds, log=log), "changescout": __version__,
                  "settings": {"encoders": encoders, "seeds": list(seeds)}}
        if out is not None:
            write_outputs(out, result, {})
        return result
    # before any work: a fine patch that is no whole part of the 16 px patches failed minutes later, in an encoder
    check_param(None, "--fine-patch", fine_patch, 1, PATCH_SIZES[0], integer=True)
    if PATCH_SIZES[0] % fine_patch:
        raise ConfigError(f"--fine-patch must divide the {PATCH_SIZES[0]} px patches the benchmark scores (1, 2, 4, 8 "
                          f"or 16), got {fine_patch}")
    if months not in MONTHS:
        raise ConfigError(f"months must be one of {', '.join(MONTHS)}, got {months!r}")
    cache = cache if cache is not None else os.environ.get("CHANGESCOUT_BENCHMARK_CACHE") or None
    unloadable = []  # encoders whose weights are there but will not load: named, not left out silently
    wanted = resolve_methods(baselines, encoders, methods, skipped=unloadable)  # (an unknown name: told before the data)
    for note in unloadable:
        log(note)
    if not wanted:  # (a KeyError once every item was read and co-registered)
        raise ConfigError('no method to run: --encoders "" and --baselines "" leave none')
    pairs = load_pairs(dataset, root)
    if not pairs:
        raise InputError(f"no labelled items found for dataset {dataset!r}", root)
    found = dataset_notes(dataset, root)
    for note in found:
        log(f"note: {note}")
    check_scorable(pairs, root)
    pool = EncoderPool()
    bands = [str(b) for b in pairs[0].cube["band"].values]
    explicit = encoders is not None or methods is not None
    # an encoder that cannot take these bands: refused (named) or skipped before any method runs, not after the
    # baselines' minutes of work are thrown away (a review)
    unusable, skipped = {}, list(unloadable)
    for encoder in dict.fromkeys(m.encoder for m in wanted if m.encoder is not None):
        if pool.get(encoder, fine_patch).spec.input == "embeddings":  # (its cosine of reflectance counted as embeddings)
            raise ConfigError(f"{encoder} reads embeddings made elsewhere, stored as the bands of a cube; the "
                              f"{dataset} benchmark's items hold reflectance ({', '.join(bands)}): name an encoder "
                              "that embeds reflectance")
        try:
            enc = pool.get(encoder, fine_patch)
            if hasattr(enc, "for_bands"):  # a pretrained model masking the groups these bands lack (RGB pairs)
                enc = enc.for_bands(pairs[0].cube)
            select_bands(pairs[0].cube, enc.spec)
            unusable[encoder] = None
        except BandError as exc:
            if explicit:
                raise
            unusable[encoder] = exc.message
            skipped.append(f"{encoder} skipped (and its variants): {exc.message}")
            log(skipped[-1])
    t = time.perf_counter()
    pairs = [coregistered(p, coregister) for p in pairs]
    log(f"co-registration ({coregister}): {time.perf_counter() - t:.1f} s")
    undefined = label_notes(pairs)
    for note in undefined:
        log(f"note: {note}")
    sources = [Sources(p, fine_patch, months, cache, pool) for p in pairs]
    rows, per_item, curves, spreads = [], [], {}, []
    units = [scored_unit(m, fine_patch) for m in wanted]
    for method in wanted:
        if method.encoder is not None and unusable[method.encoder] is not None:
            continue
        items, seconds = [], 0.0
        for src in sources:
            src.used, before = set(), set(src.seconds)
            t = time.perf_counter()
            try:
                score = score_method(method, src)
            except InputError as exc:  # (one blank tile among hundreds stopped the benchmark, naming no item)
                files = ", ".join(map(str, src.pair.files)) if src.pair.files else src.pair.name
                raise type(exc)(f"{method.name} cannot score the item {src.pair.name} ({files}): {exc.message}; "
                                "leave the item out of --root, or the method out", exc.path) from exc
            # the method's own work, plus every source it used (computed now or shared with an earlier method)
            own = time.perf_counter() - t - sum(v for k, v in src.seconds.items() if k not in before)
            seconds += max(own, 0.0) + sum(src.seconds[k] for k in src.used)
            items.append(Item(src.pair.name, score, src.pair.label, src.pair.valid))
        log(f"{method.name}: {len(items)} items in {seconds:.1f} s")
        levels = [("pixel", None)] + [("patch", p) for p in PATCH_SIZES]
        for level, p in levels:
            # every method on the same pixels (:func:`whole_patches`): a method scored on its own was compared on
            # other positives (cva-z on bercy: AP 0.153 on its pixels, 0.100 on cva-z-p4-top4's)
            scored = items if level == "patch" else [replace(i, valid=whole_patches(i, units)) for i in items]
            row, items_metrics = evaluate_items(method.name, scored, level=level, patch_size=p,
                                                uses_embeddings=method.uses_embeddings, seconds=round(seconds, 2))
            rows.append({**row.to_dict(), "evidence": method.evidence})
            per_item += [{"method": method.name, "level": level, "patch_size": p, **m} for m in items_metrics]
            spreads.append({"method": method.name, "level": level, "patch_size": p, **spread(items_metrics, ("auroc", "ap"))})
        curves[method.name] = _curve_data(items, PATCH_SIZES[0])
    unit = max(units)  # (per item, the largest of the units that fits it: whole_patches)
    pixel_set = (f"pixel-level rows score every method on the same pixels, those of whole {unit} px squares (the "
                 "largest square a method of this run scores whole), so they move when the run's methods change"
                 if unit > 1 else "pixel-level rows score every valid pixel")
    notes = (found + sorted({n for pair in pairs for n in pair.notes}) + undefined + skipped
             + _preprocessing_notes(pairs, coregister, months, wanted) + [pixel_set])
    result = {"dataset": dataset, "root": str(Path(root).resolve()), "rows": rows, "spread": _clean_nested(spreads),
              "per_item": _clean(per_item), "notes": notes, "changescout": __version__,
              "settings": {"encoders": encoders, "baselines": baselines, "methods": [m.name for m in wanted]},
              "protocol": {"coregister": coregister, "months": months, "fine_patch": fine_patch, "support": SUPPORT,
                           "pixel_level_squares": unit,
                           "encoders": {e: _encoder_record(pool.get(e, fine_patch), fine_patch)
                                        for e in dict.fromkeys(m.encoder for m in wanted if m.encoder is not None)
                                        if unusable[e] is None},
                           "whiten_components": WHITEN_COMPONENTS, "whiten_distance": WHITEN_DISTANCE,
                           "coregistration": {p.name: p.records.get("coregister") for p in pairs}}}
    if out is not None:
        write_outputs(out, result, curves)
    return result


def _encoder_record(encoder, fine_patch: int) -> dict:
    """What reproduces an encoder's rows: its options here, its seed (rcf: learnt from each item's own pixels
    with it), and a pretrained model's weights digest."""
    record = {"options": encoder_options(encoder.spec.name, fine_patch)}
    if getattr(encoder, "seed", None) is not None:
        record["seed"] = int(encoder.seed)
    if isinstance(encoder, PretrainedEncoder):
        record["weights_sha256"] = encoder.weights_digest()
    return record


def whole_patches(item: Item, units: list[int]) -> np.ndarray:
    """The pixels every method is scored on at pixel level: the item's valid ones less the bottom and right strips
    that make no whole square of the largest of the methods' ``units`` (:func:`methods.scored_unit`) that fits
    the item. Encoders, and the -pN, -max and -topK variants, have no score on those strips; a method whose
    squares do not fit the item has none at all (its pixel-level metrics are undefined there)."""
    valid = np.ones(item.label.shape, bool) if item.valid is None else np.asarray(item.valid, bool)
    size = max([u for u in units if u <= min(valid.shape)], default=1)
    out = np.zeros_like(valid)
    h, w = (valid.shape[0] // size) * size, (valid.shape[1] // size) * size
    out[:h, :w] = valid[:h, :w]
    return out


def check_scorable(pairs: list[Pair], root) -> None:
    """:class:`InputError` unless the valid pixels of ``pairs``, pooled, hold both changed and unchanged ones:
    otherwise no AUROC or AP can be computed at any level, and the labels were likely misread."""
    labels = [p.label[p.valid] for p in pairs]
    n = sum(y.size for y in labels)
    changed = sum(int(y.sum()) for y in labels)
    if n and 0 < changed < n:
        return
    items = f"the {len(pairs)} labelled item(s) ({_listed([p.name for p in pairs], 5)})"
    what = (f"no pixel of {items} is valid" if not n else
            f"every pixel of {items} is labelled as {'no change' if not changed else 'change'}")
    raise InputError(f"nothing to score: {what}, so AUROC and AP are undefined; check the label files and how they "
                     "code change", root)


def _level_labels(pair: Pair, p: int | None) -> np.ndarray:
    """The labels of ``pair``'s valid pixels (``p`` None) or of its ``p`` px patches that hold a valid pixel."""
    if p is None:
        return pair.label[pair.valid]
    counted, labels = patch_level(np.ones(pair.label.shape, np.float32), pair.label, p, valid=pair.valid)
    return labels[np.isfinite(counted)]


def _listed(names: list[str], most: int = 10) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _level_name(p: int | None) -> str:
    return "pixel level" if p is None else f"{p} px patches"


def label_notes(pairs: list[Pair]) -> list[str]:
    """Where metrics will be undefined (NaN), and why: items smaller than a patch (scored at pixel level, or
    at the smaller patch size, only), and per level the items that have only changed or only unchanged pixels
    or patches (their own AUROC and AP are NaN; the pooled ones too when no item has both)."""
    notes, small = [], {}
    for pair in pairs:
        h, w = pair.label.shape
        sizes = tuple(p for p in PATCH_SIZES if h < p or w < p)
        if sizes:
            small.setdefault(sizes, []).append(f"{pair.name} ({h}x{w} px)")
    for sizes, names in small.items():
        px = " and ".join(map(str, sizes))
        what = "scored at pixel level only" if len(sizes) == len(PATCH_SIZES) else f"not in the {px} px patch rows"
        notes.append(f"too small for {px} px patches ({what}): {_listed(names)}")
    one_class: dict = {}  # (no change or only change, levels) -> items
    for pair in pairs:
        states = {}
        for p in (None, *PATCH_SIZES):
            y = _level_labels(pair, p)
            if y.size and (y.all() or not y.any()):
                states.setdefault("only change" if y.all() else "no change", []).append(p)
        for state, levels in states.items():
            one_class.setdefault((state, tuple(levels)), []).append(pair.name)
    for (state, levels), names in one_class.items():
        notes.append(f"{state} in {_listed(names)}: per-item AUROC and AP undefined (NaN) at "
                     f"{', '.join(_level_name(p) for p in levels)}")
    for p in (None, *PATCH_SIZES):
        labels = [y for y in (_level_labels(pair, p) for pair in pairs) if y.size]
        if labels and all(y.all() or not y.any() for y in labels):
            y = np.concatenate(labels)
            pooled = ", the pooled ones too" if y.all() or not y.any() else ""
            unit = "pixels" if p is None else f"{p} px patches"
            notes.append(f"no item has both changed and unchanged {unit}: per-item AUROC and AP undefined "
                         f"(NaN) at that level{pooled}")
    return notes


def _preprocessing_notes(pairs, coregister, months, methods) -> list[str]:
    shifted = []
    for p in pairs:
        rec = p.records.get("coregister") or {}
        for date, s in (rec.get("shifts") or {}).items():
            if s.get("applied"):
                shifted.append(f"{p.name} {s['dy']:+.2f},{s['dx']:+.2f}")
    notes = [f"co-registration {coregister} (second date onto the first, every method): "
             + (f"shifted (dy,dx px) {'; '.join(shifted)}" if shifted else "no shift applied")]
    if any(m.uses_embeddings for m in methods):
        notes.append(f"encoders told the month: {months} (both dates the same month unless 'actual')")
    if any(m.calibrated or m.evidence == "embedding+spectra" or "ms" in m.modifiers for m in methods):
        notes.append(f"-cal and combinations: robust z per image (median, 1.4826 MAD of {SUPPORT} px block means)")
    return notes


def run_synthetic(root, encoders=None, seeds=(0, 1, 2, 3, 4), log=print) -> dict:
    """Every encoder through the whole pipeline on planted-change series (``evaluate/synthetic.py``): the
    synthetic series of each seed and, when ``root`` holds the shared Bouconne series, the same changes
    planted into it. One row per encoder and background, the measures averaged over seeds."""
    from .synthetic import BOUCONNE, evaluate, series

    if root is not None and not (Path(root) / BOUCONNE).exists():  # (it was dropped silently, the root recorded)
        raise InputError(f"holds no {BOUCONNE}: --root of the synthetic benchmark is the folder holding the shared "
                         "data/ (the Bouconne background of the planted series); leave it out for the synthetic "
                         "background alone", root)
    backgrounds = ["synthetic"] + (["bouconne"] if root is not None else [])
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
    return {"dataset": "synthetic", "root": None if root is None else str(Path(root).resolve()), "rows": _clean(rows),
            "per_item": _clean(per_item), "notes": ["means over seeds " + ",".join(map(str, seeds))]}
