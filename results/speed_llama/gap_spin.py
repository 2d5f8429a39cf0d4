"""What the bench's 50 ms settle costs a forecast, taken apart: before each timed call of one forecaster
(Internal MiniLM, VARIANT, batch 1, 1 thread), one of: nothing, a 50 ms sleep, a 50 ms busy-wait (a Python loop on
perf_counter, touching almost no memory), the sleep then 2 / 10 ms of busy-wait, or 64 MiB written; modes
round-robin, 40 rounds, p50 ms. gap_spin.txt holds its runs.
    python gap_spin.py BUNDLE VARIANT          (session 20, results/speed_llama.md section 20)"""
import sys
import time

import numpy as np

import alignts.runtime as rt

b, var = sys.argv[1], sys.argv[2]
f = rt.load(b)
f.plan(variant=var, batch_size=1, threads=1)
x = np.random.default_rng(0).standard_normal((1, 7, 336)).cumsum(-1).astype(np.float32)


def spin(s):
    t = time.perf_counter() + s
    while time.perf_counter() < t:
        pass


junk = np.zeros(64 << 20, np.uint8)
modes = {"none": lambda: None, "sleep50": lambda: time.sleep(0.05), "spin50": lambda: spin(0.05),
         "sleep50+spin2": lambda: (time.sleep(0.05), spin(0.002)), "sleep50+spin10": lambda: (time.sleep(0.05), spin(0.010)),
         "write64M": lambda: junk.fill(1)}
for _ in range(3):
    f.forecast_scaled(x)
ts = {k: [] for k in modes}
for r in range(40):
    for k, m in modes.items():
        m()
        t0 = time.perf_counter()
        f.forecast_scaled(x)
        ts[k].append(time.perf_counter() - t0)
print(var, ", ".join(f"{k} {np.median(v)*1e3:.2f}" for k, v in ts.items()))
