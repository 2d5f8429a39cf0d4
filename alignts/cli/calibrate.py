"""`alignts calibrate`: add split-conformal quantiles to an Internal or Bridging bundle (or renew them).

Runs the bundle's runtime forecaster over validation windows of DATA and stores the residual quantiles per
horizon step in its manifest (``config["conformal"]``); ``alignts fit`` does the same right after export."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("bundle", help="bundle folder (Internal or Bridging)")
    p.add_argument("--data", required=True, help="CSV / .tsf path or statsmodels:NAME (the data it was fitted on)")
    p.add_argument("--max-windows", type=int, default=None,
                   help="validation windows to use, evenly spaced (default 512, as alignts fit)")
    p.add_argument("--variant", default=None, help="variant to run (default: the first, most accurate)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8, help="windows per backend call")


def run(args) -> int:
    import time

    from alignts.eval.calibrate import MAX_WINDOWS, calibrate_bundle, check_paradigm
    from alignts.eval.evaluate import bundle_splits
    from alignts.runtime.configs import runtime_config
    from alignts.runtime.manifest import read_manifest

    m = read_manifest(args.bundle, verify=False)
    check_paradigm(m.paradigm)
    cfg = runtime_config(m)
    L, H = cfg.context_len, cfg.horizon
    data, splits, same_scaler = bundle_splits(cfg, args.data, L, H)
    if not same_scaler:
        print("note: this data's train scaler differs from the bundle's (fitted on other data); calibrating on "
              "this data's own scaled values, as alignts eval scores them.")
    t0 = time.perf_counter()
    n = MAX_WINDOWS if args.max_windows is None else args.max_windows
    m = calibrate_bundle(args.bundle, splits, max_windows=n, variant=args.variant, threads=args.threads,
                         batch_size=args.batch_size, progress=True)
    c = runtime_config(m).conformal
    lv = c["levels"]
    lo, hi = c["residual_quantiles"][lv.index(0.1)], c["residual_quantiles"][lv.index(0.9)]
    print(f"calibrated {args.bundle} on {c['n_windows']} {c['split']} windows x {data.n_channels} channels of "
          f"{data.name} ({time.perf_counter() - t0:.1f} s): 80% interval [{lo[0]:+.2f}, {hi[0]:+.2f}] context stds "
          f"at step 1, [{lo[-1]:+.2f}, {hi[-1]:+.2f}] at step {H}")
    return 0
