"""alignts.kernels.digits: CodecTable validation, encode/decode vs NumPy (exact), round trip, decoder rules."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from alignts.errors import CodecError, InputError, ShapeError
from alignts.kernels import digits as K
from alignts.kernels.digits import CodecTable

# A tokenizer that merges digits (digit_sep needed, value_sep shares the space) and one that splits them.
MERGING = CodecTable(digit_ids=tuple(range(100, 110)), value_sep=(7, 8), digit_sep=(7,), minus_id=9,
                     end_ids=(0,))
SPLITTING = CodecTable(digit_ids=(15, 3, 4, 5, 6, 40, 41, 42, 43, 44), value_sep=(11,), minus_id=12,
                       end_ids=(2, 1))
TABLES = st.sampled_from([MERGING, SPLITTING, K.TEXT_TABLE])

values = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=20),
                    elements=st.floats(-1e4, 1e4))


@settings(max_examples=60, deadline=None)
@given(values, TABLES, st.integers(0, 5))
def test_encode_decode_match_ref_and_round_trip(x, table, p):
    ids, lengths = K.encode_digits(x, table, p)
    rids, rlengths = K.encode_digits_ref(x, table, p)
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_array_equal(lengths, rlengths)
    assert ids.shape[:-1] == lengths.shape == x.shape[:-1]
    h = x.shape[-1]
    v, n = K.decode_digits(ids, lengths, table, p, h)
    rv, rn = K.decode_digits_ref(ids, lengths, table, p, h)
    np.testing.assert_array_equal(n, rn)
    np.testing.assert_array_equal(v, rv)  # same integer, same float formula: bit-equal
    assert (n == h).all()
    # half a bin, plus the float rounding of |x| * 10**p
    assert np.all(np.abs(v - x) <= 0.5 * 10.0 ** -p + 1e-12 * np.abs(x) + 1e-15)


tokens = st.lists(st.sampled_from([100, 101, 105, 109, 7, 8, 9, 0, 55, -1]), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(tokens, min_size=1, max_size=4), st.integers(1, 6), st.integers(0, 3))
def test_decode_random_streams_match_ref(rows, h, p):
    """Arbitrary (also malformed) streams: kernel and reference agree on every count and value."""
    t = max(len(r) for r in rows)
    ids = np.full((len(rows), t), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    lengths = np.array([len(r) for r in rows])
    v, n = K.decode_digits(ids, lengths, MERGING, p, h)
    rv, rn = K.decode_digits_ref(ids, lengths, MERGING, p, h)
    np.testing.assert_array_equal(n, rn)
    np.testing.assert_array_equal(v, rv)
    assert (n <= h).all() and v.shape == (len(rows), h)


def test_text_format_and_rules():
    assert K.encode_text(np.array([1.2345, -0.5, 0.0, 12.0]), 3) == "1 2 3 4 , -5 0 0 , 0 , 1 2 0 0 0 , "
    assert K.encode_text(np.array([[0.001], [-3.0]]), 1) == ["0 , ", "-3 0 , "]
    v, n = K.decode_text("1 2 3 , -4 5 , ", 3, 4)
    np.testing.assert_allclose(v, [0.1235, -0.0455, -0.0455, -0.0455])
    assert n == 2
    # a value cut by the end of the stream is dropped; one ended by another token counts
    assert K.decode_text("1 2 , 3 4", 0, 3)[1] == 1
    v, n = K.decode_text("1 2 , 3 4x , 5 ,", 0, 3)
    assert n == 2 and v[1] == 34.5 and v[2] == 34.5
    # misplaced minus stops; nothing parsed -> zeros and n_parsed 0
    assert K.decode_text("1 -2 , 3 ,", 0, 3)[1] == 1
    v, n = K.decode_text("abc", 0, 2)
    assert n == 0 and (v == 0).all()
    # horizon caps n_parsed
    assert K.decode_text("1 , 2 , 3 , 4 ,", 0, 2)[1] == 2


def test_end_ids_and_padding():
    ids = np.array([[101, 102 - 1, 8, 103 - 1, 0, 104, 8], [9, 105, 8, -1, 101, 8, 101]])
    v, n = K.decode_digits(ids, None, MERGING, 0, 3)
    np.testing.assert_array_equal(n, [2, 1])
    np.testing.assert_array_equal(v, [[11.5, 2.5, 2.5], [-5.5, -5.5, -5.5]])


def test_codec_table_validation():
    with pytest.raises(CodecError, match="10 distinct ids"):
        CodecTable(digit_ids=(1, 2, 3), value_sep=(20,), minus_id=21)
    with pytest.raises(CodecError, match="10 distinct ids"):
        CodecTable(digit_ids=(0,) * 10, value_sep=(20,), minus_id=21)
    with pytest.raises(CodecError, match="non-negative"):
        CodecTable(digit_ids=tuple(range(-1, 9)), value_sep=(20,), minus_id=21)
    with pytest.raises(CodecError, match="value_sep shares ids \\[3\\] with digit_ids"):
        CodecTable(digit_ids=tuple(range(10)), value_sep=(3,), minus_id=21)
    with pytest.raises(CodecError, match="minus_id shares"):
        CodecTable(digit_ids=tuple(range(10)), value_sep=(20,), minus_id=5)
    with pytest.raises(CodecError, match="contains minus_id"):
        CodecTable(digit_ids=tuple(range(10)), value_sep=(20,), digit_sep=(21,), minus_id=21)
    with pytest.raises(CodecError, match="no value could"):
        CodecTable(digit_ids=tuple(range(10)), value_sep=(20,), digit_sep=(20,), minus_id=21)
    with pytest.raises(CodecError, match="value_sep is empty"):
        CodecTable(digit_ids=tuple(range(10)), value_sep=(), minus_id=21)
    t = CodecTable(digit_ids=np.arange(10), value_sep=[20], minus_id=np.int64(21))
    assert t.digit_ids == tuple(range(10)) and t.value_sep == (20,) and t.minus_id == 21
    with pytest.raises(Exception):
        t.minus_id = 3  # frozen


def test_encode_errors():
    with pytest.raises(InputError, match=r"NaN at \(1,\).*fill missing"):
        K.encode_digits(np.array([1.0, np.nan]), MERGING)
    with pytest.raises(InputError, match=r"inf at \(0, 0\).*clean the input"):
        K.encode_digits(np.array([[np.inf, 1.0]]), MERGING)
    with pytest.raises(InputError, match="scale the series first"):
        K.encode_digits(np.array([1e15]), MERGING)
    with pytest.raises(InputError, match="precision"):
        K.encode_digits(np.array([1.0]), MERGING, precision=-1)
    with pytest.raises(ShapeError, match="lengths must lie"):
        K.decode_digits(np.zeros((1, 3), dtype=np.int64), np.array([4]), MERGING, 3, 2)
    with pytest.raises(ShapeError, match="integer array"):
        K.decode_digits(np.zeros((1, 3)), None, MERGING, 3, 2)


@pytest.mark.parametrize("decode", [K.decode_digits, K.decode_digits_ref], ids=["numba", "numpy"])
@pytest.mark.parametrize("text, n_parsed, first", [
    ("- -5 , 6 ,", 0, 0.0),                 # a second minus stops before any value
    ("1 2 -3 , 4 ,", 1, 12.5),              # a minus after digits ends the value and stops
    ("1" * 18 + " , 7 ,", 2, float(int("1" * 18)) + 0.5),
    ("1" * 19 + " , 7 ,", 0, 0.0),          # a 19th digit stops and drops the value
    (" , , 3 , ,", 1, 3.5),                 # separators without digits are skipped
    ("-, 3 ,", 1, 3.5),                     # a lone minus is reset by the separator
])
def test_decoder_rules_both_paths(decode, text, n_parsed, first):
    ids = np.array([[ord(c) for c in text]])
    v, n = decode(ids, None, K.TEXT_TABLE, 0, 3)
    assert n[0] == n_parsed and v[0, 0] == first
