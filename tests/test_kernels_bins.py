"""alignts.kernels.bins: Chronos bin codec vs NumPy (exact ids), round trip within half a bin, NaN, errors."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from alignts.errors import InputError, ShapeError
from alignts.kernels import bins as K

series = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=30),
                    elements=st.floats(-1e5, 1e5))


@settings(max_examples=60, deadline=None)
@given(series, st.booleans())
def test_kernel_matches_ref(x, with_nan):
    if with_nan:
        x = x.copy()
        x[..., 0] = np.nan
    ids, scale = K.bins_encode(x)
    rids, rscale = K.bins_encode_ref(x)
    np.testing.assert_array_equal(scale, rscale)  # both sum left to right: equal to the bit
    np.testing.assert_array_equal(ids, rids)
    assert ids.shape == x.shape and scale.shape == x.shape[:-1] + (1,)
    assert ((ids >= 0) & (ids < 4093) | np.isnan(x) & (ids == -1)).all()
    y = K.bins_decode(ids, scale)
    np.testing.assert_array_equal(y, K.bins_decode_ref(ids, scale))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    # inside [-15, 15] (in scaled units) the error is at most half a bin width, 15 / 4092
    z = x / scale
    inside = np.abs(z) <= 15
    assert np.all(np.abs(z - y / scale)[inside] <= 15.0 / 4092 + 1e-9)


def test_boundaries_and_small_grid():
    # 5 bins on [-2, 2]: centres -2..2, boundaries -1.5, -0.5, 0.5, 1.5; right=True semantics
    x = np.array([-9.0, -1.5, -0.5000001, -0.5, 0.0, 0.5, 1.49, 1.5, 99.0])
    ids, scale = K.bins_encode(x, n_bins=5, low=-2, high=2)
    z = x / scale[0]
    np.testing.assert_array_equal(ids, np.searchsorted([-1.5, -0.5, 0.5, 1.5], z, side="right"))
    one = np.array([[-1.5, 1.5]])  # mean |x| = 1.5 -> z = -1, 1
    ids, scale = K.bins_encode(one, n_bins=5, low=-2, high=2)
    np.testing.assert_array_equal(ids, [[1, 3]])
    np.testing.assert_array_equal(K.bins_decode(ids, scale, n_bins=5, low=-2, high=2), [[-1.5, 1.5]])
    assert K.bins_encode(np.zeros(4))[1][0] == 1.0  # zero scale -> 1


def test_errors():
    with pytest.raises(InputError, match=r"inf at \(0, 1\)"):
        K.bins_encode(np.array([[0.0, np.inf]]))
    with pytest.raises(InputError, match=r"ids must lie in \[0, 4093\)"):
        K.bins_decode(np.array([4093]), np.ones(1))
    with pytest.raises(ShapeError, match="scale must have shape"):
        K.bins_decode(np.array([[1, 2]]), np.ones((3, 1)))
    with pytest.raises(InputError, match="n_bins >= 2"):
        K.bins_encode(np.ones(3), n_bins=1)
