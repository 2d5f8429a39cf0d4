#!/usr/bin/env bash
# alignts-run one-shot --stats before (session 8's wheel libllama, the stub-vocabulary Internal bundle as session 8's
# quantize wrote it: bf16 / q8_0 with flash attention) and after (this wheel: attention per series; the same fp32
# bundle quantized again: exact attention), interleaved; prints variant threads which {stats json}.
# OLD_LIB: session 8's llama_cpp/lib (a copy taken before installing the new wheel).
R=${RUNNER:-/work/main/build/native/native/runner/alignts-run}
OLD_LIB=${OLD_LIB:-/tmp/lib_backup_s9}
OLD_B=${OLD_BUNDLE:-/tmp/s7_speed/internal_minilm_q}
NEW_B=${NEW_BUNDLE:-/tmp/s9_runner/internal_minilm_q}
D=/work/shared/data/ETT/ETTh1.csv
for rep in 1 2 3; do
 for v in gguf-f32 gguf-bf16 gguf-q8_0; do
  for t in 1 2; do
   line=$(LD_LIBRARY_PATH=$OLD_LIB $R $OLD_B --data $D --variant $v --threads $t --stats 2>&1 >/dev/null | grep -o '{.*forecast_ms.*}' | tail -1)
   echo "$v $t before $line"
   line=$($R $NEW_B --data $D --variant $v --threads $t --stats 2>&1 >/dev/null | grep -o '{.*forecast_ms.*}' | tail -1)
   echo "$v $t after $line"
  done
 done
done
