"""`alignts data`: not built yet (see the project's open issues)."""

from alignts.errors import NotBuiltError


def add_arguments(p):
    p.add_argument("rest", nargs="*", help="(not built yet)")


def run(args):
    raise NotBuiltError("`alignts data` is not part of this version yet.")
