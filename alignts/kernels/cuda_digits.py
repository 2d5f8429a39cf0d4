"""CUDA variant of the LLMTime digit encoder (``digits.encode_digits``: values -> digit token ids), with numba.cuda.

Contract: the same as :func:`alignts.kernels.digits.encode_digits`, whose NumPy twin
``digits.encode_digits_ref`` is this kernel's reference (tests and ``alignts bench kernels --device cuda``
compare ids and lengths exactly; this file does not import it, kernel files stand alone). Per value ``x``:
``v = floor(|x| * 10**p)`` written without leading zeros, ``minus_id`` first when ``x < 0``, ``digit_sep``
ids between digits, ``value_sep`` ids after each value; rows padded with -1 to the longest. NaN, inf and
too-large values raise InputError as on the CPU path, detected on the device (no host pass over the input).

Layout: two kernels, one block of ``THREADS`` threads per series. ``_encode_scan`` counts the tokens of each
row and records its first non-finite index and its max ``|x|`` (block reductions); the host checks those and
sizes the output ``[S, T]`` from the longest row. ``_encode_write`` walks the row in rounds of ``THREADS``
consecutive values: each thread counts its value's tokens, an inclusive block scan (Hillis-Steele in shared
memory) gives each value its offset, and each thread writes its own tokens, so neighbouring threads write
neighbouring stretches of the row; the tail is padded with -1 in the same kernel.
The digit arithmetic is integer (``floor`` and a multiply by ``10**p`` in float64, exactly as on the CPU),
so ids match the CPU kernel bit for bit.

When it pays off (``alignts bench kernels --device cuda``, H100 vs one core of its Xeon host; table in
docs/ARCHITECTURE.md): the kernels take 0.11-0.56 ms for 7 to 7168 series of 512 values (33-158x faster than
the CPU kernel from 448 series up), but the output is about 7 int64 ids per value at precision 3 (56 bytes,
7x a float64 input), so with host arrays in and out the device->host copy of the ids dominates: 1.6-1.8x faster
than the CPU kernel at 448-7168 series, and 10x slower at one forecast of 7 series (0.8 ms vs 0.08 ms): keep
``digits.encode_digits`` there. It pays off most when the ids stay on the GPU (``to_host=False``) for a
model that runs there. Decoding is a sequential state machine per row (one thread per row at best) and
has no CUDA variant.

numba.cuda is imported lazily: importing this module never fails on a machine without CUDA; ``available()``
says whether the CUDA path can run and why not.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import float64, int32, int64

from alignts.errors import BackendUnavailableError, InputError, ShapeError

__all__ = ["available", "encode_digits_cuda", "launch_encode_scan", "launch_encode_write", "device_table",
           "THREADS", "SIM_THREADS", "MAX_ABS", "MAX_DIGITS"]

cuda = None  # numba.cuda, bound by _kernels() on first use
THREADS = 128  # threads per block (one block per series); a power of two for the reductions and the scan
SIM_THREADS = 32  # under NUMBA_ENABLE_CUDASIM: each simulated thread is a Python thread
MAX_ABS = 1e15  # as digits.MAX_ABS: |x| must stay below this
MAX_DIGITS = 18  # as digits.MAX_DIGITS: digits per value (v < 10**18 fits int64)


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
    _kernels()
    return cuda


# ---------------------------------------------------------------------------------------------- cuda
# Kernels are plain functions here, compiled by cuda.jit on first use: ``cuda`` is a module global bound
# lazily (and the CUDA simulator swaps that global for its fake module while it runs a kernel).

def _encode_scan(x, p_scale, n_dsep, n_vsep, lengths, first_bad, max_abs):
    # x [S, L] -> lengths [S] int64 tokens per row; first_bad [S] int32 first t with NaN/inf (L if none);
    # max_abs [S] float64 max |x| over the finite values
    s = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    l_n = x.shape[1]
    tot = cuda.shared.array(THREADS, int64)
    big = cuda.shared.array(THREADS, float64)
    bad = cuda.shared.array(1, int32)
    if tid == 0:
        bad[0] = l_n
    cuda.syncthreads()
    total = 0
    mx = 0.0
    for t in range(tid, l_n, THREADS):
        xv = float64(x[s, t])
        if xv != xv or math.isinf(xv):
            cuda.atomic.min(bad, 0, int32(t))
            continue
        ax = abs(xv)
        if ax > mx:
            mx = ax
        scaled = ax * p_scale
        if scaled >= 1e18:  # out of range: the host raises, the count is not used
            continue
        v = int64(math.floor(scaled))
        nd = 1
        p10 = int64(10)
        while nd < 19 and v >= p10:
            nd += 1
            if nd < 19:
                p10 *= 10
        total += nd + (nd - 1) * n_dsep + n_vsep
        if xv < 0:
            total += 1
    tot[tid] = total
    big[tid] = mx
    cuda.syncthreads()
    half = THREADS // 2
    while half > 0:
        if tid < half:
            tot[tid] += tot[tid + half]
            if big[tid + half] > big[tid]:
                big[tid] = big[tid + half]
        cuda.syncthreads()
        half //= 2
    if tid == 0:
        lengths[s] = tot[0]
        first_bad[s] = bad[0]
        max_abs[s] = big[0]


def _encode_write(x, p_scale, digit_ids, dsep, n_dsep, vsep, n_vsep, minus_id, out):
    # x [S, L] (checked finite and in range) -> out [S, T] int64 ids, -1 padded
    s = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    l_n = x.shape[1]
    t_n = out.shape[1]
    scan = cuda.shared.array(THREADS, int64)
    base = 0
    for r0 in range(0, l_n, THREADS):  # same trip count on every thread: syncthreads below is uniform
        t = r0 + tid
        c = 0
        v = int64(0)
        nd = 1
        neg = False
        if t < l_n:
            xv = float64(x[s, t])
            neg = xv < 0
            v = int64(math.floor(abs(xv) * p_scale))
            p10 = int64(10)
            while nd < 19 and v >= p10:
                nd += 1
                if nd < 19:
                    p10 *= 10
            c = nd + (nd - 1) * n_dsep + n_vsep
            if neg:
                c += 1
        scan[tid] = c
        cuda.syncthreads()
        off = 1
        while off < THREADS:  # inclusive Hillis-Steele scan
            add = 0
            if tid >= off:
                add = scan[tid - off]
            cuda.syncthreads()
            scan[tid] += add
            cuda.syncthreads()
            off *= 2
        pos = base + scan[tid] - c
        round_total = scan[THREADS - 1]
        if t < l_n:
            if neg:
                out[s, pos] = minus_id
                pos += 1
            # digits from the last one backwards, each but the last followed by the digit separators
            end = pos + nd + (nd - 1) * n_dsep
            q = end - 1
            for k in range(nd):
                if k > 0:
                    for j in range(n_dsep):
                        out[s, q - n_dsep + 1 + j] = dsep[j]
                    q -= n_dsep
                out[s, q] = digit_ids[v % 10]
                v = v // 10
                q -= 1
            for j in range(n_vsep):
                out[s, end + j] = vsep[j]
        base += round_total
        cuda.syncthreads()  # scan[] is rewritten by the next round
    for t in range(base + tid, t_n, THREADS):
        out[s, t] = -1


@functools.lru_cache(maxsize=None)
def _kernels():
    """Compile (lazily, once per process) and return (scan kernel, write kernel)."""
    global cuda, THREADS
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        THREADS = SIM_THREADS
    if getattr(cuda, "implementation", "") == "NVIDIA" and not hasattr(np, "row_stack"):
        # numba-cuda 0.30.x (in maintenance mode) overloads np.row_stack, which NumPy 2.5 removed, when it
        # compiles its first kernel, and fails (NVIDIA/numba-cuda#907, not to be fixed there). Restore the alias
        # (row_stack was np.vstack) so kernels compile; only where the name is missing.
        np.row_stack = np.vstack

    return cuda.jit(_encode_scan), cuda.jit(_encode_write)


@functools.lru_cache(maxsize=16)
def device_table(digit_ids: tuple, digit_sep: tuple, value_sep: tuple):
    """The table's ids on the device, cached: (digit_ids [10], dsep [>=1], n_dsep, vsep [>=1], n_vsep)."""
    _require_cuda()

    def padded(ids):  # never a zero-size device array
        return cuda.to_device(np.asarray(tuple(ids) or (0,), dtype=np.int64))

    return (cuda.to_device(np.asarray(digit_ids, dtype=np.int64)), padded(digit_sep), len(digit_sep),
            padded(value_sep), len(value_sep))


def launch_encode_scan(x, precision, n_dsep, n_vsep, lengths, first_bad, max_abs, stream=0):
    """Launch the counting kernel on device arrays (no checks, no sync). x [S, L]; lengths [S] int64;
    first_bad [S] int32; max_abs [S] float64."""
    if x.shape[0] == 0:
        return
    scan, _ = _kernels()
    scan[x.shape[0], THREADS, stream](x, 10.0 ** int(precision), int(n_dsep), int(n_vsep), lengths, first_bad,
                                      max_abs)


def launch_encode_write(x, precision, table_dev, minus_id, out, stream=0):
    """Launch the writing kernel on device arrays (no checks, no sync). x [S, L] checked by the scan;
    table_dev from :func:`device_table`; out [S, T] int64 with T >= the longest row."""
    if x.shape[0] == 0:
        return
    _, write = _kernels()
    digit_ids, dsep, n_dsep, vsep, n_vsep = table_dev
    write[x.shape[0], THREADS, stream](x, 10.0 ** int(precision), digit_ids, dsep, n_dsep, vsep, n_vsep,
                                       int(minus_id), out)


def _check_precision(precision) -> int:
    p = int(precision)
    if p != precision or not 0 <= p <= MAX_DIGITS - 3:
        raise InputError(f"precision must be an integer in [0, {MAX_DIGITS - 3}]; got {precision!r}. "
                         "Fix: use LLMTime's 3")
    return p


