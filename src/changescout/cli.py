"""The command line: a thin typer layer over the library.

Exit codes: 0 success, 2 bad input or refused overwrite, 1 internal error. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from . import runlock
from .errors import ChangescoutError, ConfigError


class _FlagsShownAsFlags:
    """typer's help showed each flag with a value type (``--overwrite <bool>``) that the flag does not take
    (``--overwrite false`` is refused): a flag is shown by its name alone."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # (what typer's help shows in place of the type)
        return params


class _Group(_FlagsShownAsFlags, TyperGroup):
    pass


class _Command(_FlagsShownAsFlags, TyperCommand):
    pass


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  help="Find the changes worth looking at in satellite image time series.")
console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())  # a log or a pipe keeps paths on one line
out_console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200)
_state = {"debug": False, "quiet": False}


def _version(value: bool) -> None:
    if value:
        from . import __version__

        out_console.print(f"changescout {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
          quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars, summaries or notes; warnings (a missing cloud screen...) and errors still show."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")):
    _state["debug"], _state["quiet"] = debug, quiet


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's time limit, ``kill``): stops a run as Ctrl-C does, so that it can be resumed."""


_terminated = threading.Event()


def _on_sigterm(signum, frame):
    _terminated.set()  # (click turns a KeyboardInterrupt into its own exit code 130)
    raise _Terminated()


_interrupted = threading.Event()


def _on_sigint(signum, frame):
    """Ctrl-C stops a run to be resumed (KeyboardInterrupt); a second one while the first is being handled
    (the run folder tidied, worker threads joined) stops the process at once, exit 130, instead of a
    KeyboardInterrupt inside the interpreter's shutdown (a traceback, and an abort from torch's threads).
    Every file a run writes is written under a temporary name then renamed, so nothing is left half-written."""
    if _interrupted.is_set():
        os._exit(130)
    _interrupted.set()
    raise KeyboardInterrupt()


def _log(msg: str) -> None:
    if not _state["quiet"] or msg.startswith("warning"):  # -q drops the chatter, not what may make results wrong
        console.print(escape(msg))


@contextlib.contextmanager
def _dask_progress(description: str, _n: int):
    """A rich progress bar fed by dask's local scheduler callbacks."""
    from dask.callbacks import Callback

    if _state["quiet"]:
        yield
        return
    with _progress_bar() as bar:
        task = bar.add_task(description, total=None)

        class _CB(Callback):
            def _start_state(self, dsk, state):
                bar.update(task, total=sum(len(state[k]) for k in ("ready", "waiting", "running", "finished")))

            def _posttask(self, key, result, dsk, state, worker_id):
                bar.advance(task)

        with _CB():
            yield


class _ClusterBar:
    """What :func:`_cluster_progress` yields: the embedding stage hands it the computation to follow."""

    def __init__(self, bar, task):
        self.bar, self.task = bar, task

    def follow(self, future) -> None:
        from .scheduler import follow

        follow(future, lambda done, total: self.bar.update(self.task, completed=done, total=total))


@contextlib.contextmanager
def _cluster_progress(description: str, _n: int):
    """A rich progress bar of the tasks a dask cluster runs, fed by its scheduler (:func:`changescout.scheduler.follow`)."""
    if _state["quiet"]:
        yield
        return
    with _progress_bar() as bar:
        yield _ClusterBar(bar, bar.add_task(f"{description} (on the cluster)", total=None))


def _progress_bar():
    from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(), "{task.completed}/{task.total} tasks",
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)


#: The least width of a column that folds (a path, a description) before other columns are left out.
FOLD_MIN = 16


def _column_width(name: str, rows: list[dict], fold: bool, wrap_header: bool) -> int:
    """A column's width: its widest value whole (numbers and dates are never cut) and its header whole or, with
    ``wrap_header``, its header's longest word; a column that may fold (``fold``) needs only its longest word,
    at most FOLD_MIN."""
    header = [len(w) for w in name.split()] if wrap_header else [len(name)]
    if fold:
        return max(header + [min(FOLD_MIN, max([len(w) for w in str(r[name]).split()] or [0])) for r in rows])
    return max(header + [len(str(r[name])) for r in rows])


def _fitting(columns: list[str], rows: list[dict], width: float, drop=(), fold=()) -> Optional[dict[str, int]]:
    """The widths of the columns that fit ``width`` terminal columns (None: none do): the columns of ``drop`` are
    left out in order while they do not; the columns of ``fold`` (a path, a description) are kept whole while
    that fits (a path split mid-name cannot be copied) and folded only when it does not; headers are wrapped
    between words last. A table of :func:`_table` puts 3 terminal columns between two of its columns."""
    for wrap_header in (False, True):  # headers whole first, then
        for folded in (False, True):  # a path or a description whole, the columns of drop left out for it
            kept = list(columns)
            for name in [None, *drop]:
                if name in kept:
                    kept.remove(name)
                widths = {c: _column_width(c, rows, folded and c in fold, wrap_header) for c in kept}
                if sum(widths.values()) + 3 * (len(kept) - 1) <= width:
                    return widths
    return None


