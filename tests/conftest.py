"""Shared fixtures: small hand-made cubes, a fitted rcf encoder, and ONE finished run made once per session.

A pipeline run costs 10-20 s on two cores, so tests that only read a run use ``session_run`` and never write
into it (exports go to ``tmp_path``). Tests that need a run to modify copy it with ``copy_run``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from changescout.cube import OutputGrid, make_cube

sys.path.insert(0, str(Path(__file__).parent / "data"))  # fixture generators and helpers (make_sources, cli_call)

#: Origin of the hand-made grids (whole multiples of 16 px * 10 m, like the synthetic source).
LEFT, TOP = 372_000.0, 4_836_000.0
CRS = "EPSG:32631"


def _session_config(**overrides):
    """The configuration of the session run (seed 0, 128 px, 10 dates)."""
    from changescout.pipeline import RunConfig

    base = dict(source="synthetic", kind="synthetic", source_options={"seed": 0, "size": 128, "n_dates": 10}, label="t")
    base.update(overrides)
    return RunConfig(**base)


def _make_grid(height: int, width: int, res: float = 10.0) -> OutputGrid:
    return OutputGrid(CRS, (res, 0.0, LEFT, 0.0, -res, TOP), (height, width))


def _textured_cube(n_dates=3, size=64, bands=("B02", "B03", "B04", "B08"), seed=0, quality=None, chunks=None):
    """A small cube with spatial texture (so that rcf filters have something to learn) on a snapped grid."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.02, 0.3, (len(bands), size, size)).astype(np.float32)
    # smooth-ish texture: blocks of 4 px plus noise
    blocks = rng.uniform(0.02, 0.3, (len(bands), size // 4, size // 4)).astype(np.float32)
    base = 0.5 * base + 0.5 * np.repeat(np.repeat(blocks, 4, axis=1), 4, axis=2)
    data = np.stack([base + 0.005 * rng.standard_normal(base.shape).astype(np.float32) for _ in range(n_dates)])
    times = pd.date_range("2021-01-15", periods=n_dates, freq="MS") + pd.Timedelta(days=14)
    cube = make_cube(data, times, list(bands), _make_grid(size, size), quality=quality)
    if chunks is not None:
        cube = cube.chunk(chunks)
    return cube


# Helpers are handed out as fixtures (importing from a conftest is fragile: tests/sources has its own).
@pytest.fixture(scope="session")
def session_config():
    """Factory of RunConfig: the session run's configuration with ``**overrides``."""
    return _session_config


@pytest.fixture(scope="session")
def make_grid():
    """Factory ``make_grid(height, width, res=10)`` of OutputGrids at a patch-snapped origin."""
    return _make_grid


@pytest.fixture(scope="session")
def textured_cube():
    """Factory of small textured cubes (see :func:`_textured_cube`)."""
    return _textured_cube


@pytest.fixture(scope="session")
def synthetic_cube():
    """The synthetic source's cube: 128 px, 4 dates (0.2 s)."""
    from changescout.sources.synthetic import make_series

    return make_series(seed=0, size=128, n_dates=4)


@pytest.fixture(scope="session")
def fitted_rcf(synthetic_cube):
    """An rcf encoder (dim 32, patch 16) fitted on the synthetic cube, and the fit sample."""
    from changescout.embed import date_statistics, fit_sample
    from changescout.encoders import get_encoder

    cube, _ = synthetic_cube
    band_index = list(range(cube.sizes["band"]))
    stats = date_statistics(cube, band_index)
    sample = fit_sample(cube, band_index, stats, size=64, n_windows=6, seed=0)
    enc = get_encoder("rcf", patch_size=16, dim=32, seed=0).fit(sample)
    return enc, sample


@pytest.fixture(scope="session")
def session_run(tmp_path_factory) -> Path:
    """A finished run of the synthetic source (seed 0, 128 px, 10 dates). Read it, never write into it."""
    from changescout.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("session_run") / "run"
    run_pipeline(_session_config(), out, log=lambda msg: None)
    return out


@pytest.fixture
def copy_run(tmp_path):
    """Copy a run directory into this test's tmp_path (to modify it without touching the session run)."""

    def _copy(src: Path, name: str = "run") -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    return _copy
