"""A run: the run directory, resume, refusal to overwrite, determinism."""

import json
import os

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
import xarray as xr

from changescout.change import read_changes
from changescout.cube import Quality
from changescout.errors import ConfigError, EncoderNotFoundError, RunExistsError, RunNotFoundError, SourceError
from changescout.events import COLUMNS, check_directions, read_events
from changescout.objects import read_objects
from changescout.pipeline import STAGES, Run, RunConfig, rank_events, run_pipeline, screen_clouds, unusable_dates_note
from changescout.search import SimilarChangeIndex
from changescout.tiling import parse_event_id


def mtimes(folder):
    """mtime of every file and folder under ``folder`` (nanoseconds)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            out[os.path.relpath(p, folder)] = os.stat(p).st_mtime_ns
    return out


QUIET = dict(log=lambda msg: None)


# -- the run directory -----------------------------------------------------------------------------------
def test_run_directory_contents(session_run):
    names = {p.name for p in session_run.iterdir()}
    assert {"config.json", "state.json", "embeddings.zarr", "changes.zarr", "events.parquet", "clusters.parquet",
            "maps", "quicklooks", "report.html", "index.faiss", "rcf_weights.npz"} <= names
    assert not [n for n in names if ".tmp-" in n or ".old-" in n]  # no leftovers of atomic writes


def test_the_stages_called_from_python_as_the_readme_shows_give_the_runs_changes(session_run, session_config, tmp_path):
    """The README's Python section, stage by stage, gives the events and ranks of ``changescout run`` with the
    same configuration (a notebook user's review: its snippet took 0.5 clear instead of 0.75 and no cloud
    screen, and reproducing the run took five undocumented calls from five modules)."""
    from changescout.cube import grid_of
    from changescout.embed import embed_cube
    from changescout.encoders import get_encoder
    from changescout.change import compute_changes
    from changescout.objects import change_states
    from changescout.pipeline import open_source, prepare_cube
    from changescout.radiometry import apply_offsets
    from changescout.spectral import spectral_scores
    from changescout.tiling import PatchGrid

    config = session_config().validate()
    cube, _ = apply_offsets(open_source(config), config.radiometry)
    cube, done = prepare_cube(cube, config)
    assert cube.attrs["cloud_screen"] == json.loads((session_run / "config.json").read_text())["cloud_screen"]
    emb = embed_cube(cube, get_encoder("rcf", patch_size=config.patch_size, seed=config.seed),
                     PatchGrid(grid_of(cube), config.patch_size), tmp_path / "embeddings.zarr", series="mine")
    events, vectors = compute_changes(emb, config.compare)
    events["spectral"] = spectral_scores(cube, events, config.patch_size)
    ranked, _, objects = rank_events(events, vectors, config, change_states(emb, events, len(vectors)))
    run = read_events(session_run).sort_values(["t1", "row", "col"])
    ranked = ranked.sort_values(["t1", "row", "col"])
    assert len(ranked) == len(run)
    np.testing.assert_allclose(ranked["magnitude"], run["magnitude"], rtol=1e-4)
    np.testing.assert_allclose(ranked["spectral"], run["spectral"], rtol=1e-4)
    assert (ranked["rank"].to_numpy() == run["rank"].to_numpy()).all()
    assert len(objects) == len(read_objects(session_run))
    assert (ranked["object_rank"].to_numpy() == run["object_rank"].to_numpy()).all()


def test_run_pipeline_takes_no_log_and_refuses_a_progress_it_cannot_call(session_config, tmp_path):
    """log=None ended in "'NoneType' object is not callable" after the source was read; progress=True failed
    after config.json and state.json were written, the run marked failed (a notebook user's review)."""
    with pytest.raises(ConfigError, match="progress must be None or a callable"):
        run_pipeline(session_config(), tmp_path / "r", progress=True)
    assert not (tmp_path / "r").exists()
    with pytest.warns(UserWarning, match="warning: n_clusters 100000 is more than the"):  # (its warnings alone)
        out = run_pipeline(session_config(source_options={"seed": 0, "size": 128, "n_dates": 4}, n_clusters=100_000),
                           tmp_path / "r", log=None)
    assert (out / "events.parquet").exists()


def test_config_json(session_run):
    cfg = json.loads((session_run / "config.json").read_text())
    assert len(cfg["config_hash"]) == 64
    assert cfg["config"]["source"] == "synthetic" and cfg["config"]["source_options"]["n_dates"] == 10
    assert cfg["config"]["encoder"] == "rcf" and cfg["config"]["seed"] == 0
    assert cfg["inputs"] == {}  # the synthetic source reads no file
    for k in ("changescout", "numpy", "xarray", "torch", "faiss", "scikit-learn", "gdal", "geopandas", "pyarrow", "zarr"):
        assert cfg["versions"][k], k
    assert cfg["comparison"] == "consecutive"
    assert len(cfg["dates"]) == 10 and cfg["dates"][0] == "2021-01-15"
    assert cfg["grid"]["crs"] == "EPSG:32631" and cfg["grid"]["shape"] == [128, 128]
    assert cfg["series"].startswith("t_")


def test_state_json(session_run):
    state = json.loads((session_run / "state.json").read_text())
    assert list(state["stages"]) == list(STAGES)
    for name, info in state["stages"].items():
        assert info["status"] == "done", name
        assert isinstance(info["seconds"], float) and info["seconds"] >= 0
    assert state["stages"]["embed"]["patches"] == 10 * 8 * 8
    assert state["stages"]["embed"]["encoder"] == "rcf"
    objects = read_objects(session_run)  # every object of objects.parquet; the candidates among them
    assert state["stages"]["rank"]["objects"] == len(objects)
    assert state["stages"]["rank"]["candidate_objects"] == int(objects["candidate"].sum()) < len(objects)
    # what comes before the stages (reading, cloud screen, co-registration estimate: 85 of 330 s on a 584-date
    # series) is timed too
    assert state["prepare"]["seconds"] > 0 and "co-registration" in state["prepare"]["what"]


def test_embeddings_and_changes(session_run):
    emb = xr.open_zarr(session_run / "embeddings.zarr", consolidated=True)
    assert emb["embedding"].shape == (10, 8, 8, 256)
    assert emb.attrs["encoder"] == "rcf" and int(emb.attrs["patch_size"]) == 16
    from changescout.encoders import get_encoder

    assert get_encoder("rcf", weights=session_run / "rcf_weights.npz").weights_digest() == emb.attrs["weights_sha256"]
    events, vectors, attrs = read_changes(session_run / "changes.zarr")
    assert attrs["weights_sha256"] == emb.attrs["weights_sha256"]
    assert np.isfinite(events["spectral"]).all()  # (changescout.spectral; the README test checks its values)
    table = read_events(session_run).set_index("vec")
    np.testing.assert_allclose(table.loc[events["vec"], "spectral"], events["spectral"], rtol=1e-6)
    assert attrs["comparison"] == "consecutive"
    assert vectors.shape == (len(events), 256)
    # a vector is the difference of the two embeddings of its patch
    r = events.iloc[len(events) // 2]
    E = emb["embedding"].values
    t = {pd.Timestamp(v): i for i, v in enumerate(emb["time"].values)}
    np.testing.assert_allclose(vectors[len(events) // 2], E[t[r["t1"]], r["row"], r["col"]] - E[t[r["t0"]], r["row"], r["col"]],
                               rtol=1e-5, atol=1e-5)
    # the run directory stands for its stores, as for its tables (zarr's GroupNotFoundError: a review)
    from changescout.embed import open_embeddings

    assert read_changes(session_run)[0]["vec"].tolist() == events["vec"].tolist()
    assert open_embeddings(session_run)["embedding"].shape == emb["embedding"].shape
    with pytest.raises(RunNotFoundError, match=r"no changes.zarr here \(run `changescout run` first\)"):
        read_changes(session_run.parent)
    emb.to_zarr("memory://copied-embeddings.zarr", consolidated=True, zarr_format=2)  # a URL is zarr's to open
    assert open_embeddings("memory://copied-embeddings.zarr")["embedding"].shape == emb["embedding"].shape


def test_events_parquet(session_run):
    ev = gpd.read_parquet(session_run / "events.parquet")
    assert ev.crs.to_epsg() == 32631
    assert set(COLUMNS) <= set(ev.columns)
    meta = pq.read_schema(session_run / "events.parquet").metadata
    assert set(json.loads(meta[b"changescout"])["columns"]) == set(COLUMNS)
    n = len(ev)
    assert n > 100
    assert sorted(ev["rank"]) == list(range(1, n + 1))
    check_directions(ev)
    assert ev["event_id"].is_unique and ev["vec"].is_unique
    series = json.loads((session_run / "config.json").read_text())["series"]
    for eid, row, col, t1 in ev[["event_id", "row", "col", "t1"]].head(20).itertuples(index=False):
        d = parse_event_id(eid)
        assert (d["series"], d["row"], d["col"], d["t1"]) == (series, row, col, t1.strftime("%Y%m%d"))
    # geometry is the patch polygon (16 px of 10 m)
    assert np.allclose(ev.geometry.area, 160.0 * 160.0)
    # event ids agree with changes.zarr by vec key
    ch, _, _ = read_changes(session_run / "changes.zarr")
    merged = ev[["vec", "event_id"]].merge(ch[["vec", "event_id"]], on="vec", suffixes=("", "_ch"))
    assert len(merged) == n and (merged["event_id"] == merged["event_id_ch"]).all()
    # the last date's persistence is unknown, earlier dates' are known
    last = ev["t1"] == ev["t1"].max()
    assert ev.loc[last, "persistence"].isna().all() and ev.loc[~last, "persistence"].notna().all()


def test_clusters_index_maps_and_report(session_run):
    ev = read_events(session_run)
    clusters = pd.read_parquet(session_run / "clusters.parquet")
    assert clusters["size"].sum() == len(ev)
    for name in ("clusters", "objects", "events"):  # each column described, as the schema says
        meta = json.loads(pq.read_schema(session_run / f"{name}.parquet").metadata[b"changescout"])
        columns = pq.read_schema(session_run / f"{name}.parquet").names
        assert set(columns) - {"geometry"} <= set(meta["columns"]), name
        assert meta["schema_version"] == "1"
    assert set(clusters["cluster"]) == set(ev["cluster"])
    sizes = ev.groupby("cluster").size()
    assert (clusters.set_index("cluster")["size"] == sizes.loc[clusters["cluster"]].to_numpy()).all()
    index = SimilarChangeIndex.load(session_run / "index.faiss")
    assert index.index_.ntotal == len(ev)
    maps = sorted(p.name for p in (session_run / "maps").glob("*.tif"))
    assert maps == ["atypicality.tif", "cluster.tif", "magnitude.tif"]
    n_dates = ev["t1"].nunique()
    for name in maps:
        with rasterio.open(session_run / "maps" / name) as src:
            assert src.crs.to_epsg() == 32631
            assert src.count == n_dates and src.shape == (8, 8)
            assert src.res == (160.0, 160.0)
            assert src.bounds.left == 372_000.0 or src.bounds.left % 160 == 0
    with rasterio.open(session_run / "maps" / "atypicality.tif") as src:
        top = ev.sort_values("rank").iloc[0]
        band = list(pd.DatetimeIndex(sorted(ev["t1"].unique()))).index(top["t1"]) + 1
        assert src.read(band)[top["row"], top["col"]] == pytest.approx(top["atypicality"])
    html = (session_run / "report.html").read_text()
    assert len(html) > 1000 and ev.sort_values("rank")["event_id"].iloc[0] in html
    # the header shows the run's own options (they sit under "config" in config.json) and the series' dates
    for fact in ("<th>source</th><td class='text'>synthetic", "<th>encoder</th><td class='text'>rcf",
                 "<th>compare</th><td class='text'>consecutive", "<th>dates</th><td class='text'>10 dates"):
        assert fact in html, fact


# -- resume ----------------------------------------------------------------------------------------------
def test_rerun_with_the_same_config_resumes_without_recomputing(session_run, session_config, copy_run):
    run = copy_run(session_run)
    before = mtimes(run)
    state = (run / "state.json").read_text()
    logs = []
    assert run_pipeline(session_config(), run, log=logs.append) == run
    assert any("resuming" in m for m in logs)
    assert mtimes(run) == before
    assert (run / "state.json").read_text() == state


def test_config_json_records_the_kind_and_label_a_run_resolved_and_a_rerun_spelling_them_out_resumes(tmp_path):
    """The source kind the run guessed and the label of its ids are in config.json ("fully resolved"), so that
    the same command with ``--kind`` and ``--label`` given as the run resolved them resumes instead of being
    refused as another configuration."""
    opts = {"seed": 0, "size": 128, "n_dates": 4}
    out = run_pipeline(RunConfig(source="synthetic", source_options=opts), tmp_path / "r", **QUIET)
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["kind"] == "synthetic" and config["label"] == "synthetic"
    logs = []
    run_pipeline(RunConfig(source="synthetic", kind="synthetic", label="synthetic", source_options=opts), out, log=logs.append)
    assert any("resuming" in m for m in logs)
    with pytest.raises(RunExistsError, match=r"another configuration \(what differs: label, series id\)"):
        run_pipeline(RunConfig(source="synthetic", label="other", source_options=opts), out, **QUIET)


def test_in_a_series_without_change_the_edge_patches_change_no_more_than_the_others(tmp_path):
    """The images start 7 px past the grid's lattice: their edge patches, judged by the part the images cover,
    were filled with their outermost column repeated, whose noise ranked them as 19 of the top 20 changes of a
    series where nothing changes (a review's case); filled with the mean of what the images hold, they move as
    the patches inside do."""
    from rasterio.transform import from_origin
    from scipy import ndimage

    import make_sources as ms

    rng = np.random.default_rng(1)
    base = np.stack([ndimage.gaussian_filter(rng.random((118, 121)), 3) * 4000 + 500 for _ in range(4)])
    transform = from_origin(372070, 4800050, 10, 10)  # 7 px east of the 160 m lattice
    for month in range(1, 7):
        noisy = np.round(base + rng.normal(0, 40, base.shape)).astype(np.int16)
        ms.write_geotiff(tmp_path / "still" / f"2021-{month:02d}-15.tif", noisy, transform=transform, crs="EPSG:32631",
                         nodata=None, descriptions=ms.BANDS)
    out = run_pipeline(RunConfig(source=str(tmp_path / "still"), cloud_screen="off"), tmp_path / "r", **QUIET)
    events = read_events(out)
    first = events["col"] == events["col"].min()  # 9 of its 16 columns past the images
    assert first.any() and events.loc[first, "clear_fraction"].min() == 1.0
    inside = ~first & ~events["row"].isin([events["row"].min(), events["row"].max()]) & (events["col"] < events["col"].max())
    assert events.loc[first, "magnitude"].median() < 1.3 * events.loc[inside, "magnitude"].median()
    top = events.sort_values("rank").head(20)
    assert (top["col"] == events["col"].min()).sum() <= 2 * 20 * first.mean()


def test_the_edge_patches_polygons_and_the_objects_areas_hold_only_ground_the_images_show(tmp_path):
    """Without --grid the grid snaps outward to whole patches: an image 7 px east and 3 px south of the lattice
    left its edge patches' polygons, and so the objects' outlines and area_ha, holding ground no image shows
    (up to three quarters of a patch). They are cut to the pixels the images cover, and an object's area is
    that of its cut patches."""
    import shapely
    from rasterio.transform import from_origin

    import make_sources as ms

    rng = np.random.default_rng(3)
    transform = from_origin(372070, 4799970, 10, 10)  # 7 px east, 3 px south of the 160 m lattice
    for i, date in enumerate(ms.DATES):
        img = rng.integers(300, 3000, (4, 40, 45)).astype(np.int16)
        if i >= 2:
            img[:, 10:30, :20] = 200 if i == 2 else img[:, 10:30, :20] // 3  # a dark change at the west edge
        ms.write_geotiff(tmp_path / "edge" / f"{date}.tif", img, transform=transform, crs="EPSG:32631",
                         nodata=None, descriptions=ms.BANDS)
    out = run_pipeline(RunConfig(source=str(tmp_path / "edge"), cloud_screen="off"), tmp_path / "r", **QUIET)
    image = shapely.box(372070, 4799970 - 400, 372070 + 450, 4799970)
    events, objects = read_events(out), read_objects(out)
    assert events["col"].min() == 0 and events.geometry.within(image).all()
    corner = events[(events["row"] == 0) & (events["col"] == 0)].geometry.iloc[0]
    assert corner.area == pytest.approx(9 * 13 * 100)  # the 9 x 13 px of the first patch that the image holds
    assert objects.geometry.within(image).all()
    cut = events.drop_duplicates(["row", "col"]).set_index(["row", "col"]).geometry.area
    for _, ob in objects.iterrows():
        patches = events.loc[events["object_id"] == ob["object_id"], ["row", "col"]].drop_duplicates()
        assert ob["area_ha"] == pytest.approx(cut.loc[list(map(tuple, patches.to_numpy()))].sum() / 1e4)
    assert (objects["area_ha"] < objects["n_patches"] * 2.56 - 1e-9).any()


def test_a_label_from_a_long_name_is_recorded_as_the_ids_carry_it_and_the_runs_config_runs_again(tmp_path):
    """A folder named with more than 32 characters: config.json recorded the whole name as the label, and given
    back with --config (a run's own config.json) it was refused as a --label too long."""
    import make_sources as ms

    name = "S2B_MSIL2A_20200301_T31TCJ_bouconne_crop"
    rng = np.random.default_rng(0)
    for date in ms.DATES:
        ms.write_geotiff(tmp_path / name / f"{date}.tif", rng.integers(300, 3000, (4, 128, 128)).astype(np.int16),
                         nodata=None, descriptions=ms.BANDS)
    out = run_pipeline(RunConfig(source=str(tmp_path / name), cloud_screen="off"), tmp_path / "r", **QUIET)
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["label"] == name[:32] and read_events(out)["event_id"].iloc[0].startswith("S2B_MSIL2A_20200301_T31TCJ_bouco_")
    logs = []
    run_pipeline(RunConfig.from_dict(config), out, log=logs.append)
    assert any("resuming" in m for m in logs)


def test_a_grid_written_otherwise_is_the_same_configuration_and_a_bad_one_is_refused_before_the_run():
    """A rerun with --grid spelt otherwise (lower case, 10.0, spaces) was refused as another configuration (what
    differs: grid), and only --overwrite, which throws the finished stages away, let it go on."""
    spellings = ["EPSG:32631,10,300000,4997760,301600,5000000", "epsg:32631,10.0,300000,4997760.0,301600,5000000",
                 " EPSG:32631 , 10 ,300000, 4997760,301600,5e6"]
    configs = [RunConfig(source="s", grid=g).validate() for g in spellings]
    assert all(c.to_dict() == configs[0].to_dict() for c in configs)
    assert configs[0].grid == spellings[0] and RunConfig(source="s", grid="EPSG:4326,0.0001").validate().grid == "EPSG:4326,0.0001"
    with pytest.raises(ConfigError, match=r"grid 'EPSG:32631,ten': resolution and bounds must be numbers"):
        RunConfig(source="s", grid="EPSG:32631,ten").validate()


def test_a_run_made_under_another_cloud_screen_is_not_resumed(session_run, session_config, copy_run, monkeypatch):
    """The screen's rule is part of the configuration: embeddings made under an older screen are not reused."""
    import changescout.quality

    run = copy_run(session_run)
    defaults = list(changescout.quality.screen_haze.__defaults__)
    defaults[-1] = 0.02  # another blue-test margin
    monkeypatch.setattr(changescout.quality.screen_haze, "__defaults__", tuple(defaults))
    with pytest.raises(RunExistsError, match="another configuration"):
        run_pipeline(session_config(), run, **QUIET)


def test_a_run_records_its_snow_screen_and_another_screen_is_another_run(session_run, session_config, copy_run):
    """config.json and the report say how snow was screened; a run with the screen off is not the same run."""
    config = json.loads((session_run / "config.json").read_text())
    assert config["snow_screen"].startswith("clear pixels with (B03 - B11) / (B03 + B11) > 0.15")
    assert "<th>snow</th><td class='text'>screened: clear pixels with (B03 - B11)" in (session_run / "report.html").read_text()
    with pytest.raises(RunExistsError, match="another configuration"):
        run_pipeline(session_config(snow_screen="off"), copy_run(session_run), **QUIET)


def test_interrupted_run_resumes_at_the_unfinished_stage(session_run, session_config, copy_run):
    run = copy_run(session_run)
    state = json.loads((run / "state.json").read_text())
    state["stages"]["rank"] = {"status": "running"}  # killed while ranking
    del state["stages"]["outputs"]
    (run / "state.json").write_text(json.dumps(state))
    (run / "events.parquet").unlink()
    (run / "report.html").unlink()
    before = mtimes(run)
    run_pipeline(session_config(), run, **QUIET)
    after = mtimes(run)
    for kept in ("embeddings.zarr", "changes.zarr", "rcf_weights.npz"):
        assert after[kept] == before[kept], kept
    new_state = json.loads((run / "state.json").read_text())
    assert all(new_state["stages"][s]["status"] == "done" for s in STAGES)
    assert new_state["stages"]["embed"] == state["stages"]["embed"]
    a, b = read_events(session_run), read_events(run)
    pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="geometry")), pd.DataFrame(b.drop(columns="geometry")))


