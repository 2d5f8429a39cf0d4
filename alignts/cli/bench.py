"""`alignts bench`: benchmarks.

``alignts bench kernels [--json PATH] [--quick]`` times every numba kernel against its NumPy twin;
``--device cuda`` times the numba CPU kernels against their numba.cuda variants (with and without the copies)
and checks the CUDA results against the NumPy twins (exit 1 on a mismatch).
``alignts bench BUNDLE... [--data DATA] [--report DIR]`` measures bundles: latency percentiles, throughput,
cold start and peak RSS in child processes, accuracy, and the torch eager reference (alignts/bench/bundles.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from alignts.cli.output import add_format_argument, write_table
from alignts.errors import InputError


def add_arguments(p):
    p.add_argument("target", nargs="+", metavar="kernels|BUNDLE",
                   help="`kernels` for the kernel benchmark (numba vs numpy), or bundle folders")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write the results (machine info and one row per case) to this JSON file")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests, not for numbers)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per case (default 5)")
    add_format_argument(p, what="the rows (one per case)")
    from alignts.bench.bundles import add_bundle_arguments

    add_bundle_arguments(p)
    try:  # one --device for both targets; the bundle options may define it already (cpu|cuda)
        p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cpu or cuda; with `kernels`, cuda benchmarks the numba.cuda variants against the "
                            "numba CPU kernels (needs an NVIDIA GPU and numba-cuda)")
    except argparse.ArgumentError:
        pass


def _run_kernels(args) -> int:
    from alignts.bench.kernels import cuda_to_markdown, run_cuda_bench, run_kernel_bench, to_markdown

    if args.repeats < 1:
        raise InputError(f"--repeats must be >= 1; got {args.repeats}. Fix: pass e.g. --repeats 5")
    if args.device == "cuda":
        result = run_cuda_bench(quick=args.quick, repeats=args.repeats)
        md = cuda_to_markdown(result)
    else:
        result = run_kernel_bench(quick=args.quick, repeats=args.repeats)
        md = to_markdown(result)
    if args.format:
        write_table(result["rows"], args.format)
    else:
        print(md)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.device == "cuda" and not result["all_ok"]:
        bad = [f"{r['kernel']} {r['size']}" for r in result["rows"] if not r["ok"]]
        print(f"CUDA results differ from the NumPy twins beyond bench.kernels.CUDA_TOL: {bad}", file=sys.stderr)
        return 1
    return 0


def run(args) -> int:
    if args.target == ["kernels"]:
        return _run_kernels(args)
    if "kernels" in args.target:
        raise InputError(f"`kernels` takes no other targets; got {args.target}. Fix: run `alignts bench kernels`")
    from alignts.bench.bundles import run_bundles

    return run_bundles(args)
