"""Where an ONNX model's time goes in onnxruntime: its per-operator kernel times (the session profiler), summed by
operator type over RUNS calls after 5 warm-up calls, on THREADS intra-op threads (default 1), spinning off
unless SPIN is 1.
    python ort_ops.py MODEL.onnx SHAPE [DISABLED] [RUNS] [THREADS] [SPIN]
SHAPE: the one input's shape, e.g. 7,22,16; DISABLED: onnxruntime optimizer names joined by ';' ('-': none).
(session 19, results/speed_llama.md section 19; THREADS and SPIN: session 22, section 22)"""
import collections
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

path, shape = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
disabled = sys.argv[3] if len(sys.argv) > 3 else "-"
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 30
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
spin = sys.argv[6] if len(sys.argv) > 6 else "0"
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.enable_profiling = True
so.profile_file_prefix = os.path.join(os.environ.get("TMPDIR", "/tmp"), "ort_ops_profile")  # not in the cwd
so.log_severity_level = 3
so.add_session_config_entry("session.intra_op.allow_spinning", spin)
if disabled != "-":
    so.add_session_config_entry("optimization.disable_specified_optimizers", disabled)
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
x = {s.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
for _ in range(5):
    s.run(None, x)
t0 = time.perf_counter()
for _ in range(runs):
    s.run(None, x)
wall = (time.perf_counter() - t0) / runs
total, count = collections.Counter(), collections.Counter()
profile = s.end_profiling()
with open(profile) as f:
    events = json.load(f)
os.remove(profile)
for e in events:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        total[e["args"]["op_name"]] += e["dur"]
        count[e["args"]["op_name"]] += 1
calls = runs + 5
kernel = sum(total.values()) / calls / 1e3
print(f"{path} {sys.argv[2]} disabled={disabled} threads={threads} spin={spin}: {wall * 1e3:.2f} ms a call (profiling on), kernels {kernel:.2f} ms")
for op, us in total.most_common(12):
    print(f"  {op:26s} {us / calls / 1e3:7.3f} ms  {100 * us / sum(total.values()):5.1f} %  x{count[op] // calls}")
