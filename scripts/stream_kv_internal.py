"""Internal's patch-level KV stream against the batch forecast on ETTh1 (results/stream_cpu.md, "Internal KV on
ETTh1"): a gguf-f32 Internal bundle on a LLaMA-family backbone streams the last rows of ETTh1 with a forecast every
`stride` points; per statistics tolerance (kv_internal.STAT_TOL), the share of forecasts where a channel
re-anchored, the mean |stream - batch| in series std, and the forecast latency of both paths.

    python scripts/stream_kv_internal.py BUNDLE N_FORECASTS TOL[,TOL...] [DATA_CSV]
"""

import sys
import time

import numpy as np
import pandas as pd

import alignts.runtime as rt
import alignts.runtime.stream.kv_internal as ki


def main(bundle: str, n_fc: int, tols: list[float], data: str) -> None:
    y = pd.read_csv(data).iloc[:, 1:].to_numpy(dtype=np.float64)[-(n_fc * 8 + 1100):]
    f = rt.load(bundle)
    f.plan(variant="gguf-f32", threads=1)
    L, S = f.context_len, f.cfg.stride
    for tol in tols:
        ki.STAT_TOL = tol
        s = f.stream(n_channels=y.shape[1])
        s.update(y[:L])
        s.forecast()
        d, ts, tb, anchored = [], [], [], 0
        for j in range(n_fc):
            i = L + j * S
            s.update(y[i:i + S])
            n0 = s.engine.n_anchors
            t0 = time.perf_counter()
            a = s.forecast()
            t1 = time.perf_counter()
            b = f.forecast(s.window()[None])
            tb.append(time.perf_counter() - t1)
            ts.append(t1 - t0)
            anchored += s.engine.n_anchors > n0
            d.append(np.abs(a.mean - b.mean).mean(axis=-1)[0] / y[:i + S].std(axis=0))
        print(f"{bundle.rstrip('/').split('/')[-1]} STAT_TOL={tol:g}: {n_fc} forecasts, {anchored / n_fc:.2f} with a "
              f"re-anchored channel ({s.engine.n_anchors} channel anchors), mean |stream - batch| {np.mean(d):.4f} "
              f"std (max {np.max(d):.3f}), stream {1e3 * np.mean(ts):.2f} ms vs batch {1e3 * np.mean(tb):.2f} ms",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), [float(t) for t in sys.argv[3].split(",")],
         sys.argv[4] if len(sys.argv) > 4 else "../shared/data/ETT/ETTh1.csv")
