import sys, time, cProfile, pstats
import numpy as np
import alignts.runtime as rt
b = sys.argv[1]; var = sys.argv[2]; bs = int(sys.argv[3]); th = int(sys.argv[4])
f = rt.load(b)
p = f.plan(variant=var, batch_size=bs, threads=th)
x = np.random.default_rng(0).standard_normal((bs, 7, 336)).cumsum(-1).astype(np.float32)
f.forecast_scaled(x)
lm = f._lm
L = lm._L
orig = L.llama_decode
times = []
def timed(ctx, batch):
    s = time.perf_counter(); r = orig(ctx, batch); times.append(time.perf_counter() - s); return r
lm._L = type("X", (), {})()
for k in dir(L):
    if k.startswith("llama_"):
        setattr(lm._L, k, getattr(L, k))
lm._L.llama_decode = timed
pr = cProfile.Profile()
pr.enable()
for _ in range(3):
    f.forecast_scaled(x)
pr.disable()
print("decode calls per forecast", len(times) / 3, "decode ms each", [round(1e3 * t, 1) for t in times[:6]])
pstats.Stats(pr).sort_stats("cumulative").print_stats(18)
e = np.random.default_rng(0).standard_normal((7 * bs, f.cfg.n_patches, lm.n_embd)).astype(np.float32)
for name, fn in (("hidden_states", lambda: lm.hidden_states(e)),
                 ("patch_embed", lambda: np.zeros((7 * bs, f.cfg.n_patches, 16), np.float32) @ f._patch_w.T + f._patch_b),
                 ("head", lambda: e.reshape(e.shape[0], -1) @ f._head_w.T + f._head_b)):
    w, c = [], []
    for _ in range(5):
        s, sc = time.perf_counter(), time.process_time(); fn(); w.append(time.perf_counter() - s); c.append(time.process_time() - sc)
    print(f"{name}: wall {1e3*np.median(w):.2f} ms cpu {1e3*np.median(c):.2f} ms")
