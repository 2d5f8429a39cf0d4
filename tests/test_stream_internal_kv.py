"""Internal streams with patch-level KV reuse (issue #14, alignts/runtime/stream/kv_internal.py) on a tiny LLaMA
Internal bundle: equal to the batch forecast at every anchor, within a stated tolerance between anchors (frozen
instance statistics, a sliding window of patches), only new patches decoded, re-anchored when the window's
statistics move, state save/restore exact."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("torch")
pytest.importorskip("peft")

import alignts.runtime as rt  # noqa: E402
from alignts.runtime.stream import Stream  # noqa: E402

L, H, P, STRIDE = 64, 8, 8, 8  # N = (64 - 8) // 8 + 2 = 9 patches


def _series(n: int, c: int, seed: int = 0, trend: float = 0.0) -> np.ndarray:
    """A daily-like cycle of 8 points (a window of 64 holds 8 whole cycles, so its mean and std barely move as it
    slides) plus noise; ``trend`` per point moves them."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    return 50 + 10 * np.sin(2 * np.pi * t / 8 + np.arange(c)) + trend * t + 0.3 * rng.standard_normal((n, c))


@pytest.fixture(scope="module")
def llama_bundle(tmp_path_factory):
    from alignts.export.fit_internal import FitInternalConfig, fit_internal
    from alignts.export.internal import InternalConfig
    from alignts.export.train import TrainConfig

    out = tmp_path_factory.mktemp("kvint") / "b"
    m = fit_internal(FitInternalConfig(
        data="statsmodels:co2", out=str(out), backbone="tiny-llama", int8=False, gguf_dtypes=("f32",),
        model=InternalConfig(context_len=L, horizon=H, patch_len=P, stride=STRIDE, lora_rank=2, lora_alpha=4.0),
        train=TrainConfig(epochs=1, batch_size=16, max_train_windows=32, max_val_windows=8, threads=1)),
        command="test")
    if not any(v.name == "gguf-f32" for v in m.variants):
        pytest.skip(f"fit_internal wrote no gguf-f32: {m.training.get('skipped_variants')}")
    return out


def _planned(bundle):
    f = rt.load(bundle)
    f.plan(variant="gguf-f32", threads=1)
    return f


def _close(a, b, tol=1e-4) -> bool:
    return float(np.abs(a.mean - b.mean).max()) <= tol * max(1.0, float(np.abs(b.mean).max()))


def test_equal_at_anchors_within_tolerance_between_and_only_new_patches_decoded(llama_bundle):
    f = _planned(llama_bundle)
    s = f.stream(n_channels=1)
    assert s.engine.kind == "kv-internal"
    N = f.cfg.n_patches
    y = _series(L + 40 * STRIDE, 1, seed=1)
    s.update(y[:L])
    assert _close(s.forecast(), f.forecast(s.window()[None]))  # the first forecast anchors: the batch path
    diffs, anchors_seen = [], []
    for i in range(L, y.shape[0], STRIDE):  # a forecast every stride points: one new patch each
        s.update(y[i:i + STRIDE])
        a, b = s.forecast(), f.forecast(s.window()[None])
        if s.engine.since[0] == 0:  # re-anchored: the batch forecast again
            anchors_seen.append(i)
            assert _close(a, b)
        diffs.append(float(np.abs(a.mean - b.mean).mean()))
    # a window of N patches turns over every N - 1 new patches: that many anchors, nothing else re-decoded
    assert len(anchors_seen) == 40 // (N - 1)
    assert s.engine.patches_fed == N * (1 + len(anchors_seen)) + 2 * (40 - len(anchors_seen))
    # frozen statistics (which barely move here) + sliding attention: measured 0.0017 of the series' std
    assert 0 < np.mean(diffs) / y.std() < 0.02


def test_moving_statistics_anchor(llama_bundle):
    """A trend moves the window's mean by ~0.08 std every stride: past STAT_TOL, so every forecast is the batch one."""
    from alignts.runtime.stream.kv_internal import STAT_TOL

    f = _planned(llama_bundle)
    s = f.stream(n_channels=1)
    y = _series(L + 10 * STRIDE, 1, seed=4, trend=0.1)
    s.update(y[:L])
    s.forecast()
    for i in range(L, y.shape[0], STRIDE):
        s.update(y[i:i + STRIDE])
        w = s.window()[0]
        moved = abs(w.mean() - s.engine.mean[0]) / s.engine.std[0]
        n = s.engine.n_anchors
        assert _close(s.forecast(), f.forecast(s.window()[None]))
        assert moved > STAT_TOL and s.engine.n_anchors == n + 1


def test_a_step_off_the_patch_grid_a_gap_or_a_jump_anchors(llama_bundle):
    f = _planned(llama_bundle)
    s = f.stream(n_channels=1)
    y = _series(L + 64, 1, seed=2)
    s.update(y[:L])
    s.forecast()
    n = s.engine.n_anchors
    s.update(y[L:L + 3])  # 3 points: not a multiple of the stride
    assert _close(s.forecast(), f.forecast(s.window()[None])) and s.engine.n_anchors == n + 1
    s.update(y[L + 3:L + 3 + STRIDE - 1])
    s.update([np.nan])  # a gap: the batch rule fills it from both sides, so past patches change
    assert _close(s.forecast(), f.forecast(s.window()[None])) and s.engine.n_anchors == n + 2
    s.update(y[L + 3 + STRIDE:L + 3 + 2 * STRIDE - 1])
    s.update([y.max() * 5])  # far outside the anchor window's normalized range
    assert _close(s.forecast(), f.forecast(s.window()[None])) and s.engine.n_anchors == n + 3


def test_restore_mid_stream_gives_identical_forecasts(llama_bundle, tmp_path):
    f = _planned(llama_bundle)
    y = _series(L + 30 * STRIDE, 1, seed=3)
    s = f.stream(n_channels=1, forecast_every=STRIDE)
    s.update(y[:L + 5 * STRIDE])
    r = Stream.restore(s.save(tmp_path / "s.state"), f)
    assert r.engine.kind == "kv-internal" and r.describe() == s.describe()
    for i in range(L + 5 * STRIDE, y.shape[0], STRIDE):
        a, b = s.update(y[i:i + STRIDE]), r.update(y[i:i + STRIDE])
        assert len(a) == len(b) == 1
        assert np.array_equal(a[0].forecast.mean, b[0].forecast.mean)


def test_inspect_says_which_backbones_reuse_the_cache(llama_bundle):
    from alignts.runtime.manifest import read_manifest
    from alignts.runtime.stream.engines import stream_line, window_reason

    line = stream_line(read_manifest(llama_bundle))
    assert "gguf-f32: KV-cache reuse (kv-internal)" in line and "onnx-fp32: recompute" in line
    assert "absolute positions" in window_reason("internal", "gpt2", "gguf")
    assert "bidirectional" in window_reason("internal", "bert", "gguf")
    f = _planned(llama_bundle)
    assert f.stream(kv=False).engine.kind == "window"
