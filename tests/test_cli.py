"""The command line: exit codes, messages, and the commands on a finished run.

Commands are called through ``changescout.cli.main`` (the console-script entry point, which maps errors to exit
codes). Only one real pipeline run is made here; everything else reads the session run or a copy of it.
"""

import json
import os
import re
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import typer

from changescout import cli
from cli_call import run_cli
from changescout.events import read_events
from changescout.objects import read_objects
from changescout.pipeline import RunConfig
from changescout.similar import RunView


def call(capsys, *args):
    """Run the CLI; return (exit code, stdout, stderr with runs of white space as one space)."""
    return run_cli(capsys, *args)[:3]


def compact(text):
    """Without whitespace: rich wraps long lines of the error console."""
    return re.sub(r"\s+", "", text)


# -- errors and exit codes -----------------------------------------------------------------------------
def test_run_on_a_missing_path_exits_2_with_the_path_and_no_traceback(capsys, tmp_path):
    missing = tmp_path / "no_such_folder"
    code, out, err = call(capsys, "run", missing, "--out", tmp_path / "out")
    assert code == 2
    assert compact(str(missing)) in compact(err)
    assert "does not exist" in err
    assert "Traceback" not in err + out
    assert not (tmp_path / "out").exists()


def test_a_missing_source_is_told_before_the_pipeline_is_imported(tmp_path):
    """The commonest typo is told at once: importing the pipeline (scikit-learn, geopandas, dask) took 3-5 s
    before the path was even looked at."""
    import subprocess

    script = ("import sys\nfrom changescout import cli\ntry:\n    cli.main(['run', sys.argv[1], '--out', sys.argv[2]])\n"
              "except SystemExit as e:\n    print('exit', e.code, 'changescout.pipeline' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "nope"), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert "exit 2 False" in done.stdout, done.stdout + done.stderr


def test_python_dash_m_changescout_is_the_command_line(tmp_path):
    """Where the console script is not on PATH (a venv not activated), `python -m changescout` runs the same
    command line: a bad source exits 2 with the message (`python -m changescout.cli` did nothing, exit 0)."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "changescout", "run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "does not exist" in done.stderr + done.stdout


def test_debug_shows_the_traceback(capsys, tmp_path):
    code, out, err = call(capsys, "--debug", "run", tmp_path / "missing", "--out", tmp_path / "out")
    assert code == 2
    assert "Traceback" in err and "SourceError" in err


@pytest.mark.parametrize("name", ["scenes [old]", "a[/b]c"])
def test_error_messages_show_paths_with_brackets_verbatim(capsys, tmp_path, name):
    missing = tmp_path / name
    code, out, err = call(capsys, "run", missing, "--out", tmp_path / "out")
    assert code == 2
    assert compact(str(missing)) in compact(err)


def test_internal_errors_exit_1_and_debug_raises(capsys, tmp_path, monkeypatch):
    import changescout.pipeline

    def boom(*a, **k):
        raise RuntimeError("kaput")

    monkeypatch.setattr(changescout.pipeline, "run_pipeline", boom)
    code, out, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o")
    assert code == 1
    assert "internal error" in err and "kaput" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError, match="kaput"):
        cli.main(["--debug", "run", "synthetic", "--out", str(tmp_path / "o")])


def test_ctrl_c_exits_130_and_says_how_to_resume(capsys, tmp_path, monkeypatch):
    """Typer turns Ctrl-C into an exit code that it returns outside standalone mode: the run exited 0, silently,
    and ``changescout run ... && next_step`` went on."""
    import changescout.pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(changescout.pipeline, "run_pipeline", interrupted)
    code, out, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o")
    assert code == 130 and "interrupted; rerun the same command to resume" in out + err
    import changescout.similar

    monkeypatch.setattr(changescout.similar, "find_similar", interrupted)  # nothing to resume: not said
    code, out, err = call(capsys, "similar", str(tmp_path / "o"), "some-id")
    assert code == 130 and "interrupted" in out + err and "resume" not in out + err


def test_a_second_ctrl_c_stops_at_once_with_130(capsys, tmp_path, monkeypatch):
    """Ctrl-C twice: the first stops the run to be resumed; the second, while the first is handled (and during
    the interpreter's shutdown, after main returns), exits 130 at once. It raised a KeyboardInterrupt inside
    the shutdown (a traceback, exit 134 from an abort in 2 of 9 tries of an acceptance test)."""
    import signal

    import changescout.pipeline

    exits = []

    def exit_now(code):  # os._exit does not return
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(cli.os, "_exit", exit_now)

    def interrupted(*a, **k):
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # what the first Ctrl-C does

    monkeypatch.setattr(changescout.pipeline, "run_pipeline", interrupted)
    before = signal.getsignal(signal.SIGINT)
    try:
        code, out, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o")
        assert code == 130 and "rerun the same command to resume" in out + err and exits == []
        assert signal.getsignal(signal.SIGINT) is before  # main, called in-process, leaves the caller's handler
        monkeypatch.setattr(sys, "argv", ["changescout", "run", "synthetic", "--out", str(tmp_path / "o")])
        with pytest.raises(SystemExit):
            cli.entry()  # the console script: the same, then its handler stays for the interpreter's shutdown
        assert exits == []
        with pytest.raises(SystemExit):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # the second Ctrl-C, after the script's main returned
        assert exits == [130]
    finally:
        signal.signal(signal.SIGINT, before)


def test_an_unreachable_scheduler_exits_2_naming_the_address(capsys, tmp_path, monkeypatch):
    """distributed's Client raises OSError after its connect timeout: that was an internal error (exit 1)."""
    import sys
    import types

    def refuse(address, **kwargs):
        raise OSError(f"Timed out trying to connect to {address} after 30 s")

    monkeypatch.setitem(sys.modules, "distributed", types.SimpleNamespace(Client=refuse))
    code, _, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o", "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and "cannot connect to the dask scheduler at 'tcp://127.0.0.1:1'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_bad_input_is_told_before_the_scheduler_is_contacted(capsys, tmp_path, monkeypatch):
    """A bad option or a missing source with --scheduler exits 2 at once: an unreachable scheduler took 30 s
    to fail first, and then named the scheduler instead of the real problem."""
    import sys
    import types

    contacted = []
    monkeypatch.setitem(sys.modules, "distributed", types.SimpleNamespace(Client=lambda address, **kw: contacted.append(address)))
    code, _, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o", "--min-clear", "1.5", "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and "min-clear must be" in err
    code, _, err = call(capsys, "run", tmp_path / "missing.tif", "--out", tmp_path / "o", "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and "missing.tif" in err and "does not exist" in err
    # a misspelt kind, encoder or encoder option (a batch job's --config file: a review)
    for option, said in ((["--kind", "geotif"], "unknown source kind 'geotif'"), (["--encoder", "rfc"], "no encoder named 'rfc'")):
        code, _, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o", *option, "--scheduler", "tcp://127.0.0.1:1")
        assert code == 2 and said in err, err
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"encoder_options": {"n_featurs": 64}}))
    code, _, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o", "--config", cfg, "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and "encoder 'rcf' takes no option 'n_featurs'" in err
    assert contacted == [] and not (tmp_path / "o").exists()


