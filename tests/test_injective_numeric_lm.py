"""The embedded numeric LM: tokenizer layout, corpus, the packaged GGUF + manifest, the default bundle, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignts.export.numeric_lm import (ASSET_DIR, EOS_ID, SEP_ID, TOKENS, VOCAB_SIZE, Corpus, CorpusConfig,
                                       build_tokenizer, decode_text, value_ids)


def test_tokenizer_is_byte_level_bpe_with_merges_and_reads_corpus_text():
    tok = build_tokenizer()
    spec = json.loads(tok.to_str())
    assert spec["model"]["type"] == "BPE" and spec["model"]["merges"]
    assert spec["pre_tokenizer"]["type"] == "ByteLevel"
    ids = value_ids(np.array([1.234, -0.05, 12.0, 0.0]), 2, 5)
    text = decode_text(ids)
    assert text == "123 ,-5 ,1200 ,0 ,"
    assert tok.encode(text).ids == ids  # the corpus ids are the tokenizer's own reading


def test_corpus_rows_deterministic_and_in_vocab():
    cfg = CorpusConfig(ctx_tokens=128)
    a = Corpus(cfg, 3).rows(4)
    b = Corpus(cfg, 3).rows(4)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 128) and a.min() >= 0 and a.max() < VOCAB_SIZE
    assert (a[:, 0] == EOS_ID).all() and (a == SEP_ID).sum() > 4 * 10
    assert not np.array_equal(a, Corpus(cfg, 4).rows(4))


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
    assert sum(e.size for e in m.files.values()) < 8_000_000  # a few MB of package data
    t = m.training
    assert t["command"] == "scripts/build_numeric_lm" and "--seed 0" in t["python_command"]
    assert t["seed"] == 0 and t["wall_s"] > 0 and t["steps_done"] > 0
    assert m.codec["precision"] == 2 and m.codec["value_sep"] == " ,"
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
    y = f.forecast(x)
    assert y.shape == (1, 2, 6) and np.isfinite(y).all()
    q = f.forecast_quantiles(x)
    assert (q[0.1] <= q[0.9]).all()
    assert main(["fit", "injective", "--out", str(out), "--description", "weekly flu"]) == 2  # exists already
    assert main(["fit", "injective", "--out", str(tmp_path / "c"), "--description", "weekly flu"]) == 2
