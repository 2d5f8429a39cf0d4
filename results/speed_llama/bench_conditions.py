"""Why `alignts bench speed` times Internal gguf-bf16 at batch 1 well above a loop of calls: the same forecaster
timed alone back to back ("loop"), alone with the bench's 50 ms settle before each call ("settle"), round-robin
with six other rows (gguf-f32, onnx-fp32, gguf-q8_0 at batch 1 and 8) without ("rr_nosettle") and with the settle
("rr_settle", the bench's conditions), through the bench's own _round_robin; one process. p50 ms.
    python bench_conditions.py BUNDLE [ROUNDS]        (session 18, section 18)"""

import json
import sys
import numpy as np
import alignts.runtime as rt
from alignts.bench.bundles import _round_robin
from alignts.runtime.forecaster import paradigm_class

b = sys.argv[1]
m = rt.load(b).manifest


def mk(v, bs=1):
    fc = paradigm_class(m.paradigm)(b, m)
    fc.plan(variant=v, batch_size=bs, threads=1)
    return fc


x1 = np.cumsum(np.random.default_rng(0).normal(size=(1, 7, 336)), -1).astype(np.float32)
x8 = np.cumsum(np.random.default_rng(0).normal(size=(8, 7, 336)), -1).astype(np.float32)
me = mk("gguf-bf16")
others = [(mk(v, bs), x) for v in ("gguf-f32", "onnx-fp32", "gguf-q8_0") for bs, x in ((1, x1), (8, x8))]
call = lambda: me.forecast_scaled(x1)
ocalls = [(lambda f=f, x=x: f.forecast_scaled(x)) for f, x in others]
res = {"loop": [], "settle": [], "rr_nosettle": [], "rr_settle": []}
for r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 4):
    res["loop"] += list(_round_robin([call], 10, 1, 0.0)[0])
    res["settle"] += list(_round_robin([call], 10, 1, 0.05)[0])
    res["rr_nosettle"] += list(_round_robin([call] + ocalls, 5, 1, 0.0)[0])
    res["rr_settle"] += list(_round_robin([call] + ocalls, 5, 1, 0.05)[0])
print(json.dumps({k: round(1e3 * float(np.median(v)), 2) for k, v in res.items()}))
