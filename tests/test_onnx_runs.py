"""onnxruntime encoders in runs of at most budget.ONNX_RUN_TOKENS tokens (Internal's model, Bridging's shared
backbone): the split is even, and a forecast split into runs equals the forecast of one run."""

from __future__ import annotations

import numpy as np
import pytest

from alignts.runtime import budget
from alignts.runtime.budget import onnx_run_series


def test_runs_are_even_and_within_the_token_bound():
    assert onnx_run_series(56, 22) == 28  # 1024 tokens hold 46 series: two runs of 28, not 46 + 10
    assert onnx_run_series(7, 22) == 7
    assert onnx_run_series(56, 119) == 8
    assert onnx_run_series(47, 22) == 24
    assert onnx_run_series(3, 5000) == 1  # a series longer than the bound runs alone
    assert onnx_run_series(0, 0) == 1
    for series in range(1, 200):
        for tokens in (1, 7, 22, 119, 600):
            per = onnx_run_series(series, tokens)
            runs = -(-series // per)
            assert per * tokens <= max(tokens, budget.ONNX_RUN_TOKENS), (series, tokens)
            assert runs == -(-series // max(1, budget.ONNX_RUN_TOKENS // tokens)), (series, tokens)  # no extra run
            assert per * (runs - 1) < series  # every run has a series


def _x(n_batch: int, n_ch: int, length: int) -> np.ndarray:
    return np.cumsum(np.random.default_rng(0).normal(size=(n_batch, n_ch, length)), -1).astype(np.float32)


@pytest.mark.parametrize("paradigm", ["internal", "bridging"])
def test_forecast_in_runs_equals_one_run(tiny_bundles, monkeypatch, paradigm):
    from alignts.runtime import load

    f = load(tiny_bundles[paradigm])
    f.plan(batch_size=5, variant="onnx-fp32")
    x = _x(5, f.n_channels or 1, f.context_len)
    session = f._session if paradigm == "internal" else f.backbone._session
    whole = f.forecast_scaled(x)

    calls = []
    run = session.run

    def counted(feeds):
        calls.append(next(iter(feeds.values())).shape[0])
        return run(feeds)

    monkeypatch.setattr(session, "run", counted)
    tokens = f.cfg.n_patches + getattr(f.cfg, "prompt_len", 0)
    monkeypatch.setattr(budget, "ONNX_RUN_TOKENS", 2 * tokens)  # two series a run
    split = f.forecast_scaled(x)
    S = 5 * (f.n_channels or 1)
    assert calls == [2] * (S // 2) + [1] * (S % 2), calls
    assert float(np.max(np.abs(split - whole))) <= 1e-5 * max(1.0, float(np.max(np.abs(whole))))
