"""Peak resident memory and cold start of a bundle, measured in a fresh child process.

The child imports the runtime, loads the bundle, plans it (variant, batch size, backend settings), runs a few
forecasts on random input and reports its peak resident set (Linux: ``VmHWM``, the high-water mark of the
child's own address space; ``ru_maxrss`` elsewhere) plus the time of each stage. A fresh process is the only honest way: the parent
already holds torch, other sessions and allocator caches.

    from alignts.bench.memory import measure_peak
    r = measure_peak("bundle/", variant="onnx-int8", batch_size=8)
    r["peak_rss_bytes"], r["cold_start_s"]

``measure_overhead(paradigm, backends)`` measures the process baseline the memory planner adds to every
estimate (``alignts.runtime.budget.PROCESS_BASE`` and ``RUNTIME_LIBRARY``): the CLI's imports (pandas and the
data loaders), the runtime, the paradigm's numba kernels compiled from a cold cache, and each runtime library
opened on a trivial model, with no bundle weights; the peak after each stage.

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
from typing import Any, Mapping, Sequence

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


def measure_overhead(paradigm: str = "internal", backends: Sequence[str] = ("onnx",), cold_numba: bool = True,
                     timeout: float = 300.0) -> dict:
    """Peak RSS of a process that imports what ``alignts forecast`` imports (pandas, the data loaders, the
    runtime), runs ``paradigm``'s numba kernels on tiny inputs and opens each of ``backends`` on a trivial model
    (no bundle weights): the planner's ``PROCESS_BASE[paradigm]`` plus its ``RUNTIME_LIBRARY`` terms.

    cold_numba: compile the kernels into an empty cache (``NUMBA_CACHE_DIR``), as a first run on a device does;
    compiling costs tens of MiB of peak that a warm cache does not.
    Returns dict(peak_rss_bytes, stages: [[stage, peak bytes after it], ...]): stages ``start``, ``imports``,
    ``kernels``, then one per backend in order.
    """
    from alignts.runtime.forecaster import paradigm_class

    paradigm_class(paradigm)  # NotImplementedError naming the known paradigms
    bad = [b for b in backends if b not in ("onnx", "gguf")]
    if bad:
        raise InputError(f"backends={list(backends)!r}: expected some of 'onnx', 'gguf'.")
    job = {"mode": "overhead", "paradigm": paradigm, "backends": list(backends)}
    if not cold_numba:
        return _run_child(job, timeout)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="alignts-numba-") as cache:
        return _run_child(job, timeout, {"NUMBA_CACHE_DIR": cache})


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
    c = plan.n_channels or f.cfg.n_channels or 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((plan.batch_size, c, plan.context_len)).cumsum(-1).astype(np.float32)
    f.forecast_scaled(x)
    t4 = time.perf_counter()
    times = []
    for _ in range(max(0, job["n_forecasts"] - 1)):
        s = time.perf_counter()
        f.forecast_scaled(x)
        times.append(time.perf_counter() - s)
    return {"peak_rss_bytes": _peak_rss_bytes(), "rss_after_plan_bytes": rss_plan, "python_baseline_bytes": base,
            "import_s": t1 - t0, "load_s": t2 - t1, "plan_s": t3 - t2, "first_forecast_s": t4 - t3,
            "cold_start_s": t4 - t0, "forecast_s": float(np.median(times)) if times else None,
            "variant": plan.variant, "batch_size": plan.batch_size, "provider": plan.provider,
            "settings_applied": applied}


class _FlatLM:
    """A causal backend with flat logits [n, V]: drives the Injective sampler's kernels without a model."""

    def __init__(self, n_vocab: int):
        self.n_vocab = n_vocab

    def prefill(self, prompt_ids, n_parallel: int = 1):
        import numpy as np

        return np.zeros((n_parallel, self.n_vocab), dtype=np.float32)

    def step(self, tokens, seq_ids=None):
        import numpy as np

        return np.zeros((len(tokens), self.n_vocab), dtype=np.float32)


def _run_kernels(paradigm: str) -> None:
    """Call every numba kernel a forecast of ``paradigm`` calls, on tiny inputs (compiling them if not cached)."""
    import numpy as np

    from alignts.kernels.norm import instance_denorm
    from alignts.kernels.patch import norm_patchify

    x = np.random.default_rng(0).standard_normal((2, 64)).cumsum(-1)  # [S, L]
    if paradigm in ("internal", "bridging"):
        _, m, s = norm_patchify(x, 16, 8, 1e-5)
        instance_denorm(np.zeros((2, 8)), m, s)
    if paradigm == "bridging":
        from alignts.runtime.prompt import PromptConfig, stats_texts

        stats_texts(x, PromptConfig(context_len=64, horizon=8))
        import tokenizers  # noqa: F401 - the prompt tokenizer's library
    if paradigm == "injective":
        from alignts.kernels.digits import CodecTable
        from alignts.runtime.codec_table import CodecSettings
        from alignts.runtime.paradigms.injective import DigitPrompter
        from alignts.runtime.sampler import ConstrainedSampler, SamplerConfig

        table = CodecTable(digit_ids=tuple(range(10)), value_sep=(10,), digit_sep=(), minus_id=11, end_ids=(12,))
        prompts, _, _ = DigitPrompter(table, CodecSettings(), 512).prompts(x, 4)
        ConstrainedSampler(table, 13, SamplerConfig(n_samples=2)).sample_values(_FlatLM(13), prompts[0], 4, 3)


def _child_overhead(job: dict) -> dict:
    stages = [["start", _peak_rss_bytes()]]
    import pandas  # noqa: F401 - `alignts forecast` reads its data with pandas

    import alignts.data.load  # noqa: F401
    import alignts.runtime  # noqa: F401

    stages.append(["imports", _peak_rss_bytes()])
    _run_kernels(job["paradigm"])
    stages.append(["kernels", _peak_rss_bytes()])
    for backend in job["backends"]:
        _open_trivial(backend)
        stages.append([backend, _peak_rss_bytes()])
    return {"peak_rss_bytes": _peak_rss_bytes(), "paradigm": job["paradigm"], "backends": job["backends"],
            "stages": stages}


def _open_trivial(backend: str) -> None:
    """Load ``backend``'s library and run it once on a model with no weights."""
    import numpy as np

    if backend == "onnx":
        import onnxruntime as ort
        from onnx import TensorProto, helper

        from alignts.runtime.backends.onnx import IR_VERSION

        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["S", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["S", 8])])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        sess.run(None, {"x": np.zeros((4, 8), dtype=np.float32)})
    else:
        from alignts.runtime.backends.gguf import _lib

        _lib()


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
