"""Two ONNX files (or one file twice) in step, each with its own onnxruntime optimizers disabled: one process, both
sessions alive, their calls alternating in blocks of 3 (best of the 3), the order flipped every round; prints the
median and quartiles of the rounds' A / B ratios (above 1: B faster) and the two outputs' max abs diff.
    python ort_graph_ab.py A.onnx DISABLED_A B.onnx DISABLED_B SHAPE THREADS [ROUNDS]
DISABLED_*: onnxruntime optimizer names joined by ';' ('-': none); SHAPE: the one input's shape, e.g. 7,22,16.
(session 19: SkipLayerNormFusion left out on the CPU and the exact GELU as one node, results/speed_llama.md
section 19)"""
import sys
import time

import numpy as np
import onnxruntime as ort

pa, da, pb, db = sys.argv[1:5]
shape, threads = [int(s) for s in sys.argv[5].split(",")], int(sys.argv[6])
rounds = int(sys.argv[7]) if len(sys.argv) > 7 else 12


def session(path, disabled):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if disabled != "-":
        so.add_session_config_entry("optimization.disable_specified_optimizers", disabled)
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


a, b = session(pa, da), session(pb, db)
name = a.get_inputs()[0].name
x = {name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
diff = float(np.abs(a.run(None, x)[0] - b.run(None, x)[0]).max())
ratios = []
for r in range(rounds):
    best = {}
    for s, key in ((a, "a"), (b, "b")) if r % 2 == 0 else ((b, "b"), (a, "a")):
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            s.run(None, x)
            ts.append(time.perf_counter() - t0)
        best[key] = min(ts)
    ratios.append(best["a"] / best["b"])
q = np.percentile(ratios, [25, 50, 75])
print(f"shape {sys.argv[5]}, {threads}t: A/B {q[1]:.3f} ({q[0]:.3f}-{q[2]:.3f}), max abs diff {diff:.2e}", flush=True)
