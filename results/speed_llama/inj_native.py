"""The compiled Injective loop (session 14) beside the Python one, on the shipped numeric LM (q8_0): for 1 and 20
samples, 1 and 2 threads, `bench_generation` (6 repeats, loop and raw take turns going first) with llama.cpp's decode
called from numba (loop and raw floor compiled) and with `native_step` off (both step in Python, as before).
Rounds interleave the two modes. python inj_native.py ROUNDS > inj_native.txt"""
import sys

from alignts.bench.injective import bench_generation
from alignts.runtime.backends.gguf import LlamaCppModel

native = LlamaCppModel.native_step
for rnd in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
    for n in (1, 20):
        for th in (1, 2):
            row = {}
            for mode in ("compiled", "python"):
                LlamaCppModel.native_step = native if mode == "compiled" else (lambda self: None)
                r = bench_generation("alignts/assets/numeric_lm/numeric_lm-q8_0.gguf", n_samples=n, horizon=24,
                                     n_threads=th, repeats=6)
                assert r["loop"] == mode, r
                row[mode] = r
            c, p = row["compiled"], row["python"]
            print(f"round {rnd} samples {n:2d} threads {th}: compiled loop {c['loop_tokens_per_s']:7.1f} raw "
                  f"{c['raw_tokens_per_s']:7.1f} loop/raw {1 - c['overhead']:.3f} | python loop "
                  f"{p['loop_tokens_per_s']:7.1f} raw {p['raw_tokens_per_s']:7.1f} loop/raw {1 - p['overhead']:.3f} | "
                  f"compiled/python loop {c['loop_tokens_per_s'] / p['loop_tokens_per_s']:.3f}", flush=True)
