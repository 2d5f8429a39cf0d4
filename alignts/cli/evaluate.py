"""`alignts eval`: score a bundle on the test split (DESIGN.md protocol) beside the cheap baselines.

Bundles that give quantiles (Injective from its samples, Internal/Bridging once calibrated) also get the
coverage of the 80 % interval, WQL and CRPS at levels 0.1..0.9.

Several bundles (e.g. a paradigm and its ``--ablate-lm identity`` twin) are scored on the same windows, one
row each. The baselines are fitted on what the (first) bundle was trained on: the same few-shot share of the
training windows (``fit --train-percent``) and, when ``--data`` is other data than the bundle's (zero-shot
transfer), the source data's train split; every dataset is scaled by its own train split, as the published
zero-shot tables do."""

from __future__ import annotations

from alignts.cli.output import add_format_argument


def add_arguments(p):
    p.add_argument("bundle", nargs="+", help="bundle folder(s); several are scored side by side on the same windows")
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
    from alignts.eval.evaluate import (EVAL_LEVELS, PUBLISHED, baseline_table, baseline_train, bundle_splits,
                                       evaluate, forecaster_predict, format_table, quantile_method)
    from alignts.runtime import load

    # with --format, stdout carries the table alone; the report's other lines go to stderr
    print = functools.partial(builtins.print, file=sys.stderr if args.format else sys.stdout)  # noqa: A001
    bundles = list(args.bundle)
    forecasters = [load(b) for b in bundles]
    plans = [f.plan(variant=args.variant, device=args.device, threads=args.threads, batch_size=args.batch_size)
             for f in forecasters]
    f, plan = forecasters[0], plans[0]
    cfg = f.cfg
    L, H = f.context_len, plan.horizon
    for b, g, q in zip(bundles[1:], forecasters[1:], plans[1:]):
        if (g.context_len, q.horizon) != (L, H):
            raise InputError(f"{b} has L={g.context_len}, H={q.horizon}; {bundles[0]} has L={L}, H={H}. Fix: score "
                             "bundles of the same context and horizon together.")
    training = f.manifest.training
    pct = int(training.get("train_percent") or 100)
    data, splits, same_scaler = bundle_splits(cfg, args.data, L, H, train_percent=pct)
    fit_on, source, fit_note = baseline_train(training, args.data, splits, cfg.columns)
    zero_shot = source is not None
    if args.max_windows is not None:
        if args.max_windows < 1:
            raise InputError(f"--max-windows {args.max_windows}: expected >= 1.")
        keep = L + H - 1 + args.max_windows
        splits = dataclasses.replace(splits, test=splits.test[:keep], test_mask=splits.test_mask[:keep])
    if not same_scaler:
        print("note: this data's train scaler differs from the bundle's (fitted on other data); "
              "scoring on this data's own scaled values, as the protocol does.")
    rows, times = {}, {}
    for b, g, q in zip(bundles, forecasters, plans):
        method = quantile_method(g)
        levels = None if method == "none" else EVAL_LEVELS
        t0 = time.perf_counter()
        r = evaluate(forecaster_predict(g, levels), splits, L, H, batch_size=args.batch_size, levels=levels)
        name = row_name(g, rows)
        times[name] = time.perf_counter() - t0
        rows[name] = {**r, "variant": q.variant, "quantile_method": method, "bundle": str(b),
                      "ablate_lm": g.manifest.training.get("ablate_lm", "none"),
                      "train_percent": g.manifest.training.get("train_percent", 100)}
    method = rows[next(iter(rows))]["quantile_method"]
    r = rows[next(iter(rows))]
    if not args.no_baselines:
        rows.update(baseline_table(splits, L, H, train=fit_on))
    key = published_key(training, data.name, H, source)
    print(f"# {data.name}: L={L}, H={H}, test split, {r['n_windows']} windows x {data.n_channels} channels, "
          f"scaled; variant {plan.variant} ({plan.provider})")
    if not args.no_baselines:
        print(f"# baselines {fit_note}")
    if key in PUBLISHED:
        src = next(iter(PUBLISHED[key].values())).get("source", "")
        print(f"# published column: {key[0]}, " + (f"H={key[1]}" if isinstance(key[1], int) else str(key[1]))
              + (f" ({src})" if src else ""))
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
    for name, t in times.items():
        print(f"{name} scoring: {t:.1f} s")
    if args.json:
        out = {"data": str(args.data), "dataset": data.name, "context_len": L, "horizon": H,
               "variant": plan.variant, "provider": plan.provider, "bundle": str(bundles[0]),
               "bundles": [str(b) for b in bundles], "baselines_fitted_on": fit_note, "zero_shot": zero_shot,
               "train_percent": pct, "published_key": list(key),
               "quantile_method": method, "conformal": {k: v for k, v in (cfg.conformal or {}).items()
                                                         if k != "residual_quantiles"} or None,
               "training": {k: f.manifest.training.get(k) for k in
                            ("command", "train_wall_s", "time_budget_s", "max_train_windows", "epochs_run",
                             "best_val_mse", "stopped_by", "backbone", "n_layers", "train_percent", "ablate_lm",
                             "data")},
               "trainings": {str(b): {k: g.manifest.training.get(k) for k in
                                      ("command", "train_wall_s", "epochs_run", "best_val_mse", "stopped_by",
                                       "ablate_lm", "train_percent", "device_used")}
                             for b, g in zip(bundles, forecasters)},
               "rows": rows, "published": {k: v for k, v in PUBLISHED.get(key, {}).items()}}
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=str)
    return 0


def row_name(f, taken) -> str:
    """The table row of a bundle: its paradigm, marked when the LM was removed (``fit --ablate-lm``)."""
    ablate = f.manifest.training.get("ablate_lm") or "none"
    name = f.paradigm if ablate == "none" else f"{f.paradigm}, LM removed ({ablate})"
    base, i = name, 2
    while name in taken:
        name, i = f"{base} #{i}", i + 1
    return name


def published_key(training, dataset: str, horizon: int, source: str | None):
    """The key of ``PUBLISHED`` to show beside the rows: the zero-shot pair (``source`` -> ``dataset``), the
    few-shot 10 % averages, or the dataset at this horizon."""
    from alignts.eval.evaluate import PUBLISHED

    if source is not None:
        pair = f"{source}->{dataset}"
        return (pair, horizon) if (pair, horizon) in PUBLISHED else (pair, "avg")
    if int(training.get("train_percent") or 100) == 10:
        return (dataset, "few-shot 10% avg")
    return (dataset, horizon)
