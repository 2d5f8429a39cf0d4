"""Input statistics for Time-LLM's prompt-as-prefix: min, max, median, trend and the top-k lags.

Per series ``x [S, L]`` (any leading shape, time last):
- ``min``, ``max``, ``median`` (NumPy's median: the mean of the two middle values for even L; torch.median,
  which Time-LLM calls, returns the lower one);
- ``trend`` = sum of first differences (Time-LLM's ``x.diff().sum()``);
- ``lags [.., k]`` = the k lags with the largest autocorrelation, computed by FFT as
  ``irfft(|rfft(x - mean)|**2, n=L)``. Choices (documented because they differ from Time-LLM): lag 0 is
  excluded (it is always the maximum and says nothing), only lags ``1..L//2`` are ranked (the circular
  autocorrelation is symmetric, lag ``L - j`` repeats lag ``j``), and the series mean is removed first
  (Time-LLM runs this on RevIN-normalized input, whose mean is already 0, so the lags agree there).
  Ties go to the smaller lag. L must be at least ``2 * top_k``.
numba has no FFT: both paths compute the autocorrelation with ``numpy.fft``; the numba kernel does the
rest (min/max/median/trend and the top-k selection).

NaN policy: NaN points are replaced by the series' observed mean before anything is computed (the same
point ``norm_patchify`` gives them); an all-NaN series raises InputError naming its index.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from alignts.errors import InputError, ShapeError
from alignts.kernels.numba_cache import CACHE

__all__ = ["prompt_stats", "prompt_stats_ref", "STAT_NAMES"]

STAT_NAMES = ("min", "max", "median", "trend", "lags")


def _prepare(x, top_k: int) -> tuple[np.ndarray, tuple]:
    """Validate and return (x as float64 [S, L] with NaN filled by the observed mean, leading shape)."""
    if int(top_k) != top_k or top_k < 1:
        raise InputError(f"top_k must be an integer >= 1; got {top_k!r}. Fix: use Time-LLM's 5")
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"x must be numeric; got dtype {a.dtype}. Fix: pass a float array")
    a = a.astype(np.float64)  # a copy: NaN are filled in place below
    if a.ndim < 1 or a.shape[-1] < 2 * top_k:
        raise ShapeError(f"x must be [..., L] with L >= 2 * top_k = {2 * top_k}; got shape {a.shape}. "
                         "Fix: pass a longer series or a smaller top_k")
    inf = np.isinf(a)
    if inf.any():
        where = tuple(int(i) for i in np.argwhere(inf)[0])
        raise InputError(f"x contains inf at {where}; expected finite values or NaN. Fix: clean the input")
    lead = a.shape[:-1]
    a = a.reshape(-1, a.shape[-1])
    nan = np.isnan(a)
    if nan.any():
        count = (~nan).sum(axis=1)
        empty = np.flatnonzero(count == 0)
        if empty.size:
            s = int(empty[0])
            idx = np.unravel_index(s, lead) if lead else ()
            raise InputError(f"series {s} (index {tuple(int(i) for i in idx)}) is all NaN; expected at least "
                             "one observed value per series. Fix: drop or fill that series")
        mean = np.nanmean(a, axis=1, keepdims=True)
        a = np.where(nan, mean, a)
    return np.ascontiguousarray(a), lead


def _autocorr(a: np.ndarray) -> np.ndarray:
    """Circular autocorrelation of demeaned rows by FFT: [S, L] -> [S, L]."""
    d = a - a.mean(axis=1, keepdims=True)
    f = np.fft.rfft(d, axis=1)
    return np.fft.irfft(f.real ** 2 + f.imag ** 2, n=a.shape[1], axis=1)


def _pack(lead, mn, mx, med, trend, lags, k) -> dict:
    return {"min": mn.reshape(lead), "max": mx.reshape(lead), "median": med.reshape(lead),
            "trend": trend.reshape(lead), "lags": lags.reshape(lead + (k,))}


# ---------------------------------------------------------------------------------------------- numba

@njit(cache=CACHE)
def _stats_kernel(a, corr, k, mn, mx, med, trend, lags):
    # a [S, L], corr [S, L] -> mn, mx, med, trend [S], lags [S, k]
    s_n, l_n = a.shape
    half = l_n // 2
    for s in range(s_n):
        row = a[s]
        lo = row[0]
        hi = row[0]
        tr = 0.0
        for t in range(1, l_n):
            v = row[t]
            if v < lo:
                lo = v
            if v > hi:
                hi = v
            tr += v - row[t - 1]
        mn[s] = lo
        mx[s] = hi
        trend[s] = tr
        med[s] = np.median(row)
        # top-k of corr[1..half] by insertion into a sorted list: k is tiny
        c = corr[s]
        n_top = 0
        for j in range(1, half + 1):
            v = c[j]
            if n_top == k and not v > c[lags[s, k - 1]]:
                continue
            pos = n_top if n_top < k else k - 1
            while pos > 0 and v > c[lags[s, pos - 1]]:
                if pos < k:
                    lags[s, pos] = lags[s, pos - 1]
                pos -= 1
            lags[s, pos] = j
            if n_top < k:
                n_top += 1


def prompt_stats(x, top_k: int = 5) -> dict[str, np.ndarray]:
    """Prompt statistics of x [..., L]: dict of min, max, median, trend [...] float64 and lags [..., k] int64."""
    a, lead = _prepare(x, top_k)
    k = int(top_k)
    corr = _autocorr(a)
    s_n = a.shape[0]
    mn, mx, med, trend = (np.empty(s_n) for _ in range(4))
    lags = np.empty((s_n, k), dtype=np.int64)
    _stats_kernel(a, corr, k, mn, mx, med, trend, lags)
    return _pack(lead, mn, mx, med, trend, lags, k)


# ---------------------------------------------------------------------------------------------- numpy

def prompt_stats_ref(x, top_k: int = 5) -> dict[str, np.ndarray]:
    """NumPy twin of :func:`prompt_stats`."""
    a, lead = _prepare(x, top_k)
    k = int(top_k)
    corr = _autocorr(a)
    half = a.shape[1] // 2
    order = np.argsort(-corr[:, 1:half + 1], axis=1, kind="stable")[:, :k]
    return _pack(lead, a.min(axis=1), a.max(axis=1), np.median(a, axis=1), np.diff(a, axis=1).sum(axis=1),
                 (order + 1).astype(np.int64), k)
