"""Is a finished stage's output still usable? Checked before a rerun skips the stage.

Outputs are written atomically (:mod:`changescout.atomic`), so a run never leaves one cut short; but a disk
that filled up under a copy, an edit or a sync tool can. A rerun that skipped the stage would then report
success over a file no reader can open (``-q`` printed nothing and exited 0 over a truncated events table).
These checks read as little as tells: a Parquet file's footer, each map's pixels (maps are at patch
resolution, small), the report's closing tag, a picture's closing chunk, the search index's header and size,
and a Zarr store's metadata and chunk files (each there, and as long as its Blosc header says). A Zarr chunk that is missing
reads as its fill value (NaN): a run whose ``embeddings.zarr`` had lost one chunk recomputed its changes
without that chunk's patches (5051 -> 3829 events) and said nothing (a failure-injection review).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import faiss
import pyarrow.parquet as pq
import rasterio


#: In maps/ and quicklooks/, the names the run writes (maps.write_change_maps, report.write_quicklooks): the rest is
#: the user's and stays where it is (--overwrite deleted a map the user had clipped, saved there as another .tif),
#: and is not checked (a user's .tif there that GDAL could not read made every rerun redo the outputs stage)
OWN_FILES = {"maps": re.compile(r"(magnitude|atypicality|cluster)\.tif"),
             "quicklooks": re.compile(r"(date_\d{8}|event_\d+|object_\d+|objects)\.png")}


def problem(path: Path) -> str | None:
    """Why the output at ``path`` cannot be used (missing, cut short, unreadable), or None when it can."""
    path = Path(path)
    if not path.exists():
        return "missing"
    try:
        if path.suffix == ".zarr":
            return zarr_problem(path)
        if path.is_dir():
            own = OWN_FILES.get(path.name)
            for tif in sorted(t for t in path.glob("*.tif") if own is None or own.fullmatch(t.name)):
                if (why := problem(tif)) is not None:
                    return f"{tif.name}: {why}"
        elif path.suffix == ".parquet":
            pq.read_metadata(path)
        elif path.suffix == ".tif":
            with rasterio.open(path) as src:
                src.read()
        elif path.suffix == ".html":
            with open(path, "rb") as f:
                f.seek(max(path.stat().st_size - 64, 0))
                if b"</html>" not in f.read():
                    return "cut short (no closing </html>)"
        elif path.suffix == ".png":
            with open(path, "rb") as f:
                f.seek(max(path.stat().st_size - 12, 0))
                if not f.read().startswith(b"\x00\x00\x00\x00IEND"):
                    return "cut short (no closing IEND chunk)"
        elif path.suffix == ".faiss":
            faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    except Exception as exc:  # whatever the reader says: the file is not usable
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot be read ({said[:150]}{'...' if len(said) > 150 else ''})"
    return None


#: The attribute of a store written with every chunk (empty ones too), whose missing chunk is damage
ALL_CHUNKS = "chunks_written"


def zarr_problem(path: Path) -> str | None:
    """Why the Zarr (format 2, consolidated) store at ``path`` cannot be used, or None: its metadata is
    unreadable, a chunk of one of its arrays is shorter than its Blosc header says, or, in a store written with
    every chunk (its ``chunks_written`` attribute: changescout 0.3.13 and later), missing. Earlier stores left
    out the chunks that held only NaN (zarr's default: a run of under a year has no recurrence chunk), and a
    missing chunk there is not damage."""
    try:
        meta = json.loads((path / ".zmetadata").read_text(encoding="utf-8"))["metadata"]
        every = (meta.get(".zattrs") or {}).get(ALL_CHUNKS) == "all"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"cannot be read (its .zmetadata: {type(exc).__name__})"
    for key, array in sorted(meta.items()):
        if not key.endswith(".zarray"):
            continue
        name = key[: -len(".zarray")].rstrip("/")
        shape, chunks = array.get("shape", []), array.get("chunks", [])
        if any(n == 0 for n in shape):
            continue
        sep = array.get("dimension_separator") or "."
        blosc = (array.get("compressor") or {}).get("id") == "blosc"
        counts = [math.ceil(n / c) for n, c in zip(shape, chunks)] or [1]
        for index in itertools.product(*(range(n) for n in counts)):
            chunk = path / name / sep.join(map(str, index)) if name else path / sep.join(map(str, index))
            try:
                size = chunk.stat().st_size
                if blosc:
                    with open(chunk, "rb") as f:
                        header = f.read(16)
                    if len(header) < 16 or int.from_bytes(header[12:16], "little") != size:
                        return f"{name or 'array'}: chunk {chunk.name} cut short"
            except FileNotFoundError:
                if every:
                    return f"{name or 'array'}: chunk {chunk.name} missing"
    return None


#: Events compared by :func:`events_problem` (evenly spread over the keys): a copied table differs everywhere,
#: and reading every id and magnitude took 0.27-0.55 s of each ``similar`` on a run of 178 000 events.
COMPARED_EVENTS = 256


def events_problem(events, changes) -> str | None:
    """Why ``events`` (a run's events table) is not of the run whose change vectors ``changes`` (its opened
    ``changes.zarr``) holds, or None: every event's ``vec`` key is there, and :data:`COMPARED_EVENTS` of them,
    spread over the keys, have the same event id and magnitude. A table copied from another run of the same series
    (another seed, other weights) has the same ids and passed as this run's (a review: ``similar`` and ``export``
    answered from it without a word)."""
    import numpy as np

    if "vec" not in changes.coords or "magnitude" not in changes or "event_id" not in changes:
        return None  # (stores of early versions: nothing to compare)
    keys, vec = changes["vec"].values, events["vec"].to_numpy(np.int64)
    if len(keys) != len(vec) or not np.isin(vec, keys).all():
        return (f"its {len(vec)} events are not the {len(keys)} changes of changes.zarr: it is not of the run whose "
                "change vectors changes.zarr holds")
    rows = np.argsort(vec, kind="stable")[np.linspace(0, len(vec) - 1, min(len(vec), COMPARED_EVENTS)).astype(int)]
    there = changes[["event_id", "magnitude"]].sel(vec=vec[rows]).load()
    differ = (there["event_id"].values.astype(str) != events["event_id"].to_numpy()[rows].astype(str)) | ~np.isclose(
        there["magnitude"].values.astype(np.float64), events["magnitude"].to_numpy(np.float64)[rows], rtol=1e-5, atol=1e-7)
    if differ.any():
        return (f"{int(differ.sum())} of {len(rows)} of its events compared have another id or magnitude in changes.zarr: "
                "it is not of the run whose change vectors changes.zarr holds")
    return None


def objects_problem(objects, events) -> str | None:
    """Why ``objects`` (a run's objects table) is not of the run of ``events``, or None: each object's lead
    event is an event of that object in the events table."""
    if "event_id" not in objects or "object_id" not in events:
        return None
    of = events.set_index("event_id")["object_id"]
    lead = objects["event_id"].astype(str)
    wrong = ~lead.isin(of.index) | (of.reindex(lead).to_numpy() != objects["object_id"].to_numpy())
    if wrong.any():
        return (f"{int(wrong.sum())} of its {len(objects)} objects lead with an event that events.parquet does not give "
                "them: it is not of the run of events.parquet")
    return None


def tables_problem(run_dir: Path, events, objects=None) -> tuple[Path, str] | None:
    """``(file, why)`` for a run's table that is another run's (:func:`events_problem` against its changes.zarr,
    when that is whole; :func:`objects_problem` for ``objects``), or None."""
    import xarray as xr

    store = Path(run_dir) / "changes.zarr"
    if store.is_dir() and zarr_problem(store) is None:
        with xr.open_zarr(store, consolidated=True) as changes:
            if (why := events_problem(events, changes)) is not None:
                return Path(run_dir) / "events.parquet", why
    if objects is not None and (why := objects_problem(objects, events)) is not None:
        return Path(run_dir) / "objects.parquet", why
    return None