def _on_device(x):
    """x as a numba device array if it lives on the GPU (numba, CuPy, torch, ...), else None."""
    if getattr(x, "__cuda_ndarray__", False):  # numba's device arrays (also the simulator's)
        return x
    if hasattr(x, "__cuda_array_interface__"):
        return cuda.as_cuda_array(x)
    return None


def encode_digits_cuda(values, table, precision: int = 3, *, to_host: bool = True, stream=0):
    """:func:`alignts.kernels.digits.encode_digits` on the GPU.

    values: [..., L] (already scaled), a NumPy array (copied to the device) or a CUDA array (numba device
    array or anything with ``__cuda_array_interface__``, float32/float64, C-contiguous, used in place).
    table: a ``digits.CodecTable``. Returns (ids [..., T] int64 padded with -1, lengths [...] int64): NumPy
    arrays, or with ``to_host=False`` the ids as a numba device array (lengths always on the host).
    Raises BackendUnavailableError without CUDA; InputError for NaN, inf or values too large, as the CPU path.
    """
    _require_cuda()
    p = _check_precision(precision)
    d_in = _on_device(values)
    if d_in is not None:
        if d_in.dtype not in (np.float32, np.float64):
            raise InputError(f"values on the device must be float32 or float64; got {d_in.dtype}. "
                             "Fix: cast them on the device, or pass a NumPy array")
        if not d_in.is_c_contiguous():
            raise ShapeError(f"values on the device must be C-contiguous; got strides {d_in.strides}. "
                             "Fix: pass a contiguous copy")
        shape = tuple(d_in.shape)
        host = None
    else:
        host = np.asarray(values)
        if not (np.issubdtype(host.dtype, np.number) or host.dtype == bool):
            raise InputError(f"values must be numeric; got dtype {host.dtype}. Fix: pass a float array")
        if host.dtype not in (np.float32, np.float64):  # float32 -> float64 is exact: keep it, copy half
            host = host.astype(np.float64)
        shape = host.shape
    if len(shape) < 1:
        raise ShapeError("values must be [..., L]; got a scalar. Fix: pass at least [L]")
    lead, l_n = shape[:-1], shape[-1]
    s_n = int(np.prod(lead, dtype=np.int64))
    if s_n == 0 or l_n == 0:
        ids = np.empty((s_n, 0), dtype=np.int64)
        return ids.reshape(lead + (0,)), np.zeros(lead, dtype=np.int64)
    if host is not None:
        d_x = cuda.to_device(np.ascontiguousarray(host.reshape(s_n, l_n)), stream=stream)
    else:
        d_x = d_in.reshape(s_n, l_n)
    d_len = cuda.device_array(s_n, dtype=np.int64, stream=stream)
    d_bad = cuda.device_array(s_n, dtype=np.int32, stream=stream)
    d_max = cuda.device_array(s_n, dtype=np.float64, stream=stream)
    table_dev = device_table(tuple(table.digit_ids), tuple(table.digit_sep), tuple(table.value_sep))
    launch_encode_scan(d_x, p, table_dev[2], table_dev[4], d_len, d_bad, d_max, stream)
    lengths = d_len.copy_to_host(stream=stream)
    first_bad = d_bad.copy_to_host(stream=stream)
    max_abs = d_max.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    bad = np.flatnonzero(first_bad < l_n)
    if bad.size:
        s, t = int(bad[0]), int(first_bad[bad[0]])
        value = host.reshape(s_n, l_n)[s, t] if host is not None else d_x[s, t]
        where = tuple(int(i) for i in np.unravel_index(s, lead)) + (t,) if lead else (t,)
        kind = "NaN" if np.isnan(value) else "inf"
        raise InputError(f"values contain {kind} at {where}; expected finite values. Fix: clean the input "
                         "(fill missing values) before encoding")
    big = float(max_abs.max())
    if big >= MAX_ABS or big * 10.0 ** p >= 1e18:
        raise InputError(f"values must satisfy |x| < {MAX_ABS:g} and |x| * 10**precision < 1e18; got "
                         f"max |x| = {big:g} at precision {p}. Fix: scale the series first "
                         "(llmtime_scaler)")
    t_max = int(lengths.max())
    d_out = cuda.device_array((s_n, t_max), dtype=np.int64, stream=stream)
    launch_encode_write(d_x, p, table_dev, table.minus_id, d_out, stream)
    if not to_host:
        return d_out.reshape(*lead, t_max), lengths.reshape(lead)
    ids = d_out.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    return ids.reshape(lead + (t_max,)), lengths.reshape(lead)
