"""Shared fixtures of the source tests: the real data folder (tests/conftest.py puts the generators on the path)."""

from pathlib import Path

import pytest

REAL_DATA = (Path(__file__).parents[2] / ".." / "shared" / "data").resolve()


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA
