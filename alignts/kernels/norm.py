"""Instance normalization (RevIN without affine, as Time-LLM and GPT4TS use it).

Per series (time last): ``mean`` and population ``var`` over the observed (non-NaN) points,
``std = sqrt(var + eps)``; ``y = (x - mean) / std`` and back ``x = y * std + mean``.

NaN policy: ``instance_stats`` ignores NaN points; a series with no observed point raises InputError naming
its index. ``instance_norm``/``instance_denorm`` are plain arithmetic: NaN stays NaN.

Stats come back with the time axis kept (shape ``[..., 1]``) so they broadcast against ``[..., L]`` and
``[..., H]``; they are float64 whatever the input dtype. Normalized outputs keep the input float dtype
(float32 or float64; anything else becomes float64); sums are accumulated in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from alignts.errors import InputError, ShapeError
from alignts.kernels.numba_cache import CACHE

__all__ = ["instance_stats", "instance_norm", "instance_denorm", "instance_stats_ref",
           "instance_norm_ref", "instance_denorm_ref"]


def _as_series(x, name: str = "x", min_len: int = 1) -> np.ndarray:
    """``x`` as a float array of rank >= 1 with no inf (NaN allowed here)."""
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise InputError(f"{name} must be numeric; got dtype {a.dtype}. Fix: pass a float array")
        a = a.astype(np.float64)
    if a.ndim < 1:
        raise ShapeError(f"{name} must have a time axis ([..., L]); got a scalar. Fix: pass at least [L]")
    if a.shape[-1] < min_len:
        raise ShapeError(f"{name} needs at least {min_len} time steps; got shape {a.shape}. "
                         "Fix: pass a longer series")
    inf = np.isinf(a)
    if inf.any():
        where = tuple(int(i) for i in np.argwhere(inf)[0])
        raise InputError(f"{name} contains inf at {where}; expected finite values or NaN. Fix: clean the input")
    return a


def _check_observed(count: np.ndarray, shape: tuple) -> None:
    """Raise naming the first series (flat index and leading index) with no observed point."""
    empty = np.flatnonzero(count == 0)
    if empty.size:
        s = int(empty[0])
        lead = np.unravel_index(s, shape[:-1]) if len(shape) > 1 else ()
        raise InputError(f"series {s} (index {tuple(int(i) for i in lead)}) is all NaN; expected at least one "
                         "observed value per series. Fix: drop or fill that series")


# ---------------------------------------------------------------------------------------------- numba

@njit(cache=CACHE)
def _stats_kernel(x, eps):  # x [S, L] -> mean [S], std [S], count [S]
    s_n, l_n = x.shape
    mean = np.empty(s_n)
    std = np.empty(s_n)
    count = np.zeros(s_n, dtype=np.int64)
    for s in range(s_n):
        acc = 0.0
        n = 0
        for t in range(l_n):
            v = x[s, t]
            if v == v:
                acc += v
                n += 1
        count[s] = n
        if n == 0:
            mean[s] = np.nan
            std[s] = np.nan
            continue
        m = acc / n
        ss = 0.0
        for t in range(l_n):
            v = x[s, t]
            if v == v:
                d = v - m
                ss += d * d
        mean[s] = m
        std[s] = np.sqrt(ss / n + eps)
    return mean, std, count


@njit(cache=CACHE)
def _affine_kernel(x, mean, std, out, inverse):  # x [S, L], mean/std [S], out [S, L]
    s_n, l_n = x.shape
    for s in range(s_n):
        m = mean[s]
        sd = std[s]
        if inverse:
            for t in range(l_n):
                out[s, t] = x[s, t] * sd + m
        else:
            for t in range(l_n):
                out[s, t] = (x[s, t] - m) / sd


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.reshape(-1, a.shape[-1]))


def _stat_as_flat(stat, lead: tuple, name: str) -> np.ndarray:
    """mean/std given as [..., 1] or [...] for a series of leading shape ``lead`` -> float64 [S]."""
    a = np.asarray(stat, dtype=np.float64)
    if a.shape == lead + (1,) or a.shape == lead:
        return np.ascontiguousarray(a.reshape(-1))
    try:
        return np.ascontiguousarray(np.broadcast_to(a, lead + (1,)).reshape(-1))
    except ValueError:
        raise ShapeError(f"{name} must have shape {lead + (1,)} (or {lead}) to match the series; got {a.shape}. "
                         "Fix: pass the stats returned by instance_stats for the same array") from None


def instance_stats(x, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per-series mean and std over the last axis, ignoring NaN.

    x: [..., L] float. Returns (mean [..., 1], std [..., 1]) float64 with ``std = sqrt(var + eps)``.
    Raises InputError for inf or an all-NaN series.
    """
    a = _as_series(x)
    mean, std, count = _stats_kernel(_flat(a), float(eps))
    _check_observed(count, a.shape)
    lead = a.shape[:-1]
    return mean.reshape(lead + (1,)), std.reshape(lead + (1,))


def instance_norm(x, mean, std) -> np.ndarray:
    """``(x - mean) / std`` per series. x [..., L]; mean/std [..., 1] or [...]. Returns [..., L] in x's dtype."""
    a = _as_series(x)
    lead = a.shape[:-1]
    out = np.empty(a.shape, dtype=a.dtype)
    _affine_kernel(_flat(a), _stat_as_flat(mean, lead, "mean"), _stat_as_flat(std, lead, "std"),
                   out.reshape(-1, a.shape[-1]), False)
    return out


def instance_denorm(y, mean, std) -> np.ndarray:
    """``y * std + mean`` per series. y [..., H]; mean/std [..., 1] or [...]. Returns [..., H] in y's dtype."""
    a = _as_series(y, "y")
    lead = a.shape[:-1]
    out = np.empty(a.shape, dtype=a.dtype)
    _affine_kernel(_flat(a), _stat_as_flat(mean, lead, "mean"), _stat_as_flat(std, lead, "std"),
                   out.reshape(-1, a.shape[-1]), True)
    return out


# ---------------------------------------------------------------------------------------------- numpy

def instance_stats_ref(x, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`instance_stats`."""
    a = _as_series(x)
    count = np.sum(~np.isnan(a), axis=-1)
    _check_observed(count.reshape(-1), a.shape)
    a64 = a.astype(np.float64, copy=False)
    mean = np.nanmean(a64, axis=-1, keepdims=True)
    var = np.nanmean((a64 - mean) ** 2, axis=-1, keepdims=True)
    return mean, np.sqrt(var + eps)


def instance_norm_ref(x, mean, std) -> np.ndarray:
    """NumPy twin of :func:`instance_norm`."""
    a = _as_series(x)
    lead = a.shape[:-1]
    m = _stat_as_flat(mean, lead, "mean").reshape(lead + (1,))
    s = _stat_as_flat(std, lead, "std").reshape(lead + (1,))
    return ((a - m) / s).astype(a.dtype, copy=False)


def instance_denorm_ref(y, mean, std) -> np.ndarray:
    """NumPy twin of :func:`instance_denorm`."""
    a = _as_series(y, "y")
    lead = a.shape[:-1]
    m = _stat_as_flat(mean, lead, "mean").reshape(lead + (1,))
    s = _stat_as_flat(std, lead, "std").reshape(lead + (1,))
    return (a * s + m).astype(a.dtype, copy=False)
