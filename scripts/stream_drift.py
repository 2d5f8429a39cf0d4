#!/usr/bin/env python3
"""A stream that runs through ETTh1's test split and then switches to ETTh2's: MSE per segment with and without
drift adaptation, and the Page-Hinkley detector's delay (results/stream_drift.md).

The stream gets raw values: ETTh1 rows [11520 - L, 14400) (the test split with its look-back), then ETTh2 rows
[11520, 14400) (ETTh2's test split, no look-back: the window mixes both regimes after the switch). One forecast
per point (H steps). Errors are scored in each dataset's own standardized units (StandardScaler of its own train
split, the protocol's units), every channel, every forecast whose H targets lie in one segment: ``ETTh1`` (before
the switch), ``ETTh2 first 336`` (origins in the first 336 points after it) and ``ETTh2 rest``.

Modes: ``off`` (no detector), ``detect`` (Page-Hinkley on the forecast errors; re-anchoring on an event, which
for a window engine changes nothing), ``detect+correct`` (plus the RLS output correction after the first event).
Delay = the first event at or after the switch minus the switch index; false alarms = events before it.

Usage: python scripts/stream_drift.py BUNDLE[@EVERY] [BUNDLE[@EVERY]...] [--data-dir ../shared/data/ETT] [--every 1]
       [--columns OT] (channels for a bundle that takes any number: Injective)
       [--out results/stream_drift.md] [--json results/stream_drift.json]
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

MODES = {"off": None, "detect": dict(correct=False), "detect+correct": dict(correct=True)}


def _load(path: Path, columns):
    from alignts.data.load import load_data
    from alignts.data.splits import make_splits

    d = load_data(str(path), columns=columns)
    s = make_splits(d, 96, 24)  # only the train scaler is used: ETT borders are fixed
    return d.values.astype(np.float64), np.asarray(s.std).reshape(-1)


def run(bundle: str, data_dir: Path, every: int, samples: int | None, columns=None) -> dict:
    import alignts.runtime as rt
    from alignts.runtime.stream import DriftConfig

    f = rt.load(bundle)
    variant = next((v.name for v in f.manifest.variants if v.name == "onnx-fp32"), None)
    if samples:
        f.set_sampling(n_samples=samples)
    f.plan(variant=variant, threads=1)
    L, H = f.context_len, f.planned.horizon
    cols = list(f.cfg.columns) if f.cfg.columns else columns  # a bundle of any channels takes --columns
    a, sa = _load(data_dir / "ETTh1.csv", cols)
    b, sb = _load(data_dir / "ETTh2.csv", cols)
    x = np.concatenate([a[11520 - L:14400], b[11520:14400]])
    switch = 14400 - (11520 - L)
    std = np.concatenate([np.tile(sa, (switch, 1)), np.tile(sb, (len(x) - switch, 1))])
    out = {"bundle": str(bundle), "channels": ",".join(cols) if cols else "all 7", "paradigm": f.paradigm, "variant": f.planned.variant, "L": L, "H": H,
           "every": every, "switch": switch, "points": len(x), "modes": {}}
    for mode, drift in MODES.items():
        s = f.stream(n_channels=x.shape[1], forecast_every=every, policy="every",
                     drift=DriftConfig(**drift) if drift is not None else None)
        seg = {"ETTh1": [], "ETTh2 first 336": [], "ETTh2 rest": []}
        events = []
        t0 = time.perf_counter()
        for i in range(len(x) - H):
            for sf in s.update(x[i]):
                events += [e["t"] for e in sf.drift]
                o = sf.t
                if o < L - 1:
                    continue
                tgt = slice(o + 1, o + 1 + H)
                if o + H < switch:
                    key = "ETTh1"
                elif o + 1 >= switch:
                    key = "ETTh2 first 336" if o + 1 < switch + 336 else "ETTh2 rest"
                else:
                    continue  # targets on both sides of the switch
                err = (sf.forecast.median[0].T - x[tgt]) / std[tgt]  # [H, C]
                seg[key].append(float(np.mean(err ** 2)))
        after = [e for e in events if e >= switch]
        out["modes"][mode] = {"mse": {k: float(np.mean(v)) for k, v in seg.items()},
                              "n_forecasts": {k: len(v) for k, v in seg.items()},
                              "events": len(events), "false_alarms": len(events) - len(after),
                              "delay": (after[0] - switch) if after else None, "first_events": events[:10],
                              "wall_s": time.perf_counter() - t0, "engine": s.engine.describe()}
        print(bundle, mode, out["modes"][mode]["mse"], "delay", out["modes"][mode]["delay"], "events",
              len(events), file=sys.stderr)
    return out


def to_markdown(results: list[dict], command: str, cpu: str) -> str:
    out = ["# Streaming through a regime change: ETTh1 test, then ETTh2 test", "",
           f"Command: `{command}`", "", f"CPU: {cpu}; one thread.", "",
           "MSE in each dataset's own standardized units, all channels, one forecast every `every` points; delay in points "
           "after the switch to the first Page-Hinkley event (defaults: delta 0.25, threshold 50, alpha 0.999, "
           "min 30 points); false alarms = events before the switch.", "",
           "| bundle | channels | L | H | every | mode | ETTh1 | ETTh2 first 336 | ETTh2 rest | events | false alarms | delay |",
           "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        name = Path(r["bundle"]).name
        for mode, m in r["modes"].items():
            mse = m["mse"]
            out.append(f"| {name} ({r['paradigm']}, {r['variant']}) | {r['channels']} | {r['L']} | {r['H']} | {r['every']} | {mode} | "
                       f"{mse['ETTh1']:.4f} | {mse['ETTh2 first 336']:.4f} | {mse['ETTh2 rest']:.4f} | "
                       f"{m['events']} | {m['false_alarms']} | {m['delay'] if m['delay'] is not None else '-'} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "ETT")
    ap.add_argument("--every", type=int, default=1, help="forecast every k points (BUNDLE@K overrides it)")
    ap.add_argument("--samples", type=int, default=None, help="Injective: samples per forecast")
    ap.add_argument("--columns", default=None, help="channels for bundles that take any (Injective), e.g. OT")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from alignts.bench.stream import machine

    results = []
    for spec in args.bundles:  # BUNDLE or BUNDLE@EVERY (a cadence of its own)
        b, _, every = spec.partition("@")
        results.append(run(b, args.data_dir, int(every) if every else args.every, args.samples,
                           args.columns.split(",") if args.columns else None))
    md = to_markdown(results, "python " + " ".join(["scripts/stream_drift.py"] + list(argv or sys.argv[1:])),
                     machine()["cpu"])
    print(md)
    if args.out:
        args.out.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
