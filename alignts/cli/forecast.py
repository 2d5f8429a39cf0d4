"""`alignts forecast`: forecast the next H steps after the end of a series with a bundle.

Raw units in and out (the runtime applies and inverts the bundle's training scaler); the output is
``Forecaster.forecast_df``'s long frame: timestamp, ``target`` (several channels), ``mean`` and one column per
quantile level."""

from __future__ import annotations

from alignts.cli.output import add_format_argument

DEFAULT_QUANTILES = (0.1, 0.5, 0.9)  # the 80% band and the median


def add_arguments(p):
    p.add_argument("bundle", help="bundle folder")
    p.add_argument("--data", required=True, help="CSV / .tsf path or statsmodels:NAME (the last L points are used; "
                   "gaps are filled)")
    p.add_argument("--out", default=None, help="write the forecast here (default: print it)")
    add_format_argument(p, default="csv", what="the forecast")
    p.add_argument("--quantiles", default=None, help="comma-separated levels, e.g. 0.1,0.5,0.9, or none (default: "
                   "0.1,0.5,0.9 where the bundle gives quantiles, none otherwise)")
    p.add_argument("--plot", default=None, help="write a PNG with history + forecast (and its 80%% band) here")
    p.add_argument("--variant", default=None, help="variant to run (default: the first)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--horizon", type=int, default=None, help="steps to forecast (<= the model's H)")
    p.add_argument("--budget", default=None, help="memory budget (e.g. 300MB): run the most accurate variant "
                   "that fits; fails before loading when none does")


def run(args) -> int:
    import sys

    import pandas as pd

    from alignts.cli.output import parse_levels, write_table
    from alignts.data.load import load_data
    from alignts.runtime import load
    from alignts.runtime.budget import parse_budget

    f = load(args.bundle)
    plan = f.plan(horizon=args.horizon, variant=args.variant, device=args.device, threads=args.threads,
                  budget=parse_budget(args.budget))
    if args.budget is not None:  # stderr: stdout may be the forecast
        from alignts.runtime.budget import describe_plan

        print(describe_plan(f.memory_choice, settings=plan.settings, mode=plan.memory_mode), file=sys.stderr)
    levels = parse_levels(args.quantiles)
    if args.quantiles is None and f.quantile_method != "none":
        levels = DEFAULT_QUANTILES
    elif args.quantiles is None:
        print(f"note: {args.bundle} has no calibration: mean only. Fix for quantiles: alignts calibrate "
              f"{args.bundle} --data DATA", file=sys.stderr)
    data = load_data(args.data, columns=list(f.cfg.columns) if f.cfg.columns else None)
    index = pd.DatetimeIndex(data.timestamps) if data.timestamps is not None else None
    frame = pd.DataFrame(data.values, columns=list(data.columns), index=index)
    df = f.forecast_df(frame, target=list(data.columns), quantiles=levels)
    write_table(df, args.format, args.out)
    if args.out:
        print(f"wrote {args.out}: {plan.horizon} steps x {len(data.columns)} channels "
              f"(variant {plan.variant}, {plan.provider})")
    if args.plot:
        _plot(args.plot, data, df, f.context_len, levels)
        print(f"wrote {args.plot}", file=sys.stderr if not args.out else sys.stdout)
    return 0


def _plot(path: str, data, df, L: int, levels) -> None:
    """History and forecast per channel (the first 8), with the band between the outer quantile levels."""
    try:
        import matplotlib
    except ImportError as e:
        from alignts.errors import missing_extra

        raise missing_extra("matplotlib", "plot", "for --plot") from e

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    c = len(data.columns)
    shown = min(c, 8)
    fig, axes = plt.subplots(shown, 1, figsize=(10, 2.2 * shown), sharex=True, squeeze=False)
    hist_x = data.timestamps[-L:] if data.timestamps is not None else np.arange(data.n_rows - L, data.n_rows)
    band = (str(float(levels[0])), str(float(levels[-1]))) if levels and len(levels) > 1 else None
    for i in range(shown):
        ax = axes[i, 0]
        rows = df[df["target"] == data.columns[i]] if "target" in df.columns else df
        t = rows.iloc[:, 0].to_numpy()  # the timestamp column
        ax.plot(hist_x, data.values[-L:, i], color="0.3", lw=1, label="history")
        ax.plot(t, rows["mean"].to_numpy(), color="tab:red", lw=1.2, label="forecast")
        if band:
            ax.fill_between(t, rows[band[0]].to_numpy(), rows[band[1]].to_numpy(), color="tab:red", alpha=0.2,
                            label=f"{float(band[0]):g}-{float(band[1]):g} band")
        ax.set_ylabel(str(data.columns[i]), fontsize=8)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    title = f"{data.name}: last {L} points and {len(df) // c}-step forecast"
    if c > shown:
        title += f" (first {shown} of {c} channels)"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
