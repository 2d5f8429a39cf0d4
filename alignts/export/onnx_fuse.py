"""Graph rewrites of exported ONNX models that onnxruntime's own fusions miss.

- Exact GELU. torch's exact GELU reaches ONNX (dynamo exporter, opset 18) as five element-wise nodes over the FFN's
  widest activation, ``Mul(x, Mul(0.5, Add(Erf(Div(x, sqrt 2)), 1)))``, an association onnxruntime's GeluFusion
  does not match; five passes over a 154 x 1536 MiniLM activation then cost ~0.4 ms a layer on one Intel Xeon core
  where onnxruntime's one ``com.microsoft`` Gelu node (the same exact, erf-based GELU) costs ~0.2-0.27 (an int8
  Internal forecast 1.11-1.24x faster, a fp32 one 1.02-1.05x; results/speed_llama.md section 19).
  :func:`fuse_erf_gelu` replaces each match with that node.
- Attention. A BERT layer's self-attention reaches ONNX as 13 nodes: the heads split out of Q, K and V (Reshape,
  Transpose), ``softmax(Q K^T / sqrt(d) + mask) V``, the heads merged back (Transpose, Reshape). Its Transposes
  copy on one thread, and onnxruntime's own attention fusion matches neither the fp32 nor the dynamic int8 export
  of it. :func:`fuse_attention` replaces each match whose mask is provably zero
  (an encoder run without padding, as every series here is) with one ``com.microsoft`` MultiHeadAttention node
  (results/speed_llama.md section 22).

The exports are validated against torch after these rewrites, as before.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

CONTRIB = "com.microsoft"  # onnxruntime's contrib operator domain (Gelu: version 1)


def _attribute(node, name: str, default=None):
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _small_arrays(graph) -> dict:
    """{name: array} of the graph's constants of at most 64 elements: initializers and Constant nodes (a tensor, or a
    float / int / floats / ints attribute); the weights are not converted."""
    import numpy as np
    from onnx import helper, numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer if math.prod(t.dims) <= 64}
    kinds = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    for n in graph.node:
        if n.op_type != "Constant" or len(n.attribute) != 1:
            continue
        at = n.attribute[0]
        if at.name == "value" and math.prod(at.t.dims) <= 64:
            out[n.output[0]] = numpy_helper.to_array(at.t)
        elif at.name in kinds:
            out[n.output[0]] = np.asarray(helper.get_attribute_value(at), kinds[at.name])
    return out


def _scalars(graph) -> dict[str, float]:
    """{name: value} of the graph's one-element float constants."""
    return {k: float(a.reshape(())) for k, a in _small_arrays(graph).items() if a.size == 1 and a.dtype.kind == "f"}


def _one_value(a) -> float | None:
    """The value of a numeric array all of whose elements are equal, else None."""
    import numpy as np

    return float(a.flat[0]) if a.size and a.dtype.kind in "fiu" and np.all(a == a.flat[0]) else None


def _has_subgraphs(graph) -> bool:
    """Whether a node of ``graph`` holds a subgraph (If, Loop, Scan), which can read the graph's values by name."""
    from onnx import AttributeProto

    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in graph.node for a in n.attribute)


class _Wiring:
    """Which node makes each value of a graph, which nodes read it, and the graph's outputs."""

    def __init__(self, graph):
        self.producer = {o: n for n in graph.node for o in n.output}
        self.readers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}

    def sole(self, name: str, op: str | None = None):
        """The one node reading ``name`` (an ``op`` when given), when ``name`` is not a graph output, else None."""
        r = self.readers.get(name, [])
        return r[0] if len(r) == 1 and name not in self.outputs and (op is None or r[0].op_type == op) else None


