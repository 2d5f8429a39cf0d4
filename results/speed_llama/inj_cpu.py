"""bench_generation with CPU time (process_time) instead of wall time: one llama.cpp thread, so CPU time is the
work; robust to the other jobs on the shared machine."""
import sys, time, types, json
import alignts.bench.injective as bi
import alignts.runtime.backends.gguf as gg
shim = types.SimpleNamespace(perf_counter=time.process_time)
if sys.argv[2] == "cpu":
    bi.time = shim
    gg.time = shim
r = bi.bench_generation(sys.argv[1], n_threads=1, repeats=int(sys.argv[3]))
from gguf import GGUFReader
wb = sum(int(t.n_bytes) for t in GGUFReader(sys.argv[1]).tensors)
r["weight_bytes"] = wb
r["raw_weight_GBps"] = wb * r["raw_tokens_per_s"] / r["n_samples"] / 1e9
r["loop_weight_GBps"] = wb * r["loop_tokens_per_s"] / r["n_samples"] / 1e9
print(json.dumps({k: r[k] for k in ("model", "loop_tokens_per_s", "raw_tokens_per_s", "overhead", "weight_bytes", "raw_weight_GBps", "loop_weight_GBps")}))
