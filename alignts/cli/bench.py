"""`alignts bench`: benchmarks.

``alignts bench kernels [--json PATH] [--quick]`` times every numba kernel against its NumPy twin.
A positional target other than the literal ``kernels`` names bundles (``alignts bench BUNDLE...``), which this
version does not benchmark yet.
"""

from __future__ import annotations

import json
from pathlib import Path

from alignts.errors import InputError, NotBuiltError


def add_arguments(p):
    p.add_argument("target", nargs="+", metavar="kernels|BUNDLE",
                   help="`kernels` for the kernel benchmark (numba vs numpy); bundle folders are not built yet")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write the results (machine info and one row per case) to this JSON file")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests, not for numbers)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per path; the median is kept (default 5)")


def _run_kernels(args) -> int:
    from alignts.bench.kernels import run_kernel_bench, to_markdown

    if args.repeats < 1:
        raise InputError(f"--repeats must be >= 1; got {args.repeats}. Fix: pass e.g. --repeats 5")
    result = run_kernel_bench(quick=args.quick, repeats=args.repeats)
    print(to_markdown(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def run(args) -> int:
    if args.target == ["kernels"]:
        return _run_kernels(args)
    if "kernels" in args.target:
        raise InputError(f"`kernels` takes no other targets; got {args.target}. Fix: run `alignts bench kernels`")
    raise NotBuiltError(f"benchmarking bundles ({', '.join(args.target)}) is not part of this version yet; "
                        "`alignts bench kernels` is")
