"""A loop of forecasts to profile: perf record -e cpu-clock -g python perf_forecast.py BUNDLE BATCH VARIANT N [THREADS]
"""
import sys, time
import numpy as np
import alignts.runtime as rt
f = rt.load(sys.argv[1]); bs = int(sys.argv[2]); n = int(sys.argv[4])
f.plan(variant=sys.argv[3], batch_size=bs, threads=int(sys.argv[5]) if len(sys.argv) > 5 else 1)
x = np.random.default_rng(0).standard_normal((bs, 7, 336)).cumsum(-1).astype(np.float32)
f.forecast_scaled(x)
t = []
for _ in range(n):
    c = time.perf_counter(); f.forecast_scaled(x); t.append(time.perf_counter() - c)
print(sys.argv[3], "p50 ms", 1e3*np.median(t), "settings", f._opened_settings())
