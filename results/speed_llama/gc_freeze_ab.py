"""Forecast calls with the garbage collector as it is and with gc.freeze() (the objects alive moved to the permanent
generation), alternating phases of 15 calls, 8 rounds, one process; median p50 ms. python gc_freeze_ab.py BUNDLE gguf-bf16"""
import gc, sys, time, numpy as np
from pathlib import Path
import alignts.runtime as rt
from alignts.runtime.forecaster import paradigm_class
bundle = Path(sys.argv[1]); variant = sys.argv[2]
m = rt.load(bundle).manifest
fc = paradigm_class(m.paradigm)(bundle, m); plan = fc.plan(variant=variant, batch_size=1, threads=1)
x = np.cumsum(np.random.default_rng(0).normal(size=(1, plan.n_channels or 7, plan.context_len)), -1).astype(np.float32)
for _ in range(5): fc.forecast_scaled(x)
res = {"plain": [], "frozen": []}
for r in range(8):
    for mode in (("plain", "frozen") if r % 2 == 0 else ("frozen", "plain")):
        if mode == "frozen": gc.freeze()
        else: gc.unfreeze()
        ts = []
        for _ in range(15):
            t0 = time.perf_counter(); fc.forecast_scaled(x); ts.append(time.perf_counter() - t0)
        res[mode].append(np.median(ts) * 1e3)
print(variant, {k: "%.2f" % np.median(v) for k, v in res.items()}, "objects", len(gc.get_objects()))
