"""`alignts forecast`: forecast the next H steps after the end of a series with a bundle."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("bundle", help="bundle folder")
    p.add_argument("--data", required=True, help="CSV / .tsf path or statsmodels:NAME (the last L points are used)")
    p.add_argument("--out", default=None, help="write the forecast CSV here (default: print it)")
    p.add_argument("--plot", default=None, help="write a PNG with history + forecast here")
    p.add_argument("--variant", default=None, help="variant to run (default: the first)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--horizon", type=int, default=None, help="steps to forecast (<= the model's H)")
    p.add_argument("--budget", default=None, help="memory budget (e.g. 300MB): run the most accurate variant "
                   "that fits; fails before loading when none does")


def future_index(timestamps, freq: str | None, n_rows: int, horizon: int):
    """Timestamps of the H steps after the data (continued by ``freq``), or step numbers when unknown."""
    import pandas as pd

    if timestamps is not None and len(timestamps) and freq:
        try:
            return pd.date_range(start=pd.Timestamp(timestamps[-1]), periods=horizon + 1, freq=freq)[1:]
        except (ValueError, TypeError):
            pass
    return pd.RangeIndex(n_rows, n_rows + horizon, name="step")


def run(args) -> int:
    import sys

    import numpy as np
    import pandas as pd

    from alignts.data.load import load_data
    from alignts.runtime import load

    f = load(args.bundle)
    from alignts.runtime.budget import parse_budget

    plan = f.plan(horizon=args.horizon, variant=args.variant, device=args.device, threads=args.threads,
                  budget=parse_budget(args.budget))
    if args.budget is not None:  # stderr: stdout may be the forecast CSV
        from alignts.runtime.budget import describe_plan

        print(describe_plan(f.memory_choice, settings=plan.settings, mode=plan.memory_mode), file=sys.stderr)
    cfg = f.manifest.config
    data = load_data(args.data, columns=cfg.get("columns") or None)
    L = f.context_len
    history = data.values[-L:].T  # [C, L] raw units
    y = f.unscale(f.forecast(f.scale(history)[None])[0].astype(np.float64))  # [C, H]
    idx = future_index(data.timestamps, data.freq, data.n_rows, plan.horizon)
    df = pd.DataFrame(y.T, index=idx, columns=list(data.columns))
    df.index.name = df.index.name or "date"
    if args.out:
        df.to_csv(args.out)
        print(f"wrote {args.out}: {plan.horizon} steps x {len(data.columns)} channels "
              f"(variant {plan.variant}, {plan.provider})")
    else:
        df.to_csv(sys.stdout)
    if args.plot:
        _plot(args.plot, data, df, L)
        print(f"wrote {args.plot}")
    return 0


def _plot(path: str, data, df, L: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    c = len(data.columns)
    shown = min(c, 8)
    fig, axes = plt.subplots(shown, 1, figsize=(10, 2.2 * shown), sharex=True, squeeze=False)
    hist_x = data.timestamps[-L:] if data.timestamps is not None else np.arange(data.n_rows - L, data.n_rows)
    for i in range(shown):
        ax = axes[i, 0]
        ax.plot(hist_x, data.values[-L:, i], color="0.3", lw=1, label="history")
        ax.plot(df.index, df.iloc[:, i].to_numpy(), color="tab:red", lw=1.2, label="forecast")
        ax.set_ylabel(str(data.columns[i]), fontsize=8)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    title = f"{data.name}: last {L} points and {len(df)}-step forecast"
    if c > shown:
        title += f" (first {shown} of {c} channels)"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
