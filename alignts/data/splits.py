"""Train/val/test splits by time, train-only standard scaling, and sliding windows.

Borders follow the convention of the published ETT tables (Time-Series-Library): ETT hourly files use
``[0, 8640 - L, 11520 - L]`` to ``[8640, 11520, 14400]`` (12/4/4 months of 30 days), 15-minute files the
same times 4; any other series is split 70/10/20 by time with the val and test segments starting ``L``
rows before their border, so that the first val/test target follows the border directly.

Few-shot (``train_percent`` P < 100), as the GPT4TS / Time-LLM / LLM4TS data loaders do: the train segment
ends at ``(border2 - L) * P // 100 + L`` (the first P% of the training windows), the scaler is still fitted
on the whole train segment, and val/test are unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from alignts.data.series import TimeSeriesData, fill_missing
from alignts.errors import InputError, ShapeError

log = logging.getLogger(__name__)

SCHEMES = ("auto", "ett_hour", "ett_minute", "ratio")
_MONTH_H = 30 * 24  # one ETT "month" in hours


@dataclass(frozen=True)
class Splits:
    """Scaled, gap-filled split segments of one dataset.

    Attributes:
        train, val, test: float64 ``[T_i, C]``, standardized with the train statistics, gaps filled.
        train_mask, val_mask, test_mask: bool ``[T_i, C]``, True where the value was observed.
        mean, std: float64 ``[C]``, the scaler (fitted on observed train values; std 0 -> 1).
        borders: ((b1_train, b1_val, b1_test), (b2_train, b2_val, b2_test)) row indices into the data.
        scheme: "ett_hour", "ett_minute" or "ratio".
        context_len, horizon: the L and H the borders were made for.
        name, freq: copied from the data (the freq gives the seasonal-naive period).
        train_percent: the few-shot percent P the train segment was cut to (100 = all of it).
    """

    train: np.ndarray  # [T_train, C]
    val: np.ndarray  # [T_val, C]
    test: np.ndarray  # [T_test, C]
    train_mask: np.ndarray
    val_mask: np.ndarray
    test_mask: np.ndarray
    mean: np.ndarray  # [C]
    std: np.ndarray  # [C]
    borders: tuple[tuple[int, int, int], tuple[int, int, int]]
    scheme: str
    context_len: int
    horizon: int
    name: str = ""
    freq: str | None = None
    train_percent: int = 100

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Undo the scaling of ``x [..., C, T]`` (channels second to last, time last)."""
        return x * self.std[:, None] + self.mean[:, None]


def resolve_scheme(name: str, scheme: str = "auto") -> str:
    """The split scheme for a dataset name: ETTh* -> ett_hour, ETTm* -> ett_minute, else ratio."""
    if scheme not in SCHEMES:
        raise InputError(f"unknown split scheme {scheme!r}; expected one of {SCHEMES}. Fix: pick one of those.")
    if scheme != "auto":
        return scheme
    low = name.lower()
    if low.startswith("etth"):
        return "ett_hour"
    if low.startswith("ettm"):
        return "ett_minute"
    return "ratio"


def split_borders(n_rows: int, context_len: int, horizon: int = 0, scheme: str = "ratio",
                  name: str = "data") -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(border1s, border2s) for a series of ``n_rows`` rows; raises InputError when it is too short."""
    L, H = int(context_len), int(horizon)
    if L < 1 or H < 0:
        raise InputError(f"context_len must be >= 1 and horizon >= 0; got L={L}, H={H}. Fix: pass positive values.")
    if scheme in ("ett_hour", "ett_minute"):
        k = 1 if scheme == "ett_hour" else 4
        n_train, n_val, n_test = 12 * _MONTH_H * k, 4 * _MONTH_H * k, 4 * _MONTH_H * k
        need = n_train + n_val + n_test
        if n_rows < need:
            raise InputError(f"{name} has {n_rows} rows; the {scheme} split needs {need} "
                             "(12/4/4 months). Fix: use scheme='ratio' for a shorter file.")
        if L + H > n_train:
            raise InputError(f"context + horizon L + H = {L} + {H} = {L + H} exceeds the {n_train}-row train "
                             f"segment of {name}. Fix: use a shorter context or horizon.")
        b1 = (0, n_train - L, n_train + n_val - L)
        b2 = (n_train, n_train + n_val, need)
    elif scheme == "ratio":
        n_train = int(n_rows * 0.7)
        n_test = int(n_rows * 0.2)
        n_val = n_rows - n_train - n_test
        if n_train < L + H or n_val < max(H, 1) or n_test < max(H, 1):
            # smallest length whose 70/10/20 segments hold one window each
            need = max(int(np.ceil((L + H) / 0.7)), int(np.ceil(max(H, 1) / 0.1)))
            while not (int(need * 0.7) >= L + H and int(need * 0.2) >= max(H, 1)
                       and need - int(need * 0.7) - int(need * 0.2) >= max(H, 1)):
                need += 1
            raise InputError(f"{name} has {n_rows} rows, too short for context + horizon L + H = {L} + {H} "
                             f"= {L + H} with the 70/10/20 split (train {n_train}, val {n_val}, test {n_test} "
                             f"rows; the train segment must hold L + H rows, val and test H each; about "
                             f"{need} rows needed). Fix: use a shorter context or horizon, or more data.")
        b1 = (0, n_train - L, n_rows - n_test - L)
        b2 = (n_train, n_train + n_val, n_rows)
    else:
        raise InputError(f"unknown split scheme {scheme!r}; expected one of {SCHEMES[1:]}.")
    return b1, b2


def few_shot_border(border2: int, context_len: int, percent: int) -> int:
    """The end of the few-shot train segment: ``(border2 - L) * P // 100 + L`` (GPT4TS / Time-LLM / LLM4TS)."""
    return (int(border2) - int(context_len)) * int(percent) // 100 + int(context_len)


