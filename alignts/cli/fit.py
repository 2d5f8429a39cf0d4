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


def add_protocol_arguments(p, identity_help: str) -> None:
    """The options Internal and Bridging share: the few-shot protocol, the LM-removed twin, the training device."""
    p.add_argument("--train-percent", type=int, default=100, metavar="P",
                   help="few-shot protocol: train on the first P%% of the training windows (GPT4TS / Time-LLM / "
                        "LLM4TS borders; the scaler still sees the whole train split; default 100)")
    p.add_argument("--ablate-lm", default="none", choices=("none", "identity"), help=identity_help)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="where training runs (default cpu; auto = cuda when torch sees a GPU)")


def run(args):  # replaced by the paradigm's run through set_defaults
    raise AssertionError("unreachable: argparse dispatches to the paradigm module")
