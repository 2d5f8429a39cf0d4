"""The KServe v2 / Open Inference Protocol over HTTP: infer requests in, responses out (numpy only).

A request is JSON (``{"id", "parameters", "inputs": [{"name", "shape", "datatype", "data"}], "outputs"}``) or,
with the binary tensor data extension that ``tritonclient.http`` uses by default, a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw little-endian tensors of the inputs whose
``parameters.binary_data_size`` is set. Outputs are sent the same way: JSON ``data`` lists, or raw bytes after
the JSON header for outputs requested with ``parameters.binary_data: true``.

The forecaster's tensors: input ``x`` ``[B, C, T]`` (or ``[B, T]`` for a one-channel model), FP32 or FP64 (NaN
allowed: filled by the runtime's rule); outputs ``forecast`` (the mean) and ``median`` ``[B, C, H]`` and, where
the model has them, ``quantiles`` ``[B, C, H, Q]`` at the levels in the response's ``parameters``, all FP64.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from alignts.errors import InputError, ShapeError

HEADER_LENGTH = "inference-header-content-length"
INPUT_NAME = "x"
OUTPUTS = ("forecast", "median", "quantiles")
DTYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
MAX_RANK = 3
MAX_JSON_DEPTH = 64


@dataclass
class InferRequest:
    """A parsed infer request: ``x [B, C, T]`` float64, the outputs asked for, the quantile levels (None = the
    model's default), the request id and which outputs go back as binary."""

    x: np.ndarray
    outputs: tuple[str, ...]
    quantiles: tuple[float, ...] | None
    id: str | None = None
    binary: set[str] = field(default_factory=set)


def _fail(msg: str) -> InputError:
    return InputError(msg)


def _json_header(body: bytes, header_length: str | None) -> tuple[Mapping[str, Any], bytes]:
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise _fail(f"Inference-Header-Content-Length {header_length!r}: expected the byte length of the JSON "
                        "header.") from None
        if not 0 <= n <= len(body):
            raise _fail(f"Inference-Header-Content-Length {n}: expected 0..{len(body)} (the body's length).")
        head, rest = body[:n], body[n:]
    else:
        head, rest = body, b""
    try:
        d = json.loads(head.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise _fail(f"the request body is not valid JSON ({type(e).__name__}: {str(e)[:160]}); expected a v2 "
                    'infer request, e.g. {"inputs": [{"name": "x", "shape": [1, 1, 96], "datatype": "FP32", '
                    '"data": [...]}]}.') from None
    if not isinstance(d, Mapping):
        raise _fail(f"the request body is JSON {type(d).__name__}; expected an object with an \"inputs\" list.")
    return d, rest


def parse_infer(body: bytes, header_length: str | None, n_channels: int | None,
                max_elements: int) -> InferRequest:
    """Parse a v2 infer request for a forecaster with ``n_channels`` channels (None = any).

    Raises InputError / ShapeError with the fix on anything malformed: the caller answers 400.
    """
    d, rest = _json_header(body, header_length)
    inputs = d.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _fail(f'expected "inputs": a list with one tensor named {INPUT_NAME!r}; got {_show(inputs)}.')
    if len(inputs) != 1 or not isinstance(inputs[0], Mapping):
        names = [i.get("name") if isinstance(i, Mapping) else i for i in inputs]
        raise _fail(f"expected exactly one input tensor named {INPUT_NAME!r} ([B, C, T] history); got {names}.")
    t = inputs[0]
    if t.get("name") != INPUT_NAME:
        raise _fail(f"input {t.get('name')!r}: expected the name {INPUT_NAME!r} (the history [B, C, T]).")
    dt = t.get("datatype")
    if dt not in DTYPES:
        raise _fail(f"input {INPUT_NAME!r} has datatype {dt!r}; expected FP32 or FP64.")
    shape = t.get("shape")
    if (not isinstance(shape, list) or not 2 <= len(shape) <= MAX_RANK
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)):
        raise ShapeError(f"input {INPUT_NAME!r} has shape {_show(shape)}; expected [B, C, T] or [B, T] with every "
                         "dimension >= 1.")
    n = math.prod(shape)
    if n > max_elements:
        raise _fail(f"input {INPUT_NAME!r} has {n} values; this server takes at most {max_elements} per request. "
                    "Fix: split the batch into several requests.")
    params = t.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise _fail(f"input parameters: expected an object; got {_show(params)}.")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        want = n * DTYPES[dt].itemsize
        if size != want or len(rest) != want:
            raise _fail(f"input {INPUT_NAME!r}: binary_data_size {size!r} and {len(rest)} bytes after the JSON "
                        f"header; expected {want} bytes ({n} {dt} values for shape {shape}).")
        x = np.frombuffer(rest, dtype=DTYPES[dt]).reshape(shape)
    else:
        if rest:
            raise _fail(f"{len(rest)} bytes follow the JSON header but no input has binary_data_size.")
        x = _json_data(t.get("data"), shape, dt)
    x = x.astype(np.float64)
    if x.ndim == 2:
        if n_channels not in (None, 1):
            raise ShapeError(f"input {INPUT_NAME!r} has shape {shape} ([B, T]), which is for one-channel models; "
                             f"this model takes {n_channels} channels. Fix: send [B, {n_channels}, T].")
        x = x[:, None, :]
    elif n_channels is not None and x.shape[1] != n_channels:
        raise ShapeError(f"input {INPUT_NAME!r} has {x.shape[1]} channels (shape {shape}); this model was fitted on "
                         f"{n_channels}. Fix: send [B, {n_channels}, T], channels in the order of fit time.")
    outputs, binary = _requested(d.get("outputs"))
    return InferRequest(x=x, outputs=outputs, quantiles=_levels((d.get("parameters") or {}).get("quantiles")),
                        id=_request_id(d.get("id")), binary=binary | ({"*"} if _binary_default(d) else set()))


def _binary_default(d: Mapping[str, Any]) -> bool:
    p = d.get("parameters")
    return isinstance(p, Mapping) and p.get("binary_data_output") is True


def _request_id(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > 256:
        raise _fail(f'"id" {_show(v)}: expected a string of at most 256 characters.')
    return v


def _json_data(data: Any, shape: Sequence[int], dt: str) -> np.ndarray:
    n = math.prod(shape)
    if not isinstance(data, list):
        raise _fail(f'input {INPUT_NAME!r} has no "data" list; expected {n} numbers (flat, row-major, or nested '
                    "as the shape).")
    if len(data) == n and all(type(v) is float or type(v) is int for v in data):  # the common case: flat numbers
        return np.asarray(data, dtype=DTYPES[dt]).reshape(shape)
    flat = _flatten(data, n)
    if len(flat) != n:
        raise ShapeError(f"input {INPUT_NAME!r}: {len(flat)} values for shape {list(shape)}; expected {n}. "
                         "Fix: send as many values as the shape holds.")
    bad = [v for v in flat if not isinstance(v, (int, float)) or isinstance(v, bool)]
    if bad:
        raise _fail(f"input {INPUT_NAME!r}: {_show(bad[0])} is not a number; expected {dt} values (NaN as the "
                    "JSON literal NaN, or in the binary tensor data).")
    return np.asarray(flat, dtype=DTYPES[dt]).reshape(shape)


def _flatten(data: list, limit: int) -> list:
    out: list = []
    stack = [(iter(data), 0)]
    while stack:
        it, depth = stack[-1]
        v = next(it, _END)
        if v is _END:
            stack.pop()
        elif isinstance(v, list):
            if depth + 1 > MAX_JSON_DEPTH:
                raise _fail(f"input {INPUT_NAME!r}: data nested deeper than {MAX_JSON_DEPTH}; expected a flat list.")
            stack.append((iter(v), depth + 1))
        else:
            out.append(v)
            if len(out) > limit:
                break
    return out


_END = object()


def _requested(outs: Any) -> tuple[tuple[str, ...], set[str]]:
    if outs is None:
        return OUTPUTS, set()
    if not isinstance(outs, list) or not all(isinstance(o, Mapping) for o in outs):
        raise _fail(f'"outputs": expected a list of {{"name": ...}} objects; got {_show(outs)}.')
    names, binary = [], set()
    for o in outs:
        name = o.get("name")
        if name not in OUTPUTS:
            raise _fail(f"output {name!r}: expected one of {list(OUTPUTS)}.")
        names.append(name)
        if (o.get("parameters") or {}).get("binary_data") is True:
            binary.add(name)
    return tuple(dict.fromkeys(names)), binary


def _levels(v: Any) -> tuple[float, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):  # Triton request parameters are scalars: "0.1,0.5,0.9"
        try:
            v = [float(t) for t in v.split(",") if t.strip()]
        except ValueError:
            raise _fail(f'parameters.quantiles {v!r}: expected levels in (0, 1), e.g. [0.1, 0.5, 0.9] or '
                        '"0.1,0.5,0.9".') from None
    if not isinstance(v, list) or not all(isinstance(q, (int, float)) and not isinstance(q, bool) for q in v):
        raise _fail(f"parameters.quantiles {_show(v)}: expected a list of levels in (0, 1), e.g. [0.1, 0.5, 0.9], "
                    "or [] for none.")
    return tuple(float(q) for q in v)


def encode_infer(model: str, version: str, req: InferRequest, tensors: Mapping[str, np.ndarray],
                 parameters: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The v2 response body and its extra headers: ``tensors`` (name -> array) in the requested order, as JSON
    ``data`` or, for outputs asked as binary, raw FP64 bytes after the JSON header."""
    outs, blobs = [], []
    for name in req.outputs:
        if name not in tensors:
            continue
        a = np.ascontiguousarray(tensors[name], dtype="<f8")
        o: dict[str, Any] = {"name": name, "datatype": "FP64", "shape": list(a.shape)}
        if name in req.binary or "*" in req.binary:
            blob = a.tobytes()
            o["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            o["data"] = a.reshape(-1).tolist()
        outs.append(o)
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outs,
                            "parameters": dict(parameters)}
    if req.id is not None:
        body["id"] = req.id
    head = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def _show(v: Any, width: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= width else s[:width] + "..."
