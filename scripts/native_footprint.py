"""The native footprint table (native/README.md): library and binary sizes (shared / static, stripped), and per
paradigm / variant the peak RSS and the start-up time of alignts-run on x86-64 and, when `bash scripts/native
aarch64` has built it, the RSS under qemu-aarch64.

    python scripts/native_footprint.py BUILD CASES [AARCH64_BUILD]    (bash scripts/native footprint runs it)

BUILD: the root CMake build with ALIGNTS_BUILD_RUNNER=ON (build/native); CASES: scripts/native_cases.py's folder
(the tiny bundles and data.csv). Each run is `alignts-run BUNDLE --data CASES/data.csv --threads 1 --stats`, 5
times; the table gives medians. Start-up = alignts_open + alignts_plan (manifest, sha256 of every file read,
llama.cpp model + context), page cache warm. Peak RSS = the process's VmHWM at the end of the run. Writes
BUILD/footprint.json and prints the markdown table.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = 5


def _stripped(path: Path, strip: str = "strip", flags: tuple[str, ...] = ("--strip-unneeded",)) -> int:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / path.name
        subprocess.run([strip, *flags, "-o", str(out), str(path)], check=True, capture_output=True)
        return out.stat().st_size


def _llama_dir(build: Path) -> Path:
    cache = (build / "CMakeCache.txt").read_text()
    lib = next(ln.split("=", 1)[1] for ln in cache.splitlines() if ln.startswith("ALIGNTS_LLAMA_LIBRARY:"))
    return Path(lib).resolve().parent


def sizes(build: Path, strip: str = "strip") -> list[dict]:
    run = build / "native" / "runner"
    rows = []
    for name, path, flags in (("libalignts.so (shared)", run / "libalignts.so", ("--strip-unneeded",)),
                              ("libalignts.a (static)", run / "libalignts.a", ("--strip-debug",)),
                              ("alignts-run (static libalignts)", run / "alignts-run", ("--strip-all",))):
        rows.append({"file": name, "bytes": path.stat().st_size, "stripped_bytes": _stripped(path, strip, flags)})
    llama = _llama_dir(build)
    for pattern in ("libllama.so", "libggml.so", "libggml-base.so"):
        p = (llama / pattern).resolve()
        rows.append({"file": f"llama.cpp {pattern}", "bytes": p.stat().st_size,
                     "stripped_bytes": _stripped(p, strip)})
    cpu = sorted(llama.glob("libggml-cpu*.so"))
    for p in cpu:
        if p.name in ("libggml-cpu-haswell.so", "libggml-cpu-zen4.so", "libggml-cpu.so"):
            rows.append({"file": f"llama.cpp {p.name}", "bytes": p.stat().st_size,
                         "stripped_bytes": _stripped(p.resolve(), strip)})
    if len(cpu) > 1:
        rows.append({"file": f"llama.cpp all {len(cpu)} CPU variants", "bytes": sum(p.stat().st_size for p in cpu),
                     "stripped_bytes": None})
    return rows


def runs(exe: Path, cases: Path, prefix: list[str], bundles: list[tuple[str, str, str | None]]) -> list[dict]:
    rows = []
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["HOME"] = str(cases)  # the backbone store of the cases only
    for label, rel, variant in bundles:
        stats = []
        for _ in range(RUNS):
            cmd = [*prefix, str(exe), str(cases / rel), "--data", str(cases / "data.csv"), "--threads", "1", "--stats"]
            if variant:
                cmd += ["--variant", variant]
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-500:]}")
            stats.append(json.loads(next(ln for ln in r.stderr.splitlines() if ln.startswith("{"))))
        med = {k: statistics.median(s[k] for s in stats) for k in ("open_ms", "plan_ms", "forecast_ms", "peak_rss_kib")}
        rows.append({"bundle": label, "variant": stats[0]["variant"], **med,
                     "startup_ms": statistics.median(s["open_ms"] + s["plan_ms"] for s in stats),
                     **{k: stats[0][k] for k in ("workspace_bytes", "model_bytes", "kv_bytes", "table_bytes")}})
    return rows


def _cpu() -> str:
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    build, cases = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    cross = Path(argv[2]).resolve() if len(argv) > 2 else None
    bundles = [("internal (tiny-gpt2)", "bundles/internal", None),
               ("internal + LoRA adapter", "bundles/internal", "gguf-f32-lora"),
               ("bridging (tiny-bert backbone)", "bundles/bridging", None),
               ("injective (tiny GPT-2, 3 samples)", "bundles/injective", None)]
    names = [v["name"] for v in json.loads((cases / "bundles/internal/manifest.json").read_text())["variants"]]
    bundles = [b for b in bundles if b[2] is None or b[2] in names]
    report = {"cpu": _cpu(), "sizes_x86_64": sizes(build),
              "runs_x86_64": runs(build / "native" / "runner" / "alignts-run", cases, [], bundles)}
    exe = cross / "native" / "runner" / "alignts-run" if cross else None
    if exe and exe.is_file() and shutil.which("qemu-aarch64"):
        report["sizes_aarch64"] = sizes(cross, "aarch64-linux-gnu-strip")
        report["runs_qemu_aarch64"] = runs(exe, cases, ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"], bundles)
    (build / "footprint.json").write_text(json.dumps(report, indent=1))
    print(f"CPU: {report['cpu']}\n")
    for key in ("sizes_x86_64", "sizes_aarch64"):
        if key in report:
            print(f"| {key} | bytes | stripped |\n|---|---:|---:|")
            for r in report[key]:
                print(f"| {r['file']} | {r['bytes']:,} | {r['stripped_bytes']:,} |" if r["stripped_bytes"] else
                      f"| {r['file']} | {r['bytes']:,} | |")
            print()
    for key in ("runs_x86_64", "runs_qemu_aarch64"):
        if key in report:
            print(f"| {key} | variant | start-up ms (open + plan) | forecast ms | peak RSS MiB | workspace B | "
                  "model B | KV cache B |\n|---|---|---:|---:|---:|---:|---:|---:|")
            for r in report[key]:
                print(f"| {r['bundle']} | {r['variant']} | {r['startup_ms']:.1f} ({r['open_ms']:.1f} + "
                      f"{r['plan_ms']:.1f}) | {r['forecast_ms']:.1f} | {r['peak_rss_kib'] / 1024:.1f} | "
                      f"{r['workspace_bytes']:,} | {r['model_bytes']:,} | {r['kv_bytes']:,} |")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