def _seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` as whole numbers; :class:`ConfigError` naming the option otherwise."""
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items or not all(re.fullmatch(r"\d+", x) for x in items):
        raise ConfigError(f"--seeds must be whole numbers separated by commas (e.g. 0,1,2), got {text!r}")
    return [int(x) for x in items]


def _table(title: str, widths: dict[str, int], rows: list[dict], fold=(), left=()) -> Table:
    """A table of the columns of ``widths`` (from :func:`_fitting`): a short column (a number, a date) has the
    width of its widest value, so that a narrow terminal never cuts it to "0.…" or "20…"; the columns in
    ``fold`` (a path, a description) take what is left, wrapped between words or folded."""
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for c, w in widths.items():
        justify = "left" if c in left or c in fold else "right"
        if c in fold:
            table.add_column(c, justify=justify, overflow="fold", min_width=w)
        else:
            table.add_column(c, justify=justify, width=w)
    for row in rows:
        table.add_row(*[escape(str(row[c])) for c in widths])  # (text, not rich markup: a path may hold [a])
    return table


def _summary(run_dir: Path, top: int = 10) -> None:
    from .events import read_events
    from .objects import lead_events, read_objects

    events = read_events(run_dir)
    objects = read_objects(run_dir).head(top)
    lead = lead_events(events, objects)
    ids = [str(lead.loc[o, "event_id"]) for o in objects["object_id"]]
    rows = []
    for (_, r), event_id in zip(objects.iterrows(), ids):
        pers, rec, far = r["persistence"], r.get("recurrence", np.nan), r.get("false_alarm_rate", np.nan)  # old runs lack some
        rows.append({
            "rank": str(r["rank"]), "object": str(r["object_id"]), "t0": f"{r['t0']:%Y-%m-%d}", "t1": f"{r['t1']:%Y-%m-%d}",
            "until": "" if pd.isna(r["t_end"]) else f"{r['t_end']:%Y-%m-%d}", "patches": str(r["n_patches"]),
            "area ha": f"{r['area_ha']:.2f}" if np.isfinite(r["area_ha"]) else "",
            "atypicality": f"{r['atypicality']:.3f}" if r.get("candidate", True) else "-",
            "false alarms": f"{far:.2%}" if np.isfinite(far) else "", "rarity": f"{r['rarity']:.3f}",
            "persistence": f"{pers:g}" if np.isfinite(pers) else "", "recurrence": f"{rec:.2f}" if np.isfinite(rec) else "",
            "type": str(r.get("cluster", "")), "change": str(r.get("change", "")), "most atypical onset patch": event_id})
    columns = list(rows[0]) if rows else []
    if "change" not in objects:  # a run of an earlier version
        columns = [c for c in columns if c != "change"]
    width = out_console.width
    ranking = ("recurrence", "persistence", "rarity")  # what ranks them is in the report
    # the lead event id (what `similar` takes) whole in the table where it fits, else listed whole below it
    inline = _fitting(columns, rows, width, drop=ranking, fold=("change",))
    narrow = [c for c in columns if c not in ("object", "change", "most atypical onset patch")]
    shown = inline or _fitting(narrow, rows, width, drop=(*ranking, "patches", "type", "until", "area ha")) or \
        _fitting(narrow[:3], rows, float("inf"))  # (rank, t0, t1 in any terminal)
    table = _table(f"Top {len(objects)} changes  ({escape(str(run_dir))})", shown, rows, fold=("change",),
                   left=("most atypical onset patch",))
    out_console.print(table)
    if inline is None:
        out_console.print("Most atypical onset patch of each (an EVENT_ID for `changescout similar`)"
                          + (", and what changed:" if "change" in objects else ":"))
        for row in rows:  # the id whole on its line; words that would run past the terminal on the next one
            line = f"  {row['rank']:>3}  {row['most atypical onset patch']}  {row['change']}".rstrip()
            if len(line) > width and row["change"]:
                line = f"  {row['rank']:>3}  {row['most atypical onset patch']}\n       {row['change']}"
            out_console.print(escape(line), soft_wrap=True)
    quiet = [row["rank"] for row, c in zip(rows, objects.get("candidate", pd.Series(True, objects.index))) if not c]
    if quiet:  # atypicality 0 in objects.parquet: ranked after every candidate, by their patch's atypicality
        out_console.print(f"Rank{'s' if len(quiet) > 1 else ''} {quiet[0]}{'-' + quiet[-1] if len(quiet) > 1 else ''}: "
                          "single patches that do not stand out from the run's bulk (not candidates), in their "
                          "patch's order; the run has no more objects that stand out")
    out_console.print(f"Outputs in {escape(str(run_dir))}: events.parquet, objects.parquet, maps/, report.html")


def _run(config, out: Path, overwrite: bool, scheduler: Optional[str]) -> None:
    from .pipeline import check_run, run_pipeline

    if not scheduler:
        run_pipeline(config, out, overwrite=overwrite, progress=_dask_progress, log=_log)
    else:
        from . import scheduler as cluster

        check_run(config, out)  # bad input is told before a connection that may take 30 s to fail
        client = cluster.connect(scheduler)
        if not _state["debug"]:
            cluster.quiet_logs()
        with contextlib.suppress(Exception):  # (a cluster that is already going: the run's own error tells it)
            workers = client.scheduler_info().get("workers", {})
            _log(f"computing on the dask cluster at {scheduler}: {len(workers)} worker(s), "
                 f"{sum(w.get('nthreads', 0) for w in workers.values())} thread(s)")
        try:
            cluster.check_workers_see(client, out, getattr(config, "source", None))
            with cluster.WorkerWatch(client, scheduler, _log):
                run_pipeline(config, out, overwrite=overwrite, progress=_cluster_progress, log=_log)
        except Exception as exc:
            raise cluster.lost(exc, client, scheduler) or exc
        finally:
            with contextlib.suppress(Exception):  # a lost scheduler cannot be told goodbye
                client.close(timeout=5)
    if not _state["quiet"]:
        _summary(out)


def _split(text: Optional[str]) -> Optional[list[str]]:
    return [t.strip() for t in text.split(",")] if text else None


def _not_empty(values: dict) -> None:
    """A ConfigError for an option given as empty text, or a list with an empty item: taken as not given (or the
    current folder), or dropped without a word, which miscounted the names typed (a review)."""
    from .errors import ConfigError

    for name, value in values.items():
        if value is None:
            continue
        if not str(value).strip():
            raise ConfigError(f"{name} is empty: " + ("give the series' path (or 'synthetic')" if name == "SOURCE" else
                                                      "give a value, or leave the option out"))
        if name in ("--dates", "--bands") and any(not part.strip() for part in str(value).split(",")):
            raise ConfigError(f"{name} {value!r} has an empty item between its commas")


@app.command(cls=_Command)
def demo(out: Path = typer.Option(Path("demo-run"), "--out", help="Run directory to write."),
         seed: int = typer.Option(0, help="Seed of the synthetic series."),
         overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run made with another configuration.")):
    """Synthetic series with planted changes: the whole pipeline and its report."""
    from .pipeline import RunConfig

    _run(RunConfig(source="synthetic", kind="synthetic", source_options={"seed": seed}, seed=seed, label="demo"), out, overwrite, None)


@app.command(cls=_Command)
def run(ctx: typer.Context,
        source: str = typer.Argument(..., metavar="SOURCE", help="GeoTIFF folder, stacked GeoTIFF, NetCDF/Zarr cube, STAC catalog (its folder or catalog.json) or ItemCollection (.json) whose assets are files or URLs, OSCD city folder, A/B/label pair image, DynamicEarthNet cube folder, or 'synthetic'."),
        out: Path = typer.Option(..., "--out", help="Run directory (made with its missing parent folders; an existing one is resumed)."),
        kind: Optional[str] = typer.Option(None, help="Source kind: geotiff, stacked, datacube, stac, oscd, pairs, dynamicearthnet or synthetic (default: guessed from the path)."),
        dates: Optional[str] = typer.Option(None, help="Comma-separated dates YYYY-MM-DD: of a stacked file's date blocks, in order (increasing); or one per image (date) of a folder, in file-name order, to override the names; or T0,T1 of an image pair."),
        bands: Optional[str] = typer.Option(None, help="Comma-separated band names: the bands to read, chosen by name; of a stacked file without band descriptions, the names of each date's block in order."),
        grid: Optional[str] = typer.Option(None, help="Output grid: CRS[,RES[,LEFT,BOTTOM,RIGHT,TOP]]. Bounds are widened outward to whole patches on one lattice (patch edges fall in the same places in every run; rows and columns count from the grid's top-left corner, so runs on the same grid share the r<row>-c<col> part of their event ids); an edge patch is judged by the part of it the images cover (--min-clear of it clear; less than a quarter covered: left out)."),
        mask: Optional[str] = typer.Option(None, help="Quality mask folder (a file per date, named by its date or like its image) or file (a band per date): Fmask, SCL, Landsat QA_PIXEL, HLS Fmask or changescout quality classes."),
        mask_convention: Optional[str] = typer.Option(None, help="fmask, scl, qa_pixel (Landsat Collection 2), hls (HLS v2 Fmask bit flags) or quality; guessed from the mask's name when left out."),
        encoder: str = typer.Option("rcf", help="Encoder name (see `changescout encoders`)."),
        weights: Optional[str] = typer.Option(None, help="Encoder weights file."),
        patch_size: int = typer.Option(16, "--patch-size", help="Patch size in pixels."),
        compare: str = typer.Option("consecutive", help="consecutive (the previous clear date) | anniversary (the same season a year before, within 45 days) | reference:YYYY-MM-DD"),
        rank_by: str = typer.Option("combined", "--rank-by", help="combined (default: rarity and magnitude together) | rarity (fewest similar changes) | magnitude (largest change for its place: the size of the change against the run and against the patch's own history, not the raw magnitude column; transient and seasonal changes are demoted in every mode)"),
        min_clear: float = typer.Option(0.75, "--min-clear", help="Least clear fraction of a patch to use a date (of the pixels that the images cover at some date)."),
        coregister: str = typer.Option("auto", help="Sub-pixel co-registration of the dates: auto | on | off."),
        radiometry: str = typer.Option("auto", help="Known per-date offsets (Sentinel-2 baseline >= 04.00...): auto | off."),
        date_normalisation: str = typer.Option("off", "--date-normalisation", help="Per-date gain/offset matched to the reference date: off | reference."),
        seed: int = typer.Option(0, help="Seed (encoder sampling, clustering)."),
        label: Optional[str] = typer.Option(None, help="Readable series label that begins every event id (at most 32 characters; other characters than letters, digits and _ become _)."),
        config: Optional[Path] = typer.Option(None, "--config", help="JSON file of configuration keys (the options' names with underscores, and the keys only a file sets: cloud_screen, snow_screen, n_clusters, transient_weight, seasonal_weight, report_top, source_options, encoder_options; see the README), or a run's own config.json; options given here override it."),
        scheduler: Optional[str] = typer.Option(None, help="dask.distributed scheduler address."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run made with another configuration.")):
    """The whole pipeline on real data; resumes an interrupted run."""
    _not_empty({"SOURCE": source, "--kind": kind, "--dates": dates, "--bands": bands, "--grid": grid, "--mask": mask,
                "--mask-convention": mask_convention, "--weights": weights, "--compare": compare, "--label": label,
                "--scheduler": scheduler})
    if kind is None and config is None and source.partition(":")[0] != "synthetic" and not Path(source).exists():
        from .errors import SourceError  # (told before seconds of importing the pipeline: the commonest typo)

        raise SourceError("does not exist", Path(source))
    from .pipeline import RunConfig, resolved_path

    base = {}
    if config is not None:
        try:
            base = json.loads(Path(config).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            other = {".yaml": "YAML", ".yml": "YAML", ".toml": "TOML"}.get(Path(config).suffix.lower())
            why = f"it is {other}, and --config reads JSON" if other and not isinstance(exc, OSError) else str(exc)
            raise ConfigError(f"cannot read the configuration: {why} (a JSON object of keys and values, as config.json "
                              "of a run directory holds under \"config\")", config) from exc
        if not isinstance(base, dict):
            raise ConfigError(f"the configuration must be a JSON object of keys and values, got a {type(base).__name__}", config)
        if isinstance(base.get("config"), dict) and "changescout" in base:  # a run's own config.json: its settings
            base = base["config"]  # (it was refused: "unknown configuration keys ['changescout', 'comparison', ...]")
        # where to compute, not what: no part of the run's configuration (a rerun elsewhere is the same run), but
        # a batch job's file may name its cluster; --scheduler overrides it
        base = dict(base)
        from_file = base.pop("scheduler", None)
        if from_file is not None and (not isinstance(from_file, str) or not from_file.strip()):
            raise ConfigError(f"scheduler must be a dask scheduler address (text), got {from_file!r}", config)
        scheduler = scheduler or from_file
        if base.get("source") is not None and not isinstance(base["source"], str):
            raise ConfigError(f"source must be text (a path, or synthetic[:key=value,...]), got {base['source']!r}", config)
        if source is not None and base.get("source") is not None and resolved_path(source) != resolved_path(base["source"]):
            # a run's configuration reused for another source: the kind and label it resolved, its dates, mask and
            # source options were its source's (the demo's synthetic seed refused every other source)
            left = [k for k in SOURCE_KEYS if base.get(k) not in (None, {}, []) and k not in ("kind", "label")]
            if left:
                _log(f"warning: the configuration's {', '.join(left)} belonged to its source ({base['source']}) and are "
                     "not carried to this one (give them for it: as options, or source_options in a --config file whose "
                     "source is this one)")
            base = {k: v for k, v in base.items() if k not in SOURCE_KEYS}
    given = {"source": source, "kind": kind, "dates": _split(dates), "bands": _split(bands), "grid": grid, "mask": mask,
             "mask_convention": mask_convention, "weights": weights, "label": label}
    for name, value in {"encoder": encoder, "patch_size": patch_size, "compare": compare, "rank_by": rank_by,
                        "min_clear": min_clear, "seed": seed, "coregister": coregister, "radiometry": radiometry,
                        "date_normalisation": date_normalisation}.items():
        if name not in base or _given(ctx, name):
            given[name] = value
    merged = {**base, **{k: v for k, v in given.items() if v is not None or k not in base}}
    try:
        resolved = RunConfig.from_dict(merged)
    except ConfigError as exc:
        if config is None or exc.path is not None:
            raise
        try:  # a bad value of the file's (not overridden here) is told with the file's name
            RunConfig.from_dict({**base, "source": base.get("source", source)})
        except ConfigError as own:
            if own.message == exc.message:
                raise ConfigError(exc.message, config) from exc
        raise
    _run(resolved, out, overwrite, scheduler)


#: Configuration keys that describe one source, left behind when a configuration is reused for another.
SOURCE_KEYS = ("kind", "label", "dates", "mask", "mask_convention", "source_options")


def _given(ctx, name: str) -> bool:
    return getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"


@app.command(cls=_Command)
def similar(run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory."),
            event_id: Optional[str] = typer.Argument(None, metavar="EVENT_ID", help="Event id of the query change."),
            at: Optional[str] = typer.Option(None, help="X,Y of the query patch in the run's CRS."),
            t1: Optional[str] = typer.Option(None, help="Date (YYYY-MM-DD) of the query change, with --at."),
            k: int = typer.Option(10, "--k", "-k", help="Number of results."),
            in_runs: list[Path] = typer.Option([], "--in", metavar="RUN", help="Another run to search too; repeat the option for more (--in A --in B)."),
            negatives: list[str] = typer.Option([], "--not", metavar="EVENT_ID", help="An event id that is not what you look for: it is left out, and the search is turned away from it (results like it drop too); repeat the option for more."),
            objects: bool = typer.Option(False, "--objects", help="Compare the event's change object with the change objects of the runs (the candidates of objects.parquet, each by its onset patches and how it unfolds around them); one result per object."),
            as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """The changes most similar to one event, in this run and others."""
    from .similar import find_similar

    xy = None
    if at:
        try:
            xy = tuple(float(v) for v in at.split(","))
        except ValueError:
            xy = ()
        if len(xy) != 2:
            raise ConfigError(f"--at takes X,Y (two numbers), got {at!r}")
    res = find_similar(run_dir, event_id, at=xy, t1=t1, k=k, other_runs=in_runs, negatives=negatives, objects=objects)
    if as_json:  # each row also names the query and whether the rows are objects or patch events
        rows = res.assign(t0=res["t0"].astype(str), t1=res["t1"].astype(str), query=res.attrs.get("query"),
                          result="object" if objects else "patch")
        out_console.print_json(rows.to_json(orient="records"))
        return
    obj = res.attrs.get("query_object")
    title = (f"Similar to object {obj} (queried with its patch {res.attrs.get('query')}); its own patches left out" if objects and obj is not None
             else f"Similar to {res.attrs.get('query')}" + (f"; the other {n} patch event{'s' if n > 1 else ''} of its object {obj} left out"
                                                            if obj is not None and (n := res.attrs.get("own_left_out", 0)) else ""))
    if res.attrs.get("same_change_elsewhere"):
        title += f"; and the same change seen by the overlapping --in runs ({res.attrs['same_change_elsewhere']} patch events)"
    if res.attrs.get("seen_twice"):
        title += f"; {res.attrs['seen_twice']} change(s) that two of the runs both see are listed once"
    rows = [{"#": str(i), "event_id": r["event_id"], "similarity": f"{r['similarity']:.3f}", "t0": f"{r['t0']:%Y-%m-%d}",
             "t1": f"{r['t1']:%Y-%m-%d}", "atypicality": f"{r['atypicality']:.3f}",
             "false alarms": "" if not np.isfinite(r["false_alarm_rate"]) else f"{r['false_alarm_rate']:.2%}",
             "rank": str(r["rank"]), "object": str(r["object_id"]), "object rank": str(r["object_rank"]),
             "cluster": str(r["cluster"]), "run": str(r["run"])} for i, (_, r) in enumerate(res.iterrows(), 1)]
    columns = ["event_id", "similarity", "t0", "t1", "atypicality", "false alarms", "rank", "object", "object rank", "cluster"]
    columns += ["run"] if in_runs else []  # (else each is of RUN)
    width = out_console.width
    # the event ids (what a next query takes) whole in the table where they fit, else numbered and listed whole below it
    inline = _fitting(columns, rows, width, drop=("cluster", "object rank"), fold=("run",))
    shown = inline or _fitting(["#", *columns[1:10]], rows, width, drop=("cluster", "object rank", "rank", "object")) or \
        _fitting(["#", *columns[1:4]], rows, float("inf"))  # (#, similarity, t0, t1 in any terminal)
    out_console.print(_table(title, shown, rows, fold=("run",), left=("event_id",)))
    if inline is None:
        out_console.print("Event ids (an EVENT_ID for `changescout similar`)" + (", and their runs:" if in_runs else ":"))
        for row in rows:
            out_console.print(escape(f"  {row['#']:>3}  {row['event_id']}" + (f"  {row['run']}" if in_runs else "")), soft_wrap=True)
    for run, days, mine in res.attrs.get("trajectories_left_out", []):  # (similar._similar_objects)
        out_console.print(escape(f"Note: the dates of {run} lie {days:g} days apart, this run's {mine:g}: how its objects "
                                 "unfolded after their onset (counted in dates) was not compared, only what changed"),
                          soft_wrap=True)


@app.command(cls=_Command)
def export(run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory."),
           fmt: str = typer.Option(..., "--format", help="gpkg | geojson | csv"),
           table: str = typer.Option("events", "--table", help="events (patch changes) | objects (the analyst's list)."),
           top: Optional[int] = typer.Option(None, help="Only the N most atypical rows."),
           out: Optional[Path] = typer.Option(None, "--out", help="Output file, in an existing folder (default: RUN/<table>.<format>)."),
           overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output file if it exists.")):
    """Export the events or objects table for GIS tools (GeoJSON in WGS 84, as RFC 7946 asks)."""
    from .events import EXPORT_FORMATS, check_export_target, check_run_dir, damaged_output, export_table, read_events
    from .intact import tables_problem
    from .objects import read_objects

    check_run_dir(run_dir)
    fmt = fmt.lower()
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format must be one of {sorted(EXPORT_FORMATS)}, got {fmt!r}")
    readers = {"events": read_events, "objects": read_objects}
    table = table.lower()
    if table not in readers:
        raise ConfigError(f"--table must be events or objects, got {table!r}")
    target = out or Path(run_dir) / f"{table}{EXPORT_FORMATS[fmt][1]}"
    check_export_target(target, fmt, overwrite, run_dir)  # before the tables are read (and again as it writes)
    with runlock.reading(run_dir):  # not while a run rewrites it
        rows = readers[table](run_dir)
        events = rows if table == "events" else read_events(run_dir)
        if (found := tables_problem(run_dir, events, rows if table == "objects" else None)) is not None:
            raise damaged_output(*found)  # (another run's table, of the same series: the same ids)
        export_table(rows, target, fmt, top=top, layer=table, overwrite=overwrite)
    _log(f"wrote {target}")


@app.command(cls=_Command)
def benchmark(dataset: str = typer.Argument(..., metavar="DATASET", help="oscd | pairs | dynamicearthnet | synthetic"),
              root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder (OSCD: city folders; pairs: A/, B/, label/; synthetic: optional, the shared folder holding the Bouconne series to plant changes into)."),
              seeds: Optional[str] = typer.Option(None, help="synthetic only: seeds of the planted-change series (default 0,1,2,3,4)."),
              encoders_: Optional[str] = typer.Option(None, "--encoders", help="Comma-separated encoders (default: every encoder whose weights are found; \"\" for none: the baselines alone)."),
              baselines: Optional[str] = typer.Option(None, help="Comma-separated baselines (default: cva-raw,cva-z,irmad,pca-kmeans)."),
              out: Optional[Path] = typer.Option(None, help="Output folder: metrics.json, metrics.md, per_item.csv, and for labelled datasets ablation.md, roc.png, pr.png (a folder holding them is refused without --overwrite; replaced only once all are written; other files are left alone)."),
              overwrite: bool = typer.Option(False, "--overwrite", help="Replace the outputs of an earlier benchmark in --out."),
              fine_patch: int = typer.Option(8, help="Patch size (px) at which encoders embed (1, 2, 4, 8 or 16: a whole part of the 16 px patches scored); distances are averaged upward."),
              weights_dir: Optional[Path] = typer.Option(None, envvar="CHANGESCOUT_WEIGHTS_DIR", help="Folder with <encoder>/<weights file>.")):
    """Encoders and classic baselines against labelled change: pixel and patch (16, 32 px) AUROC, AP, F1, IoU."""
    import os

    from .evaluate.benchmark import DATASETS, OUTPUTS, check_out, metrics_table, run_benchmark

    if dataset not in DATASETS:
        raise ConfigError(f"unknown benchmark dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if root is None and dataset != "synthetic":
        raise ConfigError(f"benchmark {dataset} needs --root PATH (the dataset folder)")
    if out is not None:
        check_out(out, overwrite)  # before any work: a file, an unwritable folder or earlier outputs are refused (exit 2)
    if weights_dir is not None:
        if not weights_dir.is_dir():  # (it ran on, every pretrained encoder left out without a word; a review)
            raise ConfigError("--weights-dir (or CHANGESCOUT_WEIGHTS_DIR) " + ("is a file, not a folder of <encoder>/<weights "
                              "file>" if weights_dir.exists() else "does not exist"), weights_dir)
        os.environ["CHANGESCOUT_WEIGHTS_DIR"] = str(weights_dir)
    if seeds is not None and dataset != "synthetic":  # (it was taken, checked and ignored)
        raise ConfigError(f"--seeds applies to the synthetic benchmark only (planted-change series); {dataset} has "
                          "fixed items")
    split = lambda v: [x.strip() for x in v.split(",") if x.strip()] if v is not None else None  # noqa: E731 ("" = none)
    result = run_benchmark(dataset, root, encoders=split(encoders_), baselines=split(baselines), out=out,
                           fine_patch=fine_patch, log=_log, seeds=_seeds("0,1,2,3,4" if seeds is None else seeds))
    table = metrics_table(result["rows"])
    view = Table(title=f"Benchmark {dataset} ({len(set(table['method']))} methods)")
    cols = [c for c in table.columns if c not in ("otsu_f1",)]
    for c in cols:
        view.add_column(c, justify="left" if c == "method" else "right")
    for _, r in table.iterrows():
        view.add_row(*[("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(int(v)) if c == "patch_size"
                        else f"{v:.3f}" if isinstance(v, float) else str(v)) for c, v in ((c, r.get(c)) for c in cols)])
    out_console.print(view)
    for note in result["notes"]:
        out_console.print(f"note: {escape(note)}")
    if out is not None:
        out_console.print(f"Outputs in {escape(str(out))}: {', '.join(n for n in OUTPUTS if (out / n).is_file())}")


@app.command(cls=_Command)
def encoders(as_json: bool = typer.Option(False, "--json", help="Machine-readable output (null where a value needs the weights of an encoder that does not declare it; "
                                                                "any_bands and weights_status say what the table says).")):
    """Available encoders: bands, dimension, patch size, weights found or not."""
    from .encoders import available_encoders, encoder_class, get_encoder
    from .encoders.base import PretrainedEncoder

    rows = []
    for name in available_encoders():
        try:
            enc = get_encoder(name)
            s = enc.spec
            # where the weights were found (a review: the bare file name said nothing of which copy is read)
            where = next((str(w) for w in (getattr(enc, a, None) for a in ("weights_path", "folder", "weights"))
                          if isinstance(w, (str, Path))), None) if s.weights_file else None
            rows.append({"name": name, "bands": None if s.bands is None else list(s.bands), "dim": s.dim or None,
                         "patch_size": s.patch_size, "weights": where or s.weights_file or "none needed",
                         "weights_found": isinstance(enc, PretrainedEncoder), "learnt_per_run": not isinstance(enc, PretrainedEncoder),
                         "license": s.license, "any_bands": s.bands is None, "weights_status": None if s.weights_file else "none needed"})
        except ChangescoutError as exc:  # weights not found: what the encoder declares, without them
            try:
                s = getattr(encoder_class(name), "declared_spec", lambda: None)()
            except ChangescoutError:  # a plugin that does not load (warned of): listed as such, the others still
                s = None
            rows.append({"name": name, "bands": None if s is None or s.bands is None else list(s.bands),
                         "dim": (s and s.dim) or None, "patch_size": s and s.patch_size, "weights": str(exc),
                         "weights_found": False, "learnt_per_run": False, "license": s and s.license})
        r = rows[-1]  # what the table shows, in the JSON too: bands null is "any" for an encoder that was built
        r.setdefault("any_bands", False)  # (one whose weights were not found: unknown, unless it declares them)
        r["weights_status"] = ("learnt per run" if r["learnt_per_run"] else r.get("weights_status") or
                               ("found" if r["weights_found"] else "not found"))
    if as_json:
        out_console.print_json(json.dumps(rows))
        return
    shown = [{"name": r["name"], "bands": "any" if r["any_bands"] else ",".join(r["bands"] or ["?"]),
              "dim": str(r["dim"] or "?"), "patch size": str(r["patch_size"] or "?"), "weights": r["weights"],
              "weights found": {"found": "yes", "not found": "no"}.get(r["weights_status"], r["weights_status"]),
              "license": r["license"] or ""} for r in rows]
    fold = ("bands", "weights", "license")  # (the name, what --encoder takes, is never cut)
    widths = _fitting(list(shown[0]), shown, out_console.width, drop=("license", "patch size", "dim"), fold=fold) or \
        _fitting(["name", "weights found", "weights"], shown, float("inf"), fold=fold)
    unknown = any("?" in (r["dim"], r["patch size"], r["bands"]) for r in shown)  # (a plugin that declares nothing)
    out_console.print(_table("Encoders" + (" (? = known once the weights are found)" if unknown else ""), widths, shown, fold=fold,
                             left=("name", "weights found")))


def _click_of_typer():
    """The click that typer runs on (typer may ship its own copy)."""
    try:
        from typer import _click as click
    except ImportError:
        import click
    return click


def main(argv=None) -> None:
    """Run the app and map errors to exit codes (callable in-process: the signal handlers it sets for the
    run are put back when it returns)."""
    import signal

    main_thread = threading.current_thread() is threading.main_thread()
    previous = (signal.signal(signal.SIGTERM, _on_sigterm), signal.signal(signal.SIGINT, _on_sigint)) if main_thread else None
    try:
        _main_guarded(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])


def entry() -> None:
    """The ``changescout`` console script: :func:`main`, and after a Ctrl-C a second one during the
    interpreter's shutdown (worker threads joined) exits 130 at once instead of a traceback."""
    import signal

    try:
        main()
    finally:
        if _interrupted.is_set() and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _on_sigint)


def _disk_full(exc: BaseException) -> bool:
    """A full disk or quota: an OSError, or a library's RuntimeError that says so (faiss writing index.faiss)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, RuntimeError) and ("No space left on device" in str(exc) or "Disk quota exceeded" in str(exc))


def _main_guarded(argv) -> None:
    _terminated.clear()
    _interrupted.clear()
    try:
        code = app(args=argv, standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into an exit code, returned (not raised) outside standalone mode
            raise _Terminated() if _terminated.is_set() else KeyboardInterrupt()
        if isinstance(code, int) and code:
            sys.exit(code)
    except ChangescoutError as exc:
        if _state["debug"]:
            console.print_exception()
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except KeyboardInterrupt as exc:
        command = next((a for a in (argv or sys.argv[1:]) if not str(a).startswith("-")), None)
        resumable = command in ("run", "demo")  # (similar, export, a benchmark: nothing to resume)
        console.print("interrupted; rerun the same command to resume" if resumable else "interrupted")
        sys.exit(143 if isinstance(exc, _Terminated) else 130)
    except Exception as exc:
        click = _click_of_typer()
        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(2)
        if isinstance(exc, getattr(click.exceptions, "Abort", ())):
            sys.exit(1)
        if _state["debug"]:
            raise
        if _disk_full(exc):  # the machine's, not ours
            args = [str(a) for a in (argv or sys.argv[1:])]
            command = next((a for a in args if not a.startswith("-")), None)
            out = args[args.index("--out") + 1] if "--out" in args[:-1] else None
            where = (f" writing {exc.filename}" if getattr(exc, "filename", None) else f" writing in {out}" if out else "")
            again = "; the run resumes where it stopped" if command in ("run", "demo") else ""
            console.print(f"[bold red]error:[/] {escape(f'no space left on the disk{where}: free some and rerun the same command{again}')}")
            sys.exit(1)
        if isinstance(exc, PermissionError):  # a file or folder this user may not read or write: the setup's, not ours
            what = exc.filename or "a file"
            console.print(f"[bold red]error:[/] {escape(f'{what}: permission denied (this user may not read or write it, or a folder above it does not let it through)')}")
            sys.exit(2)
        console.print(f"[bold red]internal error:[/] {escape(f'{type(exc).__name__}: {exc}')} (rerun with --debug for the traceback)")
        sys.exit(1)
