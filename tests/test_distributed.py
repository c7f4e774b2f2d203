"""The same run on a dask.distributed cluster (``--scheduler``): the embedding runs on the cluster's workers,
and the run directory must be the one a run on local threads writes."""

from __future__ import annotations

import re

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from cli_call import run_cli

from changescout.embed import fit_sample
from changescout.sources.synthetic import write_geotiffs

distributed = pytest.importorskip("distributed")


def test_a_run_on_a_cluster_writes_what_a_local_run_writes(capsys, tmp_path):
    src = write_geotiffs(tmp_path / "series", size=128, n_dates=6)
    code, _, err, _ = run_cli(capsys, "run", src, "--out", tmp_path / "local")
    assert code == 0, err
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                                  dashboard_address=None) as cluster:
        code, out, err, _ = run_cli(capsys, "run", src, "--out", tmp_path / "cluster", "--scheduler", cluster.scheduler_address)
        assert code == 0, err
        assert "Top 10" in out
        assert f"computing on the dask cluster at {cluster.scheduler_address}: 1 worker(s), 2 thread(s)" in out + err
        # the embedding's progress bar, fed by the scheduler (dask's local callbacks see no task of a cluster)
        bar = [line for line in (out + err).splitlines() if "embedding (on the cluster)" in line]
        assert bar and re.search(r"(\d+)/\1 tasks", bar[-1]), out + err
    a, b = (xr.open_zarr(tmp_path / d / "embeddings.zarr") for d in ("local", "cluster"))
    np.testing.assert_array_equal(a["embedding"].values, b["embedding"].values)  # rcf learnt the same filters
    for table in ("events.parquet", "objects.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "local" / table), pd.read_parquet(tmp_path / "cluster" / table))


def test_the_fit_sample_reads_each_source_chunk_once(textured_cube):
    """The windows of the fit sample share source chunks (and, on a series without a mask, the cloud screen
    of the dates around them): read window by window, a lazy cube on a cluster was read 12 times for them."""
    cube = textured_cube(n_dates=2, size=64, chunks={"time": 1, "y": 64, "x": 64})
    reads = []

    def counted(block, block_info=None):
        reads.append(block_info[0]["chunk-location"])
        return block

    cube = cube.copy(data=cube.data.map_blocks(counted, dtype=cube.dtype))
    stats = np.tile([[0.1, 0.05]], (2, 4, 1))
    with dask.config.set(scheduler="sync"):
        sample = fit_sample(cube, [0, 1, 2, 3], stats, size=32, n_windows=6, seed=0)
    assert sample.shape == (6, 4, 32, 32) and np.isfinite(sample).all()
    assert len(reads) == len(set(reads)) <= 2  # one chunk per date at most, each read once


_READS = []  # chunks read by _counted: a module global, which the in-process workers share (a closure's list is
# copied when distributed serialises the task)


def _counted(block, block_info=None):
    _READS.append(block_info[0]["chunk-location"])
    return block


@pytest.mark.parametrize("cluster_bytes, persisted", [(4 << 30, True), (512 << 10, False)])  # the cube: 197 kB
def test_a_cube_that_fits_the_cluster_is_read_once_there(textured_cube, monkeypatch, cluster_bytes, persisted):
    """On a cluster the cube is persisted on the workers when it takes at most a quarter of their memory
    (statistics, fit sample and windows then read the files once), and stays lazy when it does not."""
    from changescout import embed

    cube = textured_cube(n_dates=3, size=64, chunks={"time": 1, "y": 32, "x": 32})
    _READS.clear()
    cube = cube.copy(data=cube.data.map_blocks(_counted, dtype=cube.dtype))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, memory_limit="4GiB",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        assert embed._cluster_memory(client) == 4 << 30
        monkeypatch.setattr(embed, "_cluster_memory", lambda client: cluster_bytes)
        out = embed._read_once(cube)
        distributed.wait(distributed.futures_of(out.data))  # (none when lazy)
        assert len(_READS) == (cube.data.npartitions if persisted else 0)  # read, and held, on the workers
        np.testing.assert_array_equal(out.values, cube.values)


def test_a_cluster_whose_writes_do_not_reach_the_run_directory_is_named(textured_cube, tmp_path, monkeypatch):
    """Workers that do not see --out at the same path write embeddings.zarr's chunks elsewhere: they read back as
    NaN, and the run blamed the source ("no patch clear enough"; a review). The store is refused, naming why,
    and nothing is left in its place. (One chunk removed after the write stands for the writes that went astray.)"""
    from pathlib import Path

    from changescout.cube import grid_of
    from changescout.embed import embed_cube
    from changescout.encoders import get_encoder
    from changescout.errors import OutputError
    from changescout.tiling import PatchGrid

    cube = textured_cube(n_dates=2, size=64)
    write = xr.Dataset.to_zarr

    def astray(self, store, *args, **kw):
        out = write(self, store, *args, **kw)

        def lose(_):  # once the chunks are written
            next(p for p in Path(store).glob("embedding/*") if p.name[0].isdigit()).unlink()
        return dask.delayed(lose)(out) if kw.get("compute", True) is False else (lose(out), out)[1]

    monkeypatch.setattr(xr.Dataset, "to_zarr", astray)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        with pytest.raises(OutputError, match=r"the dask workers' writes did not reach it \(embedding: chunk .* missing\): the "
                                              r"workers must see the run directory at the same path"):
            embed_cube(cube, get_encoder("rcf", patch_size=16, dim=8), PatchGrid(grid_of(cube), 16),
                       tmp_path / "embeddings.zarr", "s")
    assert list(tmp_path.iterdir()) == []


def test_workers_that_do_not_see_the_run_directory_or_the_source_are_told_before_any_work(tmp_path, monkeypatch):
    """Workers without this machine's file system computed the whole embedding, wrote it to their own disks (left
    there) and only then was the run refused; a source only this machine has was named as "does not exist" (a
    scale review). Both are told first, naming the workers, and the probe leaves nothing behind."""
    from changescout.errors import ConfigError
    from changescout.scheduler import _exist, check_workers_see

    src = tmp_path / "series"
    src.mkdir()
    out = tmp_path / "runs" / "r1"  # not made yet: its nearest folder is probed

    class Elsewhere:  # worker w1 sees only the paths ``theirs`` gives; w2 is this machine
        def __init__(self, theirs):
            self.theirs = theirs

        def run(self, fn, paths):
            assert fn is _exist
            return {"tcp://w1:1": [self.theirs(p) for p in paths], "tcp://w2:2": fn(paths)}

    with pytest.raises(ConfigError, match=rf"the dask worker\(s\) tcp://w1:1 do not see the run directory's folder "
                                          rf"{tmp_path} at this machine's path: .*a shared file system"):
        check_workers_see(Elsewhere(lambda p: p == str(src)), out, src)
    with pytest.raises(ConfigError, match=rf"tcp://w1:1 do not see the source {src} at this machine's path"):
        check_workers_see(Elsewhere(lambda p: p != str(src)), out, src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]  # (the probe file is gone)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        check_workers_see(client, out, src)  # workers of this machine see its files
        check_workers_see(client, out, "synthetic")  # (a built-in source: no path to see)


def _local_compute_still_works():
    """After a refused address, the process computes locally as before: distributed made its half-made client
    the default (and dask's scheduler) before the handshake, and every later compute waited on it."""
    import dask
    import dask.array as da

    from changescout.scheduler import default_client

    assert default_client() is None and dask.config.get("scheduler", None) is None
    assert float(da.ones(10, chunks=5).sum().compute()) == 10


def test_an_open_port_that_is_no_scheduler_is_refused_after_the_wait():
    """A server that accepts the connection and never answers dask's handshake (another service on the port)
    held `--scheduler` for ever: distributed's timeout bounds the connection only (UAT: still waiting at 90 s)."""
    import socket
    import time

    from changescout.errors import ConfigError
    from changescout.scheduler import connect

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ConfigError, match="no dask scheduler answered at .* within 2 s"):
            connect(address, wait=2)
        assert time.monotonic() - start < 10
    _local_compute_still_works()


