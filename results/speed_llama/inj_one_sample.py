"""One-sample Injective loop vs raw llama.cpp on the shipped numeric LM (q8_0), 1 and 2 threads, 6 repeats (raw and
loop take turns going first): python inj_one_sample.py TAG. inj_one_sample.txt: session 13, "before" = the alignts tree
before its loop changes (with this bench_generation), "after" = session 13's, same wheel, interleaved, three rounds."""
import sys

from alignts.bench.injective import bench_generation

for th in (1, 2):
    r = bench_generation("alignts/assets/numeric_lm/numeric_lm-q8_0.gguf", n_samples=1, horizon=24, n_threads=th,
                         repeats=6)
    print(sys.argv[1], "samples 1 threads", th, "raw %.1f loop %.1f loop/raw %.3f" % (
        r["raw_tokens_per_s"], r["loop_tokens_per_s"], 1 - r["overhead"]), flush=True)
