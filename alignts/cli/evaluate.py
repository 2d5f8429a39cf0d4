"""`alignts eval`: score a bundle on the test split (DESIGN.md protocol) beside the cheap baselines.

Bundles that give quantiles (Injective from its samples, Internal/Bridging once calibrated) also get the
coverage of the 80 % interval, WQL and CRPS at levels 0.1..0.9."""

from __future__ import annotations

from alignts.cli.output import add_format_argument


def add_arguments(p):
    p.add_argument("bundle", help="bundle folder")
    p.add_argument("--data", required=True, help="CSV / .tsf path or statsmodels:NAME")
    p.add_argument("--variant", default=None, help="variant to run (default: the first, most accurate)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32, help="windows per backend call")
    p.add_argument("--max-windows", type=int, default=None,
                   help="score only the first N test windows (quick look; the protocol scores all)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baseline rows")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the numbers to this JSON file")
    add_format_argument(p, what="the score table (the other lines go to stderr)")


def run(args) -> int:
    import builtins
    import dataclasses
    import functools
    import json
    import sys
    import time

    from alignts.cli.output import write_table
    from alignts.errors import InputError
    from alignts.eval.evaluate import (EVAL_LEVELS, PUBLISHED, baseline_table, bundle_splits, evaluate,
                                       forecaster_predict, format_table, quantile_method)
    from alignts.runtime import load

    # with --format, stdout carries the table alone; the report's other lines go to stderr
    print = functools.partial(builtins.print, file=sys.stderr if args.format else sys.stdout)  # noqa: A001
    f = load(args.bundle)
    plan = f.plan(variant=args.variant, device=args.device, threads=args.threads, batch_size=args.batch_size)
    cfg = f.cfg
    L, H = f.context_len, plan.horizon
    data, splits, same_scaler = bundle_splits(cfg, args.data, L, H)
    if args.max_windows is not None:
        if args.max_windows < 1:
            raise InputError(f"--max-windows {args.max_windows}: expected >= 1.")
        keep = L + H - 1 + args.max_windows
        splits = dataclasses.replace(splits, test=splits.test[:keep], test_mask=splits.test_mask[:keep])
    if not same_scaler:
        print("note: this data's train scaler differs from the bundle's (fitted on other data); "
              "scoring on this data's own scaled values, as the protocol does.")
    method = quantile_method(f)
    levels = None if method == "none" else EVAL_LEVELS
    t0 = time.perf_counter()
    r = evaluate(forecaster_predict(f, levels), splits, L, H, batch_size=args.batch_size, levels=levels)
    rows = {f.paradigm: {**r, "variant": plan.variant, "quantile_method": method}}
    if not args.no_baselines:
        rows.update(baseline_table(splits, L, H))
    key = (data.name, H)
    print(f"# {data.name}: L={L}, H={H}, test split, {r['n_windows']} windows x {data.n_channels} channels, "
          f"scaled; variant {plan.variant} ({plan.provider})")
    if args.format:
        write_table([{"model": k, **v} for k, v in rows.items()], args.format)
    else:
        print(format_table(rows, published=key if key in PUBLISHED else None))
    if method == "none":
        print(f"\n{f.paradigm} quantiles: none (not calibrated). Fix: alignts calibrate {args.bundle} "
              f"--data {args.data}")
    else:
        c = cfg.conformal or {}
        how = (f"conformal, calibrated on {c.get('n_windows')} {c.get('split')} windows" if method == "conformal"
               else f"from {f.sampling.n_samples} samples")
        print(f"\n{f.paradigm} quantiles ({how}): 80% interval coverage {r['coverage']:.3f}, WQL {r['wql']:.3f}, "
              f"CRPS {r['crps']:.3f} at levels 0.1..0.9 (scaled data)")
    print(f"\n{f.paradigm} scoring: {time.perf_counter() - t0:.1f} s")
    if args.json:
        out = {"data": str(args.data), "dataset": data.name, "context_len": L, "horizon": H,
               "variant": plan.variant, "provider": plan.provider, "bundle": str(args.bundle),
               "quantile_method": method, "conformal": {k: v for k, v in (cfg.conformal or {}).items()
                                                         if k != "residual_quantiles"} or None,
               "training": {k: f.manifest.training.get(k) for k in
                            ("command", "train_wall_s", "time_budget_s", "max_train_windows", "epochs_run",
                             "best_val_mse", "stopped_by", "backbone", "n_layers")},
               "rows": rows, "published": {k: v for k, v in PUBLISHED.get(key, {}).items()}}
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=str)
    return 0
