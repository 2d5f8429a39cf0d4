"""Two builds of llama.cpp compared in step: two live processes, one a build (a folder holding its llama_cpp package,
put first on PYTHONPATH), each with the bundle loaded and warmed up; their forecasts then alternate in blocks of
CALLS calls, ROUNDS rounds, the order flipped every round. Each round gives the ratio of the two blocks' medians
(A / B, above 1: B faster); the median and quartiles of those ratios are the result, so a slow minute of this VM
weighs on both builds alike. rows_ab.py's one process a measurement cannot do that.
    python pair_ab.py BUNDLE VARIANT BATCH THREADS --a /tmp/ab/old --b /tmp/ab/new [--rounds 20 --calls 5]
    [--a-env K=V,... --b-env K=V,...]  (one build, two environments: --a and --b the same folder)
    [--b-variant V]  (B runs another variant of the bundle: e.g. gguf-f32 against onnx-fp32, one build)
(session 17: the shared token pack tried and dropped, and level 10 against 11, results/speed_llama.md section 17)"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, sys, time, numpy as np
from pathlib import Path
import alignts.runtime as rt
from alignts.runtime.forecaster import paradigm_class
bundle, variant, b, threads = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m = rt.load(bundle).manifest
fc = paradigm_class(m.paradigm)(bundle, m)
plan = fc.plan(variant=variant, batch_size=b, threads=threads)
x = np.cumsum(np.random.default_rng(0).normal(size=(b, plan.n_channels or 7, plan.context_len)), -1).astype(np.float32)
for _ in range(3):
    y = fc.forecast_scaled(x)
print(json.dumps({"y": np.asarray(y).ravel()[:4000].tolist()}), flush=True)
for line in sys.stdin:
    ts = []
    for _ in range(int(line)):
        t0 = time.perf_counter(); fc.forecast_scaled(x); ts.append(time.perf_counter() - t0)
    print(json.dumps(ts), flush=True)
"""

ap = argparse.ArgumentParser()
ap.add_argument("bundle")
ap.add_argument("variant")
ap.add_argument("batch", type=int)
ap.add_argument("threads", type=int)
ap.add_argument("--a", required=True, help="folder holding build A's llama_cpp package")
ap.add_argument("--b", dest="b_pkg", required=True, help="folder holding build B's llama_cpp package")
ap.add_argument("--a-env", default="", help="A's extra environment, K=V[,K=V...] (one build, two settings)")
ap.add_argument("--b-env", default="", help="B's extra environment")
ap.add_argument("--b-variant", default=None, help="B's variant, where it differs from A's")
ap.add_argument("--rounds", type=int, default=20)
ap.add_argument("--calls", type=int, default=5)
a = ap.parse_args()
procs, ys = {}, {}
for name, pkg, extra, variant in (("A", a.a, a.a_env, a.variant), ("B", a.b_pkg, a.b_env, a.b_variant or a.variant)):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pkg] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.update(kv.split("=", 1) for kv in extra.split(",") if kv)
    procs[name] = subprocess.Popen([sys.executable, "-c", CHILD, a.bundle, variant, str(a.batch), str(a.threads)],
                                   env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ys[name] = np.asarray(json.loads(procs[name].stdout.readline())["y"])
ms, ratios = {"A": [], "B": []}, []
for r in range(a.rounds):
    med = {}
    for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
        procs[name].stdin.write(f"{a.calls}\n")
        procs[name].stdin.flush()
        t = [1e3 * s for s in json.loads(procs[name].stdout.readline())]
        ms[name] += t
        med[name] = float(np.median(t))
    ratios.append(med["A"] / med["B"])
for p in procs.values():
    p.stdin.close()
    p.wait()
q1, q2, q3 = np.percentile(ratios, [25, 50, 75])
print(f"{os.path.basename(a.bundle.rstrip('/'))} {a.variant}{' / ' + a.b_variant if a.b_variant else ''} b={a.batch} t={a.threads}: "
      f"A p50 {np.median(ms['A']):.2f} best {min(ms['A']):.2f} ms | B p50 {np.median(ms['B']):.2f} best "
      f"{min(ms['B']):.2f} ms | A/B by round: median {q2:.3f} (quartiles {q1:.3f}-{q3:.3f}) | forecasts' max abs "
      f"diff {np.abs(ys['A'] - ys['B']).max():.1e} of {np.abs(ys['A']).max():.2f}", flush=True)
