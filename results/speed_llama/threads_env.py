"""p50 ms of forecast_scaled at 1 and 2 threads: python threads_env.py BUNDLE BATCH VARIANT,... REPEATS
(run it under OMP_WAIT_POLICY=PASSIVE / ACTIVE / unset to compare).
"""
import sys, time
import numpy as np
import alignts.runtime as rt
bs = int(sys.argv[2])
for v in sys.argv[3].split(","):
  for th in (1, 2):
    f = rt.load(sys.argv[1])
    f.plan(variant=v, batch_size=bs, threads=th)
    x = np.random.default_rng(0).standard_normal((bs, 7, 336)).cumsum(-1).astype(np.float32)
    f.forecast_scaled(x); t = []
    for _ in range(int(sys.argv[4])):
        c = time.perf_counter(); f.forecast_scaled(x); t.append(time.perf_counter() - c)
    print(f"{v} b={bs} threads={th} p50 {1e3*np.median(t):.1f} ms", flush=True)
