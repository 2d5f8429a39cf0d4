"""`alignts fit internal`: LoRA-tune an LM on patches (GPT4TS / LLM4TS) and export a bundle."""

from __future__ import annotations

from alignts.cli.fit import add_protocol_arguments


def add_arguments(p):
    p.add_argument("--data", required=True, help="CSV / .tsf path or statsmodels:NAME")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--backbone", default="minilm",
                   help="minilm (embedded, default) | tiny-bert | tiny-gpt2 | tiny-llama | a local HF folder")
    p.add_argument("--context", type=int, default=336, help="context length L (default 336)")
    p.add_argument("--horizon", type=int, default=96, help="horizon H (default 96)")
    p.add_argument("--layers", type=int, default=None, help="keep the first k backbone blocks (default all)")
    p.add_argument("--patch-len", type=int, default=16)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="windows per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--max-train-windows", type=int, default=None, help="random train windows per epoch")
    p.add_argument("--max-val-windows", type=int, default=None, help="fixed random subsample for validation")
    p.add_argument("--time-budget", type=float, default=None, help="training wall-clock budget in seconds")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--lora-rank", type=int, default=8, help="0 = no LoRA")
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--lora-targets", default=None, help="comma-separated module names (default: attention)")
    p.add_argument("--linear-skip", action="store_true",
                   help="add a frozen ridge-fitted Linear(L -> H) on the normalized context; the LM learns the "
                        "residual (off = GPT4TS as published)")
    add_protocol_arguments(p, "identity: the LM-removed twin (LM blocks replaced by identity, trained the same way)")
    p.add_argument("--columns", default=None, help="comma-separated channels (default: all numeric)")
    p.add_argument("--no-int8", action="store_true", help="skip the onnx-int8 variant")
    p.add_argument("--max-mse-change", type=float, default=None,
                   help="accuracy gate: keep a quantized variant whose validation MSE is at most this much worse "
                        "than onnx-fp32's, relative (default 0.01: alignts.export.gate.MAX_REL_MSE_CHANGE)")
    p.add_argument("--no-gguf", action="store_true", help="skip the GGUF variants")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args) -> int:
    import time

    from alignts.export.fit_internal import FitInternalConfig, check_config, fit_internal
    from alignts.export.internal import InternalConfig
    from alignts.export.train import TrainConfig

    split = (lambda s: tuple(t.strip() for t in s.split(",") if t.strip()) if s else None)
    cfg = FitInternalConfig(
        data=args.data, out=args.out, backbone=args.backbone, n_layers=args.layers,
        model=InternalConfig(context_len=args.context, horizon=args.horizon, patch_len=args.patch_len,
                             stride=args.stride, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                             lora_targets=split(args.lora_targets), linear_skip=args.linear_skip,
                             ablate_lm=args.ablate_lm),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                          max_train_windows=args.max_train_windows, max_val_windows=args.max_val_windows,
                          seed=args.seed, time_budget_s=args.time_budget, threads=args.threads,
                          device=args.device),
        int8=not args.no_int8, gguf=not args.no_gguf, overwrite=args.overwrite, columns=split(args.columns),
        train_percent=args.train_percent,
        **({} if args.max_mse_change is None else {"max_rel_mse_change": args.max_mse_change}))
    check_config(cfg)
    t0 = time.perf_counter()
    m = fit_internal(cfg)
    t = m.training
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s): best val MSE {t['best_val_mse']:.4f} after "
          f"{t['epochs_run']} epochs ({t['stopped_by']}, training {t['train_wall_s']:.0f} s)")
    for v in m.variants:
        val = v.validation
        print(f"  {v.name:14s} {v.weight_bytes / 1e6:8.1f} MB  max|diff| core {val.get('max_abs_diff', float('nan')):.2e}"
              f"  end-to-end {val.get('end_to_end_max_abs_diff', float('nan')):.2e}")
    for name, why in (t.get("skipped_variants") or {}).items():
        print(f"  ({name} left out: {why})")
    return 0
