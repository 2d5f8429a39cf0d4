#!/usr/bin/env bash
# Pretrain the embedded numeric LM of the Injective paradigm on a CUDA GPU (train only: the machine needs
# python3 with torch, numpy, scipy, statsmodels and safetensors; no transformers, gguf or llama.cpp, and no
# network). Two recipes train side by side on the one GPU for MINUTES of wall time each (the cosine schedule
# follows wall time and ends there), each with half of the CPU cores drawing its corpus:
#   a: 6 layers x width 256 (8 heads), context 1024; synthetic mix 45% seasonal-profile, 25% TSMixup
#   b: the same model; 70% seasonal-profile, 30% TSMixup
#   c, d: 90% / 70% seasonal-profile, 30% TSMixup, meant for a second stage started from a's or b's weights:
#      RUNS="c d" scripts/pretrain_numeric_lm_gpu.sh OUT 4 --init B_DIR --lr 1e-3 --warmup 50
#   e, f: a third stage from c's weights (session 5; both scored worse than c on tourism, not shipped): e keeps
#      c's mix (90 % / 30 %), f goes to 95 % seasonal-profile, 15 % TSMixup:
#      RUNS="e f" scripts/pretrain_numeric_lm_gpu.sh OUT 7.5 --init C_DIR --lr 6e-4 --warmup 50
# Each writes OUT/<a|b>/weights-*.safetensors (HF GPT-2 names, fp32, shards < 16 MiB) + training.json, saved
# every minute (a run cut short still leaves its last checkpoint), and OUT/<a|b>.log.
# Then, where transformers + gguf (+ llama-cpp-python) are installed, export the one that scores better:
#   python -m alignts.export.numeric_lm export --hf-dir OUT/a --out alignts/assets/numeric_lm
#
#   usage: scripts/pretrain_numeric_lm_gpu.sh OUT [MINUTES [extra `numeric_lm train` arguments, for both]]
#   PYTHON (default python3), DEVICE (default cuda; cpu for a smoke test), WORKERS (corpus processes per run;
#   default (cores - 2) / 2), RUNS (default "a b")
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "${1:?usage: $0 OUT [MINUTES [args]]}" && cd "$1" && pwd)
minutes=${2:-7}
shift $(( $# >= 2 ? 2 : 1 ))
cd "$here"
cores=$(nproc --all)  # before OMP_NUM_THREADS=1 below: GNU nproc honours it (the recorded run got 1 worker per run)
workers=${WORKERS:-$(( (cores - 2) / 2 > 0 ? (cores - 2) / 2 : 1 ))}
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1  # corpus workers: one BLAS thread each
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
common=(train --device "$device" --workers "$workers" --threads 1 --seed 0 --steps 1000000
        --budget-minutes "$minutes" --width 256 --layers 6 --heads 8 --ctx 1024 --batch 128 --lr 2e-3
        --warmup 300 --weight-decay 0.1 --min-len 64 --max-len 320 --p-precision3 0.1)
declare -A mix=([a]="--p-seasonal 0.45 --p-mixup 0.25" [b]="--p-seasonal 0.7 --p-mixup 0.3"
                [c]="--p-seasonal 0.9 --p-mixup 0.3" [d]="--p-seasonal 0.7 --p-mixup 0.3"
                [e]="--p-seasonal 0.9 --p-mixup 0.3" [f]="--p-seasonal 0.95 --p-mixup 0.15")
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
pids=()
for r in ${RUNS:-a b}; do
    # shellcheck disable=SC2086
    "$py" -m alignts.export.numeric_lm "${common[@]}" ${mix[$r]} "$@" --hf-dir "$out/$r" >"$out/$r.log" 2>&1 &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
for r in ${RUNS:-a b}; do echo "== $r"; grep -E "parameters|val_loss|stopping|Error|error" "$out/$r.log" | tail -n 8; done
exit $rc
