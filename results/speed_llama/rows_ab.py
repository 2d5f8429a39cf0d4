"""Two builds of llama.cpp on the same bundles: the llama_cpp package installed now ("new") against an older one kept
in a folder ("old", put first on PYTHONPATH), one process a measurement, the two alternating, ROUNDS rounds; p50 ms
of one forecast call (batch x 7 series) over CALLS calls after 3 warm-up calls, per variant, batch size and thread
count, and the largest difference of the two builds' forecasts.
    cp -r $VENV/lib/python3.11/site-packages/llama_cpp /tmp/ab/old/     (before installing the new wheel)
    python rows_ab.py BUNDLE [BUNDLE ...] --old /tmp/ab/old --variants gguf-bf16,gguf-f32 --rounds 3 --calls 30
(session 16: patch level 10 against 11, the bundles of results/speed_cpu_xeon.md). One process a measurement: on a
VM whose speed moves minute by minute, pair_ab.py (both builds alive, calls alternating) is the fairer comparison."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

CHILD = """
import json, sys, time, numpy as np
from pathlib import Path
import alignts.runtime as rt
from alignts.runtime.backends.gguf import llama_patch_level
from alignts.runtime.forecaster import paradigm_class
bundle, variant, b, threads, calls = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
m = rt.load(bundle).manifest
fc = paradigm_class(m.paradigm)(bundle, m)
plan = fc.plan(variant=variant, batch_size=b, threads=threads)
x = np.cumsum(np.random.default_rng(0).normal(size=(b, plan.n_channels or 7, plan.context_len)), -1).astype(np.float32)
for _ in range(3):
    y = fc.forecast_scaled(x)
ts = []
for _ in range(calls):
    t0 = time.perf_counter(); fc.forecast_scaled(x); ts.append(time.perf_counter() - t0)
print(json.dumps({"p50_ms": 1e3 * float(np.median(ts)), "level": llama_patch_level(),
                  "y": np.asarray(y).ravel()[:2000].tolist()}))
"""

ap = argparse.ArgumentParser()
ap.add_argument("bundles", nargs="+")
ap.add_argument("--old", required=True, help="a folder holding the old llama_cpp package")
ap.add_argument("--variants", default="gguf-bf16")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--calls", type=int, default=30)
ap.add_argument("--threads", default="1,2")
ap.add_argument("--batches", default="1,8")
ap.add_argument("--out", default="rows_ab.json")
a = ap.parse_args()
envs = {"new": dict(os.environ),
        "old": dict(os.environ, PYTHONPATH=os.pathsep.join([a.old] + [p for p in [os.environ.get("PYTHONPATH")] if p]))}
rows = []
print("| bundle | variant | batch | threads | old ms | new ms | old / new | max abs diff |")
print("|---|---|---|---|---|---|---|---|")
for bundle in a.bundles:
    for variant in a.variants.split(","):
        for threads in map(int, a.threads.split(",")):
            for b in map(int, a.batches.split(",")):
                p50, ys, levels = {"old": [], "new": []}, {}, {}
                for r in range(a.rounds):
                    for build in (("old", "new") if r % 2 == 0 else ("new", "old")):
                        out = subprocess.run([sys.executable, "-c", CHILD, bundle, variant, str(b), str(threads),
                                              str(a.calls)], env=envs[build], capture_output=True, text=True,
                                             check=True)
                        res = json.loads(out.stdout.strip().splitlines()[-1])
                        p50[build].append(res["p50_ms"])
                        ys[build], levels[build] = np.asarray(res["y"]), res["level"]
                row = {"bundle": os.path.basename(bundle.rstrip("/")), "variant": variant, "batch": b,
                       "threads": threads, "old_p50_ms": float(np.median(p50["old"])),
                       "new_p50_ms": float(np.median(p50["new"])), "runs": p50, "levels": levels,
                       "max_abs_diff": float(np.abs(ys["new"] - ys["old"]).max()),
                       "scale": float(np.abs(ys["old"]).max())}
                row["speedup"] = row["old_p50_ms"] / row["new_p50_ms"]
                rows.append(row)
                print(f"| {row['bundle']} | {variant} | {b} | {threads} | {row['old_p50_ms']:.1f} | "
                      f"{row['new_p50_ms']:.1f} | {row['speedup']:.2f}x | {row['max_abs_diff']:.1e} of "
                      f"{row['scale']:.2f} |", flush=True)
with open(a.out, "w") as fh:
    json.dump(rows, fh, indent=1)
