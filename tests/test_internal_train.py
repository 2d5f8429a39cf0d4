"""The generic training loop and the backbone registry (tiny torch models, seconds)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from alignts.errors import ArtifactError, InputError  # noqa: E402
from alignts.export.backbones import load_backbone, register, known_architectures  # noqa: E402
from alignts.export.train import TrainConfig, train  # noqa: E402


class Linear(torch.nn.Module):
    """x [B, C, L] -> [B, C, H], a per-channel-shared linear map (learnable exactly)."""

    def __init__(self, L, H):
        super().__init__()
        self.lin = torch.nn.Linear(L, H)
        self.frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)

    def forward(self, x):
        return self.lin(x)


def _data(n, L=12, H=4, seed=0):
    w = np.random.default_rng(99).normal(0, 0.3, (L, H))  # the same map for every split
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, L)).astype(np.float32)
    return x, (x @ w).astype(np.float32)


def test_train_learns_and_keeps_best():
    torch.manual_seed(0)
    m = Linear(12, 4)
    res = train(m, _data(256), _data(64, seed=1), TrainConfig(epochs=8, batch_size=32, lr=3e-2, patience=8))
    assert res.epochs_run == 8 and res.stopped_by == "epochs"
    vals = [h["val_mse"] for h in res.history]
    assert res.best_val_mse == min(vals) and vals[-1] < vals[0] / 5
    assert torch.equal(m.frozen, torch.ones(3))  # requires_grad=False is never touched
    assert not m.training


def test_same_seed_same_result_and_subsampling():
    def run():
        torch.manual_seed(123)
        m = Linear(12, 4)
        return train(m, _data(200), _data(40, seed=1),
                     TrainConfig(epochs=2, batch_size=16, max_train_windows=48, max_val_windows=10, seed=7)), m

    (r1, m1), (r2, m2) = run(), run()
    assert r1.best_val_mse == r2.best_val_mse
    assert torch.equal(m1.lin.weight, m2.lin.weight)
    assert all(h["n_train_windows"] == 48 for h in r1.history)


def test_early_stopping_and_time_budget():
    torch.manual_seed(0)
    m = Linear(12, 4)
    # lr 0 never improves on the starting weights: stops after `patience` epochs without a better validation
    # MSE, and keeps the starting weights (they count as a candidate)
    res = train(m, _data(64), _data(16, seed=1), TrainConfig(epochs=20, batch_size=16, lr=0.0, patience=2))
    assert res.stopped_by == "early_stopping" and res.epochs_run == 2
    assert res.best_val_mse == res.start_val_mse
    res = train(Linear(12, 4), _data(4096), _data(16, seed=1),
                TrainConfig(epochs=50, batch_size=1, time_budget_s=0.3))
    assert res.stopped_by == "time_budget" and res.wall_s < 5


def test_bad_training_inputs():
    with pytest.raises(InputError, match=r"x \[N, C, L\]"):
        train(Linear(12, 4), (np.zeros((4, 12)), np.zeros((4, 4))), _data(4), TrainConfig(epochs=1))
    m = Linear(12, 4)
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(InputError, match="requires_grad"):
        train(m, _data(8), _data(4), TrainConfig(epochs=1))


@pytest.mark.parametrize("spec,arch,causal", [("tiny-bert", "bert", False), ("tiny-gpt2", "gpt2", True),
                                              ("tiny-llama", "llama", True)])
def test_tiny_backbones(spec, arch, causal):
    b = load_backbone(spec, n_layers=1, seed=3)
    assert (b.name, b.causal, b.d_model, b.n_layers) == (arch, causal, 64, 1)
    assert tuple(b.word_embeddings.shape) == (128, 64) and not b.word_embeddings.requires_grad
    h = b.forward_embeds(torch.randn(2, 5, 64))
    assert h.shape == (2, 5, 64)
    assert load_backbone(spec, seed=3).source_sha256 == load_backbone(spec, seed=3).source_sha256
    assert load_backbone(spec, seed=3).source_sha256 != load_backbone(spec, seed=4).source_sha256


def test_backbone_errors(tmp_path):
    assert set(known_architectures()) >= {"bert", "gpt2", "llama"}
    with pytest.raises(NotImplementedError, match="minilm, tiny-bert"):
        load_backbone("gpt-17")
    with pytest.raises(ArtifactError, match="no config.json"):
        load_backbone(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "mamba"}')
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(NotImplementedError, match="bert, gpt2, llama"):
        load_backbone(tmp_path)
    with pytest.raises(InputError, match="1..2"):
        load_backbone("tiny-gpt2", n_layers=3)
    with pytest.raises(ValueError, match="register"):
        register("x")(lambda: type("A", (), {"name": "y"})())


def test_local_folder_and_minilm_hash(tmp_path, monkeypatch):
    b = load_backbone("tiny-gpt2")
    b.model.save_pretrained(tmp_path / "g")
    local = load_backbone(tmp_path / "g", n_layers=1)
    assert local.name == "gpt2" and local.n_layers == 1 and len(local.source_sha256) == 64
    # the embedded model is checked by hash before use: a tampered copy is refused
    import alignts.export.backbones as bb

    fake = tmp_path / "minilm"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"not the model")
    (fake / "config.json").write_text('{"model_type": "bert"}')
    monkeypatch.setattr(bb, "minilm_path", lambda: fake)
    with pytest.raises(ArtifactError, match="sha256"):
        load_backbone("minilm")
