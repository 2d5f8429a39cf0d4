#!/usr/bin/env bash
# Few-shot 10 % ETTh2, L=336, H=336, Bridging (MiniLM, first 3 layers) and its LM-removed twin, scored on the test
# split beside the baselines (results/fewshot_etth2.md, "Bridging at H=336").
#   bash scripts/fewshot_bridging_h336.sh [DATA_DIR] [OUT_DIR]     (about 14 min on 2 idle cores)
source "$(dirname "${BASH_SOURCE[0]}")/fewshot_env.sh" ETTh2 "$@"
common=(--data "$data" --backbone minilm --layers 3 --context 336 --horizon 336 --stride 16 --train-percent 10
        --epochs 10 --batch-size 32 --lr 1e-3 --patience 3 --max-val-windows 1024 --threads 2 --seed 0 --no-gguf
        --overwrite --backbone-dir "$out/backbones")
"$py" -m alignts -v fit bridging "${common[@]}" --time-budget 1200 --ablate-lm none --out "$out/bridging_etth2_p10_h336_none"
"$py" -m alignts -v fit bridging "${common[@]}" --time-budget 300 --ablate-lm identity \
    --out "$out/bridging_etth2_p10_h336_identity"
"$py" -m alignts eval "$out/bridging_etth2_p10_h336_none" "$out/bridging_etth2_p10_h336_identity" --data "$data" \
    --batch-size 32 --threads 2 --json "$here/results/fewshot/bridging_etth2_p10_h336.json"
