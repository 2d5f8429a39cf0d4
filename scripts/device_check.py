"""Verify the CUDA paths on a GPU machine in one go: onnxruntime-gpu's CUDA provider, llama.cpp offload,
each against the CPU run of the same bundle variant on the same inputs, with timings.

    python scripts/device_check.py BUNDLE... --out DIR [--repeats 20] [--backend onnx|gguf]

For every bundle and variant: forecast the same seeded inputs on ``cpu`` and on ``cuda`` (batch 1 and 32),
record the provider the runtime reports, max abs diff cuda vs cpu, and p50 latency of each. Injective runs
greedy (one sample), so CPU and CUDA should pick the same tokens; the share of identical forecasts is
recorded. Writes ``DIR/device_check.json`` and ``DIR/device_check.md``; exits 1 when a CUDA run fails or
falls back to the CPU, or when a difference exceeds its tolerance.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

# cuda vs cpu, on the forecast in the data's units: kernels differ (TF32 off by default in onnxruntime,
# cuBLAS vs MLAS summation order), so a float32 model agrees to ~1e-5 relative, not bit for bit.
TOL = {"onnx": 1e-3, "gguf": 5e-3}


def _gpu() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:  # noqa: BLE001 - report, do not fail
        return f"nvidia-smi failed: {e}"


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("numpy", "numba", "onnxruntime", "llama_cpp"):
        try:
            out[name] = __import__(name).__version__
        except Exception as e:  # noqa: BLE001
            out[name] = f"not importable ({e})"
    try:
        from alignts.runtime.backends.gguf import llama_patch_level

        out["alignts_llama_patch_level"] = llama_patch_level()
    except Exception as e:  # noqa: BLE001
        out["alignts_llama_patch_level"] = f"unknown ({e})"
    try:
        import onnxruntime as ort

        out["onnxruntime_providers"] = ort.get_available_providers()
    except Exception:  # noqa: BLE001
        pass
    return out


def _p50(fn, repeats: int) -> float:
    fn()  # warm-up (CUDA graph capture, cuBLAS handles, first allocations)
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def check_variant(bundle: Path, variant, manifest, repeats: int) -> list[dict]:
    from alignts.runtime import load

    rows = []
    c = int(manifest.config.get("n_channels") or 1)
    for batch in (1, 32):
        row = {"bundle": bundle.name, "paradigm": manifest.paradigm, "variant": variant.name, "batch": batch}
        try:
            f_cpu, f_gpu = load(bundle), load(bundle)
            if manifest.paradigm == "injective":
                for f in (f_cpu, f_gpu):
                    f.set_sampling(greedy=True, n_samples=1)
            pc = f_cpu.plan(variant=variant.name, device="cpu", batch_size=batch)
            pg = f_gpu.plan(variant=variant.name, device="cuda", batch_size=batch)
            row["provider_cpu"], row["provider_cuda"] = pc.provider, pg.provider
            L = pc.context_len
            rng = np.random.default_rng(batch)
            t = np.arange(L, dtype=np.float32)
            x = (np.sin(2 * np.pi * t / 24)[None, None, :] * rng.uniform(0.5, 2, (batch, c, 1))
                 + rng.normal(0, 0.1, (batch, c, L))).astype(np.float32)
            y_cpu, y_gpu = f_cpu.forecast_scaled(x), f_gpu.forecast_scaled(x)
            row["max_abs_diff"] = float(np.abs(y_cpu - y_gpu).max())
            row["scale"] = float(np.abs(y_cpu).max())
            if manifest.paradigm == "injective":
                same = np.all(np.isclose(y_cpu, y_gpu, rtol=0, atol=1e-6), axis=-1)
                row["identical_share"] = float(same.mean())
                row["ok"] = row["identical_share"] >= 0.9 and "cuda" in pg.provider.lower()
            else:
                row["ok"] = (row["max_abs_diff"] <= TOL[variant.backend] * max(1.0, row["scale"])
                             and ("CUDA" in pg.provider or "cuda" in pg.provider))
            reps = max(3, repeats // (4 if manifest.paradigm == "injective" else 1))
            row["cpu_p50_ms"] = _p50(lambda: f_cpu.forecast_scaled(x), reps)
            row["cuda_p50_ms"] = _p50(lambda: f_gpu.forecast_scaled(x), reps)
            row["speedup"] = row["cpu_p50_ms"] / row["cuda_p50_ms"]
        except Exception as e:  # noqa: BLE001 - one failing variant must not hide the others
            row["ok"] = False
            row["error"] = f"{type(e).__name__}: {e}"
            row["traceback"] = traceback.format_exc(limit=6)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
    return rows


def to_markdown(result: dict) -> str:
    lines = [f"GPU: {result['gpu']}", "", "versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
             "", "| bundle | variant | batch | provider (cuda run) | max abs diff vs cpu | identical | cpu p50 ms "
             "| cuda p50 ms | speedup | ok |", "|---|---|--:|---|--:|--:|--:|--:|--:|---|"]
    for r in result["rows"]:
        f = (lambda k, fmt: "" if r.get(k) is None else format(r[k], fmt))
        lines.append(f"| {r['bundle']} | {r['variant']} | {r['batch']} | {r.get('provider_cuda', r.get('error', ''))} "
                     f"| {f('max_abs_diff', '.2e')} | {f('identical_share', '.2f')} | {f('cpu_p50_ms', '.2f')} "
                     f"| {f('cuda_p50_ms', '.2f')} | {f('speedup', '.1f')} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--backend", choices=("onnx", "gguf"), help="only the variants of this backend (gguf: no "
                    "onnxruntime-gpu needed, except for Bridging's adapter)")
    args = ap.parse_args(argv)
    from alignts.runtime.manifest import read_manifest

    result = {"gpu": _gpu(), "versions": _versions(), "rows": []}
    print(json.dumps({k: result[k] for k in ("gpu", "versions")}), flush=True)
    for b in map(Path, args.bundles):
        m = read_manifest(b)
        for v in m.variants:
            if args.backend and v.backend != args.backend:
                continue
            result["rows"].extend(check_variant(b, v, m, args.repeats))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_check.json").write_text(json.dumps(result, indent=1))
    (out / "device_check.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0 if all(r["ok"] for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
