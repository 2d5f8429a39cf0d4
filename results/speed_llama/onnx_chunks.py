"""Internal's ONNX model at batch 8 (56 series of 22 patches): one onnxruntime run against runs of 28, 14 and 7
series, calls alternating in rounds (order flipped every round), 1 and 2 threads; p50 ms of the whole batch.
    python onnx_chunks.py BUNDLE onnx-fp32,onnx-int8      (session 18: onnx_chunks.txt; budget.ONNX_RUN_TOKENS)"""

import sys, time, json, numpy as np
import alignts.runtime as rt
from alignts.runtime.forecaster import paradigm_class

b = sys.argv[1]
m = rt.load(b).manifest
for v in sys.argv[2].split(","):
    for t in (1, 2):
        f = paradigm_class(m.paradigm)(b, m)
        f.plan(variant=v, batch_size=8, threads=t)
        x = np.cumsum(np.random.default_rng(0).normal(size=(56, 22, 16)), -1).astype(np.float32)
        run = lambda p: f._session.run({f._in: p})[0]
        opts = {c: (lambda c=c: [run(x[i : i + c]) for i in range(0, 56, c)]) for c in (56, 28, 14, 7)}
        ts = {c: [] for c in opts}
        for _ in range(3):
            for fn in opts.values():
                fn()
        for r in range(25):
            for c, fn in list(opts.items()) if r % 2 == 0 else list(opts.items())[::-1]:
                s = time.perf_counter()
                fn()
                ts[c].append(time.perf_counter() - s)
        print(
            json.dumps(
                {"variant": v, "threads": t, **{f"{c} series a call": round(1e3 * np.median(ts[c]), 1) for c in ts}}
            ),
            flush=True,
        )
