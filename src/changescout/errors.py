"""One exception hierarchy for changescout.

Library code raises these; the CLI maps :class:`InputError` (and subclasses) to exit code 2 and any
other :class:`ChangescoutError` to exit code 1. Messages say what was expected, what was given, and the fix.
"""

from __future__ import annotations

import os


class ChangescoutError(Exception):
    """Base class of every error changescout raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class NetworkError(ChangescoutError):
    """A file read over the network (a STAC asset's URL) could not be read during a run, after its header was:
    not bad input, so the run is kept and the same command resumes it. Exit code 1."""


class InputError(ChangescoutError):
    """Bad input given by the user: a file, an option, a band list. Exit code 2."""

    exit_code = 2


class SourceError(InputError):
    """An input raster, cube or folder cannot be read as a series."""


class GridError(InputError):
    """The output grid cannot be built, or a location falls outside it."""


class BandError(InputError):
    """The bands of a cube do not fit what a stage expects."""


class ConfigError(InputError):
    """A configuration value or file is invalid."""


def check_param(owner: str | None, name: str, value, lo: float, hi: float | None = None, integer: bool = False,
                lo_open: bool = False) -> float | int:
    """``value`` as an int (``integer``) or a float, or a :class:`ConfigError` naming ``owner``'s parameter ``name``
    unless it is a finite number (a whole one with ``integer``) in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``).
    Estimators check their parameters when they are used, so that a value given to ``set_params`` is checked
    too; a run's configuration checks its values with it before it starts."""
    import math
    import numbers

    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (not integer or float(value).is_integer()) and (lo < value if lo_open else lo <= value)
    if not (ok and (hi is None or value <= hi)):
        span = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
        raise ConfigError(f"{owner + ': ' if owner else ''}{name} must be {'a whole number' if integer else 'a number'} "
                          f"in {span}, got {value!r}")
    return int(value) if integer else float(value)


class RunExistsError(InputError):
    """The run directory holds a run made with another configuration and --overwrite was not given."""


class OutputError(InputError):
    """The run directory (``--out``) cannot be created or written."""


class RunNotFoundError(InputError):
    """A path given as a run directory is not one, or misses a stage's output."""


class IncompatibleRunsError(InputError):
    """Two runs whose change vectors cannot be compared (encoder, weights, patch size, normalisation)."""


class EventNotFoundError(InputError):
    """An event id or location does not match any event of the run."""


class WeightsError(InputError):
    """Encoder weights are missing, unreadable or do not match their expected checksum."""


class EncoderNotFoundError(InputError):
    """No encoder is registered under the given name."""


class EncoderOutputError(InputError):
    """An encoder returned embeddings that break its contract: another shape than its spec says, or values that
    are not finite (a plugin's bug, named before it reads as missing data)."""


class ClusterError(ChangescoutError):
    """The dask.distributed cluster of ``--scheduler`` went away during a run (exit 1; a rerun resumes)."""


def check_columns(table, columns, what: str) -> None:
    """:class:`ConfigError` naming the ``columns`` that ``table`` lacks (``what`` names the caller)."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ConfigError(f"{what} needs the columns {', '.join(columns)}; missing: {', '.join(missing)}")


def check_options(func, options: dict, what: str) -> None:
    """:class:`ConfigError` when ``options`` holds keywords that ``func`` does not take (``what`` names the
    callable for the message, e.g. ``"encoder 'rcf'"``); a function taking ``**kwargs`` takes any."""
    import inspect

    params = inspect.signature(func).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in ("self", "path")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"{what} takes no option {', '.join(map(repr, unknown))}; its options: {', '.join(known)}")
