"""find_similar on a finished run: queries by id or place, exclusions, feedback, other runs."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from changescout.change import read_vectors
from changescout.errors import ConfigError, EventNotFoundError, GridError, IncompatibleRunsError, RunNotFoundError
from changescout.events import read_events
from changescout.objects import read_objects
from changescout.similar import RESULT_COLUMNS, RunView, find_similar


@pytest.fixture(scope="module")
def events(session_run):
    return read_events(session_run)


@pytest.fixture(scope="module")
def query(events):
    """A persistent, high-ranked event (not on the last date, so that --at/--t1 is unambiguous)."""
    ev = events[events["persistence"].fillna(-1) > 0].sort_values("rank")
    return ev.iloc[0]


def test_results_are_the_exact_cosine_neighbours(session_run, events, query):
    res = find_similar(session_run, query["event_id"], k=8)
    assert list(res.columns) == RESULT_COLUMNS
    assert len(res) == 8
    assert res.attrs["query"] == query["event_id"]
    vectors, keys = read_vectors(session_run / "changes.zarr", name="search")
    dim = read_vectors(session_run / "changes.zarr", name="vector")[0].shape[1]
    assert vectors.shape[1] == 2 * dim  # rcf: the residual beside the new state (change.search_vectors)
    q = vectors[keys == query["vec"]][0]
    sims = (vectors @ q) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
    own = events.loc[events["object_id"] == query["object_id"], "vec"]  # the same change: left out
    assert len(own) > 1
    sims[np.isin(keys, own)] = -np.inf
    best = keys[np.argsort(-sims, kind="stable")[:8]]
    by_key = events.set_index("vec")["event_id"]
    assert res["event_id"].tolist() == by_key.loc[best].tolist()
    assert query["object_id"] not in set(res["object_id"]) and res.attrs["query_object"] == query["object_id"]
    np.testing.assert_allclose(res["similarity"], np.sort(sims)[::-1][:8], atol=1e-5)
    assert (res["run"] == str(session_run)).all()
    calibrated = events.set_index("event_id")["false_alarm_rate"]  # each result's calibrated score, as in its run
    np.testing.assert_array_equal(res["false_alarm_rate"], calibrated.loc[res["event_id"]])


def test_query_by_place_and_date_gives_the_same_results(session_run, query):
    pg = RunView(session_run).patch_grid
    poly = pg.polygons(query["row"], query["col"])[0]
    at = (poly.centroid.x, poly.centroid.y)
    by_id = find_similar(session_run, query["event_id"], k=6)
    by_at = find_similar(session_run, at=at, t1=pd.Timestamp(query["t1"]).strftime("%Y-%m-%d"), k=6)
    pd.testing.assert_frame_equal(by_id, by_at)
    assert by_at.attrs["query"] == query["event_id"]


def test_query_itself_is_excluded(session_run, query):
    res = find_similar(session_run, query["event_id"], k=20)
    assert query["event_id"] not in res["event_id"].tolist()
    assert res["similarity"].is_monotonic_decreasing


def test_negatives_are_excluded_and_move_the_results(session_run, query):
    plain = find_similar(session_run, query["event_id"], k=10)
    negatives = plain["event_id"].iloc[:2].tolist()
    fb = find_similar(session_run, query["event_id"], k=10, negatives=negatives)
    assert not set(negatives) & set(fb["event_id"])
    assert len(fb) == 10
    # the query moved: similarities are those of another query vector, not only a shifted list
    shifted = plain[~plain["event_id"].isin(negatives)]
    common = fb.merge(shifted, on="event_id", suffixes=("_fb", "_plain"))
    assert len(common) and not np.allclose(common["similarity_fb"], common["similarity_plain"])


def test_another_compatible_run_is_searched_too(session_run, query, copy_run):
    """A run over the same place (here a copy) is searched, but the query's own change seen again there (same
    date, overlapping patches) is not a similar change: it came first, with similarity 1, in 36 of 40 queries
    of an acceptance test on two overlapping Bouconne crops. Nor is any other change listed twice, once per
    run that sees it: the copy's results are all the query run's, seen again."""
    other = copy_run(session_run, "other")
    alone = find_similar(session_run, query["event_id"], k=10)
    res = find_similar(session_run, query["event_id"], k=10, other_runs=[other])
    own = read_events(session_run)
    own = own[(own["object_id"] == query["object_id"]) & (own["t1"] == query["t1"])]
    assert not set(res["event_id"]) & set(own["event_id"]) and res.attrs["same_change_elsewhere"] == len(own)
    assert res["similarity"].max() < 1 - 1e-4
    assert set(res["run"]) == {str(session_run)} and res["event_id"].tolist() == alone["event_id"].tolist()
    assert res.attrs["seen_twice"] == 10  # each listed change, seen by the copy too
    third = copy_run(session_run, "third")
    assert find_similar(session_run, query["event_id"], k=10, other_runs=[other, third]).attrs["seen_twice"] == 10
    # objects: each descriptor is drawn toward its nearest object of its own run, not toward its copy in the
    # other (the query's results then moved with the overlapping run beside it: similarity 0.977 -> 0.909)
    objects = find_similar(session_run, query["event_id"], k=5, other_runs=[other], objects=True)
    objects_alone = find_similar(session_run, query["event_id"], k=5, objects=True)
    assert set(objects["run"]) == {str(session_run)} and len(objects) == 5
    assert objects["object_id"].tolist() == objects_alone["object_id"].tolist()
    np.testing.assert_allclose(objects["similarity"], objects_alone["similarity"], rtol=1e-6)


def test_changes_of_other_dates_at_the_same_place_are_not_taken_for_the_same_change(session_run, query, copy_run):
    """Two runs of one series, one compared by anniversary and one date to date, share their t1 and places but
    not their changes: the other run's changes from October to May were left out as the query's own change
    (from May a year before to May), and merged with the query run's (UAT, Landsat)."""
    other = copy_run(session_run, "anniversary")
    moved = read_events(other)
    moved["t0"] = moved["t0"] - pd.Timedelta(days=365)
    moved.to_parquet(other / "events.parquet")
    res = find_similar(session_run, query["event_id"], k=10, other_runs=[other])
    assert res.attrs["same_change_elsewhere"] == 0 and res.attrs["seen_twice"] == 0
    assert res["run"].iloc[0] == str(other) and res["event_id"].iloc[0] == query["event_id"]  # its twin, 1 year back


