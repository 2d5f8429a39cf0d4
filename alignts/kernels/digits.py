"""LLMTime's digit codec: scaled values <-> token ids of a causal LM.

Encoding (per value ``x``, precision ``p``): ``v = floor(|x| * 10**p)`` as an integer, written without
leading zeros ("0" for zero), ``minus_id`` before negative values (``x < 0``), ``digit_sep`` ids between
digits and ``value_sep`` ids after every value: LLMTime's ``"1 2 3 , 4 5 6 ,"``. No decimal point: the
caller scales first (``scaler.py``) so that typical ``|x| < 1e4``.

Decoding reads the stream value by value (``decode_digits``):
- a digit appends to the current value (at most 18 digits; a 19th stops decoding and drops that value);
- ``digit_sep`` ids are skipped; a ``minus_id`` before the first digit of a value makes it negative;
- a ``value_sep`` id ends the value (ids that are in both ``value_sep`` and ``digit_sep``, such as the space
  of ``" ,"`` vs ``" "``, only separate; the value ends at the first ``value_sep`` id that is not a
  ``digit_sep`` id); a separator with no digit before it is skipped;
- an ``end_ids`` id, any id not in the table, or a misplaced minus stops decoding; the value being read
  counts if it has a digit (the model ended it);
- the end of the stream (``lengths``) or a negative id (padding) stops decoding and drops the value being
  read, since it may be cut short;
- decoding also stops after ``horizon`` values.
Each value becomes ``sign * (v + 0.5) / 10**p`` (LLMTime's half-bin correction), so
``|decode(encode(x)) - x| <= 0.5 * 10**-p`` (up to float rounding of ``|x| * 10**p``). Short outputs are padded
with the last parsed value; ``n_parsed`` says how many were read (0: nothing parsed, values are 0.0).

NaN policy: ``encode_digits`` rejects NaN and inf (InputError): impute before encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from alignts.errors import CodecError, InputError, ShapeError
from alignts.kernels.numba_cache import CACHE

__all__ = ["CodecTable", "TEXT_TABLE", "encode_digits", "decode_digits", "encode_text", "decode_text",
           "encode_digits_ref", "decode_digits_ref", "MAX_ABS", "MAX_DIGITS"]

MAX_ABS = 1e15           # |x| must stay below this
MAX_DIGITS = 18          # digits per value (v < 10**18 fits int64)
_POW10 = 10 ** np.arange(MAX_DIGITS + 1, dtype=np.int64)  # [19]

# token classes of the decoder's lookup table
_DSEP, _MINUS, _VSEP, _END, _OTHER, _PAD = 10, 11, 12, 13, 14, 15


def _ids_tuple(value, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        value = (value,)
    try:
        out = tuple(int(i) for i in value)
    except (TypeError, ValueError):
        raise CodecError(f"CodecTable.{name} must be a sequence of token ids; got {value!r}. "
                         "Fix: pass a tuple of ints") from None
    if any(i < 0 for i in out):
        raise CodecError(f"CodecTable.{name} must hold non-negative token ids; got {out}. "
                         "Fix: use the tokenizer's ids (>= 0)")
    return out


@dataclass(frozen=True, kw_only=True)
class CodecTable:
    """Token ids the digit codec reads and writes.

    digit_ids: 10 distinct ids for the digits 0-9, in order.
    value_sep: ids written after each value (LLMTime: the tokens of ``" ,"``); at least one of them must not
               be a ``digit_sep`` id, since that one ends a value when decoding.
    digit_sep: ids written between the digits of a value (LLMTime: ``" "`` for tokenizers that merge digits;
               empty for tokenizers that split them).
    minus_id:  id written before negative values.
    end_ids:   ids that end decoding (e.g. EOS).
    """

    digit_ids: tuple[int, ...]
    value_sep: tuple[int, ...]
    digit_sep: tuple[int, ...] = ()
    minus_id: int
    end_ids: tuple[int, ...] = ()

    def __post_init__(self):
        digits = _ids_tuple(self.digit_ids, "digit_ids")
        vsep = _ids_tuple(self.value_sep, "value_sep")
        dsep = _ids_tuple(self.digit_sep, "digit_sep")
        ends = _ids_tuple(self.end_ids, "end_ids")
        (minus,) = _ids_tuple(self.minus_id, "minus_id") if np.ndim(self.minus_id) == 0 else (None,)
        if minus is None:
            raise CodecError(f"CodecTable.minus_id must be one token id; got {self.minus_id!r}. "
                             "Fix: pass the id of the '-' token")
        if len(digits) != 10 or len(set(digits)) != 10:
            raise CodecError(f"CodecTable.digit_ids must be 10 distinct ids for 0-9; got {digits}. "
                             "Fix: map each digit character to its own token id")
        if not vsep:
            raise CodecError("CodecTable.value_sep is empty; expected the ids of the separator written after "
                             "each value. Fix: pass e.g. the ids of ' ,'")
        d = set(digits)
        for name, ids in (("value_sep", vsep), ("digit_sep", dsep), ("end_ids", ends), ("minus_id", (minus,))):
            clash = sorted(d.intersection(ids))
            if clash:
                raise CodecError(f"CodecTable.{name} shares ids {clash} with digit_ids; expected no overlap. "
                                 "Fix: use distinct tokens for separators, minus and digits")
        for name, ids in (("value_sep", vsep), ("digit_sep", dsep), ("end_ids", ends)):
            if minus in ids:
                raise CodecError(f"CodecTable.{name} contains minus_id {minus}; expected no overlap. "
                                 "Fix: use distinct tokens for separators and minus")
        clash = sorted(set(ends).intersection(vsep + dsep))
        if clash:
            raise CodecError(f"CodecTable.end_ids shares ids {clash} with the separators; expected no overlap. "
                             "Fix: remove them from end_ids")
        if set(vsep) <= set(dsep):
            raise CodecError(f"CodecTable.value_sep {vsep} holds only digit_sep ids {dsep}, so no value could "
                             "ever end. Fix: include the value separator's own token (e.g. ',')")
        for name, val in (("digit_ids", digits), ("value_sep", vsep), ("digit_sep", dsep),
                          ("end_ids", ends), ("minus_id", minus)):
            object.__setattr__(self, name, val)

    def lut(self) -> np.ndarray:
        """Decoder lookup table: int8 [max_id + 1], token id -> class (0-9 digit, then separators, ...)."""
        ids = self.digit_ids + self.value_sep + self.digit_sep + self.end_ids + (self.minus_id,)
        lut = np.full(max(ids) + 1, _OTHER, dtype=np.int8)
        for i in self.end_ids:
            lut[i] = _END
        for i in self.value_sep:
            lut[i] = _VSEP
        for i in self.digit_sep:  # a shared id only separates; see the module docstring
            lut[i] = _DSEP
        lut[self.minus_id] = _MINUS
        for k, i in enumerate(self.digit_ids):
            lut[i] = k
        return lut


# Character table for encode_text/decode_text: ids are code points, text "1 2 3 , -4 5 , " (LLMTime's " ,"
# value separator plus the space LLMTime puts before the next value's digits).
TEXT_TABLE = CodecTable(digit_ids=tuple(range(ord("0"), ord("9") + 1)),
                        value_sep=(ord(" "), ord(","), ord(" ")), digit_sep=(ord(" "),), minus_id=ord("-"))


def _check_precision(precision) -> int:
    p = int(precision)
    if p != precision or not 0 <= p <= MAX_DIGITS - 3:
        raise InputError(f"precision must be an integer in [0, {MAX_DIGITS - 3}]; got {precision!r}. "
                         "Fix: use LLMTime's 3")
    return p


def _values_2d(values, precision: int) -> np.ndarray:
    a = np.asarray(values)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"values must be numeric; got dtype {a.dtype}. Fix: pass a float array")
    a = a.astype(np.float64, copy=False)
    if a.ndim < 1:
        raise ShapeError("values must be [..., L]; got a scalar. Fix: pass at least [L]")
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(a[where]) else "inf"
        raise InputError(f"values contain {kind} at {where}; expected finite values. Fix: clean the input "
                         "(fill missing values) before encoding")
    if a.size:
        big = float(np.max(np.abs(a)))
        if big >= MAX_ABS or big * 10.0 ** precision >= 1e18:
            raise InputError(f"values must satisfy |x| < {MAX_ABS:g} and |x| * 10**precision < 1e18; got "
                             f"max |x| = {big:g} at precision {precision}. Fix: scale the series first "
                             "(llmtime_scaler)")
    return np.ascontiguousarray(a.reshape(int(np.prod(a.shape[:-1])), a.shape[-1]))


# ---------------------------------------------------------------------------------------------- numba

@njit(cache=CACHE)
def _n_digits(v, pow10):
    nd = 1
    while nd < 19 and v >= pow10[nd]:
        nd += 1
    return nd


@njit(cache=CACHE)
def _encode_lengths(x, p_scale, n_dsep, n_vsep, pow10):  # x [S, L] -> lengths [S]
    s_n, l_n = x.shape
    lengths = np.zeros(s_n, dtype=np.int64)
    for s in range(s_n):
        total = 0
        for t in range(l_n):
            xv = x[s, t]
            v = np.int64(np.floor(abs(xv) * p_scale))
            nd = _n_digits(v, pow10)
            total += nd + (nd - 1) * n_dsep + n_vsep
            if xv < 0:
                total += 1
        lengths[s] = total
    return lengths


@njit(cache=CACHE)
def _encode_kernel(x, p_scale, digit_ids, dsep, vsep, minus_id, pow10, out):  # x [S, L] -> out [S, T], -1 padded
    s_n, l_n = x.shape
    n_dsep = dsep.shape[0]
    n_vsep = vsep.shape[0]
    ten = np.uint64(10)  # unsigned: % and // by a constant compile to multiply-shift, no sign fix-ups
    for s in range(s_n):
        row = out[s]
        pos = 0
        for t in range(l_n):
            xv = x[s, t]
            v = np.int64(np.floor(abs(xv) * p_scale))
            nd = _n_digits(v, pow10)
            if xv < 0:
                row[pos] = minus_id
                pos += 1
            # digits from the last one backwards, each but the last followed by the digit separators
            end = pos + nd + (nd - 1) * n_dsep
            q = end - 1
            uv = np.uint64(v)
            for k in range(nd):
                if k > 0:
                    for j in range(n_dsep):
                        row[q - n_dsep + 1 + j] = dsep[j]
                    q -= n_dsep
                row[q] = digit_ids[uv % ten]
                uv = uv // ten
                q -= 1
            pos = end
            for j in range(n_vsep):
                row[pos + j] = vsep[j]
            pos += n_vsep
        for t in range(pos, row.shape[0]):  # out comes uninitialized: pad here, one pass over memory
            row[t] = -1


@njit(cache=CACHE)
def _decode_kernel(ids, lengths, lut, p_scale, horizon, values, n_parsed):
    # ids [S, T], lengths [S] -> values [S, H] (padded), n_parsed [S]
    s_n, t_n = ids.shape
    n_lut = lut.shape[0]
    for s in range(s_n):
        n = 0
        acc = np.int64(0)
        nd = 0
        neg = False
        end = lengths[s]
        commit = False  # commit the value being read when stopping
        for t in range(end):
            tok = ids[s, t]
            if tok < 0:
                c = _PAD
            elif tok >= n_lut:
                c = _OTHER
            else:
                c = lut[tok]
            if c < 10:
                if nd == MAX_DIGITS:
                    nd = 0
                    break
                acc = acc * 10 + c
                nd += 1
            elif c == _DSEP:
                continue
            elif c == _VSEP:
                if nd > 0:
                    val = (acc + 0.5) / p_scale
                    values[s, n] = -val if neg else val
                    n += 1
                    if n == horizon:
                        break
                acc = 0
                nd = 0
                neg = False
            elif c == _MINUS:
                if nd > 0 or neg:
                    commit = True
                    break
                neg = True
            elif c == _PAD:
                break
            else:  # end id or a token outside the table
                commit = True
                break
        if commit and nd > 0:
            val = (acc + 0.5) / p_scale
            values[s, n] = -val if neg else val
            n += 1
        n_parsed[s] = n
        fill = values[s, n - 1] if n > 0 else 0.0
        for h in range(n, horizon):
            values[s, h] = fill


def encode_digits(values, table: CodecTable, precision: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Encode values [..., L] (already scaled) into token ids.

    Returns (ids [..., T] int64 padded with -1, lengths [...] int64), T = the longest row.
    """
    p = _check_precision(precision)
    a = _values_2d(values, p)
    lead = np.shape(values)[:-1]
    pow10 = _POW10
    dsep = np.asarray(table.digit_sep, dtype=np.int64)
    vsep = np.asarray(table.value_sep, dtype=np.int64)
    lengths = _encode_lengths(a, 10.0 ** p, dsep.size, vsep.size, pow10)
    t_max = int(lengths.max()) if lengths.size else 0
    out = np.empty((a.shape[0], t_max), dtype=np.int64)
    _encode_kernel(a, 10.0 ** p, np.asarray(table.digit_ids, dtype=np.int64), dsep, vsep,
                   np.int64(table.minus_id), pow10, out)
    return out.reshape(lead + (t_max,)), lengths.reshape(lead)


