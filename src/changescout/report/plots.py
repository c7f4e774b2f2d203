"""Report plots: each function draws one matplotlib figure and returns PNG bytes (``None`` if nothing to show).

Figures are built with :class:`matplotlib.figure.Figure` (Agg), never through pyplot, so no global state or
display is involved.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

ACCENT = "#d62728"
MAX_POINTS = 50_000  # scatter plots of larger tables show a fixed random sample
MAX_WIDTH_IN = 11.5  # widest plot, in inches at 100 dpi: the report's page is 1200 px wide


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def magnitude_histogram(events: pd.DataFrame) -> bytes | None:
    """Histogram of change magnitudes."""
    mag = events["magnitude"].to_numpy(dtype=float)
    mag = mag[np.isfinite(mag)]
    if not mag.size:
        return None
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.hist(mag, bins=min(50, max(5, mag.size // 5)), color="#4c72b0")
    ax.set(xlabel="magnitude", ylabel="events", title="Change magnitude")
    return _png(fig)


#: Most clusters the scatter's key lists (in two columns beyond 15).
MAX_LEGEND = 48


def atypicality_scatter(events: pd.DataFrame) -> bytes | None:
    """Atypicality against magnitude, one colour per cluster."""
    if not len(events):
        return None
    title = "Atypicality vs magnitude"
    if len(events) > MAX_POINTS:
        events, title = events.sample(MAX_POINTS, random_state=0), f"{title} (sample of {MAX_POINTS:,})"
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    groups = events.groupby("cluster")
    n = len(groups)
    # one colour per cluster (tab20 repeated itself beyond 20: a run has up to 24 types by default), and a key
    # in columns up to MAX_LEGEND clusters
    colours = (matplotlib.colormaps["tab20"].colors if n <= 20 else
               [matplotlib.colormaps["turbo"](i / max(n - 1, 1)) for i in range(n)])
    for k, (cluster, g) in enumerate(groups):
        ax.scatter(g["magnitude"], g["atypicality"], s=8, alpha=0.8, color=colours[k], label=str(cluster))
    if n <= MAX_LEGEND:
        ax.legend(title="cluster", fontsize=6 if n > 15 else 7, loc="center left", bbox_to_anchor=(1, 0.5),
                  ncols=1 if n <= 15 else 2, handletextpad=0.2, columnspacing=0.6)
    ax.set(xlabel="magnitude", ylabel="atypicality", title=title)
    return _png(fig)


def events_per_date(events: pd.DataFrame, top: int = 50) -> bytes | None:
    """Number of events per ``t1`` date, with the ``top`` most atypical ones highlighted."""
    if not len(events):
        return None
    t1 = pd.to_datetime(events["t1"]).dt.strftime("%Y-%m-%d")
    counts = t1.value_counts().sort_index()
    top_counts = t1[events["rank"] <= top].value_counts().reindex(counts.index, fill_value=0)
    # a quarter inch a date, up to the page's width (a 584-date series drew an 11 000 px plot)
    fig = Figure(figsize=(min(MAX_WIDTH_IN, max(5, 0.25 * len(counts))), 3.2))
    ax = fig.subplots()
    pos = np.arange(len(counts))
    ax.bar(pos, counts.to_numpy(), color="#bbbbbb", label="all events")
    ax.bar(pos, top_counts.to_numpy(), color=ACCENT, label=f"top {top}")
    every = max(1, len(pos) // 15)
    ax.set_xticks(pos[::every], counts.index[::every], rotation=60, ha="right", fontsize=8)
    # headroom over the tallest bar for the legend, which covered the last date's bar
    ax.set(ylabel="events", title="Events per date (t1)", ylim=(0, 1.35 * max(int(counts.max()), 1)))
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig)


def best_per_patch(events: pd.DataFrame, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Highest atypicality of each patch over all dates, on a grid of ``shape`` patch rows and columns (the
    run's patch grid, as its maps; default: up to the last patch with an event); NaN where none."""
    best = events.groupby(["row", "col"])["atypicality"].max()
    rows, cols = best.index.get_level_values(0), best.index.get_level_values(1)
    n_rows, n_cols = shape if shape is not None else (0, 0)
    grid = np.full((max(n_rows, rows.max() + 1), max(n_cols, cols.max() + 1)), np.nan)
    grid[rows, cols] = best.to_numpy()
    return grid


def atypicality_map(events: pd.DataFrame, shape: tuple[int, int] | None = None) -> bytes | None:
    """:func:`best_per_patch` as a picture (row 0 at the top)."""
    if not len(events):
        return None
    grid = best_per_patch(events, shape)
    fig = Figure(figsize=(5, 4.2))
    ax = fig.subplots()
    im = ax.imshow(grid, cmap="magma", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="max atypicality")
    ax.set(xlabel="patch column", ylabel="patch row", title="Most atypical change per patch")
    return _png(fig)


def stage_timings(state: dict) -> bytes | None:
    """Seconds spent in each pipeline stage, from ``state["stages"][name]["seconds"]``, after the preparation
    (``state["prepare"]``: the source opened, clouds screened, shifts estimated) when recorded."""
    state = state or {}
    steps = {"prepare": state.get("prepare"), **state.get("stages", {})}
    stages = {k: float(v["seconds"]) for k, v in steps.items()
              if isinstance(v, dict) and isinstance(v.get("seconds"), (int, float))}
    if not stages:
        return None
    fig = Figure(figsize=(5, 0.4 * len(stages) + 1))
    ax = fig.subplots()
    names = list(stages)[::-1]
    ax.barh(names, [stages[n] for n in names], color="#55a868")
    ax.set(xlabel="seconds", title="Stage timings")
    return _png(fig)