def check_train_percent(percent, context_len: int = 0, horizon: int = 0, border2: int | None = None,
                        name: str = "data") -> int:
    """``percent`` as an int in 1..100; with ``border2``, also checks that the cut train segment holds a window."""
    if isinstance(percent, bool) or not isinstance(percent, (int, np.integer)) or not 1 <= int(percent) <= 100:
        raise InputError(f"train_percent must be an integer in 1..100; got {percent!r}. "
                         "Fix: pass e.g. --train-percent 10 for the few-shot protocol.")
    if border2 is not None:
        end = few_shot_border(border2, context_len, percent)
        if end < context_len + horizon:
            raise InputError(f"{name}: {percent}% of the training windows leaves a train segment of {end} rows, "
                             f"fewer than L + H = {context_len} + {horizon}. Fix: raise --train-percent.")
    return int(percent)


def make_splits(data: TimeSeriesData, context_len: int, horizon: int = 0, scheme: str = "auto",
                train_percent: int = 100) -> Splits:
    """Split ``data`` by time, fill gaps per segment, and standardize with train-only statistics.

    The scaler uses observed train values only (population std, as sklearn's StandardScaler); a constant
    channel gets std 1. See ``alignts.data.series`` for the missing-value policy. ``train_percent`` P < 100
    keeps only the first P% of the training windows (:func:`few_shot_border`); the scaler still sees the
    whole train segment.
    """
    scheme = resolve_scheme(data.name, scheme)
    b1, b2 = split_borders(data.n_rows, context_len, horizon, scheme, data.name)
    train_percent = check_train_percent(train_percent, context_len, horizon, b2[0], data.name)
    raw = data.values.astype(np.float64, copy=False)
    train_raw = raw[b1[0]:b2[0]]
    observed = ~np.isnan(train_raw)
    counts = observed.sum(axis=0)
    empty = counts == 0
    if empty.any():
        log.warning("%s: channel(s) %s have no observed train value; scaling them with mean 0, std 1",
                    data.name, [data.columns[i] for i in np.flatnonzero(empty)])
    filled0 = np.where(observed, train_raw, 0.0)
    mean = filled0.sum(axis=0) / np.maximum(counts, 1)
    var = (np.where(observed, train_raw - mean, 0.0) ** 2).sum(axis=0) / np.maximum(counts, 1)
    std = np.sqrt(var)
    std[(std == 0) | ~np.isfinite(std)] = 1.0  # constant channels: keep them, do not divide by 0
    mean[empty] = 0.0

    if train_percent < 100:  # few-shot: cut after the scaler was fitted on the whole train segment
        b2 = (few_shot_border(b2[0], context_len, train_percent), b2[1], b2[2])
    segs, masks = [], []
    for s, e in zip(b1, b2):
        seg = raw[s:e]
        masks.append(~np.isnan(seg))
        segs.append(fill_missing((seg - mean) / std))
    return Splits(train=segs[0], val=segs[1], test=segs[2], train_mask=masks[0], val_mask=masks[1],
                  test_mask=masks[2], mean=mean, std=std, borders=(b1, b2), scheme=scheme,
                  context_len=int(context_len), horizon=int(horizon), name=data.name, freq=data.freq,
                  train_percent=train_percent)


def n_windows(n_rows: int, context_len: int, horizon: int, stride: int = 1) -> int:
    """How many windows ``sliding_windows`` makes: ``(T - L - H) // stride + 1`` (0 when T < L + H)."""
    span = n_rows - context_len - horizon
    return 0 if span < 0 else span // stride + 1


def window_view(arr: np.ndarray, context_len: int, horizon: int, stride: int = 1) -> np.ndarray:
    """A read-only view ``[N, C, L + H]`` of every window of ``arr [T, C]`` (no copy)."""
    if arr.ndim != 2:
        raise ShapeError(f"expected a [T, C] array; got shape {arr.shape}. Fix: use arr[:, None] for one series.")
    L, H = int(context_len), int(horizon)
    if L < 1 or H < 0 or stride < 1:
        raise InputError(f"need context_len >= 1, horizon >= 0, stride >= 1; got {L}, {H}, {stride}.")
    if arr.shape[0] < L + H:
        raise InputError(f"a series of {arr.shape[0]} rows holds no window of L + H = {L} + {H} = {L + H} "
                         "rows. Fix: use a shorter context or horizon, or more data.")
    view = np.lib.stride_tricks.sliding_window_view(arr, L + H, axis=0)  # [T-L-H+1, C, L+H]
    return view[::stride]


def sliding_windows(arr: np.ndarray, context_len: int, horizon: int,
                    stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every window of ``arr [T, C]``: ``x [N, C, L]`` and ``y [N, C, H]`` float32, ``N = (T - L - H)//stride + 1``.

    All windows are returned, the last one included (``drop_last=False`` semantics). ``y`` is empty
    (``H = 0``) when ``horizon`` is 0.
    """
    view = window_view(arr, context_len, horizon, stride)
    x = np.ascontiguousarray(view[..., :context_len], dtype=np.float32)
    y = np.ascontiguousarray(view[..., context_len:], dtype=np.float32)
    return x, y
