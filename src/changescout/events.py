"""The events table: one row per (patch, date pair), ranked; GeoParquet I/O and exports.

Every score follows one direction: higher means more (more change, more atypical, rarer). The schema below
is written into the GeoParquet file metadata (key ``changescout``) so that a reader knows what each column
means without this package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .cube import on_earth
from .errors import ConfigError, OutputError, RunExistsError, RunNotFoundError

SCHEMA_VERSION = "1"

#: column -> (dtype, description). Score columns say their direction.
SCHEMA: dict[str, tuple[str, str]] = {
    "event_id": ("string", "<series>-<t0 YYYYMMDD>-<t1 YYYYMMDD>-r<row>-c<col>; stable within one grid"),
    "series": ("string", "series id: readable label + short hash of source and grid"),
    "row": ("int32", "patch row in the patch grid (0 = top)"),
    "col": ("int32", "patch column in the patch grid (0 = left)"),
    "t0": ("datetime64[ns]", "date of the state compared against (the previous clear date that was not a one-date spike, the anniversary or the reference; a patch's first clear date is never taken for a spike: nothing before it tells one)"),
    "t1": ("datetime64[ns]", "date of the new state"),
    "magnitude": ("float32", "distance between the patch embeddings at t0 and t1, as the root mean square over their dimensions (the Euclidean distance / sqrt(dim), so that encoders of other sizes compare; of the unit vectors for encoders compared by cosine); higher = larger change"),
    "surprise": ("float32", "magnitude (same scale) of the change left after removing what patches in a similar state did between the same dates (seasons); higher = more unexpected"),
    "zscore": ("float32", "robust z-score of surprise against this patch's own history; higher = more unusual for the patch; NaN = unknown (the patch has fewer than two other changes: an image pair, a 3-date series)"),
    "persistence": ("Int32", "later clear dates over which the new state holds before reverting; null = unknown (no later clear date of the patch); 0 = transient (e.g. cloud; or unconfirmed by a later clear date and partly flagged cloud at t1, beside a cloud: its fringe, changescout.change)"),
    "recurrence": ("float32", "-1..1 cosine between this change and the same patch's change a year before or after (the larger); near 1 = a seasonal cycle (crops, canopy), demoted in the object ranking; NaN = no date a year apart, or not --compare consecutive (not computed)"),
    "spectral": ("float32", "change of the patch's most changed 4 px blocks (smaller where 4 px do not tile the patch) of pixels clear or water at both dates: the mean of its 4 largest root mean squares of the bands' difference between t0 and t1, each band robust-z scored against the whole scene's blocks between those dates; higher = a larger change of some of its pixels (a road, a building across a patch; changescout.spectral); NaN = no block clear at both dates, or a run of changescout 0.3.29 or earlier"),
    "clear_fraction": ("float32", "lower of the clear-pixel fractions of the patch at t0 and t1 (of its pixels that the images cover)"),
    "cluster": ("int32", "change type: cluster id of the change vector"),
    "cluster_size": ("int32", "number of events in this cluster"),
    "rarity": ("float32", "0..1, higher = rarer change type and emptier neighbourhood in change-vector space"),
    "atypicality": ("float32", "0..1 ranking score, higher = more atypical (rarity and/or magnitude, transient changes demoted)"),
    "rank": ("int32", "1 = most atypical"),
    "false_alarm_rate": ("float32", "calibrated score: fraction of the run's unchanged-looking patch events (surprise not standing out) whose atypicality is at least this high; lower = more certainly a change"),
    "object_id": ("int64", "change object this patch event belongs to (objects.parquet): touching patches of one date pair that change alike (or seen a date late through a cloud)"),
    "object_rank": ("int32", "rank of its object, 1 = most atypical object; the analyst's list"),
    "vec": ("int64", "key of the change vector in changes.zarr (and id in index.faiss)"),
}

COLUMNS = list(SCHEMA)
#: float columns added after version 0.2.0, read as NaN from the tables of earlier versions
ADDED_COLUMNS = ("recurrence", "spectral")


def schema_metadata(schema: dict[str, tuple[str, str]] | None = None) -> dict:
    """A table's schema (version, and dtype and description per column; default: the events table's) as
    written into its parquet metadata under the key ``changescout``."""
    schema = SCHEMA if schema is None else schema
    return {"schema_version": SCHEMA_VERSION, "columns": {k: {"dtype": d, "description": s} for k, (d, s) in schema.items()}}


def write_events(events: gpd.GeoDataFrame, path: str | os.PathLike) -> Path:
    """Write the events table as GeoParquet, atomically, with the column descriptions in its metadata."""
    missing = [c for c in COLUMNS if c not in events.columns]
    if missing:
        raise ConfigError(f"events table misses columns {missing}")
    if events.crs is None:
        raise ConfigError("events table has no CRS")
    return write_parquet(events, path, schema_metadata())


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike, metadata: dict) -> Path:
    """A table written atomically as Parquet (GeoParquet for a GeoDataFrame), ``metadata`` (column
    descriptions: :func:`schema_metadata`) under the file metadata key ``changescout``, beside geopandas'
    ``geo`` key."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if isinstance(frame, gpd.GeoDataFrame):  # (geopandas writes its ``geo`` key only through a file)
            frame.to_parquet(tmp, index=False, schema_version=None, write_covering_bbox=False)
            table = pq.read_table(tmp)
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        meta = {**(table.schema.metadata or {}), b"changescout": json.dumps(metadata).encode()}
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    return path


