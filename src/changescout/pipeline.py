"""A run: the stages from a source to the ranked events, in a run directory that can be resumed.

Run directory: ``config.json`` (fully resolved configuration, input file hashes, versions; its hash decides
whether a rerun resumes), ``state.json`` (per-stage status and timings), ``embeddings.zarr``,
``changes.zarr``, ``events.parquet``, ``clusters.parquet``, ``index.faiss``, ``maps/``, ``quicklooks/``,
``report.html``. A rerun with the same configuration skips finished stages; with another configuration it
raises :class:`RunExistsError` unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr

from . import __version__, runlock
from .atomic import write_json
from .change import Comparison, compute_changes, read_changes, read_vectors, write_changes
from .cluster import ChangeClusterer, cluster_table, write_clusters
from .coregister import MODES as COREGISTER_MODES, coregister, coregister_notes
from .cube import crs_unit, grid_of, on_earth
from .describe import describe_objects, unread_bands
from .embed import embed_cube, embedding_grid, open_embeddings
from .encoders import encoder_class, get_encoder
from .encoders.base import level_note, select_bands, sha256_file
from .errors import BandError, ConfigError, InputError, OutputError, RunExistsError, RunNotFoundError, check_param
from .events import COLUMNS, REPLACED, write_events
from .intact import OWN_FILES, objects_problem, problem
from .objects import ObjectRanker, change_states, object_geometries, write_objects
from .quality import BLUE, GREEN, NIR, RED, find_bands
from .radiometry import NORMALISATION_MODES, OFFSET_MODES, RADIANCE_RULE, apply_offsets, implausible_dates, normalise_dates
from .rank import AtypicalityRanker
from .search import SimilarChangeIndex, compatibility
from .snow import MODES as SNOW_MODES, screen_snow
from .spectral import spectral_scores
from .sources.geotiff import is_run_dir
from .sources.pairs import has_placeholder_dates
from .tiling import MAX_LABEL, PatchGrid, event_ids, series_id

STAGES = ("embed", "changes", "rank", "outputs")
#: --config cloud_screen: screen a series without a quality mask (auto), always (hot), or not at all.
CLOUD_MODES = ("auto", "hot", "off")
#: Largest patch in pixels (1.3 km at 10 m, 3.8 km at 30 m).
MAX_PATCH = 128
RUN_FILES = ("config.json", "state.json", "embeddings.zarr", "changes.zarr", "events.parquet", "clusters.parquet",
             "objects.parquet", "index.faiss", "maps", "quicklooks", "report.html", "rcf_weights.npz",
             *(f"{t}.{f}" for t in ("events", "objects") for f in ("gpkg", "geojson", "csv")))  # `changescout export`
#: What the rank stage writes: a rerun redoes the stage when one of them is missing or unreadable.
RANK_FILES = ("events.parquet", "objects.parquet", "clusters.parquet", "index.faiss")
#: What the outputs stage writes, likewise.
OUTPUT_FILES = ("maps", "quicklooks", "report.html")
#: Each stage's outputs (:func:`stages_to_run` checks them before a rerun skips the stage).
STAGE_FILES = {"embed": ("embeddings.zarr",), "changes": ("changes.zarr",), "rank": RANK_FILES, "outputs": OUTPUT_FILES}
#: The mark of a run wholly set aside in .replaced/ by --overwrite
SET_ASIDE = ".complete"
#: Names that only a killed run leaves behind: atomic_path's temporaries and trash, a discarded run's folder.
LEFTOVER = re.compile(r"\..+\.(tmp|old)-[0-9a-f]{8}(\.[^.]+)?|\.discarded-\d+")
RANK_BY = ("combined", "rarity", "magnitude")


#: The largest --seed: scikit-learn's and NumPy's legacy seeds are 32-bit.
MAX_SEED = 2**32 - 1


@dataclass
class RunConfig:
    """Everything that decides a run's results (hashed into config.json)."""

    source: str
    kind: str | None = None
    dates: list[str] | None = None
    bands: list[str] | None = None
    grid: str | None = None
    mask: str | None = None
    mask_convention: str | None = None
    source_options: dict = field(default_factory=dict)
    encoder: str = "rcf"
    weights: str | None = None
    patch_size: int = 16
    encoder_options: dict = field(default_factory=dict)
    compare: str = "consecutive"
    min_clear: float = 0.75
    cloud_screen: str = "auto"
    snow_screen: str = "auto"
    radiometry: str = "auto"
    coregister: str = "auto"
    date_normalisation: str = "off"
    n_clusters: int | str = "auto"
    rank_by: str = "combined"
    transient_weight: float = 0.2
    seasonal_weight: float = 0.5
    seed: int = 0
    label: str | None = None
    report_top: int = 20

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        if "scheduler" in d:  # where to compute, which a --config file may name, but no setting of the run's
            raise ConfigError(f"'scheduler' ({d['scheduler']!r}) says where a run computes, not what it computes: "
                              "changescout run reads it from --config or --scheduler; in Python, connect "
                              "distributed.Client(address) before run_pipeline (dask then computes on that cluster), and "
                              "leave the key out of RunConfig")
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown configuration keys {unknown}; known: {sorted(names)} (and, in a --config file, "
                              "'scheduler')")
        if "source" not in d:
            raise ConfigError("the configuration needs a 'source'")
        return cls(**d).validate()

    def validate(self) -> "RunConfig":
        """Check (and normalise: numpy numbers, whole floats, ``"8"`` clusters, comma-separated text, paths of
        files and folders that exist made absolute) the values a run only uses after hours of embedding, before it
        starts (ConfigError)."""
        def number(name, lo, hi, integer=False, lo_open=False):
            setattr(self, name, check_param(None, _option(name), getattr(self, name), lo, hi, integer, lo_open))
        for name in ("source", "kind", "grid", "mask", "mask_convention", "encoder", "weights", "compare", "cloud_screen",
                     "snow_screen", "radiometry", "coregister", "date_normalisation", "rank_by", "label"):
            v = getattr(self, name)
            if not (isinstance(v, (str, os.PathLike)) or (v is None and name not in ("source", "encoder"))):
                raise ConfigError(f"{_option(name)} must be text, got {v!r}")
        # data/x, ./data/x/ and /abs/data/x are one run, from any folder, and a run made in Python is the command
        # line's (a review); the demo's source "synthetic" is no folder of that name
        for name in ("source", "mask", "weights"):
            if getattr(self, name) is not None and not (name == "source" and self.kind == "synthetic"):
                setattr(self, name, resolved_path(getattr(self, name)))
        if self.label is not None and len(str(self.label)) > MAX_LABEL:  # (cut short, ids would not carry what was asked)
            raise ConfigError(f"label has {len(str(self.label))} characters; it begins every event id and may have at most "
                              f"{MAX_LABEL}: {str(self.label)!r}")
        if self.grid is not None:  # one spelling, checked before the run starts (a typo found after hours of embedding)
            from .sources.warp import GridSpec, grid_text

            self.grid = grid_text(GridSpec.parse(self.grid))
        number("min_clear", 0, 1, lo_open=True)
        number("patch_size", 1, MAX_PATCH, integer=True)  # (rcf learns its filters from windows of 128 px)
        number("transient_weight", 0, 1)
        number("seasonal_weight", 0, 1)
        number("seed", 0, MAX_SEED, integer=True)  # (scikit-learn's random_state: past it, a run failed after embedding)
        number("report_top", 1, None, integer=True)
        if isinstance(self.n_clusters, str) and self.n_clusters.strip().isdigit():
            self.n_clusters = int(self.n_clusters)
        if self.n_clusters != "auto":
            number("n_clusters", 1, None, integer=True)
        from .sources.masks import CONVENTIONS

        if self.mask_convention is not None and str(self.mask_convention).lower() not in CONVENTIONS:
            raise ConfigError(f"{_option('mask_convention')} must be one of {', '.join(CONVENTIONS)}, got {self.mask_convention!r}")
        if self.rank_by not in RANK_BY:
            raise ConfigError(f"{_option('rank_by')} must be one of {', '.join(RANK_BY)}, got {self.rank_by!r}")
        if self.snow_screen not in SNOW_MODES:
            raise ConfigError(f"snow_screen must be {' or '.join(SNOW_MODES)}, got {self.snow_screen!r}")
        # (each was checked by its stage only, after the source was read, or after a --scheduler had answered)
        for name, modes in (("cloud_screen", CLOUD_MODES), ("coregister", COREGISTER_MODES), ("radiometry", OFFSET_MODES),
                            ("date_normalisation", NORMALISATION_MODES)):
            if getattr(self, name) not in modes:
                raise ConfigError(f"{_option(name)} must be one of {', '.join(modes)}, got {getattr(self, name)!r}")
        Comparison.parse(self.compare)
        for name in ("source_options", "encoder_options"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a mapping of option names to values, got {getattr(self, name)!r}")
        asked = self.encoder_options.get("patch_size", self.patch_size)
        if asked != self.patch_size:  # (the embedding stage told it by neither name: a review)
            raise ConfigError(f"encoder_options patch_size ({asked!r}) differs from --patch-size ({self.patch_size}); "
                              "give the patch size once, as --patch-size")
        for name in ("dates", "bands"):
            v = getattr(self, name)
            if isinstance(v, str):
                v = [t.strip() for t in v.split(",") if t.strip()]
            if v is not None and not isinstance(v, (list, tuple)):
                raise ConfigError(f"{name} must be a list (or comma-separated text), got {v!r}")
            if v is not None:  # dates may be date objects: kept as text, as the command line gives them
                v = [x.isoformat()[:10] if hasattr(x, "isoformat") else str(x) for x in v]
            setattr(self, name, v)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: Options whose effect the resolved configuration records in a section of its own (option: section): the
#: bands and grid read, and the weights' content. They are hashed as resolved, not as typed, so that a rerun
#: spelling out the values a run resolved (``--bands`` as the band descriptions named them, ``--grid`` as the
#: first date set it) or naming a copy of the same weights resumes, while one that resolves otherwise differs in
#: that section. Not ``--dates``: the resolved dates are sorted, and ``--dates`` of a folder gives its images their
#: dates in file order, so two lists of the same dates in other orders resolve alike but date other images (a
#: review: such a rerun resumed the first run's results).
RESOLVED_OPTIONS = {"bands": "bands", "grid": "grid", "weights": "weights_sha256"}


def resolved_path(path) -> str:
    """A path as the configuration keeps it: an existing one made absolute, anything else (synthetic:..., a URL)
    as given."""
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def _as_hashed(resolved: dict) -> dict:
    """``resolved`` less the options :data:`RESOLVED_OPTIONS` records as resolved (where it has their section)."""
    config = dict(resolved.get("config") or {})
    for option, section in RESOLVED_OPTIONS.items():
        if section in resolved:
            config.pop(option, None)
    return {**resolved, "config": config}


def config_digest(resolved: dict) -> str:
    """The ``config_hash`` of a resolved configuration (what config.json holds): runs of equal digests resume
    each other."""
    return hashlib.sha256(json.dumps(_as_hashed(resolved), sort_keys=True, default=str).encode()).hexdigest()


def _differences(old: dict, new: dict) -> list[str]:
    """The settings in which a run directory's ``config.json`` (``old``) and a new resolved configuration differ:
    configuration keys by name, the rest (``inputs``: the input files' hashes, ``grid``, ``dates``...) by section
    (an option of :data:`RESOLVED_OPTIONS` by its section, as hashed)."""
    old, new = _as_hashed(old), _as_hashed(json.loads(json.dumps(new, default=str)))
    out = []
    for key in sorted((set(old) | set(new)) - {"config_hash", "versions"}):
        a, b = old.get(key), new.get(key)
        if key == "config" and isinstance(a, dict) and isinstance(b, dict):
            out += [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(_SECTIONS.get(key, key))
    return list(dict.fromkeys(out))  # an option and what it resolved to (bands, dates) are named once


#: How the resolved sections of config.json are named when a run directory holds another run.
_SECTIONS = {"inputs": "input files", "series": "series id", "comparison": "compare", "changescout": "changescout version"}


def _versions() -> dict:
    """The versions of what computes and writes a run (the libraries that write its files too)."""
    import dask
    import faiss
    import geopandas
    import pyarrow
    import pyogrio
    import rasterio
    import shapely
    import sklearn
    import torch
    import xarray
    import zarr

    return {"changescout": __version__, "numpy": np.__version__, "xarray": xarray.__version__, "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__,
            "faiss": faiss.__version__, "dask": dask.__version__, "zarr": zarr.__version__, "geopandas": geopandas.__version__,
            "pyarrow": pyarrow.__version__, "pyogrio": pyogrio.__version__, "shapely": shapely.__version__}


class Run:
    """A run directory: configuration check, resume, per-stage state."""

    def __init__(self, out: Path, config: RunConfig, overwrite: bool = False, log=print):
        self.out = Path(out)
        self.config = config
        self.overwrite = overwrite
        self.log = log
        self.state = {"stages": {}}

    def prepare(self, inputs: dict, extra: dict) -> None:
        # the code's version belongs to the configuration: a run made by another version (other embeddings, another
        # cloud screen) is not resumed, it exits 2 unless --overwrite
        resolved = {"config": self.config.to_dict(), "inputs": inputs, **extra, "changescout": __version__}
        digest = config_digest(resolved)
        cfg_path = self.out / "config.json"
        self.created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unwritable(exc) from exc
        # locked before anything in it is read or changed: a second process refused here has touched nothing
        # (two runs racing for a new --out both create it; the loser must not tidy away the winner's files)
        self._lock()
        self._recover()
        self._take_back(digest)
        if cfg_path.exists():
            damaged = False
            try:
                old = _read_json(cfg_path, "use --overwrite to replace the run, or choose another --out")
            except RunExistsError:
                if not self.overwrite or not _is_run_state(self.out / "state.json"):  # a run's, cut short or edited
                    raise
                old, damaged = {}, True  # replaced as a run of another configuration
            if not damaged and not _is_run_record(old):
                raise RunExistsError("holds a config.json that changescout did not write (no config_hash and version): it "
                                     "is not a run directory, and --overwrite replaces runs only; choose an empty or new --out",
                                     self.out)
            if old.get("config_hash") == digest:
                state_path = self.out / "state.json"
                redo = "delete it and rerun to redo the run's stages"
                self.state = _read_json(state_path, redo) if state_path.exists() else {"stages": {}}
                if not isinstance(self.state.get("stages"), dict) or not all(isinstance(v, dict) for v in self.state["stages"].values()):
                    raise RunExistsError(f"is not a changescout run state (no stages); {redo}", state_path)
                self.resumed = True
                self._sweep()
                return
            if not self.overwrite:
                made_by = old.get("versions", {}).get("changescout")
                what = (f"was made by changescout {made_by} (this is {__version__}), whose results may differ"
                        if made_by != __version__ else
                        f"holds a run made with another configuration (what differs: {', '.join(_differences(old, resolved)) or 'its hash'})")
                raise RunExistsError(f"{what}; use --overwrite to replace it or choose another --out", self.out)
            self.touched = True
            self._set_aside()
            self._sweep()
        elif any(not LEFTOVER.fullmatch(p.name) for p in self.out.iterdir()):
            run_like = [n for n in RUN_FILES if (self.out / n).exists()]
            hint = (f" (it holds {', '.join(run_like[:3])}{', ...' if len(run_like) > 3 else ''} but no config.json: a run "
                    "whose configuration was deleted cannot be resumed)" if run_like else "")
            raise RunExistsError(f"is not empty and is not a changescout run directory{hint}; choose an empty or new --out",
                                 self.out)
        else:  # empty, or what a run killed while it wrote its configuration left
            self._sweep()
        self.touched = True
        self.resumed = False
        try:
            write_json(cfg_path, {**resolved, "config_hash": digest, "versions": _versions()})
            self._save_state()
        except OSError as exc:  # (an immutable folder that the permission bits let through)
            raise self._unwritable(exc) from exc

    def _unwritable(self, exc: OSError) -> OutputError:
        where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != self.out else ""
        return OutputError(f"cannot write the run directory: {exc.strerror or exc}{where}; choose another --out", self.out)

    def _lock(self) -> None:
        """Hold an exclusive lock on the run directory while this process writes it (:mod:`changescout.runlock`):
        a second run on the same ``--out`` is refused instead of resuming, replacing or sweeping the files of
        the first, and so is a run on a directory that ``similar`` or ``export`` is reading."""
        if getattr(self, "_lock_fd", None) is not None:
            return
        try:
            self._lock_fd = runlock.acquire(self.out, exclusive=True, log=self.log)
        except OSError as exc:
            raise self._unwritable(exc) from exc

    def _unlock(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        runlock.release(fd)

    def _sweep(self):
        """Remove what a killed run left half-written (:func:`changescout.atomic.atomic_path`'s temporary names,
        a replaced folder's trash): the run that resumes or replaces it writes them again."""
        for folder in (self.out, self.out / "maps", self.out / "quicklooks"):
            for p in folder.glob(".*") if folder.is_dir() else ():
                if LEFTOVER.fullmatch(p.name):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def _recover(self):
        """A replacement that died before it wrote its configuration left the replaced run aside and nothing
        else: put it back, so that it is the run this directory holds."""
        if (self.out / REPLACED).is_dir() and not (self.out / "config.json").exists():
            self._restore()

    def _take_back(self, digest: str) -> None:
        """An interrupted ``--overwrite`` left the run it replaces aside: when that run is of this very
        configuration (the user went back to its command), it comes back and resumes, instead of being
        made again from nothing and then deleted (failure-injection review)."""
        aside = self.out / REPLACED
        if not self._aside_complete() or not (aside / "config.json").is_file():
            return
        try:
            theirs = json.loads((aside / "config.json").read_text(encoding="utf-8")).get("config_hash")
            mine = json.loads((self.out / "config.json").read_text(encoding="utf-8")).get("config_hash")
        except (OSError, ValueError, AttributeError):
            return
        if theirs == digest != mine and not _finished(self.out / "state.json"):  # (a finished run is not thrown away)
            self.log(f"{self.out}: the run an interrupted --overwrite set aside is of this configuration: it is put back")
            self._restore()

    def _set_aside(self):
        """Move the run being replaced into ``.replaced/``: it comes back if bad input stops the new run
        (:meth:`abandon`) and goes when the new run finishes (:meth:`finish`). When ``.replaced/`` is already
        there, a replacement was killed: once wholly set aside (its ``.complete`` mark), it holds the finished
        run and the unfinished one is discarded; while it was being set aside, the rest of it joins it."""
        aside = self.out / REPLACED
        if self._aside_complete():
            self._discard()
        else:
            self._move_outputs(aside)
            (aside / SET_ASIDE).touch()

    def _aside_complete(self) -> bool:
        """Whether ``.replaced/`` holds the whole run it set aside: its mark, or (set aside by a version
        without the mark) a configuration written in place since, which a replacement writes only then."""
        aside = self.out / REPLACED
        return aside.is_dir() and ((aside / SET_ASIDE).exists() or (self.out / "config.json").exists())

    def _move_outputs(self, folder: Path) -> None:
        """Move the run's files into ``folder``, but not what the new run reads, nor the user's own files in
        ``maps/`` and ``quicklooks/`` (a QGIS style saved beside a map, notes): only the maps and pictures."""
        folder.mkdir(exist_ok=True)
        inputs = self._inputs()
        for name in RUN_FILES:
            p = self.out / name
            # what the new run reads stays (--out A --weights A/rcf_weights.npz --overwrite deleted the weights it
            # was given: other runs' shared embedding space, and the run could not be resumed)
            if not p.exists() or any(q == p.resolve() or p.resolve() in q.parents for q in inputs):
                continue
            if name in OWN_FILES and p.is_dir() and not p.is_symlink():
                own = [q for q in p.iterdir() if OWN_FILES[name].fullmatch(q.name)]
                if len(own) < sum(1 for _ in p.iterdir()) or (folder / name).exists():  # the user's files stay
                    (folder / name).mkdir(exist_ok=True)
                    for q in own:
                        q.replace(folder / name / q.name)
                    continue
            p.replace(folder / name)

    def _inputs(self) -> list[Path]:
        """The files this run reads (source, mask, weights), resolved, and those the run in place read (its
        ``config.json``): an interrupted ``--overwrite`` left the files it read in place, not aside, so they are
        the replaced run's as well; going back to that run's command discarded them with the unfinished run's
        outputs (its rcf_weights.npz, given to the replacement as --weights, was lost: a review)."""
        named = [self.config.to_dict()]
        try:
            named.append(json.loads((self.out / "config.json").read_text(encoding="utf-8"))["config"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return [Path(str(c[k])).resolve() for c in named if isinstance(c, dict) for k in ("source", "mask", "weights") if c.get(k)]

    def _discard(self):
        """Remove this run's outputs: first renamed into one hidden folder (fast, so that an interruption does not
        leave half a run), then deleted."""
        trash = self.out / f".discarded-{os.getpid()}"
        self._move_outputs(trash)
        shutil.rmtree(trash, ignore_errors=True)

    def _restore(self):
        """The run set aside in ``.replaced/`` in place of this directory's outputs (the outputs of the run that
        replaced it discarded; none when it was killed while the old run was being set aside: what is in place
        then is the rest of the old run, and stays)."""
        aside = self.out / REPLACED
        if self._aside_complete():
            self._discard()
        (aside / SET_ASIDE).unlink(missing_ok=True)
        for p in aside.iterdir():
            target = self.out / p.name
            if p.is_dir() and target.is_dir() and p.name in OWN_FILES:  # maps/ that kept the user's files
                for q in p.iterdir():
                    q.replace(target / q.name)
                p.rmdir()
            else:
                p.replace(target)
        aside.rmdir()

    def finish(self) -> None:
        """The replaced run goes, renamed first (one step: a deletion cut short leaves a leftover that the next
        run sweeps, not a ``.replaced/`` that a rerun of the old command would put back over this finished run)."""
        aside = self.out / REPLACED
        if aside.is_dir():
            trash = self.out / f".discarded-{os.getpid()}"
            shutil.rmtree(trash, ignore_errors=True)  # (a name this process may have used, for _discard)
            try:
                aside.replace(trash)
            except OSError:  # (the trash could not be cleared: deleted in place, as before)
                trash = aside
            shutil.rmtree(trash, ignore_errors=True)
        self._unlock()

    def abandon(self, exc: BaseException) -> None:
        """After a failure. Bad input (:class:`InputError`): the replaced run comes back in place of the
        unfinished one, and a new run leaves nothing behind. Any other failure (an interruption, a crash):
        the unfinished run stays, to be resumed by the same command (the replaced run stays aside until then).
        The lock is held until the directory is tidy: another process must not resume it half-restored."""
        try:
            if not getattr(self, "touched", False) or not isinstance(exc, InputError) or not self.out.exists():
                return
            if (self.out / REPLACED).is_dir():
                self._restore()
            elif not getattr(self, "resumed", True):
                self._discard()
                if self.created and not any(self.out.iterdir()):
                    self._unlock()  # the directory goes: nothing left to guard
                    self.out.rmdir()
        except OSError as err:  # the original error matters more
            self.log(f"could not tidy {self.out} after the error: {err}")
        finally:
            self._unlock()

    def done(self, name: str) -> bool:
        return self.state["stages"].get(name, {}).get("status") == "done"

    @contextlib.contextmanager
    def stage(self, name: str):
        info = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.state["stages"][name] = info
        self._save_state()
        t = time.perf_counter()
        try:
            yield info
        except BaseException as exc:  # Ctrl-C or SIGTERM: "interrupted", to be resumed by the same command
            info["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            info["seconds"] = round(time.perf_counter() - t, 3)
            self._save_state()
            raise
        info["status"] = "done"
        info["seconds"] = round(time.perf_counter() - t, 3)
        self._save_state()

    def _save_state(self):
        write_json(self.out / "state.json", self.state)


def open_source(config: RunConfig):
    """The SeriesCube of a run's source, as its configuration reads it (kind, dates, bands, grid, mask...)."""
    from .sources import GridSpec, open_series

    grid = GridSpec.parse(config.grid) if config.grid else None
    return open_series(config.source, kind=config.kind, dates=config.dates, bands=config.bands, grid=grid,
                       patch_size=config.patch_size, mask=config.mask, mask_convention=config.mask_convention,
                       **config.source_options)


def prepare_cube(cube, config: RunConfig, log=None):
    """``(cube, done)``: the series as a run embeds it, and what was done to it. ``cube`` as read (``open_source``,
    then ``radiometry.apply_offsets``), its clouds and snow screened, its dates co-registered and normalised as
    ``config`` says (``cloud_screen``, ``snow_screen``, ``coregister``, ``date_normalisation``); ``done``: the
    co-registration's and the normalisation's records (``{"coregister": ..., "normalisation": ...}``, as
    state.json keeps them). ``log``: where warnings go (a callable taking a line; default ``warnings.warn``)."""
    cube = screen_snow(screen_clouds(cube, config.cloud_screen, log), config.snow_screen)
    cube, coreg = coregister(cube, config.coregister)
    cube, norm = normalise_dates(cube, config.date_normalisation, reference=coreg.get("reference", "clearest"))
    return cube, {"coregister": coreg, "normalisation": norm}


def screen_clouds(cube, mode: str, log=None):
    """``auto``: flag haze and clouds spectrally when the source gave no quality mask and the series has at least
    three dates (in a pair, a cloud cannot be told from a change, and bright top-of-atmosphere or 8-bit RGB
    scenes trip the HOT threshold); ``hot``: always; ``off``: never. The screen finds the blue and red bands
    by name: ``hot`` without them is a :class:`ConfigError`, ``auto`` says (``log``) that clouds go unscreened.
    The returned cube's ``cloud_screen`` attribute holds the rule applied, or why none was (``"none: ..."``):
    config.json and the report show it."""
    from .quality import BLUE, RED, can_screen, screen_haze

    if mode not in CLOUD_MODES:
        raise ConfigError(f"cloud_screen must be one of {', '.join(CLOUD_MODES)}, got {mode!r}")

    def unscreened(why: str):  # recorded in config.json and the report: the analyst sees how clouds were handled
        out = cube.copy()
        out.attrs = {**cube.attrs, "cloud_screen": f"none: {why}"}
        return out

    if mode == "off":
        return unscreened("turned off (cloud_screen off; a quality mask from the source still applies)")
    if mode == "auto" and cube.attrs.get("embedding_bands"):
        return unscreened("the series' bands are embeddings made elsewhere, not reflectance")
    if mode == "auto" and cube.sizes["time"] < 3:
        return unscreened("fewer than 3 dates (a cloud cannot be told from a change)")
    masked = np.asarray(cube.attrs.get("masked_dates") or [], bool)
    partly = len(masked) == cube.sizes["time"] and masked.any() and not masked.all()
    if mode == "auto" and _has_mask(cube) and not partly:
        return unscreened("the source gave a quality mask")
    if not can_screen(cube):
        bands = [str(b) for b in cube["band"].values]
        unread = unread_bands(cube)  # --bands can help only where a band's name reads as no role
        why = (f"the cloud screen finds the blue and red bands by name ({BLUE[0]}/{BLUE[1]}, {RED[0]}/{RED[1]}...) and the "
               f"series' bands are {bands}"
               + (f"; if one of {unread} is the blue or red band, name the bands with --bands" if unread else ""))
        if mode == "hot":
            raise ConfigError(f"cloud_screen hot: {why}", cube.attrs.get("source"))
        (log or warnings.warn)(f"warning: no cloud screen: {why}, or unmasked clouds may rank as changes")
        return unscreened("no blue and red bands found by name")
    screened = screen_haze(cube)
    if mode == "auto" and partly:  # the dates the source gave a mask for keep it; the others are screened
        keep = xr.DataArray(masked, dims="time", coords={"time": cube["time"]})
        screened = screened.assign_coords(quality=xr.where(keep, cube["quality"], screened["quality"]).astype(np.uint8))
        screened.attrs["cloud_screen"] += (f"; on the {int((~masked).sum())} date(s) the source gave no quality mask "
                                           "for (the others keep theirs)")
    return screened


def _has_mask(cube) -> bool:
    """Whether the source gave a quality mask: its reader says so (``quality_mask``: a mask that calls every
    pixel clear is a mask, and was screened over), else any class other than clear and nodata, on a sample."""
    if "quality_mask" in cube.attrs:
        return bool(cube.attrs["quality_mask"])
    q = np.asarray(cube["quality"].data[:, ::4, ::4])
    return bool(np.isin(q, [2, 3, 4, 5]).any())


def check_writable(out: Path) -> None:
    """:class:`OutputError` unless ``out`` is, or can be made, a folder this process may write into."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunExistsError("is a file, not a run directory; choose an empty or new --out", out)
    parent = out
    while not parent.exists():
        if parent.is_symlink():  # (mkdir then failed after the source was read, with "File exists")
            raise OutputError(f"cannot be created: {parent} is a link to {os.readlink(parent)}, which does not exist; "
                              "create that folder or choose another --out", out)
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot be created: {parent} is a file, not a folder; choose another --out", out)
    if not os.access(parent, os.W_OK | os.X_OK):
        where = "" if parent == out else f" ({parent} does not let this user create folders)"
        raise OutputError(f"cannot be written{where}; choose another --out", out)


def _is_run_state(path: Path) -> bool:
    """Whether ``path`` holds a changescout run's state.json (a JSON object with its ``stages``)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(state, dict) and isinstance(state.get("stages"), dict)


def _finished(path: Path) -> bool:
    """Whether ``path`` (a state.json) says every stage of its run is done."""
    try:
        stages = json.loads(path.read_text(encoding="utf-8")).get("stages")
        return isinstance(stages, dict) and all(isinstance(stages.get(s), dict) and stages[s].get("status") == "done"
                                                for s in STAGES)
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def _is_run_record(record: dict) -> bool:
    """Whether ``record`` (a config.json read) is a changescout run's: it holds its hash and version."""
    return "config_hash" in record and "changescout" in record


#: What config.json records for a source file read over the network (a STAC asset's URL) instead of its digest,
#: before the digest of its URL (without its query): which files a run read, without downloading them.
REMOTE_INPUT = "remote, not downloaded to be hashed; sha256 of its URL: "


def _input_hashes(cube) -> dict:
    """SHA-256 of each source file; a directory store (Zarr) hashes the relative path and digest of each of
    its files, in order; a URL is not downloaded to be hashed (:data:`REMOTE_INPUT` and its own digest, so that the
    series id tells which files were read), and is recorded without its query (a signed URL's token: re-signed,
    the same file)."""
    from .sources.warp import is_remote, shown

    return {shown(f): REMOTE_INPUT + hashlib.sha256(shown(f).encode()).hexdigest() if is_remote(f) else _sha256_input(Path(f))
            for f in cube.attrs.get("source_files", [])}


def _sha256_input(path: Path) -> str:
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    files = sorted(q for q in path.rglob("*") if q.is_file())
    runs = {f.parent for f in files if f.name == "config.json" and is_run_dir(f.parent)}  # a run written inside the store
    for f in files:
        if runs.isdisjoint(f.parents):  # its outputs are no input: the run could never resume
            h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _build_encoder(config: RunConfig):
    params = dict(config.encoder_options)
    params.setdefault("patch_size", config.patch_size)
    if config.weights:
        params["weights"] = config.weights
    if "seed" in inspect.signature(encoder_class(config.encoder).__init__).parameters:  # rcf's sampling, a plugin's
        params.setdefault("seed", config.seed)  # (a plugin that takes a seed was given none: config.json's was not its)
    return get_encoder(config.encoder, **params)


def check_run(config: RunConfig, out: Path) -> None:
    """The checks that take no time, before minutes of work (or a connection to a cluster): configuration
    values, the source kind and the encoder (with its options) by name, a writable ``out``, and a source path that
    exists. A misspelt kind or encoder was told only after a cluster connection that timed out, and then only that
    (a review of --config files)."""
    from .encoders.base import checked_encoder_class
    from .sources.registry import get_source

    config.validate()
    if config.kind is not None:
        get_source(config.kind)
    checked_encoder_class(config.encoder, config.encoder_options)
    check_writable(Path(out))
    if Path(out).is_dir():  # a run or a reader holds it: said now, not after minutes of reading the source
        try:
            runlock.release(runlock.acquire(out, exclusive=True))
        except OSError:  # unreadable: Run.prepare says so
            pass
    if config.kind is None:  # a path to sniff: a missing one is told at once, not after the encoder is built
        from .sources import check_exists

        check_exists(config.source)


def _hold(out: Path, log) -> int | None:
    """An exclusive lock on ``out`` when it is already a directory (:func:`changescout.runlock.acquire`; None
    when it is not, or cannot be locked: :meth:`Run.prepare` then locks or says why)."""
    if not out.is_dir():
        return None
    try:
        return runlock.acquire(out, exclusive=True, log=log)
    except OSError:
        return None


def _read_json(path: Path, what_to_do: str) -> dict:
    """A run directory's JSON record; an unreadable one (cut short, edited) is named with what to do."""
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunExistsError(f"cannot be read ({exc}); {what_to_do}", path) from None
    if not isinstance(out, dict):
        raise RunExistsError(f"is not a changescout record (a JSON {type(out).__name__}); {what_to_do}", path)
    return out


def _unit_word(crs) -> str:
    return {"metre": "m", "degree": "degrees"}.get(crs_unit(crs), "CRS units")


def input_notes(cube, offsets: dict, grid, given_grid: bool) -> list[str]:
    """What a run tells before it starts about how it read the source: the grid it chose when ``--grid`` was
    not given (the first date's CRS and resolution, every footprint), the auxiliary files of a folder it left
    out, and the Sentinel-2 dates whose processing baseline (so the -1000 offset of baselines 04.00 on) it
    could not tell."""
    from .sources.warp import shown

    notes = []
    own = cube.attrs.get("extended_from")  # the images' own grid, extended at the right and bottom to whole patches
    size = f"{grid.shape[1]} x {grid.shape[0]} px" + (f", the images' {own[1]} x {own[0]} px extended to whole patches"
                                                      if own else "")
    if not given_grid and not on_earth(grid.crs):  # an image pair without georeferencing: its pixels
        notes.append(f"grid: image pixels (the images are not georeferenced), {size}; areas are not known")
    elif not given_grid:
        rx, ry = grid.resolution
        res = f"{abs(rx):g}" if np.isclose(abs(rx), abs(ry)) else f"{abs(rx):g} x {abs(ry):g}"
        unit = _unit_word(grid.crs)
        how = "the images' own grid" if own else "the first date's CRS and resolution over every date's footprint"
        notes.append(f"grid: {grid.crs}, {res} {unit} per pixel, {size} ({how}; --grid CRS,RES[,LEFT,BOTTOM,RIGHT,TOP] "
                     "chooses another)")
    if (resampled := cube.attrs.get("resampled_files")) and not given_grid:  # UAT: a date in another CRS, warped unsaid
        names = [Path(shown(f)).name for f in resampled]
        notes.append(f"note: {len(names)} file(s) are not on the grid's pixels (another CRS, pixel size or origin) and are "
                     f"resampled onto it (bilinear; masks nearest): {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}")
    if alpha := cube.attrs.get("alpha_files"):  # GDAL writes 4 bands of bytes as RGBA unless told otherwise
        names = [Path(shown(f)).name for f in alpha]
        notes.append(f"note: {len(names)} file(s) end in an alpha band (their colour interpretation), read as where they have "
                     f"data and not as a band: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}; if that band is "
                     "a spectral band (near infrared), mark it so: rio edit-info --colorinterp red,green,blue,undefined FILE")
    if repeated := cube.attrs.get("repeated_items"):  # one acquisition twice in a search's results (reprocessed)
        notes.append(f"note: {len(repeated)} item(s) repeat an acquisition of their date and are left out for the newest "
                     f"(highest baseline, then latest update): {', '.join(repeated[:3])}{', ...' if len(repeated) > 3 else ''}")
    if assumed := cube.attrs.get("crs_assumed"):  # a CF cube of latitude and longitude without a grid mapping
        notes.append(f"note: CRS read as {assumed}")
    if redated := cube.attrs.get("redated_files"):  # --dates against the names' dates (a UAT: a typo went unsaid)
        notes.append(f"note: --dates gives {len(redated)} image(s) another date than their name's: "
                     f"{'; '.join(redated[:3])}{'; ...' if len(redated) > 3 else ''}")
    if harmonised := cube.attrs.get("band_harmonisation"):  # HLS S30 and L30 dates in one folder
        notes.append(f"note: {harmonised}")
    if second := cube.attrs.get("hls_second_sensor"):  # one image a date: the S30 one where both sensors saw it
        second = list(np.atleast_1d(second))
        notes.append(f"note: {len(second)} HLS L30 image(s) share their date and tile with an S30 image and are left out "
                     f"for it (one image a date): {', '.join(second[:3])}{', ...' if len(second) > 3 else ''}")
    if ignored := cube.attrs.get("ignored_files"):
        notes.append(f"left out {len(ignored)} file(s) of auxiliary layers, not reflectance ({', '.join(ignored[:3])}"
                     f"{', ...' if len(ignored) > 3 else ''})")
    if has_placeholder_dates(cube):  # an image pair without dates (LEVIR-CD)
        stand = " and ".join(f"{t:%Y-%m-%d}" for t in pd.DatetimeIndex(cube["time"].values))
        notes.append(f"note: the images have no dates: {stand} stand for them in the ids, tables and report; "
                     "give --dates T0,T1 for the real ones")
    unknown = [d for d, r in offsets.get("dates", {}).items()
               if r.get("status") == "unknown" and str(r.get("platform") or "").startswith("sentinel-2")]
    if unknown:
        notes.append(f"warning: {len(unknown)} Sentinel-2 date(s) of unknown processing baseline ({', '.join(unknown[:3])}"
                     f"{', ...' if len(unknown) > 3 else ''}) are left as they are: products of baseline 04.00 and later "
                     "(25 January 2022 on) store reflectance + 0.1; name the files or their folders after their products "
                     "(S2A_MSIL2A_..._N0400_...) to have the offset applied")
    levels = {}
    for d, r in offsets.get("dates", {}).items():
        if r.get("level") in ("L1C", "L2A"):
            levels.setdefault(r["level"], []).append(d)
    if len(levels) == 2:  # (a review: the top object of such a series was the atmosphere between two levels)
        notes.append(f"warning: the series mixes Sentinel-2 Level-1C (top-of-atmosphere: {', '.join(levels['L1C'][:3])}"
                     f"{', ...' if len(levels['L1C']) > 3 else ''}) and Level-2A (surface reflectance: "
                     f"{', '.join(levels['L2A'][:3])}{', ...' if len(levels['L2A']) > 3 else ''}) dates: the atmosphere "
                     "between them reads as change; run one level")
    radiance = [d for d, r in offsets.get("dates", {}).items() if r.get("status") == "unknown" and r.get("rule") == RADIANCE_RULE]
    if radiance:
        notes.append(f"warning: {len(radiance)} Landsat 4-7 Level-1 date(s) ({', '.join(radiance[:3])}"
                     f"{', ...' if len(radiance) > 3 else ''}) hold DN of radiance, not reflectance, and are read as DN / 10000: "
                     "the encoders and the cloud screen expect reflectance; use Level-2 surface reflectance (L2SP), or convert "
                     "with the gains of each product's MTL file and give the result")
    return notes


#: Configuration keys that only a --config file sets (named as written there, not as a command-line option).
CONFIG_ONLY = ("cloud_screen", "snow_screen", "source_options", "encoder_options", "transient_weight",
               "seasonal_weight", "n_clusters", "report_top")


def _option(name: str) -> str:
    """How a configuration key is named to the user: ``snow_screen`` (a --config key) or ``--min-clear`` (its
    command-line option; a --config file's ``min_clear`` reads the same)."""
    return name if name in (*CONFIG_ONLY, "source") else "--" + name.replace("_", "-")


def run_pipeline(config: RunConfig, out: Path, overwrite: bool = False, progress=None, log=print) -> Path:
    """Run (or resume) every stage; return the run directory.

    Bad input is found before anything is written where it can be (configuration values, encoder, weights and
    bands); when it is found later, a new run directory is removed again and a replaced run is restored. Other
    failures (an interruption) leave the unfinished run to be resumed by the same command.

    ``log``: a callable taking each line the command line prints (``None``: only the warnings, through
    :func:`warnings.warn`). ``progress``: ``None``, or a callable ``(description, total)`` returning a context
    manager entered around the embedding's computation (the command line's shows a bar fed by dask's callbacks;
    ``lambda d, n: dask.diagnostics.ProgressBar()`` prints one)."""
    if log is None:
        log = _warnings_only
    if progress is not None and not callable(progress):  # (True failed after config.json and state.json were written)
        raise ConfigError(f"progress must be None or a callable (description, total) -> context manager, got {progress!r}")
    out = Path(out)
    check_run(config, out)
    # An existing run directory is locked from here, not from Run.prepare: a `similar` or `export` started
    # while the source is read (minutes on a large series) is told that a run is writing it, not that the
    # run has no index.faiss and needs `changescout run` (UAT).
    held = _hold(out, log)
    try:
        encoder = _build_encoder(config)  # an unknown encoder or bad weights: before the source is read
        log(f"reading {config.source} (cloud screen {config.cloud_screen}, snow screen {config.snow_screen}, "
            f"co-registration {config.coregister})")
        t_prepare = time.perf_counter()
        cube, offsets = apply_offsets(open_source(config), config.radiometry)
        if (note := level_note(encoder, cube.attrs.get("level"))) is not None:
            log(note)
        if encoder.spec.input == "embeddings":  # (AlphaEarth's annual layers: no clouds, no reflectance)
            cube = cube.copy()
            cube.attrs["embedding_bands"] = True
            named = [str(cube["band"].values[i]) for i in find_bands(cube, BLUE, GREEN, RED, NIR) if i is not None]
            if named:
                log(f"warning: encoder {config.encoder} reads the bands as embeddings made elsewhere, but {named} are "
                    "named as reflectance: no cloud screen, co-registration or change words follow; for images use "
                    "another encoder (rcf, galileo-nano, hf)")
        # as read, before the screen and co-registration change it
        implausible = [] if cube.attrs.get("embedding_bands") else implausible_dates(cube)
        if hasattr(encoder, "for_bands"):  # a model that masks the inputs a cube lacks (galileo-nano on HLS S30 + L30)
            encoder = encoder.for_bands(cube)
            if note := encoder.bands_note():
                log(note)
        try:
            select_bands(cube, encoder.spec)  # bands the encoder cannot take (read as the cube's family numbers them)
        except BandError as exc:
            if not hasattr(encoder, "for_bands") or getattr(encoder, "bands", None) is not None:  # (bands chosen)
                raise
            raise BandError(f"{exc.message}; with fewer it runs on the channel groups the cube has whole, under "
                            "Sentinel-2's names or common names (B02 B03 B04, B8A, B11 B12; blue green red, nir...): "
                            "this cube has none", exc.path) from None
        if hasattr(encoder, "for_cube"):  # what an encoder reads off the values (hf: the stretch of 8-bit images)
            encoder = encoder.for_cube(cube)
            if note := (encoder.note() if hasattr(encoder, "note") else ""):  # (precomputed: AlphaEarth's bytes)
                log(note)
        cube, done = prepare_cube(cube, config, log)
        coreg, norm = done["coregister"], done["normalisation"]
        grid = grid_of(cube)
        patch_grid = PatchGrid(grid, config.patch_size)
        for note in input_notes(cube, offsets, grid, given_grid=config.grid is not None) + implausible + coregister_notes(coreg):
            log(note)
        comp = Comparison.parse(config.compare, min_clear=config.min_clear)
        try:
            comp.check_dates(pd.DatetimeIndex(cube["time"].values))
        except ConfigError as exc:  # a problem of this series: named
            raise ConfigError(exc.message, exc.path or cube.attrs.get("source", config.source)) from None
        if (note := comp.note(pd.DatetimeIndex(cube["time"].values))) is not None:
            log(note)
        inputs = _input_hashes(cube)
        source_digest = hashlib.sha256(json.dumps([cube.attrs.get("source", config.source), sorted(inputs.values())]).encode()).hexdigest()
        # config.json holds the configuration as resolved: the kind the source was taken for and the label its
        # ids carry, so that a rerun spelling them out (--kind stacked, --label ...) is the same run and resumes
        # (a label from a name longer than ids take is cut as the ids cut it: the run's config.json, given back as
        # --config, was refused for a label the user never gave)
        config = dataclasses.replace(config, kind=cube.attrs.get("source_kind", config.kind),
                                     label=config.label or str(cube.attrs.get("label", "series"))[:MAX_LABEL])
        series = series_id(config.label, source_digest, grid, config.patch_size)
        run = Run(out, config, overwrite=overwrite, log=log)
    except BaseException:
        runlock.release(held)
        raise
    run._lock_fd = held
    extra = {"series": series, "grid": grid.to_dict(), "dates": [str(t)[:10] for t in cube["time"].values],
             "bands": [str(b) for b in cube["band"].values], "comparison": str(comp),
             "cloud_screen": cube.attrs.get("cloud_screen"),  # its rule: a changed screen is another run
             "snow_screen": cube.attrs.get("snow_screen")}
    if has_placeholder_dates(cube):  # the report says so beside the dates
        extra["dates_placeholder"] = True
    if encoder.spec.weights_sha256:  # other weights at the same path (or found in CHANGESCOUT_WEIGHTS_DIR) are another run
        extra["weights_sha256"] = encoder.spec.weights_sha256
    try:
        run.prepare(inputs, extra)
        records = json.loads(json.dumps({"coregister": coreg, "radiometry": {"offsets": offsets, "normalisation": norm}}, default=str))
        if not all(run.done(s) for s in STAGES):  # (a run with nothing left to do leaves state.json as it was)
            records["prepare"] = {"seconds": round(time.perf_counter() - t_prepare, 3),
                                  "what": "opening and hashing the source, the cloud and snow screens and co-registration estimate"}
        if any(run.state.get(k) != v for k, v in records.items()):  # a resumed run leaves state.json as it was
            run.state.update(records)
            run._save_state()
        todo = stages_to_run(run)
        if getattr(run, "resumed", False):
            kept = [s for s in STAGES if s not in todo]
            log(f"resuming the run in {out} (finished stages: {', '.join(kept) or 'none'}"
                f"{'; to run: ' + ', '.join(todo) if todo else ''})")
        _run_stages(run, config, cube, encoder, patch_grid, comp, series, progress, todo)
    except BaseException as exc:
        run.abandon(exc)
        raise
    run.finish()
    return out


def _warnings_only(line: str) -> None:
    """A run's ``log`` that keeps only its warnings (run_pipeline's ``log=None``)."""
    if line.startswith("warning"):
        warnings.warn(line, stacklevel=3)


def stages_to_run(run: Run) -> list[str]:
    """The stages a (re)run must run, in order: from the first one that is not done, or whose outputs are
    missing or unreadable (:func:`changescout.intact.problem`: a file cut short by a full disk or a copy), to
    the last; a stage after one that runs again runs again too, so that no output is older than what it was
    made from. A damaged output is named in the log."""
    for i, name in enumerate(STAGES):
        if not run.done(name):
            return list(STAGES[i:])
        # a stage's fixed outputs, and each file it recorded (the outputs stage: every map and quicklook, which
        # were not rebuilt when one of them was deleted or cut short, while the rerun said the run was finished)
        for f in dict.fromkeys([*STAGE_FILES[name], *run.state["stages"][name].get("files", [])]):
            why = problem(run.out / f)
            if why is not None:
                if why != "missing":  # a deleted output is simply rebuilt, as before
                    run.log(f"{run.out / f}: {why}: the {name} stage runs again to rebuild it")
                return list(STAGES[i:])
        if name == "rank" and (mismatch := _not_of_this_run(run.out)) is not None:
            run.log(f"{mismatch}: the rank stage runs again to rebuild it")
            return list(STAGES[i:])
    return []


def _not_of_this_run(out: Path) -> str | None:
    """What the rank stage wrote that is another run's (copied over this run's: another seed of one series has
    the same ids and counts, and a rerun said the run was finished), as ``"PATH: why"``, or None."""
    from .objects import read_objects
    from .similar import RunView

    try:
        view = RunView(out)  # events.parquet against changes.zarr
        view.index()  # index.faiss against changes.zarr
        why = objects_problem(read_objects(out), view.events)
    except RunNotFoundError as exc:
        return f"{exc.path}: {getattr(exc, 'problem', exc.message)}"
    return None if why is None else f"{out / 'objects.parquet'}: {why}"


def _run_stages(run: Run, config: RunConfig, cube, encoder, patch_grid: PatchGrid, comp: Comparison, series: str, progress,
                todo=STAGES) -> None:
    out = run.out
    emb_path = out / "embeddings.zarr"
    if "embed" in todo:
        with run.stage("embed") as info:
            t = time.perf_counter()
            ds = embed_cube(cube, encoder, patch_grid, emb_path, series, progress=progress("embedding", cube.sizes["time"]) if progress else None)
            secs = time.perf_counter() - t
            n = ds.sizes["time"] * ds.sizes["row"] * ds.sizes["col"]
            info.update(patches=n, patches_per_second=round(n / max(secs, 1e-9), 1), encoder=encoder.spec.name)
            if hasattr(encoder, "save_weights") and config.encoder == "rcf" and not config.weights:
                encoder.save_weights(out / "rcf_weights.npz")
    # The later stages read the run directory and the source from this process, on local threads: on a
    # cluster (--scheduler) every read would otherwise be a task whose result a worker sends back (the rank
    # and outputs stages took 2-3 times as long there), and what they compute is this process' numpy work.
    with dask.config.set(scheduler="threads"):
        embeddings = open_embeddings(emb_path)
        if (note := unusable_dates_note(embeddings, config.min_clear)) is not None:
            run.log(note)
        _analyse(run, config, cube, comp, series, embeddings, todo)


def unusable_dates_note(embeddings, min_clear: float) -> str | None:
    """A note naming the dates where no patch is clear enough to compare (all nodata, masked or cloudy: the
    changes around them compare the dates either side), or None. UAT: such a date was left out silently."""
    clear = embeddings["clear_fraction"].values
    times = pd.DatetimeIndex(embeddings["time"].values)
    gone = [f"{t:%Y-%m-%d}" for t, c in zip(times, clear) if not (np.nan_to_num(c) >= min_clear).any()]
    if not gone:
        return None
    one = len(gone) == 1
    return (f"note: {len(gone)} of {len(times)} dates {'has' if one else 'have'} no patch clear enough to compare "
            f"(--min-clear {min_clear:g}: nodata, masked or cloudy): {', '.join(gone[:6])}{', ...' if len(gone) > 6 else ''}; "
            f"no change is computed from or to {'it' if one else 'them'}")


def _analyse(run: Run, config: RunConfig, cube, comp: Comparison, series: str, embeddings, todo=STAGES) -> None:
    """The stages after the embedding: changes, rank (events, objects, search index) and outputs."""
    out = run.out
    ch_path = out / "changes.zarr"
    if "changes" in todo:
        with run.stage("changes") as info:
            events, vectors, search = compute_changes(embeddings, comp, search=True)
            if len(events) == 0:
                pg = embedding_grid(embeddings)
                res = abs(pg.grid.resolution[0])
                raise ConfigError(f"no change could be computed with --compare {comp} and --min-clear {config.min_clear}: "
                                  f"no patch ({pg.patch_size} px of {res:g} {_unit_word(pg.grid.crs)}) has two dates to "
                                  "compare that are clear enough (check the dates, the quality mask, --min-clear, and "
                                  "that a --grid resolution leaves patches that the data fills)", cube.attrs.get("source", config.source))
            events["event_id"] = event_ids(series, events["t0"], events["t1"], events["row"], events["col"])
            # how far each patch's most changed blocks of pixels moved (a road across it)
            events["spectral"] = spectral_scores(cube, events, embedding_grid(embeddings).patch_size)
            attrs = {k: embeddings.attrs[k] for k in ("encoder", "encoder_version", "weights_sha256", "patch_size", "grid", "series")}
            compat = compatibility(embeddings.attrs)
            attrs.update(normalisation_method=compat["normalisation_method"], comparison=str(comp),
                         encoder_options=compat["encoder_options"],
                         shared_space=int(compat["shared_space"]),
                         new_state_weight=float(embeddings.attrs.get("new_state_weight", 0.0)))
            write_changes(ch_path, events, vectors, attrs, search)
            info.update(events=len(events))
            if (note := comp.baseline_note(events)) is not None:
                run.log(note)

    if "rank" in todo:
        with run.stage("rank") as info:
            events, vectors, attrs = read_changes(ch_path)
            # each t0's and t1's place among the series' dates (not among the dates some event ends at: a date that no patch
            # saw clear would shift the objects' trajectories by one date)
            for end in ("t0", "t1"):
                events[f"{end}i"] = pd.DatetimeIndex(embeddings["time"].values).get_indexer(pd.to_datetime(events[end]))
            states = change_states(embeddings, events, len(vectors))
            ranked, clusters, objects = rank_events(events, vectors, config, states, log=run.log)
            objects = describe_objects(objects, ranked, cube, embedding_grid(embeddings).patch_size, log=run.log)  # in words
            gdf = to_geodataframe(ranked, series, embedding_grid(embeddings), embeddings["footprint"].values)
            write_objects(object_geometries(gdf, objects), out / "objects.parquet")
            write_events(gdf, out / "events.parquet")
            write_clusters(clusters, out / "clusters.parquet")
            del vectors, states  # the search vectors are as large
            search, keys = read_vectors(ch_path, name=compatibility(attrs)["search_vector"])  # what similar reads
            SimilarChangeIndex().fit(search, keys).save(out / "index.faiss")
            info.update(events=len(gdf), clusters=int(clusters.shape[0]), objects=len(objects),
                        candidate_objects=int(objects["candidate"].sum()))

    if "outputs" in todo:
        with run.stage("outputs") as info:
            written = write_outputs(out, cube, embedding_grid(embeddings), config, run.state)
            info.update(files=sorted(str(p.relative_to(out)) for p in written))  # what a rerun checks is still there


def rank_events(events: pd.DataFrame, vectors: np.ndarray, config: RunConfig, states: np.ndarray | None = None, log=None):
    """Cluster change vectors into types, rank events, group them into objects and rank those;
    returns (events with ``object_id``/``object_rank``, cluster table, objects table without geometry).
    ``states``: each event's embeddings before and after (:func:`changescout.objects.change_states`);
    ``log``: where a warning goes (default: :func:`warnings.warn`)."""
    if len(events) == 0:
        raise ConfigError("no change could be computed: fewer than two clear dates for every patch "
                          "(check the dates, the quality mask and --min-clear)")
    k = config.n_clusters
    fitted = min(len(events), ChangeClusterer().sample_size)  # the types are fitted on a sample of the changes
    if k != "auto" and int(k) > fitted:  # found only now, after the embedding: fewer types, not a failed run
        (log or warnings.warn)(f"warning: n_clusters {k} is more than the {fitted} changes "
                               f"{'of this run' if fitted == len(events) else 'the types are fitted on'}; {fitted} type(s) are used")
        k = fitted
    # vectors are keyed by vec (changes.zarr's layout): the events' own rows, in one order whatever the table's
    events = events.sort_values("vec", kind="stable").reset_index(drop=True)
    rows = vectors[events["vec"].to_numpy()]
    clusterer = ChangeClusterer(n_clusters=k, random_state=config.seed).fit(rows)
    events["cluster"] = clusterer.labels_
    reduced = clusterer.transform(rows)
    del rows  # (a copy of the vectors: not held while the objects are made)
    ranked = AtypicalityRanker(by=config.rank_by, transient_weight=config.transient_weight).rank(events, reduced)
    del reduced
    ranked, objects = ObjectRanker(by=config.rank_by, transient_weight=config.transient_weight,
                                   seasonal_weight=config.seasonal_weight,
                                   continuations=Comparison.parse(config.compare).mode in ("reference", "anniversary"),
                                   gaps=Comparison.parse(config.compare).mode == "consecutive",
                                   ).fit_transform(ranked, vectors, states)
    return ranked, cluster_table(ranked), objects


def to_geodataframe(events: pd.DataFrame, series: str, patch_grid: PatchGrid,
                    footprint: np.ndarray | None = None) -> gpd.GeoDataFrame:
    """The events table as written (events.parquet): the patches' polygons in the grid's CRS, by rank; given the
    EmbeddingCube's ``footprint``, each cut to the pixels the images cover (:meth:`PatchGrid.polygons`)."""
    ev = events.copy()
    ev["series"] = series
    for c in ("row", "col", "cluster", "cluster_size", "rank", "object_rank"):
        ev[c] = ev[c].astype(np.int32)
    ev["object_id"] = ev["object_id"].astype(np.int64)
    if "spectral" not in ev:  # (events ranked from Python without changescout.spectral: unknown)
        ev["spectral"] = np.nan
    for c in ("magnitude", "surprise", "zscore", "recurrence", "spectral", "clear_fraction", "rarity", "atypicality",
              "false_alarm_rate"):
        ev[c] = ev[c].astype(np.float32)
    geom = patch_grid.polygons(ev["row"].to_numpy(), ev["col"].to_numpy(), footprint)
    gdf = gpd.GeoDataFrame(ev[COLUMNS], geometry=geom, crs=patch_grid.grid.crs)
    return gdf.sort_values("rank").reset_index(drop=True)


def write_outputs(out: Path, cube, patch_grid: PatchGrid, config: RunConfig, state: dict) -> list[Path]:
    """The outputs stage: change maps (COGs), quicklooks and report.html, from the run's tables; returns the
    files written."""
    from .events import read_events
    from .maps import write_change_maps
    from .report import write_quicklooks, write_report

    from .objects import read_objects

    events = read_events(out / "events.parquet")
    clusters = pd.read_parquet(out / "clusters.parquet")
    objects = read_objects(out)
    maps = write_change_maps(events, patch_grid, out / "maps")
    # Quicklooks: object_<rank>.png of each top object (its dates, its whole outline), event_<rank>.png of the
    # top patch events
    looks = write_quicklooks(cube, events, patch_grid, out / "quicklooks", top=config.report_top,
                             objects=objects.head(config.report_top))
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    report = write_report(out, events, clusters, cfg, state, quicklooks=looks, top=config.report_top, objects=objects)
    pictures = [*looks["dates"], *looks["events"].values(), *looks["object_chips"].values()] + [looks["objects"]] * bool(looks["objects"])
    return [*maps.values(), *map(Path, pictures), report]
