"""Injective fits the context to the LM's window (LLMTime's truncation): the last L' values that fit next to H
generated values, recorded in the Plan; too long a horizon fails before loading, with the fix. Torch-free (the
shipped numeric LM, with a small n_ctx so that the numbers stay small)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from alignts.errors import ShapeError
from alignts.kernels.digits import CodecTable
from alignts.runtime.sampler import ConstrainedSampler, SamplerConfig

from test_injective_utils import RandomLogits

NUMERIC = CodecTable(digit_ids=tuple(range(1, 11)), value_sep=(14,), minus_id=12, end_ids=(0,))
N_CTX, L, H = 128, 48, 12


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective

    out = fit_injective(tmp_path_factory.mktemp("fit") / "b", InjectiveFitConfig(samples=3, context_len=L, horizon=H))
    # an LM with a 128-token window (the shipped one has 512; fit_injective keeps it for the embedded LM)
    m = json.loads((out / "manifest.json").read_text())
    m["config"]["n_ctx"] = N_CTX
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def _x(n_ch: int = 2, length: int = L) -> np.ndarray:
    t = np.arange(length)
    return np.stack([10 + np.sin(2 * np.pi * t / 12), 5 + 0.1 * t + np.cos(t / 3.0)])[None, :n_ch]  # [1, C, T]


def test_context_is_cut_to_the_last_values_that_fit(bundle, caplog):
    import alignts.runtime as rt
    from alignts.kernels.scaler import llmtime_scaler

    f = rt.load(bundle)
    with caplog.at_level(logging.WARNING, logger="alignts.runtime.paradigms.injective"):
        plan = f.plan(variant="gguf-q8_0", threads=1)
        f.plan(variant="gguf-q8_0", threads=1)  # the same cut again: no second warning
    # precision 2: a scaled value is < 4.34, so <= 3 digits + separator = 4 tokens; H values get 4 x 1.2 each;
    # the prompt starts with BOS: (128 - 1 - 1 - ceil(12 * 4.8)) // 4 = 17 values
    assert f.prompter.context_value_tokens == 4 and f.prompter.forecast_tokens(H) == 58
    assert plan.context_len == L and plan.context_used == 17 < L
    warnings = [r for r in caplog.records if "keeps the last 17 of the 48 values" in r.getMessage()]
    assert len(warnings) == 1
    x = _x()
    flat = x[0].astype(np.float64)
    prompts, off, sc = f.prompter.prompts(flat, H, n_values=plan.context_used)
    for p in prompts:
        assert (p[1:] == 14).sum() == 17 and p.size + f.prompter.forecast_tokens(H) < N_CTX
    # the scaler saw all L values (LLMTime scales before truncating)
    np.testing.assert_allclose(off, llmtime_scaler(flat)[0])
    y = f.forecast_scaled(x)
    assert y.shape == (1, 2, H) and np.isfinite(y).all()
    # a short context that fits is used whole, without a warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alignts.runtime.paradigms.injective"):
        plan = f.plan(context_len=10, variant="gguf-q8_0", threads=1)
    assert plan.context_used == 10 and not caplog.records


def test_too_long_horizon_fails_before_loading_with_the_fix(bundle, monkeypatch):
    import alignts.runtime as rt

    f = rt.load(bundle)
    # the longest horizon that leaves two context values: (128 - 1 - 1 - 2 * 4) / 4.8 = 24
    plan = f.plan(horizon=24, variant="gguf-q8_0", threads=1)
    assert plan.context_used == 2 and plan.horizon == 24
    f = rt.load(bundle)
    opened = []
    monkeypatch.setattr(type(f), "_open", lambda self, *a, **k: opened.append(a) or "x")
    with pytest.raises(ShapeError, match=r"horizon <= 24\. Fix: forecast a shorter horizon") as e:
        f.plan(horizon=25)
    assert "128 tokens" in str(e.value) and not opened


@pytest.mark.parametrize("keep_finished", [False, True])
def test_samples_stop_at_the_token_limit_and_are_padded(keep_finished):
    rng = np.random.default_rng(0)
    for i in range(50):
        H, limit = int(rng.integers(2, 10)), int(rng.integers(1, 30))
        cfg = SamplerConfig(n_samples=3, max_digits=int(rng.integers(1, 5)), seed=i, keep_finished=keep_finished)
        s = ConstrainedSampler(NUMERIC, 40, cfg)
        ids, lengths = s.generate(RandomLogits(40, seed=i), [0, 1], H, max_tokens=limit)
        assert lengths.max() <= limit
        v = s.sample_values(RandomLogits(40, seed=i), [0, 1], H, 2, max_tokens=limit, fill=-7.0)
        assert v.shape == (3, H) and np.isfinite(v).all()


def test_padding_repeats_the_last_value_and_fills_empty_samples():
    class Fives(RandomLogits):  # digit 5 is always the most likely: greedy writes 5 5 5 , 5 5 5 , ...
        def prefill(self, prompt_ids, n_parallel=1):
            return np.tile(self.row, (n_parallel, 1))

        def step(self, tokens, seq_ids=None):
            return np.tile(self.row, (len(tokens), 1))

    b = Fives(15)
    b.row = np.zeros(15, dtype=np.float32)
    b.row[6] = 5.0
    s = ConstrainedSampler(NUMERIC, 15, SamplerConfig(n_samples=2, greedy=True, max_digits=3))
    v = s.sample_values(b, [0], 4, 2, max_tokens=6, fill=-1.0)  # "5 5 5 , 5 5": one whole value
    np.testing.assert_allclose(v, 5.555)
    assert s.n_short == 2
    v = s.sample_values(b, [0], 4, 2, max_tokens=3, fill=-1.0)  # no whole value: the fill
    np.testing.assert_array_equal(v, -1.0)
    v = s.sample_values(b, [0], 2, 2, max_tokens=100)  # room enough: exactly H values, nothing padded
    np.testing.assert_allclose(v, 5.555)


def test_report_states_the_context_a_model_used():
    from alignts.bench.report import context_notes

    rows = [{"model": "inj:gguf-f16", "kind": "injective", "bundle": "/b/inj", "L": 336, "H": 96, "context_used": 12},
            {"model": "inj:gguf-q8_0", "kind": "injective", "bundle": "/b/inj", "L": 336, "H": 96, "context_used": 12},
            {"model": "int:onnx-fp32", "kind": "internal", "bundle": "/b/int", "L": 336, "H": 96, "context_used": 336},
            {"model": "dlinear", "kind": "baseline", "bundle": None, "L": 336, "H": 96, "context_used": 336}]
    notes = context_notes(rows)
    assert len(notes) == 1 and notes[0].startswith("Injective (inj) used the last 12 of 336 values")
