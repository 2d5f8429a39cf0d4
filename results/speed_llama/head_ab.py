"""The numpy head with the weight as [H, N*d] (before) and as the transpose of a contiguous [N*d, H] (head_layout),
two forecasters of one bundle in one process, calls alternating; p50 ms. python head_ab.py BUNDLE gguf-bf16 1"""
import sys, time, numpy as np
from pathlib import Path
import alignts.runtime as rt
from alignts.runtime.forecaster import paradigm_class
bundle = Path(sys.argv[1]); variant = sys.argv[2]; b = int(sys.argv[3])
m = rt.load(bundle).manifest
fcs = []
for layout in ("new", "old"):
    fc = paradigm_class(m.paradigm)(bundle, m); plan = fc.plan(variant=variant, batch_size=b, threads=1)
    if layout == "old":
        fc._head_w = np.ascontiguousarray(fc._head_w)
    fcs.append(fc)
C = plan.n_channels or 7
x = np.cumsum(np.random.default_rng(0).normal(size=(b, C, plan.context_len)), -1).astype(np.float32)
ys = [fc.forecast_scaled(x) for fc in fcs]
print("max diff new vs old", float(np.abs(ys[0] - ys[1]).max()), "flags", fcs[0]._head_w.T.flags["C_CONTIGUOUS"], fcs[1]._head_w.T.flags["C_CONTIGUOUS"])
ts = [[], []]
for _ in range(80):
    for i, fc in enumerate(fcs):
        t0 = time.perf_counter(); fc.forecast_scaled(x); ts[i].append(time.perf_counter() - t0)
print(variant, b, "new p50 %.2f ms, old p50 %.2f ms" % (1e3 * np.median(ts[0]), 1e3 * np.median(ts[1])))