def test_a_server_that_greets_first_is_named_as_no_scheduler():
    """An SSH-like server (its banner read as the size of a dask frame) was reported as "cannot connect ...:
    Unable to allocate 2.82 EiB for an array"."""
    import contextlib
    import socket
    import threading

    from changescout.errors import ConfigError
    from changescout.scheduler import connect

    def greet(server):
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        threading.Thread(target=greet, args=(server,), daemon=True).start()
        with pytest.raises(ConfigError, match="but not a dask scheduler") as told:
            connect(f"tcp://127.0.0.1:{server.getsockname()[1]}", wait=20)
        assert "allocate" not in str(told.value)
    _local_compute_still_works()


def test_a_cluster_without_workers_is_told_once_and_when_they_are_back():
    """And one whose workers are all paused (over their memory limit) is told so: a run on 500 MB workers
    waited 11 minutes without a word (a review). A connection lost is told at once: dask went on on local
    threads, and the run finished there without a word."""
    import time

    from changescout.scheduler import WorkerWatch

    class Cluster:
        workers, status = {}, "running"

        def scheduler_info(self):
            return {"workers": self.workers}

    cluster, said = Cluster(), []
    with WorkerWatch(cluster, "tcp://h:8786", said.append, grace=0.2, every=0.05):
        time.sleep(0.6)
        cluster.workers = {"tcp://w:1": {"status": "running"}}
        time.sleep(0.3)
        cluster.workers = {"tcp://w:1": {"status": "paused"}, "tcp://w:2": {"status": "paused"}}
        time.sleep(0.6)
        cluster.status = "closed"
        time.sleep(0.3)
    assert len(said) == 4, said
    assert said[0].startswith("warning: the dask cluster at tcp://h:8786 has had no worker for 0.2 s") and "a rerun resumes" in said[0]
    assert said[1] == "the dask cluster at tcp://h:8786 has 1 working worker(s) again"
    assert said[2].startswith("warning: the dask cluster at tcp://h:8786 has had its 2 worker(s) paused (over their memory "
                              "limit: give them more memory) for 0.2 s")
    assert said[3].startswith("warning: lost the dask cluster at tcp://h:8786: the run goes on on this machine's threads")


