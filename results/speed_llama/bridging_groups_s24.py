"""(session 24, results/speed_llama.md section 24) Bridging's backbone (MiniLM 2 layers, f32 GGUF): 7 series of 119 tokens in decodes of 4 (+3) series, the
planner's group, against all 7 in one decode; two models in one process, alternating rounds. ARGS: THREADS ROUNDS"""
import sys, time
import numpy as np
from alignts.runtime.backends.gguf import LlamaCppModel
p = "/tmp/speed_bundles/backbones/bert-c4e5d800ccb26add/backbone-f32.gguf"
th, rounds = int(sys.argv[1]), int(sys.argv[2])
x = np.random.default_rng(0).standard_normal((7, 119, 384)).astype(np.float32) * 0.1
a = LlamaCppModel(p, embeddings=True, n_threads=th, n_ctx=119, n_batch=476, n_seq_max=4)
b = LlamaCppModel(p, embeddings=True, n_threads=th, n_ctx=119, n_batch=833, n_seq_max=7)
ha, hb = a.hidden_states(x), b.hidden_states(x)
ta, tb, r = [], [], []
for i in range(rounds):
    for m, t in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
        best = 1e9
        for _ in range(3):
            c = time.perf_counter(); m.hidden_states(x); best = min(best, time.perf_counter() - c)
        t.append(best)
    r.append(ta[-1] / tb[-1])
print(f"t={th}: groups of 4 {1e3*np.median(ta):.1f} ms, all 7 {1e3*np.median(tb):.1f} ms, 4/7 {np.median(r):.3f} "
      f"({np.quantile(r, .25):.3f}-{np.quantile(r, .75):.3f}), max abs diff {float(np.abs(ha - hb).max()):.1e}")
