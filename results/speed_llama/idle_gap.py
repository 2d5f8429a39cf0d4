"""What an idle gap before a call costs: one forecaster (VARIANT, batch 1), phases of CALLS calls, alternating, ROUNDS
rounds, in one process: "warm" (calls back to back), "idle" (time.sleep(GAP) before each, as `alignts bench`'s
settle), "evict" (no sleep, but 64 MiB written before each call: the caches cold, the core busy). p50 ms a call.
    python idle_gap.py BUNDLE --variant gguf-bf16 --threads 1 --gap 0.05 --rounds 4 --calls 15 [--no-mmap]
(session 16: why `bench speed` timed Internal gguf-bf16 at b=1 at ~19 ms where a loop of calls takes ~11-14)"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import alignts.runtime as rt
from alignts.runtime.forecaster import paradigm_class

ap = argparse.ArgumentParser()
ap.add_argument("bundle")
ap.add_argument("--variant", default="gguf-bf16")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--gap", type=float, default=0.05)
ap.add_argument("--rounds", type=int, default=4)
ap.add_argument("--calls", type=int, default=15)
ap.add_argument("--no-mmap", action="store_true", help="llama.cpp reads the GGUF into memory (use_mmap=False)")
a = ap.parse_args()

bundle = Path(a.bundle)
m = rt.load(bundle).manifest
fc = paradigm_class(m.paradigm)(bundle, m)
plan = fc.plan(variant=a.variant, batch_size=1, threads=a.threads,
               settings={"use_mmap": False} if a.no_mmap else None)
x = np.cumsum(np.random.default_rng(0).normal(size=(1, plan.n_channels or 7, plan.context_len)), -1).astype(np.float32)
junk = np.zeros(64 << 18, dtype=np.float32)  # 64 MiB
for _ in range(5):
    fc.forecast_scaled(x)


def before(phase):
    if phase == "idle":
        time.sleep(a.gap)
    elif phase == "evict":
        junk[:] += 1.0


times = {"warm": [], "idle": [], "evict": []}
for r in range(a.rounds):
    for phase in (("warm", "idle", "evict") if r % 2 == 0 else ("evict", "idle", "warm")):
        for _ in range(a.calls):
            before(phase)
            t0 = time.perf_counter()
            fc.forecast_scaled(x)
            times[phase].append(1e3 * (time.perf_counter() - t0))
res = {k: float(np.median(v)) for k, v in times.items()}
print(json.dumps({"variant": a.variant, "threads": a.threads, "mmap": not a.no_mmap, "gap_s": a.gap, "p50_ms": res}))
