#!/usr/bin/env bash
# Few-shot 10 % ETTh2, L=336, H=96, Internal with --linear-skip (results/fewshot_etth2.md, "Internal with the
# linear skip"): the Internal fit, the skip alone (--lr 0: the fitted ridge on the RevIN-normalized context with the
# LM's head at 0) and the LM-removed twin with the skip, then all three scored on the test split beside the baselines.
#   bash scripts/fewshot_linear_skip.sh [DATA_DIR] [OUT_DIR]     (about 7 min on 2 idle cores)
source "$(dirname "${BASH_SOURCE[0]}")/fewshot_env.sh" ETTh2 "$@"
common=(--data "$data" --backbone minilm --context 336 --horizon 96 --stride 16 --train-percent 10 --batch-size 16
        --patience 3 --max-val-windows 512 --time-budget 1200 --threads 2 --seed 0 --no-int8 --no-gguf --overwrite
        --linear-skip)
"$py" -m alignts -v fit internal "${common[@]}" --epochs 10 --lr 1e-3 --ablate-lm none --out "$out/internal_etth2_p10_h96_skip"
"$py" -m alignts -v fit internal "${common[@]}" --epochs 1 --lr 0 --ablate-lm none --out "$out/internal_etth2_p10_h96_skip_lr0"
"$py" -m alignts -v fit internal "${common[@]}" --epochs 10 --lr 1e-3 --ablate-lm identity \
    --out "$out/internal_etth2_p10_h96_skip_identity"
"$py" -m alignts eval "$out/internal_etth2_p10_h96_skip" "$out/internal_etth2_p10_h96_skip_identity" \
    "$out/internal_etth2_p10_h96_skip_lr0" --data "$data" --batch-size 32 --threads 2 \
    --json "$here/results/fewshot/internal_etth2_p10_h96_skip.json"
