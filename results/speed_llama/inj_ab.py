"""Injective loop vs raw llama.cpp for each MODEL (comma-separated), 1 and 20 samples, 1 and 2 threads: python inj_ab.py MODELS TAG
(inj_ab.txt: TAG before / after = sessions 8 / 9, s10 = session 10: shared prompt KV, q8_0 few-token products, KV padding 32; s11 = session 11, three runs: the q8_0 pack without a store-forwarding stall, prefetch in the few-token and dot-product kernels; s12 = session 12, three runs: f16 KV cache (the plan's default beside these weights) and f16 dot products; s13 = session 13 on an Intel Xeon (AMX, noisy), s13-before = the tree before its loop changes, same wheel, three interleaved runs)"""
import sys
from alignts.bench.injective import bench_generation
for path in sys.argv[1].split(","):
    for ns in (1, 20):
        for th in (1, 2):
            r = bench_generation(path, n_samples=ns, horizon=24, n_threads=th, repeats=3)
            print(sys.argv[2], path.split("/")[-1], "samples", ns, "threads", th, "raw", round(r["raw_tokens_per_s"], 1), "loop", round(r["loop_tokens_per_s"], 1), "loop/raw", round(1 - r["overhead"], 3), "kv", r["kv_type"], flush=True)
