"""b=8 cost / b=1 cost of one variant in step, one process: python batch_cost.py BUNDLE VARIANT THREADS ROUNDS
Each round times 3 calls at each batch size (the best of the 3), the order flipped every round; prints the median
and quartiles of the rounds' b8 / b1 ratios. (session 23: the 9.55x of results/speed_cpu.md's Bridging gguf-bf16 at
2 threads; batch_cost.txt)"""
import sys, time
import numpy as np
import alignts.runtime as rt
b, v, th, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fs = {}
for bs in (1, 8):
    f = rt.load(b); f.plan(variant=v, batch_size=bs, threads=th); fs[bs] = f
xs = {bs: np.random.default_rng(0).standard_normal((bs, 7, 336)).cumsum(-1).astype(np.float32) for bs in (1, 8)}
for bs in (1, 8): fs[bs].forecast_scaled(xs[bs]); fs[bs].forecast_scaled(xs[bs])
r = []
for i in range(rounds):
    t = {}
    for bs in ((1, 8) if i % 2 == 0 else (8, 1)):
        s = []
        for _ in range(3):
            c = time.perf_counter(); fs[bs].forecast_scaled(xs[bs]); s.append(time.perf_counter() - c)
        t[bs] = min(s)
    r.append(t[8] / t[1])
print(v, "threads", th, "b8/b1 median", round(float(np.median(r)), 2), "quartiles", np.round(np.percentile(r, [25, 75]), 2))
