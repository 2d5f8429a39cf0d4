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
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import alignts.runtime as rt  # noqa: E402
from alignts.data import load_data  # noqa: E402
from alignts.data.series import fill_missing  # noqa: E402
from alignts.data.splits import make_splits, sliding_windows  # noqa: E402
from alignts.eval.metrics import mase_scale  # noqa: E402


def tourism(f, data_dir: Path, configs: list[tuple[float, int]], first: int = 60, last: int = 160) -> dict:
    data = load_data(data_dir / "monash" / "tourism_monthly_dataset.tsf")
    H, m = 24, 12
    hist, target, scale = [], [], []
    for i in range(first, min(last, data.n_channels)):
        s = data.series(i)
        if s.size <= H or np.isnan(s[-H:]).any():
            continue
        hist.append(fill_missing(s[:-H]))
        target.append(s[-H:])
        scale.append(mase_scale(s[:-H], m))
    target, scale = np.array(target), np.array(scale)

    def mase(p):
        return float((np.abs(p - target).mean(1) / scale).mean())

    out = {"series": [first, first + len(hist)], "seasonal_naive": mase(np.stack([h[-m:][np.arange(H) % m]
                                                                                  for h in hist]))}
    for temp, L in configs:
        f.set_sampling(n_samples=20, seed=0, temperature=temp)
        f.plan(context_len=L, horizon=H, threads=1)
        t0 = time.perf_counter()
        p = np.concatenate([f.forecast_series([h[-L:] for h in hist[b:b + 8]]) for b in range(0, len(hist), 8)])
        out[f"t{temp}_L{L}"] = mase(p)
        print(f"tourism t={temp} L={L}: MASE {mase(p):.4f} (seasonal naive {out['seasonal_naive']:.4f}, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def ili(f, data_dir: Path, temps: list[float]) -> dict:
    L, H, m = 104, 24, 52
    sp = make_splits(load_data(data_dir / "national_illness" / "national_illness.csv"), L, H)
    x, y = sliding_windows(sp.val, L, H, stride=4)
    x = x.astype(np.float64)
    scale = np.abs(x[..., m:] - x[..., :-m]).mean(-1)
    ok = scale > 0

    def mase(p):
        return float((np.abs(p - y).mean(-1)[ok] / scale[ok]).mean())

    out = {"windows": int(x.shape[0]), "channels": int(x.shape[1]), "seasonal_naive": mase(x[..., L - m:L - m + H])}
    for temp in temps:
        f.set_sampling(n_samples=20, seed=0, temperature=temp)
        f.plan(context_len=L, horizon=H, threads=1)
        out[f"t{temp}"] = mase(f.forecast_scaled(x))
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
