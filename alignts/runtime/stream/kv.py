"""Injective streams on llama.cpp that keep the prompt in a KV cache (StreamingLLM's sinks + recent window).

Per stream, a llama.cpp context of its own on the forecaster's loaded model (weights shared, nothing reloaded):
one persistent sequence per channel holds ``prefix (BOS, description: the attention sinks) + the last W values``
(W = ``Plan.context_used``: the values the batch prompt holds); the n samples run on n more sequences that copy
the channel's sequence (``llama_memory_seq_cp``: cells shared, unified cache) and are removed after the forecast
(``llama_memory_seq_rm``): the generated tokens are rolled back.

A forecast decodes only the tokens of the values that arrived since the last one, under the channel's frozen
LLMTime scaler (:func:`alignts.kernels.stream.encode_fixed`), and evicts the oldest values' tokens so the
sequence keeps W values (``seq_rm`` of their positions). Positions are never reused while the cache lives, so
they run out after about ``n_ctx - prompt`` new tokens; then a model with rotary positions (LLaMA family) shifts
the window down behind the sinks (``llama_memory_seq_add``: StreamingLLM), and a model with learned absolute
positions (GPT-2, the numeric LM) re-prefills instead (its cached keys carry their positions; a shift would
relabel them without moving them).

Anchor (full prefill, the batch prompt exactly): at the first forecast, when positions run out on a model that
cannot shift, when a new value leaves the frozen scaler's range (scaled below 0 or above ``(1 + beta) / beta``,
the bound of a freshly fitted scaler; basic mode: above the fitted alpha-quantile's ``1 / alpha`` times), when
more than W values arrived since the last forecast, and on a drift event. An anchor refits the scaler on the
whole L-point window as the batch path does.

What differs from the batch forecast of the same window, and why (measured in results/stream_cpu.md):
between anchors the scaler is frozen (the batch path refits it on every window), the kept values' keys and values
were computed while the evicted ones were still in the cache, and positions have a gap after the sinks. Right
after an anchor the prompt, the scaler, the sampling and so the forecast equal the batch path's (up to llama.cpp's
batch-size-dependent rounding between the stream's and the forecaster's context).

Missing values: the window's NaN are filled by the batch rule before encoding; values filled at the window's end
(forward-filled, provisional) are rolled back and re-encoded at the next forecast, when their gap may be
interpolated.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import numpy as np

from alignts.errors import BackendUnavailableError, InputError
from alignts.kernels.scaler import llmtime_scale, llmtime_unscale
from alignts.kernels.stream import encode_fixed
from alignts.runtime.backends.gguf import attach_threadpool, free_threadpool, numpy_batch
from alignts.runtime.sampler import max_new_tokens

log = logging.getLogger(__name__)


class KVContext:
    """A llama.cpp context on a loaded :class:`LlamaCppModel`'s weights: ``n_seq`` sequences, unified KV cache of
    ``n_cells`` cells, batches owned by numpy. ``embeddings``: inputs are embeddings and outputs hidden states
    (:meth:`decode_embd`, Internal) instead of tokens and logits (:meth:`decode`, Injective). Not thread-safe: the
    engine holds the forecaster's lock."""

    def __init__(self, model, n_seq: int, n_cells: int, lora_scale: float = 1.0, embeddings: bool = False):
        L = model._L
        self._L = L
        self._model = model
        src = model.context_params
        cp = L.llama_context_default_params()
        cp.n_ctx = int(n_cells)
        self.n_batch = int(min(512, model.n_batch))
        cp.n_batch = cp.n_ubatch = self.n_batch
        cp.n_seq_max = int(n_seq)
        cp.kv_unified = True
        cp.n_threads, cp.n_threads_batch = src.n_threads, src.n_threads_batch
        cp.flash_attn_type = src.flash_attn_type
        cp.type_k, cp.type_v = src.type_k, src.type_v
        cp.pooling_type = src.pooling_type
        cp.embeddings = bool(embeddings)
        cp.no_perf = True
        ctx = L.llama_init_from_model(model._model, cp)
        if not ctx:
            raise BackendUnavailableError(f"llama.cpp could not create a stream context ({n_cells} KV cells, {n_seq} "
                                          "sequences) on the forecaster's model; expected enough memory. Fix: fewer "
                                          "channels or samples per stream, or a smaller n_ctx.")
        self._ctx = ctx
        # the model's kind of pool (workers asleep between calls); without one llama.cpp starts threads per graph
        self._tp = attach_threadpool(L, ctx, src.n_threads) if model.device == "cpu" and src.n_threads > 1 else None
        if model._adapters:
            arr = (L.llama_adapter_lora_p_ctypes * len(model._adapters))(*model._adapters)
            scales = (ctypes.c_float * len(model._adapters))(*([float(lora_scale)] * len(model._adapters)))
            if L.llama_set_adapters_lora(ctx, arr, len(model._adapters), scales) != 0:
                self.close()
                raise BackendUnavailableError("llama.cpp could not apply the bundle's LoRA adapter to the stream "
                                              "context. Fix: stream with kv=False.")
        self.mem = L.llama_get_memory(ctx)
        self.n_vocab = int(model.n_vocab)
        self.n_embd = int(model.n_embd)
        self.can_shift = bool(L.llama_model_rope_type(model._model) != L.LLAMA_ROPE_TYPE_NONE
                              and L.llama_memory_can_shift(self.mem))
        cap = max(self.n_batch, int(n_seq))
        self._tok, self._pos, self._nseq, self._seq, self._out, self._seq_ptrs, b = numpy_batch(L, cap)
        self._batch = b
        b.token = self._tok.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        b.embd = None

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            if self._model._model:  # a re-planned forecaster closed the weights: llama_free would touch them
                self._L.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_tp", None):
            free_threadpool(self._L, self._tp)
            self._tp = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def decode(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, last_only: bool) -> np.ndarray:
        """Decode ``tokens [n]`` at ``pos [n]`` in sequences ``seq [n]`` (chunks of n_batch); returns the logits of
        the last token [1, V] (``last_only``) or of every token [n, V] (n <= n_batch)."""
        n = tokens.shape[0]
        for t0 in range(0, n, self.n_batch):
            k = min(self.n_batch, n - t0)
            self._tok[:k] = tokens[t0:t0 + k]
            self._pos[:k] = pos[t0:t0 + k]
            self._seq[:k] = seq[t0:t0 + k]
            self._out[:k] = 0 if last_only else 1
            if last_only and t0 + k == n:
                self._out[k - 1] = 1
            self._batch.n_tokens = k
            rc = self._L.llama_decode(self._ctx, self._batch)
            if rc != 0:
                raise BackendUnavailableError(f"llama_decode failed with code {rc} in a stream context "
                                              f"({'the KV cache is full' if rc == 1 else 'see the llama.cpp log'}).")
        rows = 1 if last_only else n
        ptr = self._L.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(rows, self.n_vocab)).copy()

    def decode_embd(self, rows: np.ndarray, pos: np.ndarray, seq: int) -> np.ndarray:
        """Decode input embeddings ``rows [n, d]`` (n <= n_batch) at positions ``pos [n]`` of sequence ``seq``;
        returns their hidden states [n, d] (a copy)."""
        n = rows.shape[0]
        if n > self.n_batch:
            raise InputError(f"{n} embeddings in one stream decode; expected at most {self.n_batch}.")
        x = np.ascontiguousarray(rows, dtype=np.float32)
        b = self._batch
        self._pos[:n] = pos
        self._seq[:n] = seq
        self._out[:n] = 1
        b.n_tokens = n
        b.token = None
        b.embd = x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        try:
            rc = self._L.llama_decode(self._ctx, b)
        finally:
            b.embd = None
            b.token = self._tok.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        if rc != 0:
            raise BackendUnavailableError(f"llama_decode failed with code {rc} in a stream context "
                                          f"({'the KV cache is full' if rc == 1 else 'see the llama.cpp log'}).")
        ptr = self._L.llama_get_embeddings(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(n, self.n_embd)).copy()

    def clear(self) -> None:
        self._L.llama_memory_clear(self.mem, False)

    def seq_rm(self, seq: int, p0: int, p1: int) -> None:
        if not self._L.llama_memory_seq_rm(self.mem, int(seq), int(p0), int(p1)):
            raise BackendUnavailableError(f"llama.cpp could not remove positions [{p0}, {p1}) of sequence {seq}.")

    def seq_cp(self, src: int, dst: int) -> None:
        self._L.llama_memory_seq_cp(self.mem, int(src), int(dst), -1, -1)

    def seq_add(self, seq: int, p0: int, p1: int, delta: int) -> None:
        self._L.llama_memory_seq_add(self.mem, int(seq), int(p0), int(p1), int(delta))

    def seq_bytes(self, seq: int) -> np.ndarray:
        """The KV state of one sequence (``llama_state_seq_get_data``) as uint8 [n]."""
        L = self._L
        n = int(L.llama_state_seq_get_size(self._ctx, int(seq)))
        buf = (ctypes.c_uint8 * n)()
        got = int(L.llama_state_seq_get_data(self._ctx, buf, n, int(seq)))
        return np.frombuffer(buf, dtype=np.uint8, count=got).copy()

    def set_seq_bytes(self, seq: int, data: np.ndarray) -> None:
        self.seq_rm(seq, -1, -1)
        raw = np.ascontiguousarray(data, dtype=np.uint8)
        if raw.size and not self._L.llama_state_seq_set_data(
                self._ctx, raw.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), raw.size, int(seq)):
            raise InputError(f"llama.cpp refused the saved KV cache of channel {seq} (written by another model or "
                             "context?). Fix: restore with the bundle and plan it was saved with.")