def _ids_2d(ids, lengths, horizon) -> tuple[np.ndarray, np.ndarray, tuple]:
    a = np.asarray(ids)
    if a.ndim < 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise ShapeError(f"ids must be an integer array [..., T]; got dtype {a.dtype}, shape {a.shape}. "
                         "Fix: pass the generated token ids")
    lead = a.shape[:-1]
    a2 = np.ascontiguousarray(a.reshape(int(np.prod(lead)), a.shape[-1]).astype(np.int64, copy=False))
    if lengths is None:
        ln = np.full(a2.shape[0], a2.shape[1], dtype=np.int64)
    else:
        ln = np.asarray(lengths)
        if ln.shape != lead:
            raise ShapeError(f"lengths must have shape {lead} (one per row of ids); got {ln.shape}. "
                             "Fix: pass the lengths returned with the ids")
        ln = ln.reshape(-1).astype(np.int64)
        if ln.size and (ln.min() < 0 or ln.max() > a2.shape[1]):
            raise ShapeError(f"lengths must lie in [0, {a2.shape[1]}]; got min {ln.min()}, max {ln.max()}. "
                             "Fix: pass the lengths returned with the ids")
    if int(horizon) != horizon or horizon < 1:
        raise InputError(f"horizon must be an integer >= 1; got {horizon!r}. Fix: pass the forecast length")
    return a2, np.ascontiguousarray(ln), lead