def test_a_cluster_lost_during_a_run_exits_1_in_one_line_and_says_a_rerun_resumes(capsys, tmp_path, monkeypatch):
    """A scheduler that went away mid-run ended in distributed's tracebacks and "internal error:
    FutureCancelledError", without a word that the finished stages are kept (UAT)."""
    import sys
    import types
    from concurrent.futures import CancelledError

    import changescout.pipeline

    class Gone:
        status = "closed"

        def nthreads(self):
            return {}

        def close(self, timeout=None):
            raise OSError("no scheduler to say goodbye to")

    def cut(*args, **kwargs):
        raise CancelledError("scheduler-connection-lost")

    monkeypatch.setitem(sys.modules, "distributed", types.SimpleNamespace(Client=lambda address, **kw: Gone()))
    monkeypatch.setattr(changescout.pipeline, "run_pipeline", cut)
    code, _, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o", "--scheduler", "tcp://10.0.0.9:8786")
    assert code == 1 and "Traceback" not in err and "internal error" not in err
    assert "lost the dask cluster at tcp://10.0.0.9:8786" in err and "rerun the same command" in err


@pytest.mark.parametrize("at", ["nan,nan", "inf,4836000", "1e400,4836000"])
def test_similar_at_a_point_that_is_no_number_exits_2(capsys, session_run, at):
    code, _, err = call(capsys, "similar", session_run, "--at", at, "--t1", "2021-06-15")
    assert code == 2 and "is not a place: X and Y must be finite numbers" in err and "internal error" not in err


def test_similar_on_a_path_that_does_not_exist_says_so(capsys, tmp_path):
    code, _, err = call(capsys, "similar", tmp_path / "nowhere", "some-id")
    assert code == 2 and "nowhere: does not exist" in err
    code, _, err = call(capsys, "export", tmp_path / "nowhere", "--format", "csv")  # ("no events table here")
    assert code == 2 and "nowhere: does not exist" in err


def test_bad_options_exit_2(capsys, tmp_path):
    code, _, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o", "--compare", "weekly")
    assert code == 2 and "--compare" in err
    assert not (tmp_path / "o").exists()
    bad = tmp_path / "cfg.json"
    bad.write_text("{not json")
    code, _, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o", "--config", bad)
    assert code == 2 and "cannot read the configuration" in err
    bad.write_text(json.dumps({"patchsize": 8}))
    code, _, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o", "--config", bad)
    assert code == 2 and "patchsize" in err
    bad.write_text("[1, 2]")
    code, _, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o", "--config", bad)
    assert code == 2 and "must be a JSON object" in err and "cfg.json" in err
    code, _, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o", "--patch-size", 1000)
    assert code == 2 and "patch-size must be a whole number in [1, 128]" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name, text, expected", [
    ("cfg.yaml", "patch_size: 8\n", "it is YAML, and --config reads JSON"),
    ("cfg.json", json.dumps({"patch_size": "8"}), "patch-size must be a whole number"),  # the file's value: named
    ("cfg.json", json.dumps({"label": 42}), "label must be text, got 42"),  # was a TypeError, exit 1
    ("cfg.json", json.dumps({"encoder_options": {"bogus": 1}}), "encoder 'rcf' takes no option 'bogus'; its options: patch_size, dim"),
])
def test_bad_configuration_files_exit_2_naming_the_file(capsys, tmp_path, name, text, expected):
    """Values from --config that failed inside the run were internal errors (exit 1), and messages about the
    file's values did not name it (UAT)."""
    cfg = tmp_path / name
    cfg.write_text(text)
    code, _, err = call(capsys, "run", "synthetic", "--out", tmp_path / "o", "--config", cfg)
    assert code == 2 and expected in err and "internal error" not in err, err
    if "encoder" not in expected:  # (options are checked when the encoder is built)
        assert str(cfg) in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [["run", "synthetic", "--out", "o", "--patch-size", "sixteen"], ["no-such-command"],
                                  ["run", "synthetic"]])
def test_usage_errors_exit_2(capsys, args):
    code, _, err = call(capsys, *args)
    assert code == 2
    assert "internal error" not in err


def test_config_file_values_are_used_unless_given_on_the_command_line(capsys, tmp_path, monkeypatch):
    import changescout.pipeline

    seen = {}
    monkeypatch.setattr(changescout.pipeline, "run_pipeline", lambda config, out, **k: seen.update(config=config, out=out))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"patch_size": 8, "min_clear": 0.9, "compare": "anniversary", "seed": 5,
                               "label": "from_file", "n_clusters": 4}))
    code, _, err = call(capsys, "-q", "run", "synthetic", "--out", tmp_path / "o", "--config", cfg, "--seed", 3)
    assert code == 0, err
    c = seen["config"]
    assert (c.patch_size, c.min_clear, c.compare, c.label, c.n_clusters) == (8, 0.9, "anniversary", "from_file", 4)
    assert c.seed == 3  # given on the command line: wins over the file
    assert c.source == "synthetic" and seen["out"] == tmp_path / "o"


