"""Injective bundles end to end on a tiny random GPT-2: llama.cpp vs onnxruntime, the lifecycle, bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

import alignts.runtime as rt  # noqa: E402
from alignts.errors import ArtifactError, CodecError, NotPlannedError, ShapeError  # noqa: E402
from alignts.export.fit_injective import InjectiveFitConfig, fit_injective  # noqa: E402

from test_injective_utils import letters_tokenizer, tiny_numeric_gpt2  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("inj")
    hf = tiny_numeric_gpt2(d / "hf")
    out = fit_injective(d / "bundle", InjectiveFitConfig(model=str(hf), samples=4, context_len=48, horizon=6,
                                                         precision=2))
    return out


def _series(n, L, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(L)
    return np.stack([[50 + 10 * np.sin(2 * np.pi * t / rng.integers(4, 13)) + rng.normal(0, 1, L)]
                     for _ in range(n)])  # [n, 1, L]


def test_manifest_and_validation(bundle):
    m = rt.load(bundle).manifest
    assert m.paradigm == "injective" and {v.name for v in m.variants} == {"onnx-fp32", "gguf-f32"}
    for v in m.variants:
        assert v.validation["max_abs_diff"] < 1e-3, v
    assert m.codec["precision"] == 2 and m.codec["table"]["value_sep_ids"] == [14]


def test_greedy_identical_llama_cpp_and_onnx(bundle):
    f = rt.load(bundle)
    x = _series(6, 48, seed=1)
    out = {}
    for v in ("gguf-f32", "onnx-fp32"):
        f.set_sampling(greedy=True, n_samples=1)
        f.plan(variant=v, threads=1)
        out[v] = f.forecast_scaled(x)
        assert out[v].shape == (6, 1, 6)
    np.testing.assert_array_equal(out["gguf-f32"], out["onnx-fp32"])


def test_samples_quantiles_and_every_sample_parses(bundle):
    f = rt.load(bundle)
    with pytest.raises(NotPlannedError):
        f.forecast_scaled(_series(1, 48))
    f.plan(variant="gguf-f32", horizon=5, threads=1)
    x = _series(3, 60, seed=2)
    s = f.forecast_samples(x)
    assert s.shape == (3, 1, 4, 5) and np.isfinite(s).all()
    q = f.forecast_quantiles(x)
    assert set(q) == {0.1, 0.5, 0.9}
    assert (q[0.1] <= q[0.5] + 1e-12).all() and (q[0.5] <= q[0.9] + 1e-12).all()
    np.testing.assert_allclose(q[0.5], f.forecast_scaled(x))  # the point forecast is the median; seeded


def test_samples_share_the_prompt_kv_unless_the_horizon_is_long(bundle, monkeypatch):
    import alignts.runtime.paradigms.injective as inj

    f = rt.load(bundle)
    f.plan(variant="gguf-f32", horizon=5, threads=1)  # ~100 prompt tokens, 4 samples of ~20: shared
    assert f.backend.kv_unified and f.backend.settings["kv_unified"]
    x = _series(2, 60, seed=3)
    shared = f.forecast_samples(x)
    monkeypatch.setattr(inj, "shared_prompt_kv", lambda *a: False)  # a KV stream a sample
    f = rt.load(bundle)
    f.plan(variant="gguf-f32", horizon=5, threads=1)
    assert not f.backend.kv_unified
    # the same seeded samples: f32 logits differ in the last bits only (summation order)
    np.testing.assert_allclose(f.forecast_samples(x), shared, rtol=1e-6, atol=1e-6)


def test_every_sample_parses_100_random_series_llama_cpp(bundle):
    """100 random series through the tiny random model: each of the n samples gives exactly H values."""
    from alignts.kernels.digits import decode_digits

    f = rt.load(bundle)
    f.plan(variant="gguf-f32", horizon=7, threads=1)
    rng = np.random.default_rng(5)
    prompts, _, _ = f.prompter.prompts(rng.normal(0, rng.uniform(0.1, 100, (100, 1)), (100, 40)).cumsum(1), 7)
    for i, p in enumerate(prompts):
        ids, lengths = f.sampler.generate(f.backend, p, 7, np.random.default_rng(i))
        _, n = decode_digits(ids, lengths, f.sampler.table, 2, 7)
        assert (n == 7).all()


def test_plan_limits(bundle):
    f = rt.load(bundle)
    with pytest.raises(ShapeError, match="horizon"):
        f.plan(horizon=500)


def test_truncated_and_non_gguf_files_raise_before_llama_cpp(bundle, tmp_path):
    bad = tmp_path / "b"
    shutil.copytree(bundle, bad)
    g = bad / "model-f32.gguf"
    g.write_bytes(g.read_bytes()[: g.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="size|truncated"):
        rt.load(bad)
    from alignts.runtime.backends.gguf import LlamaCppModel

    with pytest.raises(ArtifactError, match="truncated"):
        LlamaCppModel(g)
    txt = tmp_path / "x.gguf"
    txt.write_text("not a gguf")
    with pytest.raises(ArtifactError):
        fit_injective(tmp_path / "o", InjectiveFitConfig(model=str(txt)))


def test_gguf_without_digit_tokens_raises_codec_error(tmp_path):
    """A GGUF whose vocabulary has no digits is refused from its token list, before llama.cpp loads it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignts.export.gguf_writer import write_gguf

    tok = letters_tokenizer(tmp_path / "letters.json")
    import json

    spec = json.loads(tok.read_text())
    vocab = spec["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokens), n_positions=32, n_embd=32, n_layer=1, n_head=2))
    path = write_gguf(m, tmp_path / "letters.gguf", dtype="f32", tokens=tokens, merges=["\u0120 a"],
                      tokenizer_model="gpt2")
    with pytest.raises(CodecError, match="no token for '0'"):
        fit_injective(tmp_path / "o", InjectiveFitConfig(model=str(path)))


def test_lora_adapter_for_another_base_is_refused_and_process_survives(bundle, tmp_path):
    """An adapter with shapes of another model: ArtifactError before llama.cpp; run in a child process so a
    crash would show as a bad exit code rather than kill the test session."""
    code = f"""
import numpy as np
from alignts.export.gguf_writer import write_lora_adapter_gguf
from alignts.runtime.backends.gguf import LlamaCppModel
from alignts.errors import ArtifactError
ad = write_lora_adapter_gguf({{(0, "attn_qkv"): (np.zeros((4, 64), np.float32), np.zeros((192, 4), np.float32))}},
                             "gpt2", r"{tmp_path / 'other.gguf'}", alpha=8.0)
try:
    LlamaCppModel(r"{bundle / 'model-f32.gguf'}", loras=[(ad, 1.0)])
except ArtifactError as e:
    print("refused:", e)
m = LlamaCppModel(r"{bundle / 'model-f32.gguf'}", n_ctx=64)
print("alive", m.prefill([0, 2, 14], 1).shape)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused:" in r.stdout and "another base model" in r.stdout and "alive (1, 15)" in r.stdout


def test_bench_generation_reports_loop_and_raw_throughput(bundle):
    from alignts.bench.injective import bench_generation

    r = bench_generation(bundle / "model-f32.gguf", n_samples=4, horizon=6, context_len=32, n_threads=1, repeats=1)
    assert r["loop_tokens_per_s"] > 0 and r["raw_tokens_per_s"] > 0 and r["tokens"] > 0
    assert r["overhead"] == pytest.approx(1 - r["loop_tokens_per_s"] / r["raw_tokens_per_s"])
    assert r["kv_unified"]  # a short horizon: the runtime's choice
    from alignts.runtime.gguf_check import check_gguf

    n_train = check_gguf(bundle / "model-f32.gguf").n_ctx_train
    n_ctx = min(512, n_train) if n_train > 0 else 512
    assert n_ctx <= r["kv_cells"] < 4 * n_ctx  # its shared cache sized as the runtime's: one window + the samples'
    r = bench_generation(bundle / "model-f32.gguf", n_samples=4, horizon=6, context_len=32, n_threads=1, repeats=1,
                         kv_unified=False)
    assert not r["kv_unified"] and r["raw_tokens_per_s"] > 0


@pytest.mark.slow
def test_bench_overhead_within_15_percent_numeric_lm():
    from alignts.bench.injective import bench_generation
    from alignts.export.numeric_lm import ASSET_DIR

    r = bench_generation(ASSET_DIR / "numeric_lm-f16.gguf", n_threads=1, repeats=3)
    assert r["overhead"] <= 0.15, r


@pytest.mark.slow
def test_lora_adapter_and_fused_variants(tmp_path):
    """`fit injective --lora` on the numeric LM: the adapter passes check_lora_adapter and greedy forecasts of
    base + adapter equal the fused model's."""
    from alignts.export.fit_injective import InjectiveFitConfig
    from alignts.export.injective_lora import LoraFitConfig, fit_injective_lora
    from alignts.runtime.gguf_check import check_lora_adapter

    out = fit_injective_lora(tmp_path / "lora", InjectiveFitConfig(samples=2, horizon=6),
                             LoraFitConfig(data="statsmodels:co2", steps=3, batch_size=2, max_tokens=128))
    check_lora_adapter(out / "lora.gguf", out / "base.gguf")
    f = rt.load(out)
    assert f.manifest.lora["rank"] == 8
    x = (20 + 5 * np.sin(np.arange(96) / 2))[None, None]
    got = {}
    for v in ("gguf-f16-lora", "gguf-f16-fused"):
        f.set_sampling(greedy=True, n_samples=1)
        f.plan(variant=v, threads=1)
        got[v] = f.forecast_scaled(x)
    np.testing.assert_allclose(got["gguf-f16-lora"], got["gguf-f16-fused"], rtol=0.02)