def test_outputs_cut_short_are_rebuilt_not_reported_as_finished(session_run, session_config, copy_run):
    """UAT: a rerun over a truncated events.parquet (a full disk, a broken copy) exited 0 under -q, and one over
    a truncated map or report.html said "Outputs in ..." over files no reader opens. The stage that wrote a
    damaged output runs again, and so do the stages after it; the log names the file."""
    from changescout.intact import problem

    run = copy_run(session_run)
    for f in ("events.parquet", "maps/atypicality.tif", "report.html"):
        data = (run / f).read_bytes()
        (run / f).write_bytes(data[: len(data) // 2])
        assert problem(run / f) is not None
    logs = []
    run_pipeline(session_config(), run, log=logs.append)
    assert any("events.parquet: cannot be read" in m and "the rank stage runs again" in m for m in logs)
    assert any("finished stages: embed, changes; to run: rank, outputs" in m for m in logs)
    for f in ("events.parquet", "objects.parquet", "index.faiss", "maps", "report.html"):
        assert problem(run / f) is None, f
    a, b = read_events(session_run), read_events(run)
    pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="geometry")), pd.DataFrame(b.drop(columns="geometry")))


def test_a_zarr_store_that_lost_a_chunk_is_rebuilt_not_read_as_nan(session_run, session_config, copy_run):
    """Failure-injection review: a missing Zarr chunk reads as its fill value, NaN. A run whose embeddings.zarr
    had lost a chunk said "finished" and, once changes.zarr was deleted, recomputed the changes without that
    chunk's patches (5051 -> 3829 events, exit 0); a lost zscore chunk re-ranked 411 of 424 events."""
    from changescout.intact import problem

    run = copy_run(session_run)
    lost = sorted((run / "embeddings.zarr" / "embedding").glob("0.*"))[0]
    lost.unlink()
    chunk = sorted((run / "changes.zarr" / "zscore").glob("[0-9]*"))[0]
    chunk.write_bytes(chunk.read_bytes()[:-5])
    assert "missing" in problem(run / "embeddings.zarr") and "cut short" in problem(run / "changes.zarr")
    logs = []
    run_pipeline(session_config(), run, log=logs.append)
    assert any(f"embedding: chunk {lost.name} missing: the embed stage runs again" in m for m in logs)
    assert problem(run / "embeddings.zarr") is None and problem(run / "changes.zarr") is None
    a, b = read_events(session_run), read_events(run)
    pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="geometry")), pd.DataFrame(b.drop(columns="geometry")))