def fuse_erf_gelu(model) -> int:
    """Replace, in ``model`` (an ``onnx.ModelProto``, changed in place), each exact GELU written out as
    ``x / sqrt(2)`` (or ``x * (1 / sqrt(2))``) -> Erf -> ``+ 1`` -> times 0.5 and times x (either association) with
    one ``com.microsoft`` Gelu node; returns how many. Intermediate values read elsewhere, or graph outputs, are
    left alone, and so are constants that are not those of the formula (a tanh GELU, another scale)."""
    from onnx import helper

    g = model.graph
    consts = _scalars(g)
    w = _Wiring(g)

    def is_const(name: str, value: float) -> bool:
        return name in consts and math.isclose(consts[name], value, rel_tol=1e-5)

    def other(node, name: str) -> str | None:
        """``node``'s input that is not ``name`` (a binary op), or None when both are."""
        rest = [i for i in node.input if i != name]
        return rest[0] if len(rest) == 1 else None

    fused: dict[int, object] = {}  # id(last node of a match) -> its Gelu
    dropped: set[int] = set()
    formula: set[str] = set()  # the matches' constants (sqrt 2, 1, 0.5)
    for erf in (n for n in g.node if n.op_type == "Erf"):
        scale = w.producer.get(erf.input[0])
        if scale is None or w.sole(scale.output[0], "Erf") is not erf:
            continue
        if scale.op_type == "Div" and is_const(scale.input[1], math.sqrt(2.0)):
            x = scale.input[0]
        elif scale.op_type == "Mul" and len(scale.input) == 2:
            u, v = scale.input
            x = u if is_const(v, math.sqrt(0.5)) else v if is_const(u, math.sqrt(0.5)) else None
        else:
            x = None
        add = w.sole(erf.output[0], "Add")
        if x is None or add is None or not is_const(other(add, erf.output[0]) or "", 1.0):
            continue
        first = w.sole(add.output[0], "Mul")
        second = w.sole(first.output[0], "Mul") if first is not None else None
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
    _drop_unread(g, formula)
    if not any(o.domain == CONTRIB for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    return len(fused)


_SAME_ELEMENTS = ("Expand", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Tile")
_ARITHMETIC = {"Add": "add", "Sub": "subtract", "Mul": "multiply", "Div": "divide"}


def _uniform(name: str, producer: dict, arrays: dict, depth: int = 0) -> float | None:
    """The one value every element of ``name`` provably has, else None: a constant all of one value, a
    ConstantOfShape, and what reshaping, expanding, casting and + - * / make of such tensors (HF BERT's additive
    mask without padding, ``(1 - ones) * finfo.min``, is 0 everywhere whatever the input's shape)."""
    import numpy as np

    if name in arrays:
        return _one_value(arrays[name])
    n = producer.get(name)
    if n is None or depth > 32:
        return None
    if n.op_type == "ConstantOfShape":
        from onnx import numpy_helper

        t = _attribute(n, "value")
        return 0.0 if t is None else _one_value(numpy_helper.to_array(t))
    if n.op_type in _SAME_ELEMENTS:
        return _uniform(n.input[0], producer, arrays, depth + 1)
    if n.op_type == "Cast":
        from onnx import TensorProto

        v = _uniform(n.input[0], producer, arrays, depth + 1)
        to = _attribute(n, "to")
        if v is None or to == TensorProto.BOOL:
            return None
        floats = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)
        return v if to in floats or (math.isfinite(v) and v == int(v)) else None
    if n.op_type in _ARITHMETIC and len(n.input) == 2:
        a, b = (_uniform(i, producer, arrays, depth + 1) for i in n.input)
        if a is None or b is None:
            return None
        with np.errstate(all="ignore"):
            return float(getattr(np, _ARITHMETIC[n.op_type])(np.float32(a), np.float32(b)))
    return None


def _shape_vector(name: str, producer: dict, arrays: dict) -> list[int | None] | None:
    """A Reshape target's entries (None where only known at run time, read from a Shape), or None when its
    length is not known: a constant, or a Concat of constants and ``Shape(start, end)`` slices."""
    if name in arrays:
        a = arrays[name]
        return [int(v) for v in a.reshape(-1)] if a.dtype.kind in "iu" and a.ndim <= 1 else None
    n = producer.get(name)
    if n is None:
        return None
    if n.op_type == "Concat" and _attribute(n, "axis") == 0:
        parts = [_shape_vector(i, producer, arrays) for i in n.input]
        return None if any(p is None for p in parts) else [v for p in parts for v in p]
    if n.op_type == "Shape":
        start, end = _attribute(n, "start", 0), _attribute(n, "end")
        return [None] * (end - start) if end is not None and 0 <= start <= end else None
    return None


def fuse_attention(model) -> int:
    """Replace, in ``model`` (an ``onnx.ModelProto``, changed in place), each multi-head self- or cross-attention
    written out as exporters write BERT's, returning how many::

        q4 = Reshape(q, [b, s, N, H]); k4, v4 the same (N, H constants)
        p  = Softmax(MatMul(Transpose(q4, 0213), Transpose(k4, 0231)) / c  [+ mask])   (or * s, s = 1/c)
        y  = Reshape(Transpose(MatMul(p, Transpose(v4, 0213)), 0213), [b, s, N*H])

    with one ``com.microsoft`` MultiHeadAttention (num_heads N, scale 1/c) on q4, k4 and v4 flattened to
    ``[b, s, N*H]``. A mask is fused away only where every element of it is provably 0 (:func:`_uniform`); any
    other mask, an intermediate value read elsewhere or a graph output, other permutations or a non-constant
    scale leave the subgraph as it is. Nodes left unread (the zero mask's) are dropped."""
    from onnx import helper, numpy_helper
    import numpy as np

    g = model.graph
    if _has_subgraphs(g):
        return 0  # names read inside subgraphs are not visible here
    arrays = _small_arrays(g)
    w = _Wiring(g)
    producer, sole = w.producer, w.sole
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)

    def made_by(name: str, op: str, perm: list[int] | None = None):
        n = producer.get(name)
        if n is None or n.op_type != op or (perm is not None and list(_attribute(n, "perm", [])) != perm):
            return None
        return n

    def heads(reshape) -> tuple[int, int] | None:
        """(N, H) of a Reshape to ``[b, s, N, H]`` whose N and H are constants, else None."""
        v = _shape_vector(reshape.input[1], producer, arrays) if len(reshape.input) == 2 else None
        if v is None or len(v) != 4 or not all(isinstance(d, int) and d > 0 for d in v[2:]):
            return None
        return v[2], v[3]

    flatten = "alignts_attention_flatten"
    matches = {}  # id(final Reshape) -> new nodes before it
    dropped: set[int] = set()
    for sm in (n for n in g.node if n.op_type == "Softmax"):
        if _attribute(sm, "axis", -1 if opset >= 13 else 1) not in (-1, 3):
            continue
        before, mask = producer.get(sm.input[0]), None
        if before is not None and before.op_type == "Add" and sole(before.output[0]) is sm:
            zero = [i for i in before.input if _uniform(i, producer, arrays) == 0.0]
            if not zero:
                continue
            mask = before
            before = producer.get(next((i for i in before.input if i != zero[0]), zero[0]))
        scale_node = before
        if scale_node is None or sole(scale_node.output[0]) is not (sm if mask is None else mask):
            continue
        if scale_node.op_type == "Div" and scale_node.input[1] in arrays and arrays[scale_node.input[1]].size == 1:
            c = float(arrays[scale_node.input[1]].reshape(()))
            scores, scale = scale_node.input[0], (1.0 / c if c else math.inf)
        elif scale_node.op_type == "Mul" and any(i in arrays and arrays[i].size == 1 for i in scale_node.input):
            c = next(i for i in scale_node.input if i in arrays and arrays[i].size == 1)
            scores, scale = next((i for i in scale_node.input if i != c), c), float(arrays[c].reshape(()))
        else:
            continue
        qk = made_by(scores, "MatMul")
        if qk is None or sole(scores) is not scale_node or not math.isfinite(scale) or scale <= 0:
            continue
        tq, tk = made_by(qk.input[0], "Transpose", [0, 2, 1, 3]), made_by(qk.input[1], "Transpose", [0, 2, 3, 1])
        av = sole(sm.output[0], "MatMul")
        if tq is None or tk is None or av is None or av.input[0] != sm.output[0]:
            continue
        tv = made_by(av.input[1], "Transpose", [0, 2, 1, 3])
        to = sole(av.output[0], "Transpose")
        ro = sole(to.output[0], "Reshape") if to is not None else None
        if tv is None or to is None or list(_attribute(to, "perm", [])) != [0, 2, 1, 3] or ro is None:
            continue
        if sole(tq.output[0]) is not qk or sole(tk.output[0]) is not qk or sole(tv.output[0]) is not av:
            continue
        reshapes = [made_by(t.input[0], "Reshape") for t in (tq, tk, tv)]
        if any(r is None or sole(r.output[0]) is None for r in reshapes):
            continue
        nh = [heads(r) for r in reshapes]
        out = _shape_vector(ro.input[1], producer, arrays)
        if None in nh or len({n for n, _ in nh}) != 1 or out is None or len(out) != 3 or out[2] == 0:
            continue
        name = (ro.name or ro.output[0]) + "/attention"
        flat = [helper.make_node("Reshape", [r.output[0], flatten], [f"{name}/{x}"], name=f"{name}/{x}")
                for r, x in zip(reshapes, "qkv")]
        mha = helper.make_node("MultiHeadAttention", [f.output[0] for f in flat], [f"{name}/out"], name=name,
                               domain=CONTRIB, num_heads=nh[0][0], scale=scale)
        matches[id(ro)] = [*flat, mha]
        ro.input[0] = mha.output[0]
        dropped |= {id(n) for n in (tq, tk, tv, qk, scale_node, sm, av, to, mask) if n is not None}
    if not matches:
        return 0
    kept = []
    for n in g.node:
        if id(n) not in dropped:
            kept += matches.get(id(n), []) + [n]
    del g.node[:]
    g.node.extend(kept)
    g.initializer.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), flatten))
    _drop_unread(g)  # the zero mask's nodes, and whatever else the graph no longer reads
    if not any(o.domain == CONTRIB for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    return len(matches)


def _drop_unread(graph, names: set[str] | None = None) -> None:
    """Remove nodes none of whose outputs is read any more (by a node or as a graph output), and unread initializers:
    any in the graph (``names`` None), or only those making or named in ``names`` (the values a rewrite's replaced
    nodes read) and, in turn, what the removed ones read. Nothing at all where a subgraph could still name a value
    from outside."""
    if _has_subgraphs(graph):
        return
    names = None if names is None else set(names)
    kept = {o.name for o in graph.output} | {i.name for i in graph.input}
    while True:
        read = {i for n in graph.node for i in n.input} | kept
        dead = [n for n in graph.node if not any(o in read for o in n.output)
                and (names is None or any(o in names for o in n.output))]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
            if names is not None:
                names.update(n.input)
    for t in [t for t in graph.initializer if t.name not in read and (names is None or t.name in names)]:
        graph.initializer.remove(t)


def fuse_file(path: str | os.PathLike) -> int:
    """:func:`fuse_erf_gelu` and :func:`fuse_attention` on the ONNX file at ``path`` (rewritten only when something
    matched); returns how many subgraphs were replaced."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    gelu = fuse_erf_gelu(model)
    attention = fuse_attention(model)
    if gelu or attention:
        onnx.save(model, str(path))
        log.info("%s: %d exact GELU and %d attention subgraphs as onnxruntime contrib nodes", path.name, gelu,
                 attention)
    return gelu + attention
