"""Spectral evidence at a finer scale than the patch: how far each patch's most changed 4 px blocks moved.

A patch's embedding averages its 16 x 16 px. A change that fills a few pixels of it (a new road 2-3 px wide
across a patch covers 8-14 % of it; the edge of a construction site) moves that average little, and its
``surprise`` does not stand out, although the pixels it covers changed as much as those of a clear-cut. Change
vector analysis of the pixels sees them: for each date pair an event compares, the cube is averaged over blocks
of ``fine`` px (its clear pixels only), each band's difference is robust-z scored against the whole scene's
blocks of that pair (median and 1.4826 MAD: what the whole scene did between those dates, seasons and
illumination, is 0), and a patch's ``spectral`` score is the mean of its ``top`` largest block norms (the root
mean square of the bands' z), in the manner of the benchmark's ``cva-z-p4-top4`` baseline.

:class:`changescout.objects.ObjectRanker` makes an event whose ``spectral`` score stands far out of the run's
(robust z above ``spectral_z``) a candidate that can join a change object, beside those whose embedding change
stands out. On the planted Bouconne series (seeds 0-4) the rare planted objects in the top 10 objects went from
35 to 38 of 40 with rcf and from 36 to 38 with galileo-nano, mostly roads whose faint patches now join them into
one line; the faint patches also joined a construction site to the road beside it (the other rare instance found
by ``similar --objects`` 40 -> 38 of 40; docs/quality.md). The score only makes candidates: the objects are
still joined, described and ranked by their embeddings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .errors import ConfigError
from .cube import Quality

#: Side of the blocks, in pixels, whose change the score measures (a 16 px patch holds 16 of them).
FINE = 4
#: How many of a patch's most changed blocks its score averages.
TOP = 4


def block_means(cube: xr.DataArray, fine: int = FINE) -> np.ndarray:
    """``(time, band, y // fine, x // fine)`` float32: the mean of each block's clear pixels (quality CLEAR, every
    band finite; NaN for a block with none). The cube's trailing rows and columns that make no whole block are
    left out, as the patch grid leaves out those that make no whole patch."""
    if fine < 1:
        raise ConfigError(f"spectral blocks must be at least 1 px, got {fine}")
    values = cube.astype(np.float32)
    usable = values.notnull().all("band")
    if "quality" in cube.coords:
        usable = usable & (cube["quality"] == int(Quality.CLEAR))
    held = values.where(usable)
    count = usable.astype(np.float32).coarsen(y=fine, x=fine, boundary="trim").sum()
    total = held.fillna(0).coarsen(y=fine, x=fine, boundary="trim").sum()
    means = (total / count.where(count > 0)).transpose("time", "band", "y", "x")
    return np.asarray(means.values, np.float32)


def pair_scores(blocks: np.ndarray, t0: int, t1: int, per_patch: int, top: int = TOP) -> np.ndarray:
    """``(rows, cols)``: each patch's spectral score between dates ``t0`` and ``t1`` (indices into ``blocks``,
    :func:`block_means`), from its ``per_patch`` x ``per_patch`` blocks; NaN where none is clear at both dates."""
    d = blocks[t1] - blocks[t0]  # (band, y, x)
    with np.errstate(invalid="ignore"):
        seen = np.isfinite(d).all(axis=0)
        if not seen.any():
            rows, cols = d.shape[1] // per_patch, d.shape[2] // per_patch
            return np.full((rows, cols), np.nan)
        med = np.median(d[:, seen], axis=1)
        mad = 1.4826 * np.median(np.abs(d[:, seen] - med[:, None]), axis=1)
        z = (d - med[:, None, None]) / np.maximum(mad, 1e-6)[:, None, None]
        norm = np.sqrt((z * z).mean(axis=0))
    norm = np.where(seen, norm, -np.inf)
    rows, cols = norm.shape[0] // per_patch, norm.shape[1] // per_patch
    cells = (norm[: rows * per_patch, : cols * per_patch].reshape(rows, per_patch, cols, per_patch)
             .transpose(0, 2, 1, 3).reshape(rows, cols, per_patch * per_patch))
    largest = -np.sort(-cells, axis=2)[..., :top]
    known = np.isfinite(largest)
    n = known.sum(axis=2)
    return np.where(n > 0, np.where(known, largest, 0.0).sum(axis=2) / np.maximum(n, 1), np.nan)


def block_size(patch_size: int) -> int:
    """The side of the blocks that patches of ``patch_size`` px are scored by: :data:`FINE`, or the largest side
    below it that tiles them (2 px in 10 px patches, 3 in 6, 1 in 7)."""
    return next(f for f in range(min(FINE, patch_size), 0, -1) if patch_size % f == 0)


def spectral_scores(cube: xr.DataArray, events: pd.DataFrame, patch_size: int, fine: int | None = None,
                    top: int = TOP) -> np.ndarray:
    """Each event's ``spectral`` score (rows of ``events``: ``row``, ``col``, ``t0``, ``t1``), float32, from the
    cube the embeddings were made of (its dates include every ``t0`` and ``t1``); NaN where the patch has no
    block clear at both dates. ``fine``: the blocks' side (default :func:`block_size`)."""
    out = np.full(len(events), np.nan, np.float32)
    if not len(events):
        return out
    fine = block_size(patch_size) if fine is None else fine
    if patch_size % fine:
        raise ConfigError(f"spectral blocks of {fine} px do not tile patches of {patch_size} px")
    times = pd.DatetimeIndex(cube["time"].values)
    t0 = times.get_indexer(pd.to_datetime(events["t0"]))
    t1 = times.get_indexer(pd.to_datetime(events["t1"]))
    if (t0 < 0).any() or (t1 < 0).any():
        raise ConfigError("spectral_scores: the events compare dates that the cube does not have")
    blocks = block_means(cube, fine)
    rows, cols = events["row"].to_numpy(np.int64), events["col"].to_numpy(np.int64)
    for (a, b), at in pd.Series(np.arange(len(events))).groupby([t0, t1]):
        scores = pair_scores(blocks, int(a), int(b), patch_size // fine, top)
        at = at.to_numpy()
        inside = (rows[at] < scores.shape[0]) & (cols[at] < scores.shape[1])
        out[at[inside]] = scores[rows[at[inside]], cols[at[inside]]]
    return out
