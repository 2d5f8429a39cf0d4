"""Two alignts-run builds on the same bundles, runs interleaved (old, new, old, new, ...): `--stats` open and
forecast ms (the median of the runs), peak RSS, and the largest difference between the two builds' forecasts.
    python runner_ab.py OLD_RUNNER NEW_RUNNER --data ETTh1.csv --bundles B1,B2 --variants gguf-f32,gguf-bf16 \
        --threads 1,2 --runs 3
(session 18: the Bridging adapter of libalignts folded as AdapterExport, the seal's SHA-256 on the x86 SHA
extensions; runner_ab.txt)"""

import argparse
import io
import json
import statistics
import subprocess

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("old")
ap.add_argument("new")
ap.add_argument("--data", required=True)
ap.add_argument("--bundles", required=True)
ap.add_argument("--variants", default="gguf-f32,gguf-bf16")
ap.add_argument("--threads", default="1,2")
ap.add_argument("--runs", type=int, default=3)
a = ap.parse_args()


def run(runner, bundle, variant, threads):
    p = subprocess.run(
        [runner, bundle, "--data", a.data, "--variant", variant, "--threads", threads, "--stats"],
        capture_output=True,
        text=True,
        check=True,
    )
    stats = json.loads(p.stderr.strip().splitlines()[-1])
    return stats, np.loadtxt(io.StringIO(p.stdout), delimiter=",", skiprows=1)


print(
    "| bundle | variant | threads | open ms old -> new | forecast ms old -> new | peak RSS MiB old -> new | "
    "max abs diff of the forecasts |"
)
print("|---|---|--:|--:|--:|--:|--:|")
for bundle in a.bundles.split(","):
    for variant in a.variants.split(","):
        for threads in a.threads.split(","):
            got = {"old": [], "new": []}
            for _ in range(a.runs):
                for k in ("old", "new"):
                    got[k].append(run(getattr(a, k), bundle, variant, threads))
            med = {
                k: {f: statistics.median(s[f] for s, _ in v) for f in ("open_ms", "forecast_ms", "peak_rss_kib")}
                for k, v in got.items()
            }
            diff = max(float(np.max(np.abs(o[1] - n[1]))) for o, n in zip(got["old"], got["new"]))
            name = bundle.rstrip("/").split("/")[-1]
            print(
                f"| {name} | {variant} | {threads} | {med['old']['open_ms']:.0f} -> {med['new']['open_ms']:.0f} | "
                f"{med['old']['forecast_ms']:.1f} -> {med['new']['forecast_ms']:.1f} | "
                f"{med['old']['peak_rss_kib'] / 1024:.1f} -> {med['new']['peak_rss_kib'] / 1024:.1f} | {diff:.2g} |",
                flush=True,
            )
