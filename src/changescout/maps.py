"""Change maps: Cloud-Optimized GeoTIFFs with one pixel per patch and one band per ``t1`` date.

``magnitude.tif`` and ``atypicality.tif`` are float32 (nodata NaN), ``cluster.tif`` is int16 (nodata -1).
Each band is described as ``t1=YYYY-MM-DD``; the file tags name the variable and the series, so a map
opened in QGIS says what it shows. Overviews are GDAL's ``AUTO``: halved until the smallest fits in one
256 px block, so a map of fewer than 256 patches a side (4096 px at patch 16) fits in one block and needs none.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from affine import Affine

from .atomic import atomic_path
from .cube import on_earth
from .errors import GridError
from .events import SCHEMA
from .tiling import PatchGrid

#: variable -> (dtype, nodata, overview resampling)
VARIABLES: dict[str, tuple[str, float, str]] = {
    "magnitude": ("float32", np.nan, "AVERAGE"),
    "atypicality": ("float32", np.nan, "AVERAGE"),
    "cluster": ("int16", -1, "NEAREST"),
}

BLOCKSIZE = 256


def write_change_maps(events: gpd.GeoDataFrame, patch_grid: PatchGrid, out_dir: str | Path) -> dict[str, Path]:
    """Write ``magnitude.tif``, ``atypicality.tif`` and ``cluster.tif`` COGs into ``out_dir``.

    Where several events share ``(t1, row, col)`` the most atypical one is kept. Returns
    ``{variable: path}``; with no events there is no date to map, nothing is written and ``{}`` is returned.
    """
    out_dir = Path(out_dir)
    if len(events) == 0:
        return {}
    dates, band, rows, cols, kept = _locate(events, patch_grid)
    series = ",".join(sorted(map(str, pd.unique(kept["series"]))))
    paths = {}
    for name, (dtype, nodata, resampling) in VARIABLES.items():
        arr = np.full((len(dates), *patch_grid.shape), nodata, dtype=dtype)
        arr[band, rows, cols] = kept[name].to_numpy(dtype=dtype)
        tags = {"changescout_variable": name, "series": series, "changescout_description": SCHEMA[name][1]}
        paths[name] = _write_cog(out_dir / f"{name}.tif", arr, patch_grid, dates, nodata, resampling, tags)
    return paths


def _locate(events: pd.DataFrame, patch_grid: PatchGrid):
    """Sorted t1 dates, and band/row/col indices of the most atypical event per (t1, row, col)."""
    ev = events.assign(t1=pd.to_datetime(events["t1"]).dt.normalize())
    ev = ev.sort_values("atypicality", ascending=False, kind="stable").drop_duplicates(["t1", "row", "col"])
    rows, cols = ev["row"].to_numpy(np.int64), ev["col"].to_numpy(np.int64)
    nr, nc = patch_grid.shape
    outside = (rows < 0) | (rows >= nr) | (cols < 0) | (cols >= nc)
    if outside.any():
        i = int(np.argmax(outside))
        raise GridError(f"event at patch (row {rows[i]}, col {cols[i]}) is outside the {nr}x{nc} patch grid; "
                        "were the events made on another grid or patch size?")
    dates = pd.DatetimeIndex(np.sort(ev["t1"].unique()))
    return dates, dates.get_indexer(ev["t1"]), rows, cols, ev


def _write_cog(path: Path, arr: np.ndarray, patch_grid: PatchGrid, dates, nodata, resampling: str, tags: dict) -> Path:
    count, height, width = arr.shape
    profile = {
        "driver": "COG", "count": count, "height": height, "width": width, "dtype": arr.dtype.name,
        # a pixel grid (images without georeferencing) has no CRS that GeoTIFF can hold: GDAL would write a
        # local CRS in metres, which `rio info` and GIS software then fail to place
        "nodata": nodata, "crs": patch_grid.grid.crs if on_earth(patch_grid.grid.crs) else None,
        "transform": patch_grid.grid.affine @ Affine.scale(patch_grid.patch_size),
        "compress": "DEFLATE", "predictor": "YES", "blocksize": BLOCKSIZE,
        "overviews": "AUTO", "resampling": resampling,
    }
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr)
            dst.descriptions = tuple(f"t1={d:%Y-%m-%d}" for d in dates)
            dst.update_tags(**tags)
    return path
