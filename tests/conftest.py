"""Shared test fixtures: where the real data lives, and skips for optional parts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The team's data sits beside the checkout (../shared/data); ALIGNTS_DATA overrides it.
SHARED_DATA = Path(os.environ.get("ALIGNTS_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set ALIGNTS_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def etth1(shared_data) -> Path:
    p = shared_data / "ETT" / "ETTh1.csv"
    if not p.is_file():
        pytest.skip(f"{p} not found")
    return p
