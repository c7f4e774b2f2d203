"""The analyst's query: changes similar to one event, in this run and in other compatible runs."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import shapely
import xarray as xr

from . import runlock
from .change import read_vectors
from .cube import OutputGrid, on_earth
from .errors import ConfigError, EventNotFoundError
from .events import check_run_dir, damaged_output, missing_output, read_events
from .intact import events_problem, objects_problem, zarr_problem
from .objects import TRAJECTORY_COLUMNS, object_descriptors
from .sources.dates import to_times
from .search import SimilarChangeIndex, check_compatible, compatibility, feedback_query, rank_augmented, unit_rows
from .tiling import PatchGrid

RESULT_COLUMNS = ["run", "event_id", "similarity", "t0", "t1", "row", "col", "cluster", "atypicality", "false_alarm_rate",
                  "rank", "object_id", "object_rank"]


#: An ``--in`` run whose dates lie this many times closer or further apart than the query run's (median
#: spacing) has its objects' trajectories left out of ``--objects`` search: they are counted in dates from the
#: onset (:data:`changescout.objects.TRAJECTORY_OFFSETS`), so one date after a harvest is a month of regrowth in
#: a run of monthly composites and five days of bare soil in one of every Sentinel-2 pass.
CADENCE_RATIO = 1.5


def cadence_days(events: pd.DataFrame) -> float:
    """The median number of days between consecutive dates of a run (the dates its events start or end at);
    NaN for fewer than two dates."""
    dates = np.unique(np.concatenate([pd.to_datetime(events[c]).to_numpy("datetime64[D]") for c in ("t0", "t1")]))
    return float(np.median(np.diff(dates).astype(np.int64))) if len(dates) > 1 else float("nan")


def _other_cadence(base_days: float, days: float) -> bool:
    """Whether a run of dates ``days`` apart counts its trajectories over other spans than one of ``base_days``."""
    if not (np.isfinite(base_days) and np.isfinite(days)) or min(base_days, days) <= 0:
        return False
    return max(base_days, days) / min(base_days, days) >= CADENCE_RATIO


class RunView:
    """Read-only access to one run directory's events, vectors and index."""

    def __init__(self, path: Path, given_as: str = "RUN"):
        self.path = check_run_dir(path, given_as)  # (a file, or nothing there: told)
        for name in ("events.parquet", "changes.zarr", "index.faiss"):
            if not (self.path / name).exists():
                raise missing_output(f"not a finished changescout run ({name} is missing)", self.path)
        self.events = read_events(self.path / "events.parquet")
        store = self.path / "changes.zarr"
        if (why := zarr_problem(store)) is not None:  # a lost chunk reads as NaN, not as an error
            raise damaged_output(store, why)
        try:
            ds = xr.open_zarr(store, consolidated=True)
            self.attrs = dict(ds.attrs)
            self.compat = compatibility(self.attrs)
            self.dim = ds[self.compat["search_vector"]].shape[1]
            grid = OutputGrid.from_dict(json.loads(self.attrs["grid"]))
            why = events_problem(self.events, ds)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - zarr's, xarray's and json's errors for a store cut short or edited
            raise damaged_output(store, f"cannot read the change vectors ({type(exc).__name__}: {exc})") from exc
        if why is not None:  # (another run's events.parquet, of the same series: the same ids)
            raise damaged_output(self.path / "events.parquet", why)
        self.patch_grid = PatchGrid(grid, int(self.attrs["patch_size"]))
        self.on_earth = on_earth(grid.crs)

    def index(self) -> SimilarChangeIndex:
        path = self.path / "index.faiss"
        try:
            index = SimilarChangeIndex.load(path)
        except ConfigError as exc:  # a file cut short, empty, or not an index (faiss' RuntimeError, named)
            raise damaged_output(path, "cannot read the search index") from exc
        n, d = index.index_.ntotal, index.index_.d
        if n != len(self.events) or d != self.dim:  # another run's file, or an events table edited by hand
            raise damaged_output(path, f"the search index holds {n} changes of {d} dimensions, events.parquet "
                                       f"{len(self.events)} events and changes.zarr vectors of {self.dim}: they are not "
                                       "of one run (one was edited, or copied from another run)")
        # the same count is not the same run (another seed of one series): a few vectors, read back, must be
        # this run's search vectors at unit length
        keys = np.sort(self.events["vec"].to_numpy(np.int64))[np.linspace(0, n - 1, min(n, 16)).astype(int)] if n else []
        try:
            stored = np.vstack([index.index_.reconstruct(int(k)) for k in keys]) if len(keys) else None
        except RuntimeError:  # (an index that cannot give its vectors back: an inverted file without a direct map)
            stored = None
        if stored is not None:
            if not np.allclose(stored, unit_rows(self.vectors(keys)), atol=1e-4):  # (as SimilarChangeIndex.fit indexed them)
                raise damaged_output(path, "the search index holds other vectors than changes.zarr's search vectors: "
                                           "it is not this run's (copied from another run, or written over)")
        return index

    def event(self, event_id: str) -> pd.Series:
        hit = self.events[self.events["event_id"] == event_id]
        if hit.empty:
            raise EventNotFoundError(f"no event {event_id!r} in this run", self.path)
        return hit.iloc[0]

    def event_at(self, x: float, y: float, t1) -> pd.Series:
        row, col = self.patch_grid.locate(x, y)
        t1 = to_times([t1], None, "--t1")[0]  # YYYY-MM-DD, as --dates: "July" is not the year 1 (the option's fault, not the run's)
        hit = self.events[(self.events["row"] == row) & (self.events["col"] == col)]
        if hit.empty:
            raise EventNotFoundError(f"patch r{row} c{col} has no event at any date: too few of its pixels were clear "
                                     "at two dates to compare (see --min-clear), or it lies off the data", self.path)
        exact = hit[pd.to_datetime(hit["t1"]).dt.normalize() == t1.normalize()]
        if exact.empty:
            dates = sorted(pd.to_datetime(hit["t1"]).dt.strftime("%Y-%m-%d").unique())
            raise EventNotFoundError(f"patch r{row} c{col} has no event ending on {t1:%Y-%m-%d}; its dates: {dates}", self.path)
        return exact.iloc[0]

    def objects(self) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, np.ndarray]:
        """``(ids, descriptors, onset, vectors)`` of the run's candidate change objects (``objects.parquet``):
        each object's descriptor (:func:`changescout.objects.object_descriptors`), its onset patch events and
        their search vectors (rows aligned), read once."""
        if not hasattr(self, "_objects"):
            path = self.path / "objects.parquet"
            if not path.exists():
                raise missing_output("no objects.parquet, which --objects compares (a run of an older changescout?): search "
                                     "its patch events without --objects, or run it again with this version (--overwrite)",
                                     self.path, first_run=False)
            try:
                names = pq.read_schema(path).names  # the trajectories: runs of 0.3.15 and earlier lack them
                table = pd.read_parquet(path, columns=["object_id", "candidate",
                                                       *(TRAJECTORY_COLUMNS if set(TRAJECTORY_COLUMNS) <= set(names) else ()),
                                                       *(("elongation",) if "elongation" in names else ()),
                                                       *(("event_id",) if "event_id" in names else ())])
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a file cut short, edited or of other columns
                raise damaged_output(path, f"cannot read the change objects ({type(exc).__name__}: {exc})") from exc
            # another run's objects (a copy, a restore) gave plausible, wrong neighbours without a word (a review)
            if (why := objects_problem(table, self.events)) is not None:
                raise damaged_output(path, why)
            ids = np.sort(table.loc[table["candidate"].astype(bool), "object_id"].to_numpy(np.int64))
            ev = self.events[self.events["object_id"].isin(ids)]
            t1 = pd.to_datetime(ev["t1"])
            onset = ev[(t1 == t1.groupby(ev["object_id"].to_numpy()).transform("min")).to_numpy()]
            vectors = self.vectors(onset["vec"].to_numpy()) if len(onset) else np.zeros((0, self.dim), np.float32)
            desc = object_descriptors(onset.assign(vec=np.arange(len(onset))), vectors, ids)
            # per object its trajectory (objects.trajectory_profiles), when the run has them
            self._trajectory = (table.set_index("object_id")[list(TRAJECTORY_COLUMNS)].astype(np.float64)
                                if TRAJECTORY_COLUMNS[0] in table else None)
            self._elongation = table.set_index("object_id")["elongation"].astype(np.float64) if "elongation" in table else None
            self._objects = ids, desc, onset, vectors
        return self._objects

    def trajectories(self, object_ids) -> np.ndarray:
        """``(n, offsets)``: the trajectory profiles of these objects (NaN where unknown, and everywhere for a
        run of changescout 0.3.15 or earlier, whose objects.parquet has none)."""
        self.objects()
        ids = np.asarray(object_ids, np.int64)
        if self._trajectory is None:
            return np.full((len(ids), len(TRAJECTORY_COLUMNS)), np.nan)
        return self._trajectory.reindex(ids).to_numpy(np.float64)

    def elongations(self, object_ids) -> np.ndarray:
        """The ``elongation`` of these objects (objects.parquet; NaN for a run without the column)."""
        self.objects()
        ids = np.asarray(object_ids, np.int64)
        if self._elongation is None:
            return np.full(len(ids), np.nan)
        return self._elongation.reindex(ids).to_numpy(np.float64)

    def vectors(self, keys) -> np.ndarray:
        store = self.path / "changes.zarr"
        try:
            out = read_vectors(store, keys, self.compat["search_vector"])[0]
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a chunk cut short, a key the store lacks (the events edited)
            raise damaged_output(store, f"cannot read the change vectors ({type(exc).__name__}: {exc})") from exc
        if not np.isfinite(out).all():  # a deleted variable reads as its fill value, not as an error
            raise damaged_output(store, f"the {self.compat['search_vector']} vectors that similar-change search compares "
                                        "are missing or not finite")
        return out


def find_similar(run: Path, event_id: str | None = None, at: tuple[float, float] | None = None, t1=None, k: int = 10,
                 other_runs=(), negatives=(), objects: bool = False) -> pd.DataFrame:
    """The ``k`` changes most similar to the query event (by cosine of their search vectors: what changed
    beyond what look-alike patches did between the same dates, and what it turned into, :mod:`changescout.search`),
    best first.

    With ``objects``, the event's whole change object is compared with the change objects of the runs (the
    candidates of ``objects.parquet``), each by the surprise-weighted mean of the search vectors of its onset
    (:func:`changescout.objects.object_descriptors`: an episode's end is the change undone), the query's and
    every object's drawn toward its nearest other object of its own run (:func:`changescout.search.rank_augmented`); the
    query's own object is left out, and each result is one object, its onset patch most like the query as the
    detail. Object against object, precision@5 of common types on the planted Bouconne series is 0.86 (seeds
    0-4); the object's mean against single patches, as before 0.3.14, gave 0.71."""
    # one id or one run given alone (the CLI takes them one by one) is a list of one, not its characters
    other_runs = [other_runs] if isinstance(other_runs, (str, os.PathLike)) else list(other_runs)
    negatives = [negatives] if isinstance(negatives, str) else list(negatives)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"-k must be a whole number of changes >= 1, got {k!r}")
    with contextlib.ExitStack() as held:  # no run may rewrite them while they are read
        for path in (run, *other_runs):
            held.enter_context(runlock.reading(path))
        return _find_similar(run, event_id, at, t1, k, other_runs, negatives, objects)


def _find_events(views: list[RunView], event_id: str) -> list[tuple[RunView, pd.Series]]:
    """``(view, event)`` for each of ``views`` that holds ``event_id`` (two runs of one source and grid share
    their ids: a change told off is told off in both)."""
    found = [(v, hit.iloc[0]) for v in views if len(hit := v.events[v.events["event_id"] == event_id])]
    if found:
        return found
    where = views[0].path if len(views) == 1 else ", ".join(str(v.path) for v in views)
    raise EventNotFoundError(f"no event {event_id!r} in {'this run' if len(views) == 1 else 'these runs: ' + where}",
                             views[0].path if len(views) == 1 else None)


def _find_similar(run, event_id, at, t1, k, other_runs, negatives, objects) -> pd.DataFrame:
    base = RunView(run)
    if event_id and (at is not None or t1 is not None):
        raise EventNotFoundError("give an EVENT_ID or --at X,Y with --t1 DATE, not both")
    if event_id:
        query = base.event(event_id)
    elif at is not None and t1 is not None:
        query = base.event_at(at[0], at[1], t1)
    else:
        raise EventNotFoundError("give an EVENT_ID, or --at X,Y with --t1 DATE")
    # another run given twice, or the query's own run given with --in, is searched once (as the query's run)
    others = {Path(p).resolve(): p for p in other_runs if Path(p).resolve() != base.path.resolve()}
    views = [base] + [RunView(p, "--in") for p in others.values()]
    for v in views[1:]:
        check_compatible(base.compat, v.compat, str(base.path), str(v.path))
    neg = [found for e in negatives for found in _find_events(views, e)]  # a result of an --in run may be told off too
    if any(v is base and e["event_id"] == query["event_id"] for v, e in neg):
        raise EventNotFoundError(f"--not names the query itself ({query['event_id']}): a change cannot be unlike itself")
    named = (next((e["event_id"] for v, e in neg if v is base and e["object_id"] == query["object_id"]), None)
             if objects and "object_id" in query else None)
    if named is not None:
        # with --objects, --not stands for the id's whole object: here the query's own (its feedback was lost silently)
        raise EventNotFoundError(f"--not names {named}, a patch of the query's own object ({int(query['object_id'])}): with "
                                 "--objects it stands for that whole object, the query itself; a change cannot be unlike itself")
    # the query's own object (its other patches, its end) is the same change, not a similar one: left out
    own = base.events[base.events["object_id"] == query["object_id"]] if "object_id" in base.events else base.events.iloc[0:0]
    if objects:
        out, seen_again, other_pace = _similar_objects(views, query, own, neg, k)
    else:
        (out, seen_again), other_pace = _similar_events(views, query, own, neg, k), []
    twin = _seen_before(out) if len(views) > 1 else np.full(len(out), -1)  # one change seen by two runs: once
    listed = np.flatnonzero(twin < 0)[:k]
    dropped = len(set(twin[twin >= 0].tolist()) & set(listed.tolist()))  # listed changes that another run sees too
    out = out.iloc[listed]
    out = out[RESULT_COLUMNS].reset_index(drop=True)
    out.attrs["query"] = query["event_id"]
    out.attrs["same_change_elsewhere"] = seen_again
    out.attrs["seen_twice"] = dropped
    out.attrs["query_object"] = int(query["object_id"]) if "object_id" in query else None
    out.attrs["own_left_out"] = int((own["event_id"] != query["event_id"]).sum())  # the object's other patch events
    out.attrs["trajectories_left_out"] = other_pace  # (run, its days between dates, the query run's)
    return out


