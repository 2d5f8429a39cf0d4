"""Where one Internal gguf-f32 forecast spends its time (CPU seconds, 1 llama.cpp thread): llama_decode vs the rest."""
import sys, time, cProfile, pstats, io
import numpy as np
import alignts.runtime as rt
f = rt.load(sys.argv[1]); bs = int(sys.argv[2])
f.plan(variant=sys.argv[3], batch_size=bs, threads=1)
x = np.random.default_rng(0).standard_normal((bs, 7, 336)).cumsum(-1).astype(np.float32)
f.forecast_scaled(x)
lm = f._lm
real = lm._L
class Spy:
    def __getattr__(self, k): return getattr(real, k)
dec = []
def llama_decode(ctx, b):
    c = time.process_time(); r = real.llama_decode(ctx, b); dec.append(time.process_time() - c); return r
spy = Spy(); spy.llama_decode = llama_decode
lm._L = spy
tot = []
pr = cProfile.Profile()
for _ in range(5):
    c = time.process_time(); pr.enable(); f.forecast_scaled(x); pr.disable(); tot.append(time.process_time() - c)
n = len(dec) // 5
print(f"b={bs}: forecast CPU {1e3*np.median(tot):.1f} ms, {n} llama_decode calls/forecast = {1e3*sum(dec)/5:.1f} ms, rest {1e3*(sum(tot)-sum(dec))/5:.2f} ms")
s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(6); print("\n".join(l for l in s.getvalue().splitlines() if l.strip())[:1500])
