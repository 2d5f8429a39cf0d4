"""The cheap baselines under the few-shot protocol: fitted on the first P% of the training windows, scored on
every test window of ETTh1, ETTh2 and ETTm1 at H = 96/192/336/720 (results/fewshot/).

usage: python scripts/fewshot_baselines.py DATA_DIR OUT.json [--percent 10] [--context 336]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from alignts.data.load import load_data
from alignts.data.splits import make_splits
from alignts.eval.evaluate import baseline_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", help="folder holding ETT/ETTh1.csv, ETT/ETTh2.csv, ETT/ETTm1.csv")
    p.add_argument("out", help="JSON file to write")
    p.add_argument("--percent", type=int, default=10)
    p.add_argument("--context", type=int, default=336)
    a = p.parse_args()
    out = {}
    for name in ("ETTh1", "ETTh2", "ETTm1"):
        data = load_data(Path(a.data_dir) / "ETT" / f"{name}.csv")
        for H in (96, 192, 336, 720):
            t0 = time.perf_counter()
            s = make_splits(data, a.context, H, train_percent=a.percent)
            rows = baseline_table(s, a.context, H)
            out[f"{name}/{H}"] = {k: {"mse": v["mse"], "mae": v["mae"], "n_windows": v["n_windows"]}
                                  for k, v in rows.items()}
            out[f"{name}/{H}"]["train_rows"] = int(s.train.shape[0])
            print(name, H, s.train.shape[0], {k: round(v["mse"], 3) for k, v in rows.items()},
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