def _own_descriptor(view: RunView, object_id) -> np.ndarray:
    """``(1, dim)``: the descriptor of one change object of ``view`` (its onset: an episode's end, a flood
    receding, points the other way), a candidate or not."""
    own = view.events[view.events["object_id"] == object_id]
    rows = own.assign(vec=np.arange(len(own)))  # object_descriptors indexes the vectors by vec
    return object_descriptors(rows, view.vectors(own["vec"].to_numpy()), np.array([object_id]))


def _similar_objects(views: list[RunView], query: pd.Series, own: pd.DataFrame, neg, k: int
                     ) -> tuple[pd.DataFrame, int, list[tuple[str, float, float]]]:
    """Change objects against change objects: the candidate objects of every run, each compared by its
    descriptor after :func:`changescout.search.rank_augmented` (the query drawn toward its nearest object of its
    run, as every object is, not toward its copy in an overlapping run); best first, one row per object, its onset
    patch most like the query as the detail. Also ``(run, days between its dates, the query run's)`` of each
    ``--in`` run whose trajectories were left out (:data:`CADENCE_RATIO`)."""
    base = views[0]
    parts = [v.objects() for v in views]
    start = np.cumsum([0] + [len(p[0]) for p in parts])
    database = np.vstack([p[1] for p in parts]) if start[-1] else np.zeros((0, base.dim), np.float32)

    def row_of(i: int, object_id) -> int:  # the object's row in the database, -1 when it is no candidate
        hit = np.flatnonzero(parts[i][0] == object_id)
        return int(start[i] + hit[0]) if len(hit) else -1

    exclude, seen_again = set(), 0
    for i, v in enumerate(views):
        ids = parts[i][0]
        drop = {e["object_id"] for w, e in neg if w is v}  # an object told off goes whole
        if v is base:
            drop.add(query["object_id"])
        elif v.on_earth and base.on_earth:  # a run that overlaps the query's: the query's own change seen again
            again = _same_change(v, own if len(own) else base.events[base.events["vec"] == query["vec"]], query)
            seen_again += len(again)
            drop |= set(v.events.loc[v.events["vec"].isin(again), "object_id"])
        exclude |= {int(start[i] + j) for j in np.flatnonzero(np.isin(ids, list(drop)))}
    if not len(database):
        return pd.DataFrame(columns=[*RESULT_COLUMNS, "geometry"]), seen_again, []
    positive = _own_descriptor(base, query["object_id"])
    negatives = np.vstack([_own_descriptor(w, e["object_id"]) for w, e in neg]) if neg else None
    negatives_own = [row_of(views.index(w), e["object_id"]) for w, e in neg]
    # how the objects unfold around their onsets; unknown (NaN) for runs of 0.3.15 and earlier, whose objects
    # then take the others' median trajectory distance (search.trajectory_distance), and the term is left out
    # when the query's own run has none
    profiles = np.vstack([v.trajectories(p[0]) for v, p in zip(views, parts)])
    # trajectories count dates: compared only between runs of a like pace (unknown, the others' median distance)
    pace = [cadence_days(v.events) for v in views]
    other_pace = [(str(v.path), pace[i], pace[0]) for i, v in enumerate(views) if i and _other_cadence(pace[0], pace[i])]
    for i, v in enumerate(views):
        if i and _other_cadence(pace[0], pace[i]):
            profiles[start[i]:start[i + 1]] = np.nan
    query_profile = base.trajectories([query["object_id"]])[0]
    shapes = np.concatenate([v.elongations(p[0]) for v, p in zip(views, parts)])
    rows, sims = rank_augmented(database, positive[0], own=row_of(0, query["object_id"]), exclude=exclude,
                                negatives=negatives, negatives_own=negatives_own, profiles=profiles,
                                query_profile=query_profile, shapes=shapes, query_shape=base.elongations([query["object_id"]])[0],
                                groups=np.repeat(np.arange(len(views)), np.diff(start)),
                                negatives_groups=[views.index(w) for w, _ in neg])
    # room for the changes that two overlapping runs both see, listed once after
    rows, sims = rows[: k * 4 if len(views) > 1 else k], sims[: k * 4 if len(views) > 1 else k]
    q = feedback_query(positive, negatives)[0]
    frames = []
    for i, v in enumerate(views):
        mine = (rows >= start[i]) & (rows < start[i + 1])
        if not mine.any():
            continue
        ids, _, onset, vectors = parts[i]
        picked = ids[rows[mine] - start[i]]
        # the detail: each object's onset patch whose search vector is most like the query
        like = vectors.astype(np.float64) @ q / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        best = (pd.DataFrame({"object_id": onset["object_id"].to_numpy(), "like": like, "vec": onset["vec"].to_numpy()})
                .sort_values(["object_id", "like"], ascending=[True, False], kind="stable").drop_duplicates("object_id")
                .set_index("object_id")["vec"])
        hits = pd.DataFrame({"vec": best.reindex(picked).to_numpy(), "similarity": sims[mine].astype(np.float32)})
        frame = _with_events(v, hits, base)
        # an object is one change whatever the date its detail patch starts from (a patch clouded at the date
        # before compares an earlier one): two runs' objects of it match by their comparison and onset date
        frame["_since"] = str(v.attrs.get("comparison", ""))
        if v.on_earth and base.on_earth:  # each object's onset outline: what two runs' objects of one change share
            where = v.events.set_index("vec").geometry
            outlines = [shapely.union_all(where.reindex(onset.loc[onset["object_id"] == o, "vec"]).to_numpy()) for o in picked]
            frame["outline"] = _places(gpd.GeoSeries(outlines, crs=v.events.crs), base.events.crs)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True).sort_values("similarity", ascending=False, kind="stable")
    return out, seen_again, other_pace


