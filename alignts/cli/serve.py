"""`alignts serve BUNDLE...`: serve bundles over HTTP on the KServe v2 / Open Inference Protocol
(alignts/serve/; ``pip install 'alignts[serve]'``), or with ``--ray`` as a Ray Serve deployment
(``pip install 'alignts[ray]'``)."""

from __future__ import annotations

import os


def add_arguments(p):
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle folders as [NAME=]FOLDER[@VARIANT]: the name "
                   "defaults to the folder's name; a variant pins the model to it (default: the planner chooses)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--budget", default=None, help="memory budget of the whole server, e.g. 2GB: the planner picks "
                   "variants so every model fits, else loads models on demand and evicts the least recently used")
    p.add_argument("--max-batch", type=int, default=32, help="series rows per backend call (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch "
                   "with (default 5)")
    p.add_argument("--no-batching", action="store_true", help="one backend call per request")
    p.add_argument("--workers", type=int, default=1, help="threads running backend calls (default 1); llama.cpp "
                   "Internal and Injective models get one context per worker")
    p.add_argument("--max-queue", type=int, default=128, help="queued requests per model before 429 (default 128)")
    p.add_argument("--max-body", default="16MiB", help="largest request body (default 16MiB; 413 above)")
    p.add_argument("--token", default=None, help="bearer token every route but the health checks needs (default: "
                   "$ALIGNTS_SERVE_TOKEN, else none)")
    p.add_argument("--threads", type=int, default=None, help="backend threads per call")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--no-preload", action="store_true", help="load each model on its first request")
    p.add_argument("--no-freeze-gc", action="store_true",
                   help="keep Python's garbage collector walking every object (default: the objects alive after "
                        "the start are frozen, gc.freeze, so collections during requests walk only theirs)")
    p.add_argument("--max-streams", type=int, default=1024, help="streams held in memory (default 1024)")
    p.add_argument("--stream-dir", default=None, help="write idle streams here past --max-streams, and every stream "
                   "at shutdown; streams found here are resumed (default: memory only)")
    p.add_argument("--log-format", default="json", choices=("json", "text"), help="log lines (default json)")
    p.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds to finish accepted requests "
                   "after SIGTERM (default 30)")
    p.add_argument("--ready-file", default=None, help="write HOST:PORT here once listening (for scripts)")
    g = p.add_argument_group("ray")
    g.add_argument("--ray", action="store_true", help="run as a Ray Serve deployment (pip install 'alignts[ray]')")
    g.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (default 1)")
    g.add_argument("--ray-address", default=None, help="an existing Ray cluster (e.g. auto, or HEAD:6379 after "
                   "`ray start --head`); default: start a local one")


def config_from_args(args):
    from alignts.runtime.budget import parse_budget
    from alignts.serve.app import ServeConfig

    token = args.token if args.token is not None else os.environ.get("ALIGNTS_SERVE_TOKEN") or None
    cfg = ServeConfig(models=tuple(args.bundles), budget=parse_budget(args.budget), max_batch=args.max_batch,
                      max_wait_ms=args.max_wait_ms, batching=not args.no_batching, workers=args.workers,
                      max_queue=args.max_queue, max_body_bytes=parse_budget(args.max_body), token=token,
                      device=args.device, threads=args.threads, preload=not args.no_preload,
                      freeze_gc=not args.no_freeze_gc,
                      max_streams=args.max_streams, stream_dir=args.stream_dir)
    cfg.check()
    return cfg


def run(args) -> int:
    import logging

    from alignts.errors import missing_extra

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise missing_extra(e.name or "starlette", "serve", "for `alignts serve`") from e
    cfg = config_from_args(args)
    from alignts.serve.server import serve, setup_logging

    setup_logging(args.log_format, logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    if args.ray:
        from alignts.serve.ray import serve_ray

        return serve_ray(cfg, host=args.host, port=args.port, replicas=args.replicas, address=args.ray_address,
                         ready_file=args.ready_file)
    return serve(cfg, host=args.host, port=args.port, graceful_timeout=args.graceful_timeout,
                 ready_file=args.ready_file)
