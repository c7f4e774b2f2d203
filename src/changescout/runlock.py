"""The run directory's lock: one process writes a run directory at a time, and nobody reads it meanwhile.

A run (``changescout run``, ``demo``) holds an exclusive ``flock`` on the directory itself while it writes
it; ``similar`` and ``export`` hold a shared one while they read it. Every file of a run is replaced
atomically, but a reader could still pair the events table of one run with the change vectors of the next
(``run --overwrite`` on the directory being searched) and answer with another run's changes; so a reader
finding the run being written, or a run finding it being read, stops at once with a message (exit 2)
instead of waiting. The locks are POSIX advisory locks, released when the holder ends or dies. On a file
system without ``flock`` (Lustre without ``-o flock``, some NFS) and on Windows they are not taken: a run
warns that it is unguarded, a reader goes on.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from .errors import RunExistsError

try:
    import fcntl
except ImportError:  # Windows: no run directory locks
    fcntl = None

BUSY = (errno.EWOULDBLOCK, errno.EAGAIN)


def acquire(path: str | os.PathLike, exclusive: bool, log=None) -> int | None:
    """Lock the directory ``path`` (exclusive: a run writing it; shared: a reader) without waiting; the
    open descriptor that holds the lock, to give to :func:`release`, or None where locks are not supported.

    Raises :class:`~changescout.errors.RunExistsError` (exit 2) when another process holds a lock that
    excludes this one, and ``OSError`` when the directory cannot be opened."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in BUSY:
            if exclusive:
                raise RunExistsError("another changescout process is writing or reading this run directory (a run, or "
                                     "similar/export); wait for it to finish or choose another --out", path) from None
            raise RunExistsError("a changescout run is writing this run directory; wait for it to finish", path) from None
        if exclusive and log is not None:  # no flock here: run, unguarded, as on Windows
            log(f"warning: {path} cannot be locked ({exc.strerror or exc}); do not start a second run on the "
                "same --out while this one writes it")
        return None
    return fd


def release(fd: int | None) -> None:
    """Give back a lock taken by :func:`acquire`."""
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def reading(path: str | os.PathLike):
    """Hold a shared lock on the run directory ``path`` while its outputs are read (nothing happens when
    ``path`` is not a directory: the reader's own checks then name what is missing)."""
    try:
        fd = acquire(path, exclusive=False) if Path(path).is_dir() else None
    except OSError:  # unreadable: the reader's own error says so
        fd = None
    try:
        yield
    finally:
        release(fd)
