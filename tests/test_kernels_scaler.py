"""alignts.kernels.scaler: LLMTime scaler vs NumPy (np.nanquantile), both modes, NaN, errors."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from alignts.errors import InputError
from alignts.kernels import scaler as K

series = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=30),
                    elements=st.floats(-1e6, 1e6))


@settings(max_examples=60, deadline=None)
@given(series, st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.booleans(), st.booleans())
def test_kernel_matches_ref_exactly(x, alpha, beta, basic, with_nan):
    if with_nan and x.shape[-1] > 1:
        x = x.copy()
        x[..., -1] = np.nan
    off, sc = K.llmtime_scaler(x, alpha, beta, basic)
    roff, rsc = K.llmtime_scaler_ref(x, alpha, beta, basic)
    assert off.shape == sc.shape == x.shape[:-1] + (1,)
    # same values, same sort, same interpolation arithmetic: equal to the bit
    np.testing.assert_array_equal(off, roff)
    np.testing.assert_array_equal(sc, rsc)
    assert (sc > 0).all()
    z = K.llmtime_scale(x, off, sc)
    np.testing.assert_allclose(K.llmtime_unscale(z, off, sc), x, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("alpha, beta", [(0.0, 2.2e-311), (2.2e-311, 0.0)])
def test_tiny_scale_is_floored_by_the_span(alpha, beta):
    # these used to give a subnormal scale: 1 scaled to inf
    x = np.array([0.0, 1.0])
    for fit in (K.llmtime_scaler, K.llmtime_scaler_ref):
        off, sc = fit(x, alpha, beta)
        assert sc[0] == (1.0 - off[0]) * K.SPAN_FLOOR
        assert np.isfinite(K.llmtime_scale(x, off, sc)).all()


def test_known_values():
    x = np.arange(1.0, 101.0)
    off, sc = K.llmtime_scaler(x, 0.95, 0.3)
    assert off[0] == 1 - 0.3 * 99
    np.testing.assert_allclose(sc[0], np.quantile(x - off[0], 0.95))
    off, sc = K.llmtime_scaler(-x, 0.5, basic=True)
    assert off[0] == 0 and sc[0] == np.quantile(x, 0.5)
    # degenerate cases: a constant zero series; a tiny one in basic mode
    assert K.llmtime_scaler(np.zeros(5), 0.95, 0.0)[1][0] == 1.0
    assert K.llmtime_scaler(np.full(5, 1e-4), basic=True)[1][0] == 0.01


def test_errors():
    with pytest.raises(InputError, match=r"inf at \(2,\)"):
        K.llmtime_scaler(np.array([0.0, 1.0, -np.inf]))
    with pytest.raises(InputError, match="all NaN"):
        K.llmtime_scaler(np.array([[1.0, 2.0], [np.nan, np.nan]]))
    with pytest.raises(InputError, match="alpha must be in"):
        K.llmtime_scaler(np.ones(3), alpha=1.5)
