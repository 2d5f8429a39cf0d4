"""CPU thread counts for the backends: physical cores, idle cores now, and single-threaded BLAS (torch-free).

llama.cpp's worker threads meet at a spinning barrier after every graph node (ggml_barrier: no sleep, no
yield). With more threads than idle cores a thread waits at the barrier for one the kernel has descheduled, and
the wait spins: on the team's 2-core EPYC with 5-7 other runnable jobs, 2 threads took 1.3-2.1 s for the
MiniLM hidden states that 1 thread computes in 90-110 ms. So the llama.cpp backend takes, per call, at most
the cores that are idle at that moment (:func:`idle_cores`), and never fewer than one.

numpy's OpenBLAS does the same for the small matrix products around llama.cpp (Internal's patch embedding and
flatten head): its worker threads wake up, find the cores busy and spin (measured: a [7, 8448] x [8448, 96]
product 0.2 ms alone, 100-230 ms of which 90-130 ms CPU right after a llama.cpp call on the loaded machine).
:func:`single_blas` runs such products on one BLAS thread.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from pathlib import Path
from typing import Iterator

_lock = threading.Lock()
_blas: dict[str, object] = {}


def cpu_model_and_flags() -> tuple[str | None, set[str] | None]:
    """This CPU's /proc/cpuinfo "model name" and "flags" (None where there is no such file or line)."""
    model, flags = None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and flags is None:
                    flags = set(value.split())
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    return model, flags


def cpu_isa(flags: set[str] | None = None) -> str:
    """The vector extensions that decide alignts' kernels, in a few words (for benchmark headers): e.g.
    "AVX-512 (vnni, bf16), AMX (int8, bf16)", "AVX2", "no AVX2"; "unknown" without /proc/cpuinfo. ``flags``:
    /proc/cpuinfo's (default: this CPU's)."""
    flags = cpu_model_and_flags()[1] if flags is None else flags
    if flags is None:
        return "unknown"
    if "avx512f" in flags:
        ext = [name for flag, name in (("avx512_vnni", "vnni"), ("avx512_bf16", "bf16")) if flag in flags]
        out = "AVX-512" + (f" ({', '.join(ext)})" if ext else "")
    else:
        out = "AVX2" if "avx2" in flags else "no AVX2"
    amx = [name for flag, name in (("amx_int8", "int8"), ("amx_bf16", "bf16")) if flag in flags]
    return out + (f", AMX ({', '.join(amx)})" if amx else "")


def cpu_label() -> str:
    """This CPU's model and vector extensions in one string, for benchmark reports: "Intel(R) Xeon(R) Processor
    (AVX-512 (vnni, bf16), AMX (int8, bf16))"."""
    import platform

    model, flags = cpu_model_and_flags()
    return f"{model or platform.processor() or platform.machine()} ({cpu_isa(flags)})"


def usable_cpus() -> list[int]:
    """The logical CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Physical cores among :func:`usable_cpus` (SMT siblings counted once); the logical count when the
    topology cannot be read."""
    return _physical_cores(tuple(usable_cpus()))


@functools.lru_cache(maxsize=8)
def _physical_cores(cpus: tuple[int, ...]) -> int:  # sysfs read once per CPU set (every llama.cpp call asks)
    seen = set()
    for c in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            seen.add((topo.joinpath("physical_package_id").read_text().strip(),
                      topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return max(1, len(cpus))
    return max(1, len(seen))


def runnable_others() -> int | None:
    """Threads of the whole machine that are running or waiting for a CPU right now, besides the caller (the
    first number of ``/proc/loadavg``'s 4th field, minus one); None where it cannot be read."""
    try:
        field = Path("/proc/loadavg").read_text().split()[3]
        return max(0, int(field.split("/")[0]) - 1)
    except (OSError, IndexError, ValueError):
        return None


def idle_cores(limit: int) -> int:
    """At most ``limit`` threads, no more than the cores no other runnable thread holds now (at least 1)."""
    busy = runnable_others()
    if busy is None:
        return max(1, limit)
    return max(1, min(limit, physical_cores() - busy))


def plan_threads(tokens_per_call: int, flops_per_token: float, cores: int | None = None) -> int:
    """Threads for a llama.cpp plan: the physical cores, fewer when a call is too small to share.

    Each graph node ends at a barrier every thread waits at (a few microseconds each, a few hundred nodes per
    call); a second thread pays off when a call holds at least ~20 MFLOP per thread (a ~0.3 ms share on one
    core). tokens_per_call x flops_per_token is the call's work (hidden states: the series of one decode x their
    tokens; generation: the parallel samples of one step).
    """
    cores = physical_cores() if cores is None else max(1, int(cores))
    work = max(0.0, float(tokens_per_call) * float(flops_per_token))
    return max(1, min(cores, int(work // 20e6) or 1))


def _blas_controller():
    with _lock:
        if "ctl" not in _blas:
            try:
                from threadpoolctl import ThreadpoolController

                _blas["ctl"] = ThreadpoolController().select(user_api="blas")
            except Exception:  # noqa: BLE001 - threadpoolctl missing or unable to read this numpy's BLAS
                _blas["ctl"] = None
        return _blas["ctl"]


@contextlib.contextmanager
def single_blas() -> Iterator[None]:
    """numpy's BLAS on one thread inside the block (threadpoolctl; nothing changes where it is missing).

    Blocks may overlap across threads: the first one in sets the limit, the last one out restores the process's
    own setting (a per-block save and restore would leave the limit on when two blocks interleave)."""
    ctl = _blas_controller()
    if ctl is None or not ctl.lib_controllers:
        yield
        return
    with _lock:
        if _blas.get("depth", 0) == 0:
            _blas["limiter"] = ctl.limit(limits=1)
        _blas["depth"] = _blas.get("depth", 0) + 1
    try:
        yield
    finally:
        with _lock:
            _blas["depth"] -= 1
            if _blas["depth"] == 0:
                _blas.pop("limiter").restore_original_limits()
