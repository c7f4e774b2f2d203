"""Is a finished stage's output still usable? Checked before a rerun skips the stage.

Outputs are written atomically (:mod:`changescout.atomic`), so a run never leaves one cut short; but a disk
that filled up under a copy, an edit or a sync tool can. A rerun that skipped the stage would then report
success over a file no reader can open (``-q`` printed nothing and exited 0 over a truncated events table).
These checks read as little as tells: a Parquet file's footer, each map's pixels (maps are at patch
resolution, small), the report's closing tag, the search index's header and size.
"""

from __future__ import annotations

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
        elif path.suffix == ".faiss":
            faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    except Exception as exc:  # whatever the reader says: the file is not usable
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot be read ({said[:150]}{'...' if len(said) > 150 else ''})"
    return None
