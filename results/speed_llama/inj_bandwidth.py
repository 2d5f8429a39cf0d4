"""Injective generation on an LM whose weights stream from DRAM: loop vs raw llama.cpp and the bandwidth fraction.

    python inj_bandwidth.py OUT_DIR [N_LAYER N_EMBD]     (default 12 x 768: GPT-2 small's body, ~85 M parameters)

The shipped numeric LM (6 MB at q8_0) sits in the caches, so its bytes/s say nothing about bandwidth (section 4).
This writes a GPT-2 of the numeric LM's vocabulary with random weights (seed 0; the speed of a decode step does not
depend on the values) as q8_0 GGUF, then for 1 and 20 parallel samples and 1 and 2 threads runs
``alignts.bench.injective.bench_generation`` (the sampling loop beside raw llama.cpp decoding of the same tokens)
and sets the weight bytes a step reads (every tensor but the position table, of which a step reads one row) times
the raw steps/s against ``measure_ceilings``' copy bandwidth (numpy, one thread, 256 MiB, read + write bytes /
s; the ceiling column of ``alignts bench``).
"""
import json
import sys
from pathlib import Path

import gguf
import torch

from alignts.bench.injective import bench_generation
from alignts.bench.roofline import measure_ceilings
from alignts.export.gguf_writer import write_gguf
from transformers import GPT2LMHeadModel

from alignts.export.numeric_lm import TrainConfig, gguf_vocab, gpt2_config

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
n_layer, n_embd = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (12, 768)
path = out / f"numeric_gpt2_{n_layer}x{n_embd}-q8_0.gguf"
if not path.exists():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(TrainConfig(n_layer=n_layer, n_embd=n_embd, n_head=n_embd // 64,
                                                    n_positions=1024))).eval()
    write_gguf(model, path, dtype="q8_0", **gguf_vocab())
tensors = gguf.GGUFReader(str(path)).tensors
step_bytes = sum(int(t.n_bytes) for t in tensors if "position_embd" not in t.name)
ceil = {t: measure_ceilings(threads=t)["copy_gbs"] for t in (1, 2)}  # the 256 MiB copy: DRAM, not caches
rows = []
for n_samples in (1, 20):
    for threads in (1, 2):
        r = bench_generation(path, n_samples=n_samples, horizon=24, n_threads=threads, repeats=3)
        for k in ("loop", "raw"):
            steps = r[f"{k}_tokens_per_s"] / n_samples
            r[f"{k}_weight_gbs"] = step_bytes * steps / 1e9
        r.update(step_bytes=step_bytes, copy_gbs=ceil[threads], loop_fraction_of_raw=1 - r["overhead"],
                 raw_fraction_of_copy=r["raw_weight_gbs"] / ceil[threads],
                 loop_fraction_of_copy=r["loop_weight_gbs"] / ceil[threads])
        rows.append(r)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
(out / "inj_bandwidth.json").write_text(json.dumps(rows, indent=1) + "\n")
