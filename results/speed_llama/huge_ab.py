"""(session 28, results/speed_llama.md section 28) One bundle, one variant: forecaster A planned and loaded with
ALIGNTS_HUGE_PAGES=0 (level 20's way: the GGUF mapped, every buffer in 4 KB pages), B without (read into huge
pages); their calls alternate in one process; the median ratio A / B (> 1: B faster).
    python huge_ab.py BUNDLE VARIANT ROUNDS
The session's Bridging rows came from a development build before change 21 (switch HUGE_OFF, the file mapped both
ways, so only ggml's buffers, f32 panels included, differed); its Internal rows from this script on level 21."""
import json
import os
import sys
import time

import numpy as np
import alignts.runtime as rt
from alignts.runtime.forecaster import paradigm_class
path, v, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for t in (1, 2):
    for bs in (1, 8):
        x = np.cumsum(np.random.default_rng(bs).normal(size=(bs, 7, 336)), -1).astype(np.float32)
        fs = []
        for huge in (False, True):
            if huge:
                os.environ.pop("ALIGNTS_HUGE_PAGES", None)
            else:
                os.environ["ALIGNTS_HUGE_PAGES"] = "0"
            m = rt.load(path).manifest
            f = paradigm_class(m.paradigm)(path, m)
            f.plan(variant=v, batch_size=bs, threads=t)
            f.forecast_scaled(x)
            fs.append(f)
        os.environ.pop("ALIGNTS_HUGE_PAGES", None)
        for _ in range(2):
            for f in fs: f.forecast_scaled(x)
        ts = [[], []]
        for r in range(rounds):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                c = time.perf_counter(); fs[i].forecast_scaled(x); ts[i].append(time.perf_counter() - c)
        ratio = np.array(ts[0]) / np.array(ts[1])
        print(json.dumps({"variant": v, "t": t, "b": bs, "off_ms": round(1e3*np.median(ts[0]), 2),
                          "huge_ms": round(1e3*np.median(ts[1]), 2), "off/huge": round(float(np.median(ratio)), 3),
                          "q25-q75": [round(float(q), 3) for q in np.quantile(ratio, [0.25, 0.75])]}), flush=True)
        del fs
