"""Bridging's backbone GGUF (7 series of 119 tokens, random embeddings): all series in one llama_decode against
groups of 4 (budget.ENCODER_STREAMS_DECODE_TOKENS set for each call), calls alternating, 1 and 2 threads; p50 ms of
hidden_states. python bridging_groups.py BACKBONE.gguf      (session 18, section 18)"""

import json
import sys
import time

import numpy as np
from alignts.runtime import budget
from alignts.runtime.backends.gguf import LlamaCppModel

path = sys.argv[1]
out = {}
x = np.random.default_rng(0).standard_normal((7, 119, 384)).astype(np.float32) * 0.05
for t in (1, 2):
    m = LlamaCppModel(path, n_ctx=512, n_batch=1024, n_seq_max=8, embeddings=True, n_threads=t)
    ts = {4: [], 7: []}
    for r in range(24):
        for per in (4, 7) if r % 2 == 0 else (7, 4):
            budget.ENCODER_STREAMS_DECODE_TOKENS = per * 119
            c = time.perf_counter()
            m.hidden_states(x)
            ts[per].append(time.perf_counter() - c)
    out[f"{t}t"] = {f"{k} series a decode": round(1e3 * float(np.median(v[4:])), 2) for k, v in ts.items()}
    del m
print(json.dumps(out))
