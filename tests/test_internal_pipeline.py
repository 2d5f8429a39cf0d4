"""Internal paradigm end to end on tiny backbones: fit 1 epoch on a small synthetic series, export, and run
every variant through the same ``forecast`` call against the torch model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("onnxruntime")

from alignts.errors import ArtifactError, InputError  # noqa: E402
from alignts.export.fit_internal import FitInternalConfig, fit_internal  # noqa: E402
from alignts.export.internal import InternalConfig, build_model  # noqa: E402
from alignts.export.train import TrainConfig  # noqa: E402
from alignts.runtime import load  # noqa: E402

L, H = 48, 12



def _cfg(csv, out, backbone, linear_skip=False, **kw) -> FitInternalConfig:
    return FitInternalConfig(
        data=str(csv), out=str(out), backbone=backbone,
        model=InternalConfig(context_len=L, horizon=H, patch_len=16, stride=8, head_init="default",
                             linear_skip=linear_skip),
        train=TrainConfig(epochs=1, batch_size=16, lr=1e-2, max_train_windows=32, max_val_windows=16, threads=2), **kw)


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-bert", "tiny-bert+skip"])
def fitted(request, csv, tmp_path_factory):
    backbone, _, skip = request.param.partition("+")
    out = tmp_path_factory.mktemp(backbone) / "bundle"
    captured = {}
    import alignts.export.fit_internal as fi

    real = fi.export_bundle

    def spy(model, *a, **k):  # keep the trained, fused torch model for comparison
        captured["model"] = model
        return real(model, *a, **k)

    fi.export_bundle = spy
    try:
        m = fit_internal(_cfg(csv, out, backbone, linear_skip=bool(skip), gguf_dtypes=("f32",)))
    finally:
        fi.export_bundle = real
    return request.param, out, m, captured["model"]


def test_bundle_variants_match_torch(fitted, csv):
    name, out, manifest, model = fitted
    names = [v.name for v in manifest.variants]
    assert names[0] == "onnx-fp32"
    assert manifest.paradigm == "internal" and manifest.lora["fused"] and manifest.lora["rank"] == 8
    assert all(Path(out, f).is_file() for f in manifest.files)
    from alignts.data.load import load_data
    from alignts.data.splits import make_splits, sliding_windows

    splits = make_splits(load_data(str(csv)), L, H)
    x = sliding_windows(splits.test, L, H)[0][:6]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    f = load(out)
    got = {}
    for v in manifest.variants:
        f.plan(variant=v.name, batch_size=4)
        got[v.name] = f.forecast_scaled(x)
        assert got[v.name].shape == (6, 2, H)
    assert np.abs(got["onnx-fp32"] - ref).max() <= 1e-4
    assert manifest.variant("onnx-fp32").validation["max_abs_diff"] <= 1e-4
    if "onnx-int8" in names:  # the stated int8 bound: the accuracy gate on validation windows
        acc = manifest.variant("onnx-int8").accuracy
        assert acc["passed"] and acc["rel_mse_change"] <= acc["max_rel_mse_change"]
        assert np.isfinite(got["onnx-int8"]).all()
    else:
        assert "onnx-int8" in manifest.training["skipped_variants"]
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        assert "gguf" in manifest.training.get("skipped_variants", {})
        return
    assert "gguf-f32" in names, manifest.training.get("skipped_variants")
    assert np.abs(got["gguf-f32"] - ref).max() <= 1e-3
    assert manifest.variant("gguf-f32").validation["end_to_end_max_abs_diff"] <= 1e-3
    # the unfused form: base LM + LoRA adapter GGUF, applied by llama.cpp
    assert "gguf-f32-lora" in names, manifest.training.get("skipped_variants")
    assert np.abs(got["gguf-f32-lora"] - ref).max() <= 1e-3
    # the adapter carries the trained LoRA: the base GGUF is not the fused one (unless validation kept the
    # starting weights, where LoRA B is still zero)
    trained = manifest.training["best_val_mse"] < manifest.training["start_val_mse"]
    assert (manifest.files["lm.base.f32.gguf"].sha256 != manifest.files["lm.f32.gguf"].sha256) == trained
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert not lora_b  # fused: no LoRA layers left in the exported model


def test_manifest_records_training(fitted):
    _, out, manifest, _ = fitted
    d = json.loads((out / "manifest.json").read_text())
    t = d["training"]
    assert t["max_train_windows"] == 32 and t["epochs_run"] == 1 and t["train_wall_s"] > 0
    assert t["best_val_mse"] <= t["start_val_mse"]  # the starting weights are a candidate
    assert d["config"]["linear_skip"] == ("linear_skip" in t)
    if d["config"]["linear_skip"]:  # the ridge fit is recorded and its weights travel for llama.cpp
        assert t["linear_skip"]["ridge"] > 0 and t["linear_skip"]["n_rows"] > 0
        with np.load(out / "io.npz") as io:
            assert io["skip_w"].shape == (H, L) and np.abs(io["skip_w"]).max() > 0
    assert d["config"]["n_patches"] == (L - 16) // 8 + 2 and len(d["config"]["scaler"]["mean"]) == 2
    assert d["normalization"] == {"affine": False, "eps": 1e-5, "kind": "revin"}


def test_fit_failure_leaves_nothing(csv, tmp_path, monkeypatch):
    import alignts.export.fit_internal as fi

    def boom(*a, **k):
        raise RuntimeError("export exploded")

    monkeypatch.setattr(fi, "export_onnx", boom, raising=False)
    monkeypatch.setattr("alignts.export.onnx_export.export_onnx", boom)
    out = tmp_path / "b"
    with pytest.raises(RuntimeError, match="exploded"):
        fit_internal(_cfg(csv, out, "tiny-gpt2", int8=False, gguf=False))
    assert list(tmp_path.iterdir()) == []


def test_bad_configs(csv, tmp_path):
    with pytest.raises(NotImplementedError, match="tiny-gpt2"):
        fit_internal(_cfg(csv, tmp_path / "a", "no-such-backbone"))
    (tmp_path / "exists").mkdir()
    with pytest.raises(ArtifactError, match="--overwrite"):
        fit_internal(_cfg(csv, tmp_path / "exists", "tiny-gpt2"))
    with pytest.raises(InputError, match="context_len"):
        InternalConfig(context_len=8, patch_len=16).check()
    assert not (tmp_path / "a").exists()


def test_linear_skip_fits_a_linear_series():
    """On windows whose normalized future is an exact linear map of the normalized past, the closed-form
    skip recovers it: the model (zero head) forecasts them almost exactly before any training."""
    from alignts.export.backbones import load_backbone
    from alignts.export.linear_skip import fit_linear_skip

    cfg = InternalConfig(context_len=L, horizon=H, patch_len=16, stride=8, linear_skip=True)
    model = build_model(load_backbone("tiny-bert", seed=0), cfg, seed=0)
    rng = np.random.default_rng(0)
    t = np.arange(L + H)
    # sums of sinusoids with random phase and a common period: y is a linear function of x
    series = np.stack([np.sin(2 * np.pi * t / 12 + ph) + 0.5 * np.cos(2 * np.pi * t / 6 + 2 * ph)
                       for ph in rng.uniform(0, 2 * np.pi, 400)]).astype(np.float32)[:, None, :]
    xy = (series[..., :L], series[..., L:])
    info = fit_linear_skip(model.core.skip, cfg, xy, xy)
    assert info["val_mse"] < 1e-3 and info["normalized_train_mse"] < 1e-3
    with torch.no_grad():
        pred = model(torch.from_numpy(xy[0])).numpy()
    assert np.abs(pred - xy[1]).max() < 0.1
    assert not any(p.requires_grad for p in model.core.skip.parameters())  # frozen
    with pytest.raises(InputError, match="stride"):  # patches that skip points cannot give the context back
        InternalConfig(context_len=L, horizon=H, patch_len=8, stride=16, linear_skip=True).check()
    with pytest.raises(InputError, match="linear_skip"):
        fit_linear_skip(build_model(load_backbone("tiny-bert", seed=0),
                                    InternalConfig(context_len=L, horizon=H, patch_len=16, stride=8)).core.skip,
                        cfg, xy, xy)


def test_torch_model_patching_matches_kernels():
    from alignts.export.backbones import load_backbone
    from alignts.kernels.patch import norm_patchify

    cfg = InternalConfig(context_len=40, horizon=4, patch_len=8, stride=4)
    m = build_model(load_backbone("tiny-llama"), cfg)
    x = torch.randn(5, 40) * 3 + 1
    patches, mean, std = m.normalize_patch(x)
    kp, km, ks = norm_patchify(x.numpy().astype(np.float64), 8, 4, 1e-5)
    np.testing.assert_allclose(patches.numpy(), kp, atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), km, atol=1e-5)
    np.testing.assert_allclose(std.numpy(), ks, atol=1e-5)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("norm" in n for n in trainable)
    assert "core.patch_embed.weight" in trainable and "core.head.weight" in trainable
    assert not any(n.endswith("q_proj.base_layer.weight") for n in trainable)