def decode_digits(ids, lengths, table: CodecTable, precision: int = 3,
                  horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Decode token ids [..., T] (``lengths [...]`` valid ids per row, None = all) into values.

    Returns (values [..., H] float64 padded with the last parsed value, n_parsed [...] int64 <= H).
    """
    p = _check_precision(precision)
    a, ln, lead = _ids_2d(ids, lengths, horizon)
    h = int(horizon)
    values = np.empty((a.shape[0], h))
    n_parsed = np.empty(a.shape[0], dtype=np.int64)
    _decode_kernel(a, ln, table.lut(), 10.0 ** p, h, values, n_parsed)
    return values.reshape(lead + (h,)), n_parsed.reshape(lead)


def encode_text(values, precision: int = 3) -> str | list[str]:
    """Debugging view: values [L] -> ``"1 2 3 , -4 5 , "`` (or [S, L] -> one string per row)."""
    ids, lengths = encode_digits(values, TEXT_TABLE, precision)
    rows = [("".join(map(chr, r[:n]))) for r, n in zip(ids.reshape(lengths.size, ids.shape[-1]), lengths.reshape(-1))]
    return rows[0] if np.ndim(values) == 1 else rows


def decode_text(text: str, precision: int = 3, horizon: int | None = None) -> tuple[np.ndarray, int]:
    """Debugging view: LLMTime text -> (values [H], n_parsed), same rules as :func:`decode_digits`.

    ``horizon=None`` reads every value (H = number of values found, at least 1).
    """
    ids = np.fromiter((ord(c) for c in text), dtype=np.int64, count=len(text))
    h = horizon if horizon is not None else max(1, text.count(","))
    values, n = decode_digits(ids, None, TEXT_TABLE, precision, h)
    return values, int(n)


# ---------------------------------------------------------------------------------------------- numpy

def encode_digits_ref(values, table: CodecTable, precision: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`encode_digits`: a padded slot grid per value, then one compaction."""
    p = _check_precision(precision)
    a = _values_2d(values, p)  # [S, L]
    lead = np.shape(values)[:-1]
    s_n = a.shape[0]
    neg = a < 0
    v = np.floor(np.abs(a) * 10.0 ** p).astype(np.int64)
    nd = np.searchsorted(_POW10[1:], v, side="right") + 1  # [S, L]
    d_max = int(nd.max()) if nd.size else 1
    n_ds, n_vs = len(table.digit_sep), len(table.value_sep)
    width = 1 + d_max + (d_max - 1) * n_ds + n_vs
    grid = np.zeros(a.shape + (width,), dtype=np.int64)  # [S, L, W]
    mask = np.zeros(a.shape + (width,), dtype=bool)
    grid[..., 0] = table.minus_id
    mask[..., 0] = neg
    digits = (v[..., None] // _POW10[d_max - 1::-1]) % 10  # [S, L, D], most significant first
    valid = np.arange(d_max) >= (d_max - nd)[..., None]     # drop leading zeros
    dpos = 1 + np.arange(d_max) * (1 + n_ds)
    grid[..., dpos] = np.asarray(table.digit_ids, dtype=np.int64)[digits]
    mask[..., dpos] = valid
    for j, sid in enumerate(table.digit_sep):
        spos = dpos[:-1] + 1 + j
        grid[..., spos] = sid
        mask[..., spos] = valid[..., :-1]
    for j, sid in enumerate(table.value_sep):
        grid[..., width - n_vs + j] = sid
        mask[..., width - n_vs + j] = True
    grid = grid.reshape(s_n, -1)
    mask = mask.reshape(s_n, -1)
    lengths = mask.sum(axis=1).astype(np.int64)
    t_max = int(lengths.max()) if lengths.size else 0
    out = np.full((s_n, t_max), -1, dtype=np.int64)
    rows = np.nonzero(mask)[0]
    cols = (np.cumsum(mask, axis=1) - 1)[mask]
    out[rows, cols] = grid[mask]
    return out.reshape(lead + (t_max,)), lengths.reshape(lead)


def _prev_at_mark(mark: np.ndarray, count: np.ndarray) -> np.ndarray:
    """count at the last marked position strictly before each position (0 if none); count nondecreasing."""
    run = np.maximum.accumulate(np.where(mark, count, 0), axis=1)
    out = np.zeros_like(run)
    out[:, 1:] = run[:, :-1]
    return out


def decode_digits_ref(ids, lengths, table: CodecTable, precision: int = 3,
                      horizon: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`decode_digits`: token classes, per-segment counts by cumulative sums, the first
    stop per row by argmax, values by a segmented sum of digit * 10**place."""
    p = _check_precision(precision)
    a, ln, lead = _ids_2d(ids, lengths, horizon)
    h = int(horizon)
    s_n, t_n = a.shape
    lut = table.lut()
    cls = np.full((s_n, t_n + 1), _PAD, dtype=np.int8)  # one sentinel column: every row stops
    inside = (a >= 0) & (a < lut.size)
    body = np.full(a.shape, _OTHER, dtype=np.int8)
    body[inside] = lut[a[inside]]
    body[a < 0] = _PAD
    body[np.arange(t_n)[None, :] >= ln[:, None]] = _PAD
    cls[:, :t_n] = body
    is_d = cls < 10
    is_v = cls == _VSEP
    is_m = cls == _MINUS
    cd = np.cumsum(is_d, axis=1)
    cm = np.cumsum(is_m, axis=1)
    d_before = cd - is_d - _prev_at_mark(is_v, cd)  # digits of the current value before this position
    m_before = cm - is_m - _prev_at_mark(is_v, cm)
    stop_commit = (cls == _END) | (cls == _OTHER) | (is_m & ((d_before > 0) | (m_before > 0)))
    stop_drop = (cls == _PAD) | (is_d & (d_before >= MAX_DIGITS))
    first = np.argmax(stop_commit | stop_drop, axis=1)  # [S]
    rows = np.arange(s_n)
    before = np.arange(t_n + 1)[None, :] < first[:, None]
    commit = is_v & before & (d_before > 0)
    tail = stop_commit[rows, first] & (d_before[rows, first] > 0)
    commit[rows[tail], first[tail]] = True
    seg = np.cumsum(is_v, axis=1) - is_v  # value index of each position
    cr, cc = np.nonzero(commit)  # row-major: sorted by row, then position
    n_seg = t_n + 2
    total = np.zeros((s_n, n_seg), dtype=np.int64)
    total[cr, seg[cr, cc]] = d_before[cr, cc]
    dr, dc = np.nonzero(is_d & before)
    dseg = seg[dr, dc]
    dtot = total[dr, dseg]
    keep = dtot > 0  # digits of committed values only
    dr, dc, dseg, dtot = dr[keep], dc[keep], dseg[keep], dtot[keep]
    place = dtot - d_before[dr, dc] - 1
    contrib = cls[dr, dc].astype(np.int64) * _POW10[place]
    key = dr.astype(np.int64) * n_seg + dseg
    if key.size:
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        v = np.add.reduceat(contrib, starts)
    else:
        v = np.zeros(0, dtype=np.int64)
    val = (v.astype(np.float64) + 0.5) / 10.0 ** p
    val = np.where(m_before[cr, cc] > 0, -val, val)
    rank = np.arange(cr.size) - np.searchsorted(cr, cr, side="left")
    ok = rank < h
    values = np.zeros((s_n, h))
    values[cr[ok], rank[ok]] = val[ok]
    n_parsed = np.bincount(cr[ok], minlength=s_n).astype(np.int64)
    idx = np.minimum(np.arange(h)[None, :], np.maximum(n_parsed - 1, 0)[:, None])
    values = np.take_along_axis(values, idx, axis=1)
    values[n_parsed == 0] = 0.0
    return values.reshape(lead + (h,)), n_parsed.reshape(lead)