def test_a_rerun_rebuilds_the_tables_or_index_of_another_run_copied_over_its_own(session_run, session_config, copy_run):
    """A copy of another run's index.faiss or events.parquet (another seed of one series: the same ids and count)
    passed as this run's: the rerun said the run was finished (a review). It rebuilds them, and says so."""
    from changescout.change import read_vectors
    from changescout.search import SimilarChangeIndex

    run = copy_run(session_run)
    vectors, keys = read_vectors(run / "changes.zarr", name="search")
    SimilarChangeIndex().fit(vectors[::-1].copy(), keys).save(run / "index.faiss")
    logs = []
    run_pipeline(session_config(), run, log=logs.append)
    assert any("index.faiss: the search index holds other vectors" in m and "the rank stage runs again" in m for m in logs)
    rebuilt = SimilarChangeIndex.load(run / "index.faiss").index_
    np.testing.assert_allclose(rebuilt.reconstruct(int(keys[0])), vectors[0] / np.linalg.norm(vectors[0]), atol=1e-5)
    events = read_events(run)
    events.assign(magnitude=events["magnitude"] * 1.1).to_parquet(run / "events.parquet")
    logs = []
    run_pipeline(session_config(), run, log=logs.append)
    assert any("events.parquet: " in m and "the rank stage runs again" in m for m in logs)
    pd.testing.assert_series_equal(read_events(run)["magnitude"], read_events(session_run)["magnitude"])
    logs = []
    run_pipeline(session_config(), run, log=logs.append)  # and a whole run is left as it is
    assert not any("runs again" in m for m in logs) and any("finished stages: embed, changes, rank, outputs" in m for m in logs)


def test_a_store_of_an_earlier_version_without_its_empty_chunks_is_not_damaged(tmp_path):
    """Review: zarr leaves out a chunk that holds only NaN unless told; 0.3.12's changes.zarr of a series shorter
    than a year has no recurrence chunk, reads it back as NaN, as written, and was called damaged by `similar`.
    Only a store marked as written with every chunk (0.3.13 and later) counts a missing one as damage."""
    import xarray as xr

    from changescout.intact import ALL_CHUNKS, zarr_problem

    ds = xr.Dataset({"recurrence": ("vec", np.full(10, np.nan, np.float32)), "magnitude": ("vec", np.arange(10, dtype=np.float32))})
    ds.to_zarr(tmp_path / "old.zarr", mode="w", consolidated=True, zarr_format=2)  # 0.3.12's call
    assert not (tmp_path / "old.zarr" / "recurrence" / "0").exists() and zarr_problem(tmp_path / "old.zarr") is None
    ds.attrs[ALL_CHUNKS] = "all"
    ds.to_zarr(tmp_path / "new.zarr", mode="w", consolidated=True, zarr_format=2, write_empty_chunks=True)
    assert zarr_problem(tmp_path / "new.zarr") is None
    (tmp_path / "new.zarr" / "recurrence" / "0").unlink()
    assert zarr_problem(tmp_path / "new.zarr") == "recurrence: chunk 0 missing"


def test_a_date_with_no_patch_clear_enough_is_named(session_run, session_config, copy_run):
    """UAT: a date whose file held only nodata was left out of every change without a word on the console."""
    import xarray as xr

    from changescout.embed import open_embeddings

    run = copy_run(session_run)
    emb = open_embeddings(run / "embeddings.zarr").load()
    assert unusable_dates_note(emb, 0.75) is None
    emb["clear_fraction"][2] = 0.0
    emb["clear_fraction"][4] = np.nan
    note = unusable_dates_note(emb, 0.75)
    days = [f"{t:%Y-%m-%d}" for t in pd.DatetimeIndex(emb["time"].values)[[2, 4]]]
    assert note.startswith(f"note: 2 of {emb.sizes['time']} dates have no patch clear enough") and ", ".join(days) in note
    xr.Dataset({"clear_fraction": emb["clear_fraction"]}).to_zarr(run / "embeddings.zarr", mode="a")
    logs = []
    run_pipeline(session_config(), run, log=logs.append)  # said on every run of it, resumed or not
    assert any(m == note for m in logs)


def test_a_stage_after_one_that_runs_again_runs_again(session_run, session_config, copy_run):
    """UAT: rank interrupted after an earlier run's outputs stage was done: the resume line listed outputs as
    finished. Outputs made before the rank stage reran would be older than the tables they show."""
    run = copy_run(session_run)
    state = json.loads((run / "state.json").read_text())
    state["stages"]["rank"] = {"status": "interrupted"}
    (run / "state.json").write_text(json.dumps(state))
    report = (run / "report.html").stat().st_mtime_ns
    logs = []
    run_pipeline(session_config(), run, log=logs.append)
    assert any("finished stages: embed, changes; to run: rank, outputs" in m for m in logs)
    assert (run / "report.html").stat().st_mtime_ns > report


def test_a_stage_stopped_by_ctrl_c_is_marked_interrupted_and_resumed(session_run, session_config, copy_run, monkeypatch):
    """state.json tells an interruption (Ctrl-C, SIGTERM) from a failure; the same command resumes it."""
    import changescout.pipeline as pipeline

    run = copy_run(session_run)
    state = json.loads((run / "state.json").read_text())
    del state["stages"]["outputs"]
    (run / "state.json").write_text(json.dumps(state))

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pipeline, "write_outputs", stopped)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(session_config(), run, **QUIET)
    assert json.loads((run / "state.json").read_text())["stages"]["outputs"]["status"] == "interrupted"
    run_pipeline(session_config(), run, **QUIET)
    assert json.loads((run / "state.json").read_text())["stages"]["outputs"]["status"] == "done"


def test_rerun_with_another_config_is_refused(session_run, session_config, copy_run):
    run = copy_run(session_run)
    before = mtimes(run)
    with pytest.raises(RunExistsError) as exc:
        run_pipeline(session_config(rank_by="magnitude"), run, **QUIET)
    assert "--overwrite" in str(exc.value) and str(run) in str(exc.value)
    assert mtimes(run) == before


def test_a_run_made_by_another_changescout_version_is_not_resumed(session_run, session_config, copy_run, monkeypatch):
    """Another version may embed or screen differently (rcf's pooling changed in 0.2.0): its run is refused as
    another configuration would be, so that no stage of it is mixed into the new run."""
    import changescout.pipeline as pipeline

    run = copy_run(session_run)
    before = mtimes(run)
    monkeypatch.setattr(pipeline, "__version__", "0.0.1")
    with pytest.raises(RunExistsError, match=r"made by changescout .* \(this is 0\.0\.1\).*--overwrite"):
        run_pipeline(session_config(), run, **QUIET)
    assert mtimes(run) == before


