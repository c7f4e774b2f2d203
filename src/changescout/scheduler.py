"""Running on a dask.distributed cluster (``--scheduler ADDRESS``): connecting, watching it, losing it.

A run hands its dask work to the cluster's scheduler; what can go wrong there is told in one line, not in a
page of distributed's tracebacks:

* an address where nothing answers as a dask scheduler (a closed port, another server on an open one: the
  handshake then waits for ever) is refused after ``wait`` seconds (:func:`connect`, a ConfigError, exit 2);
* a cluster without workers holds the run's tasks until one joins: the run says so after ``grace`` seconds
  (:class:`WorkerWatch`), and goes on waiting (an autoscaler may be starting some);
* a scheduler lost during the run ends it with a :class:`~changescout.errors.ClusterError` (exit 1) that says
  the finished stages are kept and a rerun resumes (:func:`lost`);
* workers that do not see the run directory or the source at this machine's paths (no shared file system) are
  told before any work (:func:`check_workers_see`, exit 2): the whole embedding was computed, written to the
  workers' own disks, left there, and only then refused (a review).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
import warnings
from concurrent.futures import CancelledError
from pathlib import Path

from .errors import ClusterError, ConfigError


def connect(address: str, wait: float = 45.0):
    """A ``distributed.Client`` of the scheduler at ``address``, or a ConfigError when none answers within
    ``wait`` seconds. (The connection is made in a daemon thread: ``Client(timeout=...)`` bounds the TCP
    connection, not the handshake that an open port of another server never completes.)"""
    try:
        from distributed import Client
    except ImportError as exc:
        raise ConfigError("--scheduler needs the distributed extra: pip install 'changescout[distributed]'") from exc
    box: dict = {"before": default_client()}

    def attempt():
        try:
            box["client"] = Client(address, timeout=min(wait, 30.0))
        except Exception as exc:  # noqa: BLE001 - told below, whatever distributed raised
            box["error"] = exc

    thread = threading.Thread(target=attempt, name="changescout-connect", daemon=True)
    thread.start()
    thread.join(wait)
    hint = "Check the address (tcp://HOST:PORT) and that the scheduler is running"
    if "client" in box:
        return box["client"]
    error = box.get("error")  # (read first: closing a client that still waits makes its thread fail)
    _forget_half_made(box["before"])
    if isinstance(error, (MemoryError, OverflowError)):  # a server that speaks first: its greeting read as a frame's size
        raise ConfigError(f"something answers at {address!r}, but not a dask scheduler (its reply is not dask's "
                          f"protocol). {hint}") from error
    if error is not None:
        raise ConfigError(f"cannot connect to the dask scheduler at {address!r}: {error}. {hint}") from error
    raise ConfigError(f"no dask scheduler answered at {address!r} within {wait:g} s (something listens there, "
                      f"but not a dask scheduler). {hint}")


def default_client():
    """The process' default ``distributed.Client`` (the one dask computes on), or None (none, or no distributed)."""
    try:
        from distributed import default_client as default
    except ImportError:
        return None
    try:
        return default()
    except ValueError:
        return None


def _forget_half_made(before) -> None:
    """distributed makes a client the process' default (and dask's scheduler) before its handshake: one that
    failed or still waits would take every later compute of a library caller who goes on locally. Close it."""
    client = default_client()
    if client is not None and client is not before:
        with contextlib.suppress(Exception):
            client.close(timeout=2)


class WorkerWatch:
    """While a run lasts (a context manager), check every ``every`` seconds that the cluster has a worker that
    works, and ``log`` a warning once it has had none for ``grace`` seconds (and again when one is back): no
    worker at all, or every worker paused (over its memory limit: a worker of 500 MB holds torch and little
    else, and the run waited 11 minutes without a word; a review). And when the connection to the scheduler is
    lost between two computations, say so at once: dask then computes on this machine's threads, and the run
    went on there for the rest of its work without a word (a review)."""

    def __init__(self, client, address: str, log, grace: float = 60.0, every: float = 5.0):
        self.client, self.address, self.log, self.grace, self.every = client, address, log, grace, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="changescout-workers", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(self.every + 1)

    def _watch(self):
        since, warned = None, False
        while not self._stop.wait(self.every):
            if getattr(self.client, "status", "running") not in ("running", "connecting"):
                self.log(f"warning: lost the dask cluster at {self.address}: the run goes on on this machine's threads "
                         "(Ctrl-C stops it; the same command with --scheduler then resumes the finished stages on a cluster)")
                return
            try:
                workers = self.client.scheduler_info().get("workers", {})
            except Exception:  # noqa: BLE001 - the scheduler itself is gone: the run's own error tells it
                return
            working = sum(1 for w in workers.values() if w.get("status", "running") == "running")
            if working:
                if warned:
                    self.log(f"the dask cluster at {self.address} has {working} working worker(s) again")
                since, warned = None, False
            elif since is None:
                since = time.monotonic()
            elif not warned and time.monotonic() - since >= self.grace:
                what = (f"had its {len(workers)} worker(s) paused (over their memory limit: give them more memory)"
                        if workers else "had no worker")
                self.log(f"warning: the dask cluster at {self.address} has {what} for {self.grace:g} s; the run "
                         "waits for one (start workers, or Ctrl-C: a rerun resumes the finished stages)")
                warned = True


