"""Chronos' bin codec: mean scaling then uniform bins.

Per series (time last): ``scale`` = mean ``|x|`` over the observed (non-NaN) points (0, or no observed point,
-> 1); ``centres = linspace(low, high, n_bins)`` (Chronos: 4093 bins on [-15, 15]); ``boundaries`` are the
midpoints of neighbouring centres; ``id`` = the bucket of ``x / scale``: the number of boundaries ``<= x / scale``
(NumPy ``searchsorted(..., side="right")``, torch ``bucketize(right=True)``), in ``[0, n_bins)``.
``bins_decode(ids, scale) = centres[ids] * scale``.

NaN policy: NaN encodes to id -1 and id -1 decodes to NaN (Chronos maps missing values to its pad token).
Ids are int64; scales are float64 ``[..., 1]``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from alignts.errors import InputError, ShapeError
from alignts.kernels.numba_cache import CACHE

__all__ = ["bin_centres", "bin_boundaries", "bins_encode", "bins_decode", "bins_encode_ref",
           "bins_decode_ref"]


def _check_grid(n_bins: int, low: float, high: float) -> None:
    if int(n_bins) != n_bins or n_bins < 2 or not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise InputError(f"bins need an integer n_bins >= 2 and finite low < high; got n_bins={n_bins}, "
                         f"low={low}, high={high}. Fix: use Chronos' 4093, -15, 15")


def bin_centres(n_bins: int = 4093, low: float = -15.0, high: float = 15.0) -> np.ndarray:
    """float64 [n_bins]: ``linspace(low, high, n_bins)``."""
    _check_grid(n_bins, low, high)
    return np.linspace(low, high, int(n_bins))


def bin_boundaries(n_bins: int = 4093, low: float = -15.0, high: float = 15.0) -> np.ndarray:
    """float64 [n_bins - 1]: midpoints of neighbouring centres."""
    c = bin_centres(n_bins, low, high)
    return (c[1:] + c[:-1]) / 2.0


def _as_series(x, name: str = "x") -> np.ndarray:
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"{name} must be numeric; got dtype {a.dtype}. Fix: pass a float array")
    a = a.astype(np.float64, copy=False)
    if a.ndim < 1 or a.shape[-1] < 1:
        raise ShapeError(f"{name} must be [..., L] with L >= 1; got shape {a.shape}. Fix: pass at least [L]")
    inf = np.isinf(a)
    if inf.any():
        where = tuple(int(i) for i in np.argwhere(inf)[0])
        raise InputError(f"{name} contains inf at {where}; expected finite values or NaN. Fix: clean the input")
    return a


# ---------------------------------------------------------------------------------------------- numba

@njit(cache=CACHE)
def _encode_kernel(x, boundaries, low, width, ids, scale):  # x [S, L] -> ids [S, L], scale [S]
    s_n, l_n = x.shape
    n_b = boundaries.shape[0]
    for s in range(s_n):
        acc = 0.0
        n = 0
        for t in range(l_n):
            v = x[s, t]
            if v == v:
                acc += abs(v)
                n += 1
        sc = acc / n if n > 0 else 0.0
        if not sc > 0.0:
            sc = 1.0
        scale[s] = sc
        for t in range(l_n):
            v = x[s, t]
            if v != v:
                ids[s, t] = -1
                continue
            z = v / sc
            # the nearest centre is the bucket up to rounding; then fix up against the exact boundaries
            f = (z - low) / width + 0.5
            if f < 0.0:
                i = 0
            elif f > n_b:
                i = n_b
            else:
                i = int(f)
            while i < n_b and z >= boundaries[i]:
                i += 1
            while i > 0 and z < boundaries[i - 1]:
                i -= 1
            ids[s, t] = i


@njit(cache=CACHE)
def _decode_kernel(ids, scale, centres, out):  # ids [S, L], scale [S] -> out [S, L]
    s_n, l_n = ids.shape
    for s in range(s_n):
        sc = scale[s]
        for t in range(l_n):
            i = ids[s, t]
            out[s, t] = np.nan if i < 0 else centres[i] * sc


def bins_encode(x, n_bins: int = 4093, low: float = -15.0,
                high: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
    """Encode x [..., L] -> (ids [..., L] int64 in [0, n_bins) or -1 for NaN, scale [..., 1] float64)."""
    b = bin_boundaries(n_bins, low, high)
    a = _as_series(x)
    lead, length = a.shape[:-1], a.shape[-1]
    flat = np.ascontiguousarray(a.reshape(-1, length))
    ids = np.empty(flat.shape, dtype=np.int64)
    scale = np.empty(flat.shape[0])
    width = (float(high) - float(low)) / (int(n_bins) - 1)
    _encode_kernel(flat, b, float(low), width, ids, scale)
    return ids.reshape(a.shape), scale.reshape(lead + (1,))


def _check_ids(ids, scale, n_bins) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(ids)
    if a.ndim < 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise ShapeError(f"ids must be an integer array [..., L]; got dtype {a.dtype}, shape {a.shape}. "
                         "Fix: pass the ids from bins_encode")
    a = a.astype(np.int64, copy=False)
    if a.size and (a.min() < -1 or a.max() >= n_bins):
        raise InputError(f"ids must lie in [0, {n_bins}) or be -1 (missing); got min {a.min()}, max {a.max()}. "
                         "Fix: decode with the n_bins used to encode")
    lead = a.shape[:-1]
    s = np.asarray(scale, dtype=np.float64)
    if s.shape not in (lead + (1,), lead):
        raise ShapeError(f"scale must have shape {lead + (1,)} to match ids {a.shape}; got {s.shape}. "
                         "Fix: pass the scale returned by bins_encode")
    return a, s.reshape(lead + (1,))


def bins_decode(ids, scale, n_bins: int = 4093, low: float = -15.0, high: float = 15.0) -> np.ndarray:
    """Decode ids [..., L] with scale [..., 1] -> float64 [..., L] (``centres[id] * scale``, NaN for -1)."""
    c = bin_centres(n_bins, low, high)
    a, s = _check_ids(ids, scale, int(n_bins))
    length = a.shape[-1]
    out = np.empty(a.shape)
    _decode_kernel(np.ascontiguousarray(a.reshape(-1, length)), np.ascontiguousarray(s.reshape(-1)), c,
                   out.reshape(-1, length))
    return out


# ---------------------------------------------------------------------------------------------- numpy

def bins_encode_ref(x, n_bins: int = 4093, low: float = -15.0,
                    high: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`bins_encode` (np.searchsorted)."""
    b = bin_boundaries(n_bins, low, high)
    a = _as_series(x)
    observed = ~np.isnan(a)
    n = observed.sum(axis=-1, keepdims=True)
    # cumsum adds left to right like the numba loop (sum() adds pairwise), so the scales match to the bit
    total = np.cumsum(np.where(observed, np.abs(a), 0.0), axis=-1)[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = total / n
    scale = np.where(scale > 0, scale, 1.0)
    ids = np.searchsorted(b, a / scale, side="right").astype(np.int64)
    ids[~observed] = -1
    return ids, scale


def bins_decode_ref(ids, scale, n_bins: int = 4093, low: float = -15.0, high: float = 15.0) -> np.ndarray:
    """NumPy twin of :func:`bins_decode`."""
    c = bin_centres(n_bins, low, high)
    a, s = _check_ids(ids, scale, int(n_bins))
    out = c[np.maximum(a, 0)] * s
    out[a < 0] = np.nan
    return out
