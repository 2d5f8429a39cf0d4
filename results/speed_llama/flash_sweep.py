"""Hidden states of GGUF files with flash attention off/on and S series grouped PER a decode (llama.cpp only).

Usage: python flash_sweep.py A.gguf,B.gguf S PER1,PER2,... REPEATS THREADS N  (width 384: MiniLM; the first file
at one series a decode, flash attention off, is the reference for max abs / rms).
"""
import sys, time
import numpy as np
from alignts.runtime.backends.gguf import LlamaCppModel
S = int(sys.argv[2]); N = int(sys.argv[6]); th = int(sys.argv[5])
x = np.random.default_rng(0).standard_normal((S, N, 384)).astype(np.float32)
paths = sys.argv[1].split(",")
m = LlamaCppModel(paths[0], n_ctx=N, n_batch=N, n_seq_max=1, embeddings=True, n_threads=1)
ref = m.hidden_states(x); m.close()
for path in paths:
  for fa in (False, True):
    for per in [int(p) for p in sys.argv[3].split(",")]:
        per = min(per, S)
        if per * N > 2048: continue
        m = LlamaCppModel(path, n_ctx=N, n_batch=per*N, n_seq_max=per, embeddings=True, n_threads=th, flash_attn=fa)
        h = m.hidden_states(x)
        t = []
        for _ in range(int(sys.argv[4])):
            c = time.perf_counter(); m.hidden_states(x); t.append(time.perf_counter() - c)
        print(f"{path.split('/')[-1]:14s} fa={fa:d} per={per:2d} ms={1e3*np.median(t):6.1f} maxdiff_vs_f32={np.abs(h-ref).max():.1e} rms={np.sqrt(np.mean((h-ref)**2)):.1e}", flush=True)
        m.close()
