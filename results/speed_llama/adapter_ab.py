"""The Bridging adapter as exported before (query projection, then one score and one value product a series and
head) against the folded AdapterExport: both from one bundle's trained model, each checked against the torch
model's adapter on random patches, then timed with onnxruntime in the same rounds (calls alternating), 1 and 2
threads, 7 and 56 series (a batch-1 and a batch-8 forecast of ETTh1's 7 channels). p50 ms.
    python adapter_ab.py BUNDLE OUT_DIR [--rounds 200]"""

import argparse, json, time
from pathlib import Path
import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from alignts.export.bridging import AdapterExport
from alignts.export.onnx_export import export_onnx
from alignts.export.reference import load_torch

ap = argparse.ArgumentParser()
ap.add_argument("bundle")
ap.add_argument("out")
ap.add_argument("--rounds", type=int, default=200)
a = ap.parse_args()
model = load_torch(a.bundle).eval()
model = getattr(model, "model", model)


class Before(nn.Module):  # AdapterExport as of a227aa3
    def __init__(self, m):
        super().__init__()
        with torch.no_grad():
            p = m.prototypes()
            self.register_buffer("keys", m.reprogram.key(p).clone())
            self.register_buffer("values", m.reprogram.value(p).clone())
        self.patch_embed, self.reprogram = m.patch_embed, m.reprogram

    def forward(self, patches):
        return self.reprogram.attend(self.patch_embed(patches), self.keys, self.values)


N, P = model.cfg.n_patches, model.cfg.patch_len
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
g = torch.Generator().manual_seed(1)
res = {}
mods = {"before": Before(model).eval(), "folded": AdapterExport(model).eval()}
for name, mod in mods.items():
    export_onnx(
        mod,
        (torch.randn(2, N, P, generator=g),),
        out / f"{name}.onnx",
        ["patches"],
        ["embeddings"],
        dynamic_axes={"patches": {0: "batch"}},
    )
    x = torch.randn(56, N, P, generator=g)
    with torch.no_grad():
        ref = model.adapter(x).numpy()
    s = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    res[f"{name} max abs diff vs model.adapter (56 series)"] = float(
        np.abs(s.run(None, {"patches": x.numpy()})[0] - ref).max()
    )
    res[f"{name} onnx bytes"] = (out / f"{name}.onnx").stat().st_size
for threads in (1, 2):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = {k: ort.InferenceSession(str(out / f"{k}.onnx"), so, providers=["CPUExecutionProvider"]) for k in mods}
    for S in (7, 56):
        x = np.random.default_rng(S).standard_normal((S, N, P)).astype(np.float32)
        t = {k: [] for k in sess}
        for k in sess:
            for _ in range(5):
                sess[k].run(None, {"patches": x})
        for r in range(a.rounds):
            for k in sess if r % 2 == 0 else list(sess)[::-1]:
                c = time.perf_counter()
                sess[k].run(None, {"patches": x})
                t[k].append(time.perf_counter() - c)
        ratio = np.array(t["before"]) / np.array(t["folded"])
        res[f"{threads}t S={S}"] = {
            **{k: round(1e3 * float(np.median(v)), 3) for k, v in t.items()},
            "before/folded p50 of per-round ratios": round(float(np.median(ratio)), 3),
        }
print(json.dumps(res, indent=1))
