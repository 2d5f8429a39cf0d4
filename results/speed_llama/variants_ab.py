"""Two variants of one bundle in step, one process: python variants_ab.py BUNDLE VA VB BATCH THREADS ROUNDS
Each round times 3 calls of each (the best of the 3), the order flipped every round; prints the medians and the
median (quartiles) of the rounds' VA / VB ratios. Unlike `alignts bench` there is no settle before a call.
(session 21: gguf-f32 against onnx-fp32 at 2 threads, levels 13 and 14; variants_ab.txt)"""
import sys, time
import numpy as np
import alignts.runtime as rt
b, va, vb, bs, th, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
fa = rt.load(b); fa.plan(variant=va, batch_size=bs, threads=th)
fb = rt.load(b); fb.plan(variant=vb, batch_size=bs, threads=th)
x = np.random.default_rng(0).standard_normal((bs, 7, 336)).cumsum(-1).astype(np.float32)
for f in (fa, fb): f.forecast_scaled(x); f.forecast_scaled(x)
ta, tb, r = [], [], []
for i in range(rounds):
    order = (fa, fb) if i % 2 == 0 else (fb, fa)
    t = {}
    for f in order:
        s = []
        for _ in range(3):
            c = time.perf_counter(); f.forecast_scaled(x); s.append(time.perf_counter() - c)
        t[id(f)] = min(s)
    ta.append(t[id(fa)]); tb.append(t[id(fb)]); r.append(t[id(fa)] / t[id(fb)])
q = np.percentile(r, [25, 50, 75])
print(f"{b.split('/')[-1]} b={bs} t={th}: {va} {1e3*np.median(ta):.1f} ms, {vb} {1e3*np.median(tb):.1f} ms, {va}/{vb} {q[1]:.3f} ({q[0]:.3f}-{q[2]:.3f})")
