"""Two Injective generations at once, each on its own model (1 llama.cpp thread each, as `alignts serve --workers 2
--threads 1` runs them), with the compiled loop (GIL released for the whole generation) and with the Python loop
(the GIL taken back after every llama.cpp call): tokens/s of both together against one alone. The shipped numeric
LM (q8_0), one sample, H = 24, rounds alternate the two loops.   python inj_gil.py ROUNDS"""
import sys
import threading
import time

import numpy as np

from alignts.runtime.backends.gguf import LlamaCppModel
from alignts.runtime.codec_table import build_codec_table, llama_vocab
from alignts.runtime.sampler import ConstrainedSampler, SamplerConfig

PATH = "alignts/assets/numeric_lm/numeric_lm-q8_0.gguf"
models = [LlamaCppModel(PATH, n_ctx=512, n_seq_max=1, n_threads=1, kv_type="f16") for _ in range(2)]
table = build_codec_table(llama_vocab(models[0]))[0]
rng = np.random.default_rng(0)
prompt = [0]
for v in rng.integers(10, 99, 60):
    prompt += [table.digit_ids[int(d)] for d in str(v)] + list(table.value_sep)


class Python:
    """A model without native_step: the sampler steps it in Python."""

    def __init__(self, m):
        self.m, self.n_vocab, self.lock = m, m.n_vocab, m.lock

    def prefill(self, ids, k):
        return self.m.prefill(ids, k)

    def step(self, tokens, seq_ids=None):
        return self.m.step(tokens, seq_ids)


def work(backend, n_gen, out, k):
    s = ConstrainedSampler(table, backend.n_vocab, SamplerConfig(n_samples=1, max_digits=4))
    tokens = 0
    for g in range(n_gen):
        s.generate(backend, prompt, 24, np.random.default_rng(g))
        tokens += s.decoded_tokens
    out[k] = tokens


def run(mode, n_threads, n_gen=20):
    wrap = (lambda m: m) if mode == "compiled" else Python
    out = {}
    ts = [threading.Thread(target=work, args=(wrap(models[k]), n_gen, out, k)) for k in range(n_threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(out.values()) / (time.perf_counter() - t0)


for mode in ("compiled", "python"):
    run(mode, 1, 2)  # warm
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    for mode in ("compiled", "python") if r % 2 == 0 else ("python", "compiled"):
        one, two = run(mode, 1), run(mode, 2)
        print(f"round {r} {mode:8s}: one generation {one:7.1f} tokens/s (prefill included), two at once {two:7.1f} "
              f"({two / one:.2f}x)", flush=True)
