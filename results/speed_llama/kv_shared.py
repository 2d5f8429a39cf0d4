"""Injective's parallel samples: a KV stream each vs one shared cache (llama.cpp's kv_unified), raw and loop tokens/s.

    python kv_shared.py MODEL[,MODEL...] [THREADS]

For each model, 20 samples after the bench's 294-token prompt, horizons 24 / 48 / 96 (n_ctx 1024), both layouts, as
``alignts.bench.injective.bench_generation`` measures them (best of 2 repeats); prints one JSON line a case with the
rule's choice (``budget.shared_prompt_kv`` on the tokens generated) beside it.
"""
import json
import sys

from alignts.bench.injective import bench_generation
from alignts.runtime.budget import shared_prompt_kv

threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
for path in sys.argv[1].split(","):
    for horizon in (24, 48, 96):
        row = {"model": path.split("/")[-1], "threads": threads, "horizon": horizon}
        for shared in (False, True):
            r = bench_generation(path, n_samples=20, horizon=horizon, n_threads=threads, repeats=2, n_ctx=1024,
                                 kv_unified=shared)
            key = "shared" if shared else "streams"
            row[f"{key}_raw"] = round(r["raw_tokens_per_s"], 1)
            row[f"{key}_loop"] = round(r["loop_tokens_per_s"], 1)
            row["tokens"], row["prompt_tokens"] = r["tokens"], r["prompt_tokens"]
        # the rule on the tokens really generated (the runtime applies it to its estimate before generating)
        row["rule_picks"] = "shared" if shared_prompt_kv(20, row["prompt_tokens"], row["tokens"] // 20) else "streams"
        print(json.dumps(row), flush=True)
