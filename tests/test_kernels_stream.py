"""alignts.kernels.stream: the incremental kernels against their NumPy twins and the batch kernels."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from alignts.errors import InputError, ShapeError
from alignts.kernels import stream as K
from alignts.kernels.digits import TEXT_TABLE, CodecTable, encode_digits
from alignts.kernels.norm import instance_stats
from alignts.kernels.patch import patchify
from alignts.kernels.scaler import llmtime_scale


def _series(seed, n, c, nan=0.1):
    rng = np.random.default_rng(seed)
    x = 100 + rng.standard_normal((n, c)).cumsum(0)
    x[rng.random((n, c)) < nan] = np.nan
    return x


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 3), st.integers(1, 7))
def test_window_stats_match_the_window(seed, w, c, chunk):
    x = _series(seed, 3 * w + 5, c)
    ws = K.WindowStats.empty(c, w)
    for i in range(0, len(x), chunk):  # pushed in chunks: the result cannot depend on them
        ws.push(x[i:i + chunk])
        end = min(i + chunk, len(x))
        win = x[max(0, end - w):end].T
        np.testing.assert_array_equal(ws.values(), win)
        got, ref = ws.stats(), K.window_stats_ref(win)
        np.testing.assert_array_equal(got["count"], ref["count"])
        for k in ("min", "max"):  # copies: exact
            np.testing.assert_array_equal(got[k], ref[k])
        for k in ("mean", "var"):  # Welford add/remove vs two passes
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-9, atol=1e-9)


def test_window_stats_agree_with_instance_stats_and_survive_a_long_run():
    x = _series(1, 20_000, 2, nan=0.0) * 1e3
    ws = K.WindowStats.empty(2, 336)
    ws.push(x)
    mean, std = instance_stats(x[-336:].T, eps=0.0)
    s = ws.stats()
    np.testing.assert_allclose(s["mean"], mean[:, 0], rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(s["var"]), std[:, 0], rtol=1e-9)
    again = K.WindowStats.from_arrays({k: v.copy() for k, v in ws.arrays().items()})
    again.push(x[:5]), ws.push(x[:5])
    for k in K.WindowStats.FIELDS:
        np.testing.assert_array_equal(getattr(again, k), getattr(ws, k))


def test_window_stats_errors():
    ws = K.WindowStats.empty(2, 4)
    with pytest.raises(ShapeError, match=r"\[k, 2\]"):
        ws.push(np.ones(3))
    with pytest.raises(InputError, match="inf"):
        ws.push([1.0, np.inf])
    with pytest.raises(InputError, match="lacks"):
        K.WindowStats.from_arrays({"buf": ws.buf})
    s = K.WindowStats.empty(1, 3)
    s.push([[np.nan]])
    assert s.stats()["count"][0] == 0 and np.isnan(s.stats()["mean"][0])


@pytest.mark.parametrize("p, s", [(8, 8), (16, 8), (16, 16), (5, 3), (4, 1)])
def test_patch_ring_twins_and_batch_patchify(p, s):
    x = _series(2, 200, 3, nan=0.0)
    L = 64 if (64 - p) % s == 0 else 63
    n = (L - p) // s + 2
    a = np.full((3, n + 2, p), np.nan)
    b = a.copy()
    for i in range(0, 200, 7):
        K.patch_push(a, x[i:i + 7], i, s)
        K.patch_push_ref(b, x[i:i + 7], i, s)
    np.testing.assert_array_equal(a, b)
    for end in range(L, 201):
        start = end - L
        if start % s:
            continue
        # the ring still holds the window's patches only while they are the last K
        if (end - p) // s - start // s + 1 > a.shape[1]:
            continue
        c = np.full_like(a, np.nan)
        K.patch_push(c, x[:end], 0, s)
        got = K.window_patches(c, x[start:end].T, start, s)
        np.testing.assert_array_equal(got, patchify(x[start:end].T, p, s))


def test_window_patches_refuses_off_grid():
    with pytest.raises(InputError, match="grid"):
        K.window_patches(np.zeros((1, 8, 4)), np.zeros((1, 16)), 3, 4)


TABLES = [TEXT_TABLE, CodecTable(digit_ids=tuple(range(10)), value_sep=(11,), minus_id=12)]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.sampled_from([0, 1]), st.integers(0, 4))
def test_encode_fixed_equals_batch_encoding(seed, k, t, p):
    rng = np.random.default_rng(seed)
    x = rng.normal(5, 20, size=k)
    off, sc, lim = -10.0, 7.5, 99.0
    ids, lens = K.encode_fixed(x, off, sc, lim, TABLES[t], p)
    ids_r, lens_r = K.encode_fixed_ref(x, off, sc, lim, TABLES[t], p)
    np.testing.assert_array_equal(ids, ids_r)
    np.testing.assert_array_equal(lens, lens_r)
    z = np.clip(llmtime_scale(x, off, sc), -lim, lim)
    b, n = encode_digits(z[None], TABLES[t], p)
    np.testing.assert_array_equal(ids, b[0, :n[0]])
    assert lens.sum() == ids.size


def test_encode_fixed_refuses_nan_and_bad_scaler():
    with pytest.raises(InputError, match="NaN"):
        K.encode_fixed([np.nan], 0.0, 1.0, 10.0, TEXT_TABLE)
    with pytest.raises(InputError, match="scale > 0"):
        K.encode_fixed([1.0], 0.0, 0.0, 10.0, TEXT_TABLE)


def test_page_hinkley_twins_and_a_mean_shift():
    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal((600, 3)))
    x[300:, 1] += 3.0  # channel 1 shifts up at t=300
    x[rng.random(x.shape) < 0.05] = np.nan
    s1, s2 = np.zeros((3, 4)), np.zeros((3, 4))
    a1 = K.page_hinkley(x, s1, delta=0.05, threshold=20.0)
    a2 = K.page_hinkley_ref(x, s2, delta=0.05, threshold=20.0)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_allclose(s1, s2, rtol=1e-12)
    first = np.flatnonzero(a1[:, 1])
    assert first.size and 300 <= first[0] < 330
    assert not a1[:300].any()
    with pytest.raises(InputError, match="threshold"):
        K.page_hinkley(x, s1, threshold=0)
