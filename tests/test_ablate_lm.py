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

from alignts.data.load import load_data  # noqa: E402
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
    from alignts.export.bridging import BridgingConfig
    from alignts.export.fit_bridging import FitBridgingOptions, fit_bridging

    with pytest.raises(InputError, match="--device cuda"):
        fit_bridging(FitBridgingOptions(data=str(csv), out=str(tmp_path / "br"), backbone="tiny-bert"),
                     BridgingConfig(context_len=L, horizon=H), replace(cfg.train, device="cuda"), progress=False)
    assert not (tmp_path / "br").exists()
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="expected one of"):
        resolve_device("tpu")


def _device_fits(csv, tmp_path, device):
    """Internal and Bridging fitted on ``device`` (no GGUF: the CUDA machine has no llama.cpp); each bundle is
    exported and validated against torch, and forecasts."""
    from alignts.export.bridging import BridgingConfig
    from alignts.export.fit_bridging import FitBridgingOptions, fit_bridging

    cfg = _cfg(csv, tmp_path / "b")
    tcfg = replace(cfg.train, device=device)
    m = fit_internal(replace(cfg, gguf=False, train=tcfg), command="test")
    fit_bridging(FitBridgingOptions(data=str(csv), out=str(tmp_path / "br"), backbone="tiny-bert", gguf=False),
                 BridgingConfig(context_len=L, horizon=H, patch_len=8, stride=8, d_model=16, n_heads=4, d_keys=8,
                                n_prototypes=16, d_ff=16, prompt_len=8), tcfg, progress=False)
    x = np.random.default_rng(1).standard_normal((2, 2, L))
    for name, bundle in (("internal", tmp_path / "b"), ("bridging", tmp_path / "br")):
        f = load(bundle)
        assert f.manifest.training["device_used"] == device, name
        f.plan(context_len=L, horizon=H, batch_size=2)
        assert np.isfinite(f.forecast_scaled(x)).all(), name
    return m


