"""evaluate / baseline_table / format_table / holdout_eval, and the runtime's independence from torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from alignts.data import TimeSeriesData, load_data, make_splits, sliding_windows
from alignts.errors import InputError, ShapeError
from alignts.eval.evaluate import (PUBLISHED, baseline_table, evaluate, format_table, holdout_baseline_table,
                                   holdout_eval)


def _data(values, name="syn"):
    values = np.asarray(values, dtype=np.float64)
    ts = pd.date_range("2020-01-01", periods=len(values), freq="h").to_numpy()
    return TimeSeriesData(name=name, values=values, columns=tuple(f"c{i}" for i in range(values.shape[1])),
                          timestamps=ts, freq="h", mask=~np.isnan(values), source="test")


def _half_last(x):
    return 0.5 * np.repeat(x[..., -1:], 5, axis=-1)


def test_evaluate_scores_every_window_in_odd_batches():
    v = np.random.default_rng(0).normal(size=(500, 3)).cumsum(0)
    sp = make_splits(_data(v), 30, 5)
    calls = []

    def pred(x):
        calls.append(x.shape[0])
        assert x.dtype == np.float32 and x.shape[1:] == (3, 30)
        return _half_last(x)

    r = evaluate(pred, sp, 30, 5, batch_size=7, progress=False)
    x, _ = sliding_windows(sp.test, 30, 5)
    assert r["n_windows"] == x.shape[0] == sum(calls) == len(sp.test) - 30 - 5 + 1
    y64 = np.lib.stride_tricks.sliding_window_view(sp.test, 35, axis=0)[..., 30:]
    err = _half_last(x).astype(np.float64) - y64
    assert r["mse"] == pytest.approx(float(np.mean(err ** 2)), rel=1e-9)
    assert r["mae"] == pytest.approx(float(np.mean(np.abs(err))), rel=1e-9)
    assert r["n_dropped"] == 0 and r["seconds"] >= 0


def test_evaluate_bad_forecaster():
    sp = make_splits(_data(np.random.default_rng(1).normal(size=(300, 1))), 20, 5)
    with pytest.raises(ShapeError, match=r"\[B, C, H\]"):
        evaluate(lambda x: x[..., :4], sp, progress=False)
    with pytest.raises(InputError, match="NaN"):
        evaluate(lambda x: np.full(x.shape[:2] + (5,), np.nan), sp, progress=False)


def test_evaluate_with_missing_values_drops_empty_contexts():
    v = np.random.default_rng(2).normal(size=(400, 2))
    v[330:360, 1] = np.nan  # inside the test split (rows 320..399 with L=10: segment starts at 310)
    sp = make_splits(_data(v), 10, 3)
    r = evaluate(lambda x: np.zeros(x.shape[:2] + (3,)), sp, progress=False)
    # windows of channel 1 whose 10-step context lies inside the 30-step gap: starts 330..350
    assert r["n_dropped"] == 21
    n = r["n_windows"]
    assert r["n_scored"] < n * 2 * 3


def test_baseline_table_and_format():
    v = np.sin(np.arange(2000) * 2 * np.pi / 24)[:, None] + np.random.default_rng(3).normal(size=(2000, 1)) * 0.1
    sp = make_splits(_data(v), 48, 24)
    rows = baseline_table(sp)
    assert set(rows) == {"last_value", "seasonal_naive", "dlinear", "ridge"}
    assert rows["seasonal_naive"]["period"] == 24
    assert rows["seasonal_naive"]["mse"] < rows["last_value"]["mse"]
    assert rows["dlinear"]["mse"] < rows["last_value"]["mse"]
    md = format_table(rows, published=("ETTh1", 96))
    assert "| dlinear |" in md and "0.375/0.399 (DLinear)" in md and "Time-LLM (published, L=512)" in md
    assert format_table(rows).count("\n") == 5
    with pytest.raises(InputError, match="no published"):
        format_table(rows, published=("nope", 1))


def _collection(series, horizon, freq="quarterly"):
    T = max(len(s) for s in series)
    v = np.full((T, len(series)), np.nan)
    for i, s in enumerate(series):
        v[T - len(s):, i] = s
    return TimeSeriesData(name="coll", values=v, columns=tuple(f"s{i}" for i in range(len(series))),
                          timestamps=None, freq=freq, mask=~np.isnan(v), source="test", horizon=horizon,
                          collection=True)


def test_holdout_eval():
    season = np.array([1.0, 2.0, 3.0, 4.0])
    a = np.tile(season, 6)  # perfectly seasonal, period 4
    b = np.arange(10.0)
    data = _collection([a, b, np.array([1.0, 2.0])], horizon=4)
    seen = []

    def pred(hs):
        seen.extend(len(h) for h in hs)
        return np.stack([np.repeat(h[-1], 4) for h in hs])

    r = holdout_eval(pred, data, progress=False)
    assert r["n_series"] == 2 and r["n_skipped"] == 1 and seen == [20, 6] and r["period"] == 4
    # last value on a: |[1,2,3,4] - 4| = 3,2,1,0 -> MAE 1.5, scale (m=4) 0 -> undefined; on b: MAE 2.5, scale 4
    assert r["mae"] == pytest.approx((1.5 + 2.5) / 2)
    assert r["n_mase_undefined"] == 1 and r["mase"] == pytest.approx(2.5 / 4)
    rows = holdout_baseline_table(data)
    # seasonal naive: exact on a (0), on b repeats [2, 3, 4, 5] for [6, 7, 8, 9] (4) -> mean 2
    assert rows["seasonal_naive"]["mae"] == pytest.approx(2.0)
    assert rows["last_value"]["mae"] == pytest.approx(r["mae"])
    r2 = holdout_eval(pred, data, context_len=5, progress=False)
    assert r2["n_series"] == 2 and max(seen[-2:]) == 5
    r3 = holdout_eval(pred, data, first_series=1, max_series=1, progress=False)  # a held-out slice: b alone
    assert r3["n_series"] == 1 and seen[-1] == 6 and r3["mae"] == pytest.approx(2.5)
    with pytest.raises(ShapeError):
        holdout_eval(lambda hs: np.zeros((len(hs), 3)), data, progress=False)


def test_holdout_monash_tourism_reproduces_published_snaive(shared_data):
    p = shared_data / "monash" / "tourism_quarterly_dataset.tsf"
    if not p.is_file():
        pytest.skip(f"{p} not found")
    rows = holdout_baseline_table(load_data(p))
    # Monash archive, tourism quarterly, seasonal naive: MASE 1.699
    assert rows["seasonal_naive"]["n_series"] == 427
    assert round(rows["seasonal_naive"]["mase"], 3) == 1.699


def test_etth1_baseline_table(etth1):
    sp = make_splits(load_data(etth1), 336, 96)
    rows = baseline_table(sp, names=("last_value", "ridge"))
    assert rows["last_value"]["n_windows"] == 2785
    assert round(rows["last_value"]["mse"], 3) == 1.294 and round(rows["last_value"]["mae"], 3) == 0.713
    assert round(rows["ridge"]["mse"], 2) == 0.37 and round(rows["ridge"]["mae"], 2) == 0.39
    assert ("ETTh1", 96) in PUBLISHED


def test_runtime_data_and_eval_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; sys.modules['peft'] = None\n"
            "import numpy as np, alignts.data, alignts.eval.evaluate, alignts.eval.baselines, alignts.eval.metrics\n"
            "import alignts.eval.calibrate, alignts.runtime.conformal\n"
            "from alignts.eval.baselines import fit_baseline\n"
            "m = fit_baseline('dlinear', np.random.default_rng(0).normal(size=(200, 2)), 24, 4)\n"
            "assert m.predict(np.zeros((1, 2, 24), np.float32)).shape == (1, 2, 4)\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_evaluate_shorter_context_keeps_test_border():
    v = np.random.default_rng(5).normal(size=(600, 1))
    sp = make_splits(_data(v), 48, 6)
    short = evaluate(lambda x: np.repeat(x[..., -1:], 6, axis=-1), sp, 24, 6, progress=False)
    sp24 = make_splits(_data(v), 24, 6)
    ref = evaluate(lambda x: np.repeat(x[..., -1:], 6, axis=-1), sp24, progress=False)
    assert short["n_windows"] == ref["n_windows"] and short["mse"] == pytest.approx(ref["mse"])
    with pytest.raises(InputError, match="make_splits"):
        evaluate(lambda x: x[..., :6], sp, 96, 6, progress=False)
