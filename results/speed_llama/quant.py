import sys, time
import numpy as np
from alignts.runtime.backends.gguf import LlamaCppModel
N = 22
ms = {q: LlamaCppModel(f"minilm_s16/lm.{q}.gguf", n_ctx=N, n_batch=4 * N, n_seq_max=4, embeddings=True, n_threads=1) for q in sys.argv[1].split(",")}
for S in (7, 56):
    x = np.random.default_rng(0).standard_normal((S, N, 384)).astype(np.float32)
    res = {q: [] for q in ms}
    for q, m in ms.items():
        m.hidden_states(x)
    for _ in range(4):
        for q, m in ms.items():
            c = time.process_time(); m.hidden_states(x); res[q].append(time.process_time() - c)
    print(S, {q: round(1e3 * np.median(v), 1) for q, v in res.items()}, flush=True)