def _with_events(v: RunView, hits: pd.DataFrame, base: RunView) -> pd.DataFrame:
    """``hits`` (``vec``, ``similarity``) with their events' columns, run and places (in the query run's CRS)."""
    hits = hits.merge(pd.DataFrame(v.events.drop(columns="geometry")), on="vec", how="left")
    hits["run"] = str(v.path)
    hits["geometry"] = (_places(v.events.set_index("vec").geometry.reindex(hits["vec"]), base.events.crs)
                        if v.on_earth and base.on_earth else np.full(len(hits), None, object))
    return hits


def _similar_events(views: list[RunView], query: pd.Series, own: pd.DataFrame, neg, k: int) -> tuple[pd.DataFrame, int]:
    """Patch events against patch events, through each run's index; best first."""
    base = views[0]
    q = feedback_query(base.vectors([query["vec"]]), np.vstack([v.vectors([e["vec"]]) for v, e in neg]) if neg else None)
    frames, seen_again = [], 0
    for v in views:
        exclude = {int(e["vec"]) for w, e in neg if w is v}
        if v is base:
            exclude |= {int(query["vec"])} | set(own["vec"].astype(int))
        elif v.on_earth and base.on_earth:  # a run that overlaps the query's: the query's own change seen again
            again = _same_change(v, own if len(own) else base.events[base.events["vec"] == query["vec"]], query)
            seen_again += len(again)
            exclude |= again
        # room for the changes that two runs both see, listed once after
        res = v.index().search(q, k=k * 4 if len(views) > 1 else k, exclude=exclude)
        frames.append(_with_events(v, pd.DataFrame({"vec": res.keys[0], "similarity": res.similarities[0]}), base))
    return pd.concat(frames, ignore_index=True).sort_values("similarity", ascending=False, kind="stable"), seen_again


