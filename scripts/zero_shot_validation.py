#!/usr/bin/env python
"""Choose the Injective zero-shot settings (sampling temperature, tourism context) on data the reported scores
never see: national_illness's VALIDATION split (the report uses the test split) and Monash tourism monthly
series 60-159 (the report uses the first 60). Scores are MASE, as `alignts bench injective --zero-shot`.

    python scripts/zero_shot_validation.py BUNDLE --data ../shared/data --tourism 0.9:96 0.5:180 --ili 0.9 0.5

`--tourism T:L` scores temperature T with a context of at most L values; `--ili T` scores temperature T (L=104,
H=24, every 4th validation window, 7 channels). 20 samples, seed 0, one llama.cpp thread. Prints and writes
JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import alignts.runtime as rt  # noqa: E402
from alignts.bench.injective import ili_scores, tourism_scores  # noqa: E402


def tourism(f, data_dir: Path, configs: list[tuple[float, int]], first: int = 60, n: int = 100) -> dict:
    out: dict = {"series": [first, first + n]}
    for temp, L in configs:
        f.set_sampling(n_samples=20, seed=0, temperature=temp)
        rows = tourism_scores(f, data_dir, L, n, first_series=first)["rows"]
        out["seasonal_naive"] = rows["seasonal_naive"]["mase"]
        out[f"t{temp}_L{L}"] = rows["injective"]["mase"]
        print(f"tourism t={temp} L={L}: MASE {out[f't{temp}_L{L}']:.4f} (seasonal naive {out['seasonal_naive']:.4f}, "
              f"{rows['injective']['seconds']:.0f} s)", flush=True)
    return out


def ili(f, data_dir: Path, temps: list[float]) -> dict:
    out: dict = {}
    for temp in temps:
        f.set_sampling(n_samples=20, seed=0, temperature=temp)
        r = ili_scores(f, data_dir, "val", stride=4)
        out.update(windows=r["n_windows"], channels=r["n_channels"],
                   seasonal_naive=r["rows"]["seasonal_naive"]["mase"])
        out[f"t{temp}"] = r["rows"]["injective"]["mase"]
        print(f"ili (validation) t={temp}: MASE {out[f't{temp}']:.4f} (seasonal naive {out['seasonal_naive']:.4f})",
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--tourism", nargs="*", default=[], metavar="T:L")
    ap.add_argument("--ili", nargs="*", default=[], type=float, metavar="T")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    f = rt.load(args.bundle)
    res: dict = {"bundle": args.bundle}
    if args.tourism:
        res["tourism_monthly"] = tourism(f, args.data, [(float(a), int(b)) for a, b in
                                                        (c.split(":") for c in args.tourism)])
    if args.ili:
        res["national_illness_val"] = ili(f, args.data, args.ili)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
