"""`alignts fit bridging`: train a Time-LLM reprogramming adapter into a frozen LM and export it.

Writes the adapter bundle at --out and the frozen backbone, once, into a backbone store folder
(default ``backbones/`` beside --out, or --backbone-dir); the adapter points to the backbone by hash.
"""

from __future__ import annotations

from alignts.cli.fit import add_protocol_arguments


def add_arguments(p):
    p.add_argument("--data", required=True, help="CSV / .tsf path or statsmodels:NAME")
    p.add_argument("--out", required=True, help="adapter bundle folder to write")
    p.add_argument("--backbone", default="minilm",
                   help="minilm (embedded, default) | tiny-bert | tiny-gpt2 | tiny-llama | a local HF folder")
    p.add_argument("--backbone-dir", default=None,
                   help="backbone store folder (default: backbones/ beside --out); reused if it holds this backbone")
    p.add_argument("--layers", type=int, default=None, help="keep the first k backbone blocks (default all)")
    p.add_argument("--description", default=None,
                   help="dataset description for the prompt (default: a generic one naming the data)")
    p.add_argument("--context", type=int, default=336, help="context length L (default 336)")
    p.add_argument("--horizon", type=int, default=96, help="horizon H (default 96)")
    p.add_argument("--patch-len", type=int, default=16)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--d-model", type=int, default=32, help="patch-embedding width (default 32)")
    p.add_argument("--heads", type=int, default=8, help="reprogramming attention heads (default 8)")
    p.add_argument("--d-keys", type=int, default=128, help="per-head key width (default 128)")
    p.add_argument("--prototypes", type=int, default=1000, help="number of text prototypes (default 1000)")
    p.add_argument("--d-ff", type=int, default=128, help="hidden features per patch fed to the head (default 128)")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--prompt-len", type=int, default=0, help="prompt tokens (default 0: longest seen + 8)")
    p.add_argument("--linear-skip", action="store_true",
                   help="add a frozen ridge-fitted Linear(L -> H) on the normalized context, the head starting at 0; "
                        "the adapter and LM learn the residual (off = Time-LLM as published)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32, help="series (window x channel) per step")
    p.add_argument("--lr", type=float, default=1e-4,
                   help="learning rate (default 1e-4: at 1e-3 the adapter over-fits 10 %% of ETTh1/ETTh2 in one pass; "
                        "1e-4 scored 0.336 vs 0.367 (ETTh2) and 0.540 vs 0.610 (ETTh1) test MSE at H=96, "
                        "results/fewshot_etth2.md)")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--max-train-windows", type=int, default=None, help="random train series per epoch")
    p.add_argument("--max-val-windows", type=int, default=None, help="fixed random subsample for validation")
    p.add_argument("--time-budget", type=float, default=None, help="training wall-clock budget in seconds")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    add_protocol_arguments(p, "identity: the LM-removed twin (the frozen LM replaced by identity; no prompt, no backbone)")
    p.add_argument("--columns", default=None, help="comma-separated channels (default: all numeric)")
    p.add_argument("--target", default=None, help="channel to put last (e.g. OT)")
    p.add_argument("--no-gguf", action="store_true", help="do not export the backbone as GGUF (llama.cpp)")
    p.add_argument("--max-mse-change", type=float, default=None,
                   help="accuracy gate: keep a variant on a quantized backbone (onnx-int8, gguf-q8_0/q4_0) whose "
                        "validation MSE is at most this much worse than onnx-fp32's, relative (default 0.01: "
                        "alignts.export.gate.MAX_REL_MSE_CHANGE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args) -> int:
    import time
    from pathlib import Path

    from alignts.export.bridging import BridgingConfig
    from alignts.export.fit_bridging import FitBridgingOptions, fit_bridging
    from alignts.export.train import TrainConfig

    split = (lambda s: tuple(t.strip() for t in s.split(",") if t.strip()) if s else None)
    desc = args.description or f"{Path(str(args.data).split(':')[-1]).stem}, a multivariate time series."
    cfg = BridgingConfig(context_len=args.context, horizon=args.horizon, patch_len=args.patch_len,
                         stride=args.stride, d_model=args.d_model, n_heads=args.heads, d_keys=args.d_keys,
                         n_prototypes=args.prototypes, d_ff=args.d_ff, dropout=args.dropout,
                         prompt_len=args.prompt_len, description=desc, ablate_lm=args.ablate_lm,
                         linear_skip=args.linear_skip)
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                       max_train_windows=args.max_train_windows, max_val_windows=args.max_val_windows,
                       seed=args.seed, time_budget_s=args.time_budget, threads=args.threads, device=args.device)
    opts = FitBridgingOptions(data=args.data, out=args.out, backbone=args.backbone, n_layers=args.layers,
                              backbone_dir=args.backbone_dir, columns=split(args.columns), target=args.target,
                              overwrite=args.overwrite, gguf=not args.no_gguf, train_percent=args.train_percent,
                              **({} if args.max_mse_change is None else {"max_rel_mse_change": args.max_mse_change}))
    t0 = time.perf_counter()
    s = fit_bridging(opts, cfg, tcfg)
    sizes = s["sizes"] or {}
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s): best val MSE {s['best_val_mse']:.4f} after "
          f"{s['epochs_run']} epochs ({s['stopped_by']}); prompt {s['prompt_len']} tokens; "
          f"{s['n_trainable_params']} trained parameters")
    if s["backbone_path"]:
        print(f"  backbone {s['backbone_path']} ({'reused' if s['backbone_reused'] else 'exported'}), "
              f"sha256 {s['backbone_sha256'][:16]}...")
    else:
        print(f"  no backbone: the LM is ablated ({args.ablate_lm})")
    for name, v in s["variants"].items():
        print(f"  {name:10s} max|diff| vs torch: adapter {v['adapter_max_abs_diff']:.2e}, backbone "
              f"{v['backbone_max_abs_diff']:.2e}, pipeline {v['pipeline_max_abs_diff']:.2e}")
    print(f"  sizes: adapter {sizes.get('adapter_bytes', 0) / 1e6:.2f} MB, backbone "
          f"{sizes.get('backbone_bytes', 0) / 1e6:.2f} MB (ratio {sizes.get('adapter_to_backbone') or 0:.3f})")
    return 0
