"""Split borders, train-only scaling, sliding windows (every window), and the ETTh1 last-value check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignts.data import TimeSeriesData, load_data, make_splits, n_windows, sliding_windows, split_borders
from alignts.data.splits import resolve_scheme
from alignts.errors import InputError


def _data(values, name="syn", freq="h"):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    ts = pd.date_range("2020-01-01", periods=len(values), freq=freq).to_numpy()
    return TimeSeriesData(name=name, values=values, columns=tuple(f"c{i}" for i in range(values.shape[1])),
                          timestamps=ts, freq=freq, mask=~np.isnan(values), source="test")


def test_ett_borders():
    b1, b2 = split_borders(17420, 336, 96, "ett_hour")
    assert b1 == (0, 8640 - 336, 11520 - 336) and b2 == (8640, 11520, 14400)
    b1, b2 = split_borders(69680, 512, 96, "ett_minute")
    assert b1 == (0, 4 * 8640 - 512, 4 * 11520 - 512) and b2 == (4 * 8640, 4 * 11520, 4 * 14400)
    assert resolve_scheme("ETTh2") == "ett_hour" and resolve_scheme("ETTm1") == "ett_minute"
    assert resolve_scheme("national_illness") == "ratio"


def test_ratio_borders_follow_tsl_convention():
    n, L = 966, 36
    b1, b2 = split_borders(n, L, 24, "ratio")
    n_train, n_test = int(n * 0.7), int(n * 0.2)
    assert b1 == (0, n_train - L, n - n_test - L) and b2 == (n_train, n - n_test, n)


def test_too_short_series_names_l_plus_h_and_length():
    d = _data(np.arange(100.0))
    with pytest.raises(InputError) as e:
        make_splits(d, 96, 24)
    msg = str(e.value)
    assert "L + H = 96 + 24 = 120" in msg and "100 rows" in msg and "Fix" in msg
    with pytest.raises(InputError, match="needs 14400"):
        make_splits(_data(np.arange(1000.0), name="ETTh1"), 96, 24)


def test_scaler_fitted_on_train_only_and_constant_channel():
    rng = np.random.default_rng(0)
    v = np.stack([rng.normal(5, 3, 1000), np.full(1000, 7.0)], axis=1)
    v[700:, 0] += 100  # a level shift after the train segment must not leak into the scaler
    sp = make_splits(_data(v), 24, 12)
    assert sp.scheme == "ratio"
    np.testing.assert_allclose(sp.mean, [v[:700, 0].mean(), 7.0])
    np.testing.assert_allclose(sp.std, [v[:700, 0].std(), 1.0])  # population std; constant -> 1
    np.testing.assert_allclose(sp.train.mean(0), 0, atol=1e-12)
    np.testing.assert_array_equal(sp.test[:, 1], 0.0)
    assert sp.train.shape == (700, 2) and sp.test.shape[0] == 200 + 24
    np.testing.assert_allclose(sp.inverse(sp.test.T).T, v[1000 - 224:])


def test_splits_fill_gaps_and_keep_mask():
    v = np.sin(np.arange(400) / 5.0)
    v[10:13] = np.nan
    v[300] = np.nan
    sp = make_splits(_data(v), 24, 8)
    assert np.isfinite(sp.train).all() and np.isfinite(sp.test).all()
    assert not sp.train_mask[10:13, 0].any() and sp.train_mask[:10, 0].all()
    # interior gap linearly interpolated (in scaled units)
    mid = (sp.train[9, 0] + sp.train[13, 0]) / 2
    assert sp.train[11, 0] == pytest.approx(mid)


def test_sliding_windows_every_window():
    arr = np.arange(50, dtype=np.float64).reshape(25, 2)
    x, y = sliding_windows(arr, 8, 4)
    assert x.shape == (25 - 8 - 4 + 1, 2, 8) and y.shape == (14, 2, 4) and x.dtype == np.float32
    np.testing.assert_array_equal(x[-1, 1], arr[13:21, 1])  # the very last window is included
    np.testing.assert_array_equal(y[-1, 0], arr[21:25, 0])
    xs, _ = sliding_windows(arr, 8, 4, stride=5)
    assert xs.shape[0] == n_windows(25, 8, 4, 5) == 3
    with pytest.raises(InputError, match="L \\+ H"):
        sliding_windows(arr, 20, 6)


@settings(max_examples=30, deadline=None)
@given(T=st.integers(5, 60), C=st.integers(1, 3), L=st.integers(1, 20), H=st.integers(0, 10))
def test_sliding_windows_property(T, C, L, H):
    arr = np.random.default_rng(T * 7 + C).normal(size=(T, C))
    if T < L + H:
        with pytest.raises(InputError):
            sliding_windows(arr, L, H)
        return
    x, y = sliding_windows(arr, L, H)
    assert x.shape == (T - L - H + 1, C, L) and y.shape == (T - L - H + 1, C, H)
    i = x.shape[0] // 2
    np.testing.assert_allclose(x[i], arr[i:i + L].T.astype(np.float32))
    np.testing.assert_allclose(y[i], arr[i + L:i + L + H].T.astype(np.float32))


def test_etth1_last_value_reproduces_published_repeat(etth1):
    """Last value on ETTh1 L=336 H=96 over all 2785 test windows and 7 channels = 1.294 / 0.713: this checks the
    split borders and the train-only scaling against the published "Repeat" row."""
    sp = make_splits(load_data(etth1), 336, 96)
    x, y = sliding_windows(sp.test, 336, 96)
    assert x.shape == (2785, 7, 336)
    err = x[..., -1:].astype(np.float64) - y
    assert round(float(np.mean(err ** 2)), 3) == 1.294
    assert round(float(np.mean(np.abs(err))), 3) == 0.713