def follow(future, update, interval: str = "250ms") -> None:
    """Call ``update(done, total)`` with the number of tasks of the computation behind ``future`` (its whole
    graph, as the scheduler counts them) that are finished, until it ends (finished, failed, or the scheduler
    gone); blocking. What a progress bar of a cluster run is fed with: dask's local callbacks, which feed a
    run on this machine's threads, see nothing of the tasks a cluster runs."""
    from distributed.diagnostics.progressbar import ProgressBar
    from distributed.utils import LoopRunner

    class _Bar(ProgressBar):
        def _draw_bar(self, remaining, all, **kwargs):
            update(all - remaining, all)

    bar = _Bar([future], interval=interval)
    LoopRunner().run_sync(bar.listen)


def lost(exc: BaseException, client, address: str) -> ClusterError | None:
    """The error to raise instead of ``exc`` when it says that the cluster went away (the scheduler stopped, the
    connection dropped), or None when it is an error of the run itself."""
    try:
        from distributed.comm.core import CommClosedError
    except ImportError:  # (a stand-in for distributed, in tests)
        CommClosedError = CancelledError
    gone = getattr(client, "status", "running") not in ("running", "connecting")
    if isinstance(exc, (CancelledError, CommClosedError)) or gone:
        why = (str(exc).strip().splitlines() or [""])[0]
        return ClusterError(f"lost the dask cluster at {address} ({type(exc).__name__}: {why}); the finished stages "
                            "are kept: rerun the same command (with or without --scheduler) to resume")
    return None


def quiet_logs() -> None:
    """distributed logs a lost connection (and Ctrl-C) as pages of tracebacks; the run says it in one line. Its advice on a
    large task graph (an in-memory source, such as a synthetic series, travels in the graph) is for whoever
    writes the graph, not for the user: not shown."""
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("distributed", "tornado")]
    # (asyncio: on Ctrl-C, distributed's gathers left behind were told as "Task exception was never retrieved"
    # tracebacks before the run's own line)
    for name in ["distributed", "tornado", "asyncio", *names]:  # distributed sets some of its loggers' levels itself
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)


def _exist(paths: list[str]) -> list[bool]:
    """Which of ``paths`` exist where this runs (on each worker: :func:`check_workers_see`)."""
    return [os.path.exists(p) for p in paths]


def check_workers_see(client, run_dir, source=None) -> None:
    """A ConfigError naming the workers that do not see the run directory's folder (a file this process writes
    there for a moment) or the ``source`` (a local path) at the same paths as this process: the workers read
    the source and write the embeddings' chunks, so they need this machine's file system (a shared one).
    Workers that cannot be asked are not told off here."""
    folder = Path(run_dir).absolute()
    while not folder.is_dir() and folder != folder.parent:  # (--out is made by the run: its nearest folder)
        folder = folder.parent
    marker = folder / f".changescout-probe-{uuid.uuid4().hex}"
    paths, what = [], []
    with contextlib.suppress(OSError):  # (a folder this process cannot write to fails the run on its own terms)
        marker.touch()
        paths.append(str(marker))
        what.append(f"the run directory's folder {folder}")
    if source is not None and "://" not in str(source) and os.path.exists(source):
        paths.append(os.path.abspath(source))
        what.append(f"the source {os.path.abspath(source)}")
    try:
        seen = client.run(_exist, paths) if paths else {}
    except Exception:  # noqa: BLE001 - no worker to ask, or one gone: the run's own errors tell it
        seen = {}
    finally:
        with contextlib.suppress(OSError):
            marker.unlink()
    for i, thing in enumerate(what):
        blind = sorted(w for w, found in seen.items() if not found[i])
        if blind:
            raise ConfigError(f"the dask worker(s) {', '.join(blind[:3])}{' ...' if len(blind) > 3 else ''} do not see "
                              f"{thing} at this machine's path: the workers read the source and write the run directory, "
                              "so they need this machine's files at the same paths (a shared file system), or run "
                              "without --scheduler")