class _Samples:
    """The sampler's backend protocol over a stream context: ``prefill`` copies channel ``c``'s sequence to the
    sample sequences and returns its last logits; ``step`` decodes on them."""

    def __init__(self, kv: KVContext, c: int, first: int, logits: np.ndarray, pos: int):
        self.kv, self.c, self.first, self.logits, self.pos0 = kv, c, first, logits, pos
        self.n_vocab = kv.n_vocab
        self.n = 0

    def prefill(self, prompt_ids, n_parallel: int = 1) -> np.ndarray:
        self.n = int(n_parallel)
        for s in range(self.n):
            self.kv.seq_cp(self.c, self.first + s)
        self.pos = np.full(self.n, self.pos0, dtype=np.int32)
        return np.repeat(self.logits[None], self.n, axis=0)

    def step(self, tokens, seq_ids=None) -> np.ndarray:
        tok = np.asarray(tokens, dtype=np.int32).reshape(-1)
        seq = np.arange(tok.size) if seq_ids is None else np.asarray(seq_ids).reshape(-1)
        out = self.kv.decode(tok, self.pos[seq], (self.first + seq).astype(np.int32), last_only=False)
        self.pos[seq] += 1
        return out

    def roll_back(self) -> None:
        for s in range(self.n):
            self.kv.seq_rm(self.first + s, -1, -1)


