"""Generation throughput of the Injective sampling loop beside raw llama.cpp decoding of the same tokens.

``bench_generation(model_path)`` samples ``n_samples`` parallel continuations of a digit prompt with the
constrained sampler (grammar, temperature, top-p, value counting: everything the runtime does per token; with
``keep_finished`` so that every step decodes all n sequences) and then feeds llama.cpp exactly the same token
matrix with no sampling at all (``LlamaCppModel.raw_decode_benchmark``). Overhead = 1 - loop tokens/s / raw tokens/s
(prefill excluded in both, best of ``repeats``). Every repeat draws the same tokens (one seed) and the two take turns
going first. On alignts' llama.cpp build both loops are compiled (numba calling llama.cpp, no Python between
decodes: ``loop`` "compiled"); on a stock build both step in Python (``loop`` "python").
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from alignts.runtime.codec_table import build_codec_table, llama_vocab
from alignts.runtime.sampler import ConstrainedSampler, SamplerConfig, max_new_tokens

log = logging.getLogger(__name__)


class _Timed:
    """Backend proxy that times prefill (the loop's time excludes it); decoding goes to the model, compiled where
    it offers ``native_step``, as the runtime's does."""

    def __init__(self, inner):
        self.inner = inner
        self.n_vocab = inner.n_vocab
        self.lock = inner.lock
        self.prefill_s = 0.0

    def prefill(self, prompt_ids, n_parallel=1):
        t = time.perf_counter()
        out = self.inner.prefill(prompt_ids, n_parallel)
        self.prefill_s += time.perf_counter() - t
        return out

    def native_step(self):
        return self.inner.native_step()

    def step(self, tokens, seq_ids=None):
        return self.inner.step(tokens, seq_ids)


def bench_generation(model_path: str | Path, n_samples: int = 20, horizon: int = 24, context_len: int = 96,
                     precision: int = 2, n_threads: int | None = None, repeats: int = 3, seed: int = 0,
                     n_ctx: int = 512, kv_unified: bool | None = None, kv_type: str | None = None) -> dict:
    """Tokens/s of the runtime's sampling loop vs raw llama.cpp decoding of the same tokens.

    kv_unified: the samples in one shared KV cache (True) or a stream each (False); None = what the Injective
    runtime picks for this prompt and horizon (:func:`alignts.runtime.budget.shared_prompt_kv`).
    kv_type: the KV cache's type; None = what the Injective runtime plans for these weights
    (:func:`alignts.runtime.budget.decode_kv_type`).
    Returns {"loop_tokens_per_s", "raw_tokens_per_s", "overhead", "tokens", "n_samples", "horizon",
    "prompt_tokens", "kv_unified", "kv_type", "kv_cells", "threads", "model", "loop"}; overhead is a fraction
    (0.1 = 10 % slower than raw); loop: "compiled" or "python", how both loops ran.
    """
    from alignts.kernels.digits import encode_digits
    from alignts.kernels.scaler import llmtime_scale, llmtime_scaler
    from alignts.runtime.backends.gguf import LlamaCppModel
    from alignts.runtime.budget import decode_kv_type, shared_kv_cells, shared_prompt_kv
    from alignts.runtime.paradigms.injective import GEN_TOKEN_MARGIN, value_tokens

    from alignts.runtime.gguf_check import check_gguf

    info = check_gguf(model_path)
    n_train = info.n_ctx_train
    n_ctx = min(n_ctx, n_train) if n_train > 0 else n_ctx  # GPT-2 positions past training abort llama.cpp
    kv_type = kv_type or decode_kv_type(info.file_type_name)
    model = LlamaCppModel(model_path, n_ctx=n_ctx, n_seq_max=n_samples, n_threads=n_threads, kv_type=kv_type)
    try:
        table, _, _ = build_codec_table(llama_vocab(model))
        t = np.arange(context_len)
        x = (10 + np.sin(2 * np.pi * t / 12) + 0.01 * t)[None]
        off, sc = llmtime_scaler(x)
        ids, n = encode_digits(llmtime_scale(x, off, sc), table, precision)
        room = n_ctx - 2 - horizon * (precision + 5)  # prompt tokens that leave room for H values of any size
        if room < 8:  # long horizons: the runtime's estimate (LLMTime's); samples stop at the window's end
            from alignts.errors import ShapeError

            per = value_tokens(table, precision + 1, minus=False)  # the default scaler keeps values < 4.34
            room = n_ctx - 2 - int(np.ceil(horizon * per * GEN_TOKEN_MARGIN))
            if room < 2 * per:
                raise ShapeError(f"horizon={horizon} leaves no prompt room in n_ctx={n_ctx} tokens; expected a "
                                 "horizon whose values fit the window. Fix: a shorter horizon.")
        prompt = np.r_[model.eos_id, ids[0, : n[0]][-room:]]
        if kv_unified is None:
            kv_unified = shared_prompt_kv(n_samples, prompt.size, horizon * value_tokens(table, precision + 1, False))
        if (bool(kv_unified) and n_samples > 1) != model.kv_unified:  # a context is made for one: open again
            model.close()
            # a shared cache as the runtime sizes it: one window plus the other samples' most generated tokens
            cells = shared_kv_cells(n_ctx, n_samples, max_new_tokens(table, horizon, precision + 3)) \
                if kv_unified else None
            model = LlamaCppModel(model_path, n_ctx=n_ctx, n_seq_max=n_samples, n_threads=n_threads,
                                  kv_unified=kv_unified, kv_type=kv_type, kv_cells=cells)
        # keep_finished: every step decodes all n sequences, exactly the token matrix raw decoding gets
        sampler = ConstrainedSampler(table, model.n_vocab, SamplerConfig(n_samples=n_samples, max_digits=precision + 3,
                                                                         seed=seed, keep_finished=True))
        best_loop, best_raw, steps = np.inf, np.inf, None
        for r in range(repeats):
            # every repeat draws the same tokens (one seed), so raw decoding can go first in every other repeat:
            # whichever runs second in a pair finds the caches and the clock warmed by the first
            raw_first = steps is not None and r % 2 == 1
            if raw_first:
                raw = model.raw_decode_benchmark(prompt, steps)
            timed = _Timed(model)
            t0 = time.perf_counter()
            gen, lengths = sampler.generate(timed, prompt, horizon, np.random.default_rng(seed),
                                            max_tokens=n_ctx - prompt.size)
            loop_s = time.perf_counter() - t0 - timed.prefill_s
            # raw llama.cpp: the same tokens, every sequence stepping each time (finished ones repeat a separator)
            drawn = gen[:, :-1].T.copy()  # [T-1, n]: the last token of each sample is never decoded
            drawn[drawn < 0] = table.value_sep[0]
            if steps is not None and not np.array_equal(drawn, steps):
                raise AssertionError("a repeat drew other tokens from the same seed")
            steps = drawn
            if not raw_first:
                raw = model.raw_decode_benchmark(prompt, steps)
            raw_tps = steps.size / raw["decode_s"]
            loop_tps = steps.size / loop_s
            assert sampler.decoded_tokens == steps.size, (sampler.decoded_tokens, steps.shape)  # step for step
            best_loop = min(best_loop, loop_s / steps.size)  # seconds per token
            best_raw = min(best_raw, raw["decode_s"] / steps.size)
            log.info("repeat %d: loop %.0f tok/s (%d tokens, %d live), raw %.0f tok/s%s", r, loop_tps, steps.size,
                     (gen[:, :-1] >= 0).sum(), raw_tps, " (raw first)" if raw_first else "")
        tokens = int(steps.size)
        loop_tps, raw_tps = 1.0 / best_loop, 1.0 / best_raw
        return {"model": str(model_path), "n_samples": n_samples, "horizon": horizon, "prompt_tokens": int(prompt.size),
                "kv_unified": model.kv_unified, "kv_type": kv_type, "kv_cells": model.settings["kv_cells"],
                "tokens": tokens, "loop_tokens_per_s": loop_tps, "raw_tokens_per_s": raw_tps,
                "overhead": 1.0 - loop_tps / raw_tps, "threads": n_threads,
                "loop": raw["loop"]}  # the sampler steps the way raw_decode_benchmark does: both see native_step
    finally:
        model.close()


def ili_scores(f, data_dir: str | Path, split: str = "test", stride: int = 24, variant: str | None = None,
               threads: int | None = 1) -> dict:
    """national_illness windows of ``split`` (every ``stride``-th, all 7 channels, L=104, H=24, standardized with
    train statistics) forecast by ``f`` beside seasonal naive and last value: MAE/MSE and MASE (m=52, each
    window's in-sample seasonal naive error). Plans ``f`` (``variant``, ``threads``)."""
    from alignts.data import load_data
    from alignts.data.splits import make_splits, sliding_windows

    L, H, m = 104, 24, 52
    f.plan(context_len=L, horizon=H, variant=variant, threads=threads)
    sp = make_splits(load_data(Path(data_dir) / "national_illness" / "national_illness.csv"), L, H)
    x, y = sliding_windows(getattr(sp, split), L, H, stride=stride)  # [N, C, L], [N, C, H]
    hist = x.astype(np.float64)
    t0 = time.perf_counter()
    pred = f.forecast_scaled(hist)
    secs = time.perf_counter() - t0
    scale = np.abs(hist[..., m:] - hist[..., :-m]).mean(-1)  # [N, C] in-sample seasonal naive error
    ok = scale > 0
    preds = {"injective": pred, "seasonal_naive": hist[..., L - m:L - m + H], "last_value": np.repeat(hist[..., -1:], H, -1)}
    rows = {}
    for name, p in preds.items():
        err = np.abs(p - y).mean(-1)  # [N, C]
        rows[name] = {"mae": float(err.mean()), "mse": float(((p - y) ** 2).mean()),
                      "mase": float((err[ok] / scale[ok]).mean())}
    rows["injective"]["seconds"] = secs
    return {"rows": rows, "split": split, "n_windows": int(x.shape[0]), "n_channels": int(x.shape[1]), "L": L,
            "H": H, "m": m, "stride": stride, "prompt_values_kept": int(_values_kept(f, L))}


def tourism_scores(f, data_dir: str | Path, context: int, max_series: int | None, first_series: int = 0,
                   variant: str | None = None, threads: int | None = 1) -> dict:
    """Monash tourism monthly series ``first_series``.. (at most ``max_series``), the last 24 values held out,
    forecast by ``f`` from up to ``context`` values beside seasonal naive and last value (``holdout_eval``: MAE in
    the data's units, MASE m=12 on the whole history, sMAPE). Plans ``f`` (``variant``, ``threads``)."""
    from alignts.data import load_data
    from alignts.eval.evaluate import _last_value_histories, _seasonal_naive_histories, holdout_eval

    H, m, L = 24, 12, int(context)
    f.plan(context_len=L, horizon=H, variant=variant, threads=threads)
    data = load_data(Path(data_dir) / "monash" / "tourism_monthly_dataset.tsf")
    span = {"max_series": max_series, "first_series": first_series, "period": m, "progress": False}
    t0 = time.perf_counter()
    inj = holdout_eval(lambda hs: f.forecast_series(hs), data, H, context_len=L, batch_size=8, **span)
    inj["seconds"] = time.perf_counter() - t0
    rows = {"injective": inj, "seasonal_naive": holdout_eval(_seasonal_naive_histories(H, m), data, H, **span),
            "last_value": holdout_eval(_last_value_histories(H), data, H, **span)}
    return {"rows": rows, "L": L, "H": H, "m": m, "max_series": max_series, "first_series": first_series,
            "prompt_values_kept": int(_values_kept(f, L))}


def zero_shot(bundle: str | Path, data_dir: str | Path, variant: str | None = None, samples: int = 20,
              max_series: int = 60, ili_stride: int = 24, threads: int | None = 1, seed: int = 0,
              tourism_context: int = 180, temperature: float | None = None) -> dict:
    """Zero-shot scores of an Injective bundle beside seasonal naive and last value, on subsamples of
    national_illness (:func:`ili_scores` on the test split, every ``ili_stride``-th window) and Monash tourism
    monthly (:func:`tourism_scores`: the first ``max_series`` series, context up to ``tourism_context`` values).
    ``temperature``: the sampling temperature (None: the bundle's)."""
    import alignts.runtime as rt

    f = rt.load(bundle)
    f.set_sampling(n_samples=samples, seed=seed, **({} if temperature is None else {"temperature": temperature}))
    res: dict = {"bundle": str(bundle), "samples": samples, "seed": seed, "temperature": f.sampling.temperature,
                 "top_p": f.sampling.top_p}
    res["national_illness"] = ili_scores(f, data_dir, "test", ili_stride, variant, threads)
    res["variant"] = f.planned.variant
    res["tourism_monthly"] = tourism_scores(f, data_dir, tourism_context, max_series, 0, variant, threads)
    return res


def _values_kept(f, L: int) -> int:
    """How many of L typical context values fit the prompt next to H generated values."""
    t = np.arange(L)
    prompts, _, _ = f.prompter.prompts((10 + np.sin(t / 3))[None], f.horizon)
    return int(np.isin(prompts[0], f.prompter.table.value_sep[-1:]).sum())
