"""CUDA variant of the fused instance-normalize + patch kernel (``patch.norm_patchify``), with numba.cuda.

Contract: the same as :func:`alignts.kernels.patch.norm_patchify`, whose NumPy twin
``patch.norm_patchify_ref`` is this kernel's reference (tests and ``alignts bench kernels --device cuda``
compare against it; this file does not import it, kernel files stand alone). Per series ``x [..., L]``:
mean and population variance over the observed (non-NaN) points in float64, ``std = sqrt(var + eps)``;
``(x - mean) / std`` in float64 written in x's dtype into ``[..., N, P]`` patches,
``N = (L - P) // stride + 2``, patch ``n`` position ``p`` reads ``x[min(n * stride + p, L - 1)]`` (the
replication pad of ``stride``); NaN points become 0 with ``fill_nan=True``. Errors are the CPU path's: inf
raises InputError naming its first index, an all-NaN series raises InputError naming the series. Here both
are detected on the device (no host pass over the input), from two int32 flags per series copied back.

Layout: one block of ``THREADS`` threads per series. Pass 1 sums value and count (block tree reduction in
shared memory), pass 2 sums squared deviations, pass 3 writes the ``N * P`` outputs of the series with
consecutive threads on consecutive outputs (coalesced stores); the series row (2 KB at L=512 float32) is read
three times and stays in L1/L2. The sums are a tree, not the CPU's left-to-right loop, so mean/std differ
from the CPU kernel in the last bits (about 1e-16 relative) and a float32 output can differ by one ulp.

When it pays off (``alignts bench kernels --device cuda``, H100 with PCIe copies of pageable memory vs one
core of its Xeon host; table in docs/ARCHITECTURE.md): the kernel is memory-bound, 0.06-0.12 ms for 7 to 7168
series of L=336/512 (mostly launch + sync), 127-144x faster than the CPU kernel at 7168 series. With host
arrays in and out the copies dominate (the output is about twice the input: ``N * P ~ 2 L`` at stride P/2):
3.8-4.4x faster at 7168 series, slower at 448 (0.6-0.9x), and at one forecast of 7 series (batch 1, 7
channels) 25-30x slower than the CPU kernel (0.7 ms vs 0.02-0.03 ms): keep ``patch.norm_patchify`` there.
It pays off at batch scale (thousands of series), and most when the patches stay on the GPU for a model that
runs there (``to_host=False``).

numba.cuda is imported lazily: importing this module never fails on a machine without CUDA; ``available()``
says whether the CUDA path can run and why not.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import float64, int32

from alignts.errors import BackendUnavailableError, InputError, ShapeError

__all__ = ["available", "norm_patchify_cuda", "launch_norm_patch", "THREADS", "SIM_THREADS"]

cuda = None  # numba.cuda, bound by _kernel() on first use
THREADS = 128  # threads per block (one block per series); a power of two for the tree reductions
SIM_THREADS = 32  # under NUMBA_ENABLE_CUDASIM: each simulated thread is a Python thread


def available() -> tuple[bool, str]:
    """(True, what runs it) when numba.cuda can launch kernels here, else (False, why not and the fix)."""
    try:
        from numba import cuda
    except Exception as e:  # numba.cuda needs a driver binding; any failure here means "no CUDA"
        return False, (f"numba.cuda cannot be imported ({type(e).__name__}: {e}). Fix: pip install "
                       "numba-cuda on a machine with an NVIDIA driver")
    try:
        if not cuda.is_available():
            try:
                detail = " ".join(str(cuda.cuda_error()).split())
            except Exception as e:
                detail = f"{type(e).__name__}: {e}"
            return False, (f"numba.cuda finds no usable CUDA device ({detail}). Fix: run on a machine with an "
                           "NVIDIA GPU and driver, or set NUMBA_ENABLE_CUDASIM=1 for the (slow) simulator")
        from numba import config

        if config.ENABLE_CUDASIM:
            return True, "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1; slow, for tests only)"
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        impl = getattr(cuda, "implementation", "unknown")
        return True, f"{name} (compute capability {dev.compute_capability}, numba.cuda {impl})"
    except Exception as e:
        return False, f"CUDA initialization failed ({type(e).__name__}: {e}). Fix: check the driver (nvidia-smi)"


def _require_cuda():
    ok, why = available()
    if not ok:
        raise BackendUnavailableError(why)
    _kernel()
    return cuda


# ---------------------------------------------------------------------------------------------- cuda
# Kernels are plain functions here, compiled by cuda.jit on first use: ``cuda`` is a module global bound
# lazily (and the CUDA simulator swaps that global for its fake module while it runs a kernel).

def _norm_patch(x, patch_len, stride, eps, fill_nan, out, mean, std, count, first_inf):
    # x [S, L] -> out [S, N, P]; mean, std [S] float64; count [S] int32 observed points;
    # first_inf [S] int32 first t with x[s, t] = +-inf, L if none
    s = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    l_n = x.shape[1]
    n_n = out.shape[1]
    acc = cuda.shared.array(THREADS, float64)
    cnt = cuda.shared.array(THREADS, int32)
    bad = cuda.shared.array(1, int32)
    if tid == 0:
        bad[0] = l_n
    cuda.syncthreads()
    a = 0.0
    c = 0
    for t in range(tid, l_n, THREADS):
        v = float64(x[s, t])
        if v == v:
            if math.isinf(v):
                cuda.atomic.min(bad, 0, int32(t))
            else:
                a += v
                c += 1
    acc[tid] = a
    cnt[tid] = c
    cuda.syncthreads()
    half = THREADS // 2
    while half > 0:
        if tid < half:
            acc[tid] += acc[tid + half]
            cnt[tid] += cnt[tid + half]
        cuda.syncthreads()
        half //= 2
    n_obs = cnt[0]
    if n_obs == 0 or bad[0] < l_n:  # the host raises; outputs stay unwritten as on the CPU path
        if tid == 0:
            count[s] = n_obs
            first_inf[s] = bad[0]
            mean[s] = math.nan
            std[s] = math.nan
        return
    m = acc[0] / n_obs
    cuda.syncthreads()  # everyone has read acc[0] before it is reused
    ss = 0.0
    for t in range(tid, l_n, THREADS):
        v = float64(x[s, t])
        if v == v:
            d = v - m
            ss += d * d
    acc[tid] = ss
    cuda.syncthreads()
    half = THREADS // 2
    while half > 0:
        if tid < half:
            acc[tid] += acc[tid + half]
        cuda.syncthreads()
        half //= 2
    sd = math.sqrt(acc[0] / n_obs + eps)
    if tid == 0:
        count[s] = n_obs
        first_inf[s] = l_n
        mean[s] = m
        std[s] = sd
    last = l_n - 1
    for k in range(tid, n_n * patch_len, THREADS):
        n = k // patch_len
        p = k - n * patch_len
        i = n * stride + p
        if i > last:
            i = last
        v = (float64(x[s, i]) - m) / sd
        if fill_nan and v != v:
            v = 0.0
        out[s, n, p] = v


@functools.lru_cache(maxsize=None)
def _kernel():
    """Compile (lazily, once per process) and return the CUDA kernel."""
    global cuda, THREADS
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        THREADS = SIM_THREADS
    if getattr(cuda, "implementation", "") == "NVIDIA" and not hasattr(np, "row_stack"):
        # numba-cuda 0.30.x (in maintenance mode) overloads np.row_stack, which NumPy 2.5 removed, when it
        # compiles its first kernel, and fails (NVIDIA/numba-cuda#907, not to be fixed there). Restore the alias
        # (row_stack was np.vstack) so kernels compile; only where the name is missing.
        np.row_stack = np.vstack

    return cuda.jit(_norm_patch)


def launch_norm_patch(x, patch_len, stride, eps, fill_nan, out, mean, std, count, first_inf, stream=0):
    """Launch the kernel on device arrays, no checks, no sync (for benchmarks and callers that own buffers).

    x [S, L] float32/float64 C-contiguous; out [S, N, P] (x's dtype); mean, std [S] float64;
    count, first_inf [S] int32.
    """
    s_n = x.shape[0]
    if s_n == 0:
        return
    kernel = _kernel()  # binds THREADS (smaller under the simulator) before the launch reads it
    kernel[s_n, THREADS, stream](x, int(patch_len), int(stride), float(eps), bool(fill_nan), out, mean, std,
                                 count, first_inf)


def _on_device(cuda, x):
    """x as a numba device array if it lives on the GPU (numba, CuPy, torch, ...), else None."""
    if getattr(x, "__cuda_ndarray__", False):  # numba's device arrays (also the simulator's)
        return x
    if hasattr(x, "__cuda_array_interface__"):
        return cuda.as_cuda_array(x)
    return None


def _check_args(shape: tuple, patch_len, stride, name: str = "x") -> None:
    if int(patch_len) < 1 or int(stride) < 1:
        raise InputError(f"patch_len and stride must be >= 1; got patch_len={patch_len}, stride={stride}. "
                         "Fix: use positive values (Time-LLM: 16 and 8)")
    if len(shape) < 1:
        raise ShapeError(f"{name} must have a time axis ([..., L]); got a scalar. Fix: pass at least [L]")
    if shape[-1] < patch_len:
        raise ShapeError(f"{name} is too short for patch_len={patch_len}: need L >= {patch_len}, got shape "
                         f"{shape}. Fix: pass at least {patch_len} time steps or use a smaller patch_len")


def _raise_flags(count: np.ndarray, first_inf: np.ndarray, shape: tuple, name: str = "x") -> None:
    """The CPU path's errors, in its order: inf first (first in C order), then an all-NaN series."""
    length = shape[-1]
    lead = shape[:-1]
    bad = np.flatnonzero(first_inf < length)
    if bad.size:
        s = int(bad[0])
        where = tuple(int(i) for i in np.unravel_index(s, lead)) + (int(first_inf[s]),) if lead else \
            (int(first_inf[s]),)
        raise InputError(f"{name} contains inf at {where}; expected finite values or NaN. Fix: clean the input")
    empty = np.flatnonzero(count == 0)
    if empty.size:
        s = int(empty[0])
        idx = np.unravel_index(s, lead) if lead else ()
        raise InputError(f"series {s} (index {tuple(int(i) for i in idx)}) is all NaN; expected at least one "
                         "observed value per series. Fix: drop or fill that series")


def norm_patchify_cuda(x, patch_len: int = 16, stride: int = 8, eps: float = 1e-5, fill_nan: bool = True,
                       *, to_host: bool = True, stream=0):
    """:func:`alignts.kernels.patch.norm_patchify` on the GPU.

    x: [..., L], a NumPy array (copied to the device) or a CUDA array (numba device array or anything with
    ``__cuda_array_interface__``, float32/float64, used in place). Returns (patches [..., N, P] in x's dtype,
    mean [..., 1] float64, std [..., 1] float64): NumPy arrays, or numba device arrays with
    ``to_host=False`` (the patches stay on the GPU for a GPU model). Raises BackendUnavailableError without
    CUDA, InputError for inf or an all-NaN series (checked on the device, as the CPU path defines them).
    """
    cuda = _require_cuda()
    d_in = _on_device(cuda, x)
    _check_args(tuple(np.shape(x)) if d_in is None else tuple(d_in.shape), patch_len, stride)
    if d_in is not None:
        if d_in.dtype not in (np.float32, np.float64):
            raise InputError(f"x on the device must be float32 or float64; got {d_in.dtype}. "
                             "Fix: cast it on the device, or pass a NumPy array")
        if not d_in.is_c_contiguous():
            raise ShapeError(f"x on the device must be C-contiguous; got strides {d_in.strides}. "
                             "Fix: pass a contiguous copy")
        shape, dtype = tuple(d_in.shape), d_in.dtype
        s_n = int(np.prod(shape[:-1], dtype=np.int64))
        d_x = d_in.reshape(s_n, shape[-1])
    else:
        a = np.asarray(x)
        if a.dtype not in (np.float32, np.float64):
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
                raise InputError(f"x must be numeric; got dtype {a.dtype}. Fix: pass a float array")
            a = a.astype(np.float64)
        shape, dtype = a.shape, a.dtype
        s_n = int(np.prod(shape[:-1], dtype=np.int64))
        d_x = cuda.to_device(np.ascontiguousarray(a.reshape(s_n, shape[-1])), stream=stream)
    lead, length = shape[:-1], shape[-1]
    n = (length - patch_len) // stride + 2
    d_out = cuda.device_array((s_n, n, patch_len), dtype=dtype, stream=stream)
    d_mean = cuda.device_array(s_n, dtype=np.float64, stream=stream)
    d_std = cuda.device_array(s_n, dtype=np.float64, stream=stream)
    d_count = cuda.device_array(s_n, dtype=np.int32, stream=stream)
    d_inf = cuda.device_array(s_n, dtype=np.int32, stream=stream)
    launch_norm_patch(d_x, patch_len, stride, eps, fill_nan, d_out, d_mean, d_std, d_count, d_inf, stream)
    count = d_count.copy_to_host(stream=stream)
    first_inf = d_inf.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    _raise_flags(count, first_inf, shape)
    if not to_host:
        return (d_out.reshape(*lead, n, patch_len), d_mean.reshape(*lead, 1), d_std.reshape(*lead, 1))
    out = d_out.copy_to_host(stream=stream)
    mean = d_mean.copy_to_host(stream=stream)
    std = d_std.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    return out.reshape(lead + (n, patch_len)), mean.reshape(lead + (1,)), std.reshape(lead + (1,))
