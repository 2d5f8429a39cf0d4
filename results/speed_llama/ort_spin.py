"""Bridging onnx variants with onnxruntime's intra-op spinning on or off for every session:
python ort_spin.py VARIANT spin|nospin THREADS (patches session_options, so it also turns spinning back on where
the runtime now turns it off).
"""
import sys, time, numpy as np, alignts.runtime as rt
from alignts.runtime.backends import onnx as ox
orig = ox.session_options
mode = sys.argv[2]; th = int(sys.argv[3])
def so(*a, **k):
    k["spin"] = mode == "spin"
    return orig(*a, **k)
ox.session_options = so
f = rt.load("/tmp/speed_bundles/bridging_minilm")
for bs in (1, 8):
    f.plan(variant=sys.argv[1], batch_size=bs, threads=th)
    x = np.random.default_rng(0).standard_normal((bs, 7, 336)).cumsum(-1).astype(np.float32)
    f.forecast_scaled(x); t=[]
    for _ in range(8 if bs == 1 else 3):
        c=time.perf_counter(); f.forecast_scaled(x); t.append(time.perf_counter()-c)
    print(sys.argv[1], mode, f"b={bs} t={th} p50 {1e3*np.median(t):.1f} ms", flush=True)
