"""Peak resident memory and cold start of a bundle, measured in a fresh child process.

The child imports the runtime, loads the bundle, plans it (variant, batch size, backend settings), runs a few
forecasts on random input and reports its peak resident set (Linux: ``VmHWM``, the high-water mark of the
child's own address space; ``ru_maxrss`` elsewhere) plus the time of each stage. A fresh process is the only honest way: the parent
already holds torch, other sessions and allocator caches.

    from alignts.bench.memory import measure_peak
    r = measure_peak("bundle/", variant="onnx-int8", batch_size=8)
    r["peak_rss_bytes"], r["cold_start_s"]

``measure_overhead(backend)`` measures the process baseline the memory planner adds to every estimate
(``alignts.runtime.budget.RUNTIME_OVERHEAD``): the same imports, a numba kernel call and the backend opened on
a trivial model, with no bundle weights.

Run as a module (``python -m alignts.bench.memory '<json>'``) this file is the child itself.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from alignts.errors import AlignTSError, InputError

log = logging.getLogger(__name__)

_MARK = "ALIGNTS_MEMORY_RESULT "


def _peak_rss_bytes() -> int:
    """This process's peak resident set. Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this
    address space only (``ru_maxrss`` can carry the parent's size across fork + exec); elsewhere ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb) * (1 if sys.platform == "darwin" else 1024)  # macOS reports bytes, Linux KiB


def _current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _run_child(job: Mapping[str, Any], timeout: float, env_extra: Mapping[str, str] | None = None) -> dict:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "alignts.bench.memory", json.dumps(dict(job))]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise InputError(f"the memory child ran past {timeout:.0f} s ({job.get('mode')}); expected it to finish. "
                         "Fix: pass a larger timeout or fewer forecasts.") from e
    for line in p.stdout.splitlines():
        if line.startswith(_MARK):
            out = json.loads(line[len(_MARK):])
            if out.get("error"):
                raise AlignTSError(f"the memory child failed: {out['error']}")
            return out
    tail = (p.stderr or p.stdout)[-1500:]
    raise AlignTSError(f"the memory child exited with code {p.returncode} without a result; expected a JSON line. "
                       f"Its output ended with:\n{tail}")


def measure_peak(bundle: str | os.PathLike, variant: str | None = None, batch_size: int = 1,
                 n_forecasts: int = 2, settings: Mapping[str, Any] | None = None, budget: int | None = None,
                 threads: int | None = None, device: str = "cpu", timeout: float = 600.0) -> dict:
    """Load, plan and forecast ``bundle`` in a fresh Python process; return what it measured.

    settings: backend settings from :func:`alignts.runtime.budget.choose`; passed to ``plan(settings=...)`` when
    the forecaster accepts them (``settings_applied`` says whether it did).
    Returns dict(peak_rss_bytes, rss_after_plan_bytes, import_s, load_s, plan_s, first_forecast_s,
    cold_start_s (import + load + plan + first forecast), forecast_s (later calls, median), variant,
    batch_size, provider, settings_applied, python_baseline_bytes (RSS before any alignts import)).
    """
    job = {"mode": "bundle", "bundle": str(Path(bundle).resolve()), "variant": variant,
           "batch_size": int(batch_size), "n_forecasts": int(n_forecasts), "settings": dict(settings or {}),
           "budget": budget, "threads": threads, "device": device}
    return _run_child(job, timeout)


def measure_overhead(backend: str = "onnx", timeout: float = 300.0) -> dict:
    """Peak RSS of a process that imports the runtime, runs a numba kernel and opens ``backend`` on a trivial
    model (no bundle weights): the planner's ``RUNTIME_OVERHEAD[backend]``. Returns dict(peak_rss_bytes, ...)."""
    if backend not in ("onnx", "gguf"):
        raise InputError(f"backend={backend!r}: expected 'onnx' or 'gguf'.")
    return _run_child({"mode": "overhead", "backend": backend}, timeout)


# ------------------------------------------------------------------------------------------------ the child


def _child_bundle(job: dict) -> dict:
    import numpy as np

    base = _current_rss_bytes()
    t0 = time.perf_counter()
    import alignts.runtime as rt

    t1 = time.perf_counter()
    f = rt.load(job["bundle"])
    t2 = time.perf_counter()
    kwargs: dict[str, Any] = {"batch_size": job["batch_size"], "variant": job["variant"], "device": job["device"],
                              "threads": job["threads"], "budget": job["budget"]}
    applied = False
    if job["settings"] and "settings" in inspect.signature(f.plan).parameters:
        kwargs["settings"] = job["settings"]
        applied = True
    plan = f.plan(**kwargs)
    t3 = time.perf_counter()
    rss_plan = _current_rss_bytes()
    c = plan.n_channels or int(f.manifest.config.get("n_channels") or 1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((plan.batch_size, c, plan.context_len)).cumsum(-1).astype(np.float32)
    f.forecast(x)
    t4 = time.perf_counter()
    times = []
    for _ in range(max(0, job["n_forecasts"] - 1)):
        s = time.perf_counter()
        f.forecast(x)
        times.append(time.perf_counter() - s)
    return {"peak_rss_bytes": _peak_rss_bytes(), "rss_after_plan_bytes": rss_plan, "python_baseline_bytes": base,
            "import_s": t1 - t0, "load_s": t2 - t1, "plan_s": t3 - t2, "first_forecast_s": t4 - t3,
            "cold_start_s": t4 - t0, "forecast_s": float(np.median(times)) if times else None,
            "variant": plan.variant, "batch_size": plan.batch_size, "provider": plan.provider,
            "settings_applied": applied}


def _child_overhead(job: dict) -> dict:
    import numpy as np

    from alignts.kernels.norm import instance_denorm
    from alignts.kernels.patch import norm_patchify
    import alignts.runtime  # noqa: F401

    x = np.random.default_rng(0).standard_normal((4, 64))
    p, m, s = norm_patchify(x, 16, 8, 1e-5)
    instance_denorm(np.zeros((4, 8)), m, s)
    if job["backend"] == "onnx":
        import onnxruntime as ort
        from onnx import TensorProto, helper

        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["S", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["S", 8])])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        sess.run(None, {"x": np.zeros((4, 8), dtype=np.float32)})
    else:
        from alignts.runtime.backends.gguf import _lib

        _lib()
    return {"peak_rss_bytes": _peak_rss_bytes(), "backend": job["backend"]}


def _child_main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    try:
        out = _child_bundle(job) if job["mode"] == "bundle" else _child_overhead(job)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
        out = {"error": f"{type(e).__name__}: {e}"}
    print(_MARK + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
