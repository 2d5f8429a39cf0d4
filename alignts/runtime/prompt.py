"""Bridging prompt-as-prefix (Time-LLM): text from per-series input statistics, ids, and prefix embeddings.

The prompt has two segments, each tokenized on its own so the first can be cached:

1. constant: ``"Dataset description: <description> Task description: forecast the next H steps given the
   previous L steps information; "``
2. per series: ``"Input statistics: min value m, max value M, median value d, the trend of input is
   upward|downward, top 5 lags are : [l1, ..., l5]"``, computed on the instance-normalized input (as
   Time-LLM does) with the kernels' ``prompt_stats``.

Ids are left-padded (or cut) to a fixed ``prompt_len`` so a series' forecast does not depend on the other
series in its batch. The same code runs at training time (torch side) and at run time.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from alignts.errors import InputError, ShapeError
from alignts.runtime.tokenize import PromptTokenizer, left_pad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptConfig:
    """What the prompt says.

    description: dataset description (free text, first segment).
    context_len: L in the task sentence.
    horizon:     H in the task sentence.
    top_k:       number of autocorrelation lags listed.
    decimals:    decimals of min/max/median (fewer decimals = fewer tokens).
    eps:         instance-norm eps for the statistics (RevIN, 1e-5).
    """

    description: str = "a time series."
    context_len: int = 336
    horizon: int = 96
    top_k: int = 5
    decimals: int = 3
    eps: float = 1e-5

    def constant_text(self) -> str:
        desc = " ".join(self.description.split())
        return (f"Dataset description: {desc} Task description: forecast the next {self.horizon} steps "
                f"given the previous {self.context_len} steps information; ")


def _series2d(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim < 1 or a.shape[-1] < 2:
        raise ShapeError(f"prompt statistics need series [..., L] with L >= 2; got shape {a.shape}. "
                         "Fix: pass the context window with time last.")
    return a.reshape(-1, a.shape[-1])


def normalized_series(x, eps: float = 1e-5) -> np.ndarray:
    """Instance-normalize ``x  # [..., L]`` (population std, ``sqrt(var + eps)``) -> float64 [S, L]."""
    from alignts.kernels.norm import instance_norm, instance_stats

    a = _series2d(x)
    mean, std = instance_stats(a, eps=eps)
    return np.asarray(instance_norm(a, mean, std), dtype=np.float64)


def stats_texts(x, cfg: PromptConfig) -> list[str]:
    """Per-series statistics segment for ``x  # [..., L]`` (raw values; normalized here) -> S strings."""
    from alignts.kernels.stats import prompt_stats

    z = normalized_series(x, cfg.eps)
    st = prompt_stats(z, top_k=cfg.top_k)
    mn, mx, md, tr = (np.asarray(st[k], dtype=np.float64).reshape(-1) for k in ("min", "max", "median", "trend"))
    lags = np.asarray(st["lags"]).reshape(len(z), -1)
    d = int(cfg.decimals)
    out = []
    for i in range(len(z)):
        lag_s = ", ".join(str(int(v)) for v in lags[i])
        # "+ 0.0" turns -0.000 into 0.000 so equal values always give equal text.
        lo, hi, mid = (round(v[i], d) + 0.0 for v in (mn, mx, md))
        out.append(f"Input statistics: min value {lo:.{d}f}, max value {hi:.{d}f}, "
                   f"median value {mid:.{d}f}, the trend of input is "
                   f"{'upward' if tr[i] > 0 else 'downward'}, top {lags.shape[1]} lags are : [{lag_s}]")
    return out


def prompt_texts(x, cfg: PromptConfig) -> list[str]:
    """The full prompt of each series (for display/debugging): constant + statistics segment."""
    c = cfg.constant_text()
    return [c + s for s in stats_texts(x, cfg)]


def prompt_ids(x, cfg: PromptConfig, tokenizer: PromptTokenizer, prompt_len: int) -> np.ndarray:
    """Left-padded prompt ids ``[S, prompt_len]`` (int64) for ``x  # [..., L]``."""
    const = tokenizer.encode(cfg.constant_text())
    rows = [np.concatenate([const, tokenizer.encode(s)]) for s in stats_texts(x, cfg)]
    n_cut = sum(len(r) > prompt_len for r in rows)
    if n_cut:
        log.debug("%d prompts longer than prompt_len=%d were cut", n_cut, prompt_len)
    return left_pad(rows, prompt_len, tokenizer.pad_id)


def natural_prompt_len(x, cfg: PromptConfig, tokenizer: PromptTokenizer) -> int:
    """Longest prompt (in tokens) over the series of ``x`` (to choose ``prompt_len`` at fit time)."""
    const = len(tokenizer.encode(cfg.constant_text()))
    return const + max(len(tokenizer.encode(s)) for s in stats_texts(x, cfg))


class PrefixEmbedder:
    """Prompt-as-prefix embeddings at run time: ids looked up in the frozen word-embedding table.

    table:  the backbone's word embeddings  # [V, d] (may be a read-only memmap)
    The constant segment's rows and the pad row are gathered once; the statistics segment goes through the
    tokenizer's per-text LRU and a per-text LRU of gathered rows (``cache_size`` entries).
    """

    def __init__(self, cfg: PromptConfig, tokenizer: PromptTokenizer, table: np.ndarray, prompt_len: int,
                 cache_size: int = 4096):
        if table.ndim != 2:
            raise ShapeError(f"word-embedding table must be [V, d]; got shape {table.shape}. "
                             "Re-export the backbone bundle.")
        self.cfg = cfg
        self.tok = tokenizer
        self.table = table
        self.prompt_len = int(prompt_len)
        self.d = int(table.shape[1])
        self._const_ids = tokenizer.encode(cfg.constant_text())
        if tokenizer.vocab_size > table.shape[0]:
            raise InputError(f"the tokenizer has {tokenizer.vocab_size} ids but the embedding table has "
                             f"{table.shape[0]} rows; the tokenizer does not belong to this backbone. "
                             "Re-export the backbone bundle.")
        self._const = np.ascontiguousarray(table[self._const_ids], dtype=np.float32)  # [Tc, d]
        self._pad = np.asarray(table[tokenizer.pad_id], dtype=np.float32)  # [d]
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = int(cache_size)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()  # forecasts from many threads share the LRU (get + move_to_end + evict)

    def _stats_rows(self, text: str) -> np.ndarray:
        with self._lock:
            r = self._rows.get(text)
            if r is not None:
                self._rows.move_to_end(text)
                self.hits += 1
                return r
            self.misses += 1
        ids = self.tok.encode(text)
        r = np.asarray(self.table[ids], dtype=np.float32)
        with self._lock:
            self._rows[text] = r
            if len(self._rows) > self._cache_size:
                self._rows.popitem(last=False)
        return r

    def __call__(self, x) -> np.ndarray:
        """Prefix embeddings ``[S, prompt_len, d]`` (float32) for ``x  # [..., L]`` raw series."""
        texts = stats_texts(x, self.cfg)
        T = self.prompt_len
        out = np.empty((len(texts), T, self.d), dtype=np.float32)
        for i, t in enumerate(texts):
            rows = self._stats_rows(t)
            n_c = min(len(self._const), T)
            n_s = min(len(rows), T - n_c)
            n = n_c + n_s
            out[i, :T - n] = self._pad
            out[i, T - n:T - n + n_c] = self._const[:n_c]
            out[i, T - n + n_c:] = rows[:n_s]
        return out
