"""Two bundles of the same shapes (Bridging: the adapter exported before / after), the same variant, batch and
threads: their forecasters' calls alternate in one process, ROUNDS rounds of one call each (order flipped every
round), and the median of the per-round time ratios A / B. p50 ms each.
    python bundle_ab.py BUNDLE_A BUNDLE_B --variants gguf-bf16,onnx-fp32 --rounds 40"""

import argparse, json, time
import numpy as np
import alignts.runtime as rt
from alignts.runtime.forecaster import paradigm_class

ap = argparse.ArgumentParser()
ap.add_argument("a")
ap.add_argument("b")
ap.add_argument("--variants", default="gguf-bf16,onnx-fp32")
ap.add_argument("--rounds", type=int, default=40)
ap.add_argument("--settle", type=float, default=0.0)
args = ap.parse_args()
out = []
for v in args.variants.split(","):
    for t in (1, 2):
        for bs in (1, 8):
            x = np.cumsum(np.random.default_rng(bs).normal(size=(bs, 7, 336)), -1).astype(np.float32)
            fs = []
            for path in (args.a, args.b):
                m = rt.load(path).manifest
                f = paradigm_class(m.paradigm)(path, m)
                f.plan(variant=v, batch_size=bs, threads=t)
                fs.append(f)
            for _ in range(3):
                for f in fs:
                    f.forecast_scaled(x)
            ts = [[], []]
            for r in range(args.rounds):
                for i in (0, 1) if r % 2 == 0 else (1, 0):
                    if args.settle:
                        time.sleep(args.settle)
                    c = time.perf_counter()
                    fs[i].forecast_scaled(x)
                    ts[i].append(time.perf_counter() - c)
            ratio = np.array(ts[0]) / np.array(ts[1])
            row = {
                "variant": v,
                "threads": t,
                "batch": bs,
                "a_ms": round(1e3 * np.median(ts[0]), 2),
                "b_ms": round(1e3 * np.median(ts[1]), 2),
                "a/b": round(float(np.median(ratio)), 3),
                "a/b q25-q75": [round(float(q), 3) for q in np.quantile(ratio, [0.25, 0.75])],
            }
            print(json.dumps(row), flush=True)
            del fs
