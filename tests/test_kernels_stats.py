"""alignts.kernels.stats: prompt statistics vs NumPy (exact lags), known periods, NaN fill, errors."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from alignts.errors import InputError, ShapeError
from alignts.kernels import stats as K

series = hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(10, 60)), elements=st.floats(-1e3, 1e3))


@settings(max_examples=50, deadline=None)
@given(series, st.integers(1, 5))
def test_kernel_matches_ref(x, k):
    got = K.prompt_stats(x, k)
    ref = K.prompt_stats_ref(x, k)
    assert set(got) == set(K.STAT_NAMES)
    for name in ("min", "max", "median"):
        np.testing.assert_array_equal(got[name], ref[name])
    np.testing.assert_allclose(got["trend"], ref["trend"], rtol=1e-9, atol=1e-9)  # summation order
    np.testing.assert_array_equal(got["lags"], ref["lags"])  # same FFT, same tie rule: exact
    assert got["lags"].shape == (x.shape[0], k) and got["lags"].min() >= 1
    assert got["lags"].max() <= x.shape[1] // 2


def test_known_period_and_shapes():
    t = np.arange(96)
    x = np.stack([np.sin(2 * np.pi * t / 24), np.sin(2 * np.pi * t / 12) + 0.01 * t])[None]  # [1, 2, 96]
    s = K.prompt_stats(x, 3)
    assert s["lags"].shape == (1, 2, 3) and s["min"].shape == (1, 2)
    assert s["lags"][0, 0, 0] == 24
    assert s["lags"][0, 1, 0] in (12, 24, 36, 48)
    np.testing.assert_allclose(s["trend"][0], x[0, :, -1] - x[0, :, 0], atol=1e-12)


def test_nan_filled_with_mean():
    x = np.array([1.0, np.nan, 3.0, 5.0, 7.0, 9.0, 2.0, 4.0, 6.0, 8.0, 0.0, 1.0])
    filled = x.copy()
    filled[1] = np.nanmean(x)
    got, want = K.prompt_stats(x, 2), K.prompt_stats(filled, 2)
    for name in K.STAT_NAMES:
        np.testing.assert_array_equal(got[name], want[name])


def test_errors():
    with pytest.raises(ShapeError, match="L >= 2 \\* top_k = 10"):
        K.prompt_stats(np.ones(9), 5)
    with pytest.raises(InputError, match=r"inf at \(0, 3\)"):
        K.prompt_stats(np.array([[0.0, 1, 2, -np.inf] + [0.0] * 10]))
    with pytest.raises(InputError, match="all NaN"):
        K.prompt_stats(np.full((2, 12), np.nan))
    with pytest.raises(InputError, match="top_k"):
        K.prompt_stats(np.ones(12), 0)
