#!/usr/bin/env bash
# alignts-run one-shot --stats before (the runner of b7a6bf1 on the previous wheel's libllama, tinyBLAS, ~64 tokens a
# decode) and after (this runner on the patched libllama, ~160 tokens a decode), interleaved; prints
# variant threads which {stats json}. OLD_RUNNER / OLD_LIB: the old binary and the old wheel's llama_cpp/lib;
# OLD_BUNDLE / NEW_BUNDLE: the bundle each side opens (default both BUNDLE). Section 9 ran it as
# OLD_RUNNER=<this runner> OLD_LIB=<section 8's wheel lib> OLD_BUNDLE=<the bundle as section 8 quantized it>
# NEW_BUNDLE=<the same fp32 bundle quantized again>.
R=${NEW_RUNNER:-/work/main/build/native/native/runner/alignts-run}
OLD=${OLD_RUNNER:-/tmp/oldnative/native/runner/alignts-run}
OLD_LIB=${OLD_LIB:-/tmp/oldwheel/llama_cpp/lib}
B=${BUNDLE:-/tmp/speed_bundles/internal_minilm_q}
OLD_B=${OLD_BUNDLE:-$B}
NEW_B=${NEW_BUNDLE:-$B}
D=/work/shared/data/ETT/ETTh1.csv
for rep in 1 2 3; do
 for v in gguf-f32 gguf-bf16 gguf-q8_0; do
  for t in 1 2; do
   line=$(LD_LIBRARY_PATH=$OLD_LIB $OLD $OLD_B --data $D --variant $v --threads $t --stats 2>&1 >/dev/null | grep -o '{.*forecast_ms.*}' | tail -1)
   echo "$v $t before $line"
   line=$($R $NEW_B --data $D --variant $v --threads $t --stats 2>&1 >/dev/null | grep -o '{.*forecast_ms.*}' | tail -1)
   echo "$v $t after $line"
  done
 done
done
