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


@pytest.fixture(scope="session")
def csv(tmp_path_factory) -> Path:
    """A small hourly CSV (date, x, y; 400 rows, daily and half-daily seasonality + noise), seeded."""
    import numpy as np
    import pandas as pd

    n = 400
    i = np.arange(n)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"date": pd.date_range("2022-01-01", periods=n, freq="h"),
                       "x": np.sin(2 * np.pi * i / 24) + 0.1 * rng.standard_normal(n),
                       "y": 3 + np.cos(2 * np.pi * i / 12) + 0.1 * rng.standard_normal(n)})
    p = tmp_path_factory.mktemp("data") / "syn.csv"
    df.to_csv(p, index=False)
    return p


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict:
    """One tiny bundle of each paradigm (tests/tiny_bundles.py, on statsmodels:co2), built once per session:
    {"internal": ..., "bridging": ..., "injective": ...}. Skips without torch, onnxruntime, llama.cpp or optimum.
    $ALIGNTS_TINY_BUNDLES names a folder that holds them already (reused between runs while developing)."""
    kept = os.environ.get("ALIGNTS_TINY_BUNDLES")
    if kept:
        return {p: Path(kept) / p for p in ("internal", "bridging", "injective")}
    for mod in ("torch", "onnxruntime", "llama_cpp", "optimum.exporters.onnx", "statsmodels"):
        pytest.importorskip(mod)
    from tiny_bundles import bridging_bundle, injective_bundle, internal_bundle

    root = tmp_path_factory.mktemp("tiny_bundles")
    return {"internal": internal_bundle(root, "statsmodels:co2"), "bridging": bridging_bundle(root, "statsmodels:co2"),
            "injective": injective_bundle(root)}
