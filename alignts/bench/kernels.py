"""Kernel benchmark: each numba kernel against its vectorized NumPy twin, in one process.

Every case runs both paths once to warm up (numba compiles or loads its cache), then times ``repeats`` calls
of each and keeps the median. Sizes follow the runtime: Time-LLM/GPT4TS patching at ``[256, 7, 512]``,
LLMTime digit codec on 1M and 10k values, and smaller shapes beside them.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "alignts-bench-kernels"
FORMAT_VERSION = 1

# Issue targets (numpy time / numba time) on the team's 2-core machine.
TARGETS = {("encode_digits", "1M"): 5.0, ("decode_digits", "1M"): 5.0, ("norm_patchify", "256x7x512"): 1.5}


@dataclass(frozen=True)
class Row:
    """One timed case. Times are medians in milliseconds; ratio = numpy_ms / numba_ms."""

    kernel: str
    size: str
    shape: tuple[int, ...]
    n_values: int
    numba_ms: float
    numpy_ms: float
    ratio: float
    target: float | None
    repeats: int


@dataclass(frozen=True)
class Case:
    kernel: str
    size: str
    shape: tuple[int, ...]
    numba: Callable[[], object]
    numpy: Callable[[], object]


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def _scaled_walk(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random walks scaled as LLMTime scales them (so |z| is about 0-1.5: 3-4 digits at precision 3)."""
    from alignts.kernels import llmtime_scale, llmtime_scaler

    x = np.cumsum(rng.normal(size=shape), axis=-1)
    return llmtime_scale(x, *llmtime_scaler(x))


def build_cases(quick: bool = False, seed: int = 0) -> list[Case]:
    """The benchmark cases; ``quick`` shrinks every shape to a few hundred values (for tests)."""
    from alignts.kernels import digits, patch, scaler, stats

    rng = np.random.default_rng(seed)
    table = digits.CodecTable(digit_ids=tuple(range(10, 20)), value_sep=(1, 2), digit_sep=(1,), minus_id=3,
                              end_ids=(0,))
    if quick:
        patch_sizes = {"4x3x64": (4, 3, 64), "2x2x32": (2, 2, 32)}
        codec_sizes = {"600": (3, 200), "60": (2, 30)}
        series_sizes = {"8x64": (8, 64), "2x32": (2, 32)}
    else:
        patch_sizes = {"256x7x512": (256, 7, 512), "32x7x336": (32, 7, 336)}
        codec_sizes = {"1M": (1000, 1000), "10k": (10, 1000)}
        series_sizes = {"1792x512": (256 * 7, 512), "64x512": (64, 512)}
    cases: list[Case] = []
    for size, shape in patch_sizes.items():
        x = rng.normal(size=shape).astype(np.float32)
        cases.append(Case("norm_patchify", size, shape, lambda x=x: patch.norm_patchify(x, 16, 8),
                          lambda x=x: patch.norm_patchify_ref(x, 16, 8)))
    for size, shape in codec_sizes.items():
        z = _scaled_walk(rng, shape)
        cases.append(Case("encode_digits", size, shape, lambda z=z: digits.encode_digits(z, table, 3),
                          lambda z=z: digits.encode_digits_ref(z, table, 3)))
        ids, lengths = digits.encode_digits(z, table, 3)
        h = shape[-1]
        cases.append(Case("decode_digits", size, shape,
                          lambda i=ids, n=lengths, h=h: digits.decode_digits(i, n, table, 3, h),
                          lambda i=ids, n=lengths, h=h: digits.decode_digits_ref(i, n, table, 3, h)))
    for size, shape in series_sizes.items():
        x = np.cumsum(rng.normal(size=shape), axis=-1)
        cases.append(Case("llmtime_scaler", size, shape, lambda x=x: scaler.llmtime_scaler(x),
                          lambda x=x: scaler.llmtime_scaler_ref(x)))
        cases.append(Case("prompt_stats", size, shape, lambda x=x: stats.prompt_stats(x, 5),
                          lambda x=x: stats.prompt_stats_ref(x, 5)))
    return cases


