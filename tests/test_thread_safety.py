"""One planned Forecaster called from 8 threads returns exactly what serial calls return, for the ONNX and the
llama.cpp variants of every paradigm (issue #11, defect 1: llama.cpp variants aborted with GGML_ASSERT,
segfaulted or hung; the ONNX causal LM of Injective mixed its past tensors across calls).

Injective samples (temperature 0.9, top-p 0.9) with the manifest's seed: each call draws from its own seeded
Generator, so the serial result is the exact reference. Bundles: tests/tiny_bundles.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("llama_cpp")
pytest.importorskip("optimum.exporters.onnx")

import alignts.runtime as rt  # noqa: E402

N_THREADS = 8


@pytest.fixture(scope="module")
def bundles(tiny_bundles):
    """conftest's session bundles (the same builders on statsmodels:co2), shared with the serve tests."""
    return tiny_bundles


def _inputs(f, n: int = N_THREADS, batch: int = 2) -> list[np.ndarray]:
    """n different inputs [batch, C, L] (so a result that leaks into another call shows)."""
    rng = np.random.default_rng(0)
    c = f.n_channels or 1
    return [(20 + rng.standard_normal((batch, c, f.context_len)).cumsum(-1)).astype(np.float32) for _ in range(n)]


def _same(a, b) -> bool:
    """Bit-for-bit equality of two results: arrays, or a Forecast's mean, median and quantiles."""
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("mean", "median", "quantiles"))


def _forecast(f, x):
    return f.forecast(x)


def hammer(forecasters, xs, calls: int, call=_forecast, n_threads: int = N_THREADS) -> int:
    """``call(forecasters[t % len], x)`` from ``n_threads`` threads, ``calls`` times each, on rotating inputs;
    returns how many results differ from the serial ones (any exception propagates)."""
    ref = [call(forecasters[0], x) for x in xs]

    def work(t: int) -> int:
        f = forecasters[t % len(forecasters)]
        return sum(not _same(call(f, xs[(t + i) % len(xs)]), ref[(t + i) % len(xs)]) for i in range(calls))

    with ThreadPoolExecutor(n_threads) as ex:
        return sum(ex.map(work, range(n_threads)))


# (paradigm, variant, calls per thread): >= 8 x 50 for every llama.cpp variant; the ONNX causal LM of Injective
# decodes a token per step on 2 cores, so it gets fewer calls here and 50 in the slow test
CASES = [("internal", "onnx-fp32", 50), ("internal", "gguf-f32", 50), ("internal", "gguf-f32-lora", 50),
         ("bridging", "onnx-fp32", 50), ("bridging", "gguf-f32", 50),
         ("injective", "gguf-f32", 50), ("injective", "onnx-fp32", 10)]


@pytest.mark.parametrize("paradigm, variant, calls", CASES, ids=[f"{p}-{v}" for p, v, _ in CASES])
def test_one_forecaster_many_threads_equals_serial(bundles, paradigm, variant, calls):
    f = rt.load(bundles[paradigm])
    f.plan(variant=variant, batch_size=2)
    assert hammer([f], _inputs(f), calls) == 0


@pytest.mark.slow
@pytest.mark.parametrize("paradigm, variant", [(p, v) for p, v, _ in CASES], ids=[f"{p}-{v}" for p, v, _ in CASES])
def test_one_forecaster_many_threads_equals_serial_long(bundles, paradigm, variant):
    f = rt.load(bundles[paradigm])
    f.plan(variant=variant, batch_size=2)
    assert hammer([f], _inputs(f), 100) == 0


@pytest.mark.parametrize("paradigm", ["bridging", "internal", "injective"])
def test_two_forecasters_of_one_bundle_from_threads(bundles, paradigm):
    """Bridging: the backbone cache hands both forecasters one llama.cpp model, whose lock keeps it safe.
    Internal and Injective: each forecaster has its own context, and the two run in parallel."""
    fs = [rt.load(bundles[paradigm]) for _ in range(2)]
    for f in fs:
        f.plan(variant="gguf-f32", batch_size=2)
    if paradigm == "bridging":
        assert fs[0].backbone is fs[1].backbone
    assert hammer(fs, _inputs(fs[0]), 10) == 0


@pytest.mark.parametrize("variant", ["gguf-f32", "onnx-fp32"])
def test_injective_quantiles_and_samples_from_threads(bundles, variant):
    f = rt.load(bundles["injective"])
    f.plan(variant=variant, batch_size=2)
    xs = _inputs(f, n=4)
    assert hammer([f], xs, 5, call=lambda f, x: f.forecast(x, quantiles=(0.1, 0.5, 0.9))) == 0
    assert hammer([f], xs, 5, call=lambda f, x: f.forecast_samples(x)) == 0
