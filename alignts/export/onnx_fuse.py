"""Graph rewrites of exported ONNX models that onnxruntime's own fusions miss.

torch's exact GELU reaches ONNX (dynamo exporter, opset 18) as five element-wise nodes over the FFN's widest
activation, ``Mul(x, Mul(0.5, Add(Erf(Div(x, sqrt 2)), 1)))``, an association onnxruntime's GeluFusion does not
match; five passes over a 154 x 1536 MiniLM activation then cost ~0.4 ms a layer on one Intel Xeon core where
onnxruntime's one ``com.microsoft`` Gelu node (the same exact, erf-based GELU) costs ~0.2-0.27 (an int8 Internal
forecast 1.11-1.24x faster, a fp32 one 1.02-1.05x; results/speed_llama.md section 19). :func:`fuse_erf_gelu`
replaces each match with that node; the exports are validated against torch after it, as before.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

CONTRIB = "com.microsoft"  # onnxruntime's contrib operator domain (Gelu: version 1)


def _scalar(t) -> float | None:
    """The value of a one-element float ``TensorProto``, else None (larger tensors, the weights, are not converted)."""
    from onnx import numpy_helper

    if math.prod(t.dims) != 1:
        return None
    a = numpy_helper.to_array(t)
    return float(a.reshape(())) if a.dtype.kind == "f" else None


def _scalars(graph) -> dict[str, float]:
    """{name: value} of the graph's one-element float constants (initializers and Constant nodes)."""
    out = {t.name: v for t in graph.initializer if (v := _scalar(t)) is not None}
    for n in graph.node:
        if n.op_type == "Constant" and len(n.attribute) == 1:
            at = n.attribute[0]
            v = float(at.f) if at.name == "value_float" else _scalar(at.t) if at.name == "value" else None
            if v is not None:
                out[n.output[0]] = v
    return out


def fuse_erf_gelu(model) -> int:
    """Replace, in ``model`` (an ``onnx.ModelProto``, changed in place), each exact GELU written out as
    ``x / sqrt(2)`` (or ``x * (1 / sqrt(2))``) -> Erf -> ``+ 1`` -> times 0.5 and times x (either association) with
    one ``com.microsoft`` Gelu node; returns how many. Intermediate values read elsewhere, or graph outputs, are
    left alone, and so are constants that are not those of the formula (a tanh GELU, another scale)."""
    from onnx import AttributeProto, helper

    g = model.graph
    consts = _scalars(g)
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}

    def is_const(name: str, value: float) -> bool:
        return name in consts and math.isclose(consts[name], value, rel_tol=1e-5)

    def only_reader(node, op: str):
        """The one node reading ``node``'s output, when it is an ``op`` and the output is not a graph output."""
        out = node.output[0]
        r = readers.get(out, [])
        return r[0] if len(r) == 1 and r[0].op_type == op and out not in outputs else None

    def other(node, name: str) -> str | None:
        """``node``'s input that is not ``name`` (a binary op), or None when both are."""
        rest = [i for i in node.input if i != name]
        return rest[0] if len(rest) == 1 else None

    fused: dict[int, object] = {}  # id(last node of a match) -> its Gelu
    dropped: set[int] = set()
    formula: set[str] = set()  # the matches' constants (sqrt 2, 1, 0.5)
    for erf in (n for n in g.node if n.op_type == "Erf"):
        scale = producer.get(erf.input[0])
        if scale is None or only_reader(scale, "Erf") is not erf:
            continue
        if scale.op_type == "Div" and is_const(scale.input[1], math.sqrt(2.0)):
            x = scale.input[0]
        elif scale.op_type == "Mul" and len(scale.input) == 2:
            u, v = scale.input
            x = u if is_const(v, math.sqrt(0.5)) else v if is_const(u, math.sqrt(0.5)) else None
        else:
            x = None
        add = only_reader(erf, "Add")
        if x is None or add is None or not is_const(other(add, erf.output[0]) or "", 1.0):
            continue
        first = only_reader(add, "Mul")
        second = only_reader(first, "Mul") if first is not None else None
        if second is None:
            continue
        a, b = other(first, add.output[0]), other(second, first.output[0])
        if not ((a is not None and is_const(a, 0.5) and b == x) or (a == x and b is not None and is_const(b, 0.5))):
            continue
        fused[id(second)] = helper.make_node("Gelu", [x], [second.output[0]], domain=CONTRIB,
                                             name=(second.name or second.output[0]) + "/gelu")
        dropped |= {id(scale), id(erf), id(add), id(first)}
        formula |= {i for n in (scale, add, first, second) for i in n.input if i in consts}
    if not fused:
        return 0
    kept = [fused.get(id(n), n) for n in g.node if id(n) not in dropped]
    del g.node[:]
    g.node.extend(kept)
    # the formula's constants now read by nothing (kept where a subgraph could still name them from outside)
    if not any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        gone = formula - {i for n in g.node for i in n.input} - outputs
        for t in [t for t in g.initializer if t.name in gone]:
            g.initializer.remove(t)
        for n in [n for n in g.node if n.op_type == "Constant" and n.output[0] in gone]:
            g.node.remove(n)
    if not any(o.domain == CONTRIB for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    return len(fused)


def fuse_file(path: str | os.PathLike) -> int:
    """:func:`fuse_erf_gelu` on the ONNX file at ``path`` (rewritten only when something matched)."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    n = fuse_erf_gelu(model)
    if n:
        onnx.save(model, str(path))
        log.info("%s: %d exact GELU subgraphs as onnxruntime Gelu nodes", path.name, n)
    return n