def test_a_new_run_killed_while_writing_its_configuration_starts_again(session_config, tmp_path):
    """All a run killed before its configuration was in place leaves is a temporary configuration file: the
    next run takes the directory (it was refused as 'not a changescout run directory')."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".config.tmp-0123abcd.json").write_text('{"half": ')
    Run(out, session_config(), log=lambda *a: None).prepare({}, {"series": "s"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "state.json"]


def test_non_empty_directory_that_is_not_a_run_is_refused(session_config, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="not a changescout run"):
        run_pipeline(session_config(), tmp_path, **QUIET)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(RunExistsError):
        run_pipeline(session_config(), tmp_path, overwrite=True, **QUIET)  # --overwrite never deletes foreign files
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_folder_with_another_tools_config_json_is_not_a_run_even_with_overwrite(session_config, tmp_path):
    """A project folder holding a config.json of another tool was taken for a run "made by changescout None";
    --overwrite then deleted the user's config.json, maps/ and report.html."""
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "landcover.tif").write_text("mine")
    (tmp_path / "config.json").write_text('{"name": "my project"}')
    (tmp_path / "report.html").write_text("<html>mine</html>")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for overwrite in (False, True):
        with pytest.raises(RunExistsError, match="holds a config.json that changescout did not write .* not a run directory"):
            run_pipeline(session_config(), tmp_path, overwrite=overwrite, **QUIET)
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "config.json").read_text() == '{"name": "my project"}'
    (tmp_path / "config.json").write_text("{}")  # an empty one is no run's either
    with pytest.raises(RunExistsError, match="holds a config.json that changescout did not write"):
        run_pipeline(session_config(), tmp_path, overwrite=True, **QUIET)
    assert (tmp_path / "maps" / "landcover.tif").read_text() == "mine"


def test_overwrite_keeps_the_weights_file_the_new_run_reads_from_its_own_folder(session_run, session_config, copy_run):
    """--out A --weights A/rcf_weights.npz --overwrite deleted the weights it was given with the run it replaced:
    the new config.json named a missing file, and the same command could not resume."""
    run = copy_run(session_run)
    weights = run / "rcf_weights.npz"
    config = session_config(weights=str(weights), seed=3)
    run_pipeline(config, run, overwrite=True, **QUIET)
    assert weights.is_file() and not (run / ".replaced").exists()
    before = mtimes(run)
    run_pipeline(config, run, **QUIET)  # resumes
    assert mtimes(run) == before


def test_a_run_inside_a_zarr_cube_it_reads_resumes(tmp_path):
    """The hash of a Zarr source covered the run written inside the store: every rerun was 'another
    configuration (input files)'."""
    import make_sources as ms

    from changescout.pipeline import RunConfig

    cube = ms.datacube(tmp_path / "cube.zarr")
    config = RunConfig(source=str(cube), patch_size=8, cloud_screen="off")
    run_pipeline(config, cube / "run", **QUIET)
    before = mtimes(cube / "run")
    run_pipeline(config, cube / "run", **QUIET)
    assert mtimes(cube / "run") == before


def test_overwrite_replaces_the_run_and_weights_give_the_same_embedding_space(session_run, session_config, copy_run):
    run = copy_run(session_run)
    old_emb = mtimes(run)["embeddings.zarr"]
    weights = session_run / "rcf_weights.npz"
    config = session_config(weights=str(weights))
    run_pipeline(config, run, overwrite=True, **QUIET)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["weights"] == str(weights)
    assert cfg["config_hash"] != json.loads((session_run / "config.json").read_text())["config_hash"]
    assert mtimes(run)["embeddings.zarr"] != old_emb
    assert not (run / "rcf_weights.npz").exists()  # weights were given, not learnt
    # the same weights: the same embeddings, so the two runs can be searched together
    a = xr.open_zarr(session_run / "embeddings.zarr", consolidated=True)
    b = xr.open_zarr(run / "embeddings.zarr", consolidated=True)
    assert a.attrs["weights_sha256"] == b.attrs["weights_sha256"]
    np.testing.assert_array_equal(a["embedding"].values, b["embedding"].values)
    # and a rerun of this new configuration resumes
    before = mtimes(run)
    run_pipeline(config, run, **QUIET)
    assert mtimes(run) == before


def test_a_rerun_spelling_out_what_the_run_resolved_resumes(session_run, tmp_path):
    """--bands and --grid typed as a folder's run resolved them (the band descriptions, the first date's grid), and
    --weights naming a copy of the same file, are the same run: such a rerun was refused as another configuration
    (what differs: grid), and only --overwrite, which throws the embeddings away, let it go on. Values that resolve
    otherwise still differ, and --dates counts as typed: its order dates a folder's images, so two orders of the
    same dates resolve alike but are other runs (a review: hashed as resolved, one resumed the other's results)."""
    import shutil

    from changescout.sources.synthetic import write_geotiffs

    folder = write_geotiffs(tmp_path / "series", size=128, n_dates=4)
    first, second = tmp_path / "a" / "w.npz", tmp_path / "b" / "w.npz"
    for path in (first, second):
        path.parent.mkdir()
        shutil.copy(session_run / "rcf_weights.npz", path)
    run = tmp_path / "run"
    run_pipeline(RunConfig(source=str(folder), weights=str(first)), run, **QUIET)
    resolved = json.loads((run / "config.json").read_text())
    g = resolved["grid"]
    (res, _, left, _, _, top), (h, w) = g["transform"], g["shape"]
    spelt = dict(bands=resolved["bands"], grid=f"{g['crs']},{res:g},{left:g},{top - h * res:g},{left + w * res:g},{top:g}")
    before = mtimes(run)
    logs = []
    run_pipeline(RunConfig(source=str(folder), weights=str(second), **spelt).validate(), run, log=logs.append)
    assert any("resuming" in m for m in logs) and mtimes(run) == before
    with pytest.raises(RunExistsError, match=r"what differs: bands"):
        run_pipeline(RunConfig(source=str(folder), weights=str(second), bands=["B02", "B03", "B04", "B08"]), run, **QUIET)
    with pytest.raises(RunExistsError, match=r"what differs: dates"):
        run_pipeline(RunConfig(source=str(folder), weights=str(second), dates=resolved["dates"]), run, **QUIET)
    swapped = [resolved["dates"][1], resolved["dates"][0], *resolved["dates"][2:]]  # (the names' dates, misplaced)
    with pytest.raises(SourceError, match=r"--dates gives 2021-01-15.tif the date 2021-02-15, but its name says"):
        run_pipeline(RunConfig(source=str(folder), weights=str(second), dates=swapped), run, **QUIET)
    assert mtimes(run) == before


def test_other_weights_at_the_same_path_are_another_run(session_run, session_config, copy_run, tmp_path):
    """The configuration names the weights file; its content is part of the run too: weights replaced at the
    same path (or found in CHANGESCOUT_WEIGHTS_DIR) make another run, not a resumed one."""
    import shutil

    weights = tmp_path / "w.npz"
    shutil.copy(session_run / "rcf_weights.npz", weights)
    config = session_config(weights=str(weights))
    run = tmp_path / "run"
    run_pipeline(config, run, **QUIET)
    first = json.loads((run / "config.json").read_text())
    relearnt = tmp_path / "relearnt"
    run_pipeline(session_config(seed=7), relearnt, **QUIET)  # weights learnt with another seed
    shutil.copy(relearnt / "rcf_weights.npz", weights)
    with pytest.raises(RunExistsError, match=r"another configuration \(what differs: weights_sha256\)"):
        run_pipeline(config, run, **QUIET)
    run_pipeline(config, run, overwrite=True, **QUIET)
    second = json.loads((run / "config.json").read_text())
    from changescout.encoders import get_encoder

    assert first["weights_sha256"] == get_encoder("rcf", weights=session_run / "rcf_weights.npz").weights_digest()
    assert second["weights_sha256"] == get_encoder("rcf", weights=weights).weights_digest() != first["weights_sha256"]


def test_overwrite_with_bad_input_keeps_the_run_it_was_to_replace(session_run, session_config, copy_run):
    """--overwrite with a misspelt encoder: found before the old run is touched."""
    run = copy_run(session_run)
    (run / "events.csv").write_text("an export of this run")
    before = mtimes(run)
    with pytest.raises(EncoderNotFoundError):
        run_pipeline(session_config(encoder="galileo-nan"), run, overwrite=True, **QUIET)
    assert mtimes(run) == before


def test_a_failure_after_embedding_restores_the_replaced_run_or_removes_a_new_one(session_run, session_config, copy_run,
                                                                                  tmp_path, monkeypatch):
    """Bad input found late (here: a change stage that fails) must not lose the run --overwrite was replacing,
    nor leave a half-written new run that a corrected rerun would then refuse as another configuration."""
    import changescout.pipeline as pipeline

    def fail(*args, **kw):
        raise ConfigError("no change could be computed")

    run = copy_run(session_run)
    (run / "events.csv").write_text("an export of this run")
    before = mtimes(run)
    monkeypatch.setattr(pipeline, "compute_changes", fail)
    with pytest.raises(ConfigError):
        run_pipeline(session_config(rank_by="magnitude"), run, overwrite=True, **QUIET)
    assert mtimes(run) == before and not (run / pipeline.REPLACED).exists()
    with pytest.raises(ConfigError):
        run_pipeline(session_config(), tmp_path / "new", **QUIET)
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    run_pipeline(session_config(rank_by="magnitude"), run, overwrite=True, **QUIET)  # now it replaces it
    assert json.loads((run / "config.json").read_text())["config"]["rank_by"] == "magnitude"
    assert not (run / "events.csv").exists()  # exports of the replaced run go with it
    assert not (run / pipeline.REPLACED).exists()


