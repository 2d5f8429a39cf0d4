#!/usr/bin/env bash
# Few-shot 10 % ETTh1, L=336, H=96, with --linear-skip (results/fewshot_etth1.md, "Session 7: the linear skip for
# both paradigms"): Internal, the skip alone (--lr 0: the ridge on the RevIN-normalized context, the head at 0),
# Internal's LM-removed twin, Bridging and its LM-removed twin, all with the skip; then everything scored on the
# test split beside the baselines.
#   bash scripts/fewshot_skip_etth1.sh [DATA_DIR] [OUT_DIR]     (about 30 min on 2 idle cores)
source "$(dirname "${BASH_SOURCE[0]}")/fewshot_env.sh" ETTh1 "$@"
common=(--data "$data" --backbone minilm --context 336 --horizon 96 --stride 16 --train-percent 10 --patience 3
        --threads 2 --seed 0 --overwrite --linear-skip)
internal=("${common[@]}" --batch-size 16 --max-val-windows 512 --time-budget 1200 --no-int8 --no-gguf)
bridging=("${common[@]}" --layers 3 --batch-size 32 --max-val-windows 1024 --no-gguf --backbone-dir "$out/backbones")
"$py" -m alignts -v fit internal "${internal[@]}" --epochs 10 --lr 1e-3 --ablate-lm none --out "$out/internal_etth1_p10_h96_skip"
"$py" -m alignts -v fit internal "${internal[@]}" --epochs 1 --lr 0 --ablate-lm none --out "$out/internal_etth1_p10_h96_skip_lr0"
"$py" -m alignts -v fit internal "${internal[@]}" --epochs 10 --lr 1e-3 --ablate-lm identity \
    --out "$out/internal_etth1_p10_h96_skip_identity"
"$py" -m alignts -v fit bridging "${bridging[@]}" --epochs 10 --lr 1e-4 --time-budget 1200 --ablate-lm none \
    --out "$out/bridging_etth1_p10_h96_skip"
"$py" -m alignts -v fit bridging "${bridging[@]}" --epochs 10 --lr 1e-4 --time-budget 300 --ablate-lm identity \
    --out "$out/bridging_etth1_p10_h96_skip_identity"
"$py" -m alignts eval "$out/internal_etth1_p10_h96_skip" "$out/internal_etth1_p10_h96_skip_lr0" \
    "$out/internal_etth1_p10_h96_skip_identity" "$out/bridging_etth1_p10_h96_skip" \
    "$out/bridging_etth1_p10_h96_skip_identity" --data "$data" --batch-size 32 --threads 2 \
    --json "$here/results/fewshot/skip_etth1_p10_h96.json"