def _places(geometry, crs) -> np.ndarray:
    """Patch polygons in the query run's CRS; None where they cannot be put there: such results are never
    taken for one another (nor are those of image pairs without georeferencing, whose pixel grids share a
    CRS but no place: the caller checks :func:`changescout.cube.on_earth`)."""
    if geometry.crs == crs:
        return geometry.to_numpy()
    try:
        return geometry.to_crs(crs).to_numpy()
    except Exception:  # noqa: BLE001 - pyproj's errors for CRSs without a transformation between them
        return np.full(len(geometry), None, object)


def _seen_before(results: pd.DataFrame) -> np.ndarray:
    """Per result (best first): the position of a better result of another run that is the same change (same
    ``t0`` and ``t1``, patches that overlap by area, not only an edge; objects: the same comparison and onset
    ``t1`` and overlapping onset outlines, as two runs' objects of one change may hold other patches and other
    details, whose ``t0`` differs where one was clouded at the date before), or -1: two overlapping runs see each
    change of their shared area. (A run compared by anniversary and one date to date share their ``t1`` and
    places, not their changes.)"""
    seen = np.full(len(results), -1)
    where = results["outline"] if "outline" in results else results["geometry"]
    geoms = np.array([g if isinstance(g, shapely.Geometry) else None for g in where], object)  # (NaN: none)
    runs = results["run"].to_numpy()
    t0, t1 = (pd.to_datetime(results[c]).to_numpy() for c in ("t0", "t1"))
    if "_since" in results:  # objects: the runs' comparison, not their detail patches' t0 (:func:`_similar_objects`)
        t0 = results["_since"].to_numpy()
    for i in range(1, len(results)):
        earlier = np.flatnonzero((runs[:i] != runs[i]) & (t0[:i] == t0[i]) & (t1[:i] == t1[i]) & (seen[:i] < 0))
        earlier = earlier[np.array([g is not None for g in geoms[earlier]], bool)]
        if len(earlier) and geoms[i] is not None:
            hit = earlier[_overlap(geoms[earlier], geoms[i])]
            seen[i] = hit[0] if len(hit) else -1
    return seen


def _overlap(patches: np.ndarray, where) -> np.ndarray:
    """Which ``patches`` overlap ``where`` by area, not only an edge: a ratio to the smaller of the two areas,
    so square degrees do as well as square metres at patch scale (shapely's areas, without geopandas' warning
    that areas in a geographic CRS are "likely incorrect": a run in EPSG:4326)."""
    smaller = np.minimum(shapely.area(patches), shapely.area(where))
    return shapely.area(shapely.intersection(patches, where)) > 1e-6 * smaller


def _same_change(view: RunView, own: pd.DataFrame, query: pd.Series) -> set[int]:
    """The ``vec`` keys of ``view``'s events that are the query's own change seen again: the dates of one of
    the query object's patch events (``t1`` the query's; ``t0`` may differ from patch to patch, where one was
    cloudy) on a patch that overlaps (by area, not only an edge) the patches of the query's object. A run
    compared by anniversary and one compared date to date share ``t1`` and places, not changes."""
    events = view.events
    onset = own[pd.to_datetime(own["t1"]) == pd.Timestamp(query["t1"])]  # (not the events of an episode's end)
    dates = pd.MultiIndex.from_arrays([pd.to_datetime(events["t0"]), pd.to_datetime(events["t1"])])
    same = events[dates.isin(list(zip(pd.to_datetime(onset["t0"]), pd.to_datetime(onset["t1"]))))]
    if same.empty or "geometry" not in own or own.crs is None or same.crs is None:
        return set()
    where = own.to_crs(same.crs).union_all()
    return set(same["vec"].to_numpy()[_overlap(np.asarray(same.geometry.values), where)].astype(int))
