"""Injective paradigm (LLMTime) at run time: numbers become digit tokens for a frozen causal LM.

Per series (channel-independent): LLMTime scaler fit on the context -> digit token ids (numba codec) behind an
optional domain text prefix -> n constrained samples from the LM (llama.cpp or onnxruntime, KV cache) -> parse
-> unscale. The point forecast is the sample median; quantiles and raw samples are available too.

Context fitting (LLMTime's ``truncate_input``): when L values of context and H values to generate do not fit
the LM's ``n_ctx`` tokens, the prompt keeps the last L' values that do (``Plan.context_used``; a warning is logged
once). Tokens per value come from the codec: a scaled context value has at most ``context_digits`` digits (the
LLMTime scaler bounds it by ``(1 + beta) / beta``), and the forecast is given that many tokens per value times
LLMTime's STEP_MULTIPLIER 1.2. The scaler is fit on all L values, as LLMTime fits it before truncating. A sample
that still runs out of the window stops there and is padded with its last value (LLMTime pads short outputs).

Manifest ``config``: :class:`alignts.runtime.configs.InjectiveRuntimeConfig` (context_len and horizon are defaults;
any L >= 2 and H >= 1 may be planned as long as two context values and H values fit ``n_ctx``).
``codec``: :class:`alignts.runtime.codec_table.CodecSettings` plus ``table`` (the token ids found at fit time;
checked against the model's vocabulary when the backend opens).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Sequence

import numpy as np

from alignts.errors import CodecError, InputError, ShapeError
from alignts.kernels.digits import CodecTable, encode_digits
from alignts.kernels.scaler import llmtime_scale, llmtime_scaler, llmtime_unscale
from alignts.runtime.budget import shared_kv_cells, shared_prompt_kv
from alignts.runtime.codec_table import (CodecSettings, Vocab, build_codec_table, gguf_token_list, hf_vocab,
                                         llama_vocab, precheck_token_list, table_from_dict, table_to_dict)
from alignts.runtime.forecaster import Forecaster, register_paradigm
from alignts.runtime.manifest import Variant, bundle_file
from alignts.runtime.sampler import ConstrainedSampler, SamplerConfig, max_new_tokens

log = logging.getLogger(__name__)

QUANTILES = (0.1, 0.5, 0.9)
# LLMTime (llmtime.py, truncate_input): room left for the forecast = tokens per value x steps x STEP_MULTIPLIER
GEN_TOKEN_MARGIN = 1.2
MIN_CONTEXT = 2  # values the scaler needs
_warned: set[tuple] = set()


def context_digits(settings: CodecSettings) -> int:
    """Most digits a scaled context value is written with. The default LLMTime scaler maps a series into
    ``[0, (1 + beta) / beta]`` (x - offset lies in [beta r, (1 + beta) r] and the scale is at least beta r); the
    basic one bounds nothing, so values get ``max_digits`` (prompts clip to it)."""
    if settings.basic or settings.beta <= 0:
        return int(settings.max_digits)
    top = math.floor((1.0 + settings.beta) / settings.beta * 10 ** settings.precision * (1 + 1e-9))
    return int(min(settings.max_digits, len(str(max(1, top)))))


def value_tokens(table: CodecTable, digits: int, minus: bool) -> int:
    """Tokens of one value written with ``digits`` digits: sign + digits (+ digit separators) + value separator."""
    return int(minus) + digits + (digits - 1) * len(table.digit_sep) + len(table.value_sep)


def value_boundaries(ids: np.ndarray, table: CodecTable) -> np.ndarray:
    """Positions just after each value's separator in an encoded row [T] (where a value starts)."""
    last = table.value_sep[-1]
    return np.flatnonzero(ids == last) + 1


