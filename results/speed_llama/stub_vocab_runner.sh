#!/usr/bin/env bash
# alignts-run one-shot --stats on the full-vocabulary bundle (session 6) and the stub-vocabulary one (this commit),
# interleaved; prints variant threads bundle forecast_ms peak_rss_kib
R=/work/main/build/native/native/runner/alignts-run
D=/work/shared/data/ETT/ETTh1.csv
for rep in 1 2 3; do
 for v in gguf-f32 gguf-bf16 gguf-q8_0; do
  for t in 1 2; do
   for b in /tmp/speed_bundles/internal_minilm_q /tmp/s7_speed/internal_minilm_q; do
    line=$($R $b --data $D --variant $v --threads $t --stats 2>&1 >/dev/null | grep -o '{.*forecast_ms.*}' | tail -1)
    echo "$v $t $(basename $(dirname $b))/$(basename $b) $line"
   done
  done
 done
done
