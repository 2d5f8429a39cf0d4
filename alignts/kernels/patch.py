"""Patching with replication padding (Time-LLM / GPT4TS / PatchTST) and the fused normalize+patch kernel.

The series ``[..., L]`` is padded at the end with ``stride`` copies of its last value, then cut into windows of
``patch_len`` every ``stride`` steps: ``N = (L - P) // stride + 2`` patches, output ``[..., N, P]``.
Patch ``n`` position ``p`` reads ``x[min(n * stride + p, L - 1)]``, which is exactly that padding.

``norm_patchify`` is what the runtime calls: instance stats (NaN ignored, ``std = sqrt(var + eps)``), then
``(x - mean) / std`` written straight into the patch layout in one pass.

NaN policy: ``patchify`` copies NaN as is. ``norm_patchify`` ignores NaN for the stats and, with
``fill_nan=True`` (default), writes 0 for NaN points (the series mean in normalized units) so the model sees
a finite input; ``fill_nan=False`` keeps NaN. An all-NaN series raises InputError naming its index.
Outputs keep the input float dtype (float32 or float64; anything else becomes float64); stats are float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from alignts.errors import InputError, ShapeError
from alignts.kernels.numba_cache import CACHE

__all__ = ["n_patches", "patchify", "norm_patchify", "context_from_patches", "patchify_ref", "norm_patchify_ref"]


def n_patches(length: int, patch_len: int = 16, stride: int = 8) -> int:
    """Number of patches for a series of ``length``: ``(L - P) // stride + 2``."""
    return (length - patch_len) // stride + 2


def _as_series(x, patch_len: int, stride: int, name: str = "x") -> np.ndarray:
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise InputError(f"{name} must be numeric; got dtype {a.dtype}. Fix: pass a float array")
        a = a.astype(np.float64)
    if int(patch_len) < 1 or int(stride) < 1:
        raise InputError(f"patch_len and stride must be >= 1; got patch_len={patch_len}, stride={stride}. "
                         "Fix: use positive values (Time-LLM: 16 and 8)")
    if a.ndim < 1:
        raise ShapeError(f"{name} must have a time axis ([..., L]); got a scalar. Fix: pass at least [L]")
    if a.shape[-1] < patch_len:
        raise ShapeError(f"{name} is too short for patch_len={patch_len}: need L >= {patch_len}, got shape "
                         f"{a.shape}. Fix: pass at least {patch_len} time steps or use a smaller patch_len")
    inf = np.isinf(a)
    if inf.any():
        where = tuple(int(i) for i in np.argwhere(inf)[0])
        raise InputError(f"{name} contains inf at {where}; expected finite values or NaN. Fix: clean the input")
    return a


def _check_observed(count: np.ndarray, shape: tuple) -> None:
    empty = np.flatnonzero(count == 0)
    if empty.size:
        s = int(empty[0])
        lead = np.unravel_index(s, shape[:-1]) if len(shape) > 1 else ()
        raise InputError(f"series {s} (index {tuple(int(i) for i in lead)}) is all NaN; expected at least one "
                         "observed value per series. Fix: drop or fill that series")


# ---------------------------------------------------------------------------------------------- numba

@njit(cache=CACHE)
def _patch_kernel(x, patch_len, stride, out):  # x [S, L] -> out [S, N, P]
    s_n, l_n = x.shape
    n_n = out.shape[1]
    last = l_n - 1
    for s in range(s_n):
        for n in range(n_n):
            start = n * stride
            for p in range(patch_len):
                i = start + p
                if i > last:
                    i = last
                out[s, n, p] = x[s, i]


@njit(cache=CACHE)
def _norm_patch_kernel(x, patch_len, stride, eps, fill_nan, out, mean, std, count):
    # x [S, L] -> out [S, N, P]; mean, std [S] float64; count [S] observed points
    s_n, l_n = x.shape
    n_n = out.shape[1]
    last = l_n - 1
    buf = np.empty(l_n)  # one normalized series, float64, reused
    for s in range(s_n):
        acc = 0.0
        n_obs = 0
        for t in range(l_n):
            v = x[s, t]
            if v == v:
                acc += v
                n_obs += 1
        count[s] = n_obs
        if n_obs == 0:
            mean[s] = np.nan
            std[s] = np.nan
            continue
        m = acc / n_obs
        ss = 0.0
        for t in range(l_n):
            v = x[s, t]
            if v == v:
                d = v - m
                ss += d * d
        sd = np.sqrt(ss / n_obs + eps)
        mean[s] = m
        std[s] = sd
        for t in range(l_n):
            v = (x[s, t] - m) / sd
            if fill_nan and v != v:
                v = 0.0
            buf[t] = v
        for n in range(n_n):
            start = n * stride
            if start + patch_len <= l_n:
                for p in range(patch_len):
                    out[s, n, p] = buf[start + p]
            else:
                for p in range(patch_len):
                    i = start + p
                    if i > last:
                        i = last
                    out[s, n, p] = buf[i]


