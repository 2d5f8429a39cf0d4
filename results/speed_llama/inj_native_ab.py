"""The compiled Injective loop against the Python one, generate call by generate call: the shipped numeric LM (q8_0),
one model, keep_finished samples (every step decodes all of them), the two loops alternating (which goes first
alternates too), us a decoded token without the prefill, median and best of N pairs.
python inj_native_ab.py N_SAMPLES THREADS PAIRS   (session 14: 20 1 30, 20 2 30, 1 1 30)"""
import sys
import time

import numpy as np

from alignts.runtime.backends.gguf import LlamaCppModel
from alignts.runtime.codec_table import build_codec_table, llama_vocab
from alignts.runtime.sampler import ConstrainedSampler, SamplerConfig

n, threads, pairs = (int(a) for a in sys.argv[1:4])
m = LlamaCppModel("alignts/assets/numeric_lm/numeric_lm-q8_0.gguf", n_ctx=512, n_seq_max=n, n_threads=threads,
                  kv_type="f16")
table = build_codec_table(llama_vocab(m))[0]
rng = np.random.default_rng(0)
prompt = [0]
for v in rng.integers(10, 99, 60):  # 60 values of two digits: 181 tokens
    prompt += [table.digit_ids[int(d)] for d in str(v)] + list(table.value_sep)
sampler = ConstrainedSampler(table, m.n_vocab, SamplerConfig(n_samples=n, max_digits=4, keep_finished=True))


class Timed:
    """The model, with or without native_step, timing its prefill."""

    def __init__(self, compiled):
        self.n_vocab, self.lock, self.prefill_s = m.n_vocab, m.lock, 0.0
        if compiled:
            self.native_step = m.native_step

    def prefill(self, ids, k):
        t = time.perf_counter()
        out = m.prefill(ids, k)
        self.prefill_s = time.perf_counter() - t
        return out

    def step(self, tokens, seq_ids=None):
        return m.step(tokens, seq_ids)


us = {"compiled": [], "python": []}
for i in range(pairs):
    for mode in ("compiled", "python") if i % 2 == 0 else ("python", "compiled"):
        b = Timed(mode == "compiled")
        t0 = time.perf_counter()
        sampler.generate(b, prompt, 24, np.random.default_rng(0))
        us[mode].append((time.perf_counter() - t0 - b.prefill_s) / sampler.decoded_tokens * 1e6)
c, p = np.array(us["compiled"]), np.array(us["python"])
print(f"samples {n} threads {threads} pairs {pairs}: us a token compiled median {np.median(c):.1f} best {c.min():.1f}, "
      f"python median {np.median(p):.1f} best {p.min():.1f}; python/compiled median {np.median(p) / np.median(c):.3f} "
      f"best {p.min() / c.min():.3f}")