def _interrupted_replacement(run, session_config, monkeypatch, **replacement):
    """``run`` after a Ctrl-C while ``--overwrite`` (another configuration) computed its changes."""
    import changescout.pipeline as pipeline

    def interrupt(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "compute_changes", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(session_config(rank_by="magnitude", **replacement), run, overwrite=True, **QUIET)
    return run


def test_an_interrupted_replacement_is_resumed_and_a_lost_one_gives_the_old_run_back(session_run, session_config,
                                                                                     copy_run, monkeypatch):
    """Ctrl-C while --overwrite runs: the new run's finished stages stay to be resumed (the replaced run stays
    aside until it finishes). A replacement killed before it wrote its configuration gives the old run back."""
    import changescout.pipeline as pipeline

    run = _interrupted_replacement(copy_run(session_run), session_config, monkeypatch)
    state = json.loads((run / "state.json").read_text())
    assert state["stages"]["embed"]["status"] == "done" and (run / pipeline.REPLACED / "events.parquet").exists()
    # the readers (export, similar, the report) tell what holds the directory, not to make a first run
    from changescout.errors import RunNotFoundError
    from changescout.events import read_events
    from changescout.objects import read_objects
    from changescout.similar import RunView

    for read in (read_events, read_objects, RunView):
        with pytest.raises(RunNotFoundError, match=r"interrupted `changescout run --overwrite`.*rerun that command"):
            read(run)
    monkeypatch.undo()
    logs = []
    run_pipeline(session_config(rank_by="magnitude"), run, log=logs.append)  # the same command resumes
    assert any("resuming" in m for m in logs) and not (run / pipeline.REPLACED).exists()

    lost = copy_run(session_run, "lost")  # as if killed between setting the old run aside and writing config.json
    before = mtimes(lost)
    (lost / pipeline.REPLACED).mkdir()
    for p in list(lost.iterdir()):
        if p.name != pipeline.REPLACED:
            p.replace(lost / pipeline.REPLACED / p.name)
    with pytest.raises(RunExistsError, match="another configuration"):  # the old run is there again
        run_pipeline(session_config(rank_by="magnitude"), lost, **QUIET)
    assert {k: v for k, v in mtimes(lost).items()} == before


def test_a_replacement_killed_while_it_set_the_old_run_aside_loses_none_of_it(session_run, session_config, copy_run):
    """Failure-injection review: --overwrite moves the old run aside file by file, config.json first. Killed half
    way, the next command discarded every file not yet moved: rcf_weights.npz for good (only an embedding writes
    it, and the run then resumed as finished without it)."""
    import changescout.pipeline as pipeline

    run = copy_run(session_run)
    files = sorted(mtimes(run))
    (run / pipeline.REPLACED).mkdir()
    for name in ("config.json", "state.json", "embeddings.zarr"):  # moved; the kill comes before the rest
        (run / name).replace(run / pipeline.REPLACED / name)
    logs = []
    run_pipeline(session_config(), run, log=logs.append)  # the run's own command: the whole run is back
    assert any("finished stages: embed, changes, rank, outputs" in m for m in logs)
    assert sorted(mtimes(run)) == files and (run / "rcf_weights.npz").is_file()
    (run / pipeline.REPLACED).mkdir()  # and killed again, then --overwrite given again: the set-aside goes on
    for name in ("config.json", "state.json"):
        (run / name).replace(run / pipeline.REPLACED / name)
    run_pipeline(session_config(rank_by="magnitude"), run, overwrite=True, **QUIET)
    assert json.loads((run / "config.json").read_text())["config"]["rank_by"] == "magnitude"
    assert not (run / pipeline.REPLACED).exists() and (run / "rcf_weights.npz").is_file()


def test_overwrite_keeps_the_users_files_in_maps_and_quicklooks(session_run, session_config, copy_run):
    """Failure-injection review: --overwrite moved maps/ and quicklooks/ aside whole, and deleted them when the new
    run finished, with a QGIS style saved beside a map and the user's notes in them."""
    run = copy_run(session_run)
    (run / "maps" / "magnitude.qml").write_text("<qgis/>")
    (run / "quicklooks" / "notes.txt").write_text("look at object 3")
    # the user's own maps and pictures of the same kinds (a review: a clipped map and a figure were deleted)
    clipped = (run / "maps" / "atypicality.tif").read_bytes()
    (run / "maps" / "atypicality_clipped.tif").write_bytes(clipped)
    (run / "quicklooks" / "figure_for_paper.png").write_bytes(b"\x89PNG mine")
    run_pipeline(session_config(rank_by="magnitude"), run, overwrite=True, **QUIET)
    assert (run / "maps" / "magnitude.qml").read_text() == "<qgis/>"
    assert (run / "quicklooks" / "notes.txt").read_text() == "look at object 3"
    assert (run / "maps" / "atypicality_clipped.tif").read_bytes() == clipped
    assert (run / "quicklooks" / "figure_for_paper.png").read_bytes() == b"\x89PNG mine"
    assert sorted(p.name for p in (run / "maps").glob("*.tif")) == ["atypicality.tif", "atypicality_clipped.tif",
                                                                   "cluster.tif", "magnitude.tif"]


def test_the_users_own_file_in_maps_is_not_taken_for_a_damaged_map(session_run, session_config, copy_run):
    """A review: a .tif of the user's in maps/ that GDAL could not read (being written, or not a raster) was taken
    for a damaged map, and every rerun redid the outputs stage, which could not rebuild it; a large one was read
    whole at every resume."""
    run = copy_run(session_run)
    (run / "maps" / "my_clip.tif").write_bytes(b"not finished yet")
    logs = []
    run_pipeline(session_config(), run, log=logs.append)
    assert any("finished stages: embed, changes, rank, outputs" in m for m in logs), logs
    assert not any("my_clip" in m for m in logs)
    (run / "maps" / "cluster.tif").write_bytes(b"cut short")  # the run's own map is still checked
    logs = []
    run_pipeline(session_config(), run, log=logs.append)
    assert any("cluster.tif" in m and "outputs stage runs again" in m for m in logs), logs


def test_a_finished_replacement_is_not_undone_by_the_old_command(session_run, session_config, copy_run, monkeypatch):
    """A review: killed after the replacing run finished but while the run it replaced was being deleted, the
    directory held the finished run and a whole .replaced/; the old command (no --overwrite) put the old run back
    and threw the finished one away, with exit 0."""
    import changescout.pipeline as pipeline

    run = copy_run(session_run)
    monkeypatch.setattr(pipeline.Run, "finish", lambda self: self._unlock())  # killed before the deletion ends
    run_pipeline(session_config(rank_by="magnitude"), run, overwrite=True, **QUIET)
    monkeypatch.undo()
    assert (run / pipeline.REPLACED).is_dir()
    finished = (run / "events.parquet").read_bytes()
    with pytest.raises(RunExistsError, match="another configuration"):
        run_pipeline(session_config(), run, **QUIET)
    assert (run / "events.parquet").read_bytes() == finished
    # a deletion cut short leaves a leftover that the next run sweeps, not a .replaced/ to put back
    trash = []
    monkeypatch.setattr(pipeline.shutil, "rmtree", lambda p, **kw: trash.append(p))
    run_pipeline(session_config(rank_by="magnitude"), run, **QUIET)
    monkeypatch.undo()
    assert not (run / pipeline.REPLACED).exists() and {p.name for p in map(type(run), trash)} == {f".discarded-{os.getpid()}"}
    assert type(run)(trash[-1]).is_dir() and pipeline.LEFTOVER.fullmatch(type(run)(trash[-1]).name)


def test_going_back_to_the_command_of_the_run_set_aside_puts_it_back(session_run, session_config, copy_run, monkeypatch):
    """Failure-injection review: after an interrupted --overwrite, the run set aside was made again from nothing
    by its own command (with --overwrite; without, the refusal hid it), then the finished copy was deleted."""
    import changescout.pipeline as pipeline

    run = _interrupted_replacement(copy_run(session_run), session_config, monkeypatch)
    monkeypatch.undo()
    logs = []
    run_pipeline(session_config(), run, log=logs.append)
    assert any("is of this configuration: it is put back" in m for m in logs)
    assert any("finished stages: embed, changes, rank, outputs" in m for m in logs)
    assert not (run / pipeline.REPLACED).exists()
    a, b = read_events(session_run), read_events(run)
    pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="geometry")), pd.DataFrame(b.drop(columns="geometry")))
    # a replacement given the run's own weights (--weights RUN/rcf_weights.npz) left them in place, not aside:
    # going back discarded them with its outputs, and the run put back had no weights (a review)
    run = copy_run(session_run, "weights")
    weights = (run / "rcf_weights.npz").read_bytes()
    _interrupted_replacement(run, session_config, monkeypatch, weights=str(run / "rcf_weights.npz"))
    monkeypatch.undo()
    run_pipeline(session_config(), run, **QUIET)
    assert not (run / pipeline.REPLACED).exists() and (run / "rcf_weights.npz").read_bytes() == weights


def test_a_folder_whose_records_are_not_a_runs_is_not_replaced(session_config, tmp_path):
    """Failure-injection review: a config.json that is not JSON beside any state.json counted as a run cut short,
    and --overwrite deleted the folder's config.json, state.json, report.html and maps/."""
    d = tmp_path / "notes"
    (d / "maps").mkdir(parents=True)
    (d / "config.json").write_text("{ // my settings")
    (d / "state.json").write_text('{"session": 3}')
    (d / "report.html").write_text("<html></html>")
    with pytest.raises(RunExistsError, match="config.json: cannot be read"):
        run_pipeline(session_config(), d, overwrite=True, **QUIET)
    assert (d / "config.json").read_text() == "{ // my settings" and (d / "report.html").exists() and (d / "maps").is_dir()


@pytest.mark.parametrize("key, value, message", [
    ("min_clear", 1.5, r"--min-clear must be a number in \(0, 1\]"),
    ("min_clear", "high", "min-clear"),
    ("rank_by", "bogus", "--rank-by must be one of combined, rarity, magnitude"),
    ("seasonal_weight", -1, "seasonal_weight must be a number"),  # keys of a --config file named as written there
    ("n_clusters", 2.5, "n_clusters must be a whole number"),
    ("snow_screen", False, "snow_screen must be text, got False"),  # (YAML's off)
    ("mask_convention", "foo", "--mask-convention must be one of fmask, scl, quality"),
    ("patch_size", 129, r"--patch-size must be a whole number in \[1, 128\]"),
    # (past 32 bits scikit-learn refused it after the embedding: exit 1, and a half-made run; a review)
    ("seed", 2**32, r"--seed must be a whole number in \[0, 4294967295\], got 4294967296"),
    ("compare", "reference:2030-01-01", "no date comes after the reference"),
    ("compare", "reference:2000-01-01", "the reference comes before the series"),
    ("compare", "reference:2008-13-01", "--compare reference: holds '2008-13-01', which is not a date"),
    ("compare", "anniversary", "anniversary needs a date within 45 days of a year before another date"),
    # (these were checked only by their stage, after the source was read or a --scheduler had answered)
    ("cloud_screen", "yes", "cloud_screen must be one of auto, hot, off, got 'yes'"),
    ("coregister", "maybe", "--coregister must be one of auto, on, off, got 'maybe'"),
    ("radiometry", "bogus", "--radiometry must be one of auto, off, got 'bogus'"),
    ("date_normalisation", "bogus", "--date-normalisation must be one of off, reference, got 'bogus'"),
    # (was cut to 32 characters without a word: the ids did not carry what was asked)
    ("label", "bouconne_2018_sentinel2_l2a_tile31TCJ", "label has 37 characters; it begins every event id and may have at most 32"),
    # (told as "the encoder 'rcf' was built for 32", naming neither option)
    ("encoder_options", {"patch_size": 32}, r"encoder_options patch_size \(32\) differs from --patch-size \(16\)"),
])
def test_bad_values_fail_before_anything_is_written(session_config, tmp_path, key, value, message):
    config = session_config(**{key: value})  # the session series spans 9 months: no anniversary
    with pytest.raises(ConfigError, match=message):
        run_pipeline(config, tmp_path / "r", **QUIET)
    assert not (tmp_path / "r").exists()
    if key != "compare" or "13" in str(value):  # the series' dates are needed to tell the others
        with pytest.raises(ConfigError, match=message):
            RunConfig.from_dict({**config.to_dict()})


