"""Spectral evidence at a finer scale than the patch: how far each patch's most changed 4 px blocks moved.

A patch's embedding averages its 16 x 16 px. A change that fills a few pixels of it (a new road 2-3 px wide
across a patch covers 8-14 % of it; the edge of a construction site) moves that average little, and its
``surprise`` does not stand out, although the pixels it covers changed as much as those of a clear-cut. Change
vector analysis of the pixels sees them: for each date pair an event compares, the cube is averaged over blocks
of ``fine`` px (4, or the largest side below it that tiles the patches: :func:`block_size`; its pixels that
observe the surface only, clear or water), each band's difference is robust-z scored against the whole scene's
blocks of that pair (median and 1.4826 MAD: what the whole scene did between those dates, seasons and
illumination, is 0), and a patch's ``spectral`` score is the mean of its ``top`` largest block norms (the root
mean square of the bands' z; :func:`changescout.evaluate.evidence.aggregate_up`, as the benchmark aggregates its
4 px scores).

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

from .cube import usable_mask
from .errors import ConfigError
from .evaluate.evidence import aggregate_up
from .objects import robust_z

#: Side of the blocks, in pixels, whose change the score measures (a 16 px patch holds 16 of them).
FINE = 4
#: How many of a patch's most changed blocks its score averages.
TOP = 4
#: Bytes of blocks read in one computation: the dates still to compare, read in batches of this size (one
#: batch for most runs; a date at a time for a whole Sentinel-2 tile), each let go after its last pair.
BLOCK_BYTES = 256 * 2**20


def block_means(cube: xr.DataArray, fine: int = FINE) -> np.ndarray:
    """``(time, band, y // fine, x // fine)`` float32: the mean of each block's pixels that observe the surface
    (quality clear or water, :func:`changescout.cube.usable_mask`, as the embeddings take them; every band
    finite; NaN for a block with none). The cube's trailing rows and columns that make no whole block are
    left out, as the patch grid leaves out those that make no whole patch. Give it the dates needed: a date's
    blocks hold a sixteenth of its pixels (:func:`spectral_scores` keeps only those of the dates still to compare)."""
    if fine < 1:
        raise ConfigError(f"spectral blocks must be at least 1 px, got {fine}")
    values = cube.astype(np.float32)
    usable = values.notnull().all("band")
    if "quality" in cube.coords:  # (water is the surface: a flood, a pond drying)
        usable = usable & usable_mask(cube["quality"])
    held = values.where(usable)
    count = usable.astype(np.float32).coarsen(y=fine, x=fine, boundary="trim").sum()
    total = held.fillna(0).coarsen(y=fine, x=fine, boundary="trim").sum()
    means = (total / count.where(count > 0)).transpose("time", "band", "y", "x")
    return np.asarray(means.values, np.float32)


def pair_scores(before: np.ndarray, after: np.ndarray, per_patch: int, top: int = TOP) -> np.ndarray:
    """``(rows, cols)``: each patch's spectral score between two dates' blocks (``(band, y, x)`` each, of
    :func:`block_means`), from its ``per_patch`` x ``per_patch`` blocks; NaN where none is clear at both dates."""
    d = after - before  # (band, y, x)
    if not np.isfinite(d).all(axis=0).any():
        return np.full((d.shape[1] // per_patch, d.shape[2] // per_patch), np.nan)
    # each band against the scene's blocks of the pair (a band most blocks leave as it was: by its spread)
    z = np.stack([robust_z(band) for band in d])
    norm = np.sqrt((z * z).mean(axis=0))  # NaN where a block is not seen at both dates
    return aggregate_up(norm, per_patch, f"top{top}")


def block_size(patch_size: int) -> int:
    """The side of the blocks that patches of ``patch_size`` px are scored by: :data:`FINE`, or the largest side
    below it that tiles them (2 px in 10 px patches, 3 in 6, 1 in 7)."""
    return next(f for f in range(min(FINE, patch_size), 0, -1) if patch_size % f == 0)


def spectral_scores(cube: xr.DataArray, events: pd.DataFrame, patch_size: int, fine: int | None = None,
                    top: int = TOP, block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """Each event's ``spectral`` score (rows of ``events``: ``row``, ``col``, ``t0``, ``t1``), float32, from the
    cube the embeddings were made of (its dates include every ``t0`` and ``t1``); NaN where the patch has no
    block clear at both dates. ``fine``: the blocks' side (default :func:`block_size`); ``block_bytes``: how
    many bytes of blocks are read in one computation (:data:`BLOCK_BYTES`)."""
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
    rows, cols = events["row"].to_numpy(np.int64), events["col"].to_numpy(np.int64)
    pairs = pd.Series(np.arange(len(events))).groupby([t0, t1])
    # the pairs in the order of their later date, each date's blocks read once and let go after its last pair
    order = sorted(pairs.groups, key=lambda pair: (max(pair), min(pair)))
    last = {}
    for i, pair in enumerate(order):
        last.update({int(t): i for t in pair})
    upcoming = list(dict.fromkeys(int(t) for pair in order for t in sorted(pair)))  # dates in the order first needed
    per_date = cube.sizes["band"] * (cube.sizes["y"] // fine) * (cube.sizes["x"] // fine) * 4
    batch = max(1, block_bytes // max(per_date, 1))  # dates whose blocks are read in one computation
    held: dict[int, np.ndarray] = {}
    for i, (a, b) in enumerate(order):
        if any(int(t) not in held for t in (a, b)):
            start = min(upcoming.index(int(t)) for t in (a, b) if int(t) not in held)
            read = [t for t in upcoming[start:] if t not in held][:batch]
            read += [int(t) for t in (a, b) if int(t) not in held and int(t) not in read]
            held.update(zip(read, block_means(cube.isel(time=read), fine)))
        scores = pair_scores(held[int(a)], held[int(b)], patch_size // fine, top)
        at = pairs.get_group((a, b)).to_numpy()
        inside = (rows[at] < scores.shape[0]) & (cols[at] < scores.shape[1])
        out[at[inside]] = scores[rows[at[inside]], cols[at[inside]]]
        for t in [t for t in held if last[t] <= i]:
            del held[t]
    return out
