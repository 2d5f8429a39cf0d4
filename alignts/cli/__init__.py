"""The ``alignts`` command line. Each verb lives in its own module with ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them together."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from alignts import __version__
from alignts.errors import AlignTSError, NotBuiltError

# verb -> (module under alignts.cli, one-line help)
VERBS = {
    "fit": ("fit", "fit a forecaster of one paradigm and export it as a bundle"),
    "forecast": ("forecast", "forecast a series with a bundle (CSV out, optional plot)"),
    "eval": ("evaluate", "score a bundle on the test split beside the baselines"),
    "bench": ("bench", "benchmark kernels or bundles (latency, memory, accuracy)"),
    "inspect": ("inspect", "describe a bundle: files, variants, sizes, memory plan"),
    "quantize": ("quantize", "add quantized variants to a bundle"),
    "demo": ("demo", "the whole main job on the embedded defaults"),
    "data": ("data", "look at a data source (describe)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignts",
        description="Time-series LLMs on a device: Injective, Bridging and Internal alignment.",
    )
    parser.add_argument("--version", action="version", version=f"alignts {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module, help_) in VERBS.items():
        p = sub.add_parser(verb, help=help_, description=help_)
        mod = importlib.import_module(f"alignts.cli.{module}")
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except NotBuiltError as e:
        print(f"alignts {args.verb}: not built yet: {e}", file=sys.stderr)
        return 3
    except AlignTSError as e:
        print(f"alignts {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
