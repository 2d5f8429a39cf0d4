"""The gguf-bf16 variant of a bundle with ggml's bf16 products on AMX tiles and without (ALIGNTS_AMX=0: the vdpbf16ps
tiles), one process each (the tile permission is asked once a process), the two alternating, ROUNDS rounds; p50 ms of
one forecast call (batch x 7 series) over CALLS calls after 3 warm-up calls, per batch size and thread count.
python amx_ab.py BUNDLE [BUNDLE ...] --rounds 3 --calls 30 --out amx_ab.json   (session 15: the two bundles of
results/speed_cpu_xeon.md)"""
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
from alignts.runtime.forecaster import paradigm_class
bundle, b, threads, calls = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = rt.load(bundle).manifest
fc = paradigm_class(m.paradigm)(bundle, m)
plan = fc.plan(variant="gguf-bf16", batch_size=b, threads=threads)
x = np.cumsum(np.random.default_rng(0).normal(size=(b, plan.n_channels or 7, plan.context_len)), -1).astype(np.float32)
for _ in range(3):
    y = fc.forecast_scaled(x)
ts = []
for _ in range(calls):
    t0 = time.perf_counter(); fc.forecast_scaled(x); ts.append(time.perf_counter() - t0)
print(json.dumps({"p50_ms": 1e3 * float(np.median(ts)), "y": np.asarray(y).ravel()[:2000].tolist()}))
"""

ap = argparse.ArgumentParser()
ap.add_argument("bundles", nargs="+")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--calls", type=int, default=30)
ap.add_argument("--out", default="amx_ab.json")
a = ap.parse_args()
rows = []
for bundle in a.bundles:
    for threads in (1, 2):
        for b in (1, 8):
            p50 = {"1": [], "0": []}
            ys = {}
            for r in range(a.rounds):
                for amx in (("1", "0") if r % 2 == 0 else ("0", "1")):
                    out = subprocess.run([sys.executable, "-c", CHILD, bundle, str(b), str(threads), str(a.calls)],
                                         env=dict(os.environ, ALIGNTS_AMX=amx), capture_output=True, text=True,
                                         check=True)
                    res = json.loads(out.stdout.strip().splitlines()[-1])
                    p50[amx].append(res["p50_ms"])
                    ys[amx] = np.asarray(res["y"])
            row = {"bundle": os.path.basename(bundle.rstrip("/")), "batch": b, "threads": threads,
                   "amx_p50_ms": float(np.median(p50["1"])), "vdpbf16ps_p50_ms": float(np.median(p50["0"])),
                   "runs": p50, "max_abs_diff": float(np.abs(ys["1"] - ys["0"]).max()),
                   "scale": float(np.abs(ys["0"]).max())}
            row["speedup"] = row["vdpbf16ps_p50_ms"] / row["amx_p50_ms"]
            rows.append(row)
            print(f"| {row['bundle']} | {b} | {threads} | {row['vdpbf16ps_p50_ms']:.1f} | {row['amx_p50_ms']:.1f} | "
                  f"{row['speedup']:.2f}x | {row['max_abs_diff']:.1e} of {row['scale']:.2f} |", flush=True)
with open(a.out, "w") as fh:
    json.dump(rows, fh, indent=1)
