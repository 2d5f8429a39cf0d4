"""The torch reference rebuilt from a bundle (``alignts.export.reference.load_torch``): Internal and Bridging
bundles fitted here on tiny backbones; the rebuilt torch model agrees with the runtime's onnx-fp32 forecast on
fresh inputs; a missing, tampered or foreign trained-tensor file is refused with the fix; ``alignts bench``
times it as the reference (ratios only, no timing assertions)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")

from alignts.errors import ArtifactError  # noqa: E402
from alignts.export.reference import TRAINED_NAME, load_torch  # noqa: E402
from alignts.runtime import load  # noqa: E402
from alignts.runtime.manifest import read_manifest  # noqa: E402

L, H = 48, 12
TOL = 1e-4


def _walks(seed: int, b: int, c: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, c, L)).cumsum(-1) * 0.3 + rng.standard_normal((b, c, 1))
    return x.astype(np.float32)  # [B, C, L]


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-bert"])
def internal(request, csv, tmp_path_factory):
    from alignts.export.fit_internal import FitInternalConfig, fit_internal
    from alignts.export.internal import InternalConfig
    from alignts.export.train import TrainConfig

    out = tmp_path_factory.mktemp(f"ref-{request.param}") / "bundle"
    fit_internal(FitInternalConfig(
        data=str(csv), out=str(out), backbone=request.param,
        model=InternalConfig(context_len=L, horizon=H, patch_len=16, stride=8, head_init="default"),
        train=TrainConfig(epochs=1, batch_size=16, lr=1e-2, max_train_windows=32, max_val_windows=16, threads=2,
                          seed=3),
        int8=False, gguf=False), command="test")
    return out


@pytest.fixture(scope="module")
def bridging(tmp_path_factory):
    from alignts.export.backbone_bundle import ensure_backbone_bundle, max_positions, tokenizer_text
    from alignts.export.backbones import load_backbone
    from alignts.export.bridging import BridgingConfig, BridgingModel
    from alignts.export.fit_bridging import choose_prompt_len, export_adapter_bundle
    from alignts.runtime.tokenize import PromptTokenizer

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("ref-bridging")
    backbone = load_backbone("tiny-bert", seed=5)
    cfg = BridgingConfig(context_len=L, horizon=H, d_model=16, n_heads=4, d_keys=8, n_prototypes=16, d_ff=16,
                         description="synthetic test series.")
    tok = PromptTokenizer(tokenizer_text(backbone).encode())
    x = _walks(0, 6, 2)
    cfg = dataclasses.replace(cfg, prompt_len=choose_prompt_len(x, cfg, tok, max_positions(backbone), cfg.n_patches))
    torch.manual_seed(0)
    model = BridgingModel(backbone, cfg, tok).eval()
    with torch.no_grad():  # stands in for training: every trained tensor away from its init
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    bb_path, sha, _ = ensure_backbone_bundle(backbone, root / "backbones", gguf=False)
    export_adapter_bundle(model, root / "a", backbone_path=bb_path, backbone_sha=sha, backbone=backbone,
                          check_x=x[:2], config_extra={"n_channels": 2}, seed=5)
    return root / "a", model


def _agrees_with_runtime(bundle, batch: int, seed: int) -> float:
    ref = load_torch(bundle)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    f = load(bundle)
    f.plan(variant="onnx-fp32", batch_size=batch)
    x = _walks(seed, batch, int(f.manifest.config.get("n_channels") or 1))
    with torch.inference_mode():
        want = ref(torch.from_numpy(x)).numpy()
    got = f.forecast_scaled(x)
    assert got.shape == want.shape
    return float(np.abs(got - want).max())


def test_internal_bundle_lists_the_trained_tensors(internal):
    m = read_manifest(internal)  # verifies every file's sha256, the trained-tensor file's too
    assert TRAINED_NAME in m.files and TRAINED_NAME not in {f for v in m.variants for f in v.files}
    from safetensors import safe_open

    with safe_open(str(internal / TRAINED_NAME), framework="pt") as fh:
        keys, meta = set(fh.keys()), fh.metadata()
    assert any("lora_A" in k for k in keys) and any("lora_B" in k for k in keys)  # unfused
    assert {"patch_embed.weight", "head.weight"} <= keys
    assert not any(k.endswith("base_layer.weight") for k in keys)  # the frozen base weights stay out
    assert json.loads(meta["backbone"])["seed"] == 3
    assert json.loads(meta["model_config"])["context_len"] == L


def test_internal_torch_model_matches_runtime(internal):
    assert _agrees_with_runtime(internal, batch=3, seed=11) <= TOL
    assert _agrees_with_runtime(internal, batch=1, seed=12) <= TOL


def test_bridging_torch_model_matches_runtime_and_the_trained_model(bridging):
    bundle, trained = bridging
    assert _agrees_with_runtime(bundle, batch=2, seed=21) <= TOL
    ref = load_torch(bundle)
    assert ref.mapping is None  # the [V, K] mapping is not rebuilt: its prototypes are stored
    x = torch.from_numpy(_walks(22, 2, 2))
    with torch.inference_mode():
        assert float((ref(x) - trained(x)).abs().max()) <= 1e-5


def _without_trained_file(bundle, name: str):
    """A copy beside ``bundle`` (so its backbone store still resolves) as exported before the file existed."""
    old = bundle.parent / name
    shutil.copytree(bundle, old)
    m = json.loads((old / "manifest.json").read_text())
    del m["files"][TRAINED_NAME]
    (old / "manifest.json").write_text(json.dumps(m))
    (old / TRAINED_NAME).unlink()
    return old


def test_missing_trained_file_says_refit(bridging):
    bundle, _ = bridging
    old = _without_trained_file(bundle, "old-load")
    with pytest.raises(ArtifactError, match=f"has no {TRAINED_NAME}.*re-fit"):
        load_torch(old)


def test_tampered_trained_file_is_refused(internal, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(internal, bad)
    raw = bytearray((bad / TRAINED_NAME).read_bytes())
    raw[-3] ^= 0xFF  # a flipped bit in a tensor, same size
    (bad / TRAINED_NAME).write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="sha256"):
        load_torch(bad)


def test_other_base_weights_are_refused(internal, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(internal, other)
    m = json.loads((other / "manifest.json").read_text())
    m["lora"]["base_sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="fitted on"):
        load_torch(other)


def test_bench_times_the_rebuilt_torch_model(internal, bridging):
    from alignts.bench.bundles import BenchConfig, bench_bundle

    before = torch.get_num_threads()
    cfg = BenchConfig(batch_sizes=(1,), variants=("onnx-fp32",), repeats=3, warmup=1, child=False, threads=1)
    for bundle in (internal, bridging[0]):
        (row,) = bench_bundle(bundle, cfg)
        assert row["threads"] == 1 and row["torch_p50_ms"] > 0
        assert row["speedup_vs_torch"] == pytest.approx(row["torch_p50_ms"] / row["latency_p50_ms"])
        assert row["torch_max_abs_diff"] <= TOL
        assert "torch reference" not in row["note"]
    assert torch.get_num_threads() == before  # restored


def test_bench_says_why_there_is_no_torch_column(bridging):
    from alignts.bench.bundles import BenchConfig, bench_bundle

    bundle, _ = bridging
    old = _without_trained_file(bundle, "old-bench")
    (row,) = bench_bundle(old, BenchConfig(batch_sizes=(1,), variants=("onnx-fp32",), repeats=2, warmup=0,
                                           child=False))
    assert row["torch_p50_ms"] is None and row["speedup_vs_torch"] is None
    assert f"torch reference: bundle {str(old)!r} has no {TRAINED_NAME}" in row["note"]
