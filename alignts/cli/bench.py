"""`alignts bench`: benchmarks.

``alignts bench kernels [--json PATH] [--quick]`` times every numba kernel against its NumPy twin;
``--device cuda`` times the numba CPU kernels against their numba.cuda variants (with and without the copies)
and checks the CUDA results against the NumPy twins (exit 1 on a mismatch).
``alignts bench BUNDLE... [--data DATA] [--report DIR]`` measures bundles: latency percentiles, throughput,
cold start and peak RSS in child processes, accuracy, and the torch eager reference (alignts/bench/bundles.py).
``alignts bench injective [MODEL.gguf]`` times the Injective sampling loop against raw llama.cpp decoding
(default model: the embedded numeric LM, f16); ``alignts bench injective BUNDLE --zero-shot DATA_DIR`` scores
an Injective bundle zero-shot (alignts/bench/injective.py). Both print JSON (``--json PATH`` also writes it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from alignts.cli.output import add_format_argument, write_table
from alignts.errors import InputError


def add_arguments(p):
    p.add_argument("target", nargs="+", metavar="kernels|injective|serve|BUNDLE",
                   help="`kernels` for the kernel benchmark (numba vs numpy), `injective [MODEL]` for the "
                        "Injective generation loop, `serve BUNDLE` for the HTTP server under load, or bundle "
                        "folders")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write the results (machine info and one row per case) to this JSON file")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests, not for numbers)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per case (default 5)")
    add_format_argument(p, what="the rows (one per case)")
    add_bundle_arguments(p)
    g = p.add_argument_group("injective")
    g.add_argument("--zero-shot", default=None, metavar="DATA_DIR",
                   help="with `injective BUNDLE`: score the bundle zero-shot on DATA_DIR's national_illness and "
                        "Monash tourism monthly")
    g.add_argument("--max-series", type=int, default=60, help="zero-shot: series per data set (default 60)")
    g.add_argument("--tourism-context", type=int, default=180,
                   help="zero-shot: tourism context, values at most (default 180, chosen on validation series by "
                        "scripts/zero_shot_validation.py; the prompt keeps what fits the LM)")
    g.add_argument("--temperature", type=float, default=None,
                   help="zero-shot: sampling temperature (default: the bundle's)")
    g.add_argument("--samples", type=int, default=20, help="sampled continuations (default 20)")
    g.add_argument("--horizon", type=int, default=24, help="generated values per continuation (default 24)")
    g = p.add_argument_group("serve (alignts bench serve BUNDLE: the HTTP server under load, 127.0.0.1 only)")
    g.add_argument("--clients", default="1,8,32,128", help="concurrent clients per level (default 1,8,32,128)")
    g.add_argument("--requests", type=int, default=2000, help="requests per level at most (default 2000)")
    g.add_argument("--duration", type=float, default=20.0, help="seconds per level at most (default 20)")
    g.add_argument("--rows", type=int, default=1, help="series per request (default 1)")
    g.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch (default 32)")
    g.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's --max-wait-ms (default 5)")
    g.add_argument("--max-queue", type=int, default=64, help="the server's --max-queue (default 64)")
    g.add_argument("--budget", default="2GB", help="the server's --budget (default 2GB)")
    g.add_argument("--workers", type=int, default=1, help="the server's --workers (default 1)")
    g.add_argument("--server-cpus", default=None, metavar="LIST",
                   help="pin the server and the in-process reference to these CPUs (e.g. 0); with --client-cpus")
    g.add_argument("--client-cpus", default=None, metavar="LIST",
                   help="pin the load generator to these CPUs (e.g. 1), apart from the server's")
    g = p.add_argument_group("speed (alignts bench speed: results/speed_cpu.md, see alignts/bench/speed.py)")
    g.add_argument("--bundles", type=Path, default=Path("/tmp/speed_bundles"), metavar="DIR",
                   help="where the MiniLM Internal and Bridging bundles are (fitted there when missing; default "
                        "/tmp/speed_bundles)")
    g.add_argument("--out", type=Path, default=Path("results/speed_cpu"), metavar="PREFIX",
                   help="writes PREFIX.md and PREFIX.json (default results/speed_cpu)")
    g.add_argument("--thread-counts", default="1,2", help="one bench run per thread count (default 1,2)")
    g = p.add_argument_group("stream")
    g.add_argument("--lengths", default="96,336,1024", help="stream: context lengths of the Injective bundle")
    g.add_argument("--rss-points", default="1000000,10000000", help="stream: points fed in the peak-RSS runs")
    try:  # one --device for both targets; the bundle options may define it already (cpu|cuda)
        p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cpu or cuda; with `kernels`, cuda benchmarks the numba.cuda variants against the "
                            "numba CPU kernels (needs an NVIDIA GPU and numba-cuda)")
    except argparse.ArgumentError:
        pass


def add_bundle_arguments(p) -> None:
    """Options of ``alignts bench BUNDLE...`` (the positional targets, --json and --repeats come from
    :func:`add_arguments`)."""
    p.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--variants", default=None, help="comma-separated variant names (default: every runnable one)")
    p.add_argument("--data", default=None, help="data spec for MSE/MAE on the test split (and for --report)")
    p.add_argument("--max-windows", type=int, default=None, help="score only the first N test windows")
    p.add_argument("--csv", type=Path, default=None, metavar="PATH", help="also write the rows as CSV")
    p.add_argument("--md", type=Path, default=None, metavar="PATH", help="also write the markdown table")
    p.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="write the trade-off report (table + frontier and forecast plots) to DIR; needs --data")
    p.add_argument("--threads", type=int, default=None, help="backend and torch threads")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds before timing (default 3)")
    p.add_argument("--settle-ms", type=float, default=50.0,
                   help="idle ms before each timed call, so no other row's thread pool still spins (default 50)")
    p.add_argument("--no-child", action="store_true", help="skip cold start / peak RSS (child processes)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch eager reference")


def _ints(s: str, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(t) for t in str(s).split(",") if t.strip())
    except ValueError as e:
        raise InputError(f"{what} {s!r}: expected comma-separated integers, e.g. 1,8") from e
    return out


def run_bundles(args) -> int:
    """Run ``alignts bench BUNDLE... [--report DIR]`` from parsed arguments; prints the table."""
    bundles = list(getattr(args, "target", None) or getattr(args, "bundles", []))
    if not bundles:
        raise InputError("no bundle given; expected `alignts bench BUNDLE...` with bundle folders.")
    for b in bundles:
        if not (Path(b) / "manifest.json").is_file():
            raise InputError(f"{b!r} is not a bundle folder (no manifest.json); expected folders written by "
                             "`alignts fit ...`, or the word `kernels`.")
    report = getattr(args, "report", None)
    data = getattr(args, "data", None)
    if report is not None and data is None:
        raise InputError("--report needs --data (the report scores every bundle and the baselines on it).")
    variants = getattr(args, "variants", None)
    from alignts.bench.bundles import BenchConfig

    cfg = BenchConfig(batch_sizes=_ints(getattr(args, "batch_sizes", "1,8"), "--batch-sizes"),
                      variants=tuple(v.strip() for v in variants.split(",") if v.strip()) if variants else None,
                      repeats=int(getattr(args, "repeats", 20)), warmup=int(getattr(args, "warmup", 3)), data=data,
                      max_windows=getattr(args, "max_windows", None), child=not getattr(args, "no_child", False),
                      torch=not getattr(args, "no_torch", False), threads=getattr(args, "threads", None),
                      device=getattr(args, "device", "cpu"), settle=float(getattr(args, "settle_ms", 50.0)) / 1e3)
    cfg.check()
    from alignts.bench.bundles import run_bench, to_markdown, write_csv

    result = run_bench(bundles, cfg)
    md = to_markdown(result)
    if getattr(args, "format", None):
        write_table(result["rows"], args.format)
    else:
        print(md)
    if getattr(args, "json", None) is not None:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    if getattr(args, "csv", None) is not None:
        print(f"wrote {write_csv(result, args.csv)}")
    if getattr(args, "md", None) is not None:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(md + "\n")
        print(f"wrote {args.md}")
    if report is not None:
        from alignts.bench.report import build_report

        out = build_report(result, data, report, max_windows=cfg.max_windows)
        print(f"wrote the report to {report}: " + ", ".join(p.name for p in out))
    return 0


def _run_injective(args) -> int:
    from alignts.bench.injective import bench_generation, zero_shot

    model = args.target[1] if len(args.target) == 2 else None
    if len(args.target) > 2:
        raise InputError(f"`injective` takes at most one model; got {args.target[1:]}. Fix: run "
                         "`alignts bench injective [MODEL.gguf]` or `alignts bench injective BUNDLE --zero-shot DIR`")
    if args.zero_shot:
        variant = args.variants.split(",")[0].strip() if args.variants else None
        result = zero_shot(model, args.zero_shot, variant, args.samples, args.max_series, threads=args.threads or 1,
                           tourism_context=args.tourism_context, temperature=args.temperature)
    else:
        path = model or str(Path(__file__).resolve().parents[1] / "assets" / "numeric_lm" / "numeric_lm-f16.gguf")
        result = bench_generation(path, args.samples, args.horizon, n_threads=args.threads, repeats=args.repeats)
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        print(f"wrote {args.json}")
    return 0


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


def _run_serve(args) -> int:
    from alignts.bench.serve import ServeBenchConfig, parse_cpus, run_serve_bench, to_markdown

    if len(args.target) != 2:
        raise InputError(f"`serve` takes one bundle; got {args.target[1:]}. Fix: alignts bench serve BUNDLE")
    quick = dict(clients=(1, 4), requests=40, duration=5.0, inproc_calls=5) if args.quick else {}
    cfg = ServeBenchConfig(**{"clients": _ints(args.clients, "--clients"), "requests": args.requests,
                              "duration": args.duration, "rows": args.rows, "max_batch": args.max_batch,
                              "max_wait_ms": args.max_wait_ms, "max_queue": args.max_queue,
                              "budget": args.budget or None, "workers": args.workers,
                              "server_cpus": parse_cpus(args.server_cpus),
                              "client_cpus": parse_cpus(args.client_cpus), **quick})
    result = run_serve_bench(args.target[1], cfg)
    md = to_markdown(result)
    if args.format:
        write_table(result["rows"], args.format)
    else:
        print(md)
    for path, text in ((args.json, json.dumps(result, indent=2) + "\n"), (args.md, md + "\n")):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
            print(f"wrote {path}")
    return 0


def _run_stream(args) -> int:
    from alignts.bench.stream import run_stream_bench, to_markdown
    from alignts.runtime.manifest import read_manifest

    bundles = args.target[1:]
    if not bundles:
        raise InputError("`stream` needs bundles: alignts bench stream INJECTIVE_BUNDLE [INTERNAL_BUNDLE...]")
    kinds = {b: read_manifest(b, verify=False).paradigm for b in bundles}
    inj = [b for b, k in kinds.items() if k == "injective"]
    if len(inj) > 1:
        raise InputError(f"`stream` takes at most one Injective bundle; got {inj}.")
    lengths = _ints(args.lengths, "--lengths")
    points = _ints(args.rss_points, "--rss-points")
    if args.quick:
        lengths, points = lengths[:1], (20_000,)
    result = run_stream_bench(inj[0] if inj else None, [b for b in bundles if b not in inj], lengths,
                              horizon=args.horizon, repeats=args.repeats, rss_points=points,
                              threads=args.threads if args.threads is not None else 1,
                              log=lambda s: print(s, file=sys.stderr))
    md = to_markdown(result)
    print(md)
    for path, text in ((args.json, json.dumps(result, indent=2, default=str) + "\n"), (args.md, md + "\n")):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
            print(f"wrote {path}")
    return 0


def run(args) -> int:
    if args.target and args.target[0] == "stream":
        return _run_stream(args)
    if args.target and args.target[0] == "serve":
        return _run_serve(args)
    if args.target == ["kernels"]:
        return _run_kernels(args)
    if "kernels" in args.target:
        raise InputError(f"`kernels` takes no other targets; got {args.target}. Fix: run `alignts bench kernels`")
    if args.target[0] == "injective":
        return _run_injective(args)
    if args.target == ["speed"]:
        return _run_speed(args)
    return run_bundles(args)


def _run_speed(args) -> int:
    import os

    # before torch loads libgomp: its waiting OpenMP threads sleep instead of spinning (a spinning wait on a shared
    # 2-core machine costs the other side many times its work). scripts/setup builds llama.cpp without OpenMP, so
    # this does not reach ggml, whose `omp barrier` after every graph node would sleep too (MiniLM, 2 threads: 37
    # instead of 22 ms a forecast with an OpenMP build)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from alignts.bench.speed import run_speed, write_outputs
    from alignts.export.bundle import command_line

    if not args.data:
        raise InputError("`bench speed` needs --data (the data the bundles are fitted on and judged with), e.g. "
                         "--data /work/shared/data/ETT/ETTh1.csv")
    result = run_speed(args.bundles, args.data, _ints(args.thread_counts, "--thread-counts"),
                       _ints(args.batch_sizes, "--batch-sizes"), repeats=args.repeats, warmup=args.warmup,
                       settle=args.settle_ms / 1e3)
    result["command"] = command_line()
    js, md = write_outputs(result, args.out)
    print(md.read_text())
    print(f"wrote {md} and {js}")
    return 0
