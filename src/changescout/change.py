"""Change vectors between dates of each patch: magnitude, z-score against the patch's history, persistence.

Comparison modes:

* ``consecutive`` (default): each clear date against the previous clear date of that patch that was not
  a transient spike;
* ``anniversary``: each date against the clear date of the same patch nearest to one year before (within
  ``anniversary_tolerance_days``);
* ``reference:YYYY-MM-DD``: each date after the reference against the clear date of the patch nearest to it.

A date is *transient* for a patch when its state is an excursion that the next clear date leaves again
(the next state is back near the previous one: a cloud without a mask, a passing shadow), in raw distance
or once the look-alikes' change is taken away (a cloud between dates of different seasons). Transient dates
still produce their event (with ``persistence`` 0, so the ranking demotes it) but never serve as the state
that later dates are compared against. ``persistence`` counts the later clear, non-transient dates over
which the new state holds (each is no farther than ``PERSISTENCE_TOLERANCE`` times as far from the new
state as from the old one) before it reverts; it is null when no later clear date exists. A state seen at
one date only is therefore 0, while a flood that holds for one more date before receding is 1.

A change that no later clear date confirms (at the last date, say) is 0 too where part of its patch is
flagged CLOUD at ``t1`` (more than ``CLOUD_FRINGE`` of the pixels the images cover, and more than at ``t0``)
beside a cloud (its patch and the 8 around it hold at least ``CLOUD_NEAR`` patches' worth of cloud pixels):
the flagged part is a cloud that the screen or the mask found, and the rest of the patch changed with it,
most likely under its thin fringe, which no test flags and nothing after it tells from a new surface. On the
planted series (benchmarks/planted.py, rcf, seeds 0-9) the last date's thin clouds held three places in the
top 20 objects of Bouconne, one patch each under a cloud whose core the screen masked (8-22 % of the patch
flagged); no planted change at the last date has a flagged pixel. Only CLOUD counts (the EmbeddingCube's
``cloud_fraction``): shadow, snow and nodata flags (a scene classification's dark areas over a burn scar, a
swath's edge) say nothing of a fringe; and only beside a cloud of some size: the screen flags a new white roof
too (a few hundred pixels at most), and the roof's site is no fringe. Embeddings without ``cloud_fraction``
(runs of 0.3.26 and earlier) leave the rule out.

``surprise`` is the size of the change once what look-alike patches did between the same dates is taken
away (:func:`context_residual`), and at most ``SURPRISE_CAP`` times the size of the change itself: a patch
that stayed put while its look-alikes changed is an absence of change. (On a Landsat series, patches that
barely changed (magnitude 0.38-0.70, a third of the run's median) while the snow melted around them had
surprises of 2.1-2.9 and took five of the top 15 objects, the first among them; on the planted series the cap
moves no rare object and no cloud.) ``zscore`` compares it with the patch's own history. ``recurrence`` says
whether the place made the same change a year before or after (:func:`recurrence`): a crop cycle or a
deciduous canopy does, a clear-cut or a new building does not.

Similar-change search compares :func:`search_vectors`: the residual (what changed beyond the look-alikes)
beside the patch's new state (what it turned into, beside the other patches of its area on that date).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import faiss
import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from .errors import ConfigError, InputError, check_param
from .intact import ALL_CHUNKS
from .sources.dates import to_times
from .tiling import unpack_footprint


@dataclass(frozen=True)
class Comparison:
    """How each date is paired with the date it is compared against."""

    mode: str = "consecutive"
    reference: pd.Timestamp | None = None
    min_clear: float = 0.75  # (the command line's --min-clear)
    spike_ratio: float = 0.5
    anniversary_tolerance_days: int = 45

    def __post_init__(self):  # (min_clear=2 gave no change at all without a word; a review)
        if self.mode not in ("consecutive", "anniversary", "reference"):
            raise ConfigError(f"--compare must be consecutive, anniversary or reference:YYYY-MM-DD, got {self.mode!r}")
        if self.mode == "reference" and self.reference is None:
            raise ConfigError("--compare reference needs its date: Comparison.parse('reference:YYYY-MM-DD')")
        check_param(None, "--min-clear", self.min_clear, 0, 1, lo_open=True)
        check_param(None, "spike_ratio", self.spike_ratio, 0, 1)
        check_param(None, "anniversary_tolerance_days", self.anniversary_tolerance_days, 0, 183)

    @classmethod
    def parse(cls, text: str, **kw) -> "Comparison":
        text = (text or "consecutive").strip()
        if text in ("consecutive", "anniversary"):
            return cls(mode=text, **kw)
        m = re.fullmatch(r"reference:(\d{4}-?\d{2}-?\d{2})", text)
        if m:  # 2008-13-01 matches the pattern and is no date
            return cls(mode="reference", reference=to_times([m.group(1)], option="--compare reference:")[0], **kw)
        raise ConfigError(f"--compare must be consecutive, anniversary or reference:YYYY-MM-DD, got {text!r}")

    def __str__(self) -> str:
        return f"reference:{self.reference:%Y-%m-%d}" if self.mode == "reference" else self.mode

    def check_dates(self, times: pd.DatetimeIndex) -> None:
        """ConfigError when no date of the series ``times`` can be compared this way (checked before embedding)."""
        if len(times) < 2:
            raise ConfigError(f"a change needs at least two dates; the series has {len(times)}")
        span = f"the series runs from {times[0]:%Y-%m-%d} to {times[-1]:%Y-%m-%d}"
        if self.mode == "reference" and self.reference >= times[-1].normalize():  # (images carry times of day)
            raise ConfigError(f"--compare {self}: no date comes after the reference; {span}")
        if self.mode == "reference" and self.reference < times[0].normalize():  # (a typo, or the wrong series)
            raise ConfigError(f"--compare {self}: the reference comes before the series; {span}")
        if self.mode == "anniversary" and not any(self.candidates(times, t) for t in range(len(times))):
            raise ConfigError(f"--compare anniversary needs a date within {self.anniversary_tolerance_days} days of a year "
                              f"before another date; {span}")

    def candidates(self, times: pd.DatetimeIndex, t: int) -> list[tuple[float, int]]:
        """``(days off the target, j)`` of the earlier dates ``j`` that date ``t`` may be compared with: for
        ``anniversary`` those within the tolerance of the same day a year before; for ``reference`` every earlier
        date, the reference's own day first (none for dates up to the reference's day). Days are counted
        with their fractions (images carry times of day), the same for the check before embedding as for the
        pairing."""
        if self.mode == "anniversary":
            target = times[t] - pd.DateOffset(years=1)
        elif times[t].normalize() <= self.reference:  # the reference day's own image (10:30) is no change
            return []
        else:
            target = self.reference
        out = [(abs((times[j] - target) / pd.Timedelta(days=1)), j) for j in range(t) if times[j] < times[t]]
        return [c for c in out if c[0] <= self.anniversary_tolerance_days] if self.mode == "anniversary" else out

    def note(self, times: pd.DatetimeIndex) -> str | None:
        """What the analyst should know before the run, or None: a reference that is not a date of the series
        stands for the dates around it, each patch compared with its clear date nearest to the reference."""
        days = times.normalize()
        if self.mode != "reference" or self.reference in days:
            return None
        before, after = days[days < self.reference].max(), days[days > self.reference].min()
        return (f"note: --compare {self}: the series has no image that day; each later date is compared, patch by patch, "
                f"with its clear date nearest to it ({before:%Y-%m-%d} before, {after:%Y-%m-%d} after, or farther when cloudy)")


    def baseline_note(self, events: pd.DataFrame) -> str | None:
        """After the changes: with a reference date, how many patches are compared with another date than the
        reference itself (cloudy or masked there, or the series has no image that day), or None."""
        if self.mode != "reference" or not len(events):
            return None
        t0 = pd.to_datetime(events["t0"]).dt.normalize()
        other = t0 != self.reference
        if not other.any():
            return None
        patches = events.groupby(["row", "col"]).ngroups
        moved = events[other.to_numpy()].groupby(["row", "col"]).ngroups
        days = (t0[other] - self.reference).dt.days.abs()
        first, last = t0[other].min(), t0[other].max()
        when = f"{first:%Y-%m-%d}" if first == last else f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"
        return (f"{'warning' if moved > patches / 2 else 'note'}: --compare {self}: {moved} of {patches} patches "
                f"({100 * moved / patches:.0f} %) were compared with another date than {self.reference:%Y-%m-%d} (not clear "
                f"enough there, or no image that day): their nearest usable date before each change, "
                f"{when}, {'up to ' if first != last else ''}{int(days.max())} days away")


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).mean(axis=-1))


#: ``surprise`` is at most this many times the change's own magnitude (see the module docstring).
SURPRISE_CAP = 1.5
#: A change no later clear date confirms is transient where more than this share of its patch is flagged CLOUD
#: at ``t1``, beside at least ``CLOUD_NEAR`` patches' worth of cloud pixels (its patch and the 8 around it; see
#: the module docstring).
CLOUD_FRINGE = 0.02
CLOUD_NEAR = 1.0


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt((v**2).mean(axis=-1))


def transient_dates(E: np.ndarray, ok: np.ndarray, spike_ratio: float = 0.5):
    """Consecutive pass over ``E (time, patch, dim)``: previous stable date of each clear date, and spikes.

    Returns ``(prev, transient)``, both ``(time, patch)``: ``prev[t, p]`` is the date index the clear date
    ``t`` is compared with (-1 for the first), ``transient[t, p]`` marks spikes. A clear date is a spike when the
    next one is back near the state before it; a patch's first clear date has no state before it, and a cloud
    there reads, in time, as a lasting change at the next date: it is never marked (the cloud screen's to find).
    """
    T, P = ok.shape
    nxt = np.full((T, P), -1)
    running = np.full(P, -1)
    for t in range(T - 1, -1, -1):
        nxt[t] = running
        running = np.where(ok[t], t, running)
    prev = np.full((T, P), -1)
    transient = np.zeros((T, P), bool)
    ref = np.full(P, -1)
    idx = np.arange(P)
    for t in range(T):
        has = ok[t]
        m = has & (ref >= 0)
        prev[t] = np.where(m, ref, -1)
        n = nxt[t]
        chk = m & (n >= 0)
        if chk.any():
            p = idx[chk]
            e_ref, e_cur, e_nxt = E[ref[p], p], E[t, p], E[n[p], p]
            d_cur = _dist(e_cur, e_ref)
            d_back = _dist(e_nxt, e_ref)
            # the same test on what look-alikes did not do, for spikes between dates of different seasons
            r_cur = _norm(context_residual(E, ref[p], np.full(len(p), t), p, e_cur - e_ref))
            r_back = _norm(context_residual(E, ref[p], n[p], p, e_nxt - e_ref))
            back = (d_back < spike_ratio * d_cur) | (r_back < spike_ratio * r_cur)
            transient[t, p] = back & (d_back < _dist(e_nxt, e_cur))
        ref = np.where(has & ~transient[t], t, ref)
    return prev, transient


def _pairs(E, ok, times: pd.DatetimeIndex, comp: Comparison):
    prev, transient = transient_dates(E, ok, comp.spike_ratio)
    stable = ok & ~transient
    T, P = ok.shape
    t1s, t0s, ps = [], [], []
    if comp.mode == "consecutive":
        t1, p = np.nonzero(prev >= 0)
        return t1, prev[t1, p], p, transient
    for t in range(T):
        cands = comp.candidates(times, t)
        if not cands:
            continue
        chosen = np.full(P, -1)
        for _, j in sorted(cands):
            chosen = np.where((chosen < 0) & stable[j], j, chosen)
        p = np.nonzero(ok[t] & (chosen >= 0))[0]
        t1s.append(np.full(len(p), t)), t0s.append(chosen[p]), ps.append(p)
    if not ps:
        return np.array([], int), np.array([], int), np.array([], int), transient
    return np.concatenate(t1s), np.concatenate(t0s), np.concatenate(ps), transient


#: A later date holds the new state when it is no farther than this times as far from the new state as from
#: the old one. A state that reverts (a receding flood) is back near the old one, several times closer to it;
#: a bare field that stays bare from May to July can be about as far from its May look as from the green April
#: field, because the scene around it changed and the encoder's input is centred per date. With a strict
#: comparison (1.0) such harvests and clear-cuts on the planted Bouconne series were demoted (seed 0: patch
#: AUROC 0.983; with 1.25: 0.997; clouds in the top 20 stay 0 on the 10 series). Dates found transient (spikes,
#: :func:`transient_dates`) keep persistence 0 whatever the later dates do.
PERSISTENCE_TOLERANCE = 1.25


def persistence(E, stable, t0, t1, p, tolerance: float = PERSISTENCE_TOLERANCE, max_cells: int = 1 << 22) -> np.ndarray:
    """Later stable dates over which the state at ``t1`` holds against ``t0`` (see ``PERSISTENCE_TOLERANCE``),
    counted up to the first stable date where it does not; -1 where no stable date follows.

    The squared distances between all dates of a patch come from one Gram matrix (float64), for a batch of
    patches at a time (about ``max_cells`` date pairs, and at least one patch: T x T pairs). Distances below
    about one float32 step of the states' norm (3e-7 of it) count as 0: the embeddings hold no finer difference,
    and equal states must compare equal. A change of a quiet patch seldom reverts, so following each change
    date by date gathered ~N^1.6 rows on long series: 584 dates of 256 patches, changes stage 33-54 s that way,
    17-20 s now, with the same 144 508 persistence values."""
    T = E.shape[0]
    out = np.full(len(p), -1, np.int64)
    if not len(p):
        return out
    patches, inv = np.unique(p, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(patches) + 1))
    dates = np.arange(T)
    per = max(1, max_cells // (T * T))
    for s in range(0, len(patches), per):
        q = patches[s:s + per]
        X = np.moveaxis(E[:, q], 1, 0).astype(np.float64)  # (patch, time, dim)
        sq = np.einsum("btd,btd->bt", X, X)
        norms = sq[:, :, None] + sq[:, None, :]
        d2 = norms - 2 * (X @ X.transpose(0, 2, 1))
        d2[d2 <= 1e-13 * norms] = 0.0  # equal states: 0, not the rounding the Gram matrix leaves
        del norms
        sel = order[bounds[s]:bounds[s + len(q)]]
        b = inv[sel] - s
        holds = d2[b, :, t1[sel]] <= tolerance**2 * d2[b, :, t0[sel]]  # (event, later date)
        valid = stable[:, q].T[b] & (dates[None, :] > t1[sel, None])
        fail = valid & ~holds
        stop = np.where(fail.any(axis=1), fail.argmax(axis=1), T)
        count = (valid & holds & (dates[None, :] < stop[:, None])).sum(axis=1)
        out[sel] = np.where(valid.any(axis=1), count, -1)
    return out


def context_residual(E: np.ndarray, t0, t1, p, vec: np.ndarray, k: int = 16, usable: np.ndarray | None = None) -> np.ndarray:
    """Change vectors minus what patches in a similar state did between the same dates.

    For each date pair, the ``k`` patches whose state at ``t0`` is nearest (faiss, exact) give the expected
    change as the element-wise median of their change vectors; seasonal change of a land cover (all its
    patches green up together) cancels, while a change that its look-alikes did not make stays. The median
    keeps a change that spans several patches of one object from cancelling itself.

    The look-alikes are drawn from every patch usable at both dates (``usable (time, patch)``; default: the
    patches with an event for that pair), so that a patch compared across a date it skipped (a cloud) is
    still set against what its look-alikes did over the same interval.
    """
    out = vec.copy()
    pairs = pd.DataFrame({"a": t0, "b": t1}).groupby(["a", "b"]).indices
    for (a, b), idx in pairs.items():
        pool = p[idx] if usable is None else np.flatnonzero(usable[a] & usable[b])
        n = len(pool)
        if n < 5:
            continue
        if n <= 2 * k and usable is None:
            out[idx] = vec[idx] - np.median(vec[idx], axis=0)
            continue
        kk = min(k, n - 1)
        states = np.ascontiguousarray(E[a, pool], dtype=np.float32)
        index = faiss.IndexFlatL2(states.shape[1])
        index.add(states)
        for s in range(0, len(idx), 2048):
            sl = idx[s:s + 2048]
            _, nbr = index.search(np.ascontiguousarray(E[a, p[sl]], dtype=np.float32), kk + 1)
            nbr = pool[nbr]
            own = nbr == p[sl][:, None]  # the patch itself (when in the pool) is not its own look-alike
            keep = np.where(own.any(axis=1)[:, None], ~own, np.arange(kk + 1)[None] < kk)
            nbr = nbr[keep].reshape(len(sl), kk)
            out[sl] = vec[sl] - _median_of_rows(E[b, nbr] - E[a, nbr])
    return out


def _median_of_rows(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=1)`` of ``(n, k, dim)`` finite values, four times as fast: sorting k values along
    the middle axis vectorises where numpy's partition works lane by lane (half of the changes stage)."""
    s = np.sort(x, axis=1)
    k = s.shape[1]
    return 0.5 * (s[:, (k - 1) // 2] + s[:, k // 2])


def _in_order(blocks: list[np.ndarray], order: np.ndarray, width: int) -> np.ndarray:
    """The rows of ``blocks`` (emptied as they are placed) stacked in ``order``: what ``np.concatenate(blocks)
    [order]`` gives, without holding the blocks, their stack and its reordered copy at once (three times the
    change vectors and, for similar, the search vectors: a scale review)."""
    dtype = np.result_type(*blocks) if blocks else np.float32
    out = np.empty((len(order), blocks[0].shape[1] if blocks else width), dtype)
    place = np.empty_like(order)
    place[order] = np.arange(len(order))
    start = 0
    while blocks:
        block = blocks.pop(0)
        out[place[start:start + len(block)]] = block
        start += len(block)
    return out


def changes_block(E: np.ndarray, clear: np.ndarray, times: pd.DatetimeIndex, comp: Comparison,
                  cloud: tuple[np.ndarray, np.ndarray] | None = None):
    """Events of one block of patches: ``E (time, patch, dim)``, ``clear (time, patch)``; returns the events,
    their change vectors and their residuals (:func:`context_residual`; ``surprise`` is their size). ``cloud``:
    each patch's cloud fraction and the cloud pixels around it, in patches, both ``(time, patch)``
    (:func:`cloud_near`), which find a cloud's fringe (the module docstring); None leaves that out."""
    ok = (clear >= comp.min_clear) & np.isfinite(E).all(axis=-1)
    t1, t0, p, transient = _pairs(E, ok, times, comp)
    stable = ok & ~transient
    vec = E[t1, p] - E[t0, p]
    mag = np.sqrt((vec**2).mean(axis=-1))
    residual = context_residual(E, t0, t1, p, vec, usable=stable)
    pers = np.where(transient[t1, p], 0, persistence(E, stable, t0, t1, p))  # a spike never persists
    if cloud is not None:  # unconfirmed, partly under a cloud at t1 and beside it: most likely its fringe
        share, near = cloud
        fringe = (pers < 0) & (share[t1, p] > CLOUD_FRINGE) & (share[t1, p] > share[t0, p]) & (near[t1, p] >= CLOUD_NEAR)
        pers = np.where(fringe, 0, pers)
    cf = np.minimum(clear[t0, p], clear[t1, p])
    surprise = np.minimum(_norm(residual), SURPRISE_CAP * mag)
    return (pd.DataFrame({"p": p, "t0i": t0, "t1i": t1, "magnitude": mag, "surprise": surprise, "persistence": pers,
                          "clear_fraction": cf, "transient": transient[t1, p]}), vec.astype(np.float32), residual.astype(np.float32))


def comparable(E: np.ndarray, distance: str | None) -> np.ndarray:
    """Embeddings as the change stage compares them: unit vectors for encoders compared by cosine (Euclidean
    distance is then monotone in cosine), as they are otherwise."""
    if distance == "cosine":
        return E / np.maximum(np.linalg.norm(E, axis=-1, keepdims=True), 1e-12)
    return E


def robust_zscore(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``(v - median) / (1.4826 MAD)`` within each group, with a floor on the scale from all groups; NaN
    (unknown) in a group of fewer than three values: a patch with no other change to compare with (an image
    pair, or a patch clear at two dates only) has no history, and 0 would read as "ordinary for the place"; and
    of two values the median lies halfway and the MAD is half their gap, so each reads +-0.67 whatever their
    sizes (a review: on a 3-date series a large change tied with a third of the noise)."""
    s = pd.Series(values)
    g = s.groupby(groups)
    med = g.transform("median")
    mad = (s - med).abs().groupby(groups).transform("median") * 1.4826
    floor = max(float(np.nanmedian(mad)) * 0.5, 1e-6) if len(mad) else 1e-6
    z = (s - med) / np.maximum(mad, floor)
    return z.where(g.transform("size") > 2).to_numpy(np.float32)


def _tile_clouds(embeddings: xr.Dataset, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A tile's cloud fractions and :func:`cloud_near`, both ``(time, patch)`` (the tile's neighbours read for
    the patches on its edge); None for embeddings without ``cloud_fraction`` (runs of 0.3.26 and earlier)."""
    if "cloud_fraction" not in embeddings:
        return None
    nr, nc = embeddings.sizes["row"], embeddings.sizes["col"]
    a, b, c, d = max(r0 - 1, 0), min(r1 + 1, nr), max(c0 - 1, 0), min(c1 + 1, nc)
    around = np.nan_to_num(embeddings["cloud_fraction"].isel(row=slice(a, b), col=slice(c, d)).values.astype(np.float32))
    cover = None  # an edge patch's fraction is of the few pixels the images cover: counted as those pixels
    if "footprint" in embeddings and "patch_size" in embeddings.attrs:
        p = int(embeddings.attrs["patch_size"])
        bits = embeddings["footprint"].isel(row=slice(a, b), col=slice(c, d)).values
        cover = unpack_footprint(bits, p).mean(axis=(-2, -1))
    near = cloud_near(around, cover)[:, r0 - a: r0 - a + r1 - r0, c0 - c: c0 - c + c1 - c0]
    share = around[:, r0 - a: r0 - a + r1 - r0, c0 - c: c0 - c + c1 - c0]
    T = len(around)
    return share.reshape(T, -1), near.reshape(T, -1)


def _spans(n: int, block: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of blocks of ``block`` along ``n``; a short last block (under half) joins the one before."""
    starts = list(range(0, n, block))
    if len(starts) > 1 and n - starts[-1] < block // 2:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


def cloud_near(cloud: np.ndarray, cover: np.ndarray | None = None) -> np.ndarray:
    """``cloud (time, row, col)`` fractions (of each patch's pixels that the images cover) and ``cover (row, col)``
    (the share of each patch they cover; 1 by default) -> the cloud pixels of each patch and the 8 around it, in
    whole patches (float64: a neighbourhood of exactly one patch's worth reads 1, not 0.99999994)."""
    mass = np.nan_to_num(np.asarray(cloud, np.float64)) * (1.0 if cover is None else np.asarray(cover, np.float64))
    return ndimage.correlate(mass, np.ones((1, 3, 3)), mode="constant")


def compute_changes(embeddings: xr.Dataset, comp: Comparison | str = "consecutive", block: int = 64, search: bool = False):
    """All events of a run: a DataFrame (row, col, t0, t1, magnitude, zscore, persistence, ...) and vectors
    (with ``search``, also the vectors that similar-change search compares, in the same order:
    :func:`search_vectors`).

    ``comp``: a :class:`Comparison`, or its text (``"consecutive"``, ``"anniversary"``, ``"reference:DATE"``)
    with the command line's defaults; a comparison no date of the series allows is refused (ConfigError), as
    the command line refuses it.

    Events are sorted by (t1, row, col, t0); the vector key ``vec`` is the row position in that order.
    Embeddings of encoders compared by cosine distance (attribute ``distance``) are L2-normalised first.
    """
    times = pd.DatetimeIndex(embeddings["time"].values)
    if not times.is_monotonic_increasing or not times.is_unique:
        raise InputError("the embeddings' dates must be strictly increasing (sort them with .sortby('time'), and "
                         f"drop repeated dates), got {', '.join(f'{t:%Y-%m-%d}' for t in times[:6])}"
                         f"{', ...' if len(times) > 6 else ''}")
    comp = comp if isinstance(comp, Comparison) else Comparison.parse(comp)  # (a str: AttributeError 'min_clear')
    comp.check_dates(times)  # (anniversary on 5 dates gave no event, a reference before the series every patch)
    nr, nc = embeddings.sizes["row"], embeddings.sizes["col"]
    weight = float(embeddings.attrs.get("new_state_weight", 0.0))  # the encoder's (EncoderSpec.new_state_weight)
    frames, vecs, searches = [], [], []
    # Tiles of ``block`` x ``block`` patches: look-alikes come from the same tile (a local context: 10 km at
    # 16 px of 10 m for 64), and a short last row or column of tiles joins the one before it, or its few
    # patches would have too few look-alikes and keep their season in their surprise. Square tiles keep the
    # exact look-alike search linear in the area (full-width bands of rows made it grow with width^2 x height:
    # 2048 px, 12 dates took 6.6 times as long as 1024 px in this stage).
    for r0, r1 in _spans(nr, block):
        for c0, c1 in _spans(nc, block):
            tile = {"row": slice(r0, r1), "col": slice(c0, c1)}
            E = comparable(embeddings["embedding"].isel(tile).values, embeddings.attrs.get("distance"))  # (T, r, c, D)
            C = embeddings["clear_fraction"].isel(tile).values
            T, r, c, D = E.shape
            E = E.reshape(T, r * c, D)
            df, v, res = changes_block(E, C.reshape(T, r * c), times, comp, _tile_clouds(embeddings, r0, r1, c0, c1))
            df["row"] = r0 + df["p"] // c
            df["col"] = c0 + df["p"] % c
            frames.append(df.drop(columns="p"))
            vecs.append(v)
            if search:  # kept only when asked: they double (or triple) the memory of the change vectors
                new = new_states(E, df["t1i"].to_numpy(), df["p"].to_numpy()) if weight > 0 else None
                searches.append(search_vectors(res, new, weight))
    df = pd.concat(frames, ignore_index=True)
    df["zscore"] = robust_zscore(df["surprise"].to_numpy(), (df["row"] * nc + df["col"]).to_numpy())
    df["t0"] = times[df["t0i"].to_numpy()]
    df["t1"] = times[df["t1i"].to_numpy()]
    order = np.lexsort((df["t0i"], df["col"], df["row"], df["t1i"]))
    df = df.iloc[order].reset_index(drop=True)
    vectors = _in_order(vecs, order, embeddings.sizes["dim"])
    if search:
        found = _in_order(searches, order, embeddings.sizes["dim"] * (1 + (weight > 0)))
    df["vec"] = np.arange(len(df), dtype=np.int64)
    df["recurrence"] = (recurrence(df, vectors, comp.anniversary_tolerance_days) if comp.mode == "consecutive"
                        else np.full(len(df), np.nan, np.float32))
    df["persistence"] = pd.array(np.where(df["persistence"] < 0, pd.NA, df["persistence"]), dtype="Int32")
    return (df, vectors, found) if search else (df, vectors)


#: Fewest events ending at one date in a tile that give the new state its context (:func:`new_states`).
MIN_CONTEXT = 5


def new_states(E: np.ndarray, t1: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each event's state at ``t1`` less the mean state of the patches with an event ending at that date
    (``E (time, patch, dim)`` of one block): what the patch turned into, beside its area on that date, so
    that the season every patch shares does not make two changes alike. Where fewer than ``MIN_CONTEXT``
    events end at a date (a tile under cloud), there is no area to set it against: 0, and the search
    compares their residuals alone."""
    out = E[t1, p].astype(np.float64)
    for idx in pd.Series(np.arange(len(t1))).groupby(t1).indices.values():
        out[idx] = out[idx] - out[idx].mean(axis=0) if len(idx) >= MIN_CONTEXT else 0.0
    return out.astype(np.float32)


def search_vectors(residual: np.ndarray, new_state: np.ndarray | None = None, weight: float = 0.0) -> np.ndarray:
    """What similar-change search compares by cosine: with ``weight`` above 0 (``(n, 2 dim)``), the residual
    (:func:`context_residual`: what changed beyond what look-alike patches did) at unit length beside the new
    state (:func:`new_states`) at unit length times ``weight``; else the residual as it is (``(n, dim)``; its
    size, the event's surprise, weighs it in an object's mean, as before 0.3.9). A clear-cut and a harvest
    lose the same green, but one leaves slash and the other bare soil.

    The weight is the encoder's (``EncoderSpec.new_state_weight``), measured on the planted series
    (benchmarks/planted.py, objects' precision@5 of common types, seeds 0-9): rcf 0.5 (Bouconne 0.73 -> 0.77,
    the other instance of a rare type 64 -> 66 of 73; synthetic 0.56 -> 0.56, 77 of 79 both); galileo-nano 0
    (0.5 lowered it on both backgrounds: Bouconne 0.59 -> 0.55, synthetic 0.41 -> 0.36, seeds 0-4)."""
    residual = np.asarray(residual, np.float32)
    if new_state is None or weight <= 0:
        return residual
    def unit(x):
        return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return np.hstack([unit(residual), weight * unit(new_state)])


def recurrence(events: pd.DataFrame, vectors: np.ndarray, tolerance_days: int = 45) -> np.ndarray:
    """How much each change is the same change of its patch a year before or after: ``(n_events,)`` float32.

    For each event, the changes of the same patch whose ``t1`` is nearest to one year before (and after) its
    own on either side, within ``tolerance_days``: the cosine of the two change vectors times the ratio of the
    smaller norm to the larger (a faint drift in the same direction a year later is not the same change), the
    largest of them; NaN when the patch has no change a year apart (series shorter than a year). Both sides: a
    crop cycle seen a date late that year (a cloud at its usual date) ends a month past the anniversary, and
    the nearest change alone, a month before it, was the field's noise (recurrence 0.001, not demoted; a review).

    Near 1, the place made the same change a year apart: a seasonal cycle (a crop harvested every summer, a
    canopy that greens up every spring) rather than the one-off change an analyst looks for. Meaningful for
    changes between consecutive dates (``compute_changes`` leaves it NaN in other comparison modes, where a
    lasting change compared with a fixed reference would look the same every year). ``events`` need ``row``,
    ``col``, ``t1`` and ``vec`` (the row of ``vectors``)."""
    out = np.full(len(events), np.nan, np.float32)
    if len(events) == 0:
        return out
    keys = events["vec"].to_numpy(np.int64)
    norms = np.linalg.norm(np.asarray(vectors, np.float32), axis=1)
    base = pd.DataFrame({
        "patch": (events["row"].to_numpy(np.int64) << 32) | events["col"].to_numpy(np.int64),
        "day": pd.to_datetime(events["t1"]).to_numpy("datetime64[D]").astype(np.int64),
        "i": np.arange(len(events)),
    })
    other = base.rename(columns={"day": "other_day", "i": "j"}).sort_values("other_day", kind="stable")
    for year, side in ((y, s) for y in (365, -365) for s in ("backward", "forward")):
        q = base.assign(target=base["day"] + year).sort_values("target", kind="stable")
        m = pd.merge_asof(q, other, left_on="target", right_on="other_day", by="patch", direction=side,
                          tolerance=int(tolerance_days)).dropna(subset=["j"])
        i, j = m["i"].to_numpy(np.int64), m["j"].to_numpy(np.int64)
        for s in range(0, len(i), 65536):  # a chunk of pairs at a time: no copy of every vector
            a, b = keys[i[s:s + 65536]], keys[j[s:s + 65536]]
            dot = np.einsum("ij,ij->i", vectors[a], vectors[b], dtype=np.float64)
            na, nb = norms[a].astype(np.float64), norms[b].astype(np.float64)
            sim = dot / np.maximum(np.maximum(na, nb) ** 2, 1e-24)  # cosine x min norm / max norm
            out[i[s:s + 65536]] = np.fmax(out[i[s:s + 65536]], sim)
    return out


EVENT_COLUMNS = ("row", "col", "t0", "t1", "magnitude", "surprise", "zscore", "persistence", "clear_fraction", "transient",
                 "recurrence", "spectral")
#: Of those, what changes.zarr holds as NaN when the events lack it (``spectral``: :mod:`changescout.spectral`,
#: which the pipeline adds from the cube after :func:`compute_changes`).
OPTIONAL_EVENT_COLUMNS = ("spectral",)


def write_changes(path, events: pd.DataFrame, vectors: np.ndarray, attrs: dict, search: np.ndarray | None = None) -> None:
    """``changes.zarr``: ``vector (vec, dim)``, ``search (vec, search_dim)`` when given (the vectors
    similar-change search compares, :func:`search_vectors`; attribute ``search_vector``) and the event
    columns, keyed by the explicit ``vec`` coordinate."""
    from .atomic import atomic_path

    data = {"vector": (("vec", "dim"), vectors), "event_id": ("vec", events["event_id"].to_numpy().astype(str))}
    if search is not None:
        data["search"] = (("vec", "search_dim"), search)
        attrs = {**attrs, "search_vector": "search"}
    for c in EVENT_COLUMNS:
        if c in OPTIONAL_EVENT_COLUMNS and c not in events:
            data[c] = ("vec", np.full(len(events), np.nan, np.float32))
            continue
        v = events[c]
        data[c] = ("vec", v.fillna(-1).to_numpy("int32") if c == "persistence" else v.to_numpy())
    ds = xr.Dataset(data, coords={"vec": events["vec"].to_numpy()}, attrs={**attrs, ALL_CHUNKS: "all"})
    ds["vector"].attrs["description"] = "change vector e(t1) - e(t0) of each event (events.parquet: vec)"
    if search is not None:
        ds["search"].attrs["description"] = ("what similar-change search compares: the unit residual (the change less what "
                                             "look-alike patches did) beside new_state_weight x the unit new state (the "
                                             "state at t1 less the mean of its area's patches at t1), when that weight is > 0")
    ds["persistence"].attrs["description"] = ("later clear dates over which the new state holds; -1 = unknown (no later "
                                             "clear date of the patch), null in events.parquet; 0 = transient (a one-date "
                                             "spike, or unconfirmed and partly under a flagged cloud beside it: its fringe)")
    # chunked by encoding, not by dask: the arrays are in memory, and with a dask.distributed client the
    # dask write shipped them through the scheduler (a 96 MiB graph at 1024 px) for a worker to write
    rows = max(1, min(65536, ds.sizes["vec"]))
    encoding = {k: {"chunks": (rows, *v.shape[1:])} for k, v in ds.data_vars.items()}
    with atomic_path(path) as tmp:
        ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2, encoding=encoding, write_empty_chunks=True)


def read_changes(path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Events (with ``vec``), vectors in the same order, and attributes of ``changes.zarr`` (or a run directory's)."""
    from .events import run_store

    ds = xr.open_zarr(run_store(path, "changes.zarr"), consolidated=True)
    df = pd.DataFrame({c: ds[c].values if c in ds else np.full(ds.sizes["vec"], np.nan, np.float32) for c in EVENT_COLUMNS})
    df["persistence"] = pd.array(np.where(df["persistence"] < 0, pd.NA, df["persistence"]), dtype="Int32")
    df["vec"] = ds["vec"].values
    df["event_id"] = ds["event_id"].values.astype(object)
    return df, ds["vector"].values, dict(ds.attrs)


def read_vectors(path, keys=None, name: str = "vector") -> tuple[np.ndarray, np.ndarray]:
    """Vectors (and their keys) from ``changes.zarr``, selected by ``vec`` key, not by position; ``name``:
    ``"vector"`` (the change vectors) or ``"search"`` (``"residual"`` in runs of 0.3.2 to 0.3.8). ``path``: the
    store or a run directory."""
    from .events import run_store

    ds = xr.open_zarr(run_store(path, "changes.zarr"), consolidated=True)
    if keys is not None:
        ds = ds.sel(vec=np.asarray(keys))
    return ds[name].values, ds["vec"].values