#: Where ``run --overwrite`` keeps the run it replaces until the new one has finished (restored if bad input
#: stops the new one; an interrupted replacement is finished by the same command).
REPLACED = ".replaced"


def damaged_output(path: Path, problem: str) -> RunNotFoundError:
    """The error for a run directory's output that is there but cannot be used (cut short, edited, another
    run's): named, with how to rebuild it (a rerun of the same command redoes the stage whose output is gone)."""
    err = RunNotFoundError(f"{problem}: it is damaged or not this run's; delete it and rerun the run's command (the same "
                           "`changescout run ... --out` as before) to rebuild it (a run made by another changescout "
                           "version is not resumed: that command with --overwrite redoes it whole)", path)
    err.problem = problem  # (what is wrong, without the advice: a rerun that rebuilds it says so in its log)
    return err


def check_run_dir(path, given_as: str = "RUN") -> Path:
    """``path`` as a run directory; :class:`RunNotFoundError` for a file given as RUN (``RUN/events.parquet``:
    the messages said ``events.parquet/events.csv`` exists, or that ``events.parquet`` is missing)."""
    path = Path(path)
    if path.is_file():
        raise RunNotFoundError(f"is a file; {given_as} is a run directory (the folder that holds it: {path.parent})", path)
    if not path.exists():  # (export said "no events table here")
        raise RunNotFoundError("does not exist", path)
    return path


def run_store(path, name: str):
    """``path`` as the zarr store ``name`` (``changes.zarr``, ``embeddings.zarr``): a run directory holding it
    is taken for it, as :func:`read_events` takes a run directory for its table; :func:`missing_output` when it
    is not there (zarr's GroupNotFoundError). A URL (``s3://``, ``memory://``) or a zarr store object is
    given back as it is, for zarr to open."""
    if not isinstance(path, (str, os.PathLike)) or "://" in str(path):
        return path
    path = Path(path)
    is_store = any((path / f).exists() for f in (".zgroup", ".zmetadata", "zarr.json"))  # (zarr v2, v3)
    if not is_store and (path / name).is_dir():  # a run directory
        path = path / name
    elif not path.exists() or (not is_store and path.name != name):  # (a store of that name without its metadata
        # is zarr's to call damaged)
        raise missing_output(f"no {name} here", path)
    return path


