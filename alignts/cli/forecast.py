"""`alignts forecast`: forecast the next H steps after the end of a series with a bundle.

Raw units in and out (the runtime applies and inverts the bundle's training scaler); the output is
``Forecaster.forecast_df``'s long frame: timestamp, ``target`` (several channels), ``mean`` and one column per
quantile level."""

from __future__ import annotations

from alignts.cli.output import add_format_argument
from alignts.errors import InputError

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
    g = p.add_argument_group("many files (--data DIR)")
    g.add_argument("--ray", action="store_true", help="with --data DIR: forecast the files on Ray Data, one "
                   "forecaster actor per --actors (pip install 'alignts[ray]')")
    g.add_argument("--actors", type=int, default=2, help="Ray Data forecaster actors (default 2)")
    g.add_argument("--ray-address", default=None, help="an existing Ray cluster (auto, HEAD:6379); default: a "
                   "local one")


def run(args) -> int:
    import sys

    import pandas as pd

    from alignts.cli.output import parse_levels, write_table
    from alignts.data.load import load_data
    from alignts.runtime import load
    from alignts.runtime.budget import parse_budget

    from pathlib import Path

    if Path(args.data).is_dir():
        return _run_files(args)
    if args.ray:
        raise InputError(f"--ray needs --data DIR (a folder of .csv / .tsf files); got the file {args.data!r}.")
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


def _run_files(args) -> int:
    """``--data DIR``: every .csv / .tsf file of DIR forecast with one planned bundle (in this process, or on Ray
    Data with --ray); one long frame with a ``file`` column."""
    from alignts.cli.output import parse_levels, write_table
    from alignts.runtime.budget import parse_budget
    from alignts.serve.ray import data_files, forecast_files, forecast_files_ray

    if args.plot:
        raise InputError("--plot takes one data file, not a folder; forecast that file alone to plot it.")
    files = data_files(args.data)
    plan = dict(horizon=args.horizon, variant=args.variant, device=args.device, threads=args.threads,
                budget=parse_budget(args.budget))
    levels = parse_levels(args.quantiles)
    if args.quantiles is None:
        from alignts.runtime import load

        levels = DEFAULT_QUANTILES if load(args.bundle, verify=False).quantile_method != "none" else None
    if args.ray:
        df = forecast_files_ray(args.bundle, files, plan, levels, actors=args.actors, address=args.ray_address)
    else:
        df = forecast_files(args.bundle, files, plan, levels)
    write_table(df, args.format, args.out)
    if args.out:
        print(f"wrote {args.out}: {len(files)} files, {len(df)} rows{' (Ray Data)' if args.ray else ''}")
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
