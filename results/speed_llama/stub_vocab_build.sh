#!/usr/bin/env bash
# the same fit as /tmp/speed_bundles/build_internal.sh (session 6's speed bundle), into a new folder, then quantize
set -euo pipefail
cd /work/main
V=~/.cache/alignts/venv/bin
export PYTHONPATH=/work/main
$V/python -m alignts -v fit internal --data /work/shared/data/ETT/ETTh1.csv \
  --out /tmp/s7_speed/internal_minilm --backbone minilm --context 336 --horizon 96 --stride 16 \
  --epochs 2 --batch-size 8 --lr 1e-3 --max-train-windows 128 --max-val-windows 32 --time-budget 300 --threads 2 \
  --no-int8 --seed 0 --overwrite
cp -r /tmp/s7_speed/internal_minilm /tmp/s7_speed/internal_minilm_q
$V/python -m alignts quantize /tmp/s7_speed/internal_minilm_q --to bf16,q8_0 --threads 2
