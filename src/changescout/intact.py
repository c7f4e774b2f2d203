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
from pathlib import Path

import faiss
import pyarrow.parquet as pq
import rasterio


def problem(path: Path) -> str | None:
    """Why the output at ``path`` cannot be used (missing, cut short, unreadable), or None when it can."""
    path = Path(path)
    if not path.exists():
        return "missing"
    try:
        if path.suffix == ".zarr":
            return zarr_problem(path)
        if path.is_dir():
            for tif in sorted(path.glob("*.tif")):
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
        meta = json.loads((path / ".zmetadata").read_text())["metadata"]
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