def missing_output(message: str, path: Path, first_run: bool = True) -> RunNotFoundError:
    """The error for a run directory's output that is not there: when an interrupted ``--overwrite`` holds the
    directory (the previous run set aside in ``.replaced/``) it says so, instead of asking for a first run
    (``first_run``: whether to ask for one; False where ``message`` gives its own advice)."""
    run = path if path.is_dir() or not path.suffix else path.parent
    if (run / REPLACED).is_dir():
        return RunNotFoundError(f"{message}: an interrupted `changescout run --overwrite` is replacing this run; rerun that "
                                f"command to finish it (the previous run waits in {REPLACED}/ until then)", run)
    return RunNotFoundError(f"{message} (run `changescout run` first)" if first_run else message, path)


def read_events(path: str | os.PathLike) -> gpd.GeoDataFrame:
    """Read an events table written by :func:`write_events` (a file or a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "events.parquet"
    if not path.exists():
        raise missing_output("no events table here", path)
    try:
        gdf = gpd.read_parquet(path)
    except Exception as exc:
        raise damaged_output(path, f"cannot read the events table ({exc})") from exc
    for c in ADDED_COLUMNS:  # tables of earlier versions lack them: unknown
        if c not in gdf.columns:
            gdf.insert(list(SCHEMA).index(c), c, np.full(len(gdf), np.nan, np.float32))
    missing = [c for c in COLUMNS if c not in gdf.columns]
    if missing:
        raise RunNotFoundError(f"not a changescout events table: columns {missing} are missing", path)
    if gdf.crs is None:  # (every run writes one, a pixel grid's too: exports had gone out without it)
        raise damaged_output(path, "the events table has no CRS")
    return gdf


EXPORT_FORMATS = {"gpkg": ("GPKG", ".gpkg"), "geojson": ("GeoJSON", ".geojson"), "csv": (None, ".csv")}
#: The file extensions an export of each format may have (GDAL and GIS tools open a file by its extension).
EXPORT_SUFFIXES = {"gpkg": (".gpkg",), "geojson": (".geojson", ".json"), "csv": (".csv",)}


def check_export_target(path: str | os.PathLike, fmt: str, overwrite: bool = False, run_dir=None) -> Path:
    """``path`` as a place to export a table as ``fmt`` (``ConfigError``/``OutputError``/``RunExistsError``
    naming it otherwise): named by the format's extension (a GIS opens a file by it: ``x.shp`` written as a
    GeoPackage, or a name without one, was written and could not be opened), in a folder that exists (a typo
    in the path is told, not made into folders), not a file of a run directory's own (a CSV written over
    ``RUN/events.parquet`` lost the run; ``run_dir``: the run exported, its own even when its state.json is
    gone), and not an existing file unless ``overwrite``."""
    from .pipeline import RUN_FILES
    from .sources.geotiff import is_run_dir

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {sorted(EXPORT_FORMATS)}")
    path = Path(path)
    if path.is_dir():
        raise OutputError("is a folder; give the export's file name", path)
    named = {suffix: name for name, (_, suffix) in EXPORT_FORMATS.items()}.get(path.suffix.lower())
    if named not in (None, fmt):
        raise ConfigError(f"the file name says {named} but --format is {fmt}; change one of them", path)
    if not path.suffix:
        raise ConfigError(f"has no extension, by which a GIS opens a file; name it {path.name}{EXPORT_FORMATS[fmt][1]}", path)
    if not path.parent.exists():
        raise OutputError("does not exist (the folder of the export); create it or choose another file", path.parent)
    exports = {f"{t}{suffix}" for t in ("events", "objects") for _, suffix in EXPORT_FORMATS.values()}
    own = {n.lower() for n in set(RUN_FILES) - exports}  # (names compared as a case-insensitive disk would)
    target = path.resolve()
    runs = {Path(run_dir).resolve()} if run_dir is not None else set()
    for folder in target.parents:
        if (folder in runs or is_run_dir(folder)) and (first := target.relative_to(folder).parts[0]).lower() in own:
            raise ConfigError(f"the export would write over the run {folder}'s own {first}; choose another file name", path)
    if path.suffix.lower() not in EXPORT_SUFFIXES[fmt]:
        raise ConfigError(f"a GIS opens a file by its extension, and {path.suffix} is not that of --format {fmt} "
                          f"({' or '.join(EXPORT_SUFFIXES[fmt])}); name it {path.name}{EXPORT_FORMATS[fmt][1]}", path)
    if path.exists() and not overwrite:
        raise RunExistsError("exists; use --overwrite to replace it", path)
    return path


def export_table(table: gpd.GeoDataFrame, path: str | os.PathLike, fmt: str, top: int | None = None,
                 layer: str | None = None, overwrite: bool = False) -> Path:
    """Export (the ``top`` ranked rows of) an events or objects table to GeoPackage, GeoJSON or CSV, at a path
    :func:`check_export_target` accepts (an existing file is replaced only with ``overwrite``).

    GeoPackage keeps the grid's CRS and the dates as dates (DATE fields), in a layer named ``layer`` (by default
    ``objects`` for an objects table, else ``events``); GeoJSON follows RFC 7946 (longitude/latitude on WGS 84,
    which web maps and GDAL assume: a pixel grid, which has no place on Earth, is refused rather than read as
    degrees); CSV has the geometry as WKT in a column named ``WKT`` (GDAL's CSV driver reads it as the geometry)
    and the CRS in a ``crs`` column."""
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1):
        raise ConfigError(f"--top must be a whole number of at least 1, got {top!r}")
    path = check_export_target(path, fmt, overwrite)
    layer = layer or ("objects" if "n_patches" in table.columns else "events")
    if fmt == "geojson" and not on_earth(table.crs):
        raise ConfigError("GeoJSON holds longitude and latitude on WGS 84 (RFC 7946), and this run's grid is in pixel "
                          "coordinates (images without georeferencing): GIS software would read its pixels as degrees. "
                          "Export it with --format gpkg or csv, which keep its pixel coordinates")
    ev = table.sort_values("rank")
    if top is not None:
        ev = ev.head(top)
    ev = ev.copy()
    for c in [c for c in ("t0", "t1", "t_end") if c in ev.columns]:  # text in GeoJSON and CSV; GeoPackage has dates
        ev[c] = (pd.to_datetime(ev[c]).astype(pd.ArrowDtype(pa.date32())) if fmt == "gpkg"
                 else pd.to_datetime(ev[c]).dt.strftime("%Y-%m-%d"))
    driver, _ = EXPORT_FORMATS[fmt]
    try:
        _write_export(ev, path, fmt, driver, layer)
    except OSError as exc:
        raise OutputError(f"cannot write the export: {exc.strerror or exc}", path) from exc
    except RuntimeError as exc:  # GDAL (pyogrio's DataSourceError) on a place it cannot create a file
        raise OutputError(f"cannot write the export: {exc}", path) from exc
    return path


def _write_export(ev: gpd.GeoDataFrame, path: Path, fmt: str, driver: str, layer: str) -> None:
    with atomic_path(path) as tmp:
        if fmt == "csv":
            df = pd.DataFrame(ev.drop(columns="geometry"))
            df["WKT"] = ev.geometry.to_wkt()
            df["crs"] = ev.crs.to_string() if ev.crs is not None else ""
            df.to_csv(tmp, index=False)
        else:
            options = {"RFC7946": "YES"} if fmt == "geojson" else {}
            if fmt == "geojson":
                ev = ev.to_crs("EPSG:4326")
            # (arrow: the dates as DATE fields); the layer name a GIS shows, not the temporary file's
            ev.to_file(tmp, driver=driver, layer=layer, use_arrow=True, **options)


def check_directions(events: pd.DataFrame) -> None:
    """Rank 1 must hold the highest atypicality (used by tests and by readers who sort by hand)."""
    ev = events.sort_values("rank")
    if len(ev) and not np.all(np.diff(ev["atypicality"].to_numpy()) <= 1e-9):
        raise ConfigError("ranks do not follow atypicality")