def test_an_output_path_that_is_a_file_is_refused(session_config, tmp_path):
    (tmp_path / "b.out").write_text("mine")
    with pytest.raises(RunExistsError, match="is a file"):
        run_pipeline(session_config(), tmp_path / "b.out", **QUIET)
    assert (tmp_path / "b.out").read_text() == "mine"


def test_an_output_path_that_cannot_be_written_exits_2_before_any_work(session_config, tmp_path, monkeypatch):
    """An unwritable or impossible --out gave "internal error" after the source was read."""
    import changescout.pipeline

    from changescout.errors import OutputError

    monkeypatch.setattr(changescout.pipeline, "_build_encoder", lambda c: pytest.fail("work started"))
    (tmp_path / "f").write_text("mine")
    with pytest.raises(OutputError, match="f is a file, not a folder"):
        run_pipeline(session_config(), tmp_path / "f" / "run", **QUIET)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")  # (was "File exists", after the source was read)
    with pytest.raises(OutputError, match=r"dangling is a link to .*gone, which does not exist; create that folder"):
        run_pipeline(session_config(), tmp_path / "dangling", **QUIET)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setattr(changescout.pipeline.os, "access", lambda path, mode: os.fspath(path) != os.fspath(locked))  # as root, too
    with pytest.raises(OutputError, match="does not let this user create folders"):
        run_pipeline(session_config(), locked / "run", **QUIET)
    assert not (locked / "run").exists()


def test_a_run_directory_that_refuses_its_files_exits_2(session_config, tmp_path, monkeypatch):
    """A folder the permission bits let through can still refuse writes (an immutable folder, a full disk)."""
    import changescout.pipeline

    from changescout.errors import OutputError

    def refuse(path, data):
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(changescout.pipeline, "write_json", refuse)
    with pytest.raises(OutputError, match="cannot write the run directory: Operation not permitted"):
        run_pipeline(session_config(source_options={"seed": 0, "size": 128, "n_dates": 4}), tmp_path / "r", **QUIET)
    assert not (tmp_path / "r").exists()  # nothing half-written left behind


def test_two_runs_with_the_same_seed_give_identical_ranks(session_run, session_config, tmp_path):
    run = run_pipeline(session_config(), tmp_path / "again", **QUIET)
    a, b = read_events(session_run), read_events(run)
    assert a["event_id"].tolist() == b["event_id"].tolist()
    np.testing.assert_array_equal(a["rank"], b["rank"])
    np.testing.assert_array_equal(a["atypicality"], b["atypicality"])
    np.testing.assert_array_equal(a["cluster"], b["cluster"])
    assert json.loads((run / "config.json").read_text())["config_hash"] == \
        json.loads((session_run / "config.json").read_text())["config_hash"]


# -- configuration -----------------------------------------------------------------------------------------
def test_run_config_from_dict():
    cfg = RunConfig.from_dict({"source": "x", "patch_size": 8})
    assert cfg.patch_size == 8 and RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError) as exc:
        RunConfig.from_dict({"source": "x", "patchsize": 8})
    assert "patchsize" in str(exc.value) and "patch_size" in str(exc.value)
    # a --config file's scheduler: refused while listed as known; now said where it goes (a review)
    with pytest.raises(ConfigError, match=r"'scheduler' \('tcp://h:8786'\) says where a run computes.*distributed.Client"):
        RunConfig.from_dict({"source": "x", "scheduler": "tcp://h:8786"})
    # what a JSON file or numpy gives is normalised, not refused
    cfg = RunConfig.from_dict({"source": "x", "patch_size": np.int64(8), "n_clusters": "12", "seed": 3.0,
                               "dates": "2021-01-15,2021-02-15", "bands": ["B02", "B03"]})
    assert (cfg.patch_size, cfg.n_clusters, cfg.seed) == (8, 12, 3) and type(cfg.patch_size) is int
    assert cfg.dates == ["2021-01-15", "2021-02-15"]


def test_bad_comparison_fails_before_creating_the_run(session_config, tmp_path):
    with pytest.raises(ConfigError, match="--compare"):
        run_pipeline(session_config(compare="weekly"), tmp_path / "r", **QUIET)
    assert not (tmp_path / "r").exists()


def test_dates_the_source_gave_no_mask_for_are_screened(synthetic_cube):
    """A folder mixing Level-1C products (no SCL) with Level-2A ones (with it): the auto screen trusted the mask
    for the whole series, the L1C dates went unscreened, and a cloud there was the run's top change (a review).
    The dates without a mask are screened; those with one keep it as given."""
    cube, truth = synthetic_cube
    clouds = truth.objects[truth.objects["kind"] == "cloud"]
    when = pd.DatetimeIndex(cube["time"].values).get_loc(clouds["onset"].iloc[0])
    cloud = truth.masks[clouds.index[0]]
    given = np.zeros(cube["quality"].shape, np.uint8)  # the masked dates' mask: all clear
    masked_dates = [t != when for t in range(cube.sizes["time"])]
    partly = cube.assign_coords(quality=(("time", "y", "x"), da.from_array(given, chunks=(1, 128, 128))))
    partly.attrs = {**cube.attrs, "quality_mask": True, "masked_dates": masked_dates}
    out = screen_clouds(partly, "auto")
    q = out["quality"].values
    assert out.attrs["cloud_screen"].endswith("on the 1 date(s) the source gave no quality mask for (the others keep theirs)")
    np.testing.assert_array_equal(q[masked_dates], given[masked_dates])  # the mask as the source gave it
    assert (q[when][cloud] == Quality.CLOUD).mean() > 0.5  # the unmasked date's cloud found
    whole = cube.assign_coords(quality=partly["quality"])
    whole.attrs = {**cube.attrs, "quality_mask": True, "masked_dates": [True] * cube.sizes["time"]}
    assert screen_clouds(whole, "auto").attrs["cloud_screen"] == "none: the source gave a quality mask"


def test_screen_clouds_modes(synthetic_cube):
    cube, _ = synthetic_cube
    with pytest.raises(ConfigError, match="cloud_screen"):
        screen_clouds(cube, "maybe")
    assert screen_clouds(cube, "off").attrs["cloud_screen"].startswith("none: turned off")  # config.json and the report say so
    assert "cloud_screen" in screen_clouds(cube, "hot").attrs
    assert "cloud_screen" in screen_clouds(cube, "auto").attrs  # the synthetic source has no quality mask
    q = cube["quality"].values.copy()
    q[:, 0:8, 0:8] = Quality.CLOUD  # the source gave a mask: auto leaves it alone
    masked = cube.assign_coords(quality=(("time", "y", "x"), da.from_array(q, chunks=(1, 128, 128))))
    kept = screen_clouds(masked, "auto")
    assert kept.attrs["cloud_screen"] == "none: the source gave a quality mask"
    np.testing.assert_array_equal(kept["quality"].values, q)  # the mask as the source gave it
    assert screen_clouds(masked, "hot") is not masked
    pair = cube.isel(time=[0, 1])  # two dates: a cloud cannot be told from a change, auto does not screen
    assert screen_clouds(pair, "auto").attrs["cloud_screen"].startswith("none: fewer than 3 dates")
    assert "cloud_screen" in screen_clouds(pair, "hot").attrs
    # bands the screen cannot name (a GeoTIFF without band descriptions: b1, b2...): hot is refused, auto says
    # that clouds go unscreened instead of switching off in silence
    unnamed = cube.assign_coords(band=[f"b{i + 1}" for i in range(cube.sizes["band"])])
    with pytest.raises(ConfigError, match=r"cloud_screen hot: .*blue and red bands by name.*\['b1', 'b2'.*--bands"):
        screen_clouds(unnamed, "hot")
    logs = []
    assert screen_clouds(unnamed, "auto", logs.append).attrs["cloud_screen"] == "none: no blue and red bands found by name"
    assert len(logs) == 1 and logs[0].startswith("warning: no cloud screen") and "--bands" in logs[0]
    assert screen_clouds(unnamed.isel(time=[0, 1]), "auto", logs.append) is not None and len(logs) == 1  # a pair: no screen asked
    # every band read by its name, and none blue: naming them again cannot help, so --bands is not advised (UAT)
    named = cube.isel(band=[1, 3, 6]).assign_coords(band=["green", "nir", "swir16"])
    screen_clouds(named, "auto", logs.append)
    assert len(logs) == 2 and logs[1].startswith("warning: no cloud screen") and "--bands" not in logs[1]


def test_rank_events_refuses_an_empty_table():
    with pytest.raises(ConfigError, match="no change"):
        rank_events(pd.DataFrame(columns=["vec"]), np.zeros((0, 4), np.float32), RunConfig(source="x"))


