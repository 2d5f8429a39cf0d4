#!/usr/bin/env bash
# Few-shot 10 % ETTh2, L=336, H=96: Bridging and its LM-removed twin with --linear-skip (results/fewshot_etth2.md,
# "Bridging with the linear skip"), scored beside the Internal bundles of scripts/fewshot_linear_skip.sh (run that
# first, with the same OUT_DIR) and the baselines.
#   bash scripts/fewshot_bridging_skip_etth2.sh [DATA_DIR] [OUT_DIR]     (about 25 min on 2 idle cores)
source "$(dirname "${BASH_SOURCE[0]}")/fewshot_env.sh" ETTh2 "$@"
bridging=(--data "$data" --backbone minilm --layers 3 --context 336 --horizon 96 --stride 16 --train-percent 10
          --epochs 10 --batch-size 32 --lr 1e-4 --patience 3 --max-val-windows 1024 --threads 2 --seed 0 --no-gguf
          --overwrite --linear-skip --backbone-dir "$out/backbones")
"$py" -m alignts -v fit bridging "${bridging[@]}" --time-budget 1200 --ablate-lm none --out "$out/bridging_etth2_p10_h96_skip"
"$py" -m alignts -v fit bridging "${bridging[@]}" --time-budget 300 --ablate-lm identity \
    --out "$out/bridging_etth2_p10_h96_skip_identity"
"$py" -m alignts eval "$out/internal_etth2_p10_h96_skip" "$out/internal_etth2_p10_h96_skip_lr0" \
    "$out/internal_etth2_p10_h96_skip_identity" "$out/bridging_etth2_p10_h96_skip" \
    "$out/bridging_etth2_p10_h96_skip_identity" --data "$data" --batch-size 32 --threads 2 \
    --json "$here/results/fewshot/skip_etth2_p10_h96.json"