def test_a_run_of_another_area_is_searched_too(session_run, query, copy_run):
    """A run of another area that shares the embedding space (here a copy moved 100 km east): its changes are
    found beside the query run's, the best of both first."""
    other = copy_run(session_run, "elsewhere")
    moved = read_events(other)
    moved["geometry"] = moved.geometry.translate(100_000, 0)
    moved.to_parquet(other / "events.parquet")
    alone = find_similar(session_run, query["event_id"], k=10)
    res = find_similar(session_run, query["event_id"], k=10, other_runs=[other])
    assert set(res["run"]) == {str(session_run), str(other)}
    assert res["similarity"].is_monotonic_decreasing
    # elsewhere, the query's twin is not the same change seen again: its place differs
    assert res["run"].iloc[0] == str(other) and res["event_id"].iloc[0] == query["event_id"]
    # the query run's own rows are its best ones, in its own order: the other run adds, it does not reorder
    own = res.loc[res["run"] == str(session_run), "event_id"].tolist()
    assert own == alone["event_id"].tolist()[:len(own)]


def test_the_same_change_is_found_in_a_run_in_degrees_without_warnings(events, query):
    """Another run on a geographic grid (EPSG:4326): its patches that overlap the query's change are still told
    apart (a ratio of areas), and no "areas in a geographic CRS are likely incorrect" warning reaches the analyst."""
    import types
    import warnings

    from changescout.similar import _same_change

    own = events[(events["object_id"] == query["object_id"]) & (events["t1"] == query["t1"])]
    other = types.SimpleNamespace(events=events.to_crs("EPSG:4326"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seen = _same_change(other, own, query)
    assert seen == set(own["vec"].astype(int))


def test_the_querys_own_run_or_a_run_given_twice_is_searched_once(session_run, query, copy_run):
    """``--in RUN`` naming the query's own run must not bring the query back as its own best match, nor list
    each event twice; a run given twice counts once."""
    plain = find_similar(session_run, query["event_id"], k=5)
    alias = session_run.parent / "alias"
    if not alias.exists():
        alias.symlink_to(session_run, target_is_directory=True)  # the same run under another name
    same = find_similar(session_run, query["event_id"], k=5, other_runs=[session_run, alias])
    pd.testing.assert_frame_equal(same, plain)
    other = copy_run(session_run, "other")
    twice = find_similar(session_run, query["event_id"], k=10, other_runs=[other, other])
    assert not twice.duplicated(["run", "event_id"]).any()


def _rename_changes(store, prefix: str = "", keep=None) -> None:
    """The event ids of a run's changes.zarr, each given ``prefix``, and only the changes whose ``vec`` is in
    ``keep`` (a run faked: its tables and its change vectors must say the same ids)."""
    import shutil

    with xr.open_zarr(store, consolidated=True) as ds:
        ds = ds.load()
    ds["event_id"] = prefix + ds["event_id"].astype(str)
    if keep is not None:
        ds = ds.sel(vec=np.asarray(keep))
    for v in ds.variables.values():
        v.encoding = {}
    shutil.rmtree(store)
    ds.to_zarr(store, mode="w", consolidated=True, zarr_format=2, write_empty_chunks=True)


def test_a_result_from_another_run_can_be_told_off(session_run, query, copy_run):
    """--not takes the ids of any searched run: the analyst tells off what the results show, wherever it is."""
    from changescout.events import write_events

    other = copy_run(session_run, "renamed")
    ev = read_events(other)
    ev["event_id"] = "other-" + ev["event_id"]  # another series: ids of its own
    ev["geometry"] = ev.geometry.translate(100_000, 0)  # of another area (an overlapping one sees the same changes)
    write_events(ev, other / "events.parquet")
    _rename_changes(other / "changes.zarr", "other-")
    res = find_similar(session_run, query["event_id"], k=5, other_runs=[other])
    there = res.loc[res["run"] == str(other), "event_id"].iloc[0]
    assert there.startswith("other-")
    fb = find_similar(session_run, query["event_id"], k=5, other_runs=[other], negatives=[there])
    assert there not in fb["event_id"].tolist() and len(fb) == 5
    with pytest.raises(EventNotFoundError, match=r"no event 'nope' in these runs: .*renamed"):
        find_similar(session_run, query["event_id"], other_runs=[other], negatives=["nope"])


def test_an_id_that_two_runs_share_is_told_off_in_both(session_run, query, copy_run):
    """Two runs of one source and grid share their event ids: --not applied to the first run only, and the
    change told off came back from the other without a word (UAT)."""
    twin = copy_run(session_run, "twin")
    res = find_similar(session_run, query["event_id"], k=6, other_runs=[twin])
    told = res["event_id"].iloc[0]
    fb = find_similar(session_run, query["event_id"], k=6, other_runs=[twin], negatives=[told])
    assert told not in fb["event_id"].tolist()


def test_with_objects_an_id_told_off_takes_its_whole_object(session_run, query):
    """With --objects, telling off a result's id dropped that one patch: the object came straight back with
    another of its patches (UAT)."""
    res = find_similar(session_run, query["event_id"], k=5, objects=True)
    events = read_events(session_run)
    sizes = events.groupby("object_id").size()
    big = res[res["object_id"].map(sizes) > 1].iloc[0]  # an object of several patches among the results
    fb = find_similar(session_run, query["event_id"], k=5, objects=True, negatives=[big["event_id"]])
    assert big["object_id"] not in fb["object_id"].tolist() and len(fb) == 5


def test_run_with_other_weights_is_refused(session_run, query, copy_run):
    other = copy_run(session_run, "other")
    # as if its vectors came from other rcf weights (a run made without --weights)
    zattrs = other / "changes.zarr" / ".zattrs"
    zattrs.write_text(json.dumps({**json.loads(zattrs.read_text()), "weights_sha256": "0" * 64}))
    zmeta = other / "changes.zarr" / ".zmetadata"
    meta = json.loads(zmeta.read_text())
    meta["metadata"][".zattrs"]["weights_sha256"] = "0" * 64
    zmeta.write_text(json.dumps(meta))
    assert xr.open_zarr(other / "changes.zarr", consolidated=True).attrs["weights_sha256"] == "0" * 64
    with pytest.raises(IncompatibleRunsError) as exc:
        find_similar(session_run, query["event_id"], other_runs=[other])
    assert "--weights" in str(exc.value)


def test_an_ambiguous_query_or_a_bad_date_is_refused(session_run, query, events):
    with pytest.raises(EventNotFoundError, match="not both"):  # --at was silently ignored
        find_similar(session_run, query["event_id"], at=(0.0, 0.0), t1="2021-03-15")
    x, y = events.geometry.iloc[0].centroid.coords[0]
    for bad in ("July", "2021", "2021-07"):  # July was read as the year 1, 2021-07 as its first day
        with pytest.raises(ConfigError, match=f"--t1 holds '{bad}', which is not a date: expected YYYY-MM-DD") as exc:
            find_similar(session_run, at=(x, y), t1=bad)
        assert exc.value.path is None  # the option's fault: not told as the run's


def test_unknown_event_and_bad_place(session_run, events):
    with pytest.raises(EventNotFoundError, match="no event"):
        find_similar(session_run, "t_00000000-20210115-20210215-r0-c0")
    with pytest.raises(GridError, match="outside"):
        find_similar(session_run, at=(0.0, 0.0), t1="2021-03-15")
    pg = RunView(session_run).patch_grid
    x, y = pg.centres()
    with pytest.raises(EventNotFoundError, match="its dates"):
        find_similar(session_run, at=(x[0], y[0]), t1="1999-01-01")
    with pytest.raises(EventNotFoundError):
        find_similar(session_run)
    with pytest.raises(ConfigError, match="-k must be a whole number of changes >= 1, got 0"):
        find_similar(session_run, events["event_id"].iloc[0], k=0)


def test_not_a_run(tmp_path):
    with pytest.raises(RunNotFoundError, match="events.parquet"):
        find_similar(tmp_path, "x")


def _object_search(run, events, query_object, onset_only=True, trajectories=True, shapes=True):
    """What --objects should return, computed here without the package's search: the candidate objects of
    objects.parquet, each the surprise-weighted mean of its onset patches' search vectors; every descriptor
    (the query's too) plus its nearest other candidate weighted by their cosine squared; cosine ranking, less
    1.5 x the mean squared difference of the objects' trajectory columns (over those both know), less 0.2 x
    the elongation a candidate lacks against the query's."""
    vecs, _ = read_vectors(run / "changes.zarr", name="search")
    table = pd.read_parquet(run / "objects.parquet").set_index("object_id")
    cand = table.index[table["candidate"]].to_numpy()
    traj = table[[c for c in table.columns if c.startswith("trajectory_")]].to_numpy(float)

    def descriptor(oid, onset=True):
        rows = events[events["object_id"] == oid]
        t1 = pd.to_datetime(rows["t1"])
        rows = rows[t1 == t1.min()] if onset else rows
        w = rows["surprise"].to_numpy(float)
        d = (vecs[rows["vec"].to_numpy()] * w[:, None]).sum(0) / w.sum()
        return d / np.linalg.norm(d)

    unit = np.array([descriptor(o) for o in cand])
    def augmented(d, own):
        cos = unit @ d
        cos[own] = -np.inf
        j = int(np.argmax(cos))
        out = d + max(cos[j], 0) ** 2 * unit[j]
        return out / np.linalg.norm(out)

    aug = np.array([augmented(u, i) for i, u in enumerate(unit)])
    own = np.flatnonzero(cand == query_object)
    q = augmented(descriptor(query_object, onset_only), own[0] if len(own) else -1)
    sims = aug @ q
    if trajectories:
        assert traj.shape[1] == 5
        d = (traj[table.index.get_indexer(cand)] - traj[table.index.get_loc(query_object)]) ** 2
        known = np.isfinite(d)
        sims -= 1.5 * np.where(known.any(1), np.nansum(d, axis=1) / np.maximum(known.sum(1), 1), 0)
    elongation = table["elongation"].to_numpy(float) if shapes else np.zeros(len(table))
    sims -= 0.2 * np.clip(elongation[table.index.get_loc(query_object)] - elongation[table.index.get_indexer(cand)], 0, None)
    sims[cand == query_object] = -np.inf
    order = np.argsort(-sims, kind="stable")
    return cand[order], sims[order]


def test_object_search_compares_candidate_objects_and_gives_one_row_per_object(session_run, events):
    """--objects compares change objects with change objects (as benchmarks/planted.py measures it): the
    query's object against the run's candidate objects, each drawn toward its nearest look-alike; it had
    compared the query object with single patches, and its precision@5 on the planted Bouconne series was
    0.71 where the benchmark, object against object, reported 0.80."""
    big = events.groupby("object_id").filter(lambda g: len(g) >= 2)
    query = big.sort_values("object_rank").iloc[0]
    own = set(events.loc[events["object_id"] == query["object_id"], "event_id"])
    res = find_similar(session_run, query["event_id"], k=5, objects=True)
    assert len(res) == 5 and res["object_id"].is_unique
    assert not own & set(res["event_id"])  # the query's own object is not a result
    ids, sims = _object_search(session_run, events, query["object_id"])
    assert res["object_id"].tolist() == ids[:5].tolist()
    np.testing.assert_allclose(res["similarity"], sims[:5], atol=1e-4)
    # each row's detail is one of the object's own onset patches
    by_id = events.set_index("event_id")
    assert (by_id.loc[res["event_id"], "object_id"].to_numpy() == res["object_id"].to_numpy()).all()
    first = events.groupby("object_id")["t1"].min()
    assert (pd.to_datetime(res["t1"]).to_numpy() == pd.to_datetime(first.loc[res["object_id"]]).to_numpy()).all()


def test_objects_of_a_run_without_trajectories_are_compared_by_their_descriptors_alone(session_run, copy_run, events):
    """Runs of 0.3.15 and earlier have no trajectory columns (and of 0.3.2 and earlier no elongation): --objects
    still searches them, without those terms, and the terms are what change the similarities of a run that has
    them."""
    import geopandas as gpd

    run = copy_run(session_run)
    table = gpd.read_parquet(run / "objects.parquet")
    table.drop(columns=[c for c in table.columns if c.startswith("trajectory_") or c == "elongation"]
               ).to_parquet(run / "objects.parquet")
    big = events.groupby("object_id").filter(lambda g: len(g) >= 2)
    query = big.sort_values("object_rank").iloc[0]
    res = find_similar(run, query["event_id"], k=5, objects=True)
    ids, sims = _object_search(run, events, query["object_id"], trajectories=False, shapes=False)
    assert res["object_id"].tolist() == ids[:5].tolist()
    np.testing.assert_allclose(res["similarity"], sims[:5], atol=1e-4)
    with_term = find_similar(session_run, query["event_id"], k=5, objects=True)
    assert not np.allclose(with_term["similarity"], res["similarity"], atol=1e-4)


def test_an_episode_object_is_searched_by_its_onset_not_by_its_end(session_run, events):
    """A flood that recedes is one object whose later events point the other way; the query is its onset
    (with the end averaged in, a flood query once pointed away from floods and found background noise)."""
    dates = events.groupby("object_id")["t1"].nunique()
    episode = events[events["object_id"].isin(dates[dates > 1].index)].sort_values("object_rank")
    assert len(episode), "the session run has no object with an end"
    query = episode.iloc[0]
    res = find_similar(session_run, query["event_id"], k=3, objects=True)
    onset = _object_search(session_run, events, query["object_id"])
    whole = _object_search(session_run, events, query["object_id"], onset_only=False)
    np.testing.assert_allclose(res["similarity"], onset[1][:3], atol=1e-4)
    assert not np.allclose(onset[1][:3], whole[1][:3], atol=1e-3)


def test_the_query_given_as_its_own_negative_is_refused(session_run, query, events):
    with pytest.raises(EventNotFoundError, match="--not names the query itself"):
        find_similar(session_run, query["event_id"], negatives=[query["event_id"]])
    # with --objects, --not stands for the id's whole object: another patch of the query's own is the query
    # itself (it was taken, and the results came back as they were: the analyst's feedback lost; a review)
    sizes = events.groupby("object_id").size()
    big = events[events["object_id"].isin(sizes[sizes > 1].index)].sort_values("object_rank")
    lead, other = big[big["object_id"] == big["object_id"].iloc[0]]["event_id"].iloc[:2]
    with pytest.raises(EventNotFoundError, match=rf"--not names {other}, a patch of the query's own object"):
        find_similar(session_run, lead, negatives=[other], objects=True)
    assert len(find_similar(session_run, lead, negatives=[other], k=3)) == 3  # patch events: another patch, told off


def test_a_place_whose_patch_has_no_event_says_why(session_run, copy_run, events):
    """A patch left out of every comparison (too few clear pixels) listed its dates as []."""
    run = copy_run(session_run)
    row, col = int(events["row"].iloc[0]), int(events["col"].iloc[0])
    kept = events[(events["row"] != row) | (events["col"] != col)]
    kept.to_parquet(run / "events.parquet")
    _rename_changes(run / "changes.zarr", keep=kept["vec"])
    x, y = RunView(run).patch_grid.centres()
    with pytest.raises(EventNotFoundError, match=f"patch r{row} c{col} has no event at any date: too few of its pixels"):
        find_similar(run, at=(x[col], y[row]), t1=pd.Timestamp(events["t1"].iloc[0]).strftime("%Y-%m-%d"))


def test_a_run_made_before_residuals_is_searched_by_its_change_vectors(session_run, events, query, copy_run):
    """A run of changescout < 0.3.2 holds change vectors only, and its index was built on them: it is still
    searched, by those vectors, and a newer run given with --in is refused with the reason."""
    from changescout.change import read_changes, write_changes
    from changescout.search import SimilarChangeIndex

    old = copy_run(session_run, "old")
    ev, vectors, attrs = read_changes(old / "changes.zarr")
    attrs.pop("search_vector")
    write_changes(old / "changes.zarr", ev, vectors, attrs)  # no residuals, no search_vector
    SimilarChangeIndex().fit(vectors, ev["vec"].to_numpy()).save(old / "index.faiss")
    res = find_similar(old, query["event_id"], k=5)
    q = vectors[ev["vec"].to_numpy() == query["vec"]][0]
    sims = (vectors @ q) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
    sims[np.isin(ev["vec"].to_numpy(), events.loc[events["object_id"] == query["object_id"], "vec"])] = -np.inf
    np.testing.assert_allclose(res["similarity"], np.sort(sims)[::-1][:5], atol=1e-5)
    assert len(find_similar(old, query["event_id"], k=3, objects=True)) == 3
    with pytest.raises(IncompatibleRunsError, match="before 0.3.2"):
        find_similar(session_run, query["event_id"], k=3, other_runs=[old])


def test_one_id_or_one_run_given_as_a_string_is_taken_whole(session_run, events, query, copy_run):
    """``negatives="ID"`` and ``other_runs="RUN"`` were walked character by character ("no event 's'", "/ is not a
    run"): a single id or run is a list of one; a k that is no whole number is named."""
    plain = find_similar(session_run, query["event_id"], k=5)
    told_off = plain["event_id"].iloc[0]
    res = find_similar(session_run, query["event_id"], k=5, negatives=told_off)
    assert told_off not in set(res["event_id"])
    other = copy_run(session_run, "single")
    assert set(find_similar(session_run, query["event_id"], k=5, other_runs=str(other))["run"]) <= {str(session_run), str(other)}
    with pytest.raises(ConfigError, match="k must be a whole number"):
        find_similar(session_run, query["event_id"], k="5")


def test_damaged_outputs_are_named_with_how_to_rebuild_them(session_run, query, copy_run):
    """A search index of another run (or of fewer events: rows deleted by hand) answered with wrong events at
    exit 0; deleted search vectors read as NaN and gave no result at exit 0; a text file as the index, or a
    store without its metadata, were internal errors (UAT)."""
    import shutil

    from changescout.search import SimilarChangeIndex

    other = copy_run(session_run, "other_index")
    SimilarChangeIndex().fit(np.eye(4, dtype=np.float32), np.arange(4)).save(other / "index.faiss")
    with pytest.raises(RunNotFoundError, match=r"index.faiss: the search index holds 4 changes .*delete it and rerun"):
        find_similar(other, query["event_id"])
    # another run's of the same count (another seed of one series): its vectors are not this run's
    from changescout.change import read_vectors

    seed = copy_run(session_run, "other_seed")
    vectors, keys = read_vectors(seed / "changes.zarr", name="search")
    SimilarChangeIndex().fit(vectors[::-1].copy(), keys).save(seed / "index.faiss")
    with pytest.raises(RunNotFoundError, match=r"index.faiss: the search index holds other vectors than changes.zarr's"):
        find_similar(seed, query["event_id"])
    table = copy_run(session_run, "other_events")
    events = read_events(table)
    events["magnitude"] = events["magnitude"] * 1.1  # (the same ids and count, another run's values)
    events.to_parquet(table / "events.parquet")
    with pytest.raises(RunNotFoundError, match=r"events.parquet: \d+ of \d+ of its events compared have another id or "
                                               r"magnitude in changes.zarr: it is not of the run"):
        find_similar(table, query["event_id"])
    text = copy_run(session_run, "text_index")
    (text / "index.faiss").write_text("not an index")
    with pytest.raises(RunNotFoundError, match="index.faiss: cannot read the search index"):
        find_similar(text, query["event_id"])
    gone = copy_run(session_run, "no_search")
    shutil.rmtree(gone / "changes.zarr" / "search")
    with pytest.raises(RunNotFoundError, match="changes.zarr: search: chunk .* missing: it is damaged"):
        find_similar(gone, query["event_id"])
    bare = copy_run(session_run, "no_metadata")
    (bare / "changes.zarr" / ".zmetadata").unlink()
    with pytest.raises(RunNotFoundError, match=r"changes.zarr: cannot be read \(its .zmetadata"):
        find_similar(bare, query["event_id"])


def test_objects_search_of_a_run_without_its_objects_table_says_so(session_run, query, copy_run):
    run = copy_run(session_run, "no_objects")
    (run / "objects.parquet").unlink()
    with pytest.raises(RunNotFoundError, match="no objects.parquet, which --objects compares") as exc:
        find_similar(run, query["event_id"], k=3, objects=True)
    assert "changescout run` first" not in str(exc.value)  # (which contradicted its own advice)
    assert len(find_similar(run, query["event_id"], k=3)) == 3  # its patch events are still searched


def test_a_change_object_that_two_runs_see_in_parts_is_listed_once(session_run, query, copy_run):
    """With --objects, a change two overlapping runs both see was listed twice when their objects held other
    patches (a 0.3.16 and a 0.3.17 run, whose edge patches joined objects): only each result's detail patch was
    compared, and the two details, side by side, share no area."""
    other = copy_run(session_run, "parts")
    events = read_events(other)
    kept = events.groupby("object_id")["vec"].transform("min")  # each object of the copy: its first patch only
    events.loc[events["vec"] != kept, "object_id"] = events["object_id"].max() + 1 + np.arange((events["vec"] != kept).sum())
    events.to_parquet(other / "events.parquet")
    objects = read_objects(other)  # each object led by its one patch (else it is no table of these events)
    objects["event_id"] = objects["object_id"].map(events.set_index("object_id")["event_id"])
    objects.to_parquet(other / "objects.parquet")
    res = find_similar(session_run, query["event_id"], k=10, other_runs=[other], objects=True)
    assert res["object_id"].is_unique, res[["run", "object_id", "event_id"]]
    assert res.attrs["seen_twice"] > 0


def test_objects_of_a_run_of_another_pace_are_compared_without_their_trajectories(session_run, query, copy_run, capsys):
    """Trajectories count dates from an object's onset: one date after a harvest is a month of regrowth in a run
    of monthly composites and five days of bare soil in one of every pass. An --in run whose dates lie three times
    as far apart is compared by what changed only, as a run without trajectories is, and the CLI says so."""
    from changescout.cli import app
    from changescout.objects import TRAJECTORY_COLUMNS
    from changescout.similar import cadence_days

    assert np.isfinite(read_objects(session_run)[list(TRAJECTORY_COLUMNS)].to_numpy(float)).any()
    slow = copy_run(session_run, "slow")
    events = read_events(slow)
    first = events["t0"].min()
    for c in ("t0", "t1"):
        events[c] = first + (events[c] - first) * 3
    events.to_parquet(slow / "events.parquet")
    unknown = copy_run(session_run, "unknown")  # the same run with no trajectory known
    objects = read_objects(unknown)
    objects[list(TRAJECTORY_COLUMNS)] = np.nan
    objects.to_parquet(unknown / "objects.parquet")
    pace = cadence_days(read_events(session_run))
    res = find_similar(session_run, query["event_id"], k=30, other_runs=[slow], objects=True)
    assert res.attrs["trajectories_left_out"] == [(str(slow), 3 * pace, pace)]
    ref = find_similar(session_run, query["event_id"], k=30, other_runs=[unknown], objects=True)
    assert ref.attrs["trajectories_left_out"] == []
    ours, theirs = (r.assign(run=r["run"].replace({str(slow): "other", str(unknown): "other"})).set_index(["run", "object_id"])
                    for r in (res, ref))
    both = ours.index.intersection(theirs.index)
    assert len(both) >= 10 and (both.get_level_values(0) == "other").any()
    np.testing.assert_allclose(ours.loc[both, "similarity"], theirs.loc[both, "similarity"], atol=1e-6)
    # a run of the same pace compares them (a year later: not the query run's changes seen again, listed once)
    same = copy_run(session_run, "same")
    later = read_events(same)
    for c in ("t0", "t1"):
        later[c] = later[c] + pd.Timedelta(days=364)
    later.to_parquet(same / "events.parquet")
    plain = find_similar(session_run, query["event_id"], k=30, other_runs=[same], objects=True)
    assert plain.attrs["trajectories_left_out"] == []
    mine = plain.assign(run=plain["run"].replace({str(same): "other"})).set_index(["run", "object_id"])
    shared = mine.index.intersection(theirs.index)
    others = shared[shared.get_level_values(0) == "other"]
    assert len(others) and not np.allclose(mine.loc[others, "similarity"], theirs.loc[others, "similarity"], atol=1e-6)
    with pytest.raises(SystemExit) as done:
        app(["similar", str(session_run), query["event_id"], "--objects", "--in", str(slow)])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"the dates of {slow} lie {3 * pace:g} days apart, this run's {pace:g}" in out