def test_a_runs_configuration_reused_for_another_source_leaves_its_kind_and_label_behind(capsys, tmp_path, monkeypatch):
    """config.json holds the kind and label a run resolved for its source, and its dates and source options; given
    with --config for another source they must not come along (the kind refused the new source, the label went
    into every event id, the demo's synthetic seed made every other source exit 2 and Bouconne's 7 dates a
    folder of 105 images), and the run says so, while the same source keeps them (a resume)."""
    import changescout.pipeline

    seen = []
    monkeypatch.setattr(changescout.pipeline, "run_pipeline", lambda config, out, **k: seen.append(config))
    (tmp_path / "other").mkdir()
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"source": "synthetic", "kind": "synthetic", "label": "synthetic", "seed": 3, "bands": ["B04"],
                               "dates": ["2020-01-01", "2020-02-01"], "source_options": {"seed": 0},
                               "mask_convention": "fmask"}))
    code, out, err = call(capsys, "-q", "run", str(tmp_path / "other"), "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert code == 0, err
    c = seen[-1]
    assert c.kind is None and c.label is None and c.dates is None and c.source_options == {} and c.seed == 3
    assert c.mask_convention is None  # (its source's Fmask codes read another source's SCL: vegetation as cloud)
    assert c.bands == ["B04"]  # (the same bands elsewhere: a setting, not the source's)
    assert "warning: the configuration's dates, mask_convention, source_options belonged to its source (synthetic)" in err
    call(capsys, "-q", "run", "synthetic", "--out", str(tmp_path / "o"), "--config", str(cfg))
    c = seen[-1]
    assert c.kind == "synthetic" and c.label == "synthetic" and c.source_options == {"seed": 0} and len(c.dates) == 2


def test_a_configuration_file_may_name_the_cluster_and_the_command_line_overrides_it(capsys, tmp_path, monkeypatch):
    """The README says a configuration file takes the options' keys; "scheduler" was refused as an unknown key, so a
    batch job could not keep its cluster's address in its file. It is where to compute, not part of the run's
    configuration; --scheduler wins over it."""
    seen = []
    monkeypatch.setattr(cli, "_run", lambda config, out, overwrite, scheduler: seen.append((config, scheduler)))
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"scheduler": "tcp://10.0.0.5:8786", "seed": 4}))
    code, _, err = call(capsys, "-q", "run", "synthetic", "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert code == 0, err
    assert seen[-1][1] == "tcp://10.0.0.5:8786" and seen[-1][0].seed == 4 and "scheduler" not in seen[-1][0].to_dict()
    call(capsys, "-q", "run", "synthetic", "--out", str(tmp_path / "o"), "--config", str(cfg), "--scheduler", "tcp://h:1")
    assert seen[-1][1] == "tcp://h:1"
    for bad in (8786, "", "  "):  # ("" was taken as not given, and the run computed here: a review)
        cfg.write_text(json.dumps({"scheduler": bad}))
        for given in ([], ["--scheduler", "tcp://h:1"]):  # (a bad value of the file's is told, given over or not)
            code, _, err = call(capsys, "run", "synthetic", "--out", str(tmp_path / "o"), "--config", str(cfg), *given)
            assert code == 2 and "scheduler must be a dask scheduler address" in err and "c.json" in err, err
    for bad in (5, True, ["x"]):  # (an internal error, exit 1: a review)
        cfg.write_text(json.dumps({"source": bad}))
        code, _, err = call(capsys, "run", "synthetic", "--out", str(tmp_path / "o"), "--config", str(cfg))
        assert code == 2 and "source must be text" in err and "internal error" not in err, err
    cfg.write_text(json.dumps({"out": "x"}))
    code, _, err = call(capsys, "run", "synthetic", "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert code == 2 and "unknown configuration keys ['out']" in err and "'scheduler'" in err


def test_a_runs_own_config_json_is_read_as_its_settings(capsys, tmp_path, monkeypatch, session_run):
    """Given as --config, a run's config.json was refused: "unknown configuration keys ['changescout',
    'comparison', 'config', ...]". Its config section is the run's settings, resolved."""
    import changescout.pipeline

    seen = []
    monkeypatch.setattr(changescout.pipeline, "run_pipeline", lambda config, out, **k: seen.append(config))
    recorded = json.loads((session_run / "config.json").read_text())["config"]
    code, _, err = call(capsys, "-q", "run", recorded["source"], "--out", str(tmp_path / "o"), "--config",
                        str(session_run / "config.json"))
    assert code == 0, err
    assert seen[-1].to_dict() == recorded


def test_paths_are_resolved_so_that_a_rerun_from_elsewhere_is_the_same_run(capsys, tmp_path, monkeypatch):
    """data/x, ./data/x/ and /abs/data/x name one source: the configuration keeps the resolved path (it is
    hashed), so a rerun typed another way resumes instead of being refused as another configuration."""
    import changescout.pipeline

    seen = []
    monkeypatch.setattr(changescout.pipeline, "run_pipeline", lambda config, out, **k: seen.append(config))
    (tmp_path / "data" / "x").mkdir(parents=True)
    (tmp_path / "w.npz").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    for source in ("data/x", "./data/x/", str(tmp_path / "data" / "x")):
        code, _, err = call(capsys, "-q", "run", source, "--out", "o", "--weights", "w.npz")
        assert code == 0, err
    assert {c.source for c in seen} == {str(tmp_path / "data" / "x")} and {c.weights for c in seen} == {str(tmp_path / "w.npz")}
    call(capsys, "-q", "run", "synthetic:size=128", "--out", "o")
    assert seen[-1].source == "synthetic:size=128"  # not a path: as given
    # a run made in Python is the command line's (run_pipeline kept "data/x", and the two refused each other's
    # run directory as another configuration: a notebook user's review)
    from changescout.pipeline import RunConfig

    config = RunConfig(source="data/x", weights="w.npz", mask="nothing.tif").validate()
    assert (config.source, config.weights, config.mask) == (str(tmp_path / "data" / "x"), str(tmp_path / "w.npz"), "nothing.tif")
    (tmp_path / "synthetic").mkdir()  # the demo's source is no folder of the working directory
    assert RunConfig(source="synthetic", kind="synthetic").validate().source == "synthetic"


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM")
def test_sigterm_stops_a_run_as_ctrl_c_does(capsys, tmp_path, monkeypatch):
    """A batch scheduler's time limit (SIGTERM) ends a run with a message and exit 143, its stage marked interrupted,
    to be resumed by the same command; the test process's own handler is back afterwards."""
    import signal

    import changescout.pipeline

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(changescout.pipeline, "run_pipeline", lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    code, _, err = call(capsys, "run", "synthetic:size=128", "--out", tmp_path / "o")
    assert code == 143 and "interrupted; rerun the same command to resume" in err
    assert signal.getsignal(signal.SIGTERM) is before


def test_version(capsys):
    from changescout import __version__

    code, out, _ = call(capsys, "--version")
    assert code == 0 and out.strip() == f"changescout {__version__}"


def test_run_into_a_foreign_non_empty_folder_exits_2(capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    code, _, err = call(capsys, "run", "synthetic:size=128,n_dates=4", "--out", tmp_path)
    assert code == 2 and "not a changescout run" in err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_every_key_only_a_config_file_sets_is_documented(capsys):
    """Most --config keys (n_clusters, report_top, source_options...) were written nowhere a user would look:
    the only way to find them was to misspell one and read the error."""
    from changescout.pipeline import CONFIG_ONLY

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code, out, _ = call(capsys, "run", "--help")
    text = re.sub(r"[\s│]+", "", out)
    for key in CONFIG_ONLY:
        default = getattr(RunConfig(source="x"), key)
        row = re.search(rf"^\| `{key}` \| `?([^|`]*?)`? \|", readme, re.M)
        assert row, f"README has no row for the configuration key {key}"
        assert row.group(1) == (str(default) if not isinstance(default, dict) else "{}"), key  # the default it says
        assert key in text  # --config's help names it


def test_run_defaults_agree_with_run_config():
    command = typer.main.get_command(cli.app).commands["run"]
    defaults = {p.name: p.default for p in command.params}
    for name in ("encoder", "patch_size", "compare", "rank_by", "min_clear", "seed"):
        assert defaults[name] == getattr(RunConfig(source="x"), name), name


# -- a real run ----------------------------------------------------------------------------------------
def test_run_writes_a_run_prints_a_summary_and_resumes(capsys, tmp_path, session_run):
    out = tmp_path / "run"
    args = ["run", "synthetic:seed=0,size=128,n_dates=10", "--out", out, "--label", "t", "--min-clear", "0.75"]
    code, stdout, err = call(capsys, *args)
    assert code == 0, err
    assert "Top 10 changes" in stdout and "events.parquet" in stdout
    ev = read_events(out)
    top = ev.sort_values("rank")["event_id"].iloc[0]
    assert top[:20] in stdout  # the summary table shows the top event
    assert "false alarms" in stdout and "type" in stdout  # the calibrated score and the change type of each object
    objs = read_objects(out).head(10)
    assert "until" in stdout  # an episode's end (a flood receding) is shown with its onset
    ended = objs.dropna(subset=["t_end"])
    assert len(ended)
    for _, o in ended.iterrows():
        assert re.search(rf"{o['t1']:%Y-%m-%d}\W+{o['t_end']:%Y-%m-%d}", stdout)  # t1, then until
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["min_clear"] == 0.75 and cfg["config"]["label"] == "t"
    # the same series, seed and settings as the library's session run: the same ranked events
    ref = read_events(session_run)
    assert ev["event_id"].tolist() == ref["event_id"].tolist()
    assert ev["rank"].tolist() == ref["rank"].tolist()
    # the same command again resumes
    code, stdout, err = call(capsys, *args)
    assert code == 0 and "resuming" in err
    # another configuration is refused without --overwrite
    code, _, err = call(capsys, *args[:-1], "0.6")
    assert code == 2 and "--overwrite" in err and "(what differs: min_clear)" in err


@pytest.mark.parametrize("name", ["[area]", "x[/b]"])
def test_the_summary_prints_a_run_directory_as_it_is_named(capsys, session_run, copy_run, name):
    """The summary printed the path through rich markup: runs/[area] read "runs/", and a path holding [/b]
    made a finished run exit 1 (MarkupError)."""
    run = copy_run(session_run, name)
    cli._summary(run)
    out = capsys.readouterr().out
    assert f"Outputs in {run}:" in " ".join(out.split())


@pytest.mark.parametrize("seeds", ["a,b", "", ",", "1.5"])
def test_benchmark_seeds_that_are_not_whole_numbers_exit_2(capsys, seeds):
    code, _, err = call(capsys, "benchmark", "synthetic", "--seeds", seeds)
    assert code == 2 and "--seeds must be whole numbers separated by commas" in err


@pytest.mark.parametrize("command", [["export", "--format", "csv"], ["similar", "--at", "0,0", "--t1", "2021-06-15"]])
def test_a_file_given_as_run_is_named_with_the_folder_to_give(capsys, session_run, command):
    """export RUN/events.parquet said events.parquet/events.csv exists; similar said events.parquet is missing."""
    code, _, err = call(capsys, command[0], session_run / "events.parquet", *command[1:])
    assert code == 2 and compact(f"is a file; RUN is a run directory (the folder that holds it: {session_run})") in compact(err)
    if command[0] == "similar":  # and given to --in, it is named as --in's
        some = pd.read_parquet(session_run / "events.parquet", columns=["event_id"])["event_id"].iloc[0]
        code, _, err = call(capsys, "similar", session_run, some, "--in", session_run / "events.parquet")
        assert code == 2 and compact(f"is a file; --in is a run directory (the folder that holds it: {session_run})") in compact(err)


# -- export -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["gpkg", "geojson"])
def test_export_vector_formats(capsys, tmp_path, session_run, fmt):
    target = tmp_path / f"top.{fmt}"
    code, _, err = call(capsys, "export", session_run, "--format", fmt, "--top", 5, "--out", target)
    assert code == 0, err
    back = gpd.read_file(target)
    assert len(back) == 5 and back["rank"].tolist() == [1, 2, 3, 4, 5]
    assert back.crs.to_epsg() == (32631 if fmt == "gpkg" else 4326)
    assert back["event_id"].tolist() == read_events(session_run).sort_values("rank")["event_id"].head(5).tolist()


def test_export_the_objects_table(capsys, session_run, copy_run):
    """The analyst's list goes to a GIS too: one row per object, its dissolved polygon, its episode's end."""
    from changescout.objects import read_objects

    run = copy_run(session_run)
    code, _, err = call(capsys, "export", run, "--format", "gpkg", "--table", "objects")
    assert code == 0, err
    back, objects = gpd.read_file(run / "objects.gpkg"), read_objects(run)
    assert back["object_id"].tolist() == objects["object_id"].tolist() and back["rank"].is_monotonic_increasing
    assert back.geometry.area.round(3).tolist() == objects.geometry.area.round(3).tolist()
    assert back["t_end"].notna().sum() == objects["t_end"].notna().sum()
    code, _, err = call(capsys, "export", run, "--format", "csv", "--table", "clusters")
    assert code == 2 and "--table must be events or objects" in err
    code, _, err = call(capsys, "export", run, "--format", "CSV", "--table", "Objects", "--top", 2)  # as --format is
    assert code == 0, err
    assert len(pd.read_csv(run / "objects.csv")) == 2


def test_export_refuses_a_table_whose_crs_was_stripped(capsys, session_run, copy_run):
    """Every run writes its grid's CRS (a pixel grid's too): a table without one was exported without one, or
    refused for GeoJSON as a pixel grid."""
    run = copy_run(session_run)
    events = gpd.read_parquet(run / "events.parquet")
    events.set_crs(None, allow_override=True).to_parquet(run / "events.parquet")
    for fmt in ("gpkg", "csv", "geojson"):
        code, _, err = call(capsys, "export", run, "--format", fmt)
        assert code == 2 and "events.parquet: the events table has no CRS" in err, err
        assert not (run / f"events.{fmt}").exists()
    objects = gpd.read_parquet(run / "objects.parquet")
    objects.set_crs(None, allow_override=True).to_parquet(run / "objects.parquet")
    code, _, err = call(capsys, "export", run, "--format", "gpkg", "--table", "objects")
    assert code == 2 and "objects.parquet: the objects table has no CRS" in err


def test_export_csv_to_the_default_path_and_refusal_to_overwrite(capsys, session_run, copy_run):
    run = copy_run(session_run)
    code, _, err = call(capsys, "export", run, "--format", "csv", "--top", 5)
    assert code == 0, err
    target = run / "events.csv"
    df = pd.read_csv(target)
    assert len(df) == 5 and (df["crs"] == "EPSG:32631").all() and df["rank"].tolist() == [1, 2, 3, 4, 5]
    before = target.read_bytes()
    code, _, err = call(capsys, "export", run, "--format", "csv", "--top", 3)
    assert code == 2 and "--overwrite" in err
    assert target.read_bytes() == before
    code, _, err = call(capsys, "export", run, "--format", "csv", "--top", 3, "--overwrite")
    assert code == 0 and len(pd.read_csv(target)) == 3


def test_export_bad_format_or_not_a_run(capsys, tmp_path, session_run):
    code, _, err = call(capsys, "export", session_run, "--format", "shp", "--out", tmp_path / "x.shp")
    assert code == 2 and "gpkg" in err
    code, _, err = call(capsys, "export", tmp_path, "--format", "csv", "--out", tmp_path / "x.csv")
    assert code == 2 and "events" in err
    folder = tmp_path / "a_folder"
    folder.mkdir()
    for extra in ((), ("--overwrite",)):  # "use --overwrite" would never work on a folder
        code, _, err = call(capsys, "export", session_run, "--format", "csv", "--out", folder, *extra)
        assert code == 2 and "is a folder" in err and "internal error" not in err
    (tmp_path / "a_file").write_text("")
    code, _, err = call(capsys, "export", session_run, "--format", "csv", "--out", tmp_path / "a_file" / "x.csv")
    assert code == 2 and "cannot write the export" in err and "internal error" not in err
    code, _, err = call(capsys, "export", session_run, "--format", "csv", "--out", tmp_path / "x.gpkg")
    assert code == 2 and "the file name says gpkg but --format is csv" in err and not (tmp_path / "x.gpkg").exists()
    for fmt, name in (("gpkg", "x.shp"), ("csv", "sel.parquet"), ("geojson", "x.kml")):  # another format's extension
        code, _, err = call(capsys, "export", session_run, "--format", fmt, "--out", tmp_path / name)
        assert code == 2 and f"is not that of --format {fmt}" in err and not (tmp_path / name).exists(), err
    code, _, err = call(capsys, "export", session_run, "--format", "gpkg", "--out", tmp_path / "sel.top20")
    assert code == 2 and "name it sel.top20.gpkg" in err
    (tmp_path / "exports.2024").mkdir()  # a folder, whatever its name: told so
    code, _, err = call(capsys, "export", session_run, "--format", "gpkg", "--out", tmp_path / "exports.2024")
    assert code == 2 and "is a folder" in err, err
    code, _, err = call(capsys, "export", session_run, "--format", "geojson", "--top", 2, "--out", tmp_path / "x.json")
    assert code == 0 and len(gpd.read_file(tmp_path / "x.json")) == 2
    code, _, err = call(capsys, "export", session_run, "--format", "csv", "--out", tmp_path / "noext")
    assert code == 2 and "noext: has no extension, by which a GIS opens a file; name it noext.csv" in err
    assert not (tmp_path / "noext").exists()  # (it was written, and GDAL could not tell what it was)
    code, _, err = call(capsys, "export", session_run, "--format", "GPKG", "--out", tmp_path / "x.gpkg")
    assert code == 0 and gpd.read_file(tmp_path / "x.gpkg").crs.to_epsg() == 32631


@pytest.mark.skipif(os.name != "posix", reason="run directories are locked with flock on POSIX")
def test_a_run_being_written_is_not_read_and_a_run_being_read_is_not_rewritten(capsys, tmp_path, session_run, copy_run):
    """export and similar refuse (exit 2) a directory that a run is writing, where they could pair the events of
    one run with the vectors of the next; a run refuses a directory that they are reading."""
    from changescout import runlock

    run = copy_run(session_run)
    query = read_events(run).sort_values("rank")["event_id"].iloc[0]
    writer = runlock.acquire(run, exclusive=True)
    try:
        for args in (("export", run, "--format", "csv", "--out", tmp_path / "e.csv"), ("similar", run, query),
                     ("similar", session_run, query, "--in", run)):
            code, out, err = call(capsys, *args)
            assert code == 2 and "achangescoutruniswritingthisrundirectory" in compact(err), args
        assert not (tmp_path / "e.csv").exists()
    finally:
        runlock.release(writer)
    reader = runlock.acquire(run, exclusive=False)
    try:
        code, _, err = call(capsys, "export", run, "--format", "csv", "--out", tmp_path / "e.csv")
        assert code == 0, err  # readers share the directory
        code, _, err = call(capsys, "run", "synthetic:size=128,n_dates=6", "--out", run, "--overwrite")
        assert code == 2 and "anotherchangescoutprocessiswritingorreading" in compact(err)
        assert read_events(run)["event_id"].tolist() == read_events(session_run)["event_id"].tolist()  # untouched
    finally:
        runlock.release(reader)
    code, _, err = call(capsys, "similar", run, query)
    assert code == 0, err


# -- similar ----------------------------------------------------------------------------------------------
def test_similar_json_by_id_and_by_place(capsys, session_run):
    ev = read_events(session_run)
    q = ev[ev["persistence"].fillna(-1) > 0].sort_values("rank").iloc[0]
    code, out, err = call(capsys, "similar", session_run, q["event_id"], "--k", 7, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert len(res) == 7
    assert q["event_id"] not in [r["event_id"] for r in res]
    assert [r["similarity"] for r in res] == sorted((r["similarity"] for r in res), reverse=True)
    poly = RunView(session_run).patch_grid.polygons(q["row"], q["col"])[0]
    at = f"{poly.centroid.x},{poly.centroid.y}"
    code, out2, err = call(capsys, "similar", session_run, "--at", at, "--t1", f"{q['t1']:%Y-%m-%d}", "--k", 7, "--json")
    assert code == 0, err
    assert json.loads(out2) == res
    # the table form
    code, out3, _ = call(capsys, "similar", session_run, q["event_id"], "-k", 3)  # (-k, as the brief writes it)
    assert code == 0 and res[0]["event_id"][:20] in out3


def test_similar_objects_gives_one_row_per_object(capsys, session_run):
    ev = read_events(session_run)
    q = ev.sort_values("object_rank").iloc[0]
    code, out, err = call(capsys, "similar", session_run, q["event_id"], "--objects", "--k", 4, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert len(res) == 4 and len({r["object_id"] for r in res}) == 4
    assert q["object_id"] not in {r["object_id"] for r in res}
    assert {(r["query"], r["result"]) for r in res} == {(q["event_id"], "object")}  # what was asked, in each record
    code, out, _ = call(capsys, "similar", session_run, q["event_id"], "--objects", "--k", 4)
    assert f"Similar to object {q['object_id']} (queried with its patch {q['event_id']})" in " ".join(out.split())
    code, out, _ = call(capsys, "similar", session_run, q["event_id"], "--k", 4)
    n = int((ev["object_id"] == q["object_id"]).sum()) - 1
    assert n > 1 and f"the other {n} patch events of its object {q['object_id']} left out" in " ".join(out.split())
    # a single-patch object has no other patch to leave out (it was said to have)
    sizes = ev.groupby("object_id")["event_id"].transform("size")
    alone = ev[sizes == 1].sort_values("rank").iloc[0]
    code, out, _ = call(capsys, "similar", session_run, alone["event_id"], "--k", 4)
    assert code == 0 and f"Similar to {alone['event_id']}" in " ".join(out.split()) and "left out" not in out


def test_similar_errors_exit_2(capsys, session_run):
    code, _, err = call(capsys, "similar", session_run, "t_00000000-20210101-20210201-r0-c0")
    assert code == 2 and "no event" in err
    code, _, err = call(capsys, "similar", session_run, "--at", "1,2,3", "--t1", "2021-02-15")
    assert code == 2 and "--at" in err
    code, _, err = call(capsys, "similar", session_run, "--at", "0,0", "--t1", "2021-02-15")
    assert code == 2 and "outside" in err
    code, _, err = call(capsys, "similar", session_run)
    assert code == 2 and "EVENT_ID" in err


# -- encoders ---------------------------------------------------------------------------------------------
def test_encoders_lists_rcf(capsys):
    code, out, _ = call(capsys, "encoders")
    assert code == 0 and "rcf" in out and "Encoders" in out
    code, out, _ = call(capsys, "encoders", "--json")
    rows = json.loads(out)
    rcf = next(r for r in rows if r["name"] == "rcf")
    assert rcf["bands"] is None and rcf["dim"] == 256 and rcf["patch_size"] == 16  # any bands
    assert rcf["learnt_per_run"] is True and rcf["weights_found"] is False
    for r in rows:  # JSON types, not placeholders: numbers or null, booleans
        assert r["dim"] is None or isinstance(r["dim"], int)
        assert isinstance(r["weights_found"], bool) and (r["bands"] is None or isinstance(r["bands"], list))


def test_help_lists_the_commands(capsys):
    code, out, _ = call(capsys, "--help")
    assert code == 0
    for name in ("demo", "run", "similar", "export", "encoders"):
        assert name in out


def test_summary_in_a_narrow_terminal_keeps_dates_and_lists_the_ids_whole(capsys, monkeypatch, session_run):
    from rich.console import Console

    monkeypatch.setattr(cli, "out_console", Console(width=100))
    cli._summary(session_run)
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100
    objects = read_objects(session_run).head(10)
    assert all(f"{t:%Y-%m-%d}" in out for t in objects["t1"])  # dates whole, not "2021-0…"
    listed = re.findall(r"^\s+(\d+)  (\S+-\d{8}-\d{8}-r\d+-c\d+)(?:  .*)?$", out, flags=re.M)  # rank, event id whole
    assert [int(r) for r, _ in listed] == objects["rank"].tolist()
    assert {e for _, e in listed} <= set(read_events(session_run)["event_id"])
    monkeypatch.setattr(cli, "out_console", Console(width=200))
    cli._summary(session_run)
    wide = capsys.readouterr().out
    assert "most atypical onset patch" in wide and "Most atypical onset patch of each" not in wide


def test_export_refuses_to_write_over_the_runs_own_files(capsys, session_run, copy_run):
    """``export RUN --out RUN/events.parquet --overwrite`` replaced the events table with a CSV: the run could
    no longer be read or resumed (UAT). An export beside them, under its own name, is fine."""
    run = copy_run(session_run)
    before = (run / "events.parquet").read_bytes()
    code, _, err = call(capsys, "export", run, "--format", "csv", "--out", run / "events.parquet", "--overwrite")
    assert code == 2 and f"would write over the run {run.resolve()}'s own events.parquet" in err
    assert (run / "events.parquet").read_bytes() == before
    code, _, err = call(capsys, "export", run, "--format", "csv", "--out", run / "maps" / "x.csv")
    assert code == 2 and f"run {run.resolve()}'s own maps" in err
    code, _, err = call(capsys, "export", run, "--format", "csv", "--out", run / "Events.parquet", "--overwrite")
    assert code == 2 and f"run {run.resolve()}'s own Events.parquet" in err  # as a case-insensitive disk (macOS, Windows) reads it
    assert call(capsys, "export", run, "--format", "csv", "--out", run / "top.csv")[0] == 0
    # another run's files too (failure-injection review: that run could then only be made again whole)
    other = copy_run(session_run, "other")
    before = (other / "config.json").read_bytes()
    code, _, err = call(capsys, "export", run, "--format", "csv", "--out", other / "config.json", "--overwrite")
    assert code == 2 and f"would write over the run {other.resolve()}'s own config.json" in err
    assert (other / "config.json").read_bytes() == before
    assert call(capsys, "export", run, "--format", "csv", "--out", other / "from_the_first.csv")[0] == 0
    # the run exported is its own even without its state.json (GeoJSON's .json took config.json: a review)
    (run / "state.json").unlink()
    before = (run / "config.json").read_bytes()
    code, _, err = call(capsys, "export", run, "--format", "geojson", "--out", run / "config.json", "--overwrite")
    assert code == 2 and "own config.json" in err and (run / "config.json").read_bytes() == before


def test_a_damaged_objects_table_is_named(capsys, session_run, copy_run):
    run = copy_run(session_run)
    (run / "objects.parquet").write_bytes((run / "objects.parquet").read_bytes()[:500])
    code, _, err = call(capsys, "export", run, "--format", "geojson", "--table", "objects")
    assert code == 2 and "objects.parquet: cannot read the objects table" in err and "rebuild" in err
    (run / "objects.parquet").write_bytes((run / "events.parquet").read_bytes())  # another table in its place
    code, _, err = call(capsys, "export", run, "--format", "geojson", "--table", "objects")
    assert code == 2 and "not a changescout objects table" in err


def test_tables_of_another_run_are_not_exported_as_this_runs(capsys, session_run, copy_run):
    """Another run's events.parquet of the same series (the same ids: another seed) was exported under this run's
    name at exit 0 (a review); so was an objects table whose objects are not the events'."""
    import geopandas as gpd

    run = copy_run(session_run)
    events = gpd.read_parquet(run / "events.parquet")
    events.assign(magnitude=events["magnitude"] * 1.1).to_parquet(run / "events.parquet")
    code, _, err = call(capsys, "export", run, "--format", "csv")
    assert code == 2 and "events.parquet: " in err and "it is not of the run whose change vectors" in err
    assert not (run / "events.csv").exists()
    run = copy_run(session_run, "objects")
    objects = gpd.read_parquet(run / "objects.parquet")
    objects["event_id"] = objects["event_id"].to_numpy()[::-1]  # each object led by another's event
    objects.to_parquet(run / "objects.parquet")
    code, _, err = call(capsys, "export", run, "--format", "csv", "--table", "objects")
    assert code == 2 and "objects.parquet: " in err and "it is not of the run of events.parquet" in err
    code, _, err = call(capsys, "export", run, "--format", "csv")  # its events are the run's
    assert code == 0, err
    # similar --objects searched that table's objects at exit 0 (plausible, wrong neighbours; a review)
    query = str(objects.loc[objects["rank"] == 1, "event_id"].iloc[0])
    code, _, err = call(capsys, "similar", run, query, "--objects", "--k", "3")
    assert code == 2 and "objects.parquet: " in err and "it is not of the run of events.parquet" in err
    code, _, err = call(capsys, "similar", run, query, "--k", "3")  # its patch events are the run's
    assert code == 0, err


def test_an_events_table_with_rows_deleted_by_hand_is_not_exported_as_the_runs(capsys, session_run, copy_run):
    """Rows deleted from events.parquet by hand leave every remaining event's id and magnitude those of changes.zarr:
    only the count tells the table is no longer the run's, and it is refused with both counts."""
    import geopandas as gpd

    run = copy_run(session_run)
    events = gpd.read_parquet(run / "events.parquet")
    kept = events.iloc[::2]  # (every other row; those left keep their ids and magnitudes)
    kept.to_parquet(run / "events.parquet")
    code, _, err = call(capsys, "export", run, "--format", "csv")
    assert code == 2 and f"events.parquet: its {len(kept)} events are not the {len(events)} changes of changes.zarr" in err
    assert not (run / "events.csv").exists()


def test_an_objects_table_of_an_earlier_version_is_exported(capsys, session_run, copy_run, tmp_path):
    """Objects tables before 0.3.5 have no false_alarm_rate: still read (unknown), not called damaged."""
    import geopandas as gpd

    run = copy_run(session_run)
    gpd.read_parquet(run / "objects.parquet").drop(columns="false_alarm_rate").to_parquet(run / "objects.parquet")
    assert call(capsys, "export", run, "--format", "csv", "--table", "objects", "--out", tmp_path / "o.csv")[0] == 0


# -- terminal widths, help text (UAT) ------------------------------------------------------------------------
@pytest.mark.parametrize("width", [80, 100, 120])
def test_similar_in_a_narrow_terminal_keeps_numbers_dates_and_ids_whole(capsys, monkeypatch, session_run, width):
    """At 120 columns similarity showed as "0.…" and dates as "20…"; at 80 every column but event_id was empty."""
    from rich.console import Console

    q = read_events(session_run).sort_values("rank").iloc[0]
    code, out, err = call(capsys, "similar", session_run, q["event_id"], "--k", 5, "--json")
    assert code == 0, err
    res = json.loads(out)
    monkeypatch.setattr(cli, "out_console", Console(width=width))
    code, out, err = call(capsys, "similar", session_run, q["event_id"], "--k", 5)
    assert code == 0, err
    assert "…" not in out and max(map(len, out.splitlines())) <= width
    lines = out.splitlines()
    first = next(i for i, l in enumerate(lines) if set(l) == {"─"}) + 1  # the rows, under the header's rule
    for r, line in zip(res, lines[first:first + len(res)]):
        assert r["event_id"] in out  # whole, on one line: what the next query takes
        assert re.search(rf"\b{r['t0']}\s+{r['t1']}\b", line)
        assert f"{r['similarity']:.3f}" in line and f"{r['atypicality']:.3f}" in line
        if r["false_alarm_rate"] is not None:
            assert f"{r['false_alarm_rate']:.2%}" in line


@pytest.mark.parametrize("width", [80, 100, 120])
def test_summary_keeps_every_number_whole_and_areas_to_two_decimals(capsys, monkeypatch, session_run, width):
    """At 80 columns the false-alarm rate showed as "3.7…"; the area was rounded to 2.6 where the report says 2.56."""
    from rich.console import Console

    monkeypatch.setattr(cli, "out_console", Console(width=width))
    cli._summary(session_run)
    out = capsys.readouterr().out
    assert "…" not in out and max(map(len, out.splitlines())) <= width
    objects = read_objects(session_run).head(10)
    table = out.split("Most atypical onset patch of each")[0]
    for _, o in objects.iterrows():
        line = next(l for l in table.splitlines() if re.match(rf"\s*{o['rank']}\s+{o['t0']:%Y-%m-%d}\s+{o['t1']:%Y-%m-%d}\b", l))
        assert f"{o['area_ha']:.2f}" in line and f"{o['atypicality']:.3f}" in line and f"{o['false_alarm_rate']:.2%}" in line


def test_summary_marks_the_single_patches_that_do_not_stand_out(capsys, monkeypatch, session_run, copy_run):
    """UAT: on a small crop the top 10 held five objects that are not candidates, printed with atypicality
    0.000 beside better false-alarm rates than the candidates above them, and nothing said what they were."""
    from rich.console import Console

    from changescout.objects import write_objects

    run = copy_run(session_run)
    objects = read_objects(run)
    objects.loc[objects["rank"] > 6, "candidate"] = False  # as in a run with six objects that stand out
    objects.loc[objects["rank"] > 6, "atypicality"] = 0.0
    write_objects(objects, run / "objects.parquet")
    monkeypatch.setattr(cli, "out_console", Console(width=200))
    cli._summary(run)
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if re.match(r"\s*8\s+\d+\s+\d{4}-", l))
    assert "0.000" not in line and " - " in line
    assert "Ranks 7-10: single patches that do not stand out from the run's bulk (not candidates)" in out


def test_tables_keep_a_path_whole_before_the_columns_they_may_leave_out():
    """A run's path split over two lines cannot be copied into --in; the columns listed as droppable go first
    (review: at 160 columns the path was split while cluster and object rank stayed), and a path folds only
    where even without them it does not fit."""
    rows = [{"rank": "12", "cluster": "6", "run": "/tmp/some/where/runs/bouconne-2018"}]
    keep_path = cli._fitting(["rank", "cluster", "run"], rows, 41, drop=("cluster",), fold=("run",))
    assert keep_path == {"rank": 4, "run": len(rows[0]["run"])}
    folded = cli._fitting(["rank", "cluster", "run"], rows, 34, drop=("cluster",), fold=("run",))
    assert folded is not None and folded["run"] < len(rows[0]["run"]) and "cluster" in folded


@pytest.mark.parametrize("width", [80, 90, 120])
def test_encoders_table_never_cuts_a_value(capsys, monkeypatch, width):
    """At 80-90 columns the encoder's name (what --encoder takes) showed as "galileo-n…"."""
    from rich.console import Console

    monkeypatch.setattr(cli, "out_console", Console(width=width))
    code, out, _ = call(capsys, "encoders")
    assert code == 0 and "…" not in out and max(map(len, out.splitlines())) <= width
    assert re.search(r"^galileo-nano\b", out, re.M) and re.search(r"^rcf\b", out, re.M)


def test_export_into_a_missing_folder_exits_2_naming_it_and_writes_nothing(capsys, session_run, tmp_path):
    """``--out /nonexist/dir/x.gpkg`` made the folders and exited 0: a typo in the path went unnoticed (UAT)."""
    target = tmp_path / "no_such" / "dir" / "x.gpkg"
    code, _, err = call(capsys, "export", session_run, "--format", "gpkg", "--out", target)
    assert code == 2 and compact(str(target.parent)) in compact(err) and "does not exist" in err
    assert not (tmp_path / "no_such").exists()


def test_help_shows_flags_as_flags_and_says_which_options_repeat(capsys):
    code, out, _ = call(capsys, "--help")
    assert code == 0 and "--debug" in out and "<bool>" not in out  # a flag takes no value: `--debug false` fails
    code, out, _ = call(capsys, "similar", "--help")
    text = re.sub(r"[\s│]+", "", out)  # (help is wrapped inside a box)
    assert code == 0 and "<bool>" not in out and "list[" not in text  # no Python types
    assert text.count("repeattheoption") == 2  # --in and --not
    code, out, _ = call(capsys, "export", "--help")
    text = re.sub(r"[\s│]+", "", out)
    assert code == 0 and "<bool>" not in out and "Rundirectory" in text and "Replacetheoutputfile" in text


def test_encoders_json_says_what_the_table_says(capsys):
    """The table says rcf takes "any" bands and its weights are "learnt per run"; the JSON said bands null and
    weights_found false only."""
    code, out, _ = call(capsys, "encoders", "--json")
    rcf = next(r for r in json.loads(out) if r["name"] == "rcf")
    assert rcf["any_bands"] is True and rcf["weights_status"] == "learnt per run"
    assert rcf["bands"] is None and rcf["weights_found"] is False  # the existing keys keep their meaning
    for r in json.loads(out):
        assert r["weights_status"] in ("learnt per run", "found", "not found", "none needed") and isinstance(r["any_bands"], bool)
    precomputed = next(r for r in json.loads(out) if r["name"] == "precomputed")  # (embeddings made elsewhere)
    assert precomputed["any_bands"] is True and precomputed["weights_status"] == "none needed" and precomputed["dim"] is None


def test_a_plugin_that_does_not_load_is_listed_as_such_and_hides_no_encoder(capsys, monkeypatch):
    """A plugin whose module is not installed made `changescout encoders` exit 2 listing nothing (a review):
    the registry promises that a broken plugin hides no other encoder."""
    from changescout.encoders import base

    class BrokenEP:
        name = "broken-enc"

        def load(self):
            raise ImportError("No module named 'no_such_module'")

    monkeypatch.setattr(base, "_entry_points", lambda: {"broken-enc": BrokenEP()})
    code, out, err = call(capsys, "encoders", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and {"rcf", "galileo-nano", "broken-enc"} <= set(rows), err
    assert "no_such_module" in rows["broken-enc"]["weights"] and rows["broken-enc"]["weights_status"] == "not found"
    assert rows["rcf"]["weights_status"] == "learnt per run"


def test_encoders_without_weights_still_say_what_they_take(capsys, monkeypatch, tmp_path):
    """Before its weights were found, a pretrained encoder's bands, dimension, patch size and license showed as
    "?" and null: a user choosing an encoder could not see what it needs before downloading it."""
    monkeypatch.setenv("CHANGESCOUT_WEIGHTS_DIR", str(tmp_path))  # an empty folder: no weights anywhere
    code, out, _ = call(capsys, "encoders", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    for name, license in (("galileo-nano", "MIT"), ("presto", "MIT (nasaharvest/presto)")):
        r = rows[name]
        assert code == 0 and r["weights_status"] == "not found" and "weights file" in r["weights"]
        assert r["dim"] == 128 and r["patch_size"] == 16 and r["license"] == license
        assert r["bands"][:3] == ["B02", "B03", "B04"] and len(r["bands"]) == 10
    assert rows["hf"]["bands"] == ["red", "green", "blue"] and rows["hf"]["dim"] is None  # (the model's own: "?")
    code, out, _ = call(capsys, "encoders")
    assert code == 0 and re.search(r"^presto\s+B02,B03", out, re.M)
    assert not [line for line in out.splitlines() if "?" in line and re.match(r"(galileo|presto|rcf)", line)]


def test_a_full_disk_is_named_with_the_file_and_how_to_go_on(capsys, tmp_path, monkeypatch):
    """Failure-injection review: a full disk was an "internal error: OSError: [Errno 28]" naming no file and not
    saying that the run resumes once space is freed."""
    import errno

    import changescout.pipeline as pipeline

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "embeddings.zarr"))

    monkeypatch.setattr(pipeline, "run_pipeline", full)
    code, _, err = call(capsys, "run", "synthetic:seed=1,size=128,n_dates=6", "--out", tmp_path / "run")
    assert code == 1 and "internal error" not in err
    assert "no space left on the disk writing" in err and "embeddings.zarr" in compact(err)
    assert "the run resumes where it stopped" in err

    def full_faiss(*args, **kw):  # faiss says it in a RuntimeError, and names no file; dask and zarr neither
        raise RuntimeError("Error in faiss::FileIOWriter ... fwrite: No space left on device")

    monkeypatch.setattr(pipeline, "run_pipeline", full_faiss)
    code, _, err = call(capsys, "run", "synthetic:seed=1,size=128,n_dates=6", "--out", tmp_path / "run")
    assert code == 1 and "internal error" not in err
    assert "no space left on the disk writing in" in err and compact(str(tmp_path / "run")) in compact(err)


def test_a_file_this_user_may_not_read_is_named_with_exit_2(capsys, tmp_path, monkeypatch):
    """A source or --out under a folder this user may not enter was an "internal error: PermissionError" (exit 1;
    a review, as another user than root: root passes every permission, so the error is raised here)."""
    import errno

    import changescout.pipeline as pipeline

    where = str(tmp_path / "locked" / "series")

    def denied(*args, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", where)

    monkeypatch.setattr(pipeline, "run_pipeline", denied)
    code, _, err = call(capsys, "run", "synthetic:seed=1,size=128,n_dates=6", "--out", tmp_path / "run")
    assert code == 2 and "internal error" not in err
    assert compact(f"{where}: permission denied") in compact(err)


@pytest.mark.parametrize("args, said", [
    (["--compare", ""], "--compare is empty"), (["--grid", " "], "--grid is empty"), (["--label", ""], "--label is empty"),
    (["--kind", ""], "--kind is empty"), (["--scheduler", ""], "--scheduler is empty"),
    (["--bands", "B02,,B04"], "--bands 'B02,,B04' has an empty item between its commas"),
    (["--dates", "2021-01-15,"], "--dates '2021-01-15,' has an empty item"),
])
def test_an_option_given_empty_is_refused(capsys, tmp_path, args, said):
    """Empty values were taken as not given (config.json recorded "compare": ""), and an empty band name was dropped,
    so the message miscounted the names typed (a review)."""
    code, _, err = call(capsys, "run", "synthetic:size=128,n_dates=4", "--out", tmp_path / "o", *args)
    assert code == 2 and said in err, err
    assert not (tmp_path / "o").exists()


def test_an_empty_source_is_refused(capsys, tmp_path):
    """'' was read as the current folder ("holds no GeoTIFF")."""
    code, _, err = call(capsys, "run", "", "--out", tmp_path / "o")
    assert code == 2 and "SOURCE is empty: give the series' path (or 'synthetic')" in err, err


def test_quiet_keeps_the_warnings(capsys, tmp_path, monkeypatch):
    """-q dropped every line the run told, warnings too ("no cloud screen ... unmasked clouds may rank as
    changes"): a batch user never saw them. Notes and progress go; warnings stay (review of the CLI)."""
    import changescout.pipeline

    def fake(config, out, log=print, **k):
        log("grid: EPSG:32631, 10 m per pixel")
        log("warning: no cloud screen: no blue and red bands found by name")
    monkeypatch.setattr(changescout.pipeline, "run_pipeline", fake)
    code, out, err = call(capsys, "-q", "run", "synthetic", "--out", tmp_path / "o")
    assert code == 0, err
    assert "warning: no cloud screen" in out + err and "grid:" not in out + err


def test_encoders_say_where_found_weights_are(capsys, monkeypatch, tmp_path):
    """Found weights showed as their bare file name (encoder.pt, config.json): which copy a run reads was not said
    (a review). A tiny DINOv2 written by save_pretrained stands for a model folder."""
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    transformers.Dinov2Model(transformers.Dinov2Config(patch_size=14, hidden_size=32, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=64, image_size=56)
                             ).save_pretrained(tmp_path / "hf")
    monkeypatch.setenv("CHANGESCOUT_WEIGHTS_DIR", str(tmp_path))
    code, out, _ = call(capsys, "encoders", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["hf"]["weights_status"] == "found" and rows["hf"]["weights"] == str(tmp_path / "hf")
    assert rows["precomputed"]["weights"] == "none needed" and rows["rcf"]["weights"].startswith("rcf_weights.npz")
