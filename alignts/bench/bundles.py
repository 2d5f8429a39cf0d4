"""`alignts bench BUNDLE...`: latency, throughput, cold start, peak memory and accuracy of bundles.

Per bundle x variant x batch size (llama-bench style, one row each):

- latency p50/p90/p99 of one ``forecast`` call on a ``[batch, C, L]`` random-walk input, after warm-up calls;
  throughput = series (batch x channels) per second at the p50 latency;
- Injective: generation tokens/s (mean +- sd over the repeats) of the sampling loop
  (``alignts.bench.injective.bench_generation``);
- cold start (import + load + plan + first forecast) and peak resident memory, both measured in a fresh child
  process (``alignts.bench.memory.measure_peak``), beside the planner's estimate
  (``alignts.runtime.budget.estimate_peak``);
- accuracy (MSE/MAE on the scaled test split, ``alignts.eval.evaluate.evaluate``) with ``--data``; the accuracy
  gate's validation MSE change vs fp32 from the manifest (``Variant.accuracy``, ``alignts.export.gate``);
- the roofline (``alignts.bench.roofline``): this machine's ceilings measured once per run (sgemm, int8 GEMM,
  streaming copy) and, per row, the achieved GFLOP/s of one call (the model's FLOP count from its config) as a
  fraction of the ceiling of its arithmetic, or for generation the bytes/s of weights read against the copy
  bandwidth;
- the torch eager forward of the same model as the reference (Internal, Bridging): the model rebuilt from the
  bundle by ``alignts.export.reference.load_torch`` (base backbone + ``torch_trained.safetensors``, LoRA fused,
  fp32, eval + ``inference_mode``), timed in the same run on the same input; ``speedup_vs_torch`` =
  p50(torch) / p50(runtime), and
  ``torch_max_abs_diff`` shows it is the same model. Runtime and torch get the same thread count
  (``--threads``, default: the cores this process may use; ``torch.set_num_threads``). Without torch, the
  ``[export]`` extra or the trained-tensor file, the row's note says why.

Timing (:func:`_round_robin`): every row of a bundle (each variant x batch size, with a forecaster of its own) and
torch at each batch size get one call a round, ``repeats`` rounds, the order rotated each round, so a slow minute
of the machine lands on all of them and the ratios between rows (speed-up, batch-8 cost, one variant against
another) compare calls at most one round apart. Before each timed call the process idles
``settle`` seconds: onnxruntime's intra-op workers spin ~35 ms after a run and torch's OpenMP workers ~10 ms
(measured with ``time.process_time`` across a sleep), and a spinning pool of one row would otherwise take a core
from the next row's call (at 2 threads torch timed right after an onnxruntime call ran 40-50 % slower).

Outputs: a markdown table (stdout / ``--md``), JSON (machine, versions, bundle manifest hashes, rows:
``--json``) and CSV (``--csv``). ``--report DIR`` adds the trade-off report (``alignts.bench.report``).

The library entry points are :func:`run_bench` (bundles x :class:`BenchConfig` -> result dict),
:func:`to_markdown` and :func:`write_csv`; the CLI (options, printing) is ``alignts/cli/bench.py``.
"""

from __future__ import annotations

import csv
import importlib
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from alignts.errors import AlignTSError, InputError

log = logging.getLogger(__name__)

# every row has every one of these keys (None where it does not apply); the CSV columns, in order
COLUMNS = ("bundle", "paradigm", "variant", "backend", "dtype", "provider", "batch_size", "n_channels",
           "context_len", "horizon", "weight_bytes", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
           "throughput_series_s", "gen_tokens_s", "gen_tokens_s_sd", "cold_start_s", "peak_rss_bytes",
           "est_peak_bytes", "mse", "mae", "n_windows", "threads", "torch_p50_ms", "speedup_vs_torch",
           "torch_max_abs_diff", "validation_max_abs_diff", "val_mse_change", "gate_passed", "gflop_per_call",
           "gflops", "weight_gbs", "ceiling", "ceiling_value", "roofline_fraction", "torch_gflops", "note")
_VERSIONED = ("alignts", "numpy", "numba", "onnxruntime", "llama_cpp_python", "gguf", "torch")
_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")