def test_dask_advice_on_large_graphs_is_not_shown_to_the_user():
    """A `run synthetic --scheduler` printed distributed's "Sending large graph of size 60.01 MiB" and its advice
    to developers among the run's own lines."""
    import warnings

    from changescout.scheduler import quiet_logs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_logs()
        warnings.warn("Sending large graph of size 60.01 MiB. This may cause some slowdown.", UserWarning)
        warnings.warn("another warning", UserWarning)
    assert [str(w.message) for w in caught] == ["another warning"]


def test_tasks_distributed_leaves_behind_on_ctrl_c_are_not_told_as_tracebacks(caplog):
    """Ctrl-C of a --scheduler run printed two "Task exception was never retrieved ... AllExit" tracebacks (the
    gathers distributed left behind) before the run's one-line message."""
    import asyncio
    import gc
    import logging

    from changescout.scheduler import quiet_logs

    async def gather():
        raise RuntimeError("AllExit")

    def leave_one_behind():
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(gather())
            loop.run_until_complete(asyncio.sleep(0))  # it runs and fails; nobody asks for its result
            del task
            gc.collect()
        finally:
            loop.close()

    told = logging.getLogger("asyncio")
    level = told.level
    told.setLevel(logging.NOTSET)  # (as a run starts: an earlier test may have quieted it)
    try:
        with caplog.at_level(logging.ERROR):
            leave_one_behind()
            assert any("never retrieved" in r.getMessage() for r in caplog.records)  # (what the user saw)
            caplog.clear()
            quiet_logs()
            leave_one_behind()
        assert not any("never retrieved" in r.getMessage() for r in caplog.records)
    finally:
        told.setLevel(level)


def test_follow_counts_the_tasks_a_cluster_runs_until_they_are_done():
    """What a cluster run's progress bar is fed with: the tasks of the whole graph, finished out of all."""
    import dask.array as da

    from changescout.scheduler import follow

    seen = []
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            future = client.compute(da.ones((64, 64), chunks=8).map_blocks(lambda b: b + 1).sum())
            follow(future, lambda done, total: seen.append((done, total)), interval="20ms")
            assert future.result() == 2 * 64 * 64
    done, total = zip(*seen)
    assert total[-1] >= 64 and done[-1] == total[-1]  # 64 blocks made, added to and summed: every task finished
    assert list(done) == sorted(done)
