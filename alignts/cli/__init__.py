"""The ``alignts`` command line. Each verb lives in its own module with ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them together."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from alignts import __version__
from alignts.errors import AlignTSError

# verb -> (module under alignts.cli, one-line help)
VERBS = {
    "fit": ("fit", "fit a forecaster of one paradigm and export it as a bundle"),
    "forecast": ("forecast", "forecast a series with a bundle (CSV out, optional plot)"),
    "eval": ("evaluate", "score a bundle on the test split beside the baselines"),
    "calibrate": ("calibrate", "add split-conformal quantiles to an Internal/Bridging bundle"),
    "bench": ("bench", "benchmark kernels or bundles (latency, memory, accuracy)"),
    "inspect": ("inspect", "describe a bundle: files, variants, sizes, memory plan"),
    "quantize": ("quantize", "add quantized variants to a bundle"),
    "gate": ("gate", "judge and time a bundle's variants again on this machine (the planner's order)"),
    "demo": ("demo", "the whole main job on the embedded defaults"),
    "data": ("data", "look at a data source (describe)"),
    "env": ("env", "print versions, CPU flags, providers and cache paths (for bug reports)"),
    "stream": ("stream", "forecast a series as its points arrive (CSV/JSON lines in, JSON lines out)"),
    "serve": ("serve", "serve bundles over HTTP (KServe v2 / Open Inference Protocol), or on Ray Serve"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignts",
        description="Time-series LLMs on a device: Injective, Bridging and Internal alignment.",
    )
    parser.add_argument("--version", action="version", version=f"alignts {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at INFO level and show the traceback of an error")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module, help_) in VERBS.items():
        p = sub.add_parser(verb, help=help_, description=help_)
        mod = importlib.import_module(f"alignts.cli.{module}")
        mod.add_arguments(p)
        # -v after the verb too (`alignts forecast ... -v`); SUPPRESS keeps the top-level value otherwise
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb; every error ends as ONE line on stderr and a non-zero exit (the traceback with -v):
    2 for an AlignTSError or a file the OS refuses, 1 for an internal error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence: one line, never a traceback
        if args.verbose:
            traceback.print_exc()
        code, line = _error_line(e)
        print(f"alignts {args.verb}: {line}", file=sys.stderr)
        return code


def _error_line(e: Exception) -> tuple[int, str]:
    """(exit code, message) for an exception that ends a verb."""
    if isinstance(e, (AlignTSError, NotImplementedError)):  # NotImplementedError: an unknown paradigm/architecture
        return 2, f"error: {_one_line(e)}"
    if isinstance(e, OSError):  # a missing or unreadable file, a full disk, a closed pipe
        what = f"{e.filename!s}: {e.strerror}" if e.filename is not None and e.strerror else _one_line(e)
        return 2, f"error: {what}. Fix: check the path, its permissions and the free space."
    return 1, (f"internal error: {type(e).__name__}: {_one_line(e)} (run with -v for the traceback; "
               "please report it)")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
