"""`changescout benchmark`: baselines and encoders scored against labelled change, outputs a user can read."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from changescout import cli
from changescout.errors import ConfigError
from changescout.evaluate.benchmark import run_benchmark


def _png(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype="uint8") as dst:
            dst.write(data)


@pytest.fixture(scope="module")
def pairs_root(tmp_path_factory):
    """Three RGB pairs (64x64, 64x64, 64x80) with texture and noise; a 24x24 block turns into bright roofs in B (labelled)."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    for k in range(3):
        w = 64 if k < 2 else 80  # items need not share a size
        blocks = rng.integers(40, 160, (3, 16, w // 4))
        a = np.repeat(np.repeat(blocks, 4, axis=1), 4, axis=2) + rng.integers(0, 20, (3, 64, w))
        b = a + rng.integers(-10, 10, (3, 64, w))
        y, x = 8 + 8 * k, 16
        b[:, y:y + 24, x:x + 24] = 240 + rng.integers(0, 10, (3, 24, 24))
        label = np.zeros((1, 64, w), np.uint8)
        label[:, y:y + 24, x:x + 24] = 255
        _png(root / "A" / f"t{k}.png", np.clip(a, 0, 255).astype(np.uint8))
        _png(root / "B" / f"t{k}.png", np.clip(b, 0, 255).astype(np.uint8))
        _png(root / "label" / f"t{k}.png", label)
    return root


def test_benchmark_scores_methods_and_writes_outputs(pairs_root, tmp_path):
    out = tmp_path / "bench"
    result = run_benchmark("pairs", pairs_root, encoders=["rcf"], baselines=["cva-z", "cva-raw"], out=out, log=lambda *_: None)
    rows = pd.DataFrame(result["rows"])
    assert set(rows["method"]) == {"cva-z", "cva-raw", "rcf"}
    assert rows.set_index("method")["uses_embeddings"].groupby(level=0).first().to_dict() == {"cva-raw": False, "cva-z": False, "rcf": True}
    assert set(zip(rows["level"], rows["patch_size"].fillna(0).astype(int))) == {("pixel", 0), ("patch", 16), ("patch", 32)}
    assert (rows["n_items"] == 3).all()
    # The planted roofs are found by every method, far above chance.
    assert (rows.loc[rows["level"] == "patch", "auroc"] > 0.9).all()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["dataset"] == "pairs" and len(saved["rows"]) == 9
    assert any("pixel coordinates" in n for n in saved["notes"])
    md = (out / "metrics.md").read_text()
    assert "| method" in md and "Spread over items" in md
    assert re.search(r"\| cva-z +\| False +\| spectra +\| patch +\| *16 *\|", md) and "16.000" not in md and "nan" not in md
    (sp,) = [r for r in saved["spread"] if r["method"] == "cva-z" and r["patch_size"] == 16]
    assert sp["auroc"]["min"] <= sp["auroc"]["mean"] <= sp["auroc"]["max"]
    per_item = pd.read_csv(out / "per_item.csv")
    assert set(per_item["item"]) == {"t0", "t1", "t2"}
    for name in ("roc.png", "pr.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_cli_benchmark_prints_the_table_and_rejects_unknown_datasets(pairs_root, tmp_path, capsys):
    try:
        cli.main(["benchmark", "pairs", "--root", str(pairs_root), "--encoders", "rcf", "--baselines", "cva-z"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr().out
    assert code == 0 and "cva-z" in out and "rcf" in out and "auroc" in out
    try:
        cli.main(["benchmark", "levir", "--root", str(pairs_root)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "oscd" in capsys.readouterr().err


def test_benchmark_on_dynamicearthnet_layout(tmp_path):
    """The fake DynamicEarthNet (tests/data/make_dynamicearthnet.py) runs through the benchmark: one item per
    pair of consecutive labelled months, with its binary change label. Numbers from fake data mean nothing."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
    import make_dynamicearthnet as fake

    root = fake.make_dataset(tmp_path / "den")
    result = run_benchmark("dynamicearthnet", root, encoders=[], baselines=["cva-z"], log=lambda *_: None)
    rows = pd.DataFrame(result["rows"])
    n_pairs = len(fake.CUBES) * (len(fake.MONTHS) - 1)
    assert (rows["n_items"] == n_pairs).all()
    names = {r["item"] for r in result["per_item"]}
    assert len(names) == n_pairs and all("-" in n for n in names)


def test_synthetic_benchmark_scores_the_whole_pipeline_on_planted_series(tmp_path, monkeypatch):
    """One small planted-change series per seed through embed, changes, ranking and objects; the time-series
    measures come back per encoder and are in range."""
    import changescout.evaluate.synthetic as synthetic
    from changescout.sources.synthetic import make_series

    monkeypatch.setattr(synthetic, "series", lambda seed, bg="synthetic", root=None: make_series(seed=seed, size=128, n_dates=10))
    result = run_benchmark("synthetic", None, encoders=["rcf"], out=tmp_path / "b", seeds=[0], log=lambda *_: None)
    (row,) = result["rows"]
    assert row["method"] == "rcf" and row["uses_embeddings"] and row["n_items"] == 1
    assert 0.5 < row["auroc"] <= 1 and 0 <= row["recall_rare_at_10"] <= 1 and -1 <= row["cluster_ari"] <= 1
    assert "recall_rare_at_10" in (tmp_path / "b" / "metrics.md").read_text()


def test_benchmark_methods_evidence_variants_and_ablation_columns(pairs_root, tmp_path):
    """Named methods: spectra only, embedding only (scales, aggregation, whitening) and combined, raw or
    calibrated; rows say which evidence each used."""
    methods = ["cva-z", "cva-z-cal", "cva-z-p4-max", "rcf", "rcf-max", "rcf-whitened", "rcf+cva-z-p4-max-cal"]
    result = run_benchmark("pairs", pairs_root, methods=methods, log=lambda *_: None, cache=tmp_path / "cache",
                           out=tmp_path / "out")
    rows = pd.DataFrame(result["rows"])
    assert list(dict.fromkeys(rows["method"])) == methods
    kinds = rows.groupby("method")[["evidence", "uses_embeddings"]].first()
    assert kinds.loc["cva-z-cal"].tolist() == ["spectra", False]
    assert kinds.loc["rcf-whitened"].tolist() == ["embedding", True]
    assert kinds.loc["rcf+cva-z-p4-max-cal"].tolist() == ["embedding+spectra", True]
    patch = rows[(rows["level"] == "patch") & (rows["patch_size"] == 16)].set_index("method")
    assert (patch["auroc"] > 0.8).all()
    assert result["protocol"]["coregister"] == "auto" and result["protocol"]["months"] == "first"
    assert "Best baseline variant" in (tmp_path / "out" / "ablation.md").read_text()
    # calibration is monotone per item: per-item AUROC unchanged
    per = pd.DataFrame(result["per_item"])
    per = per[(per["level"] == "patch") & (per["patch_size"] == 16)].set_index(["method", "item"])["auroc"]
    np.testing.assert_allclose(per["cva-z"].sort_index(), per["cva-z-cal"].sort_index())


def test_parse_method_names():
    from changescout.evaluate.benchmark import parse_method

    m = parse_method("galileo-nano-p4-max+cva-z-p4-top2-cal", ["galileo-nano", "rcf"])
    assert (m.encoder, m.modifiers, m.baseline, m.baseline_modifiers, m.calibrated) == (
        "galileo-nano", ("p4", "max"), "cva-z", ("p4", "top2"), True)
    assert m.evidence == "embedding+spectra" and m.uses_embeddings
    assert parse_method("pca-kmeans-cal", ["rcf"]).evidence == "spectra"
    for bad in ("cva-z-whitened", "nothing", "rcf-max-top2", "cva-z+pca-kmeans", "rcf+rcf"):
        with pytest.raises(ConfigError):
            parse_method(bad, ["rcf"])


def test_same_month_protocol_and_filled_coregistration_gaps():
    import xarray as xr

    from changescout.cube import Quality
    from changescout.evaluate.benchmark import MONTHS, fill_moved_in, with_months

    t = np.array(["2016-01-20", "2018-03-28"], dtype="datetime64[ns]")
    cube = xr.DataArray(np.ones((2, 1, 4, 4), np.float32), dims=("time", "band", "y", "x"), coords={"time": t})
    months = lambda c: pd.DatetimeIndex(c["time"].values).month.tolist()  # noqa: E731
    assert months(with_months(cube, "first")) == [1, 1] and months(with_months(cube, "second")) == [3, 3]
    assert months(with_months(cube, "actual")) == [1, 3] and "first" in MONTHS
    with pytest.raises(ConfigError):
        with_months(cube, "july")
    before = cube.assign_coords(quality=(("time", "y", "x"), np.zeros((2, 4, 4), np.uint8)))
    v = np.arange(32, dtype=np.float32).reshape(2, 1, 4, 4)
    moved = v.copy()
    moved[1, :, :, 0] = np.nan  # a column moved in from outside the grid
    q = np.zeros((2, 4, 4), np.uint8)
    q[1, :, 0] = Quality.NODATA
    after = before.copy(data=moved).assign_coords(quality=(("time", "y", "x"), q))
    filled = fill_moved_in(after, before.copy(data=v))
    assert np.isfinite(filled.values).all() and (filled["quality"].values == 0).all()
    np.testing.assert_array_equal(filled.values[1, 0, :, 0], moved[1, 0, :, 1])  # the nearest pixel of that date
