"""(session 25, results/speed_llama.md section 25) Bridging's backbone alone (MiniLM 2 layers, f32 GGUF): 7 series of 119
tokens in decodes of 4 (+3), the planner's group, in a loop: p50 and best of N calls. Run it under perf, or with
ALIGNTS_PROF=FILE on a build patched by node_profile_patch.py.
    python backbone_loop.py THREADS N [GGUF]"""
import sys
import time

import numpy as np

from alignts.runtime.backends.gguf import LlamaCppModel

p = sys.argv[3] if len(sys.argv) > 3 else "/tmp/speed_bundles/backbones/bert-c4e5d800ccb26add/backbone-f32.gguf"
th, n = int(sys.argv[1]), int(sys.argv[2])
x = np.random.default_rng(0).standard_normal((7, 119, 384)).astype(np.float32) * 0.1
a = LlamaCppModel(p, embeddings=True, n_threads=th, n_ctx=119, n_batch=476, n_seq_max=4)
a.hidden_states(x)
t = []
for i in range(n):
    c = time.perf_counter()
    a.hidden_states(x)
    t.append(time.perf_counter() - c)
print(th, "p50 ms", 1e3 * np.median(t), "min", 1e3 * min(t))
