"""`alignts eval`: score a bundle on the test split (DESIGN.md protocol) beside the cheap baselines."""

from __future__ import annotations


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
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")


def run(args) -> int:
    import dataclasses
    import json
    import time

    import numpy as np

    from alignts.data.load import load_data
    from alignts.data.splits import make_splits
    from alignts.errors import InputError
    from alignts.runtime import load
    from alignts.runtime.evaluate import PUBLISHED, baseline_table, evaluate, format_table

    f = load(args.bundle)
    plan = f.plan(variant=args.variant, device=args.device, threads=args.threads, batch_size=args.batch_size)
    cfg = f.manifest.config
    L, H = f.context_len, plan.horizon
    data = load_data(args.data, columns=cfg.get("columns") or None)
    splits = make_splits(data, L, H)
    if args.max_windows is not None:
        if args.max_windows < 1:
            raise InputError(f"--max-windows {args.max_windows}: expected >= 1.")
        keep = L + H - 1 + args.max_windows
        splits = dataclasses.replace(splits, test=splits.test[:keep], test_mask=splits.test_mask[:keep])
    sc = cfg.get("scaler")
    if sc and not (np.allclose(sc["mean"], splits.mean) and np.allclose(sc["std"], splits.std)):
        print("note: this data's train scaler differs from the bundle's (fitted on other data); "
              "scoring on this data's own scaled values, as the protocol does.")
    t0 = time.perf_counter()
    r = evaluate(f.forecast, splits, L, H, batch_size=args.batch_size)
    rows = {f.paradigm: {**r, "variant": plan.variant}}
    if not args.no_baselines:
        rows.update(baseline_table(splits, L, H))
    key = (data.name, H)
    print(f"# {data.name}: L={L}, H={H}, test split, {r['n_windows']} windows x {data.n_channels} channels, "
          f"scaled; variant {plan.variant} ({plan.provider})")
    print(format_table(rows, published=key if key in PUBLISHED else None))
    print(f"\n{f.paradigm} scoring: {time.perf_counter() - t0:.1f} s")
    if args.json:
        out = {"data": str(args.data), "dataset": data.name, "context_len": L, "horizon": H,
               "variant": plan.variant, "provider": plan.provider, "bundle": str(args.bundle),
               "training": {k: f.manifest.training.get(k) for k in
                            ("command", "train_wall_s", "time_budget_s", "max_train_windows", "epochs_run",
                             "best_val_mse", "stopped_by", "backbone", "n_layers")},
               "rows": rows, "published": {k: v for k, v in PUBLISHED.get(key, {}).items()}}
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=str)
    return 0
