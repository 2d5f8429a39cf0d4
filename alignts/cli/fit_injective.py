"""`alignts fit injective`: digits into a frozen causal LM (LLMTime); writes a bundle, optional LoRA."""

from __future__ import annotations

from alignts.runtime.configs import InjectiveRuntimeConfig as D
from alignts.runtime.configs import runtime_config


def add_arguments(p):
    p.add_argument("--data", default=None, help="CSV / .tsf path or statsmodels:NAME (checked, recorded; the data "
                   "LoRA tunes on with --lora)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--model", default=None, help="GGUF file or Hugging Face causal-LM folder (default: the "
                   "embedded numeric LM)")
    p.add_argument("--description", default="", help="domain text put before the digits (text LMs only)")
    p.add_argument("--samples", type=int, default=D.samples, help="samples per series; the forecast is their median")
    p.add_argument("--precision", type=int, default=None, help="digits kept after the decimal point of scaled "
                   "values (default: the model's; LLMTime 3)")
    p.add_argument("--temperature", type=float, default=D.temperature)
    p.add_argument("--top-p", type=float, default=D.top_p)
    p.add_argument("--greedy", action="store_true", help="greedy decoding (deterministic; use --samples 1)")
    p.add_argument("--context", type=int, default=D.context_len, help="default context length L (plan may change it)")
    p.add_argument("--horizon", type=int, default=D.horizon, help="default horizon H (plan may change it)")
    p.add_argument("--n-ctx", type=int, default=None, help="token context of the LM (default: its trained one)")
    p.add_argument("--backends", default="onnx,gguf", help="for an HF folder: variants to export (onnx,gguf)")
    p.add_argument("--lora", action="store_true", help="fine-tune the LM with LoRA on digit strings of --data")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args) -> int:
    import time

    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective
    from alignts.runtime.manifest import read_manifest

    data_name = None
    if args.data:
        from alignts.data import load_data

        data_name = load_data(args.data).name
    cfg = InjectiveFitConfig(model=args.model, context_len=args.context, horizon=args.horizon,
                             samples=args.samples, temperature=args.temperature, top_p=args.top_p,
                             greedy=args.greedy, seed=args.seed, precision=args.precision,
                             description=args.description, n_ctx=args.n_ctx,
                             backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()))
    t0 = time.perf_counter()
    if args.lora:
        from alignts.errors import InputError
        from alignts.export.injective_lora import LoraFitConfig, fit_injective_lora

        if not args.data:
            raise InputError("--lora needs --data (the series the LoRA adapter is tuned on).")
        fit_injective_lora(args.out, cfg, LoraFitConfig(data=args.data, rank=args.lora_rank, alpha=args.lora_alpha,
                                                        steps=args.lora_steps, seed=args.seed),
                           overwrite=args.overwrite)
    else:
        fit_injective(args.out, cfg, data_name=data_name, overwrite=args.overwrite)
    m = read_manifest(args.out)
    c = m.codec
    print(f"wrote {args.out} ({time.perf_counter() - t0:.1f} s): injective, {m.architecture}, precision "
          f"{c.get('precision')}, value_sep {c.get('value_sep')!r}, digit_sep {c.get('digit_sep')!r}, "
          f"{runtime_config(m).samples} samples, n_ctx {runtime_config(m).n_ctx}")
    for v in m.variants:
        diff = v.validation.get("max_abs_diff")
        extra = f"  max|diff| vs torch {diff:.2e}" if diff is not None else ""
        print(f"  {v.name:10s} {v.weight_bytes / 1e6:8.2f} MB{extra}")
    return 0
