"""The LM-removed twin (``--ablate-lm identity``) and the training device switch.

The ablated bundle must carry no transformer block: its ONNX graph has no attention (Softmax) and no layer
norm, only the two linear maps around where the LM was; it has no GGUF LM; the manifest says it was ablated.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("peft")
pytest.importorskip("onnxruntime")

from alignts.errors import InputError  # noqa: E402
from alignts.export.fit_internal import FitInternalConfig, fit_internal  # noqa: E402
from alignts.export.internal import InternalConfig  # noqa: E402
from alignts.export.train import TrainConfig, resolve_device  # noqa: E402
from alignts.runtime import load  # noqa: E402

L, H = 32, 8
BLOCK_OPS = {"Softmax", "LayerNormalization", "ReduceMean", "Erf", "Tanh", "Pow"}  # attention, norms, GELU


def _cfg(csv, out, ablate="none", **kw) -> FitInternalConfig:
    return FitInternalConfig(
        data=str(csv), out=str(out), backbone="tiny-bert",
        model=InternalConfig(context_len=L, horizon=H, patch_len=8, stride=8, lora_rank=2, lora_alpha=4.0,
                             ablate_lm=ablate),
        train=TrainConfig(epochs=1, batch_size=16, max_train_windows=32, max_val_windows=16, threads=1),
        int8=False, gguf=True, gguf_dtypes=("f32",), **kw)


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]


@pytest.fixture(scope="module")
def twins(csv, tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    lm = fit_internal(_cfg(csv, root / "lm"), command="test")
    no_lm = fit_internal(_cfg(csv, root / "no_lm", ablate="identity"), command="test")
    return root, lm, no_lm


def test_identity_graph_has_no_blocks(twins):
    root, lm, no_lm = twins
    with_lm = _ops(root / "lm" / "core.onnx")
    without = _ops(root / "no_lm" / "core.onnx")
    assert BLOCK_OPS & set(with_lm), "the reference bundle should hold transformer blocks"
    assert not BLOCK_OPS & set(without), f"blocks left in the ablated graph: {sorted(BLOCK_OPS & set(without))}"
    linear = [op for op in without if op in ("MatMul", "Gemm")]
    assert len(linear) == 2, without  # patch embedding and head, nothing between
    assert len(without) < len(with_lm) / 3


def test_identity_manifest_and_variants(twins):
    root, lm, no_lm = twins
    assert no_lm.training["ablate_lm"] == "identity" and lm.training["ablate_lm"] == "none"
    assert no_lm.config["ablate_lm"] == "identity"
    assert no_lm.lora == {} and lm.lora["rank"] == 2
    assert [v.name for v in no_lm.variants] == ["onnx-fp32"]
    assert "ablated" in no_lm.training["skipped_variants"]["gguf"]
    assert any(v.backend == "gguf" for v in lm.variants)  # the twin with the LM keeps its GGUF variants
    assert no_lm.training["trainable_params"] < lm.training["trainable_params"]


def test_identity_bundle_forecasts_as_torch(twins, csv):
    from alignts.export.reference import load_torch

    root, _, _ = twins
    x = np.random.default_rng(0).standard_normal((3, 2, L)).astype(np.float32)
    f = load(root / "no_lm")
    f.plan(batch_size=3)
    got = f.forecast_scaled(x)
    ref = load_torch(root / "no_lm")(torch.from_numpy(x)).detach().numpy()
    assert got.shape == (3, 2, H)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_unknown_ablation_is_refused(csv, tmp_path):
    from alignts.export.fit_internal import check_config

    with pytest.raises(InputError, match="ablate_lm"):
        check_config(_cfg(csv, tmp_path / "b", ablate="zeros"))


def test_fit_records_train_percent_and_device(tmp_path):
    import pandas as pd

    n = 17420  # ETT length, so the ETT hourly borders apply
    t = np.arange(n)
    p = tmp_path / "ETTh2.csv"
    pd.DataFrame({"date": pd.date_range("2016-07-01", periods=n, freq="h"), "a": np.sin(t / 4),
                  "OT": np.cos(t / 7)}).to_csv(p, index=False)
    cfg = _cfg(p, tmp_path / "b", ablate="identity", train_percent=10)
    m = fit_internal(replace(cfg, train=replace(cfg.train, device="cpu")), command="test")
    assert m.training["train_percent"] == 10
    assert m.training["train_rows"] == (8640 - L) * 10 // 100 + L
    assert m.training["n_train_windows"] == (8640 - L) * 10 // 100 + L - L - H + 1
    assert m.training["device"] == "cpu" and m.training["device_used"] == "cpu"


def test_device_cuda_without_gpu_is_a_clear_error(csv, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present here")
    with pytest.raises(InputError, match="--device cuda.*Fix: --device cpu"):
        resolve_device("cuda")
    cfg = _cfg(csv, tmp_path / "b")
    with pytest.raises(InputError, match="--device cuda"):
        fit_internal(replace(cfg, train=replace(cfg.train, device="cuda")), command="test")
    assert not (tmp_path / "b").exists()
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="expected one of"):
        resolve_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_cuda_trains(csv, tmp_path):
    cfg = _cfg(csv, tmp_path / "b")
    m = fit_internal(replace(cfg, train=replace(cfg.train, device="cuda")), command="test")
    assert m.training["device_used"] == "cuda"
