"""Bridging: batch 8 vs batch 1 cost with the ONNX backbone run whole (PER=0) or in runs of PER series:
python onnx_runs.py VARIANT THREADS PER (PER=0 runs the runtime as it is).
"""
import sys, time, numpy as np, alignts.runtime as rt
from alignts.runtime import backbone_store as bs_
th = int(sys.argv[2]); per = int(sys.argv[3])
orig = bs_.LoadedBackbone.hidden
def hidden(self, e):
    if per <= 0 or self._session is None: return orig(self, e)
    return np.concatenate([orig(self, e[i:i+per]) for i in range(0, e.shape[0], per)])
bs_.LoadedBackbone.hidden = hidden
f = rt.load("/tmp/speed_bundles/bridging_minilm")
res = {}
for bs in (1, 8):
    f.plan(variant=sys.argv[1], batch_size=bs, threads=th)
    x = np.random.default_rng(0).standard_normal((bs, 7, 336)).cumsum(-1).astype(np.float32)
    f.forecast_scaled(x); t=[]
    for _ in range(8 if bs == 1 else 4):
        c=time.perf_counter(); f.forecast_scaled(x); t.append(time.perf_counter()-c)
    res[bs] = np.median(t)
print(sys.argv[1], f"t={th} per={per} b1 {1e3*res[1]:.1f} b8 {1e3*res[8]:.1f} ratio {res[8]/res[1]:.2f}", flush=True)
