"""Default thread count (plan(threads=None)) on this machine as it is: forecast wall/CPU ms of the Internal gguf
variants at batch 1 and 8, and the threads llama.cpp used. Run with PYTHONPATH = the tree to measure."""
import sys, time, os
import numpy as np
import alignts.runtime as rt
f = rt.load(sys.argv[1])
for var in sys.argv[2].split(","):
    for bs in (1, 8):
        f.plan(variant=var, batch_size=bs)
        x = np.random.default_rng(0).standard_normal((bs, 7, 336)).cumsum(-1).astype(np.float32)
        f.forecast_scaled(x)
        w, c = [], []
        for _ in range(int(sys.argv[3])):
            s, sc = time.perf_counter(), time.process_time(); f.forecast_scaled(x); w.append(time.perf_counter() - s); c.append(time.process_time() - sc)
        lm = f._lm
        used = getattr(lm, "threads_used", lm.context_params.n_threads)
        print(f"{var} b={bs}: wall p50 {1e3*np.median(w):.1f} ms, CPU {1e3*np.median(c):.1f} ms, llama.cpp threads {used} "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
