"""One output switch for the verbs that print tables: ``--format csv|json|jsonl`` (llama-bench's ``-o``).

A table is a pandas DataFrame or a list of flat-ish dicts (one per row). ``json`` prints one array of row
objects, ``jsonl`` one object per line, ``csv`` a header and one line per row (nested dicts become dotted
columns, lists JSON text). Without ``--format`` a verb prints its human-readable text as before."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Mapping

FORMATS = ("csv", "json", "jsonl")


def add_format_argument(p, default: str | None = None, what: str = "the table") -> None:
    p.add_argument("--format", choices=FORMATS, default=default,
                   help=f"write {what} as csv, json (one array) or jsonl (one object a line)"
                        + (f" (default {default})" if default else " instead of the text report"))


def write_table(rows: Any, fmt: str, path: str | None = None) -> None:
    """Write ``rows`` (DataFrame, list of dicts, or one dict = one row) as ``fmt`` to ``path`` (default stdout)."""
    records = _records(rows)
    if fmt == "csv":
        import pandas as pd

        text = pd.DataFrame([_flat(r) for r in records]).to_csv(index=False)
    elif fmt == "json":
        text = json.dumps([_plain(r) for r in records], indent=2) + "\n"
    elif fmt == "jsonl":
        text = "".join(json.dumps(_plain(r)) + "\n" for r in records)
    else:
        raise ValueError(f"format {fmt!r}: expected one of {FORMATS}")
    if path is None:
        sys.stdout.write(text)
    else:
        with open(path, "w", newline="") as fh:
            fh.write(text)


def _records(rows: Any) -> list[Mapping[str, Any]]:
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        return rows.to_dict("records")
    if isinstance(rows, Mapping):
        return [rows]
    return list(rows)


def _flat(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (list, tuple)):
            out[f"{prefix}{k}"] = json.dumps(_plain(v))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _plain(v: Any) -> Any:
    """JSON-ready: numpy scalars -> Python, timestamps -> ISO text, NaN/inf -> null (JSON has no NaN)."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)) or type(v).__name__ == "ndarray":
        return [_plain(x) for x in v]
    if type(v).__name__ == "datetime64":  # .item() of a datetime64[ns] is an int
        import pandas as pd

        v = pd.Timestamp(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalar
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return str(v)


def parse_levels(text: str | None) -> tuple[float, ...] | None:
    """``--quantiles 0.1,0.5,0.9`` -> levels; ``none`` or empty -> None."""
    from alignts.errors import InputError

    if text is None or text.strip().lower() in ("", "none"):
        return None
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise InputError(f"--quantiles {text!r}: expected comma-separated levels in (0, 1), e.g. 0.1,0.5,0.9, "
                         "or none.") from None