class KVEngineState:
    """``state()`` / ``load_state()`` of a KV stream engine: its arrays (``_ARRAYS``), counters (``_COUNTERS``) and
    the KV bytes of every anchored channel. The engine has ``C``, ``anchored``, ``kv`` (a :class:`KVContext`) and
    ``_guard()``: the context that keeps a re-plan from closing the weights meanwhile."""

    _ARRAYS: tuple[str, ...] = ()
    _COUNTERS: tuple[str, ...] = ()

    def _guard(self):
        raise NotImplementedError

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        with self._guard():
            arrays = {k: getattr(self, k).copy() for k in self._ARRAYS}
            for c in range(self.C):
                if self.anchored[c]:
                    arrays[f"kv{c}"] = self.kv.seq_bytes(c)
            # lay the cache out as a restore will (cells in llama.cpp's order change the float rounding of
            # attention), so that this stream and a stream restored from this state forecast the same
            self._load_cache(arrays)
        return {k: getattr(self, k) for k in self._COUNTERS}, arrays

    def _load_cache(self, arrays: dict[str, np.ndarray]) -> None:
        self.kv.clear()
        for c in range(self.C):
            if self.anchored[c]:
                if f"kv{c}" not in arrays:
                    raise InputError(f"the stream state has no KV cache for channel {c}; expected the state "
                                     "Stream.state() wrote.")
                self.kv.set_seq_bytes(c, arrays[f"kv{c}"])

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], stats) -> None:
        for k in self._ARRAYS:
            if k not in arrays or arrays[k].shape != getattr(self, k).shape:
                raise InputError(f"the stream state's KV engine array {k!r} is missing or has another shape; "
                                 "expected the state of the same bundle and plan.")
            setattr(self, k, np.array(arrays[k], dtype=getattr(self, k).dtype))
        with self._guard():
            self._load_cache(arrays)
        for k in self._COUNTERS:
            setattr(self, k, int(meta[k]))


