import sys, time
import numpy as np
from alignts.runtime.backends.gguf import LlamaCppModel
N = 22; q = sys.argv[1]
gs = [int(g) for g in sys.argv[2].split(",")]
ms = {g: LlamaCppModel(f"minilm_s16/lm.{q}.gguf", n_ctx=N, n_batch=g * N, n_seq_max=g, embeddings=True, n_threads=1) for g in gs}
xs = {S: np.random.default_rng(0).standard_normal((S, N, 384)).astype(np.float32) for S in (7, 56)}
res = {(g, S): [] for g in gs for S in xs}
for m in ms.values(): m.hidden_states(xs[7])
for _ in range(int(sys.argv[3])):
    for g, m in ms.items():
        for S, x in xs.items():
            c = time.process_time(); m.hidden_states(x); res[(g, S)].append(time.process_time() - c)
for g in gs:
    a, b = np.median(res[(g, 7)]), np.median(res[(g, 56)])
    print(f"{q} g={g} ({g*N} tokens): S=7 {1e3*a:.1f} ms  S=56 {1e3*b:.1f} ms  ratio {b/a:.2f}", flush=True)
