"""RSS of 1..3 LlamaCppModel contexts of one GGUF in one process (read into memory where THP), after one
hidden_states call each (7 series x 42 tokens, 1 thread); prints MiB after each open.

    PYTHONPATH=. python results/speed_llama/shared_model_rss.py LM.gguf      (an encoder: MiniLM's lm.f32.gguf)
"""

import sys

import numpy as np
import psutil

from alignts.runtime.backends.gguf import LlamaCppModel, default_use_mmap

path = sys.argv[1]
proc = psutil.Process()


def rss() -> float:
    return proc.memory_info().rss / 2**20


print("default_use_mmap", default_use_mmap(), "start", round(rss(), 1))
models, out = [], []
x = np.random.default_rng(0).standard_normal((7, 42, 384)).astype(np.float32)
for i in range(3):
    m = LlamaCppModel(path, n_ctx=42, n_batch=7 * 42, n_seq_max=7, embeddings=True, n_threads=1)
    models.append(m)
    out.append(m.hidden_states(x))
    print(f"contexts {i + 1}: rss {rss():.1f} MiB")
print("equal across contexts", all(np.array_equal(out[0], o) for o in out[1:]))
