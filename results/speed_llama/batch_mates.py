"""Does a window's forecast depend on the other windows in the call? Forecast window 0 alone (b=1) and inside a
batch of 8 different windows (random walks); max abs diff of window 0's forecast (scaled units), every variant of
the bundle, 1 thread.   python batch_mates.py BUNDLE   (session 21; batch_mates.txt)"""
import sys
import numpy as np
import alignts.runtime as rt
b = sys.argv[1]
rng = np.random.default_rng(0)
x8 = rng.standard_normal((8, 7, 336)).cumsum(-1).astype(np.float32)
f = rt.load(b)
for v in [v.name for v in f.manifest.variants]:
    try:
        f.plan(variant=v, batch_size=8, threads=1)
    except Exception as e:
        print(v, "skip", e); continue
    y1 = f.forecast_scaled(x8[:1]); y8 = f.forecast_scaled(x8)[:1]
    print(f"{v}: window 0 alone vs in a batch of 8: max abs diff {float(np.abs(y1 - y8).max()):.3g} (forecast max {float(np.abs(y1).max()):.3g})")
