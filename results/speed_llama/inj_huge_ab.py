"""(session 28, results/speed_llama.md section 28) One q8_0 GGUF three ways in one process, decoding in turn: mapped
(the page cache), read into 4 KB pages, read into huge pages; raw llama.cpp decode steps of one sample after a
384-token prompt (n_ctx 1024, f16 cache), ROUNDS rounds (order flipped every round), the median ms a step.
"read into 4 KB pages" sets ALIGNTS_HUGE_PAGES=0 while loading (ggml reads it at each allocation; patch level 21).
The session's runs used a development build whose switch was called HUGE_OFF, the same code otherwise.
    python inj_huge_ab.py GGUF THREADS ROUNDS STEPS"""
import os
import sys
import numpy as np
from alignts.runtime.backends.gguf import LlamaCppModel
path, T, rounds, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def load(mmap, huge):
    if huge:
        os.environ.pop("ALIGNTS_HUGE_PAGES", None)
    else:
        os.environ["ALIGNTS_HUGE_PAGES"] = "0"
    m = LlamaCppModel(path, n_ctx=1024, n_seq_max=1, n_threads=T, kv_type="f16", use_mmap=mmap)
    os.environ.pop("ALIGNTS_HUGE_PAGES", None)
    return m
models = {"mmap": load(True, False), "read4k": load(False, False), "readhuge": load(False, True)}
prompt = (np.arange(1, 385) % 10 + 3)
tok = (np.arange(steps) % 10 + 3).astype(np.int32)[:, None]
res = {k: [] for k in models}
for r in range(rounds):
    order = list(models) if r % 2 == 0 else list(models)[::-1]
    for k in order:
        x = models[k].raw_decode_benchmark(prompt, tok)
        res[k].append(x["decode_s"] / steps * 1e3)
for k, v in res.items():
    v = np.array(v)
    print(f"T={T} {k:9s} step ms median {np.median(v):.3f} min {v.min():.3f}  ratio mmap/this median {np.median(np.array(res['mmap'])/v):.3f}")
