"""Exploration (session 27), before it shipped (fit_bridging writes adapter.int8.onnx): Bridging's adapter as
dynamic int8 ONNX (per-tensor weights: onnxruntime's DynamicQuantizeMatMul takes no per-channel zero points for the batched [H, D+1, K] scores constant; the patch
embedding kept fp32) beside the shipped fp32 adapter, per backbone variant: MSE on 128 evenly spaced windows of
ETTh1's last 20 % (instance-scaled), a b=1 forecast in step (the two adapter sessions swapped in one forecaster,
40 alternating calls) and the adapter alone. python adapter_int8.py > adapter_int8_s27.txt"""
import time, numpy as np, pandas as pd
import alignts.runtime as rt
from alignts.runtime.backends.onnx import OnnxSession
B = "/tmp/speed_bundles/bridging_minilm"
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
g = onnx.load(f"{B}/adapter.onnx").graph
ins = {i.name for i in g.input}
excl = [nd.name for nd in g.node if nd.op_type in ("MatMul", "Gemm") and ins & set(nd.input)]
# per-tensor weights: the batched [H, D+1, K] constant takes no per-channel zero points in onnxruntime
quantize_dynamic(f"{B}/adapter.onnx", "/tmp/adapter.int8.onnx", weight_type=QuantType.QInt8, per_channel=False,
                 reduce_range=True, nodes_to_exclude=excl, extra_options={"MatMulConstBOnly": True})
df = pd.read_csv("/work/shared/data/ETT/ETTh1.csv").iloc[:, 1:].to_numpy(np.float32)
n = len(df); t0 = int(n * 0.8)  # the last 20 % as test
L, H = 336, 96
starts = np.linspace(t0, n - L - H, 128).astype(int)
X = np.stack([df[s:s + L].T for s in starts]); Y = np.stack([df[s + L:s + L + H].T for s in starts])
for var in ("onnx-fp32", "onnx-int8", "gguf-q8_0"):
    for th in (1, 2):
        f = rt.load(B); f.plan(variant=var, batch_size=8, threads=th)
        fp = f._adapter
        q = OnnxSession("/tmp/adapter.int8.onnx", device="cpu", threads=th, spin=False)
        outs = {}
        for name, sess in (("fp32", fp), ("int8", q)):
            f._adapter = sess
            yh = np.concatenate([f.forecast_scaled(X[i:i + 8]) for i in range(0, 128, 8)])
            mu, sd = X.mean(-1, keepdims=True), X.std(-1, keepdims=True) + 1e-5
            outs[name] = float(np.mean(((yh - mu) / sd - (Y - mu) / sd) ** 2))
        x1 = X[:1]; ts = {"fp32": [], "int8": []}
        for r in range(40):
            for name, sess in ((("fp32", fp), ("int8", q)) if r % 2 else (("int8", q), ("fp32", fp))):
                f._adapter = sess
                c = time.perf_counter(); f.forecast_scaled(x1); ts[name].append(time.perf_counter() - c)
        ta = {"fp32": [], "int8": []}
        p = np.random.default_rng(0).standard_normal((7, 22, 16)).astype(np.float32)
        for r in range(40):
            for name, sess in (("fp32", fp), ("int8", q)):
                c = time.perf_counter(); sess.run({f._adapter_in: p}); ta[name].append(time.perf_counter() - c)
        print(f"{var} t={th}: test MSE (instance-scaled) fp32 adapter {outs['fp32']:.4f} int8 adapter {outs['int8']:.4f} "
              f"({100 * (outs['int8'] / outs['fp32'] - 1):+.2f} %) | forecast b=1 p50 {1e3 * np.median(ts['fp32']):.2f} -> "
              f"{1e3 * np.median(ts['int8']):.2f} ms | adapter alone {1e3 * np.median(ta['fp32']):.2f} -> {1e3 * np.median(ta['int8']):.2f} ms", flush=True)