def machine_info() -> dict:
    """What the numbers depend on: CPU count, load, library versions."""
    import numba

    info = {
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "system": platform.system(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": int(numba.config.NUMBA_NUM_THREADS),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    from alignts.runtime.threads import cpu_label

    info["cpu_model"] = cpu_label()
    return info


def run_kernel_bench(quick: bool = False, repeats: int = 5, seed: int = 0) -> dict:
    """Time every case; returns ``{"format", "version", "quick", "repeats", "machine", "rows": [Row...]}``."""
    from tqdm import tqdm

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    cases = build_cases(quick, seed)
    rows = []
    for case in tqdm(cases, desc="bench kernels", unit="case", disable=None):
        case.numba()  # warm-up: compile or load the numba cache
        case.numpy()
        numba_ms = _median_ms(case.numba, repeats)
        numpy_ms = _median_ms(case.numpy, repeats)
        row = Row(case.kernel, case.size, tuple(case.shape), int(np.prod(case.shape)), round(numba_ms, 6),
                  round(numpy_ms, 6), round(numpy_ms / numba_ms, 4) if numba_ms > 0 else float("inf"),
                  TARGETS.get((case.kernel, case.size)), repeats)
        log.info("%s %s: numba %.3f ms, numpy %.3f ms", row.kernel, row.size, row.numba_ms, row.numpy_ms)
        rows.append(row)
    return {"format": FORMAT, "version": FORMAT_VERSION, "quick": quick, "repeats": repeats,
            "machine": machine_info(), "rows": [asdict(r) | {"shape": list(r.shape)} for r in rows]}


def to_markdown(result: dict) -> str:
    """The result as a markdown table (one line per case) with the machine underneath."""
    lines = ["| kernel | size | numba ms | numpy ms | numpy/numba | target |",
             "|---|---|---:|---:|---:|---|"]
    for r in result["rows"]:
        target = ""
        if r["target"] is not None:
            target = f">= {r['target']:g}x " + ("met" if r["ratio"] >= r["target"] else "MISSED")
        lines.append(f"| {r['kernel']} | {r['size']} | {r['numba_ms']:.3f} | {r['numpy_ms']:.3f} | "
                     f"{r['ratio']:.2f}x | {target} |")
    m = result["machine"]
    lines.append("")
    lines.append(f"median of {result['repeats']} after warm-up; {m.get('cpu_model', m['machine'])}, "
                 f"{m['cpu_count']} CPUs, load {m.get('loadavg_1m')}, numpy {m['numpy']}, numba {m['numba']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- cuda
# `alignts bench kernels --device cuda`: the numba CPU kernel against its numba.cuda variant on the same
# inputs, at batch sizes from one forecast (7 series) to a large batch (7168 = 1024 x 7 series).

CUDA_FORMAT = "alignts-bench-kernels-cuda"
CUDA_FORMAT_VERSION = 1
# (stated tolerance) float32 patches: |cuda - numpy| <= 1e-6 + 1e-6 |numpy| (tree vs loop sums can move an
# output by one ulp); float64 patches and the float64 stats: 1e-12 + 1e-12 |numpy|; digit ids: equal.
CUDA_TOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


@dataclass(frozen=True)
class CudaRow:
    """One timed case (medians in ms). cpu_ms: numba CPU kernel (host arrays); cuda_ms: CUDA path with host
    arrays in and out (host->device copy, kernels, device->host copies, allocation); kernel_ms: the CUDA
    kernels alone on device-resident inputs and preallocated outputs (launch + sync); copy_mb: bytes copied
    per cuda_ms call; max_abs_diff: CUDA output vs the NumPy twin (ids: count of differing ids); ok: within
    CUDA_TOL (ids: all equal)."""

    kernel: str
    size: str
    shape: tuple[int, ...]
    n_values: int
    cpu_ms: float
    cuda_ms: float
    kernel_ms: float
    cpu_over_cuda: float
    cpu_over_kernel: float
    copy_mb: float
    max_abs_diff: float
    ok: bool
    repeats: int


def _bench_table():
    from alignts.kernels import digits

    return digits.CodecTable(digit_ids=tuple(range(10, 20)), value_sep=(1, 2), digit_sep=(1,), minus_id=3,
                             end_ids=(0,))


def _close(got: np.ndarray, want: np.ndarray, tol: float) -> tuple[float, bool]:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf"), False
    if got.size == 0:
        return 0.0, True
    diff = np.abs(got - want)
    return float(diff.max()), bool(np.all(diff <= tol + tol * np.abs(want)))


def check_norm_patchify_cuda(x, patch_len: int = 16, stride: int = 8, eps: float = 1e-5,
                             fill_nan: bool = True, got=None) -> tuple[float, bool]:
    """(max abs diff over patches, mean and std, within CUDA_TOL) of the CUDA path against the NumPy twin."""
    from alignts.kernels import cuda_norm_patch, patch

    if got is None:
        got = cuda_norm_patch.norm_patchify_cuda(x, patch_len, stride, eps, fill_nan)
    want = patch.norm_patchify_ref(x, patch_len, stride, eps, fill_nan)
    diffs = [_close(got[0], want[0], CUDA_TOL[np.dtype(want[0].dtype)])]
    diffs += [_close(g, w, CUDA_TOL[np.dtype(np.float64)]) for g, w in zip(got[1:], want[1:])]
    return max(d for d, _ in diffs), all(ok for _, ok in diffs)


def check_encode_digits_cuda(z, table, precision: int = 3, got=None) -> tuple[float, bool]:
    """(number of differing ids + lengths, all equal) of the CUDA path against the NumPy twin."""
    from alignts.kernels import cuda_digits, digits

    if got is None:
        got = cuda_digits.encode_digits_cuda(z, table, precision)
    ids, lengths = got
    rids, rlengths = digits.encode_digits_ref(z, table, precision)
    if ids.shape != rids.shape or lengths.shape != rlengths.shape:
        return float("inf"), False
    n_bad = int(np.count_nonzero(ids != rids)) + int(np.count_nonzero(lengths != rlengths))
    return float(n_bad), n_bad == 0 and ids.dtype == rids.dtype and lengths.dtype == rlengths.dtype


def cuda_edge_checks(seed: int = 0) -> list[dict]:
    """Equality of the CUDA kernels with their NumPy twins on edge cases: one series, one patch, L not a
    multiple of the stride, more than one block's worth of values per series, NaN points, float64, leading
    shapes, negative and zero values, tables with and without digit separators; and the errors (inf,
    all-NaN, NaN for the codec) raised with the CPU path's messages. Returns one dict per case:
    {"case", "max_abs_diff", "ok"} (errors: max_abs_diff 0 when the messages match)."""
    from alignts.kernels import cuda_digits, cuda_norm_patch, digits, patch

    rng = np.random.default_rng(seed)
    out = []
    norm_cases = [("1x16 f32 one patch", (1, 16), np.float32, 16, 8),
                  ("1x37 f32 L%stride!=0", (1, 37), np.float32, 16, 8),
                  ("3x300 f32 L>threads", (3, 300), np.float32, 16, 8),
                  ("2x2x45 f64", (2, 2, 45), np.float64, 16, 8),
                  ("[29] f32 P=8 s=5", (29,), np.float32, 8, 5),
                  ("2x40 f32 NaN", (2, 40), np.float32, 16, 8)]
    for name, shape, dtype, p, s in norm_cases:
        x = (rng.normal(size=shape) * 5 + 3).astype(dtype)
        if "NaN" in name:
            x[0, ::3] = np.nan
            x[1, -1] = np.nan  # the pad repeats a NaN point
        for fill in (True, False) if "NaN" in name else (True,):
            if fill:
                d, ok = check_norm_patchify_cuda(x, p, s, 1e-5, fill)
            else:  # NaN stays NaN: compare the NaN masks, then the rest
                got = cuda_norm_patch.norm_patchify_cuda(x, p, s, 1e-5, False)[0]
                want = patch.norm_patchify_ref(x, p, s, 1e-5, False)[0]
                same_nan = np.array_equal(np.isnan(got), np.isnan(want))
                d, ok = _close(np.nan_to_num(got), np.nan_to_num(want), CUDA_TOL[np.dtype(dtype)])
                ok = ok and same_nan
            out.append({"case": f"norm_patchify {name}" + ("" if fill else " keep NaN"), "max_abs_diff": d,
                        "ok": ok})
    tables = {"sep": _bench_table(), "nosep": digits.CodecTable(digit_ids=tuple(range(10)), value_sep=(11,),
                                                                   minus_id=12),
              "text": digits.TEXT_TABLE}
    codec_cases = [("1x1", (1, 1)), ("2x200 L>threads", (2, 200)), ("[9] f32", (9,)), ("2x1x5", (2, 1, 5))]
    for name, shape in codec_cases:
        z = rng.normal(size=shape) * 10.0 ** rng.uniform(-4, 4, size=shape)
        z.reshape(-1)[0] = 0.0
        if z.size > 2:
            z.reshape(-1)[1] = -0.0004  # "-0" at precision 3
        if "f32" in name:
            z = z.astype(np.float32)
        for tname, table in tables.items():
            d, ok = check_encode_digits_cuda(z, table, 3)
            out.append({"case": f"encode_digits {name} {tname}", "max_abs_diff": d, "ok": ok})

    def same_error(name, cpu, gpu):
        try:
            cpu()
        except Exception as e:
            want = (type(e), str(e))
        else:
            want = None
        try:
            gpu()
        except Exception as e:
            got = (type(e), str(e))
        else:
            got = None
        ok = want is not None and got == want
        if not ok:
            log.warning("%s: CPU raised %r, CUDA raised %r", name, want, got)
        out.append({"case": name, "max_abs_diff": 0.0 if ok else float("inf"), "ok": ok})

    x = rng.normal(size=(2, 3, 20)).astype(np.float32)
    x_inf = x.copy()
    x_inf[1, 2, 7] = -np.inf
    x_inf[1, 2, 9] = np.nan
    same_error("norm_patchify error inf", lambda: patch.norm_patchify(x_inf),
               lambda: cuda_norm_patch.norm_patchify_cuda(x_inf))
    x_nan = x.copy()
    x_nan[1, 0] = np.nan
    same_error("norm_patchify error all-NaN", lambda: patch.norm_patchify(x_nan),
               lambda: cuda_norm_patch.norm_patchify_cuda(x_nan))
    same_error("norm_patchify error too short", lambda: patch.norm_patchify(x[..., :10]),
               lambda: cuda_norm_patch.norm_patchify_cuda(x[..., :10]))
    table = tables["sep"]
    z = rng.normal(size=(2, 6))
    for what, val in (("NaN", np.nan), ("inf", np.inf), ("too large", 2e15)):
        zb = z.copy()
        zb[1, 4] = val
        same_error(f"encode_digits error {what}", lambda zb=zb: digits.encode_digits(zb, table, 3),
                   lambda zb=zb: cuda_digits.encode_digits_cuda(zb, table, 3))
    return out


def build_cuda_cases(quick: bool = False, seed: int = 0) -> list[tuple[str, str, np.ndarray]]:
    """(kernel, size, input): float32 series for norm_patchify, LLMTime-scaled walks for encode_digits."""
    rng = np.random.default_rng(seed)
    if quick:
        norm_shapes = [(1, 37)]
        codec_shapes = [(1, 20)]
    else:
        norm_shapes = [(s, l) for l in (336, 512) for s in (7, 448, 7168)]
        codec_shapes = [(s, 512) for s in (7, 448, 7168)]
    cases = []
    for shape in norm_shapes:
        x = np.cumsum(rng.normal(size=shape), axis=-1).astype(np.float32)
        cases.append(("norm_patchify", f"{shape[0]}x{shape[1]}", x))
    for shape in codec_shapes:
        cases.append(("encode_digits", f"{shape[0]}x{shape[1]}", _scaled_walk(rng, shape)))
    return cases


def run_cuda_bench(quick: bool = False, repeats: int = 5, seed: int = 0) -> dict:
    """Time every CUDA case; returns ``{"format", "version", "quick", "repeats", "machine", "device",
    "all_ok", "rows": [CudaRow...]}``. Raises BackendUnavailableError (with the reason) without CUDA."""
    from alignts.errors import BackendUnavailableError
    from alignts.kernels import cuda_digits, cuda_norm_patch, digits, patch

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    ok, why = cuda_norm_patch.available()
    if not ok:
        raise BackendUnavailableError(f"`alignts bench kernels --device cuda` needs CUDA: {why}")
    from numba import cuda

    table = _bench_table()
    rows = []
    for kernel, size, x in build_cuda_cases(quick, seed):
        s_n, l_n = x.shape
        if kernel == "norm_patchify":
            cpu = lambda x=x: patch.norm_patchify(x, 16, 8)  # noqa: E731
            gpu = lambda x=x: cuda_norm_patch.norm_patchify_cuda(x, 16, 8)  # noqa: E731
            n = patch.n_patches(l_n, 16, 8)
            d_x = cuda.to_device(x)
            bufs = (cuda.device_array((s_n, n, 16), np.float32), cuda.device_array(s_n, np.float64),
                    cuda.device_array(s_n, np.float64), cuda.device_array(s_n, np.int32),
                    cuda.device_array(s_n, np.int32))

            def kern(d_x=d_x, bufs=bufs):
                cuda_norm_patch.launch_norm_patch(d_x, 16, 8, 1e-5, True, *bufs)
                cuda.synchronize()

            got = gpu()
            copy_bytes = x.nbytes + got[0].nbytes + 2 * 8 * s_n + 2 * 4 * s_n
            diff, same = check_norm_patchify_cuda(x, got=got)
        else:
            cpu = lambda z=x: digits.encode_digits(z, table, 3)  # noqa: E731
            gpu = lambda z=x: cuda_digits.encode_digits_cuda(z, table, 3)  # noqa: E731
            got = gpu()
            d_x = cuda.to_device(x)
            tdev = cuda_digits.device_table(table.digit_ids, table.digit_sep, table.value_sep)
            bufs = (cuda.device_array(s_n, np.int64), cuda.device_array(s_n, np.int32),
                    cuda.device_array(s_n, np.float64))
            d_out = cuda.device_array(got[0].shape, np.int64)

            def kern(d_x=d_x, tdev=tdev, bufs=bufs, d_out=d_out):
                cuda_digits.launch_encode_scan(d_x, 3, tdev[2], tdev[4], *bufs)
                cuda_digits.launch_encode_write(d_x, 3, tdev, table.minus_id, d_out)
                cuda.synchronize()

            copy_bytes = x.nbytes + got[0].nbytes + (8 + 4 + 8) * s_n
            diff, same = check_encode_digits_cuda(x, table, 3, got=got)
        cpu()  # warm-up: numba compiles or loads its cache; the CUDA kernels compiled in gpu() above
        kern()
        cpu_ms = _median_ms(cpu, repeats)
        cuda_ms = _median_ms(gpu, repeats)
        kernel_ms = _median_ms(kern, repeats)
        row = CudaRow(kernel, size, (s_n, l_n), int(x.size), round(cpu_ms, 6), round(cuda_ms, 6),
                      round(kernel_ms, 6), round(cpu_ms / cuda_ms, 4) if cuda_ms > 0 else float("inf"),
                      round(cpu_ms / kernel_ms, 4) if kernel_ms > 0 else float("inf"),
                      round(copy_bytes / 1e6, 3), diff, bool(same), repeats)
        log.info("%s %s: cpu %.3f ms, cuda %.3f ms (kernel %.3f ms), diff %g", kernel, size, cpu_ms, cuda_ms,
                 kernel_ms, diff)
        rows.append(row)
    return {"format": CUDA_FORMAT, "version": CUDA_FORMAT_VERSION, "quick": quick, "repeats": repeats,
            "machine": machine_info() | {"cuda_device": why, "numba_cuda": getattr(cuda, "implementation", None)},
            "all_ok": all(r.ok for r in rows), "rows": [asdict(r) | {"shape": list(r.shape)} for r in rows]}


def cuda_to_markdown(result: dict) -> str:
    """The CUDA result as a markdown table (one line per case) with the machine underneath."""
    lines = ["| kernel | size | numba-cpu ms | cuda ms (with copies) | cuda kernel ms | cpu/cuda | cpu/kernel | "
             "copies MB | max abs diff vs numpy | ok |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['kernel']} | {r['size']} | {r['cpu_ms']:.3f} | {r['cuda_ms']:.3f} | "
                     f"{r['kernel_ms']:.3f} | {r['cpu_over_cuda']:.2f}x | {r['cpu_over_kernel']:.2f}x | "
                     f"{r['copy_mb']:.2f} | {r['max_abs_diff']:.3g} | {'ok' if r['ok'] else 'MISMATCH'} |")
    m = result["machine"]
    lines.append("")
    lines.append(f"median of {result['repeats']} after warm-up; GPU {m.get('cuda_device')}; CPU "
                 f"{m.get('cpu_model', m['machine'])}, {m['cpu_count']} CPUs (the numba CPU kernels use one), "
                 f"load {m.get('loadavg_1m')}, numpy {m['numpy']}, numba {m['numba']}; "
                 "encode_digits max abs diff = number of differing ids")
    return "\n".join(lines)
