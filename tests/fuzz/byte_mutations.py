"""Structure-aware byte mutations of text files (CSV, .tsf, JSON) for the fuzz targets, drawn with hypothesis
so that a failure shrinks to the fewest, smallest edits of a seed.

`mutate(data, seed)` applies 1-4 edits: byte flips, truncation, separator swaps, a field replaced by a hostile
token (huge and tiny numbers, NaN spellings, odd dates, quotes, NUL), duplicated / dropped / swapped lines, and
inserted random bytes.
"""

from __future__ import annotations

import re

from hypothesis import strategies as st

TOKENS = [
    # numbers at and past the float64 / float32 limits, integers past 64 bits
    b"1e308", b"-1e308", b"1.7976931348623157e308", b"1e309", b"-1e999", b"3.5e38", b"1e-300", b"1e-308",
    b"4.9e-324", b"1e-45", b"18446744073709551616", b"-9223372036854775809", b"1" + b"0" * 400, b"0", b"-0",
    # missing-value spellings and things that only look like numbers
    b"", b"nan", b"NaN", b"-nan", b"inf", b"-inf", b"Infinity", b"?", b"NA", b"null", b"None", b"1_000",
    b"0x10", b"1e", b".", b"-", b"+", "\u0661\u0662".encode(), b"1,5", b"(1+2j)",
    # dates: epoch seconds / ms / ns, yyyymmdd, out of range, invalid, offsets, words
    b"1467331200", b"1467331200000", b"1467331200000000000", b"20160701", b"2300-01-01", b"1600-01-01",
    b"2016-13-45", b"2016-07-01T00:00:00+05:00", b"2016-07-01 00:00:00-08:00", b"yesterday", b"24:61",
    # structure
    b'"', b'""', b'"a,b"', b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"@attribute", b"@attribute x", b"@data",
    b"@horizon 99999999999999999999", b":", b",", b";", b"\t", b"|", b"\r\n", b"\n", b"{", b"}", b"[", b"]",
    b"true", b"null", b"-1", b"1e999999",
]
SEPARATORS = [b",", b";", b"\t", b"|", b":", b" ", b"\n", b""]
_FIELD = re.compile(rb"[^,;\t:\n\r|]+")


def _flip(data, b: bytearray) -> bytearray:
    if b:
        b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    return b


def _truncate(data, b: bytearray) -> bytearray:
    return b[:data.draw(st.integers(0, len(b)))]


def _swap_separator(data, b: bytearray) -> bytearray:
    old = data.draw(st.sampled_from([b",", b";", b":", b"\t", b"\n", b"-", b"."]))
    new = data.draw(st.sampled_from(SEPARATORS))
    count = data.draw(st.sampled_from([-1, 1, 2, 5]))
    return bytearray(bytes(b).replace(old, new, count))


def _replace_field(data, b: bytearray) -> bytearray:
    fields = list(_FIELD.finditer(bytes(b)))
    if not fields:
        return b
    m = fields[data.draw(st.integers(0, len(fields) - 1))]
    token = data.draw(st.one_of(st.sampled_from(TOKENS),
                                st.floats(allow_nan=True, allow_infinity=True).map(lambda v: repr(v).encode()),
                                st.integers(-(2 ** 80), 2 ** 80).map(lambda v: str(v).encode())))
    return b[:m.start()] + token + b[m.end():]


def _lines_edit(data, b: bytearray) -> bytearray:
    lines = bytes(b).split(b"\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    op = data.draw(st.sampled_from(["dup", "drop", "swap", "dup_many"]))
    if op == "dup":
        lines.insert(i, lines[i])
    elif op == "dup_many":
        lines[i:i + 1] = [lines[i]] * data.draw(st.integers(2, 50))
    elif op == "drop":
        del lines[i]
    else:
        j = data.draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    return bytearray(b"\n".join(lines))


def _insert(data, b: bytearray) -> bytearray:
    at = data.draw(st.integers(0, len(b)))
    return b[:at] + data.draw(st.binary(min_size=1, max_size=8)) + b[at:]


OPS = [_flip, _truncate, _swap_separator, _replace_field, _replace_field, _lines_edit, _insert]


def mutate(data, seed: bytes, max_edits: int = 4) -> bytes:
    """Apply 1..max_edits edits drawn from ``data`` (hypothesis ``st.data()``) to ``seed``."""
    b = bytearray(seed)
    for _ in range(data.draw(st.integers(1, max_edits), label="edits")):
        b = data.draw(st.sampled_from(OPS), label="op")(data, b)
    return bytes(b)
