"""Atomic writes: a failure half-way leaves the previous output (or nothing), never a truncated one."""

import json

import pytest

from changescout.atomic import atomic_path, write_json, write_text


def _leftovers(folder, name):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def test_file_is_replaced_on_success(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the body ends
    assert target.read_text() == "new"
    assert _leftovers(tmp_path, "a.txt") == []


def test_old_file_intact_when_body_raises(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half writ")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_no_file_created_when_body_raises_and_none_existed(tmp_path):
    target = tmp_path / "sub" / "b.json"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise ValueError
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []


def test_nothing_written_raises_and_keeps_old(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(target):
            pass
    assert target.read_text() == "old"


def test_directory_is_replaced_as_a_whole(tmp_path):
    target = tmp_path / "store.zarr"
    target.mkdir()
    (target / "stale").write_text("x")
    (target / "keep_name").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "keep_name").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["keep_name"]  # no stale file survives
    assert (target / "keep_name").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]  # no .tmp / .old left


def test_directory_intact_when_body_raises(tmp_path):
    target = tmp_path / "store.zarr"
    target.mkdir()
    (target / "f").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "f").write_text("new")
            raise RuntimeError
    assert (target / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]


def test_write_json_and_text(tmp_path):
    write_json(tmp_path / "c.json", {"a": 1, "when": tmp_path})
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": 1, "when": str(tmp_path)}
    write_text(tmp_path / "r.html", "<p>hi</p>")
    assert (tmp_path / "r.html").read_text() == "<p>hi</p>"

    class Unprintable:
        def __str__(self):
            raise TypeError("cannot serialise")

    with pytest.raises(TypeError, match="cannot serialise"):
        write_json(tmp_path / "c.json", {"a": 2, "b": Unprintable()})
    assert json.loads((tmp_path / "c.json").read_text())["a"] == 1  # failed write kept the old file


def test_text_is_written_as_utf8_whatever_the_locale(tmp_path):
    """report.html says charset utf-8 and holds the run's label and paths: under a C or cp1252 locale a label
    like "Łódź" stopped the run at its last stage (UnicodeEncodeError), and "forêt" came out in cp1252."""
    import subprocess
    import sys

    out = tmp_path / "r.html"
    code = ("import locale, sys; from changescout.atomic import write_text, write_json; "
            "write_text(sys.argv[1], '\\u0141\\u00f3d\\u017a for\\u00eat'); "
            "write_json(sys.argv[1] + '.json', {'label': '\\u0141\\u00f3d\\u017a'}); "
            "print(locale.getpreferredencoding(False))")
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ascii" in done.stdout.lower() or "ansi" in done.stdout.lower()  # the locale really was not UTF-8
    assert out.read_bytes().decode("utf-8") == "Łódź forêt"
    assert json.loads((tmp_path / "r.html.json").read_text(encoding="utf-8")) == {"label": "Łódź"}
