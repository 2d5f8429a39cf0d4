"""Python runtime, one process per (bundle, variant): plan at 1 thread, median of 15 forecasts of one 7-channel
window, peak RSS of the process: python stub_vocab.py BUNDLE VARIANT."""
import resource, sys, time, numpy as np, alignts.runtime as rt
f = rt.load(sys.argv[1])
f.plan(variant=sys.argv[2], batch_size=1, threads=1)
x = np.random.default_rng(0).standard_normal((1, 7, 336)).cumsum(-1).astype(np.float32)
f.forecast_scaled(x); t = []
for _ in range(15):
    c = time.perf_counter(); f.forecast_scaled(x); t.append(time.perf_counter() - c)
print(sys.argv[2], sys.argv[1], f"{1e3 * np.median(t):.1f} ms, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
      flush=True)