def patchify(x, patch_len: int = 16, stride: int = 8) -> np.ndarray:
    """Cut ``x [..., L]`` into ``[..., N, P]`` patches after a replication pad of ``stride`` at the end.

    Raises ShapeError when ``L < patch_len`` (the message gives the minimum length).
    """
    a = _as_series(x, patch_len, stride)
    lead, length = a.shape[:-1], a.shape[-1]
    n = n_patches(length, patch_len, stride)
    out = np.empty(lead + (n, patch_len), dtype=a.dtype)
    _patch_kernel(np.ascontiguousarray(a.reshape(-1, length)), int(patch_len), int(stride),
                  out.reshape(-1, n, patch_len))
    return out


def norm_patchify(x, patch_len: int = 16, stride: int = 8, eps: float = 1e-5,
                  fill_nan: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance-normalize ``x [..., L]`` and patch it in one pass.

    Returns (patches [..., N, P] in x's dtype, mean [..., 1] float64, std [..., 1] float64); the stats
    de-normalize the forecast with ``instance_denorm``.
    """
    a = _as_series(x, patch_len, stride)
    lead, length = a.shape[:-1], a.shape[-1]
    n = n_patches(length, patch_len, stride)
    flat = np.ascontiguousarray(a.reshape(-1, length))
    s_n = flat.shape[0]
    out = np.empty(lead + (n, patch_len), dtype=a.dtype)
    mean = np.empty(s_n)
    std = np.empty(s_n)
    count = np.empty(s_n, dtype=np.int64)
    _norm_patch_kernel(flat, int(patch_len), int(stride), float(eps), bool(fill_nan),
                       out.reshape(-1, n, patch_len), mean, std, count)
    _check_observed(count, a.shape)
    return out, mean.reshape(lead + (1,)), std.reshape(lead + (1,))


def context_from_patches(patches: np.ndarray, stride: int, context_len: int) -> np.ndarray:
    """The normalized context ``[S, L]`` back from replication-padded patches ``[S, N, P]`` (``stride <=
    patch_len``): patch n starts at ``n * stride``, so the first ``stride`` values of every patch but the last,
    then the whole last patch, cover the padded series; its first L values are the context. The linear skip
    (``--linear-skip``) reads its input this way; the torch twin is ``alignts.export.internal.context_from_patches``."""
    head = patches[:, :-1, :stride].reshape(patches.shape[0], -1)
    return np.concatenate([head, patches[:, -1, :]], axis=-1)[:, :context_len]


# ---------------------------------------------------------------------------------------------- numpy

def patchify_ref(x, patch_len: int = 16, stride: int = 8) -> np.ndarray:
    """NumPy twin of :func:`patchify` (pad, sliding window view, copy)."""
    a = _as_series(x, patch_len, stride)
    pad = np.repeat(a[..., -1:], stride, axis=-1)
    padded = np.concatenate([a, pad], axis=-1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, patch_len, axis=-1)[..., ::stride, :]
    return np.ascontiguousarray(windows)


def norm_patchify_ref(x, patch_len: int = 16, stride: int = 8, eps: float = 1e-5,
                      fill_nan: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy twin of :func:`norm_patchify`."""
    a = _as_series(x, patch_len, stride)
    observed = ~np.isnan(a)
    count = observed.sum(axis=-1)
    _check_observed(count.reshape(-1), a.shape)
    a64 = a.astype(np.float64, copy=False)
    mean = np.nanmean(a64, axis=-1, keepdims=True)
    std = np.sqrt(np.nanmean((a64 - mean) ** 2, axis=-1, keepdims=True) + eps)
    y = (a64 - mean) / std
    if fill_nan:
        y[~observed] = 0.0
    return patchify_ref(y.astype(a.dtype, copy=False), patch_len, stride), mean, std
