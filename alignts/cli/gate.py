"""`alignts gate BUNDLE`: judge and time every variant of an Internal or Bridging bundle again, here, and write the
records into its manifest. The planner ranks the variants within the accuracy gate by the time each took on the
machine that judged them (fit or quantize); after a move to another CPU, or a new llama.cpp / onnxruntime, that order
can be wrong (planning warns when the CPU differs): this re-times them where they will run. No variant is added or
dropped."""

from __future__ import annotations

from pathlib import Path


def add_arguments(p):
    p.add_argument("bundle", type=Path, help="bundle folder (manifest.json), edited in place")
    p.add_argument("--data", default=None,
                   help="data the bundle was fitted on, for the validation windows (default: the manifest's "
                        "training.data)")
    p.add_argument("--max-mse-change", type=float, default=None,
                   help="gate: a variant within this relative validation MSE change of fp32 passes (default 0.01)")
    p.add_argument("--gate-windows", type=int, default=None,
                   help="validation windows scored, evenly spaced (default 128: gate.GATE_WINDOWS)")
    p.add_argument("--threads", type=int, default=None, help="backend threads while judging")


def run(args) -> int:
    from alignts.errors import InputError
    from alignts.cli.inspect import print_planner_order
    from alignts.export.gate import MAX_REL_MSE_CHANGE, regate_bundle, verdict
    from alignts.runtime.threads import cpu_label

    if args.gate_windows is not None and args.gate_windows < 1:
        raise InputError(f"--gate-windows must be >= 1; got {args.gate_windows}.")
    m, changes = regate_bundle(args.bundle, data=args.data, n_windows=args.gate_windows, threads=args.threads,
                               max_rel_mse_change=MAX_REL_MSE_CHANGE if args.max_mse_change is None
                               else args.max_mse_change)

    def ms(r):
        return "-" if not r or r.get("ms_per_series") is None else f"{r['ms_per_series']:.2f}"

    print(f"{args.bundle}: {len(changes)} variant(s) judged on {cpu_label()}")
    print(f"{'variant':16} {'ms/series before':>16} {'now':>8}  verdict")
    for name, (old, new) in changes.items():
        print(f"{name:16} {ms(old):>16} {ms(new):>8}  {verdict(new)}")
    print_planner_order(m)
    return 0
