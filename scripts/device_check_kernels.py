#!/usr/bin/env python3
"""Device check of the numba.cuda kernels (alignts/kernels/cuda_*.py), in one go, on a machine with a GPU.

1. Equality with the NumPy twins on edge cases (bench.kernels.cuda_edge_checks): max abs diff per case
   (digit ids: number of differing ids), and the errors (inf, all-NaN, NaN/too large for the codec) raised
   with the CPU path's messages.
2. The benchmark of `alignts bench kernels --device cuda` (numba CPU vs numba CUDA with and without the
   copies, S = 7, 448, 7168 series of L = 336/512), which also checks every benchmark output against the
   NumPy twin.

Needs numpy, numba and numba-cuda (CUDA driver), and the repository on PYTHONPATH (no install):
    PYTHONPATH=. python3 scripts/device_check_kernels.py [--json out.json] [--repeats 5]
Prints the tables; exit status 0 when everything matches, 1 on any mismatch, 2 when CUDA is unavailable.
Under NUMBA_ENABLE_CUDASIM=1 add --quick (tiny benchmark shapes) to try it without a GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when it is not installed
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")  # 7-series grids are small on purpose


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="write edge checks and benchmark to this JSON file")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per benchmark case (default 5)")
    ap.add_argument("--quick", action="store_true", help="tiny benchmark shapes (for the simulator)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from alignts.bench import kernels as bench
    from alignts.errors import BackendUnavailableError
    from alignts.kernels import cuda_norm_patch

    t0 = time.perf_counter()
    ok, why = cuda_norm_patch.available()
    print(f"CUDA: {why}")
    if not ok:
        return 2
    try:
        import numba
        from numba import cuda

        print(f"numba {numba.__version__}, numba.cuda {getattr(cuda, 'implementation', '?')}, "
              f"runtime {'.'.join(map(str, cuda.runtime.get_version())) if hasattr(cuda, 'runtime') else '?'}")
    except Exception as e:  # version strings only; the checks below say what works
        print(f"(version query failed: {type(e).__name__}: {e})")

    print("\n## Equality with the NumPy twins (edge cases)\n")
    edges = bench.cuda_edge_checks()
    print("| case | max abs diff | ok |\n|---|---:|---|")
    for r in edges:
        print(f"| {r['case']} | {r['max_abs_diff']:.3g} | {'ok' if r['ok'] else 'MISMATCH'} |")
    t1 = time.perf_counter()
    print(f"\n({len(edges)} cases, {t1 - t0:.1f} s including CUDA compilation)")

    print("\n## numba CPU vs numba CUDA\n")
    try:
        result = bench.run_cuda_bench(quick=args.quick, repeats=args.repeats)
    except BackendUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(bench.cuda_to_markdown(result))
    print(f"\n(benchmark {time.perf_counter() - t1:.1f} s; total {time.perf_counter() - t0:.1f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"edge_checks": edges, "bench": result}, indent=2) + "\n")
        print(f"wrote {args.json}")
    bad = [r["case"] for r in edges if not r["ok"]]
    bad += [f"bench {r['kernel']} {r['size']}" for r in result["rows"] if not r["ok"]]
    if bad:
        print(f"MISMATCH in {len(bad)} case(s): {bad}", file=sys.stderr)
        return 1
    print("all CUDA results match the NumPy twins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
