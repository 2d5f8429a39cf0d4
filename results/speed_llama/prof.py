"""Profile LlamaCppModel.hidden_states on a bundle's GGUF: group size, flash attention, threads."""
import sys, time, json
import numpy as np
from alignts.runtime.backends.gguf import LlamaCppModel

path = sys.argv[1]
N = int(sys.argv[2])
cfgs = json.loads(sys.argv[3])  # list of {g, fa, t, S}
rng = np.random.default_rng(0)
ref = {}
for c in cfgs:
    g, fa, t, S = c["g"], c.get("fa", False), c["t"], c["S"]
    m = LlamaCppModel(path, n_ctx=N, n_batch=g * N, n_seq_max=g, embeddings=True, n_threads=t, flash_attn=fa)
    x = rng.standard_normal((S, N, m.n_embd)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((S, N, m.n_embd)).astype(np.float32)
    y = m.hidden_states(x)
    ts = []
    for _ in range(c.get("r", 5)):
        s = time.perf_counter(); m.hidden_states(x); ts.append(time.perf_counter() - s)
    key = S
    if key not in ref:
        ref[key] = y
    err = float(np.abs(y - ref[key]).max())
    print(f"S={S:3d} g={g:3d} fa={fa!s:5} t={t} median {1e3*np.median(ts):8.2f} ms  min {1e3*min(ts):8.2f}  maxdiff_vs_first {err:.2e}", flush=True)
    m.close()
