"""`alignts fit {injective,bridging,internal}`: each paradigm's options live in its own module."""

from __future__ import annotations

import importlib

PARADIGMS = {
    "internal": ("fit_internal", "LoRA-tune the LM itself (GPT4TS / LLM4TS)"),
    "bridging": ("fit_bridging", "train an adapter into a frozen LM (Time-LLM)"),
    "injective": ("fit_injective", "digits into a frozen causal LM (LLMTime); optional LoRA"),
}


def add_arguments(p):
    sub = p.add_subparsers(dest="paradigm", metavar="PARADIGM", required=True)
    for name, (module, help_) in PARADIGMS.items():
        q = sub.add_parser(name, help=help_, description=help_)
        mod = importlib.import_module(f"alignts.cli.{module}")
        mod.add_arguments(q)
        q.set_defaults(func=mod.run)


def run(args):  # replaced by the paradigm's run through set_defaults
    raise AssertionError("unreachable: argparse dispatches to the paradigm module")
