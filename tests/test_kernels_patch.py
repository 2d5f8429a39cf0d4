"""alignts.kernels.patch: patch counts, replication padding, fused normalize+patch vs NumPy."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from alignts.errors import InputError, ShapeError
from alignts.kernels import norm as N
from alignts.kernels import patch as K

RTOL, ATOL = 1e-9, 1e-9  # float64; float32 below uses 1e-6


@st.composite
def case(draw):
    p = draw(st.integers(1, 9))
    stride = draw(st.integers(1, 9))
    length = draw(st.integers(p, 40))
    lead = draw(st.lists(st.integers(1, 3), max_size=2))
    x = draw(hnp.arrays(np.float64, tuple(lead) + (length,), elements=st.floats(-1e4, 1e4)))
    return x, p, stride


@settings(max_examples=50, deadline=None)
@given(case())
def test_patchify_matches_ref(c):
    x, p, stride = c
    out = K.patchify(x, p, stride)
    n = (x.shape[-1] - p) // stride + 2
    assert out.shape == x.shape[:-1] + (n, p) and n == K.n_patches(x.shape[-1], p, stride)
    np.testing.assert_array_equal(out, K.patchify_ref(x, p, stride))
    # replication pad: the last patch ends on copies of the last value
    idx = np.minimum((n - 1) * stride + np.arange(p), x.shape[-1] - 1)
    np.testing.assert_array_equal(out[..., -1, :], x[..., idx])


@settings(max_examples=50, deadline=None)
@given(case(), st.booleans())
def test_norm_patchify_matches_ref_and_unfused(c, with_nan):
    x, p, stride = c
    if with_nan and x.shape[-1] > 1:
        x = x.copy()
        x[..., 0] = np.nan
    out, m, s = K.norm_patchify(x, p, stride)
    ro, rm, rs = K.norm_patchify_ref(x, p, stride)
    np.testing.assert_allclose(m, rm, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(s, rs, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out, ro, rtol=RTOL, atol=1e-7)
    assert not np.isnan(out).any()
    # unfused path: stats, norm, patch (NaN kept, then compared where observed)
    um, us = N.instance_stats(x)
    up = K.patchify(N.instance_norm(x, um, us), p, stride)
    ok = ~np.isnan(up)
    np.testing.assert_allclose(out[ok], up[ok], rtol=RTOL, atol=1e-7)
    if with_nan and x.shape[-1] > 1:
        np.testing.assert_array_equal(out[..., 0, 0], 0.0)
        kept, _, _ = K.norm_patchify(x, p, stride, fill_nan=False)
        assert np.isnan(kept[..., 0, 0]).all()


def test_time_llm_shape_float32():
    x = np.random.default_rng(1).normal(size=(4, 7, 512)).astype(np.float32)
    out, m, s = K.norm_patchify(x, 16, 8)
    assert out.shape == (4, 7, 64, 16) and out.dtype == np.float32 and m.shape == (4, 7, 1)
    ro, _, _ = K.norm_patchify_ref(x, 16, 8)
    np.testing.assert_allclose(out, ro, rtol=1e-6, atol=1e-6)


def test_errors():
    with pytest.raises(ShapeError, match="need L >= 16"):
        K.patchify(np.zeros(15))
    with pytest.raises(ShapeError, match="need L >= 16"):
        K.norm_patchify(np.zeros((2, 10)))
    with pytest.raises(InputError, match=r"inf at \(0, 3\)"):
        K.norm_patchify(np.array([[0, 1, 2, np.inf] + [0.0] * 20]))
    with pytest.raises(InputError, match="all NaN"):
        K.norm_patchify(np.full((1, 20), np.nan))
    with pytest.raises(InputError, match="stride must be >= 1"):
        K.patchify(np.zeros(20), 4, 0)
