"""alignts.kernels.norm: numba kernel vs NumPy twin, NaN policy, scale invariance, errors."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from alignts.errors import InputError, ShapeError
from alignts.kernels import norm as K

# float tolerance: both accumulate in float64; only the summation order differs
RTOL, ATOL = 1e-9, 1e-9

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
series = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12), elements=finite)


@settings(max_examples=40, deadline=None)
@given(series)
def test_kernel_matches_ref(x):
    m, s = K.instance_stats(x)
    mr, sr = K.instance_stats_ref(x)
    assert m.shape == s.shape == x.shape[:-1] + (1,)
    np.testing.assert_allclose(m, mr, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(s, sr, rtol=RTOL, atol=ATOL)
    y = K.instance_norm(x, m, s)
    # the means differ by ~1 ulp of |x| <= 1e6 (1e-10), divided by std >= sqrt(eps): atol 1e-6 on y
    np.testing.assert_allclose(y, K.instance_norm_ref(x, m, s), rtol=RTOL, atol=1e-6)
    back = K.instance_denorm(y, m, s)
    np.testing.assert_allclose(back, K.instance_denorm_ref(y, m, s), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 40)), elements=st.floats(-100, 100)),
       st.floats(0.01, 1000), st.floats(-1000, 1000))
def test_scale_invariance(x, a, b):
    """norm(a*x + b) == norm(x) when eps is negligible against the variance."""
    x = x + np.arange(x.shape[-1])  # keep the variance away from 0
    y1 = K.instance_norm(x, *K.instance_stats(x, eps=0.0))
    z = a * x + b
    y2 = K.instance_norm(z, *K.instance_stats(z, eps=0.0))
    np.testing.assert_allclose(y1, y2, rtol=1e-6, atol=1e-6)


def test_nan_ignored_and_kept():
    x = np.array([[1.0, np.nan, 3.0, 5.0], [2.0, 2.0, np.nan, np.nan]])
    m, s = K.instance_stats(x, eps=0.0)
    np.testing.assert_allclose(m[:, 0], [3.0, 2.0])
    np.testing.assert_allclose(s[:, 0], [np.sqrt(8 / 3), 0.0])
    y = K.instance_norm(x, m, np.maximum(s, 1))
    assert np.isnan(y[0, 1]) and np.isnan(y[1, 2])
    mr, sr = K.instance_stats_ref(x, eps=0.0)
    np.testing.assert_allclose(m, mr)
    np.testing.assert_allclose(s, sr)


def test_float32_keeps_dtype():
    x = np.random.default_rng(0).normal(size=(3, 7, 50)).astype(np.float32)
    m, s = K.instance_stats(x)
    assert m.dtype == np.float64
    y = K.instance_norm(x, m, s)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, K.instance_norm_ref(x, m, s), rtol=1e-6, atol=1e-6)
    # stats given without the kept axis broadcast the same
    np.testing.assert_array_equal(K.instance_norm(x, m[..., 0], s[..., 0]), y)


def test_errors():
    with pytest.raises(InputError, match=r"inf at \(1, 2\).*Fix: clean the input"):
        K.instance_stats(np.array([[0.0, 1, 2], [0, 1, np.inf]]))
    with pytest.raises(InputError, match=r"series 1 \(index \(0, 1\)\) is all NaN"):
        K.instance_stats(np.array([[[1.0, 2.0], [np.nan, np.nan]]]))
    with pytest.raises(InputError, match="all NaN"):
        K.instance_stats_ref(np.array([np.nan, np.nan]))
    with pytest.raises(ShapeError, match="time axis"):
        K.instance_stats(np.float64(3.0))
    x = np.ones((2, 5))
    with pytest.raises(ShapeError, match=r"mean must have shape \(2, 1\)"):
        K.instance_norm(x, np.zeros(3), np.ones((2, 1)))
