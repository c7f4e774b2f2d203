"""Planted ground truth (:class:`PlantedTruth`), events labelled against it, and a ranking scored with it.

An object is *active* in an event ``(row, col, t0, t1)`` when it covers at least ``min_cover`` of the patch and
its state differs between ``t0`` and ``t1`` (its onset, or its end, falls in ``(t0, t1]``). Objects that
cover less than twice ``min_cover`` of their best patch (roads, small or oddly placed shapes) are active where
they cover at least half of their best patch: the threshold goes down smoothly with the best cover, so that a
road crossing one patch at 0.26 and the others at 0.15 is the road in all of them (a threshold of ``min_cover``
once one patch reaches it would leave its other patches out). Events are positive when a non-cloud object is active, ignored (-1) when the only differing non-cloud
objects cover too little of the patch, negative otherwise; clouds are negatives, tagged ``truth_kind == "cloud"``.

*The background's own harvests*: the crop fields of a synthetic scene green up and go bare with their season
(:func:`changescout.sources.synthetic.make_series`), and a field going from green to bare between two dates is a
harvest as much as a planted one is; the planted truth does not list it. Where the truth knows the crops'
phenology weight (``PlantedTruth.green``), a negative event whose patch is covered for at least ``min_cover`` by
such a field (green enough at ``t0`` to be harvested, a weight above :data:`GREEN`, about the NDVI of 0.5 that a
planted harvest needs, and at ``t1`` with at most half of that weight left) is tagged ``truth_type == "harvest"``,
``truth_kind == "seasonal"``. It stays a negative: a harvest of the crop cycle is what the ranking should *not*
put first. Similar-change search counts it as a harvest in the second of its precision figures
(:func:`changescout.evaluate.synthetic.search_scores`); the first counts planted changes only.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio import features
from sklearn.metrics import average_precision_score, roc_auc_score

from ..cube import OutputGrid
from ..errors import ConfigError
from ..tiling import PatchGrid


#: Phenology weight above which a crop field is green enough to be harvested (about NDVI 0.5 in the synthetic scene).
GREEN = 0.3


@dataclass
class PlantedTruth:
    """Planted objects: the ``objects`` table, their pixel ``masks`` ``(object, y, x)`` on ``grid``.

    ``objects`` columns: ``object_id``, ``type``, ``kind`` (``common``/``rare``/``cloud``), ``onset`` (first
    date showing the new state), ``end`` (first date where it is gone again, NaT if it stays), ``pixels``.
    ``green``: where the background is known (synthetic scenes), the crops' phenology weight ``(time, y, x)`` at
    the dates ``times`` (0 bare, 1 full green; NaN off crops), which tells the background's own harvests.
    """

    objects: pd.DataFrame
    masks: np.ndarray
    grid: OutputGrid
    green: np.ndarray | None = None
    times: pd.DatetimeIndex | None = None

    def harvested(self, patch_size: int, t0, t1) -> np.ndarray:
        """Fraction of each patch ``(row, col)`` that the background harvested between ``t0`` and ``t1`` (crop
        pixels green above :data:`GREEN` at ``t0`` with at most half of it left at ``t1``; planted objects' pixels
        left out); zeros where ``green`` is unknown or a date is not one of ``times``."""
        (nr, nc), p = PatchGrid(self.grid, patch_size).shape, patch_size
        if self.green is None or self.times is None or pd.Timestamp(t0) not in self.times or pd.Timestamp(t1) not in self.times:
            return np.zeros((nr, nc))
        before, after = self.green[self.times.get_loc(pd.Timestamp(t0))], self.green[self.times.get_loc(pd.Timestamp(t1))]
        cut = (before > GREEN) & (after <= 0.5 * before)  # NaN off crops compares False
        planted = self.masks[(self.objects["kind"] != "cloud").to_numpy()].any(axis=0) if len(self.masks) else False
        cut &= ~planted
        return cut[: nr * p, : nc * p].reshape(nr, p, nc, p).mean(axis=(1, 3))

    def coverage(self, patch_size: int) -> np.ndarray:
        """Fraction of each patch of ``PatchGrid(grid, patch_size)`` covered by each object: ``(object, row, col)``."""
        (nr, nc), p = PatchGrid(self.grid, patch_size).shape, patch_size
        return self.masks[:, : nr * p, : nc * p].reshape(len(self.masks), nr, p, nc, p).mean(axis=(2, 4))

    def to_geodataframe(self):
        """The objects table with their polygons in the grid CRS."""
        shapes = (features.shapes(m.astype(np.uint8), mask=m, transform=self.grid.affine) for m in self.masks)
        geoms = [shapely.union_all([shapely.geometry.shape(g) for g, _ in parts]) for parts in shapes]
        return gpd.GeoDataFrame(self.objects.copy(), geometry=geoms, crs=self.grid.crs)


def label_events(events: pd.DataFrame, truth: PlantedTruth, patch_size: int, min_cover: float = 0.25) -> pd.DataFrame:
    """A copy of ``events`` (``row``, ``col``, ``t0``, ``t1``) with ``label``, ``truth_object``, ``truth_type``, ``truth_kind``.

    ``label`` is 1 (positive), 0 (negative) or -1 (ignored); ``truth_object`` is the object naming the event
    (the one covering most of the patch among the deciding ones), -1 and type/kind ``"none"`` when there is none.
    """
    missing = [c for c in ("row", "col", "t0", "t1") if c not in events.columns]
    if missing:
        raise ConfigError(f"events need the columns row, col, t0, t1; missing {missing}")
    cov = truth.coverage(patch_size)
    rows, cols = events["row"].to_numpy(int), events["col"].to_numpy(int)
    if len(events) and (rows.min() < 0 or cols.min() < 0 or rows.max() >= cov.shape[1] or cols.max() >= cov.shape[2]):
        raise ConfigError(f"event rows/cols fall outside the {cov.shape[1]}x{cov.shape[2]} patch grid of patch size {patch_size}")
    c = cov[:, rows, cols].T  # (event, object)
    t0 = pd.to_datetime(events["t0"]).to_numpy("datetime64[ns]")[:, None]
    t1 = pd.to_datetime(events["t1"]).to_numpy("datetime64[ns]")[:, None]
    t0, t1 = np.minimum(t0, t1), np.maximum(t0, t1)
    obj = truth.objects
    onset, end = (obj[k].to_numpy("datetime64[ns]")[None] for k in ("onset", "end"))
    differs = ((t0 < onset) & (onset <= t1)) | ((t0 < end) & (end <= t1))  # NaT compares False
    real = (obj["kind"] != "cloud").to_numpy()[None]
    # A cloud exists on its dates only: an event sees it when exactly one of its dates is cloudy (comparing
    # the clear dates around a cloud that was skipped is not a cloud event).
    cloudy = lambda t: (onset <= t) & ((t < end) | np.isnat(end))  # noqa: E731
    differs = np.where(real, differs, cloudy(t0) != cloudy(t1))
    enough = c >= np.minimum(min_cover, 0.5 * cov.max(axis=(1, 2), initial=0))[None]  # (the module docstring)
    active, marginal = differs & enough & (c > 0), differs & ~enough & (c > 0)
    pos = (active & real).any(1)
    ign = ~pos & (marginal & real).any(1)
    pick = np.where(pos[:, None], active & real, np.where(ign[:, None], marginal & real, active))
    j = np.c_[np.where(pick, c, -1.0), np.full(len(c), -0.5)].argmax(1)  # last column: no object
    out = events.copy()
    out["label"] = np.where(pos, 1, np.where(ign, -1, 0))
    out["truth_object"] = np.append(obj["object_id"].to_numpy(int), -1)[j]
    out["truth_type"] = np.append(obj["type"].to_numpy(str), "none")[j]
    out["truth_kind"] = np.append(obj["kind"].to_numpy(str), "none")[j]
    if truth.green is not None:  # the background's own harvests (the module docstring): negatives, named
        bare = (out["label"] == 0).to_numpy() & (out["truth_kind"] == "none").to_numpy()
        pairs = pd.DataFrame({"t0": t0[:, 0], "t1": t1[:, 0]})
        for (a, b), at in pairs[bare].groupby(["t0", "t1"]).groups.items():
            at = np.asarray(at)
            cut = truth.harvested(patch_size, a, b)[rows[at], cols[at]] >= min_cover
            out.iloc[at[cut], out.columns.get_indexer(["truth_type", "truth_kind"])] = ["harvest", "seasonal"]
    return out


def planted_scores(labelled: pd.DataFrame, score_col: str = "atypicality", truth: PlantedTruth | None = None) -> dict:
    """AUROC and AP of ``score_col`` on labels 0/1, rare objects found in the top 10, clouds in the top 20.

    Ranks come from a ``rank`` column when there is one (1 = top), else from sorting ``score_col`` descending.
    ``rare_missing_top10`` lists the rare objects of the table (and of ``truth`` when given) not in the top 10.
    """
    if score_col not in labelled.columns:
        raise ConfigError(f"no score column {score_col!r} in the events; columns are {list(labelled.columns)}")
    score = labelled[score_col].to_numpy(float)
    rank = labelled["rank"].to_numpy() if "rank" in labelled else pd.Series(-score).rank(method="first").to_numpy()
    y = labelled["label"].to_numpy()
    keep = y >= 0
    both = len(np.unique(y[keep])) == 2
    rare = ((labelled["label"] == 1) & (labelled["truth_kind"] == "rare")).to_numpy()
    found = sorted({int(i) for i in labelled["truth_object"].to_numpy()[rare & (rank <= 10)]})
    all_rare = set(labelled["truth_object"].to_numpy()[rare].astype(int))
    if truth is not None:
        all_rare |= set(truth.objects.loc[truth.objects["kind"] == "rare", "object_id"].astype(int))
    return {
        "auroc": float(roc_auc_score(y[keep], score[keep])) if both else float("nan"),
        "ap": float(average_precision_score(y[keep], score[keep])) if both else float("nan"),
        "rare_in_top10": found,
        "rare_missing_top10": sorted(all_rare - set(found)),
        "clouds_in_top20": int(((rank <= 20) & (labelled["truth_kind"] == "cloud").to_numpy()).sum()),
        "n_pos": int((y == 1).sum()),
        "n_neg": int((y == 0).sum()),
    }


def label_objects(labelled: pd.DataFrame, objects: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``objects`` with ``truth_object``, ``truth_type``, ``truth_kind`` from its labelled events.

    ``labelled`` are events from :func:`label_events` with an ``object_id`` (and ``surprise``, which breaks
    ties). An object is named after the planted object most of its positive patches belong to, of as many the
    one whose patches carry the more surprise; without positive patches it is a cloud when one
    of its onset patch events (those of its first ``t1``) is, else ``"none"``: the later events of an episode
    are how it ended, and a background change that a cloud crosses at its end is not a cloud. An object
    without positive patches half of whose onset patch events or more are the background's own harvests
    (``truth_kind == "seasonal"``) is one, of type ``"harvest"``.
    """
    pos = labelled[labelled["label"] == 1]
    # of as many positive patches, the planted object whose patches carry the more surprise, what the object's
    # score is made of (a tie went to whichever value_counts listed first: on the synthetic series, seed 3, a
    # construction site of 2 positive patches, surprise 4.5, beside a clear-cut of 2, surprise 3.0, was named
    # the clear-cut at rank 7)
    votes = (pos.assign(_surprise=pos["surprise"] if "surprise" in pos else 0.0)
             .groupby(["object_id", "truth_object"])["_surprise"].agg(["size", "sum"]))
    name = (votes.sort_values(["size", "sum"], ascending=False, kind="stable").reset_index()
            .drop_duplicates("object_id").set_index("object_id")["truth_object"])
    first = pos.drop_duplicates(["object_id", "truth_object"]).set_index(["object_id", "truth_object"])
    out = objects.copy()
    out["truth_object"] = out["object_id"].map(name).fillna(-1).astype(int)
    keys = list(zip(out["object_id"], out["truth_object"]))
    hit = out["truth_object"].to_numpy() >= 0
    out["truth_type"] = "none"
    out["truth_kind"] = "none"
    if hit.any():
        sel = first.loc[[k for k, h in zip(keys, hit) if h]]
        out.loc[hit, "truth_type"] = sel["truth_type"].to_numpy()
        out.loc[hit, "truth_kind"] = sel["truth_kind"].to_numpy()
    t1 = pd.to_datetime(labelled["t1"])
    onset = t1 == t1.groupby(labelled["object_id"].to_numpy()).transform("min")
    clouds = set(labelled.loc[onset & (labelled["truth_kind"] == "cloud"), "object_id"])
    out.loc[~hit & out["object_id"].isin(clouds), "truth_kind"] = "cloud"
    # the background's own harvest (label_events) when half of its onset patch events or more are
    seasonal = (labelled["truth_kind"] == "seasonal")[onset].groupby(labelled.loc[onset, "object_id"]).mean()
    mostly = ~hit & (out["truth_kind"] == "none").to_numpy() & (out["object_id"].map(seasonal).fillna(0) >= 0.5).to_numpy()
    out.loc[mostly, ["truth_type", "truth_kind"]] = ["harvest", "seasonal"]
    return out


def planted_object_scores(objects: pd.DataFrame, truth: PlantedTruth | None = None) -> dict:
    """On objects from :func:`label_objects`: rare planted objects in the top 10 objects, clouds in the top 20."""
    rank = objects["rank"].to_numpy()
    rare = objects["truth_kind"].to_numpy() == "rare"
    found = sorted({int(i) for i in objects["truth_object"].to_numpy()[rare & (rank <= 10)]})
    all_rare = set(objects["truth_object"].to_numpy()[rare].astype(int))
    if truth is not None:
        all_rare |= set(truth.objects.loc[truth.objects["kind"] == "rare", "object_id"].astype(int))
    best = objects[objects["truth_object"] >= 0].groupby("truth_object")["rank"].min()
    return {
        "objects_rare_in_top10": found,
        "objects_rare_missing_top10": sorted(all_rare - set(found)),
        "objects_clouds_in_top20": int(((rank <= 20) & (objects["truth_kind"] == "cloud").to_numpy()).sum()),
        "objects_best_rank": {int(k): int(v) for k, v in best.items()},
    }
