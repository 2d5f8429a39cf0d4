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
    from alignts.kernels import bins, digits, patch, scaler, stats

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
        cases.append(Case("bins_encode", size, shape, lambda x=x: bins.bins_encode(x),
                          lambda x=x: bins.bins_encode_ref(x)))
        ids, sc = bins.bins_encode(x)
        cases.append(Case("bins_decode", size, shape, lambda i=ids, s=sc: bins.bins_decode(i, s),
                          lambda i=ids, s=sc: bins.bins_decode_ref(i, s)))
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
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
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
