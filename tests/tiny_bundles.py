"""Tiny bundles of every paradigm with ONNX and GGUF variants, fitted in seconds with the real fit functions
(shared by tests/test_thread_safety.py and tests/test_budget_rss.py; needs torch, optimum and llama-cpp-python).

Each builder returns the bundle folder: Internal on tiny-gpt2 (onnx-fp32, gguf-f32, gguf-f32-lora), Bridging on
tiny-bert (onnx-fp32 and gguf-f32 backbone), Injective on a tiny random numeric GPT-2 (onnx-fp32, gguf-f32).
"""

from __future__ import annotations

from pathlib import Path

from test_injective_utils import tiny_numeric_gpt2

L, H = 32, 8


def _train():
    from alignts.export.train import TrainConfig

    return TrainConfig(epochs=1, batch_size=16, max_train_windows=16, max_val_windows=8, threads=1)


def internal_bundle(root: Path, data: str) -> Path:
    from alignts.export.fit_internal import FitInternalConfig, fit_internal
    from alignts.export.internal import InternalConfig

    out = root / "internal"
    fit_internal(FitInternalConfig(
        data=data, out=str(out), backbone="tiny-gpt2",
        model=InternalConfig(context_len=L, horizon=H, patch_len=8, stride=8, lora_rank=2, lora_alpha=4.0),
        train=_train(), int8=False, gguf=True, gguf_dtypes=("f32",)), command="test")
    return out


def bridging_bundle(root: Path, data: str) -> Path:
    from alignts.export.bridging import BridgingConfig
    from alignts.export.fit_bridging import FitBridgingOptions, fit_bridging

    out = root / "bridging"
    cfg = BridgingConfig(context_len=L, horizon=H, patch_len=8, stride=8, d_model=16, n_heads=4, d_keys=8,
                         n_prototypes=16, d_ff=16, description="thread test series.")
    fit_bridging(FitBridgingOptions(data=data, out=str(out), backbone="tiny-bert", n_check=2), cfg, _train(),
                 progress=False)
    return out


def injective_bundle(root: Path) -> Path:
    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective

    hf = tiny_numeric_gpt2(root / "hf")
    return fit_injective(root / "injective", InjectiveFitConfig(model=str(hf), samples=4, context_len=L, horizon=6,
                                                               precision=2))
