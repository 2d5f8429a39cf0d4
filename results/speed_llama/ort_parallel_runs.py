"""An Internal bundle's ONNX core on 2 threads: onnxruntime's intra-op threads against runs in parallel, in step.
    python ort_parallel_runs.py BUNDLE core.int8.onnx R ROUNDS
(1t) one run of all series (run_series: runs of <= ONNX_RUN_TOKENS tokens) vs runs of <= R series one after
another, on a 1-thread session; (2t) a 2-intra-op-thread session on the usual runs vs runs of <= R series on the
1-thread session, two at a time from 2 Python threads. Batch 1 and 8 (7 and 56 series of 22 tokens).
Not in the runtime (session 21, ort_parallel_runs.txt): dynamic int8's activation scale is per run, so other runs
would give other int8 forecasts (serve already runs such models per request), and the gain at batch 1 needs runs
smaller than one."""
import sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np
sys.path.insert(0, "/work/main")
from alignts.runtime.backends.onnx import OnnxSession
from alignts.kernels.patch import norm_patchify
B, f, R, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s1 = OnnxSession(f"{B}/{f}", threads=1); s2 = OnnxSession(f"{B}/{f}", threads=2)
name = s1.input_names[0]
pool = ThreadPoolExecutor(2)
for bs in (1, 8):
    x = np.random.default_rng(0).standard_normal((bs * 7, 336)).cumsum(-1).astype(np.float32)
    p, _, _ = norm_patchify(x, 16, 16, 1e-5); p = np.ascontiguousarray(p, dtype=np.float32)
    chunks = [p[i:i + R] for i in range(0, len(p), R)]
    fns = {"1t whole": lambda: s1.run_series(name, p),
           "1t runs": lambda: np.concatenate([s1.run({name: c})[0] for c in chunks]),
           "2t intra": lambda: s2.run_series(name, p),
           "2t runs": lambda: np.concatenate(list(pool.map(lambda c: s1.run({name: c})[0], chunks)))}
    t = {k: [] for k in fns}
    for r in range(rounds):
        for k, fn in (list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]):
            q = []
            for _ in range(5):
                c0 = time.perf_counter(); fn(); q.append(time.perf_counter() - c0)
            t[k].append(min(q))
    rr = lambda a, b: np.percentile(np.array(t[a]) / np.array(t[b]), [25, 50, 75])
    print(f"{f} b={bs} runs<={R}: " + ", ".join(f"{k} {1e3*np.median(v):.2f}" for k, v in t.items()),
          "| whole/runs 1t %.3f (%.3f-%.3f)" % tuple(rr("1t whole", "1t runs")[[1, 0, 2]]),
          "| intra/runs 2t %.3f (%.3f-%.3f)" % tuple(rr("2t intra", "2t runs")[[1, 0, 2]]))
