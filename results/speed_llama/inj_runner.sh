#!/usr/bin/env bash
# alignts-run one-shot --stats on an Injective bundle (every channel of the last ETTh1 window), before (OLD_RUNNER on
# OLD_LIB: the previous commit's runner on the previous wheel's llama_cpp/lib) and after (this runner and wheel),
# interleaved, 8 (the bundle's) and 20 samples, 1 and 2 threads; prints variant samples threads which {stats json}.
R=${NEW_RUNNER:-/work/main/build/native/native/runner/alignts-run}
OLD=${OLD_RUNNER:-/tmp/oldnative/native/runner/alignts-run}
OLD_LIB=${OLD_LIB:-/tmp/oldwheel/llama_cpp/lib}
B=${BUNDLE:-/tmp/demo_run/alignts-demo/injective}
D=/work/shared/data/ETT/ETTh1.csv
for rep in 1 2 3; do
 for v in gguf-q8_0 gguf-f16; do
  for s in 8 20; do
   for t in 1 2; do
    line=$(LD_LIBRARY_PATH=$OLD_LIB $OLD $B --data $D --variant $v --samples $s --threads $t --stats 2>&1 >/dev/null | grep -o '{.*forecast_ms.*}' | tail -1)
    echo "$v $s $t before $line"
    line=$($R $B --data $D --variant $v --samples $s --threads $t --stats 2>&1 >/dev/null | grep -o '{.*forecast_ms.*}' | tail -1)
    echo "$v $s $t after $line"
   done
  done
 done
done
