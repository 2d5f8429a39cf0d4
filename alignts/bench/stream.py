"""`alignts bench stream`: what a stream costs against re-running the batch forecast on its window.

Per bundle and context length L, measured side by side in one process on the same windows:
- ``update_us``: wall time of ``Stream.update`` per observation, fed one point per call (the O(1) path: ring
  buffer, running statistics; no forecast falls due);
- ``stream_ms`` / ``batch_ms``: forecast latency of the stream (``step`` new points before each forecast: 1, or
  the patch stride for Internal's ``kv`` rows) and of ``Forecaster.forecast`` on the same window (what a system
  without streams runs), mean over ``repeats``; ``speedup`` = batch / stream; ``rel_diff``: mean |stream - batch|
  over the forecasts, in units of the series' std (0 where the stream recomputes the window). Injective runs twice:
  with the bundle's sampling (``samples`` x ``horizon`` values: generation dominates) and as ``prompt`` (1 greedy
  sample, H=1: the cost of bringing the prompt up to date, where KV reuse acts). Internal runs its ONNX variant
  (``window``: a recompute) and, on a LLaMA-family backbone, its gguf-f32 variant as ``kv`` (patch-level KV
  reuse, a forecast every stride points) and as ``window`` on the same variant;
- ``points_per_s`` at a cadence of one forecast every ``every`` points: ``every / (latency + every * update)``,
  for the stream and for the batch path (whose per-point cost is taken as the stream's, a ring append).
Peak RSS: a window stream fed ``points`` observations in chunks of 10,000 with a forecast every ``points / 200``
points, the process RSS sampled after every chunk; ``growth_mb`` = the largest sample minus the first one.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from typing import Any, Sequence

import numpy as np

LENGTHS = (96, 336, 1024)


def _series(n: int, c: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    return 20 + 5 * np.sin(2 * np.pi * t / 24 + np.arange(c)) + 2 * np.sin(2 * np.pi * t / 168) \
        + 0.5 * rng.standard_normal((n, c))


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _update_us(f, kv: bool | None, n: int = 2000) -> float:
    c = f.n_channels or 1
    s = f.stream(n_channels=c, kv=kv)
    y = _series(n + 10, c, seed=3)
    s.update(y[:10])
    t = time.perf_counter()
    for row in y[10:]:
        s.update(row)
    return (time.perf_counter() - t) / n * 1e6


def _latencies(f, repeats: int, kv: bool | None, step: int = 1) -> dict[str, Any]:
    c = f.n_channels or 1
    L = f.context_len
    y = _series(L + step * (repeats + 1), c, seed=1)
    s = f.stream(n_channels=c, kv=kv)
    s.update(y[:L])
    s.forecast()  # the first forecast anchors (KV) / warms up: untimed
    f.forecast(s.window()[None])
    ts, tb, diff = [], [], []
    for i in range(L, L + step * repeats, step):
        s.update(y[i:i + step])
        t0 = time.perf_counter()
        a = s.forecast()
        t1 = time.perf_counter()
        b = f.forecast(s.window()[None])
        ts.append(t1 - t0)
        tb.append(time.perf_counter() - t1)
        diff.append(float(np.abs(a.median - b.median).mean()))
    return {"stream_ms": 1e3 * float(np.mean(ts)), "batch_ms": 1e3 * float(np.mean(tb)),
            "stream_ms_p50": 1e3 * float(np.median(ts)), "batch_ms_p50": 1e3 * float(np.median(tb)),
            "rel_diff": float(np.mean(diff) / y.std()), "step": int(step),
            "engine": s.engine.kind, "engine_detail": s.engine.describe()}


def _row(name: str, f, repeats: int, every: int, kv: bool | None, step: int = 1, **extra) -> dict[str, Any]:
    lat = _latencies(f, repeats, kv, step)
    upd = _update_us(f, kv)
    row = {"bundle": name, "paradigm": f.paradigm, "variant": f.planned.variant, "L": f.context_len,
           "context_used": int(f.context_used), "H": f.planned.horizon, **extra, **lat, "update_us": upd,
           "speedup": lat["batch_ms"] / lat["stream_ms"]}
    per = upd * 1e-6
    row["stream_points_per_s"] = every / (lat["stream_ms"] * 1e-3 + every * per)
    row["batch_points_per_s"] = every / (lat["batch_ms"] * 1e-3 + every * per)
    return row


def bench_latency(injective: str | None, internal: Sequence[str], lengths: Sequence[int] = LENGTHS,
                  horizon: int = 24, repeats: int = 5, every: int = 24, threads: int | None = 1,
                  log=print) -> list[dict[str, Any]]:
    """Rows of update cost, forecast latency and sustained points/s (see the module docstring)."""
    import alignts.runtime as rt

    rows = []
    if injective:
        for mode in ("sampled", "prompt"):
            f = rt.load(injective)
            if mode == "prompt":
                f.set_sampling(n_samples=1, greedy=True)
            for L in lengths:
                f.plan(context_len=L, horizon=horizon if mode == "sampled" else 1, threads=threads)
                rows.append(_row(os.path.basename(str(injective).rstrip("/")), f, repeats, every, None, mode=mode,
                                 samples=f.sampling.n_samples))
                log(_line(rows[-1]))
    from alignts.runtime.stream.engines import ROTARY_ARCHS

    for b in internal:
        f = rt.load(b)
        name, arch = os.path.basename(str(b).rstrip("/")), f.manifest.architecture
        variant = next((v.name for v in f.manifest.variants if v.name == "onnx-fp32"), None)
        f.plan(variant=variant, threads=threads)
        rows.append(_row(name, f, max(repeats, 20), every, None, mode="window", architecture=arch))
        log(_line(rows[-1]))
        if arch in ROTARY_ARCHS and any(v.name == "gguf-f32" for v in f.manifest.variants):
            f.plan(variant="gguf-f32", threads=threads)
            for mode, kv in (("kv", None), ("window", False)):
                rows.append(_row(name, f, max(repeats, 20), every, kv, step=int(f.cfg.stride), mode=mode,
                                 architecture=arch))
                log(_line(rows[-1]))
    return rows


def _line(r: dict[str, Any]) -> str:
    return (f"{r['bundle']} {r['mode']} L={r['L']} ({r['context_used']} used) H={r['H']}: update "
            f"{r['update_us']:.1f} us/point, forecast stream {r['stream_ms']:.1f} ms vs batch {r['batch_ms']:.1f} "
            f"ms (x{r['speedup']:.2f}, {r['engine']}, {r['variant']}, {r['step']} points a forecast, "
            f"mean |stream - batch| {r['rel_diff']:.2g} std)")


def bench_rss(bundle: str, points: int, threads: int | None = 1, chunk: int = 10_000,
              n_forecasts: int = 200) -> dict[str, Any]:
    """Peak RSS of a stream fed ``points`` observations (see the module docstring)."""
    import alignts.runtime as rt

    f = rt.load(bundle)
    variant = next((v.name for v in f.manifest.variants if v.name == "onnx-fp32"), None)
    f.plan(variant=variant, threads=threads)
    c = f.n_channels or 1
    every = max(chunk, points // n_forecasts)
    s = f.stream(n_channels=c, forecast_every=every)
    base = _series(chunk, c, seed=7)
    gc.collect()
    samples = []
    t0 = time.perf_counter()
    done = 0
    while done < points:
        k = min(chunk, points - done)
        s.update(base[:k] + 0.001 * (done // chunk))
        done += k
        samples.append(_rss_mb())
    wall = time.perf_counter() - t0
    return {"bundle": os.path.basename(str(bundle).rstrip("/")), "points": points, "forecasts": s.n_forecasts,
            "rss_first_mb": samples[0], "rss_peak_mb": max(samples), "rss_last_mb": samples[-1],
            "growth_mb": max(samples) - samples[0], "wall_s": wall, "points_per_s": points / wall,
            "engine": s.engine.kind}


def machine() -> dict[str, Any]:
    from alignts.runtime.manifest import package_versions

    from alignts.runtime.threads import cpu_label

    return {"cpu": cpu_label(), "cores": os.cpu_count(), "python": platform.python_version(),
            "packages": package_versions(["numpy", "numba", "onnxruntime", "llama_cpp_python"])}


def run_stream_bench(injective: str | None, internal: Sequence[str], lengths: Sequence[int] = LENGTHS,
                     horizon: int = 24, repeats: int = 5, rss_points: Sequence[int] = (1_000_000, 10_000_000),
                     threads: int | None = 1, log=print) -> dict[str, Any]:
    rows = bench_latency(injective, internal, lengths, horizon, repeats, threads=threads, log=log)
    rss = []
    if internal:
        for n in rss_points:
            rss.append(bench_rss(internal[0], n, threads))
            log(f"RSS {rss[-1]['bundle']} {n} points: first {rss[-1]['rss_first_mb']:.1f} MB, peak "
                f"{rss[-1]['rss_peak_mb']:.1f} MB, growth {rss[-1]['growth_mb']:.2f} MB")
    return {"machine": machine(), "threads": threads, "horizon": horizon, "repeats": repeats, "rows": rows,
            "rss": rss}


def to_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [f"CPU: {m['cpu']} ({m['cores']} cores), threads={result['threads']}; means of {result['repeats']} "
           "forecasts (Internal: >= 20), `step` new points before each; |s - b|: mean absolute difference of the "
           "stream's forecast from the batch forecast of the same window, in series std.", "",
           "| bundle | mode | variant | L (used) | H | engine | step | update us/point | stream ms | batch ms | "
           "batch/stream | \\|s - b\\| | stream pts/s | batch pts/s |",
           "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        mode = r["mode"] + (f" ({r['samples']} samples)" if "samples" in r else "")
        out.append(f"| {r['bundle']} | {mode} | {r['variant']} | {r['L']} ({r['context_used']}) | {r['H']} | "
                   f"{r['engine']} | {r.get('step', 1)} | {r['update_us']:.1f} | {r['stream_ms']:.2f} | "
                   f"{r['batch_ms']:.2f} | {r['speedup']:.2f} | {r.get('rel_diff', float('nan')):.2g} | "
                   f"{r['stream_points_per_s']:.0f} | {r['batch_points_per_s']:.0f} |")
    if result["rss"]:
        out += ["", "| bundle | points | forecasts | RSS first MB | RSS peak MB | growth MB | points/s |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for r in result["rss"]:
            out.append(f"| {r['bundle']} | {r['points']:,} | {r['forecasts']} | {r['rss_first_mb']:.1f} | "
                       f"{r['rss_peak_mb']:.1f} | {r['growth_mb']:.2f} | {r['points_per_s']:,.0f} |")
    return "\n".join(out)
