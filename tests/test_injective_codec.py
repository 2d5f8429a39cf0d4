"""Codec tables found in real tokenizer layouts (GPT-2-like BPE, LLaMA-like, the numeric LM's), round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignts.errors import CodecError
from alignts.kernels.digits import decode_digits, encode_digits
from alignts.runtime.codec_table import (CodecSettings, build_codec_table, hf_vocab, precheck_token_list,
                                         serialize_text, table_from_dict, table_to_dict)

from test_injective_utils import gpt2_like_tokenizer, letters_tokenizer, llama_like_tokenizer


@pytest.fixture(scope="module")
def vocabs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    from alignts.export.numeric_lm import write_hf_tokenizer

    write_hf_tokenizer(d / "numeric")
    return {"gpt2": hf_vocab(gpt2_like_tokenizer(d / "gpt2.json")),
            "llama": hf_vocab(llama_like_tokenizer(d / "llama.json")),
            "numeric": hf_vocab(d / "numeric")}


def test_gpt2_like_merges_digits_and_uses_space_digit_tokens(vocabs):
    v = vocabs["gpt2"]
    assert len(v.tokenize("1234567890")) < 10  # this layout merges digit runs
    table, dsep, info = build_codec_table(v)
    assert info.digits_merge and info.space_digit_tokens and dsep == " "
    assert [v.piece(i) for i in table.digit_ids] == [f" {d}" for d in range(10)]
    assert [v.piece(i) for i in table.value_sep] == [" ,"]
    assert v.piece(table.minus_id).strip() == "-"
    assert table.end_ids == (v.eos_id,)


def test_llama_like_splits_digits(vocabs):
    v = vocabs["llama"]
    table, dsep, info = build_codec_table(v)
    assert not info.digits_merge and dsep == "" and table.digit_sep == ()
    assert [v.piece(i) for i in table.digit_ids] == [str(d) for d in range(10)]
    assert v.piece(table.minus_id) == "-"
    assert table.end_ids == (v.eos_id,) and v.bos_id is not None


def test_numeric_lm_vocab(vocabs):
    from alignts.export.numeric_lm import DIGIT_IDS, EOS_ID, MINUS_ID, SEP_ID

    table, dsep, info = build_codec_table(vocabs["numeric"])
    assert table.digit_ids == DIGIT_IDS and table.value_sep == (SEP_ID,) and table.minus_id == MINUS_ID
    assert table.end_ids == (EOS_ID,) and dsep == "" and not info.digits_merge


@pytest.mark.parametrize("name", ["gpt2", "llama", "numeric"])
@pytest.mark.parametrize("precision", [2, 3])
def test_round_trip_and_canonical_tokenization(vocabs, name, precision):
    """values -> ids -> values is exact to the precision, and the ids are the tokenizer's own reading."""
    v = vocabs[name]
    table, dsep, info = build_codec_table(v)
    rng = np.random.default_rng(precision)
    x = np.round(rng.normal(0, 50, (4, 30)), 6)
    x[:, 0] = np.abs(x[:, 0])  # SentencePiece glues a leading '-' to its dummy prefix; scaled contexts are >= 0
    ids, n = encode_digits(x, table, precision)
    back, n_parsed = decode_digits(ids, n, table, precision, x.shape[1])
    assert (n_parsed == x.shape[1]).all()
    assert np.max(np.abs(back - x)) <= 0.5 * 10.0 ** -precision + 1e-9
    for row, k, xr in zip(ids, n, x):
        text = serialize_text(xr, precision, " ,", dsep, info.space_digit_tokens)
        got = v.tokenize(text)
        while got and v.piece(got[0]).strip() == "":  # SentencePiece's dummy prefix
            got = got[1:]
        assert got == row[:k].tolist(), (name, text)


def test_vocabulary_without_digits_raises_codec_error(tmp_path):
    v = hf_vocab(letters_tokenizer(tmp_path / "letters.json"))
    with pytest.raises(CodecError, match=r"no token for '0' '1'.*'9' ',' '-'"):
        build_codec_table(v)
    with pytest.raises(CodecError, match="'7'"):
        precheck_token_list([str(d) for d in range(10) if d != 7] + [",", "-"], "vocab")


def test_table_dict_round_trip_and_settings(vocabs):
    table, _, _ = build_codec_table(vocabs["gpt2"])
    assert table_from_dict(table_to_dict(table)) == table
    s = CodecSettings(precision=2, max_digits=5)
    assert CodecSettings.from_dict(s.to_dict()) == s


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-9999, 9999, allow_nan=False), min_size=1, max_size=40), st.integers(0, 4))
def test_round_trip_property_llmtime_text_table(values, precision):
    """Any finite values round-trip through the GPT-2-style text table within half a bin."""
    from alignts.kernels.digits import TEXT_TABLE

    x = np.asarray(values)[None]
    ids, n = encode_digits(x, TEXT_TABLE, precision)
    back, k = decode_digits(ids, n, TEXT_TABLE, precision, x.shape[1])
    assert int(k[0]) == x.shape[1]
    assert np.max(np.abs(back - x)) <= 0.5 * 10.0 ** -precision * (1 + 1e-9) + 1e-9 * np.max(np.abs(x))