class DigitPrompter:
    """Turns a context into prompt ids and samples back into values (shared by both backends)."""

    def __init__(self, table: CodecTable, settings: CodecSettings, n_ctx: int, prefix_ids: Sequence[int] = ()):
        self.table = table
        self.settings = settings
        self.n_ctx = int(n_ctx)
        self.prefix = np.asarray(prefix_ids, dtype=np.int64)

    @property
    def context_value_tokens(self) -> int:
        """Most tokens a scaled context value takes (no minus sign: the default scaler makes values >= 0)."""
        return value_tokens(self.table, context_digits(self.settings), minus=self.settings.basic)

    def forecast_tokens(self, horizon: int) -> int:
        """Tokens set aside for H generated values (LLMTime: tokens per value x H x 1.2)."""
        return int(math.ceil(horizon * self.context_value_tokens * GEN_TOKEN_MARGIN))

    def budget(self, horizon: int) -> int:
        """Most context tokens a prompt may take so that H values still fit n_ctx."""
        return self.n_ctx - 1 - self.prefix.size - self.forecast_tokens(horizon)

    def shared_cache_cells(self, samples: int, context_len: int, horizon: int, max_digits: int) -> int | None:
        """The cells of the one KV cache ``samples`` parallel generations share (``budget.shared_kv_cells``) when
        they share one (``budget.shared_prompt_kv``, the prompt estimated without a prefix), else None: a stream
        each. The runtime opens its llama.cpp context with it; the planner's estimate counts it."""
        prompt = self.fit_context(context_len, horizon) * self.context_value_tokens
        if not shared_prompt_kv(samples, prompt, self.forecast_tokens(horizon)):
            return None
        return shared_kv_cells(self.n_ctx, samples, max_new_tokens(self.table, horizon, max_digits))

    def fit_context(self, context_len: int, horizon: int) -> int:
        """The most values of a ``context_len`` context (the last ones) that fit next to H values (may be < 2)."""
        return int(min(context_len, max(0, self.budget(horizon)) // self.context_value_tokens))

    def max_horizon(self) -> int:
        """The longest horizon that leaves room for MIN_CONTEXT context values."""
        room = self.n_ctx - 1 - self.prefix.size - MIN_CONTEXT * self.context_value_tokens
        return max(0, int(math.floor(room / (self.context_value_tokens * GEN_TOKEN_MARGIN))))

    def digit_cap(self, x: np.ndarray, offset, scale) -> int:
        """Digits a forecast value may have: one more than the context's largest scaled value needs (values
        up to ~10x the context's range), within the codec's ``max_digits``."""
        big = float(np.max(np.abs(llmtime_scale(x, offset, scale)))) * 10 ** self.settings.precision
        need = len(str(int(big))) if np.isfinite(big) else self.settings.max_digits
        return int(min(self.settings.max_digits, need + 1))

    def prompts(self, x: np.ndarray, horizon: int,
                n_values: int | None = None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """x [S, L] -> (prompt ids per series, offset [S, 1], scale [S, 1]).

        The scaler is fit on all L values; the prompt holds the last ``n_values`` (None = all) and, should they
        still take more tokens than :meth:`budget` allows, only the last whole values that fit.
        """
        s = self.settings
        off, sc = llmtime_scaler(x, alpha=s.alpha, beta=s.beta, basic=s.basic)
        z = llmtime_scale(x if n_values is None else x[:, -int(n_values):], off, sc)
        lim = (10 ** s.max_digits - 1) / 10 ** s.precision  # values the model can write
        z = np.clip(z, -lim, lim)
        ids, lengths = encode_digits(z, self.table, s.precision)
        budget = self.budget(horizon)
        out = []
        for row, n in zip(ids, lengths):
            row = row[:n]
            if row.size > budget:
                starts = value_boundaries(row, self.table)
                cut = starts[np.searchsorted(starts, row.size - budget)] if starts.size else row.size
                row = row[cut:]
            out.append(np.concatenate([self.prefix, row]))
        return out, off, sc


@register_paradigm("injective")
class InjectiveForecaster(Forecaster):
    """LLMTime forecaster: ``plan(...)`` then ``forecast(x, quantiles=...)`` (mean, median and quantiles of one
    sampling run; ``forecast_scaled(x) -> median [B, C, H]``).

    ``forecast_samples(x)`` -> [B, C, n_samples, H]; ``forecast_quantiles(x, q)`` -> {q: [B, C, H]}.
    Sampling options (samples, temperature, top_p, greedy, seed) come from the manifest and may be changed
    with :meth:`set_sampling` before or after ``plan``.

    Thread safety: the backend holds one generation's state (llama.cpp KV cache, onnxruntime past tensors), so
    generations run one at a time under the forecaster's lock (prompt encoding runs outside it); ``plan`` and
    ``set_sampling`` take the same lock. Each call draws from its own Generator seeded with ``seed``, so a
    call's result does not depend on other threads.
    """

    def __init__(self, bundle_dir, manifest):
        super().__init__(bundle_dir, manifest)
        cfg = self.cfg
        self.settings = CodecSettings.from_dict(manifest.codec)
        self.sampling = SamplerConfig(n_samples=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p,
                                      greedy=cfg.greedy, max_digits=self.settings.max_digits, seed=cfg.seed)
        self._L: int | None = None
        self._H: int | None = None
        self._L_used: int | None = None
        self.backend = None
        self.prompter: DigitPrompter | None = None
        self.sampler: ConstrainedSampler | None = None
        self._kv_digits = 1 << 16  # the digits a value a shared KV cache was sized for (_open)
        self._lock = threading.RLock()

    # -- flexible shapes: an LLM reads any context length and writes any horizon that fits n_ctx
    @property
    def context_len(self) -> int:
        return self._L if self._L is not None else self.cfg.context_len

    @property
    def horizon(self) -> int:
        return self._H if self._H is not None else self.cfg.horizon

    @property
    def n_ctx(self) -> int:
        return self.cfg.n_ctx

    def plan(self, context_len: int | None = None, horizon: int | None = None, batch_size: int = 1,
             variant: str | None = None, device: str = "cpu", threads: int | None = None, budget: int | None = None,
             settings=None):
        """As :meth:`Forecaster.plan`, but any ``context_len >= 2`` and ``horizon >= 1`` are accepted: the
        prompt keeps the last values that fit the LM's context next to H generated values
        (``Plan.context_used``). A horizon that leaves no room for two context values raises ShapeError."""
        if context_len is not None:
            if int(context_len) < 2:
                raise ShapeError(f"context_len={context_len}: expected >= 2 (the scaler needs a range).")
            self._L = int(context_len)
        if horizon is not None:
            if int(horizon) < 1:
                raise ShapeError(f"horizon={horizon}: expected >= 1.")
            self._H = int(horizon)
        # before anything is loaded: the prompt has at least the BOS token (the description's length is known
        # once the tokenizer is open; _open checks again)
        self._check_fit(DigitPrompter(self._stored_table(), self.settings, self.n_ctx,
                                      [0] if self.settings.prefix_bos else []))
        with self._lock:  # waits for generations in flight: _open closes the backend they use
            return super().plan(None, None, batch_size, variant, device, threads, budget, settings)

    def _check_fit(self, prompter: "DigitPrompter") -> int:
        """L' = the context values that fit next to H values; ShapeError when fewer than MIN_CONTEXT do."""
        used = prompter.fit_context(self.context_len, self.horizon)
        if used < MIN_CONTEXT:
            per = prompter.context_value_tokens
            raise ShapeError(f"horizon={self.horizon} needs about {prompter.forecast_tokens(self.horizon)} generated "
                             f"tokens ({per} per value x 1.2), which leaves no room for {MIN_CONTEXT} context values "
                             f"in the LM's context of {prompter.n_ctx} tokens; expected horizon <= "
                             f"{prompter.max_horizon()}. Fix: forecast a shorter horizon (or lower --precision).")
        return used

    @property
    def context_used(self) -> int:
        """Context values the prompt holds (the last ones): context_len, or fewer when they and H values do not
        fit the LM's window (known once planned)."""
        return self._L_used if self._L_used is not None else self.context_len

    def _warn_truncation(self) -> None:
        key = (str(self.bundle_dir), self.context_len, self.horizon, self._L_used)
        if self._L_used is None or self._L_used >= self.context_len or key in _warned:
            return
        _warned.add(key)
        p = self.prompter
        log.warning("%s: %d context values and %d forecast values do not fit the LM's %d-token window (up to %d "
                    "tokens per value); the prompt keeps the last %d of the %d values (LLMTime's truncation).",
                    self.bundle_dir.name, self.context_len, self.horizon, p.n_ctx, p.context_value_tokens,
                    self._L_used, self.context_len)

    def set_sampling(self, **changes: Any) -> None:
        """Change sampling options (n_samples, temperature, top_p, greedy, seed); reopens nothing unless
        n_samples grows past the planned parallel sequences (then plan again)."""
        from dataclasses import replace

        with self._lock:
            self.sampling = replace(self.sampling, **changes)
            if self.sampler is not None:
                self.sampler = ConstrainedSampler(self.sampler.table, self._n_vocab, self.sampling)
                # a backend with fewer parallel sequences, or a shared cache sized for fewer digits a value
                if (getattr(self.backend, "n_seq_max", 1 << 16) < self.sampling.n_samples
                        or self.sampling.max_digits > self._kv_digits):
                    self._plan = None  # forces a new plan (and a new backend)
                    self.backend = None

    def _stored_table(self) -> CodecTable:
        t = self.manifest.codec.get("table")
        if not t:
            raise CodecError(f"bundle {self.bundle_dir}: the manifest's codec has no 'table' (token ids); "
                             "re-export it with `alignts fit injective`.")
        return table_from_dict(t)

    def _open(self, variant: Variant, device: str, threads: int | None, batch_size: int) -> str:
        if self.backend is not None and hasattr(self.backend, "close"):
            self.backend.close()
        path = bundle_file(self.bundle_dir, self.manifest, variant.files[0])
        stored = self._stored_table()
        if variant.backend == "gguf":
            from alignts.runtime.backends.gguf import LlamaCppModel
            from alignts.runtime.gguf_check import check_gguf

            info = check_gguf(path)
            precheck_token_list(gguf_token_list(path), str(path))
            if 0 < info.n_ctx_train < self.n_ctx:  # learned positions past training abort llama.cpp
                raise ShapeError(f"bundle {self.bundle_dir}: n_ctx={self.n_ctx} exceeds the model's trained context "
                                 f"{info.n_ctx_train}; expected n_ctx <= {info.n_ctx_train}. Fix: re-export with "
                                 f"--n-ctx {info.n_ctx_train}.")
            if threads is None and (self.cfg.n_embd or 0) <= 256:
                threads = 1  # a tiny LM decodes faster on one thread: thread sync costs more than the math
            lora = variant.extra.get("lora_file")
            loras = [(bundle_file(self.bundle_dir, self.manifest, lora), float(variant.extra.get("lora_scale", 1.0)))] \
                if lora else []
            n_ctx = self._planned_n_ctx()
            # the samples share the prompt's KV cells while their generated tokens are few beside it: one cache of
            # one window and the other samples' tokens, not a window a sample
            cells = DigitPrompter(stored, self.settings, n_ctx).shared_cache_cells(
                self.sampling.n_samples, self.context_len, self.horizon, self.sampling.max_digits)
            shared = cells is not None
            self._kv_digits = self.sampling.max_digits if shared else 1 << 16
            self.backend = LlamaCppModel(path, n_ctx=n_ctx, n_batch=min(512, n_ctx),
                                         n_seq_max=self.sampling.n_samples, n_threads=threads, device=device,
                                         loras=loras, kv_unified=shared, kv_cells=cells,
                                         **self.llama_options())  # adapters: check_lora_adapter first
            vocab = llama_vocab(self.backend)
            provider = f"llama.cpp-{device}"
        else:
            from alignts.runtime.backends.onnx_causal import OrtCausalLM

            n_ctx = self._planned_n_ctx()
            self.backend = OrtCausalLM(path, n_ctx=n_ctx, threads=threads, device=device, **self.onnx_options())
            m, tc = self.manifest, "tokenizer_config.json"
            vocab = hf_vocab(bundle_file(self.bundle_dir, m, m.codec.get("tokenizer", "tokenizer.json")),
                             tokenizer_config=bundle_file(self.bundle_dir, m, tc) if tc in m.files else None)
            provider = self.backend.provider
        table = self._check_table(vocab, stored)
        self._n_vocab = int(self.backend.n_vocab) if self.backend.n_vocab > 0 else vocab.n_vocab
        prefix = self._prefix_ids(vocab)
        self.prompter = DigitPrompter(table, self.settings, n_ctx, prefix)
        self.sampler = ConstrainedSampler(table, self._n_vocab, self.sampling)
        self._L_used = None
        self._L_used = self._check_fit(self.prompter)
        self._warn_truncation()
        return provider

    def _planned_n_ctx(self) -> int:
        """The LM's n_ctx, or the smaller one the plan's settings ask for (a smaller KV cache)."""
        return int(min(self.n_ctx, self.backend_settings.get("n_ctx") or self.n_ctx))

    def _opened_settings(self) -> dict[str, Any]:
        return dict(getattr(self.backend, "settings", None) or self.backend_settings)

    def _check_table(self, vocab: Vocab, stored: CodecTable) -> CodecTable:
        table, _, _ = build_codec_table(vocab, self.settings.value_sep)
        if (table.digit_ids, table.value_sep, table.digit_sep, table.minus_id) != (
                stored.digit_ids, stored.value_sep, stored.digit_sep, stored.minus_id):
            raise CodecError(f"bundle {self.bundle_dir}: the model's vocabulary gives codec table "
                             f"{table_to_dict(table)}, the manifest says {table_to_dict(stored)}; the model file "
                             "does not belong to this bundle. Fix: re-export the bundle.")
        return stored

    def _prefix_ids(self, vocab: Vocab) -> list[int]:
        ids: list[int] = []
        if self.settings.prefix_bos:
            b = vocab.bos_id if vocab.bos_id is not None else vocab.eos_id
            if b is not None:
                ids.append(int(b))
        desc = self.cfg.description or ""
        if desc:
            ids.extend(vocab.tokenize(desc.rstrip() + "\n"))
        return ids

    # -- forecasting
    def _samples(self, x: np.ndarray) -> np.ndarray:
        """x [B, C, L] -> samples [B, C, n, H] (unscaled)."""
        if self.backend is None or self.prompter is None:
            _ = self.planned
            raise AssertionError("plan() did not open a backend")
        B, C, L = x.shape
        H = self.horizon
        flat = x.reshape(B * C, L).astype(np.float64)
        prompts, off, sc = self.prompter.prompts(flat, H, n_values=self.context_used)
        n_ctx = self.prompter.n_ctx
        with self._lock:  # the backend's KV cache holds one generation (prefill + steps) at a time
            sampler, backend = self.sampler, self.backend
            if backend is None:  # set_sampling dropped it (more samples than it holds): NotPlannedError
                _ = self.planned
            rng = np.random.default_rng(sampler.cfg.seed)
            out = np.empty((B * C, sampler.cfg.n_samples, H))
            for s, prompt in enumerate(prompts):
                last = float(llmtime_scale(flat[s, -1:], off[s], sc[s])[0])
                # [n, H]; a sample that reaches the window's end stops there and is padded with its last value
                z = sampler.sample_values(backend, prompt, H, self.settings.precision, rng,
                                          max_digits=self.prompter.digit_cap(flat[s], off[s], sc[s]),
                                          max_tokens=n_ctx - prompt.size, fill=last)
                out[s] = llmtime_unscale(z, off[s], sc[s])
        return out.reshape(B, C, sampler.cfg.n_samples, H)

    def _forecast(self, x: np.ndarray) -> np.ndarray:
        return np.median(self._samples(x), axis=2)

    @property
    def quantile_method(self) -> str:
        return "samples"

    def _predict(self, a: np.ndarray, levels: tuple[float, ...] | None):
        """One sampling run for mean, median (= ``forecast_scaled``: same seeded chunks) and quantiles."""
        s = self._batched(self._samples, a)  # [B, C, n, H]
        q = None if levels is None else np.moveaxis(np.quantile(s, levels, axis=2), 0, -1)
        return s.mean(axis=2), np.median(s, axis=2), q

    def forecast_samples(self, x: Any) -> np.ndarray:
        """Raw samples: ``x [B, C, T>=L]`` -> [B, C, n_samples, H] (each sample parses to H values)."""
        return self._batched(self._samples, self.prepare(x))

    def forecast_series(self, histories: Sequence[np.ndarray], horizon: int | None = None) -> np.ndarray:
        """Median forecasts for a collection of 1-D histories of any lengths (>= 2, finite): -> [S, H].

        Each history keeps its last ``context_len`` points (Monash-style collections, ``holdout_eval``).
        """
        plan = self.planned
        H = plan.horizon if horizon is None else int(horizon)
        if not 1 <= H <= self.horizon:
            raise ShapeError(f"horizon={H}: expected 1..{self.horizon} (the planned horizon).")
        out = np.empty((len(histories), H))
        for i, h in enumerate(histories):
            a = np.asarray(h, dtype=np.float64).reshape(-1)[-self.context_len:]
            if a.size < 2 or not np.isfinite(a).all():
                raise InputError(f"history {i}: expected >= 2 finite values; got {a.size} values"
                                 f"{' with NaN/inf' if a.size and not np.isfinite(a).all() else ''}. "
                                 "Fix: fill gaps first (alignts.data.series.fill_missing).")
            out[i] = np.median(self._samples(a[None, None]), axis=2)[0, 0, :H]
        return out

    def forecast_quantiles(self, x: Any, q: Sequence[float] = QUANTILES) -> dict[float, np.ndarray]:
        """Model units, like ``forecast_scaled`` (evaluation): ``{q: [B, C, H]}`` from one sampling run, the
        quantiles of ``forecast(x, quantiles=q)``; q=0.5 is the point forecast."""
        from alignts.runtime.conformal import check_levels

        levels = tuple(float(v) for v in check_levels(q))
        vals = self._predict(self.prepare(x), levels)[2]
        return {v: vals[..., i] for i, v in enumerate(levels)}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["codec"] = dict(self.manifest.codec)
        d["sampling"] = self.sampling.__dict__.copy()
        return d