def test_device_cpu_fits_both(csv, tmp_path):
    _device_fits(csv, tmp_path, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_cuda_trains(csv, tmp_path):
    _device_fits(csv, tmp_path, "cuda")


def _ett_csv(path: Path, seed: int, scale: float) -> Path:
    import pandas as pd

    n = 17420  # ETT length: the ETT hourly borders apply
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    pd.DataFrame({"date": pd.date_range("2016-07-01", periods=n, freq="h"),
                  "a": scale * np.sin(2 * np.pi * t / 24) + 0.3 * rng.standard_normal(n) + 1e-4 * t,
                  "OT": np.cos(2 * np.pi * t / 24 + seed) + 0.3 * rng.standard_normal(n)}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def few_shot_twins(tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot")
    src, other = _ett_csv(root / "ETTh1.csv", 0, 1.0), _ett_csv(root / "ETTh2.csv", 1, 3.0)
    out = {}
    for ab in ("none", "identity"):
        cfg = _cfg(src, root / ab, ablate=ab, train_percent=10)
        out[ab] = root / ab
        fit_internal(replace(cfg, gguf=False), command="test")
    return root, src, other, out


def _eval_json(args, path):
    import json

    from alignts.cli import main

    assert main(["eval", *args, "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_eval_twins_and_few_shot_baselines(few_shot_twins, tmp_path):
    from alignts.eval.baselines import fit_baseline
    from alignts.eval.evaluate import evaluate
    from alignts.data.splits import make_splits

    root, src, _, b = few_shot_twins
    r = _eval_json([str(b["none"]), str(b["identity"]), "--data", str(src)], tmp_path / "e.json")
    rows = r["rows"]
    assert list(rows)[:2] == ["internal", "internal, LM removed (identity)"]
    assert rows["internal, LM removed (identity)"]["ablate_lm"] == "identity"
    assert rows["internal"]["n_windows"] == rows["internal, LM removed (identity)"]["n_windows"]
    assert not r["zero_shot"] and r["train_percent"] == 10 and r["published_key"] == ["ETTh1", "few-shot 10% avg"]
    # the baselines saw the same 10 % of the training windows as the bundles
    data = load_data(src)
    few, full = make_splits(data, L, H, train_percent=10), make_splits(data, L, H)
    want = evaluate(fit_baseline("ridge", few.train, L, H).predict, few, L, H, progress=False)["mse"]
    other = evaluate(fit_baseline("ridge", full.train, L, H).predict, full, L, H, progress=False)["mse"]
    assert rows["ridge"]["mse"] == pytest.approx(want, rel=1e-9)
    assert want != pytest.approx(other, rel=1e-6)


def test_eval_zero_shot_fits_baselines_on_the_source(few_shot_twins, tmp_path):
    from alignts.eval.baselines import fit_baseline
    from alignts.eval.evaluate import evaluate
    from alignts.data.splits import make_splits

    root, src, other, b = few_shot_twins
    r = _eval_json([str(b["none"]), "--data", str(other)], tmp_path / "z.json")
    assert r["zero_shot"] and "source data's (ETTh1)" in r["baselines_fitted_on"]
    assert r["published_key"] == ["ETTh1->ETTh2", 96] or r["published_key"] == ["ETTh1->ETTh2", "avg"]
    target = make_splits(load_data(other), L, H)  # scaled by its own train split
    source_train = make_splits(load_data(src), L, H, train_percent=10).train
    want = evaluate(fit_baseline("dlinear", source_train, L, H).predict, target, L, H, progress=False)["mse"]
    assert r["rows"]["dlinear"]["mse"] == pytest.approx(want, rel=1e-9)
    mine = evaluate(fit_baseline("dlinear", target.train, L, H).predict, target, L, H, progress=False)["mse"]
    assert want != pytest.approx(mine, rel=1e-6)


def test_eval_refuses_bundles_of_other_shapes(few_shot_twins, csv, tmp_path):
    from alignts.cli import main

    root, src, _, b = few_shot_twins
    cfg = _cfg(csv, tmp_path / "h4")
    fit_internal(replace(cfg, gguf=False, model=replace(cfg.model, horizon=4)), command="test")
    assert main(["eval", str(b["none"]), str(tmp_path / "h4"), "--data", str(src)]) == 2


def _bridging(data, out, ablate="none", store=None):
    from alignts.export.bridging import BridgingConfig
    from alignts.export.fit_bridging import FitBridgingOptions, fit_bridging

    cfg = BridgingConfig(context_len=L, horizon=H, patch_len=8, stride=8, d_model=16, n_heads=4, d_keys=8,
                         n_prototypes=16, d_ff=16, description="test series.", ablate_lm=ablate)
    train = TrainConfig(epochs=1, batch_size=16, max_train_windows=32, max_val_windows=16, threads=1)
    return fit_bridging(FitBridgingOptions(data=str(data), out=str(out), backbone="tiny-bert", n_check=2,
                                           backbone_dir=str(store) if store else None), cfg, train, progress=False)


def test_bridging_identity_has_no_backbone(csv, tmp_path):
    from alignts.export.reference import load_torch
    from alignts.runtime.manifest import read_manifest

    s = _bridging(csv, tmp_path / "no_lm", "identity", store=tmp_path / "store")
    assert s["backbone_path"] is None and not (tmp_path / "store").exists()  # nothing of the LM is written
    m = read_manifest(tmp_path / "no_lm")
    assert dict(m.backbone) == {} and m.config["ablate_lm"] == "identity"
    assert m.training["ablate_lm"] == "identity"
    assert [v.name for v in m.variants] == ["onnx-fp32"] and m.variants[0].extra["backbone_variant"] == "none"
    assert not any(f.endswith(".gguf") for f in m.files)
    x = np.random.default_rng(0).standard_normal((3, 2, L)).astype(np.float32)
    f = load(tmp_path / "no_lm")
    f.plan(batch_size=3)
    got = f.forecast_scaled(x)
    ref = load_torch(tmp_path / "no_lm")(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_bridging_identity_bypasses_the_lm(csv):
    """The torch model of the twin never calls the LM: its output does not change when the LM's weights do."""
    from alignts.export.backbone_bundle import tokenizer_text
    from alignts.export.backbones import load_backbone
    from alignts.export.bridging import BridgingConfig, BridgingModel
    from alignts.runtime.tokenize import PromptTokenizer

    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 1, L)).astype(np.float32))
    outs = {}
    for ab in ("none", "identity"):
        bb = load_backbone("tiny-bert", seed=0)
        cfg = BridgingConfig(context_len=L, horizon=H, patch_len=8, stride=8, d_model=16, n_heads=4, d_keys=8,
                             n_prototypes=16, d_ff=16, prompt_len=8, ablate_lm=ab)
        torch.manual_seed(0)
        model = BridgingModel(bb, cfg, PromptTokenizer(tokenizer_text(bb).encode())).eval()
        before = model(x).detach()
        with torch.no_grad():
            for p in model.lm.parameters():
                p.mul_(-3.0)
        outs[ab] = (before, model(x).detach())
    assert not torch.allclose(*outs["none"])  # the LM matters to the full model
    torch.testing.assert_close(*outs["identity"])  # and not at all to its twin


def test_tradeoff_report_marks_the_twin(few_shot_twins):
    from alignts.bench.report import report_rows

    root, src, _, b = few_shot_twins
    result = {"bundles": {}, "rows": [
        {"bundle": str(b[ab]), "variant": "onnx-fp32", "paradigm": "internal", "batch_size": 1, "context_len": L,
         "horizon": H, "mse": 1.0, "mae": 1.0} for ab in ("none", "identity")]}
    kinds = [r["kind"] for r in report_rows(result, str(src), max_windows=4)]
    assert kinds[:2] == ["internal", "internal, LM removed (identity)"]
