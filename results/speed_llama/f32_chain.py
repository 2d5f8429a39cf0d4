"""MiniLM's f32 weight products (6 layers x q, k, v, o, up, down, each layer its own random weights, 154 tokens =
7 series x 22 patches) in three implementations, one process, calls round-robin: onnxruntime's MatMul (MLAS, the
weights prepacked at load), and alignts_f32::gemm_rows (the packed f32 tile inside alignts' llama.cpp) built from
an old revision's header and from the working tree's. p50 ms of the whole chain, GFLOP/s, and the ratios in step.
    python f32_chain.py [--old-rev REV] [--march sapphirerapids] [--tokens 154] [--rounds 30] [--mode all|att|ffn|small]
(session 20, results/speed_llama.md section 20; f32_chain.txt holds its runs; session 23: the pack sized for tiles of up
to 64 tokens, section 23)"""
import argparse
import ctypes
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
ap = argparse.ArgumentParser()
ap.add_argument("--old-rev", default="HEAD")
ap.add_argument("--march", default="native")
ap.add_argument("--tokens", type=int, default=154)
ap.add_argument("--rounds", type=int, default=30)
ap.add_argument("--mode", default="all")
a = ap.parse_args()

tmp = Path(tempfile.mkdtemp())
old_dir = tmp / "old"
old_dir.mkdir()
header = subprocess.run(["git", "-C", str(ROOT), "show", f"{a.old_rev}:native/ggml/alignts_sgemm_f32.h"],
                        check=True, capture_output=True).stdout
(old_dir / "alignts_sgemm_f32.h").write_bytes(header)
libs = {}
for name, inc in (("old", old_dir), ("new", ROOT / "native" / "ggml")):
    so = tmp / f"{name}.so"
    subprocess.run(["g++", "-O3", f"-march={a.march}", "-fPIC", "-shared", "-I", str(inc),
                    str(Path(__file__).with_suffix(".cpp")), "-o", str(so)], check=True)
    libs[name] = ctypes.CDLL(str(so))
so = tmp / "panels.so"  # the weights repacked once (native/ggml/alignts_panels_f32.h), session 24
subprocess.run(["g++", "-O3", f"-march={a.march}", "-fPIC", "-shared", "-I", str(ROOT / "native" / "ggml"),
                str(Path(__file__).with_name("f32_panels.cpp")), "-o", str(so)], check=True)
libs["panels"] = ctypes.CDLL(str(so))

n = a.tokens
shapes = {"all": [(384, 384)] * 4 + [(1536, 384), (384, 1536)], "att": [(384, 384)] * 4,
          "ffn": [(1536, 384), (384, 1536)], "small": [(96, 96)] * 6}[a.mode]
rng = np.random.default_rng(0)
Ws = [(rng.standard_normal(s) * 0.05).astype(np.float32) for _ in range(6) for s in shapes]  # m x k each
k0 = Ws[0].shape[1]
nodes, inits, prev = [], [], "x"
for i, w in enumerate(Ws):
    inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), f"w{i}"))
    nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"y{i}"]))
    prev = f"y{i}"
graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, k0])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [n, k0])], inits)
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.add_session_config_entry("session.intra_op.allow_spinning", "0")
sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                            so, providers=["CPUExecutionProvider"])

P = ctypes.POINTER(ctypes.c_float)
W_ptrs = (P * len(Ws))(*[w.ctypes.data_as(P) for w in Ws])
M = (ctypes.c_long * len(Ws))(*[w.shape[0] for w in Ws])
K = (ctypes.c_long * len(Ws))(*[w.shape[1] for w in Ws])
x = rng.standard_normal((n, k0)).astype(np.float32)
ys = [np.zeros(n * 1536, np.float32) for _ in range(2)]
pack = np.zeros(1536 * 64 + 16, np.float32)
pack = pack[(-pack.ctypes.data % 64) // 4:]  # 64-byte aligned, as ggml's scratch

panels = []
for w in Ws:
    buf = np.zeros(w.size + 16, np.float32)
    buf = buf[(-buf.ctypes.data % 64) // 4:][:w.size]  # 64-byte aligned, as ggml's buffers
    libs["panels"].pack(w.ctypes.data_as(P), ctypes.c_long(w.shape[0]), ctypes.c_long(w.shape[1]),
                        buf.ctypes.data_as(P))
    panels.append(buf)
P_ptrs = (P * len(Ws))(*[b.ctypes.data_as(P) for b in panels])


def ours_panels():
    libs["panels"].chain(n, len(Ws), P_ptrs, M, K, x.ctypes.data_as(P), ys[0].ctypes.data_as(P),
                         ys[1].ctypes.data_as(P))
    return ys[(len(Ws) - 1) % 2][:n * k0].reshape(n, k0).copy()


def ours(lib):
    lib.chain(n, len(Ws), W_ptrs, M, K, x.ctypes.data_as(P), ys[0].ctypes.data_as(P), ys[1].ctypes.data_as(P),
              pack.ctypes.data_as(P))
    return ys[(len(Ws) - 1) % 2][:n * k0].reshape(n, k0).copy()


fns = {"onnxruntime": lambda: sess.run(None, {"x": x})[0], "old": lambda: ours(libs["old"]),
       "new": lambda: ours(libs["new"]), "panels": ours_panels}
ref, y_old, y_new, y_pan = fns["onnxruntime"](), fns["old"](), fns["new"](), fns["panels"]()
ts = {k: [] for k in fns}
for _ in range(a.rounds):
    for k, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        ts[k].append(time.perf_counter() - t0)
flop = sum(2.0 * w.shape[0] * w.shape[1] * n for w in Ws)
p50 = {k: float(np.median(v)) for k, v in ts.items()}
cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
print(f"{cpu}, -march={a.march}, {a.mode} ({len(Ws)} products), {n} tokens, {a.rounds} rounds, old = {a.old_rev}: "
      + ", ".join(f"{k} {1e3 * v:.2f} ms ({flop / v / 1e9:.0f} GFLOP/s)" for k, v in p50.items())
      + f"; old/new {p50['old'] / p50['new']:.3f}, new/onnxruntime {p50['new'] / p50['onnxruntime']:.3f}"
      + f"; old == new bit for bit: {np.array_equal(y_old, y_new)}, max |new - onnxruntime| / max |y| "
      + f"{float(np.abs(y_new - ref).max() / np.abs(ref).max()):.1e}"
      + f"; new/panels {p50['new'] / p50['panels']:.3f}, panels/onnxruntime {p50['panels'] / p50['onnxruntime']:.3f}"
      + f", panels == new bit for bit: {np.array_equal(y_pan, y_new)}")
