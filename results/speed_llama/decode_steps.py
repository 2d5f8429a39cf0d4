"""ms a decode step of one sequence after a P-token prompt: python decode_steps.py GGUF [THREADS] [P] (400 steps)."""
import sys, time, numpy as np
from alignts.runtime.backends.gguf import LlamaCppModel
m = LlamaCppModel(sys.argv[1], n_ctx=1024, n_seq_max=1, n_threads=int(sys.argv[2]) if len(sys.argv) > 2 else 1)
P = int(sys.argv[3]) if len(sys.argv) > 3 else 294
prompt = np.random.default_rng(0).integers(0, 15, P)
m.prefill(prompt, 1)
toks = np.random.default_rng(1).integers(0, 15, 400)
t = time.perf_counter()
for i in range(400):
    m.step(toks[i:i+1], copy=False)
dt = (time.perf_counter() - t) / 400
print(f"P={P} ms/step {dt*1e3:.3f}")
