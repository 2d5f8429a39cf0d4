"""Python cost of a decode step with llama_decode replaced by a no-op (the logits buffer stays): LlamaCppModel.step
against the Python of raw_decode_benchmark's loop, us a step, best of 40 x 1000, three rounds. Run from the repository
root with PYTHONPATH at the alignts tree to measure (session 13: before / after its step changes)."""
import timeit
import numpy as np
from alignts.runtime.backends.gguf import LlamaCppModel
path = "alignts/assets/numeric_lm/numeric_lm-q8_0.gguf"
m = LlamaCppModel(path, n_ctx=512, n_seq_max=1, n_threads=1, kv_type="f16")
prompt = np.r_[m.eos_id, np.arange(5, 15).repeat(20)]
m.prefill(prompt, 1)
L = m._L
class NoDecode:
    def __getattr__(self, k): return getattr(L, k)
    @staticmethod
    def llama_decode(ctx, b): return 0
m._L = NoDecode()
ctx, b = m._ctx, m._batch
tok = np.array([5], np.int64); live = np.arange(1)
N = 1000
def raw():
    for _ in range(N):
        m._tok[:1] = 5; m._pos[:1] = 7
        m._L.llama_decode(ctx, b); m._L.llama_get_logits(ctx)
def step():
    for _ in range(N):
        m._seq_pos[0] = 300
        m.step(tok, live)
for name, fn in (("raw python", raw), ("step python", step)) * 3:
    best = min(timeit.repeat(fn, number=1, repeat=40)) / N
    print("%-16s %.2f us" % (name, best * 1e6))
