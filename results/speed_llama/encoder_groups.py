"""Bridging gguf-f32 forecast time against the tokens an encoder decode takes (the series grouped per llama_decode).

    python encoder_groups.py TOKENS THREADS [BATCH]

Replaces budget.embedding_geometry for encoders (no flash attention) with round(TOKENS / series length) series a
decode, plans /tmp/speed_bundles/bridging_minilm (MiniLM backbone, 119 tokens a series) on gguf-f32 and times 15
forecasts of the last ETTh1 window(s) after 2 warm-ups: median and min ms. Section 10 of results/speed_llama.md.
"""
import sys, time, numpy as np
import alignts.runtime.budget as B
import alignts.runtime.backends.gguf as G
from alignts.runtime import load
from alignts.data import load_data
tok = int(sys.argv[1]); th = int(sys.argv[2]); bs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
orig = B.embedding_geometry
def geo(tokens, series, encoder, flash=False, streams=True):
    if encoder and not flash:
        per = min(max(1, round(tok / tokens)), series)
        return per, per * tokens
    return orig(tokens, series, encoder, flash, streams)
G.embedding_geometry = geo
f = load("/tmp/speed_bundles/bridging_minilm")
f.plan(context_len=336, horizon=96, variant="gguf-f32", threads=th, batch_size=bs)
df = load_data("/work/shared/data/ETT/ETTh1.csv")
x = np.asarray(df.values[-336 - 8:, :], dtype=np.float64).T  # [7, 344]
xb = np.stack([x[:, i:i + 336] for i in range(bs)])
for _ in range(2): f.forecast(xb)
ts = []
for _ in range(15):
    t = time.perf_counter(); f.forecast(xb); ts.append(time.perf_counter() - t)
print(f"tokens/decode {tok} threads {th} batch {bs}: median {np.median(ts)*1e3:.1f} ms min {min(ts)*1e3:.1f}")
