"""Injective loop vs raw llama.cpp for each MODEL (comma-separated), 1 and 20 samples, 1 and 2 threads: python inj_ab.py MODELS TAG"""
import sys
from alignts.bench.injective import bench_generation
for path in sys.argv[1].split(","):
    for ns in (1, 20):
        for th in (1, 2):
            r = bench_generation(path, n_samples=ns, horizon=24, n_threads=th, repeats=3)
            print(sys.argv[2], path.split("/")[-1], "samples", ns, "threads", th, "raw", round(r["raw_tokens_per_s"], 1), "loop", round(r["loop_tokens_per_s"], 1), "loop/raw", round(1 - r["overhead"], 3), flush=True)