@pytest.mark.parametrize("n", [1, 3])
def test_more_types_asked_than_changes_found_gives_one_type_per_change(n):
    """--config n_clusters 500 on a small area: known only once the changes are computed, after the
    embedding; the run goes on with one type per change and says so, instead of an internal error."""
    rng = np.random.default_rng(0)
    events = pd.DataFrame({"row": np.arange(n), "col": 0, "t0": pd.Timestamp("2021-01-01"), "t1": pd.Timestamp("2021-02-01"),
                           "magnitude": rng.random(n), "surprise": rng.random(n), "zscore": rng.random(n),
                           "persistence": pd.array([1] * n, dtype="Int32"), "clear_fraction": 1.0, "transient": False,
                           "recurrence": np.nan, "vec": np.arange(n)})
    logs = []
    ranked, clusters, objects = rank_events(events, rng.standard_normal((n, 8)).astype(np.float32),
                                            RunConfig(source="x", n_clusters=500), log=logs.append)
    assert logs == [f"warning: n_clusters 500 is more than the {n} changes of this run; {n} type(s) are used"]
    assert sorted(ranked["rank"]) == list(range(1, n + 1)) and clusters["size"].sum() == n and len(objects) >= 1


def test_more_types_asked_than_the_sampled_changes_give_one_type_per_sampled_change(monkeypatch):
    """Types are fitted on a sample of the changes (5000): n_clusters between the sample and the run's size was
    an internal error after the embedding."""
    import changescout.pipeline as pl
    from changescout.cluster import ChangeClusterer

    class Small(ChangeClusterer):
        def __init__(self, n_clusters="auto", max_clusters=24, n_components=16, sample_size=20, random_state=0):
            super().__init__(n_clusters, max_clusters, n_components, sample_size, random_state)

    monkeypatch.setattr(pl, "ChangeClusterer", Small)
    n, rng = 30, np.random.default_rng(0)
    events = pd.DataFrame({"row": np.arange(n), "col": 0, "t0": pd.Timestamp("2021-01-01"), "t1": pd.Timestamp("2021-02-01"),
                           "magnitude": rng.random(n), "surprise": rng.random(n), "zscore": rng.random(n),
                           "persistence": pd.array([1] * n, dtype="Int32"), "vec": np.arange(n)})
    logs = []
    ranked, clusters, _ = rank_events(events, rng.standard_normal((n, 8)).astype(np.float32),
                                      RunConfig(source="x", n_clusters=25), log=logs.append)
    assert logs == ["warning: n_clusters 25 is more than the 20 changes the types are fitted on; 20 type(s) are used"]
    assert len(clusters) <= 20 and sorted(ranked["rank"]) == list(range(1, n + 1))


def test_a_zarr_datacube_runs_and_its_store_is_hashed(tmp_path):
    """A Zarr store is a directory: hashing it as a file stopped every Zarr run with an internal error."""
    import make_sources as ms

    store = ms.datacube(tmp_path / "cube.zarr")
    out = run_pipeline(RunConfig(source=str(store)), tmp_path / "run", log=lambda *a: None)
    inputs = json.loads((out / "config.json").read_text())["inputs"]
    assert list(inputs) == [str(store.resolve())] and len(inputs[str(store.resolve())]) == 64
    assert len(gpd.read_parquet(out / "events.parquet")) > 0
    (store / "B02.txt").write_text("a file added to the store")  # the digest covers the store's files
    from changescout.pipeline import _input_hashes
    from changescout.sources import open_series

    assert _input_hashes(open_series(store)) != inputs


def test_what_a_killed_run_left_half_written_is_removed_when_it_resumes_or_is_replaced(session_run, session_config, copy_run):
    """A SIGKILL skips atomic_path's cleanup: the temporary embeddings store (and any other temporary) stays
    beside the run until the run is resumed or replaced; a refused rerun leaves the directory as it is."""
    run = copy_run(session_run)
    left = [run / ".embeddings.tmp-ee73f3f5.zarr", run / ".events.tmp-0a1b2c3d.parquet", run / "maps" / ".magnitude.tmp-12345678.tif"]
    left[0].mkdir()
    (left[0] / "0.0.0").write_bytes(b"partial")
    for p in left[1:]:
        p.write_bytes(b"partial")
    keep = run / ".notes.txt"  # the user's own hidden file
    keep.write_text("mine")
    with pytest.raises(RunExistsError):
        run_pipeline(session_config(rank_by="magnitude"), run, **QUIET)
    assert all(p.exists() for p in left)
    run_pipeline(session_config(), run, **QUIET)  # resumed
    assert not any(p.exists() for p in left) and keep.exists()
    left[1].write_bytes(b"partial")
    run_pipeline(session_config(rank_by="magnitude"), run, overwrite=True, **QUIET)  # replaced
    assert not left[1].exists() and keep.exists()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") and p.name != keep.name]


@pytest.mark.skipif(os.name != "posix", reason="run directories are locked with flock on POSIX")
def test_a_run_that_loses_the_race_for_a_new_directory_leaves_the_winners_files(tmp_path):
    """Two runs start on the same new --out; the other one creates and locks it first. The loser is refused
    and its tidy-up touches nothing (it once discarded the winner's configuration and embeddings)."""
    from changescout import runlock

    out = tmp_path / "new"
    config = RunConfig(source="synthetic", kind="synthetic")
    loser = Run(out, config, log=lambda *a: None)
    held = []
    real_lock = loser._lock

    def winner_first():  # the winner takes the lock between the loser's mkdir and its lock
        held.append(runlock.acquire(out, exclusive=True))
        (out / "config.json").write_text("{}")
        (out / "embeddings.zarr").mkdir()
        real_lock()

    loser._lock = winner_first
    try:
        with pytest.raises(RunExistsError, match="another changescout process") as exc:
            loser.prepare({}, {"series": "s"})
        loser.abandon(exc.value)
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "embeddings.zarr"]
    finally:
        for fd in held:
            runlock.release(fd)


@pytest.mark.skipif(os.name != "posix", reason="run directories are locked with flock on POSIX")
def test_a_failed_replacement_keeps_the_lock_until_the_old_run_is_back(session_run, copy_run):
    """--overwrite stopped by bad input puts the old run back; another process cannot take the directory
    while that happens (the lock was released first, and a second run could resume the half-restored one)."""
    from changescout import runlock

    run = copy_run(session_run)
    old_config = (run / "config.json").read_text()
    replacing = Run(run, RunConfig(source="synthetic", kind="synthetic", rank_by="magnitude"), overwrite=True,
                    log=lambda *a: None)
    replacing.prepare({}, {"series": "s"})
    seen = []
    restore = replacing._restore

    def restore_and_look():
        try:
            runlock.release(runlock.acquire(run, exclusive=True))
            seen.append("free")
        except RunExistsError:
            seen.append("held")
        restore()

    replacing._restore = restore_and_look
    replacing.abandon(ConfigError("bad input found mid-run"))
    assert seen == ["held"]
    assert (run / "config.json").read_text() == old_config
    Run(run, RunConfig(source="synthetic", kind="synthetic"), log=lambda *a: None)._lock()  # released at the end


@pytest.mark.skipif(os.name != "posix", reason="run directories are locked with flock on POSIX")
def test_a_file_system_without_locks_runs_unguarded_with_a_warning(tmp_path, monkeypatch):
    """flock failing for want of support (ENOLCK on some NFS, ENOSYS on Lustre) is no 'other process': the run
    goes on, and says it is not guarded."""
    import errno

    from changescout import runlock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runlock.fcntl, "flock", no_locks)
    logs = []
    run = Run(tmp_path / "r", RunConfig(source="synthetic", kind="synthetic"), log=logs.append)
    run.prepare({}, {"series": "s"})
    assert (tmp_path / "r" / "config.json").exists()
    assert any("cannot be locked" in m and "No locks available" in m for m in logs)
    run.finish()


