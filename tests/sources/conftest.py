"""Shared fixtures of the source tests: the fixture generator on the path and the real data folder."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))

REAL_DATA = (Path(__file__).parents[2] / ".." / "shared" / "data").resolve()


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA
