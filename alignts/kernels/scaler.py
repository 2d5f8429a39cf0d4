"""The LLMTime scaler: ``z = (x - offset) / scale`` before numbers become digits.

Per series (time last), over the observed (non-NaN) points:
- default mode: ``offset = min - beta * (max - min)``, ``scale`` = alpha-quantile of ``x - offset``
  (a scale of exactly 0 becomes 1; one below ``SPAN_FLOOR * (max - offset)`` becomes that floor, so that a
  near-zero alpha or beta cannot scale values past float64's range);
- basic mode: ``offset = 0``, ``scale = max(alpha-quantile of |x|, 0.01)``.

Quantiles use NumPy's default method ("linear", Hyndman-Fan 7) and the numba kernel reproduces its arithmetic
(virtual index ``(n - 1) * alpha``, the two-sided lerp) so both agree to the last bit on the same values.
NaN policy: NaN points are ignored by ``llmtime_scaler`` (an all-NaN series raises InputError naming it) and
pass through ``llmtime_scale``/``llmtime_unscale`` as NaN. Offsets and scales are float64 ``[..., 1]``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from alignts.errors import InputError, ShapeError
from alignts.kernels.numba_cache import CACHE

__all__ = ["llmtime_scaler", "llmtime_scale", "llmtime_unscale", "llmtime_scaler_ref"]

SPAN_FLOOR = 1e-12  # smallest scale relative to max(x - offset): scaled values stay below 1e12


def _as_series(x, name: str = "x") -> np.ndarray:
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise InputError(f"{name} must be numeric; got dtype {a.dtype}. Fix: pass a float array")
        a = a.astype(np.float64)
    if a.ndim < 1 or a.shape[-1] < 1:
        raise ShapeError(f"{name} must be [..., L] with L >= 1; got shape {a.shape}. Fix: pass at least [L]")
    inf = np.isinf(a)
    if inf.any():
        where = tuple(int(i) for i in np.argwhere(inf)[0])
        raise InputError(f"{name} contains inf at {where}; expected finite values or NaN. Fix: clean the input")
    return a


def _check_args(alpha: float, beta: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1]; got {alpha}. Fix: use a quantile level such as 0.95")
    if not np.isfinite(beta):
        raise InputError(f"beta must be finite; got {beta}. Fix: use e.g. 0.3")


def _check_observed(count: np.ndarray, shape: tuple) -> None:
    empty = np.flatnonzero(count == 0)
    if empty.size:
        s = int(empty[0])
        lead = np.unravel_index(s, shape[:-1]) if len(shape) > 1 else ()
        raise InputError(f"series {s} (index {tuple(int(i) for i in lead)}) is all NaN; expected at least one "
                         "observed value per series. Fix: drop or fill that series")


# ---------------------------------------------------------------------------------------------- numba

@njit(cache=CACHE)
def _quantile_sorted(v, n, alpha):
    """NumPy 'linear' quantile of the sorted first ``n`` entries of ``v``, same float operations."""
    vi = (n - 1) * alpha
    if vi >= n - 1:
        return v[n - 1]
    lo = int(np.floor(vi))
    gamma = vi - lo
    a = v[lo]
    b = v[lo + 1]
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1.0 - gamma)
    return a + diff * gamma


@njit(cache=CACHE)
def _scaler_kernel(x, alpha, beta, basic, offset, scale, count):  # x [S, L] -> offset, scale, count [S]
    s_n, l_n = x.shape
    buf = np.empty(l_n)
    for s in range(s_n):
        n = 0
        mn = np.inf
        mx = -np.inf
        for t in range(l_n):
            v = x[s, t]
            if v == v:
                fv = float(v)
                buf[n] = fv
                n += 1
                if fv < mn:
                    mn = fv
                if fv > mx:
                    mx = fv
        count[s] = n
        if n == 0:
            offset[s] = np.nan
            scale[s] = np.nan
            continue
        if basic:
            for i in range(n):
                buf[i] = abs(buf[i])
            sv = np.sort(buf[:n])
            q = _quantile_sorted(sv, n, alpha)
            offset[s] = 0.0
            scale[s] = max(q, 0.01)
        else:
            m = mn - beta * (mx - mn)
            for i in range(n):
                buf[i] = buf[i] - m
            sv = np.sort(buf[:n])
            q = _quantile_sorted(sv, n, alpha)
            offset[s] = m
            floor = (mx - m) * SPAN_FLOOR
            if q == 0.0:
                scale[s] = 1.0
            elif q < floor:
                scale[s] = floor
            else:
                scale[s] = q


def llmtime_scaler(x, alpha: float = 0.95, beta: float = 0.3,
                   basic: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Fit LLMTime's scaler on ``x [..., L]``; returns (offset [..., 1], scale [..., 1]) float64."""
    _check_args(alpha, beta)
    a = _as_series(x)
    lead, length = a.shape[:-1], a.shape[-1]
    flat = np.ascontiguousarray(a.reshape(-1, length))
    s_n = flat.shape[0]
    offset = np.empty(s_n)
    scale = np.empty(s_n)
    count = np.empty(s_n, dtype=np.int64)
    _scaler_kernel(flat, float(alpha), float(beta), bool(basic), offset, scale, count)
    _check_observed(count, a.shape)
    return offset.reshape(lead + (1,)), scale.reshape(lead + (1,))


def llmtime_scale(x, offset, scale) -> np.ndarray:
    """``(x - offset) / scale`` (elementwise; NumPy is already optimal here). Returns float64."""
    a = _as_series(x)
    return (a.astype(np.float64, copy=False) - np.asarray(offset, np.float64)) / np.asarray(scale, np.float64)


def llmtime_unscale(z, offset, scale) -> np.ndarray:
    """``z * scale + offset``, the inverse of :func:`llmtime_scale`. Returns float64."""
    a = _as_series(z, "z")
    return a.astype(np.float64, copy=False) * np.asarray(scale, np.float64) + np.asarray(offset, np.float64)


# ---------------------------------------------------------------------------------------------- numpy

def llmtime_scaler_ref(x, alpha: float = 0.95, beta: float = 0.3,
                       basic: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`llmtime_scaler` (np.nanquantile, linear method)."""
    _check_args(alpha, beta)
    a = _as_series(x)
    count = np.sum(~np.isnan(a), axis=-1)
    _check_observed(count.reshape(-1), a.shape)
    a64 = a.astype(np.float64, copy=False)
    if basic:
        q = np.nanquantile(np.abs(a64), alpha, axis=-1, keepdims=True)
        return np.zeros_like(q), np.maximum(q, 0.01)
    mn = np.nanmin(a64, axis=-1, keepdims=True)
    mx = np.nanmax(a64, axis=-1, keepdims=True)
    m = mn - beta * (mx - mn)
    q = np.nanquantile(a64 - m, alpha, axis=-1, keepdims=True)
    floor = (mx - m) * SPAN_FLOOR
    return m, np.where(q == 0.0, 1.0, np.where(q < floor, floor, q))
