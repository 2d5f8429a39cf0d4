"""`alignts demo`: the whole main job on the embedded defaults, in minutes, offline.

Data: a statsmodels bundled dataset (default ``statsmodels:co2``). Backbones: the embedded all-MiniLM-L6-v2
(Internal, Bridging) and the embedded numeric LM (Injective). Steps: describe the data; fit the three
paradigms with small CPU budgets and export them; forecast with each bundle; benchmark them beside the
baselines and write the trade-off report (table, frontier plot, forecast plot with the 80% interval).
Every step is the same CLI verb a user would run; the commands are printed as they go.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from alignts.errors import AlignTSError


def add_arguments(p):
    p.add_argument("--data", default="statsmodels:co2", help="data spec (default statsmodels:co2, bundled offline)")
    p.add_argument("--out", type=Path, default=Path("alignts-demo"), help="output folder (default ./alignts-demo)")
    p.add_argument("--context", type=int, default=96, help="context length L (default 96)")
    p.add_argument("--horizon", type=int, default=24, help="horizon H (default 24)")
    p.add_argument("--budget", type=float, default=60.0,
                   help="training seconds per trained paradigm (default 60)")
    p.add_argument("--max-windows", type=int, default=30,
                   help="test windows scored per bundle in the report (default 30; Injective samples are slow)")
    p.add_argument("--samples", type=int, default=8, help="Injective samples per series (default 8)")
    p.add_argument("--backbone", default="minilm",
                   help="backbone of Internal and Bridging (default: the embedded MiniLM; tiny-bert for a smoke run)")


def _step(title: str, argv: list[str]) -> None:
    from alignts.cli import main

    print(f"\n== {title}\n$ alignts {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    rc = main(argv)
    if rc != 0:
        raise AlignTSError(f"demo step {title!r} failed with exit code {rc}; the command above reproduces it.")
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)


def _check_extras(data: str) -> None:
    """Fail before the first step, naming every package the demo needs that is missing and the one install line."""
    import importlib.util

    from alignts.errors import BackendUnavailableError

    need = {"torch": "export", "onnxruntime": "cpu", "matplotlib": "plot"}
    if data.startswith("statsmodels:"):
        need["statsmodels"] = "data"
    missing = [f"{pkg} ([{extra}])" for pkg, extra in need.items() if importlib.util.find_spec(pkg) is None]
    if missing:
        raise BackendUnavailableError(
            f"alignts demo needs {', '.join(missing)}, not installed here. Fix: pip install "
            "'alignts[cpu,export,data,plot]' (or bash scripts/setup, whose default extras include them); "
            "a GPU box takes [gpu] instead of [cpu].")


def run(args) -> int:
    _check_extras(args.data)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    L, H = str(args.context), str(args.horizon)
    common = ["--data", args.data, "--context", L, "--horizon", H]
    backbone = ["--backbone", args.backbone]
    budget = ["--time-budget", str(args.budget), "--max-train-windows", "512", "--max-val-windows", "256",
              "--epochs", "5", "--layers", "2", "--overwrite"]
    bundles = {p: str(out / p) for p in ("internal", "bridging", "injective")}
    t0 = time.perf_counter()

    _step("the data", ["data", "describe", args.data, "--context", L, "--horizon", H])
    _step(f"Internal: LoRA-tune {args.backbone} (2 layers), export ONNX fp32/int8 + GGUF",
          ["fit", "internal", *common, *backbone, "--out", bundles["internal"], *budget])
    _step(f"Bridging: train a reprogramming adapter into frozen {args.backbone}, export adapter + shared backbone",
          ["fit", "bridging", *common, *backbone, "--out", bundles["bridging"], "--prototypes", "100", "--d-ff", "32",
           "--backbone-dir", str(out / "backbones"), *budget])
    _step("Injective: digits into the embedded numeric LM (no training)",
          ["fit", "injective", *common, "--out", bundles["injective"], "--samples", str(args.samples),
           "--overwrite"])
    for p, b in bundles.items():
        _step(f"forecast with the {p} bundle",
              ["forecast", b, "--data", args.data, "--out", str(out / f"forecast_{p}.csv"),
               "--plot", str(out / f"forecast_{p}.png")])
    _step("inspect the Bridging bundle (adapter vs backbone size)", ["inspect", bundles["bridging"]])
    _step("benchmark the three paradigms and the baselines; write the trade-off report",
          ["bench", *bundles.values(), "--data", args.data, "--max-windows", str(args.max_windows),
           "--variants", "onnx-fp32,onnx-int8,gguf-f16", "--batch-sizes", "1", "--repeats", "10",
           "--report", str(out / "report"),
           "--json", str(out / "report" / "bench.json")])
    print(f"\ndemo done in {time.perf_counter() - t0:.0f} s; everything is in {out}/ "
          f"(report: {out / 'report'})")
    return 0
