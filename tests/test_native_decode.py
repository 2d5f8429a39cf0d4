"""The compiled decode loop (numba calling alignts' llama.cpp, scripts/patch_llama.py change 9) on the shipped
numeric LM: the same tokens as the Python loop for the same seed, its errors, the compiled raw floor, and one model
shared by threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import alignts
from alignts.errors import BackendUnavailableError, ShapeError
from alignts.runtime.sampler import ConstrainedSampler, SamplerConfig

pytest.importorskip("llama_cpp")

from alignts.runtime.backends import gguf_native  # noqa: E402
from alignts.runtime.backends.gguf import LlamaCppModel, llama_patch_level  # noqa: E402
from alignts.runtime.codec_table import build_codec_table, llama_vocab  # noqa: E402

ASSET = Path(alignts.__file__).parent / "assets" / "numeric_lm" / "numeric_lm-q8_0.gguf"


class PythonSteps:
    """The same model without ``native_step``: the sampler steps it in Python."""

    def __init__(self, model):
        self.model = model
        self.n_vocab = model.n_vocab
        self.lock = model.lock

    def prefill(self, prompt_ids, n_parallel=1):
        return self.model.prefill(prompt_ids, n_parallel)

    def step(self, tokens, seq_ids=None):
        return self.model.step(tokens, seq_ids)


@pytest.fixture(scope="module")
def model():
    if llama_patch_level() < 9:
        pytest.skip("a stock llama.cpp (no alignts_llama_decode): generation steps in Python; bash scripts/setup")
    with LlamaCppModel(ASSET, n_ctx=256, n_seq_max=8, n_threads=1, kv_type="f16") as m:
        yield m


@pytest.fixture(scope="module")
def table(model):
    return build_codec_table(llama_vocab(model))[0]


def _prompt(table, n_values=30, seed=0):
    """A numeric-LM prompt: end-of-text, then values of two digits separated by commas."""
    rng = np.random.default_rng(seed)
    ids = [0]
    for v in rng.integers(10, 99, n_values):
        ids += [table.digit_ids[int(d)] for d in str(v)] + list(table.value_sep)
    return np.asarray(ids)


@pytest.mark.parametrize("n, kw, max_tokens", [
    (1, {}, None),
    (8, {"top_p": 0.9, "temperature": 0.9}, None),
    (3, {"greedy": True}, None),
    (5, {"keep_finished": True, "top_p": 0.7}, None),
    (4, {"temperature": 1.5}, 9),  # samples stop at max_tokens with fewer values
])
def test_compiled_loop_draws_what_the_python_loop_draws(model, table, n, kw, max_tokens):
    assert model.native_step() is not None
    prompt = _prompt(table, seed=n)
    s = ConstrainedSampler(table, model.n_vocab, SamplerConfig(n_samples=n, max_digits=4, seed=0, **kw))
    rng_c, rng_p = np.random.default_rng(n), np.random.default_rng(n)
    ids_c, len_c = s.generate(model, prompt, 6, rng_c, max_tokens=max_tokens)
    decoded_c = s.decoded_tokens
    ids_p, len_p = s.generate(PythonSteps(model), prompt, 6, rng_p, max_tokens=max_tokens)
    np.testing.assert_array_equal(ids_c, ids_p)
    np.testing.assert_array_equal(len_c, len_p)
    assert decoded_c == s.decoded_tokens > 0
    assert rng_c.random() == rng_p.random()  # the compiled loop drew as many numbers from the caller's Generator
    if max_tokens is not None:
        assert len_c.max() == max_tokens


def test_a_stock_llama_cpp_steps_in_python(model, table, monkeypatch):
    """Without alignts_llama_decode (a stock llama-cpp-python) native_step is None and generation and the raw floor
    step in Python, drawing the same tokens."""
    from alignts.runtime.backends import gguf

    s = ConstrainedSampler(table, model.n_vocab, SamplerConfig(n_samples=2, seed=0))
    prompt = _prompt(table)
    want = s.generate(model, prompt, 4, np.random.default_rng(1))
    monkeypatch.setitem(gguf._state, "native", None)
    assert model.native_step() is None
    got = s.generate(model, prompt, 4, np.random.default_rng(1))
    np.testing.assert_array_equal(got[0], want[0])
    assert model.raw_decode_benchmark(prompt, np.ones((3, 2), dtype=np.int32))["loop"] == "python"


def test_compiled_loop_errors_and_the_model_survives(model, table):
    prompt = _prompt(table, n_values=80)  # 241 tokens of n_ctx=256: the samples reach the window's end
    s = ConstrainedSampler(table, model.n_vocab, SamplerConfig(n_samples=2, seed=0))
    for backend in (model, PythonSteps(model)):
        with pytest.raises(ShapeError, match="reached n_ctx=256"):
            s.generate(backend, prompt, 24)

    class FailingDecode:  # llama.cpp fails a step: the compiled loop stops and raises with the code
        n_vocab, lock = model.n_vocab, model.lock

        def prefill(self, prompt_ids, n_parallel=1):
            return model.prefill(prompt_ids, n_parallel)

        def native_step(self):
            return model.native_step()._replace(decode=gguf_native._DECODE(lambda ctx, batch: -3))

    with pytest.raises(BackendUnavailableError, match="llama_decode failed with code -3"):
        s.generate(FailingDecode(), prompt[:20], 4)
    ids, lengths = s.generate(model, prompt[:60], 4)  # the model still works
    assert lengths.min() >= 8


def test_raw_decode_benchmark_compiled_and_python_agree(model, table, monkeypatch):
    prompt = _prompt(table, n_values=10)
    tokens = np.random.default_rng(3).integers(1, 12, (12, 3)).astype(np.int32)
    r = model.raw_decode_benchmark(prompt, tokens)
    assert r["loop"] == "compiled" and r["n_steps"] == 12 and r["tokens_per_s"] > 0
    pos, after = model._seq_pos[:3].copy(), model.step([1, 2, 3])
    monkeypatch.setattr(model, "native_step", lambda: None)
    r = model.raw_decode_benchmark(prompt, tokens)
    assert r["loop"] == "python"
    np.testing.assert_array_equal(model._seq_pos[:3], pos)
    np.testing.assert_array_equal(model.step([1, 2, 3]), after)  # the same cache contents: the same logits
    with pytest.raises(ShapeError, match="one a sequence"):
        model.raw_decode_benchmark(prompt, tokens, n_parallel=2)


@pytest.mark.parametrize("compiled", [True, False])
def test_one_model_shared_by_threads(model, table, compiled):
    """Each generation holds the model's lock from prefill to its last step: four threads sharing one model draw
    what they draw one after another (the compiled loop and the Python one)."""
    backend = model if compiled else PythonSteps(model)
    s = ConstrainedSampler(table, model.n_vocab, SamplerConfig(n_samples=3, max_digits=4))
    prompts = [_prompt(table, n_values=20, seed=k) for k in range(4)]
    want = [s.generate(backend, p, 5, np.random.default_rng(k)) for k, p in enumerate(prompts)]
    got: dict[int, tuple] = {}

    def run(k):
        for _ in range(3):
            got[k] = s.generate(backend, prompts[k], 5, np.random.default_rng(k))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        np.testing.assert_array_equal(got[k][0], want[k][0])
        np.testing.assert_array_equal(got[k][1], want[k][1])
