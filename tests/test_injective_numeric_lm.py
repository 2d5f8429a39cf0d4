"""The embedded numeric LM: tokenizer layout, corpus, the packaged GGUF + manifest, the default bundle, CLI,
and the training code (plain-torch GPT-2 = transformers' GPT-2, CPU/CUDA training loop, corpus workers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignts.export.numeric_lm import (ASSET_DIR, EOS_ID, GPU_COMMAND, REBUILD_COMMAND, SEP_ID, TOKENS, VOCAB_SIZE,
                                       Corpus, CorpusConfig, TrainConfig, build_tokenizer, decode_text, value_ids)


def test_tokenizer_is_byte_level_bpe_with_merges_and_reads_corpus_text():
    tok = build_tokenizer()
    spec = json.loads(tok.to_str())
    assert spec["model"]["type"] == "BPE" and spec["model"]["merges"]
    assert spec["pre_tokenizer"]["type"] == "ByteLevel"
    ids = value_ids(np.array([1.234, -0.05, 12.0, 0.0]), 2, 5)
    text = decode_text(ids)
    assert text == "123 ,-5 ,1200 ,0 ,"
    assert tok.encode(text).ids == ids  # the corpus ids are the tokenizer's own reading


def test_value_ids_match_the_per_value_serializer():
    """The vectorized serializer writes what LLMTime's per-value loop writes (truncation, no leading zeros,
    minus only before a nonzero value, values clipped to max_digits)."""
    rng = np.random.default_rng(0)
    for p, md in [(2, 5), (3, 6), (0, 3), (2, 2)]:
        z = rng.standard_normal(300) * 10 ** rng.uniform(-3, 4, 300)
        z[::7], z[::11] = 0.0, -1e-4
        want: list[int] = []
        for v in z:
            k = min(int(np.floor(abs(v) * 10 ** p)), 10 ** md - 1)
            want += ([12] if v < 0 and k > 0 else []) + [1 + int(c) for c in str(k)] + [SEP_ID]
        assert value_ids(z, p, md) == want


def test_corpus_rows_deterministic_and_in_vocab():
    cfg = CorpusConfig(ctx_tokens=128)
    a = Corpus(cfg, 3).rows(4)
    b = Corpus(cfg, 3).rows(4)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 128) and a.min() >= 0 and a.max() < VOCAB_SIZE
    assert (a[:, 0] == EOS_ID).all() and (a == SEP_ID).sum() > 4 * 10
    assert not np.array_equal(a, Corpus(cfg, 4).rows(4))


def test_seasonal_and_mixup_corpus():
    from alignts.export.numeric_lm import _seasonal_series

    rng = np.random.default_rng(0)
    for _ in range(50):
        y = _seasonal_series(rng, 64)
        assert y.size >= 64 and np.isfinite(y).all()
    cfg = CorpusConfig(ctx_tokens=256, p_seasonal=0.7, p_mixup=0.5, precision_probs=(0.9, 0.1), max_len=320)
    a = Corpus(cfg, 1).rows(8)
    np.testing.assert_array_equal(a, Corpus(cfg, 1).rows(8))
    assert a.min() >= 0 and a.max() < VOCAB_SIZE and (a[:, 0] == EOS_ID).all()


def test_tiny_gpt2_is_transformers_gpt2():
    """The training model's state dict loads into transformers' GPT2LMHeadModel with the same logits and loss."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import GPT2LMHeadModel

    from alignts.export.numeric_lm import gpt2_config, tiny_gpt2

    cfg = TrainConfig(n_layer=2, n_embd=64, n_head=4, n_positions=128)
    m = tiny_gpt2(cfg).eval()
    hf = GPT2LMHeadModel(gpt2_config(cfg)).eval()
    missing, unexpected = hf.load_state_dict(m.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    ids = torch.from_numpy(Corpus(CorpusConfig(ctx_tokens=128), 0).rows(2))
    with torch.no_grad():
        out = hf(ids, labels=ids)
        np.testing.assert_allclose(m(ids).numpy(), out.logits.numpy(), atol=1e-4)
        assert abs(m.loss(ids).item() - out.loss.item()) < 1e-4


@pytest.mark.parametrize("workers", [0, 1])
def test_train_on_cpu_then_load_as_transformers(tmp_path, workers):
    """The training loop (the one `--device cuda` runs) on the CPU: a wall budget stops it, weights and
    training.json land in the folder, and load_hf_model reads them back as transformers' GPT-2."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from alignts.export.numeric_lm import _python_command, load_hf_model, tiny_gpt2, train

    cfg = TrainConfig(n_layer=1, n_embd=32, n_head=2, n_positions=64, steps=10_000, batch_size=2, warmup=2,
                      threads=1, budget_s=1.5 if workers else None, stop_at=None if workers else 4,
                      workers=workers, corpus=CorpusConfig(ctx_tokens=64, p_seasonal=0.5, p_mixup=0.2))
    facts = train(cfg, tmp_path, log_every=1, val_every=2)
    assert 0 < facts["steps_done"] < 10_000 and facts["final_val_loss"] > 0
    assert facts["tokens_seen"] == facts["steps_done"] * 2 * 64
    if workers:
        assert facts["rows_fresh"] + facts["rows_reused"] == facts["steps_done"] * 2
    saved = json.loads((tmp_path / "training.json").read_text())
    assert saved["config"]["corpus"]["p_seasonal"] == 0.5
    hf = load_hf_model(tmp_path)
    m = tiny_gpt2(TrainConfig.from_dict(saved["config"]))
    from alignts.export.numeric_lm import load_weights

    m.load_state_dict(load_weights(tmp_path))
    ids = torch.from_numpy(Corpus(CorpusConfig(ctx_tokens=64), 0).rows(1))
    with torch.no_grad():
        np.testing.assert_allclose(hf(ids).logits.numpy(), m(ids).numpy(), atol=1e-4)
    cmd = _python_command(saved["config"], saved)
    assert "--p-seasonal 0.5" in cmd and "--heads 2" in cmd


def _asset_manifest():
    p = ASSET_DIR / "manifest.json"
    if not p.is_file():
        pytest.skip("the packaged numeric LM is not built (scripts/build_numeric_lm)")
    from alignts.runtime.manifest import read_manifest

    return read_manifest(ASSET_DIR)


def test_packaged_numeric_lm_manifest():
    m = _asset_manifest()  # sha256 of every file checked
    assert m.paradigm == "injective" and m.architecture == "gpt2"
    assert {v.name for v in m.variants} == {"gguf-f16", "gguf-q8_0"}
    assert sum(e.size for e in m.files.values()) < 20_000_000  # package data: at most ~20 MB
    t = m.training
    assert t["command"] in (REBUILD_COMMAND, GPU_COMMAND) and "--seed 0" in t["python_command"]
    assert t["seed"] == 0 and t["wall_s"] > 0 and t["steps_done"] > 0 and t["machine"]
    assert m.codec["precision"] == 2 and m.codec["value_sep"] == " ,"
    assert m.config["n_ctx"] == t["config"]["n_positions"]
    for v in m.variants:
        assert v.validation["max_abs_diff"] < v.validation["tolerance"]


def test_packaged_gguf_vocab_gives_the_same_codec_table():
    pytest.importorskip("llama_cpp")
    _asset_manifest()
    from alignts.runtime.backends.gguf import LlamaCppModel
    from alignts.runtime.codec_table import build_codec_table, hf_vocab, llama_vocab

    with LlamaCppModel(ASSET_DIR / "numeric_lm-q8_0.gguf", n_ctx=64, n_threads=1) as m:
        a, _, _ = build_codec_table(llama_vocab(m))
    b, _, _ = build_codec_table(hf_vocab(ASSET_DIR / "tokenizer.json"))
    assert a == b and a.value_sep == (SEP_ID,) and TOKENS[SEP_ID] == "\u0120,"


def test_default_bundle_forecasts_through_the_cli(tmp_path):
    pytest.importorskip("llama_cpp")
    _asset_manifest()
    from alignts.cli import main

    out = tmp_path / "b"
    assert main(["fit", "injective", "--out", str(out), "--samples", "4", "--horizon", "6", "--context", "48"]) == 0
    import alignts.runtime as rt

    f = rt.load(out)
    f.plan(variant="gguf-q8_0", threads=1)
    t = np.arange(120)
    x = np.stack([10 + np.sin(2 * np.pi * t / 12), 5 + 0.1 * t])[None]  # [1, 2, 120]
    y = f.forecast_scaled(x)
    assert y.shape == (1, 2, 6) and np.isfinite(y).all()
    q = f.forecast_quantiles(x)
    assert (q[0.1] <= q[0.9]).all()
    assert main(["fit", "injective", "--out", str(out), "--description", "weekly flu"]) == 2  # exists already
    assert main(["fit", "injective", "--out", str(tmp_path / "c"), "--description", "weekly flu"]) == 2


def test_zero_shot_bench_on_the_shared_data(tmp_path, shared_data):
    """`alignts bench injective BUNDLE --zero-shot DIR` on a small slice: both data sets scored beside seasonal
    naive, the protocol's knobs (tourism context, temperature) recorded."""
    pytest.importorskip("llama_cpp")
    data = shared_data
    from alignts.cli import main

    out = tmp_path / "b"
    assert main(["fit", "injective", "--out", str(out), "--samples", "2"]) == 0
    js = tmp_path / "zs.json"
    assert main(["bench", "injective", str(out), "--zero-shot", str(data), "--samples", "2", "--max-series", "3",
                 "--tourism-context", "40", "--temperature", "0.5", "--threads", "1", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    assert r["temperature"] == 0.5 and r["samples"] == 2
    t = r["tourism_monthly"]
    assert t["L"] == 40 and t["max_series"] == 3 and t["prompt_values_kept"] == 40
    assert t["rows"]["injective"]["n_series"] == 3 and np.isfinite(t["rows"]["injective"]["mase"])
    ili = r["national_illness"]
    assert ili["n_channels"] == 7 and {"injective", "seasonal_naive", "last_value"} <= set(ili["rows"])
