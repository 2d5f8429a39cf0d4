"""Quantiles for point forecasters (issue 12, part 2): split-conformal calibration (alignts.eval.calibrate), the
runtime's conformal quantiles (alignts.runtime.conformal) and the quantile metrics (coverage, WQL, CRPS).

Torch-free parts use tests/seal_bundle.py's Internal bundle and a zero forecaster on synthetic data; the fit's
own calibration is checked on tests/tiny_bundles.py's Internal bundle (needs torch, optimum, llama-cpp-python).
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from alignts.data import TimeSeriesData, make_splits
from alignts.errors import InputError, ManifestError, ShapeError
from alignts.eval.calibrate import calibrate, write_calibration
from alignts.eval.evaluate import EVAL_LEVELS, evaluate, forecaster_predict, quantile_method
from alignts.eval.metrics import QuantileScores, coverage, crps_quantiles, wql
from alignts.runtime.conformal import (DEFAULT_LEVELS, conformal_quantiles, context_std, order_statistic_index,
                                       split_conformal_quantiles)


def _data(values, name="syn"):
    values = np.asarray(values, dtype=np.float64)
    ts = pd.date_range("2020-01-01", periods=len(values), freq="h").to_numpy()
    return TimeSeriesData(name=name, values=values, columns=tuple(f"c{i}" for i in range(values.shape[1])),
                          timestamps=ts, freq="h", mask=~np.isnan(values), source="test")


class _Zero:
    """A planned point forecaster that always says 0 (the synthetic series have mean 0)."""

    paradigm = "internal"

    def __init__(self, L, H):
        self.context_len, self.horizon, self.bundle_dir = L, H, "zero"
        self.planned = SimpleNamespace(horizon=H)
        self.cfg = SimpleNamespace(conformal=None)  # the typed config a runtime Forecaster carries

    def forecast_scaled(self, x):
        return np.zeros(x.shape[:2] + (self.horizon,), np.float32)


def _table(levels, rows):
    return {"method": "split-conformal", "split": "val", "n_windows": 3, "n_series": 3,
            "normalized_by": "instance_std", "levels": list(levels), "residual_quantiles": rows}


def test_runtime_never_imports_eval():
    code = ("import importlib, pkgutil, sys, alignts.runtime as rt\n"
            "for m in pkgutil.walk_packages(rt.__path__, 'alignts.runtime.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(sorted(k for k in sys.modules if k.startswith('alignts.eval')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ the finite-sample correction

def test_split_conformal_correction_exact():
    # step 0: residuals 1..9 shuffled (n = 9); step 1: 1..4 and five missing ones (n = 4)
    r = np.full((9, 2), np.nan)
    r[:, 0] = np.random.default_rng(0).permutation(np.arange(1.0, 10.0))
    r[:4, 1] = [4.0, 2.0, 3.0, 1.0]
    levels = (0.05, 0.1, 0.2, 0.5, 0.7, 0.8, 0.9, 0.95)
    got = split_conformal_quantiles(r, levels)
    # n = 9: k = floor(10 tau) below 0.5, ceil(10 tau) from 0.5 on, clipped to [1, 9]; 10 * 0.7 is
    # 7.000000000000001 in floating point and must still give k = 7
    assert got[:, 0].tolist() == [1, 1, 2, 5, 7, 8, 9, 9]
    # n = 4: floor(5 tau) -> 0 (clipped to 1), 0, 1; ceil(5 tau) -> 3, 4, 4, 5 -> 4, 5 -> 4
    assert got[:, 1].tolist() == [1, 1, 1, 3, 4, 4, 4, 4]
    # without the correction the 0.8 quantile of 1..9 would be 7.4 (linear) or 8 (inverted cdf): it moves
    # towards the tail, never inwards
    assert np.all(got[levels.index(0.8):, 0] >= np.quantile(r[:, 0], 0.8))
    assert order_statistic_index(np.array([99]), 0.9).tolist() == [90]  # ceil(100 * 0.9)
    assert order_statistic_index(np.array([99]), 0.1).tolist() == [10]  # floor(100 * 0.1)
    with pytest.raises(InputError, match="no observed residual at horizon step 1"):
        split_conformal_quantiles(np.array([[1.0, np.nan]]), (0.5,))


def test_conformal_quantiles_interpolate_scale_and_sort():
    conf = _table((0.1, 0.5, 0.9), [[-2.0, -4.0], [0.0, 0.0], [1.0, 3.0]])
    point = np.array([[[10.0, 20.0]]])  # [1, 1, 2]
    ctx = np.array([[[0.0, 2.0, 0.0, 2.0]]])  # instance std sqrt(1 + 1e-5)
    s = float(context_std(ctx)[0, 0, 0])
    q = conformal_quantiles(point, ctx, conf, (0.1, 0.3, 0.5, 0.7, 0.9))
    assert q.shape == (1, 1, 2, 5)
    expect0 = 10 + s * np.array([-2.0, -1.0, 0.0, 0.5, 1.0])
    expect1 = 20 + s * np.array([-4.0, -2.0, 0.0, 1.5, 3.0])
    np.testing.assert_allclose(q[0, 0], np.stack([expect0, expect1]), rtol=1e-12)
    # a shorter planned horizon takes the first steps; a table that is not monotone comes back sorted
    assert conformal_quantiles(point[..., :1], ctx, conf, (0.5,)).shape == (1, 1, 1, 1)
    bad = _table((0.1, 0.9), [[1.0, 0.0], [-1.0, 0.0]])
    assert np.all(np.diff(conformal_quantiles(point, ctx, bad, (0.1, 0.9)), axis=-1) >= 0)


def test_conformal_quantiles_refusals():
    conf = _table((0.1, 0.9), [[-1.0], [1.0]])
    point, ctx = np.zeros((1, 1, 1)), np.arange(4.0)[None, None]
    with pytest.raises(InputError, match=r"outside the calibrated range \[0.1, 0.9\]"):
        conformal_quantiles(point, ctx, conf, (0.05, 0.5))
    with pytest.raises(InputError, match="strictly ascending"):
        conformal_quantiles(point, ctx, conf, (0.9, 0.1))
    with pytest.raises(ShapeError, match="covers 1"):
        conformal_quantiles(np.zeros((1, 1, 2)), ctx, conf, (0.5,))
    with pytest.raises(ManifestError, match="ascending levels"):
        conformal_quantiles(point, ctx, _table((0.9, 0.1), [[-1.0], [1.0]]), (0.5,))
    with pytest.raises(ManifestError, match="split-conformal"):
        conformal_quantiles(point, ctx, {**conf, "method": "other"}, (0.5,))
    with pytest.raises(InputError, match=r"has no calibration.*alignts calibrate b/ --data DATA"):
        conformal_quantiles(point, ctx, None, (0.5,), bundle="b/")


# ------------------------------------------------------------------------------------------------ metrics

def test_wql_crps_coverage_hand_computed():
    y = np.array([1.0, -2.0])
    q = np.array([[0.0, 2.0], [-1.0, 0.0]])  # levels 0.1, 0.9
    # pinball: y=1: 0.1 * 1 = 0.1 (q0.1=0), 0.1 * 1 = 0.1 (q0.9=2); y=-2: 0.9 * 1 = 0.9, 0.1 * 2 = 0.2
    # per level: 1.0 and 0.3; sum |y| = 3 -> WQL = mean(2 * 1.0 / 3, 2 * 0.3 / 3); CRPS = mean(2 * 1.0 / 2, 2 * 0.3 / 2)
    assert wql(y, q, (0.1, 0.9)) == pytest.approx((2 / 3 + 0.2) / 2)
    assert crps_quantiles(y, q, (0.1, 0.9)) == pytest.approx(0.65)
    assert coverage(y, q[:, 0], q[:, 1]) == 0.5
    m = np.array([True, False])
    assert wql(y, q, (0.1, 0.9), mask=m) == pytest.approx(0.2)
    assert coverage(y, q[:, 0], q[:, 1], mask=m) == 1.0
    # one level 0.5: WQL is sum |y - q| / sum |y| and CRPS is the MAE
    assert wql(y, np.zeros((2, 1)), (0.5,)) == pytest.approx(1.0)
    assert crps_quantiles(y, np.zeros((2, 1)), (0.5,)) == pytest.approx(1.5)
    # batches add up to the whole
    acc = QuantileScores((0.1, 0.9)).add(y[:1], q[:1]).add(y[1:], q[1:])
    assert (acc.wql, acc.crps, acc.coverage) == pytest.approx((wql(y, q, (0.1, 0.9)), 0.65, 0.5))
    with pytest.raises(ShapeError, match="one value per level"):
        wql(y, q, (0.1, 0.5, 0.9))
    with pytest.raises(InputError, match="NaN"):
        wql(np.array([np.nan, 1.0]), q, (0.1, 0.9))
    with pytest.raises(InputError, match="sum \\|y\\| is 0"):
        wql(np.zeros(2), q, (0.1, 0.9))


def test_coverage_gaussian_close_to_nominal():
    """Heteroscedastic white noise, a zero forecast: residuals normalized by the context's std are about
    N(0, 1), so the calibrated 80 % interval covers about 80 % of the test targets."""
    rng = np.random.default_rng(0)
    t = np.arange(6000)[:, None]
    v = rng.standard_normal((6000, 2)) * np.exp(0.8 * np.sin(2 * np.pi * t / 700 + np.array([0.0, 2.0])))
    sp = make_splits(_data(v), 64, 8)
    f = _Zero(64, 8)
    conf = calibrate(f, sp)
    assert conf["n_windows"] == 512 and conf["n_series"] == 1024 and conf["levels"] == list(DEFAULT_LEVELS)
    rq = np.array(conf["residual_quantiles"])
    assert rq.shape == (len(DEFAULT_LEVELS), 8) and np.all(np.diff(rq, axis=0) >= 0)
    np.testing.assert_allclose(rq[list(DEFAULT_LEVELS).index(0.9)], 1.28, atol=0.2)  # the N(0, 1) quantile
    f.cfg.conformal = conf
    assert quantile_method(f) == "conformal"
    r = evaluate(forecaster_predict(f, EVAL_LEVELS), sp, levels=EVAL_LEVELS, progress=False)
    assert r["interval"] == [0.1, 0.9]
    assert abs(r["coverage"] - 0.8) < 0.04
    assert r["crps"] < r["mae"]  # a calibrated spread beats the point forecast alone


# ------------------------------------------------------------------------ bundles: torch-free and fitted

@pytest.fixture
def sealed(tmp_path):
    pytest.importorskip("onnx")
    from seal_bundle import build_bundle

    return build_bundle(tmp_path / "bundle")


def test_uncalibrated_bundle_says_so_then_calibrate_adds_quantiles(sealed, tmp_path, capsys):
    from alignts.cli import main
    from alignts.runtime import load
    from alignts.runtime.manifest import read_manifest
    from seal_bundle import L

    f = load(sealed)
    f.plan(variant="onnx-fp32", batch_size=4)
    assert quantile_method(f) == "none"
    x = np.random.default_rng(1).standard_normal((3, 1, L)).astype(np.float32)
    with pytest.raises(InputError, match=f"{sealed} has no calibration.*alignts calibrate {sealed} --data DATA"):
        forecaster_predict(f, EVAL_LEVELS)(x)
    assert main(["inspect", str(sealed)]) == 0
    assert "quantiles: none (not calibrated). Fix: alignts calibrate" in capsys.readouterr().out

    csv = tmp_path / "one.csv"
    v = np.sin(np.arange(600) / 5) + 0.2 * np.random.default_rng(2).standard_normal(600)
    pd.DataFrame({"date": pd.date_range("2022-01-01", periods=600, freq="h"), "v": v}).to_csv(csv, index=False)
    before = {p.name: p.read_bytes() for p in sealed.iterdir() if p.name != "manifest.json"}
    assert main(["calibrate", str(sealed), "--data", str(csv), "--max-windows", "20"]) == 0
    assert "calibrated" in capsys.readouterr().out
    assert main(["inspect", str(sealed)]) == 0
    assert "quantiles: split-conformal on 20 val windows" in capsys.readouterr().out
    m = read_manifest(sealed)  # every file still verifies: only manifest.json changed
    assert {p.name: p.read_bytes() for p in sealed.iterdir() if p.name != "manifest.json"} == before
    assert not [p for p in sealed.parent.iterdir() if ".calibrate." in p.name]  # no temporary left behind
    c = m.config["conformal"]
    assert c["n_windows"] == 20 and c["split"] == "val" and len(c["residual_quantiles"][0]) == f.horizon

    f = load(sealed)
    f.plan(variant="onnx-fp32", batch_size=4)
    p, q = forecaster_predict(f, (0.1, 0.5, 0.9))(x)
    assert q.shape == p.shape + (3,) and np.all(np.diff(q, axis=-1) >= 0)
    assert main(["eval", str(sealed), "--data", str(csv), "--no-baselines", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "cov 80%" in out and "WQL" in out and "conformal, calibrated on 20 val windows" in out
    row = json.loads((tmp_path / "e.json").read_text())["rows"]["internal"]
    assert 0 <= row["coverage"] <= 1 and row["wql"] > 0 and row["quantile_method"] == "conformal"

    # write_calibration replaces an earlier calibration
    write_calibration(sealed, _table((0.1, 0.9), [[0.0] * 4, [1.0] * 4]))
    assert read_manifest(sealed).config["conformal"]["levels"] == [0.1, 0.9]


def test_fit_calibrates_the_bundle(tmp_path, csv):
    for mod in ("torch", "onnxruntime", "llama_cpp", "optimum.exporters.onnx"):
        pytest.importorskip(mod)
    from tiny_bundles import H, internal_bundle

    from alignts.runtime import load

    b = internal_bundle(tmp_path, str(csv))
    f = load(b)
    f.plan(batch_size=4)
    c = f.manifest.config["conformal"]
    assert c["method"] == "split-conformal" and c["normalized_by"] == "instance_std" and c["split"] == "val"
    assert c["levels"] == list(DEFAULT_LEVELS) and np.array(c["residual_quantiles"]).shape == (len(DEFAULT_LEVELS), H)
    assert c["n_series"] == c["n_windows"] * f.n_channels
    sp = make_splits(_data(pd.read_csv(csv)[["x", "y"]].to_numpy()), f.context_len, H)
    x = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(sp.test, f.context_len, axis=0)[:5],
                             dtype=np.float32)  # [5, C, L]
    p, q = forecaster_predict(f, DEFAULT_LEVELS)(x)
    assert q.shape == (5, f.n_channels, H, len(DEFAULT_LEVELS)) and np.all(np.diff(q, axis=-1) >= 0)