@pytest.mark.skipif(os.name != "posix", reason="run directories are locked with flock on POSIX")
def test_a_second_process_on_the_same_run_directory_is_refused(session_run, session_config, copy_run, monkeypatch):
    """While one run writes a directory (it holds a flock on it), another run there stops with exit 2 instead of
    resuming it or sweeping its temporaries, before it reads its source (minutes on a large series); once the
    lock is released the run resumes."""
    import fcntl

    from changescout import pipeline

    run = copy_run(session_run)
    temp = run / ".embeddings.tmp-0123abcd.zarr"  # the other process's store being written
    temp.mkdir()
    fd = os.open(run, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with monkeypatch.context() as m:
            m.setattr(pipeline, "open_source", lambda config: pytest.fail("the source was read"))
            with pytest.raises(RunExistsError, match="another changescout process is writing or reading") as exc:
                run_pipeline(session_config(), run, **QUIET)
        assert exc.value.exit_code == 2 and temp.exists()
    finally:
        os.close(fd)
    logs = []
    run_pipeline(session_config(), run, log=logs.append)
    assert any("resuming" in m for m in logs) and not temp.exists()
    run_pipeline(session_config(), run, **QUIET)  # the lock went with the run that held it


@pytest.mark.skipif(os.name != "posix", reason="run directories are locked with flock on POSIX")
def test_a_reader_started_while_a_run_reads_its_source_is_told_a_run_writes_the_directory(session_run, session_config,
                                                                                         copy_run, monkeypatch):
    """UAT: `similar` started while a resumed run was still reading its source said the run had no index.faiss
    and asked for `changescout run` (the run locked the directory only once the source was read)."""
    from changescout import pipeline
    from changescout.similar import find_similar

    run = copy_run(session_run)
    (run / "index.faiss").unlink()  # to be rebuilt by this run
    said, read = [], pipeline.open_source

    def read_while_a_reader_comes(config):
        with pytest.raises(RunExistsError, match="a changescout run is writing this run directory") as exc:
            find_similar(run, read_events(run)["event_id"].iloc[0], k=3)
        said.append(exc.value.exit_code)
        return read(config)

    monkeypatch.setattr(pipeline, "open_source", read_while_a_reader_comes)
    run_pipeline(session_config(), run, **QUIET)
    assert said == [2] and (run / "index.faiss").exists()
    find_similar(run, read_events(run)["event_id"].iloc[0], k=3)  # the lock went with the run


def test_a_refused_run_names_each_difference_once_and_readably():
    """An option and what it resolved to (bands, dates) share a name; the resolved sections read as words."""
    from changescout.pipeline import _differences

    old = {"config": {"bands": "B02,B04", "dates": "2018-04-29", "seed": 0}, "bands": ["B02", "B04"], "dates": ["2018-04-29"],
           "inputs": {"a.tif": "1"}, "series": "x_1", "cloud_screen": "HOT > 0.08", "grid": {"crs": "EPSG:32631"}}
    new = {"config": {"bands": "b3,b4", "dates": None, "seed": 0}, "bands": ["b3", "b4"], "dates": ["2009-01-01"],
           "inputs": {"b.tif": "2"}, "series": "y_2", "cloud_screen": "none: the source gave a quality mask",
           "grid": {"crs": "EPSG:32613"}}
    assert _differences(old, new) == ["bands", "cloud_screen", "dates", "grid", "input files", "series id"]


def test_a_run_says_which_grid_it_chose_and_which_sentinel2_dates_it_could_not_correct(tmp_path):
    """Sentinel-2 files whose names do not give the processing baseline are left as they are (an offset of
    +0.1 on products of baseline 04.00 and later): the run says so before it starts, and it names the grid
    it chose when --grid was not given."""
    from changescout.cube import grid_of
    from changescout.pipeline import input_notes
    from changescout.radiometry import apply_offsets
    from changescout.sources import open_series

    profile = dict(driver="GTiff", width=32, height=32, count=4, dtype="uint16", crs="EPSG:32631",
                   transform=rasterio.Affine(10, 0, 372000, 0, -10, 4836000))
    for day in ("20220301", "20220410"):
        with rasterio.open(tmp_path / f"S2B_MSIL2A_{day}T105031_T31TCJ.tif", "w", **profile) as dst:
            dst.write(np.full((4, 32, 32), 1500, np.uint16))
    with rasterio.open(tmp_path / "S2B_MSIL2A_20220301T105031_T31TCJ_TCI_10m.tif", "w", **profile) as dst:
        dst.write(np.full((4, 32, 32), 100, np.uint16))  # the true-colour image of a product: not an image to read
    cube, offsets = apply_offsets(open_series(tmp_path))
    assert cube.sizes["time"] == 2
    notes = input_notes(cube, offsets, grid_of(cube), given_grid=False)
    assert notes[0].startswith("grid: EPSG:32631, 10 m per pixel, 32 x 32 px")
    assert notes[1] == "left out 1 file(s) of auxiliary layers, not reflectance (S2B_MSIL2A_20220301T105031_T31TCJ_TCI_10m.tif)"
    assert notes[2].startswith("warning: 2 Sentinel-2 date(s) of unknown processing baseline (2022-03-01, 2022-04-10)")
    assert input_notes(cube, offsets, grid_of(cube), given_grid=True) == notes[1:]


def test_a_deleted_search_index_or_objects_table_is_rebuilt_by_a_rerun(session_run, session_config, copy_run):
    """Each output of the rank stage is needed: a rerun redid the stage only when events.parquet was gone,
    so a run missing index.faiss or objects.parquet said "finished" and stayed broken (UAT)."""
    run = copy_run(session_run)
    (run / "index.faiss").unlink()
    (run / "objects.parquet").unlink()
    run_pipeline(session_config(), run, **QUIET)
    assert SimilarChangeIndex.load(run / "index.faiss").index_.ntotal == len(read_events(run))
    from changescout.objects import read_objects

    assert read_objects(run)["object_id"].tolist() == read_objects(session_run)["object_id"].tolist()


def test_deleted_maps_and_quicklooks_are_rebuilt_by_a_rerun(session_run, session_config, copy_run):
    import shutil

    run = copy_run(session_run)
    maps = sorted(p.name for p in (run / "maps").iterdir())
    shutil.rmtree(run / "maps")
    shutil.rmtree(run / "quicklooks")
    run_pipeline(session_config(), run, **QUIET)
    assert sorted(p.name for p in (run / "maps").iterdir()) == maps and any((run / "quicklooks").iterdir())
    # one map, one picture deleted, one cut short: the rerun said the run was finished (failure-injection review)
    looks = sorted((run / "quicklooks").glob("*.png"))
    (run / "maps" / "cluster.tif").unlink()
    looks[0].unlink()
    looks[1].write_bytes(looks[1].read_bytes()[:100])
    from changescout.intact import problem

    assert problem(looks[1]) == "cut short (no closing IEND chunk)"
    run_pipeline(session_config(), run, **QUIET)
    assert sorted(p.name for p in (run / "maps").iterdir()) == maps
    assert all(problem(p) is None for p in looks) and sorted((run / "quicklooks").glob("*.png")) == looks


def test_unreadable_run_records_are_named_and_overwrite_replaces_the_run(session_run, session_config, copy_run):
    run = copy_run(session_run)
    (run / "state.json").write_text("{")
    with pytest.raises(RunExistsError, match=r"state.json: cannot be read .*delete it and rerun"):
        run_pipeline(session_config(), run, **QUIET)
    for text in ("{}", '{"stages": []}'):  # JSON, but no run's state: an internal error (KeyError) before
        (run / "state.json").write_text(text)
        with pytest.raises(RunExistsError, match=r"state.json: is not a changescout run state .*delete it and rerun"):
            run_pipeline(session_config(), run, **QUIET)
    (run / "state.json").unlink()  # as the message says: the stages are done again
    run_pipeline(session_config(), run, **QUIET)
    assert json.loads((run / "state.json").read_text())["stages"]["rank"]["status"] == "done"
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(RunExistsError, match=r"config.json: is not a changescout record .*--overwrite"):
        run_pipeline(session_config(), run, **QUIET)
    run_pipeline(session_config(), run, overwrite=True, **QUIET)
    assert json.loads((run / "config.json").read_text())["config_hash"]


def test_a_run_without_its_config_json_is_named_as_such(session_run, session_config, copy_run):
    run = copy_run(session_run)
    (run / "config.json").unlink()
    with pytest.raises(RunExistsError, match=r"holds state.json, embeddings.zarr, .* but no config.json"):
        run_pipeline(session_config(), run, **QUIET)
    assert (run / "events.parquet").exists()  # nothing of it removed


def test_rank_events_reads_the_vectors_by_their_vec_keys_whatever_the_row_order():
    """Vectors are keyed by vec (changes.zarr's layout); the change types and the rarity were given to the events
    by row position, so a table in another order (events.parquet, by rank) got other events' types."""
    from changescout.pipeline import RunConfig, rank_events

    rng = np.random.default_rng(0)
    n = 300
    vecs = np.vstack([rng.normal(0, 0.1, (200, 8)) + 5 * np.eye(8)[1], rng.normal(0, 0.1, (n - 200, 8)) - 5 * np.eye(8)[1]])
    events = pd.DataFrame({"row": np.arange(n) // 20 * 2, "col": np.arange(n) % 20 * 2, "t0": pd.Timestamp("2021-01-01"),
                           "t1": pd.Timestamp("2021-06-01"), "magnitude": 1.0, "surprise": rng.uniform(0.5, 1.5, n),
                           "zscore": 1.0, "persistence": pd.array([2] * n, dtype="Int32"), "vec": np.arange(n)})
    a, _, objects_a = rank_events(events, vecs.astype(np.float32), RunConfig(source="synthetic"))
    b, _, objects_b = rank_events(events.sample(frac=1, random_state=1), vecs.astype(np.float32), RunConfig(source="synthetic"))
    by_vec = [t.set_index("vec").sort_index() for t in (a, b)]
    assert by_vec[0]["cluster"].iloc[:200].nunique() == 1 and by_vec[0]["cluster"].iloc[200:].nunique() == 1
    pd.testing.assert_frame_equal(by_vec[0], by_vec[1])
    pd.testing.assert_frame_equal(objects_a, objects_b)


def test_object_trajectories_count_the_series_dates_even_one_no_patch_saw_clear(tmp_path):
    """changes.zarr does not keep each event's date index, and the rank stage counted dates among those some
    event starts or ends at: a date that every patch saw under cloud shifted every trajectory across it by a
    date. The objects' trajectories are those of their patches' states at the series' own dates."""
    import make_sources as ms

    from changescout.change import read_vectors
    from changescout.embed import open_embeddings
    from changescout.objects import TRAJECTORY_COLUMNS, change_states, trajectory_profiles

    dates = pd.date_range("2021-01-01", periods=6, freq="MS").strftime("%Y-%m-%d")
    ds = xr.open_dataset(ms.datacube(tmp_path / "a.nc", dates=dates)).load()
    ds["quality"][3] = Quality.CLOUD  # the fourth date: cloud over the whole scene
    ds.to_netcdf(tmp_path / "cube.nc")
    out = run_pipeline(RunConfig(source=str(tmp_path / "cube.nc"), patch_size=8, cloud_screen="off"), tmp_path / "run", **QUIET)
    events = read_events(out)
    assert not (pd.to_datetime(events["t1"]) == dates[3]).any() and not (pd.to_datetime(events["t0"]) == dates[3]).any()
    emb = open_embeddings(out / "embeddings.zarr")
    vectors, _ = read_vectors(out / "changes.zarr")
    states = change_states(emb, events, len(vectors))
    for end in ("t0", "t1"):
        events[f"{end}i"] = pd.DatetimeIndex(emb["time"].values).get_indexer(pd.to_datetime(events[end]))
    objects = read_objects(out)
    expected = trajectory_profiles(events, states, objects["object_id"].to_numpy())
    np.testing.assert_allclose(objects[list(TRAJECTORY_COLUMNS)].to_numpy(float), expected, atol=1e-5)
    assert np.isfinite(expected).any()


def test_the_runs_seed_reaches_an_encoder_that_takes_one(session_config, monkeypatch):
    """--seed reached rcf only: a plugin encoder that samples with a seed ran with its own default while
    config.json recorded the run's (a review); encoder_options still choose another."""
    from changescout.encoders import base
    from changescout.pipeline import _build_encoder

    class Seeded:
        def __init__(self, patch_size=16, seed=0):
            self.patch_size, self.seed = patch_size, seed

    class Unseeded:
        def __init__(self, patch_size=16):
            self.patch_size = patch_size

    class EP:
        def __init__(self, name, cls):
            self.name, self.cls = name, cls

        def load(self):
            return self.cls

    monkeypatch.setattr(base, "_entry_points", lambda: {"seeded": EP("seeded", Seeded), "unseeded": EP("unseeded", Unseeded)})
    assert _build_encoder(session_config(encoder="seeded", seed=7)).seed == 7
    assert _build_encoder(session_config(encoder="seeded", seed=7, encoder_options={"seed": 3})).seed == 3
    assert _build_encoder(session_config(encoder="unseeded", seed=7)).patch_size == 16  # takes none: given none
    assert _build_encoder(session_config(encoder="rcf", seed=5)).seed == 5
