"""Constrained sampling of LLMTime digit strings (numpy only, torch-free).

The logits are restricted, step by step, to the tokens a well-formed value may continue with, so EVERY sample
parses to exactly H values (a grammar over the codec table):

- value start:   a digit or the minus sign;
- after a minus: a digit;
- after a digit: another digit (behind the digit separator, if the layout has one) or the value separator;
  after ``max_digits`` digits the separator is forced;
- multi-token separators are forced token by token once their first token is chosen;
- a sequence stops once its H-th value separator is written (the end-of-forecast token is never needed), or
  when it has ``max_tokens`` tokens (the end of the LM's window): such a sample parses to fewer values and
  :meth:`ConstrainedSampler.sample_values` pads it with its last value, as LLMTime pads short outputs.

n samples run as n parallel sequences of one batch over a backend with ``prefill(prompt_ids, n_parallel) ->
logits [n, V]`` and ``step(tokens [k], seq_ids [k]) -> logits [k, V]`` (LlamaCppModel, OrtCausalLM); a backend that
also offers ``native_step()`` (LlamaCppModel on alignts' llama.cpp build) is stepped by one compiled loop instead.
Sampling: temperature, top-p (nucleus) or greedy, from a seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from numba import carray, njit

from alignts.errors import InputError
from alignts.kernels.digits import CodecTable, decode_digits
from alignts.kernels.numba_cache import CACHE
from alignts.runtime.backends.gguf_native import DECODE_FAILED, decode_staged, stage_step
from alignts.runtime.configs import InjectiveRuntimeConfig as _D

log = logging.getLogger(__name__)

# grammar states
_START, _AFTER_MINUS, _AFTER_DIGIT, _AFTER_DSEP = 0, 1, 2, 3


class CausalBackend(Protocol):
    n_vocab: int

    def prefill(self, prompt_ids, n_parallel: int = 1) -> np.ndarray: ...

    def step(self, tokens, seq_ids=None) -> np.ndarray: ...


@dataclass(frozen=True)
class SamplerConfig:
    """How digits are drawn.

    n_samples:   parallel samples per series (LLMTime: 20); the forecast is their median.
    temperature: softmax temperature (LLMTime: 0.9); ignored when greedy.
    top_p:       nucleus mass kept (LLMTime: 0.9); 1.0 keeps all allowed tokens.
    greedy:      take the most likely allowed token (deterministic; n_samples copies are identical).
    max_digits:  most digits per value; a separator is forced after them.
    seed:        seed of the numpy Generator (each forecast call draws from one Generator made from it).
    keep_finished: finished samples keep stepping (fed a separator, output ignored) so every step decodes the
                 same n tokens (benchmarks compare this with raw llama.cpp decoding); default: they stop.
    """

    n_samples: int = _D.samples  # the sampling defaults are the Injective config's (defined once)
    temperature: float = _D.temperature
    top_p: float = _D.top_p
    greedy: bool = _D.greedy
    max_digits: int = 6
    seed: int = _D.seed
    keep_finished: bool = False

    def __post_init__(self):
        if self.n_samples < 1:
            raise InputError(f"n_samples={self.n_samples}: expected >= 1. Fix: pass --samples 20 (LLMTime).")
        if not self.greedy and not self.temperature > 0:
            raise InputError(f"temperature={self.temperature}: expected > 0 (or greedy=True). Fix: use 0.9.")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p={self.top_p}: expected in (0, 1]. Fix: use 0.9.")
        if not 1 <= self.max_digits <= 15:
            raise InputError(f"max_digits={self.max_digits}: expected 1..15. Fix: use precision + 3.")


def max_new_tokens(table: CodecTable, horizon: int, max_digits: int) -> int:
    """Upper bound on the tokens H values take: minus + digits (+ digit separators) + value separator."""
    per = 1 + max_digits + (max_digits - 1) * len(table.digit_sep) + len(table.value_sep)
    return horizon * per


@njit(cache=CACHE)
def _step_kernel(logits, live, cand, mask, kind, state, n_dig, n_val, vpos, dpos, vsep, dsep, max_d, horizon,
                 inv_temp, top_p, greedy, u, tok_out, keep_out, out, length, max_tokens):  # pragma: no cover - numba
    """One generation step for the live samples: choose (or force) a token each, update the grammar state.

    logits [r, V] rows of the live samples ``live [r]``; cand [K] candidate ids with ``mask [4, K]`` allowed per
    state and ``kind [K]`` (0 digit, 1 minus, 2 value separator, 3 digit separator); u [r] uniforms.
    Writes tok_out [:r], keep_out [:r] (False: the sample has its H values, or max_tokens tokens) and appends to
    out [n, T]. Returns how many samples keep going.
    """
    n_vs = vsep.shape[0]
    n_ds = dsep.shape[0]
    K = cand.shape[0]
    z = np.empty(K)
    p = np.empty(K)
    order = np.empty(K, dtype=np.int64)
    n_keep_going = 0
    for j in range(live.shape[0]):
        s = live[j]
        st = state[s]
        done = False
        if vpos[s] > 0:
            t = vsep[vpos[s]]
            vpos[s] += 1
            if vpos[s] >= n_vs:
                vpos[s] = 0
                done = True
        elif dpos[s] > 0:
            t = dsep[dpos[s]]
            dpos[s] += 1
            if dpos[s] >= n_ds:
                dpos[s] = 0
        else:
            if st == 2 and n_dig[s] >= max_d:
                k = 11  # the value separator's candidate slot
            else:
                m = -np.inf
                k = -1
                for c in range(K):
                    if mask[st, c]:
                        z[c] = logits[j, cand[c]] * inv_temp
                        if z[c] > m:
                            m = z[c]
                            k = c
                if not greedy:
                    total = 0.0
                    n_ok = 0
                    for c in range(K):
                        if mask[st, c]:
                            p[c] = np.exp(z[c] - m)
                            total += p[c]
                            order[n_ok] = c
                            n_ok += 1
                    # candidates by probability, descending (K <= 13: insertion sort)
                    for a in range(1, n_ok):
                        c = order[a]
                        b = a - 1
                        while b >= 0 and p[order[b]] < p[c]:
                            order[b + 1] = order[b]
                            b -= 1
                        order[b + 1] = c
                    kept = 0.0
                    n_keep = 0
                    for a in range(n_ok):  # the token that crosses top_p stays; the first always does
                        if n_keep > 0 and kept >= top_p * total:
                            break
                        kept += p[order[a]]
                        n_keep += 1
                    target = u[j] * kept
                    acc = 0.0
                    k = order[n_keep - 1]
                    for a in range(n_keep):
                        acc += p[order[a]]
                        if target < acc:
                            k = order[a]
                            break
            t = cand[k]
            kd = kind[k]
            if kd == 0:
                n_dig[s] += 1
                state[s] = 2
            elif kd == 1:
                state[s] = 1
            elif kd == 3:
                state[s] = 3
                if n_ds > 1:
                    dpos[s] = 1
            else:
                n_dig[s] = 0
                state[s] = 0
                if n_vs > 1:
                    vpos[s] = 1
                else:
                    done = True
        out[s, length[s]] = t
        length[s] += 1
        if done:
            n_val[s] += 1
        tok_out[j] = t
        keep_out[j] = n_val[s] < horizon and length[s] < max_tokens
        n_keep_going += keep_out[j]
    return n_keep_going


@njit(cache=CACHE, nogil=True)
def _native_loop(decode, get_logits, ctx, batch, n_tokens, tok_buf, pos_buf, seq_buf, nseq_buf, out_buf, seq_pos,
                 n_ctx, n_vocab, logits, cand, mask, kind, state, n_dig, n_val, vpos, dpos, vsep, dsep, max_d, horizon,
                 inv_temp, top_p, greedy, rng, out, length, limit, keep_finished, full):  # pragma: no cover - numba
    """:meth:`ConstrainedSampler.generate`'s loop in one compiled call, llama.cpp's decode called from here
    (:class:`alignts.runtime.backends.gguf_native.NativeStep`'s functions and buffers): the same tokens as the
    Python loop for the same ``rng`` (``rng.random()`` r times draws what ``rng.random(r)`` does).
    logits [n, V]: prefill's. Returns (status, llama_decode's code, tokens decoded); status 0 done, or one of
    gguf_native's (CONTEXT_FULL, DECODE_FAILED)."""
    n = state.shape[0]
    live = np.arange(n)
    everyone = np.arange(n)
    tok = np.empty(n, dtype=np.int64)
    keep = np.empty(n, dtype=np.bool_)
    u = np.zeros(n)
    r = n
    decoded = 0
    while True:
        if not greedy:
            for j in range(r):
                u[j] = rng.random()
        n_keep = _step_kernel(logits, live[:r], cand, mask, kind, state, n_dig, n_val, vpos, dpos, vsep, dsep, max_d,
                              horizon, inv_temp, top_p, greedy, u[:r], tok, keep, out, length, limit)
        if n_keep == 0:
            return 0, 0, decoded
        if keep_finished:
            for j in range(r):
                full[live[j]] = tok[j]
        k = 0
        for j in range(r):
            if keep[j]:
                live[k] = live[j]
                tok[k] = tok[j]
                k += 1
        r = k
        # keep_finished: every sequence steps, the finished ones fed a separator
        seq = everyone if keep_finished else live[:r]
        bad = stage_step(full if keep_finished else tok[:r], seq, seq_pos, n, n_ctx, n_vocab, tok_buf, pos_buf,
                         seq_buf, nseq_buf, out_buf)
        if bad != 0:
            return bad, 0, decoded
        rc = decode_staged(decode, ctx, batch, n_tokens, seq, seq_pos)
        if rc != 0:
            return DECODE_FAILED, rc, decoded
        decoded += seq.shape[0]
        rows = carray(get_logits(ctx), (seq.shape[0], n_vocab))
        logits = rows[live[:r]] if keep_finished else rows