class InjectiveKVEngine(KVEngineState):
    """Injective stream engine with KV-cache reuse (see the module docstring)."""

    kind = "kv-injective"

    def __init__(self, f, n_channels: int):
        self.f = f
        self.C = int(n_channels)
        p = self.prompter = f.prompter
        self.W = int(f.context_used)
        self.L = int(f.context_len)
        self.H = int(f.horizon)
        self.n_ctx = int(p.n_ctx)
        self.n_samples = int(f.sampling.n_samples)
        self.sink = np.asarray(p.prefix, dtype=np.int64)
        s = f.settings
        self.lim = (10 ** s.max_digits - 1) / 10 ** s.precision  # what the batch prompt clips to
        self.z_max = np.inf if s.basic or s.beta <= 0 else (1.0 + s.beta) / s.beta
        gen = min(self.n_ctx, max_new_tokens(p.table, self.H, f.sampling.max_digits))
        variant = f.manifest.variant(f.planned.variant)
        self.kv = KVContext(f.backend, self.C + self.n_samples, self.C * self.n_ctx + self.n_samples * gen,
                            float(variant.extra.get("lora_scale", 1.0)))
        C, W = self.C, self.W
        self.off = np.zeros(C)
        self.sc = np.ones(C)
        self.anchored = np.zeros(C, dtype=bool)
        self.need_anchor = np.zeros(C, dtype=bool)
        self.vpos = np.zeros((C, W), dtype=np.int64)   # ring of the cached values' first positions
        self.vh = np.zeros(C, dtype=np.int64)          # ring head (oldest cached value)
        self.vn = np.zeros(C, dtype=np.int64)          # values cached
        self.next_pos = np.zeros(C, dtype=np.int64)
        self.fed_t = np.full(C, -1, dtype=np.int64)    # index of the last value fed
        self.prov_t = np.full(C, -1, dtype=np.int64)   # first provisional (forward-filled) value fed, -1: none
        self.logits = np.zeros((C, self.kv.n_vocab), dtype=np.float32)
        self.n_anchors = 0
        self.n_shifts = 0
        self.tokens_fed = 0

    # ------------------------------------------------------------------------------------------------ stream
    def reanchor(self) -> None:
        self.need_anchor[:] = True

    def describe(self) -> str:
        mode = "shift (rotary positions)" if self.kv.can_shift else "re-prefill when positions run out"
        return (f"kv-injective: KV cache reuse on llama.cpp, sinks {self.sink.size} tokens + the last {self.W} values "
                f"per channel, {mode}; {self.n_anchors} anchors, {self.n_shifts} shifts, {self.tokens_fed} tokens fed")

    def forecast(self, window: np.ndarray, t_end: int, levels):
        f = self.f
        a = f.prepare(f.scale(f.context(window[None])))  # [1, C, L] float32: what the batch path reads
        x = a[0].astype(np.float64)
        filled_tail = self._filled_tail(window)
        prompter, sampler = f.prompter, f.sampler
        if sampler.cfg.n_samples > self.n_samples or prompter is not self.prompter:
            raise InputError(f"the forecaster was re-planned or its samples raised to {sampler.cfg.n_samples} after "
                             f"this stream was made for {self.n_samples}; expected the plan the stream was made on. "
                             "Fix: make a new stream (or restore its saved state) after changing the forecaster.")
        reanchored = False
        with f._lock:
            rng = np.random.default_rng(sampler.cfg.seed)
            out = np.empty((self.C, sampler.cfg.n_samples, self.H))
            for c in range(self.C):
                reanchored |= self._feed(c, x[c], t_end, filled_tail[c])
                last = float(llmtime_scale(x[c, -1:], self.off[c], self.sc[c])[0])
                gen = _Samples(self.kv, c, self.C, self.logits[c], int(self.next_pos[c]))
                try:
                    z = sampler.sample_values(gen, np.zeros(1, dtype=np.int64), self.H, f.settings.precision, rng,
                                              max_digits=prompter.digit_cap(x[c], self.off[c], self.sc[c]),
                                              max_tokens=int(self.n_ctx - self.next_pos[c]), fill=last)
                finally:
                    gen.roll_back()
                out[c] = llmtime_unscale(z, self.off[c], self.sc[c])
        s = out[None]  # [1, C, n, H]
        q = None if levels is None else np.moveaxis(np.quantile(s, levels, axis=2), 0, -1)
        return f._result(a, s.mean(axis=2), np.median(s, axis=2), q, levels), reanchored

    def _filled_tail(self, window: np.ndarray) -> np.ndarray:
        """Per channel, the index (within the L-point context) of the first trailing NaN, or L: none."""
        T = window.shape[1]
        obs = ~np.isnan(window)
        last_obs = T - 1 - np.argmax(obs[:, ::-1], axis=1)  # each channel has one (the stream checks)
        return (self.L - T) + last_obs + 1

    # ------------------------------------------------------------------------------------------------ cache
    def _feed(self, c: int, x: np.ndarray, t_end: int, tail: int) -> bool:
        """Bring channel c's sequence up to observation t_end; True when it was anchored (full prefill)."""
        L, W = self.L, self.W
        start_t = t_end - L + 1  # time of x[0]
        if not self.anchored[c] or self.need_anchor[c]:
            return self._anchor(c, x, t_end, tail)
        if self.prov_t[c] >= 0:
            self._drop_from(c, int(self.prov_t[c]))
            if self.need_anchor[c]:
                return self._anchor(c, x, t_end, tail)
        first = int(self.fed_t[c]) + 1
        k = t_end - first + 1
        if k > W or first < start_t:
            return self._anchor(c, x, t_end, tail)
        if k > 0:
            new = x[first - start_t:]
            z = (new - self.off[c]) / self.sc[c]
            if (z < 0).any() or (z > self.z_max).any():
                return self._anchor(c, x, t_end, tail)
            ids, lens = encode_fixed(new, self.off[c], self.sc[c], self.lim, self.f.prompter.table,
                                     self.f.settings.precision)
            self._evict(c, int(self.vn[c]) + k - W)
            budget = self.f.prompter.budget(self.H)
            while self.vn[c] and self._window_tokens(c) + ids.size > budget:  # the batch cut: whole values
                self._evict(c, 1)
            if self.next_pos[c] + ids.size > self.n_ctx - 1 - self.f.prompter.forecast_tokens(self.H):
                if not self._shift(c) or self.next_pos[c] + ids.size > \
                        self.n_ctx - 1 - self.f.prompter.forecast_tokens(self.H):
                    return self._anchor(c, x, t_end, tail)
            p0 = int(self.next_pos[c])
            self.logits[c] = self.kv.decode(ids.astype(np.int32), np.arange(p0, p0 + ids.size, dtype=np.int32),
                                            np.full(ids.size, c, dtype=np.int32), last_only=True)[0]
            self.tokens_fed += int(ids.size)
            starts = p0 + np.concatenate([[0], np.cumsum(lens)[:-1]])
            for st in starts:
                self.vpos[c, (self.vh[c] + self.vn[c]) % W] = st
                self.vn[c] += 1
            self.next_pos[c] = p0 + ids.size
            self.fed_t[c] = t_end
        self.prov_t[c] = start_t + tail if tail < L else -1
        return False

    def _window_tokens(self, c: int) -> int:
        if self.vn[c] == 0:
            return 0
        return int(self.next_pos[c] - self.vpos[c, self.vh[c]])

    def _evict(self, c: int, n: int) -> None:
        """Remove the n oldest cached values of channel c (their positions)."""
        n = int(min(max(n, 0), self.vn[c]))
        if n == 0:
            return
        W = self.W
        p0 = int(self.vpos[c, self.vh[c]])
        p1 = int(self.vpos[c, (self.vh[c] + n) % W]) if n < self.vn[c] else int(self.next_pos[c])
        self.kv.seq_rm(c, p0, p1)
        self.vh[c] = (self.vh[c] + n) % W
        self.vn[c] -= n

    def _drop_from(self, c: int, t: int) -> None:
        """Roll channel c back to just before observation t (provisional values are re-encoded)."""
        n_drop = int(self.fed_t[c]) - t + 1
        if n_drop <= 0:
            return
        if n_drop >= self.vn[c]:
            self.need_anchor[c] = True
            return
        i = (self.vh[c] + self.vn[c] - n_drop) % self.W
        p = int(self.vpos[c, i])
        self.kv.seq_rm(c, p, -1)
        self.vn[c] -= n_drop
        self.next_pos[c] = p
        self.fed_t[c] = t - 1
        self.prov_t[c] = -1
        self._refresh_logits(c, p - 1)  # the logits after the last kept token went with the dropped ones

    def _refresh_logits(self, c: int, pos: int) -> None:
        """Logits after position ``pos`` of channel c: re-decode its token (known: the value separator's last id,
        which ends every value) after removing it."""
        tok = int(self.f.prompter.table.value_sep[-1])
        self.kv.seq_rm(c, pos, pos + 1)
        self.logits[c] = self.kv.decode(np.array([tok], np.int32), np.array([pos], np.int32),
                                        np.array([c], np.int32), last_only=True)[0]

    def _shift(self, c: int) -> bool:
        """StreamingLLM: move the window down to follow the sinks (rotary models only)."""
        if not self.kv.can_shift or self.vn[c] == 0:
            return False
        gap = int(self.vpos[c, self.vh[c]]) - self.sink.size
        if gap <= 0:
            return False
        self.kv.seq_add(c, int(self.vpos[c, self.vh[c]]), -1, -gap)
        self.vpos[c] -= gap
        self.next_pos[c] -= gap
        self.n_shifts += 1
        return True

    def _anchor(self, c: int, x: np.ndarray, t_end: int, tail: int) -> bool:
        """Full prefill of the batch prompt for channel c (scaler refit on the L-point window)."""
        p = self.f.prompter
        prompts, off, sc = p.prompts(x[None], self.H, n_values=self.W)
        prompt = prompts[0]
        self.off[c], self.sc[c] = float(off[0, 0]), float(sc[0, 0])
        body = prompt.size - self.sink.size
        _, lens = encode_fixed(x[-self.W:], self.off[c], self.sc[c], self.lim, p.table, self.f.settings.precision)
        kept = int(np.searchsorted(np.cumsum(lens[::-1]), body) + 1) if body else 0
        lens = lens[lens.size - kept:]
        if int(lens.sum()) != body:
            raise AssertionError(f"stream encoding ({lens.sum()} tokens) differs from the prompt's ({body})")
        self.kv.seq_rm(c, -1, -1)
        self.logits[c] = self.kv.decode(prompt.astype(np.int32), np.arange(prompt.size, dtype=np.int32),
                                        np.full(prompt.size, c, dtype=np.int32), last_only=True)[0]
        self.tokens_fed += int(prompt.size)
        self.vh[c] = 0
        self.vn[c] = kept
        self.vpos[c, :kept] = self.sink.size + np.concatenate([[0], np.cumsum(lens)[:-1]]) if kept else 0
        self.next_pos[c] = prompt.size
        self.fed_t[c] = t_end
        self.prov_t[c] = t_end - self.L + 1 + tail if tail < self.L else -1
        self.anchored[c] = True
        self.need_anchor[c] = False
        self.n_anchors += 1
        return True

    # ------------------------------------------------------------------------------------------------ state
    _ARRAYS = ("off", "sc", "anchored", "need_anchor", "vpos", "vh", "vn", "next_pos", "fed_t", "prov_t",
               "logits")
    _COUNTERS = ("n_anchors", "n_shifts", "tokens_fed")

    def _guard(self):
        return self.f._lock