TorchForward = Callable[[np.ndarray], Any]  # x [B, C, L] float32 -> [B, C, H]


@dataclass(frozen=True)
class BenchConfig:
    """What ``alignts bench BUNDLE...`` measures.

    batch_sizes: batch sizes to time (windows per forecast call).
    variants:    variant names to run (None = every variant whose backend is importable).
    repeats:     timed forecast calls per row (after ``warmup`` untimed ones).
    data:        data spec for the accuracy columns (None = no accuracy).
    max_windows: score only the first N test windows (None = all, the protocol).
    child:       measure cold start and peak RSS in a child process (a few seconds per row).
    torch:       time the torch eager forward as the reference when possible.
    threads:     backend and torch threads (the same for both); None = the cores this process may use.
    eval_batch_size: windows per call while scoring.
    roofline:    measure the machine's ceilings once per run and add the roofline columns.
    quick_ceilings: small ceiling measurements (seconds; for tests, not for numbers).
    settle:      idle seconds before each timed call (longer than the other rows' pools spin; module docstring).
    """

    batch_sizes: tuple[int, ...] = (1, 8)
    variants: tuple[str, ...] | None = None
    repeats: int = 20
    warmup: int = 3
    data: str | None = None
    max_windows: int | None = None
    child: bool = True
    torch: bool = True
    threads: int | None = None
    device: str = "cpu"
    eval_batch_size: int = 64
    roofline: bool = True
    quick_ceilings: bool = False
    settle: float = 0.05

    def check(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise InputError(f"batch sizes {self.batch_sizes}: expected positive integers, e.g. --batch-sizes 1,8")
        if self.repeats < 1 or self.warmup < 0:
            raise InputError(f"repeats={self.repeats}, warmup={self.warmup}: expected repeats >= 1, warmup >= 0.")
        if not 0 <= self.settle <= 10:
            raise InputError(f"settle={self.settle} s: expected 0-10 s (--settle-ms 0-10000).")
        if self.max_windows is not None and self.max_windows < 1:
            raise InputError(f"--max-windows {self.max_windows}: expected >= 1.")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """CPU (model and vector extensions), cores, OS, Python and load average of this machine (for the JSON)."""
    from alignts.runtime.threads import cpu_isa, cpu_model_and_flags

    model, flags = cpu_model_and_flags()
    cpu = model or platform.processor() or ""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    # thread settings that change the timings (torch's OpenMP spin-waits by default: with more threads than
    # idle cores it slows down many times; OMP_WAIT_POLICY=PASSIVE avoids that)
    env = {k: os.environ[k] for k in _THREAD_ENV if k in os.environ}
    return {"cpu": cpu, "isa": cpu_isa(flags), "cores": _cores(), "machine": platform.machine(), "system": platform.platform(),
            "python": platform.python_version(), "loadavg": load, "thread_env": env}


def versions() -> dict[str, str]:
    from alignts.runtime.manifest import package_versions

    return package_versions(_VERSIONED)


def _random_input(rng: np.random.Generator, b: int, c: int, L: int) -> np.ndarray:
    x = rng.standard_normal((b, c, L)).cumsum(-1) * 0.3 + rng.standard_normal((b, c, 1))
    return x.astype(np.float32)  # [B, C, L]


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def _round_robin(calls: Sequence[Callable[[], Any]], repeats: int, warmup: int, settle: float) -> np.ndarray:
    """Seconds of each call, [len(calls), repeats]: one call of each a round, the order rotated each round.

    ``warmup`` untimed rounds first; ``settle`` seconds of idle before every timed call (module docstring).
    """
    n = len(calls)
    for _ in range(warmup):
        for fn in calls:
            fn()
    t = np.empty((n, repeats))
    for r in range(repeats):
        for k in range(n):
            i = (k + r) % n
            if settle:
                time.sleep(settle)
            s = time.perf_counter()
            calls[i]()
            t[i, r] = time.perf_counter() - s
    return t


def torch_reference(bundle: str | os.PathLike, paradigm: str | None = None) -> tuple[TorchForward | None, str]:
    """The torch eager forward of a bundle's model (fp32, eval, ``inference_mode``), or (None, why not).

    The model comes from ``alignts.export.reference.load_torch(bundle)`` (x [B, C, L] -> [B, C, H]). The
    reason names the fix: install torch / the ``[export]`` extra, or re-fit a bundle without the trained-tensor
    file; Injective bundles have no torch twin. paradigm: unused (kept for callers of the older signature).
    """
    try:
        import torch
    except ImportError:
        return None, "torch is not installed (pip install 'alignts[export]')"
    try:
        reference = importlib.import_module("alignts.export.reference")
    except ImportError as e:
        return None, f"the [export] extra is not importable ({e}); pip install 'alignts[export]'"
    try:
        module = reference.load_torch(bundle)
    except (NotImplementedError, AlignTSError) as e:  # Injective; a bundle without the trained-tensor file
        return None, str(e)

    def forward(x: np.ndarray):
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    return forward, ""


def tail_rows(forecaster) -> bool:
    """Whether this forecaster's backbone runs its last layer after the attention on the patch tokens only
    (Bridging over a BERT's ONNX graph with ``output_rows``, or on alignts' llama.cpp from patch level 20:
    ``LoadedBackbone.last_rows_only``); its FLOP count leaves the prompt's out."""
    backbone = getattr(forecaster, "backbone", None)
    return backbone is not None and backbone.last_rows_only


def _bundle_variants(manifest, wanted: Sequence[str] | None) -> list:
    from alignts.runtime.budget import available_backends

    if wanted:  # with several bundles, a name may belong to some of them only
        have = {v.name for v in manifest.variants}
        missing = [n for n in wanted if n not in have]
        if missing:
            log.warning("variants %s are not in this bundle (it has %s); skipped", missing, sorted(have))
        return [manifest.variant(n) for n in wanted if n in have]
    have = set(available_backends())
    return [v for v in manifest.variants if v.backend in have]


def _accuracy(f, manifest, cfg: BenchConfig, batch: int) -> dict[str, Any]:
    import dataclasses

    from alignts.data.load import load_data
    from alignts.data.splits import make_splits
    from alignts.eval.evaluate import evaluate

    L, H = f.context_len, f.planned.horizon
    data = load_data(cfg.data, columns=list(f.cfg.columns) if f.cfg.columns else None)
    splits = make_splits(data, L, H)
    if cfg.max_windows is not None:
        keep = L + H - 1 + cfg.max_windows
        splits = dataclasses.replace(splits, test=splits.test[:keep], test_mask=splits.test_mask[:keep])
    r = evaluate(f.forecast_scaled, splits, L, H, batch_size=batch, progress=False)
    return {"mse": r["mse"], "mae": r["mae"], "n_windows": r["n_windows"], "eval_seconds": r["seconds"]}


def _generation(bundle: Path, v, manifest, cfg: BenchConfig) -> tuple[float | None, float | None, str]:
    if manifest.paradigm != "injective" or v.backend != "gguf":
        return None, None, ""
    try:
        from alignts.bench.injective import bench_generation
    except ImportError as e:
        return None, None, f"bench_generation unavailable ({e})"
    c = manifest.config
    tps = []
    for r in range(max(2, min(cfg.repeats, 5))):
        g = bench_generation(bundle / v.files[0], n_samples=int(c.get("samples", 20)),
                             horizon=int(c.get("horizon", 24)), context_len=int(c.get("context_len", 96)),
                             precision=int(manifest.codec.get("precision", 2)), n_threads=cfg.threads, repeats=1,
                             seed=r, n_ctx=int(c.get("n_ctx", 512)))
        tps.append(float(g["loop_tokens_per_s"]))
    return float(np.mean(tps)), float(np.std(tps, ddof=1)), ""


def bench_bundle(bundle: str | os.PathLike, cfg: BenchConfig = BenchConfig(),
                 torch_forward: TorchForward | None = None,
                 ceilings: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Benchmark one bundle: one row (dict with every key of ``COLUMNS``) per variant x batch size.

    torch_forward: the torch reference to time (default: :func:`torch_reference` when ``cfg.torch``); it
    runs with ``torch.set_num_threads(threads)``, the runtime's thread count, restored afterwards.
    ceilings: :func:`alignts.bench.roofline.measure_ceilings` of this run (measured here when ``cfg.roofline``
    and not given).
    """
    import alignts.runtime as rt

    cfg.check()
    bundle = Path(bundle)
    f = rt.load(bundle)
    m = f.manifest
    variants = _bundle_variants(m, cfg.variants)
    if not variants:
        raise InputError(f"{bundle}: none of the variants {cfg.variants or [v.name for v in m.variants]} can run "
                         "here; expected a variant name the bundle has (`alignts inspect BUNDLE`) whose backend is "
                         "installed.")
    threads = int(cfg.threads or _cores())
    if ceilings is None and cfg.roofline:
        from alignts.bench.roofline import measure_ceilings

        ceilings = measure_ceilings(threads, quick=cfg.quick_ceilings)
    torch_note = "" if cfg.torch else "not asked (--no-torch)"
    if torch_forward is None and cfg.torch:
        torch_forward, torch_note = torch_reference(bundle, m.paradigm)
        if torch_forward is None:
            log.warning("%s: no torch reference: %s", bundle, torch_note)
    torch_threads = None
    if torch_forward is not None:
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        return _bench_rows(bundle, m, variants, cfg, threads, torch_forward, torch_note, ceilings)
    finally:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)


def _bench_rows(bundle: Path, m, variants, cfg: BenchConfig, threads: int, torch_forward: TorchForward | None,
                torch_note: str, ceilings: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    from alignts.bench.memory import measure_peak
    from alignts.bench.roofline import model_flops, roofline_fields
    from alignts.runtime.budget import estimate_peak
    from alignts.runtime.forecaster import paradigm_class

    rng = np.random.default_rng(0)
    batches = sorted(set(cfg.batch_sizes))
    # one forecaster per row (variant x batch size), all open at once for the round-robin timing
    cases: list[tuple[Any, int, Any, Any, np.ndarray]] = []  # (variant, batch, forecaster, plan, x)
    inputs: dict[int, np.ndarray] = {}
    for v in variants:
        for b in batches:
            fc = paradigm_class(m.paradigm)(bundle, m)  # the manifest bench_bundle read and verified
            plan = fc.plan(variant=v.name, batch_size=b, device=cfg.device, threads=threads)
            C = plan.n_channels or fc.cfg.n_channels or 1
            if b not in inputs:
                inputs[b] = _random_input(rng, b, C, plan.context_len)
            cases.append((v, b, fc, plan, inputs[b]))
    calls: list[Callable[[], Any]] = [lambda fc=fc, x=x: fc.forecast_scaled(x) for _, _, fc, _, x in cases]
    if torch_forward is not None:
        calls += [lambda x=inputs[b]: torch_forward(x) for b in batches]
    t_all = _round_robin(calls, cfg.repeats, cfg.warmup, cfg.settle)
    torch_p50, y_ref = {}, {}
    if torch_forward is not None:
        torch_p50 = {b: float(np.percentile(t_all[len(cases) + i], 50)) for i, b in enumerate(batches)}
        y_ref = {b: _numpy(torch_forward(x)) for b, x in inputs.items()}

    rows: list[dict[str, Any]] = []
    acc: dict[str, dict[str, Any]] = {}
    gens = {v.name: _generation(bundle, v, m, cfg) for v in variants}
    for (v, b, fc, plan, x), t in zip(cases, t_all):
        torch_row: dict[str, Any] = {}
        if torch_forward is not None:
            y = np.asarray(fc.forecast_scaled(x))
            torch_row = dict(torch_p50_ms=torch_p50[b] * 1e3,
                             speedup_vs_torch=torch_p50[b] / float(np.percentile(t, 50)),
                             torch_max_abs_diff=float(np.abs(y - y_ref[b][..., :y.shape[-1]]).max()))
        gen_tps, gen_sd, gen_note = gens[v.name]
        p50, p90, p99 = (float(np.percentile(t, q)) for q in (50, 90, 99))
        row: dict[str, Any] = {k: None for k in COLUMNS}
        row.update(bundle=str(bundle), paradigm=m.paradigm, variant=v.name, backend=v.backend, dtype=v.dtype,
                   provider=plan.provider, batch_size=b, n_channels=x.shape[1], context_len=plan.context_len,
                   horizon=plan.horizon, weight_bytes=int(v.weight_bytes),
                   latency_p50_ms=p50 * 1e3, latency_p90_ms=p90 * 1e3, latency_p99_ms=p99 * 1e3,
                   throughput_series_s=b * x.shape[1] / p50, gen_tokens_s=gen_tps, gen_tokens_s_sd=gen_sd,
                   threads=threads, **torch_row,
                   validation_max_abs_diff=v.validation.get("end_to_end_max_abs_diff",
                                                             v.validation.get("max_abs_diff")),
                   val_mse_change=v.accuracy.get("rel_mse_change"), gate_passed=v.accuracy.get("passed"))
        flops = model_flops(m, b, bundle_dir=bundle, last_rows_only=tail_rows(fc))
        row.update(roofline_fields(row, ceilings, flops, n_parallel=getattr(fc.cfg, "samples", None)))
        if flops is not None and row.get("torch_p50_ms"):
            row["torch_gflops"] = flops / (row["torch_p50_ms"] / 1e3) / 1e9
        notes = [n for n in (gen_note,) if n]
        try:
            row["est_peak_bytes"] = estimate_peak(m, v, b, bundle_dir=bundle).total
        except AlignTSError as e:
            notes.append(f"no estimate: {e}")
        if cfg.child:
            try:
                r = measure_peak(bundle, v.name, b, n_forecasts=1, threads=threads, device=cfg.device)
                row.update(cold_start_s=r["cold_start_s"], peak_rss_bytes=r["peak_rss_bytes"])
            except AlignTSError as e:
                notes.append(f"child failed: {e}")
        if torch_forward is None and torch_note:
            notes.append(f"torch reference: {torch_note}")
        if cfg.data is not None:
            if v.name not in acc:  # the same for every batch size: scored once per variant
                acc[v.name] = _accuracy(fc, m, cfg, max(cfg.eval_batch_size, b))
            row.update(mse=acc[v.name]["mse"], mae=acc[v.name]["mae"], n_windows=acc[v.name]["n_windows"])
        row["note"] = "; ".join(notes)
        log.info("%s %s b=%d: p50 %.2f ms", bundle.name, v.name, b, p50 * 1e3)
        rows.append(row)
    return rows


def run_bench(bundles: Sequence[str | os.PathLike], cfg: BenchConfig = BenchConfig(),
              torch_forwards: Mapping[str, TorchForward] | None = None) -> dict[str, Any]:
    """Benchmark several bundles; returns {"machine", "versions", "config", "bundles", "rows"} (JSON-ready).

    bundles[path] = {"manifest_sha256", "paradigm", "architecture", "training"} for each bundle.
    """
    from alignts.runtime.manifest import manifest_sha256, read_manifest

    machine = machine_info()  # the load average before the run; the one after goes beside it
    ceilings = None
    if cfg.roofline:  # once per run, with the run's thread count
        from alignts.bench.roofline import measure_ceilings

        ceilings = measure_ceilings(int(cfg.threads or _cores()), quick=cfg.quick_ceilings)
    rows, info = [], {}
    for b in bundles:
        m = read_manifest(b, verify=False)
        t = dict(m.training)
        info[str(b)] = {"manifest_sha256": manifest_sha256(b), "paradigm": m.paradigm,
                        "architecture": m.architecture,
                        "training": {k: t.get(k) for k in ("trainable_params", "total_params", "train_wall_s",
                                                           "wall_s", "n_params", "backbone", "command")}}
        rows.extend(bench_bundle(b, cfg, (torch_forwards or {}).get(str(b)), ceilings))
    machine["loadavg_end"] = machine_info()["loadavg"]
    return {"machine": machine, "versions": versions(), "config": _plain(asdict(cfg)), "bundles": info,
            "ceilings": ceilings, "rows": rows}


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _f(v, fmt: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return format(v, fmt)


def to_markdown(result: Mapping[str, Any]) -> str:
    """The llama-bench style table of ``run_bench``'s result."""
    mach = result.get("machine", {})
    head = ["bundle", "variant", "batch", "p50 ms", "p90 ms", "p99 ms", "series/s", "gen tok/s", "cold s",
            "peak MiB", "est MiB", "MSE", "MAE", "val MSE change", "torch ms", "speedup", "GFLOP/s (GB/s)",
            "of ceiling"]
    load, end = mach.get("loadavg"), mach.get("loadavg_end")
    lines = [f"machine: {mach.get('cpu', '?')}, {mach.get('cores', '?')} cores"
             + (f", load average {' / '.join(str(v) for v in load)} (1/5/15 min)" if load else "")
             + (f" before, {' / '.join(str(v) for v in end)} after" if load and end else "") + "; "
             + ", ".join(f"{k} {v}" for k, v in result.get("versions", {}).items())]
    threads = sorted({r["threads"] for r in result["rows"] if r.get("threads")})
    if threads:
        lines.append(f"threads: {', '.join(map(str, threads))} for the runtime and for torch "
                     "(torch.set_num_threads); torch ms: the torch eager forward of the same model (fp32, eval, "
                     "inference_mode), on the same input, its calls round-robin with every row's (an idle gap before each); "
                     "speedup = torch p50 / runtime p50; val MSE change: the accuracy gate's relative change vs "
                     "fp32 on validation windows (manifest)."
                     + (" Environment: " + ", ".join(f"{k}={v}" for k, v in mach["thread_env"].items())
                        if mach.get("thread_env") else ""))
    lines += ["",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---"] + ["--:"] * (len(head) - 2)) + "|"]
    for r in result["rows"]:
        gen = ""
        if r.get("gen_tokens_s") is not None:
            gen = f"{r['gen_tokens_s']:.0f} ± {r['gen_tokens_s_sd'] or 0:.0f}"
        mib = (lambda n: _f(None if n is None else n / 2 ** 20, ".1f"))

        def pct(v, signed=True):
            return "" if v is None else format(100 * v, "+.2f" if signed else ".0f") + " %"
        cells = [Path(r["bundle"]).name, r["variant"], str(r["batch_size"]), _f(r["latency_p50_ms"], ".2f"),
                 _f(r["latency_p90_ms"], ".2f"), _f(r["latency_p99_ms"], ".2f"), _f(r["throughput_series_s"], ".0f"),
                 gen, _f(r["cold_start_s"], ".2f"), mib(r["peak_rss_bytes"]), mib(r["est_peak_bytes"]),
                 _f(r["mse"], ".3f"), _f(r["mae"], ".3f"), pct(r.get("val_mse_change")), _f(r["torch_p50_ms"], ".2f"),
                 _f(r["speedup_vs_torch"], ".2f") + ("x" if r.get("speedup_vs_torch") else ""),
                 _f(r.get("gflops"), ".1f") if r.get("gflops") is not None else
                 (f"({r['weight_gbs']:.1f})" if r.get("weight_gbs") is not None else ""),
                 pct(r.get("roofline_fraction"), signed=False) + (f" {_CEIL[r['ceiling']]}" if r.get("ceiling") else "")]
        lines.append("| " + " | ".join(cells) + " |")
    c = result.get("ceilings")
    if c:
        lines.insert(1, f"ceilings measured in this run ({c.get('threads')} threads): sgemm {c['sgemm_gflops']:.0f} "
                        f"GFLOP/s (the faster of numpy and onnxruntime MatMul, n={c['sizes']['sgemm_n']}), int8 GEMM "
                        f"{c['int8_gops']:.0f} GOP/s "
                        f"(onnxruntime MatMulInteger, n={c['sizes']['int8_n']}), "
                        + (f"bf16 GEMM {c['bf16_gflops']:.0f} GFLOP/s (torch, n={c['sizes']['sgemm_n']}), "
                           if c.get("bf16_gflops") else "")
                        + f"copy {c['copy_gbs']:.1f} GB/s "
                        "(numpy, one thread); 'of ceiling' = achieved / the ceiling of the row's arithmetic")
    notes = sorted({r["note"] for r in result["rows"] if r.get("note")})
    if notes:
        lines += [""] + [f"note: {n}" for n in notes]
    return "\n".join(lines)


_CEIL = {"sgemm_gflops": "sgemm", "int8_gops": "int8", "bf16_gflops": "bf16", "copy_gbs": "copy"}


def write_csv(result: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """One CSV line per row, columns ``COLUMNS``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in result["rows"]:
            w.writerow({k: r.get(k) for k in COLUMNS})
    return path
