"""ONNX files of the same shapes timed in step: one onnxruntime session each (intra-op threads T, CPU options of
the runtime: SkipLayerNormFusion off, spinning on), their calls alternating in one process, ROUNDS rounds of one
call each (order rotated every round, 50 ms idle before each call); p50 ms and the median per-round ratio
first/this (> 1: this one faster).
    python onnx_models_ab.py SHAPE T ROUNDS FIRST.onnx OTHER.onnx ...
SHAPE: the input's shape, e.g. 7,22,16 (Internal batch 1). (session 22, results/speed_llama.md section 22)"""
import sys
import time

import numpy as np
import onnxruntime as ort

from alignts.runtime.backends.onnx import session_options

shape, threads, rounds = [int(s) for s in sys.argv[1].split(",")], int(sys.argv[2]), int(sys.argv[3])
paths = sys.argv[4:]


def session(path):  # the runtime's own CPU options
    so = session_options(ort, threads, device="cpu")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


sessions = [session(p) for p in paths]
x = {sessions[0].get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
times = [[] for _ in sessions]
for r in range(rounds):
    for i in [(r + j) % len(sessions) for j in range(len(sessions))]:
        time.sleep(0.05)
        t0 = time.perf_counter()
        sessions[i].run(None, x)
        times[i].append(time.perf_counter() - t0)
times = np.array(times)[:, 3:]
print(f"{sys.argv[1]} t={threads}: " + "  ".join(
    f"{p.split('/')[-1]} {np.median(t) * 1e3:.2f} ms ({np.median(times[0] / t):.3f})" for p, t in zip(paths, times)),
    flush=True)