class ConstrainedSampler:
    """Draw H values per sample from a causal LM, with the codec table's grammar enforced.

    The loop runs compiled, llama.cpp's decode called from numba without the GIL, where the backend offers a
    ``native_step()`` (LlamaCppModel on alignts' llama.cpp build); elsewhere one Python step a token. A generation
    holds the backend's ``lock`` (when it has one) from prefill to its last step.
    """

    def __init__(self, table: CodecTable, n_vocab: int, config: SamplerConfig = SamplerConfig()):
        self.table = table
        self.cfg = config
        self.n_short = 0  # samples stopped by max_tokens so far (padded with their last value)
        self.decoded_tokens = 0  # tokens the last generate decoded after its prompt (benchmarks read it)
        ids = list(table.digit_ids) + list(table.value_sep) + list(table.digit_sep) + [table.minus_id]
        if max(ids) >= n_vocab:
            raise InputError(f"the codec table uses token id {max(ids)} but the model has {n_vocab} tokens; "
                             "expected the table of this model's vocabulary. Fix: rebuild it from the model "
                             "(alignts.runtime.codec_table).")
        shared = set(table.value_sep) & set(table.digit_sep)
        if shared:
            from alignts.errors import CodecError
            raise CodecError(f"the codec table's value_sep {table.value_sep} and digit_sep {table.digit_sep} share "
                             f"ids {sorted(shared)}; the sampler's grammar needs them distinct. Fix: build the "
                             "table with alignts.runtime.codec_table.build_codec_table (it drops shared ids).")
        vsep0 = table.value_sep[0]
        cont = table.digit_sep[0] if table.digit_sep else None
        # One small candidate set for every state (digits, minus, separators' first ids) and a mask per state:
        # sampling works on these gathered columns, never on the whole vocabulary.
        cand = [*table.digit_ids, table.minus_id, vsep0] + ([cont] if cont is not None else [])
        self._cand = np.asarray(cand, dtype=np.int64)  # [K]
        k_minus, k_vsep = 10, 11
        mask = np.zeros((4, len(cand)), dtype=bool)
        mask[_START, :10] = True
        mask[_START, k_minus] = True
        mask[_AFTER_MINUS, :10] = True
        mask[_AFTER_DSEP, :10] = True
        if cont is None:
            mask[_AFTER_DIGIT, :10] = True
        else:
            mask[_AFTER_DIGIT, 12] = True
        mask[_AFTER_DIGIT, k_vsep] = True
        self._mask = mask  # [4, K]
        self._kind = np.full(len(cand), 0, dtype=np.int8)  # 0 digit, 1 minus, 2 value sep, 3 digit sep
        self._kind[k_minus], self._kind[k_vsep] = 1, 2
        if cont is not None:
            self._kind[12] = 3

    # ------------------------------------------------------------------------------------------ token choice
    def _choose(self, logits: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """logits [r, V], mask [r, K] of allowed candidates -> chosen candidate index [r]."""
        sub = np.where(mask, logits[:, self._cand].astype(np.float64), -np.inf)  # [r, K]
        if self.cfg.greedy:
            return np.argmax(sub, axis=1)
        z = sub / self.cfg.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        r = sub.shape[0]
        u = rng.random(r)[:, None]
        if self.cfg.top_p < 1.0:
            order = np.argsort(-p, axis=1, kind="stable")
            ps = np.take_along_axis(p, order, axis=1)
            cum = np.cumsum(ps, axis=1)
            ps = np.where((cum - ps) < self.cfg.top_p, ps, 0.0)  # the crossing token stays; the first always does
            cum = np.cumsum(ps, axis=1)
            idx = np.minimum((cum < u * cum[:, -1:]).sum(axis=1), ps.shape[1] - 1)
            return order[np.arange(r), idx]
        cum = np.cumsum(p, axis=1)
        return np.minimum((cum < u * cum[:, -1:]).sum(axis=1), p.shape[1] - 1)

    # ------------------------------------------------------------------------------------------ generation
    def generate(self, backend: CausalBackend, prompt_ids: Sequence[int] | np.ndarray, horizon: int,
                 rng: np.random.Generator | None = None, max_digits: int | None = None,
                 max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``n_samples`` continuations of ``prompt_ids`` that each spell exactly ``horizon`` values.

        max_tokens: most tokens per sample (None = no limit): a sample stops there with fewer values (the room
        left in the LM's window: n_ctx - prompt length).
        Returns (ids [n, T] int64 padded with -1, lengths [n]). Vectorized over samples: per step, one gather of
        the candidate logits, one masked softmax / top-p draw, and array updates of the grammar state.
        """
        if horizon < 1:
            raise InputError(f"horizon={horizon}: expected >= 1.")
        if max_tokens is not None and max_tokens < 1:
            raise InputError(f"max_tokens={max_tokens}: expected >= 1 (no room left for the forecast). Fix: a "
                             "shorter prompt or horizon.")
        rng = rng if rng is not None else np.random.default_rng(self.cfg.seed)
        n = self.cfg.n_samples
        table = self.table
        max_d = self.cfg.max_digits if max_digits is None else max(1, min(int(max_digits), self.cfg.max_digits))
        cap = max_new_tokens(table, horizon, max_d)
        vsep = np.asarray(table.value_sep, dtype=np.int64)
        dsep = np.asarray(table.digit_sep, dtype=np.int64)
        out = np.full((n, cap), -1, dtype=np.int64)
        length = np.zeros(n, dtype=np.int64)
        state = np.full(n, _START, dtype=np.int64)
        n_dig = np.zeros(n, dtype=np.int64)
        n_val = np.zeros(n, dtype=np.int64)
        vpos = np.zeros(n, dtype=np.int64)  # > 0: next id of a multi-token value separator to force
        dpos = np.zeros(n, dtype=np.int64)  # > 0: likewise for the digit separator
        inv_temp = 1.0 / self.cfg.temperature if not self.cfg.greedy else 1.0
        limit = max_tokens if max_tokens is not None else cap + 1  # cap + 1: never reached
        full = np.full(n, table.value_sep[0], dtype=np.int64)  # keep_finished: finished samples repeat this
        native = getattr(backend, "native_step", None)
        with getattr(backend, "lock", None) or contextlib.nullcontext():
            logits = backend.prefill(np.asarray(prompt_ids, dtype=np.int64), n)  # [n, V]
            step = native() if native is not None else None
            if step is not None:
                status, code, self.decoded_tokens = _native_loop(
                    step.decode, step.get_logits, step.ctx, step.batch, step.n_tokens, step.tok, step.pos, step.seq,
                    step.nseq, step.out, step.seq_pos, step.n_ctx, step.n_vocab,
                    np.ascontiguousarray(logits, dtype=np.float32),
                    self._cand, self._mask, self._kind, state, n_dig, n_val, vpos, dpos, vsep, dsep, max_d, horizon,
                    inv_temp, self.cfg.top_p, self.cfg.greedy, rng, out, length, limit, self.cfg.keep_finished, full)
                step.check(status, code)
            else:
                self.decoded_tokens = self._python_loop(backend, logits, state, n_dig, n_val, vpos, dpos, vsep, dsep,
                                                        max_d, horizon, inv_temp, rng, out, length, limit, full)
        return out[:, : int(length.max())], length

    def _python_loop(self, backend, logits, state, n_dig, n_val, vpos, dpos, vsep, dsep, max_d, horizon, inv_temp, rng,
                     out, length, limit, full) -> int:
        """generate's loop one Python step a token (backends without ``native_step``). Returns the tokens decoded."""
        n = state.shape[0]
        live = np.arange(n)
        everyone = np.arange(n)
        # per step: one kernel call and one backend step, into buffers made here (a one-sample step of the shipped
        # numeric LM is ~0.2 ms of llama.cpp: every microsecond of Python around it shows)
        tok = np.empty(n, dtype=np.int64)
        keep = np.empty(n, dtype=np.bool_)
        no_noise = np.zeros(n)
        decoded = 0
        while True:
            r = live.size
            u = rng.random(r) if not self.cfg.greedy else no_noise[:r]
            n_keep = _step_kernel(np.ascontiguousarray(logits, dtype=np.float32), live, self._cand, self._mask,
                                  self._kind, state, n_dig, n_val, vpos, dpos, vsep, dsep, max_d, horizon,
                                  inv_temp, self.cfg.top_p, self.cfg.greedy, u, tok, keep, out, length, limit)
            if n_keep == 0:
                return decoded
            if self.cfg.keep_finished:
                full[live] = tok[:r]
                live = live[keep[:r]]
                logits = backend.step(full, everyone)[live]
                decoded += n
            elif n_keep == r:
                logits = backend.step(tok[:r], live)
                decoded += r
            else:
                kept = keep[:r]
                live = live[kept]
                logits = backend.step(tok[:r][kept], live)
                decoded += live.size

    def sample_values(self, backend: CausalBackend, prompt_ids, horizon: int, precision: int,
                      rng: np.random.Generator | None = None, max_digits: int | None = None,
                      max_tokens: int | None = None, fill: float = np.nan) -> np.ndarray:
        """Scaled values [n, H] of ``n_samples`` samples (every one parses to exactly H values unless
        ``max_tokens`` stops it: then it is padded with its last value, or ``fill`` when it has none).

        max_digits: a tighter per-series digit cap than the config's (e.g. one more digit than the context's
        largest value needs).
        """
        ids, lengths = self.generate(backend, prompt_ids, horizon, rng, max_digits, max_tokens)
        values, n_parsed = decode_digits(ids, lengths, self.table, precision, horizon)
        if max_tokens is not None and (n_parsed < horizon).any():
            short = n_parsed < horizon
            log.debug("%d of %d samples reached the %d-token limit with %d..%d of %d values; padded", short.sum(),
                      short.size, max_tokens, n_parsed[short].min(), n_parsed[short].max(), horizon)
            values[n_parsed == 0] = fill
            self.n_short += int(short.sum())
            return values
        if (n_parsed != horizon).any():  # the grammar makes this impossible; fail loudly if it ever happens
            bad = int(np.flatnonzero(n_parsed != horizon)[0])
            raise AssertionError(f"sample {bad} parsed {n_parsed[bad]} of {horizon} values: "
                                 f"{ids[bad, :lengths[bad]].tolist()}")
        return values
