"""`alignts data describe DATA`: rows, columns, frequency, span, missing values and split sizes of a data source."""

from __future__ import annotations

import argparse
import json

from alignts.cli.output import add_format_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_verb", metavar="SUBVERB")
    d = sub.add_parser("describe", help="summarize a data source and its train/val/test split",
                       description="Summarize a data source (CSV, Monash .tsf, or statsmodels:NAME): rows, "
                                   "columns, frequency, span, missing values, and the train/val/test split "
                                   "sizes (with window counts when --context and --horizon are given).")
    d.add_argument("data", metavar="DATA", help="path to a .csv/.tsf file, or statsmodels:NAME "
                                                "(co2, sunspots, elnino, nile, macrodata)")
    d.add_argument("--context", type=int, default=None, metavar="L", help="context length L")
    d.add_argument("--horizon", type=int, default=None, metavar="H", help="forecast horizon H")
    d.add_argument("--columns", default=None, help="comma-separated channels to keep")
    d.add_argument("--target", default=None, help="channel to put last (the target)")
    d.add_argument("--date-column", default=None, help="CSV column holding the timestamps")
    d.add_argument("--scheme", default="auto", choices=("auto", "ett_hour", "ett_minute", "ratio"),
                   help="split scheme (auto: ETT borders for ETT files, else 70/10/20)")
    d.add_argument("--json", default=None, metavar="PATH", help="also write the summary as JSON to PATH")
    add_format_argument(d, what="the summary (one row; csv flattens nested keys with dots)")
    p.set_defaults(data_parser=p)


def _table(info: dict) -> str:
    lines = [f"{info['name']}  ({info['source']})"]
    kv = [("rows", info["rows"]), ("channels", info["channels"]),
          ("frequency", f"{info['freq']} (seasonal period {info['seasonal_period']})" if info["freq"] else "unknown")]
    if info["start"]:
        kv.append(("span", f"{info['start']} .. {info['end']}"))
    if info.get("horizon"):
        kv.append(("dataset horizon", info["horizon"]))
    if "series_lengths" in info:
        sl = info["series_lengths"]
        kv.append(("series lengths", f"min {sl['min']}, median {sl['median']:g}, max {sl['max']}"))
    if "holdout" in info:
        ho = info["holdout"]
        kv.append(("holdout", f"last {ho['horizon']} values; {ho['series_longer_than_horizon']} series longer"))
    kv.append(("missing values", info["missing_total"]))
    width = max(len(k) for k, _ in kv)
    lines += [f"  {k:<{width}}  {v}" for k, v in kv]

    cols = info["columns"]
    lines.append("")
    if len(cols) <= 20:
        w = max(len("column"), *(len(c) for c in cols))
        lines.append(f"  {'column':<{w}}  missing")
        lines += [f"  {c:<{w}}  {info['missing'][c]}" for c in cols]
    else:
        with_missing = {c: v for c, v in info["missing"].items() if v}
        lines.append(f"  {len(cols)} columns: {', '.join(cols[:5])}, ... {cols[-1]}; "
                     f"{len(with_missing)} with missing values")

    sp = info["splits"]
    lines.append("")
    if "error" in sp:
        lines.append(f"  split ({sp['scheme']}): {sp['error']}")
        return "\n".join(lines)
    lines.append(f"  split ({sp['scheme']}{', L=' + str(sp['context_len']) if sp['context_len'] else ''})")
    has_w = "test_windows" in sp
    lines.append(f"  {'part':<6} {'rows':>7} {'from':>7} {'to':>7}" + (f" {'windows':>8}" if has_w else ""))
    for i, part in enumerate(("train", "val", "test")):
        row = f"  {part:<6} {sp[part + '_rows']:>7} {sp['borders'][0][i]:>7} {sp['borders'][1][i]:>7}"
        if has_w:
            row += f" {sp[part + '_windows']:>8}"
        lines.append(row)
    if has_w:
        lines.append(f"  test windows x channels scored: {sp['test_windows_all_channels']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "data_verb", None) is None:
        args.data_parser.print_help()
        return 2
    from alignts.data import describe, load_data

    cols = [c.strip() for c in args.columns.split(",")] if args.columns else None
    data = load_data(args.data, columns=cols, target=args.target, date_column=args.date_column)
    info = describe(data, context_len=args.context, horizon=args.horizon, scheme=args.scheme)
    if args.format:
        from alignts.cli.output import write_table

        write_table(info, args.format)
    else:
        print(_table(info))
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(json.dumps(info, indent=2) + "\n")
    return 0
