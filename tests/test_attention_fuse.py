"""The attention rewrite of exported ONNX graphs (alignts.export.onnx_fuse.fuse_attention): the forms it fuses into
one MultiHeadAttention node, the near misses it leaves alone, and exported backbones that still match torch."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from alignts.export.onnx_fuse import CONTRIB, fuse_attention  # noqa: E402
from alignts.runtime.backends.onnx import IR_VERSION  # noqa: E402

D, N, H = 16, 4, 4  # width, heads, head size


def _attention_graph(form: str):
    """y = attention(x) @ wo, written as the dynamo exporter writes a BERT layer's (``form``), or near misses."""
    rng = np.random.default_rng(0)
    arr = {f"w{c}": rng.standard_normal((D, D)).astype(np.float32) / 4 for c in "qkvo"}
    arr |= {"heads": np.array([-1, N, H], np.int64), "width": np.array([D], np.int64),
            "sqrt_h": np.array(H ** 0.5, np.float32), "inv_sqrt_h": np.array(H ** -0.5, np.float32),
            "one": np.array(1.0, np.float32), "min": np.array(np.finfo(np.float32).min, np.float32),
            "zero": np.array(0.0, np.float32),
            "axes": np.array([1, 2], np.int64)}
    nodes = [helper.make_node("Shape", ["x"], ["b"], start=0, end=1),
             helper.make_node("Shape", ["x"], ["bs"], start=0, end=2),
             helper.make_node("Concat", ["b", "heads"], ["shape4"], axis=0),
             helper.make_node("Concat", ["bs", "width"], ["shape3"], axis=0)]
    for c in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{c}"], [c]),
                  helper.make_node("Reshape", [c, "shape4"], [f"{c}4"])]
    k_perm = [0, 2, 1, 3] if form == "k_not_transposed" else [0, 2, 3, 1]
    nodes += [helper.make_node("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", ["k4"], ["kt"], perm=k_perm),
              helper.make_node("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
              helper.make_node("MatMul", ["qt", "kt"], ["scores"])]
    if form == "mul_no_mask":
        nodes.append(helper.make_node("Mul", ["scores", "inv_sqrt_h"], ["logits"]))
    elif form == "scale_from_input":
        nodes += [helper.make_node("ReduceMax", ["x"], ["xmax"], keepdims=0),
                  helper.make_node("Div", ["scores", "xmax"], ["scaled"]),
                  helper.make_node("Add", ["scaled", "mask"], ["logits"])]
    else:
        nodes.append(helper.make_node("Div", ["scores", "zero" if form == "div_by_zero" else "sqrt_h"], ["scaled"]))
        pair = ["mask", "scaled"] if form == "mask_first" else ["scaled", "mask"]
        nodes.append(helper.make_node("Add", pair, ["logits"]))
    if form == "causal_mask":  # a real mask: a lower triangle of zeros, finfo.min above it
        arr["mask"] = np.triu(np.full((5, 5), np.finfo(np.float32).min, np.float32), 1)
    else:  # HF BERT without padding: (1 - ones[b, 1, 1, s]) * finfo.min, 0 everywhere
        nodes += [helper.make_node("Expand", ["one", "bs"], ["ones"]),
                  helper.make_node("Unsqueeze", ["ones", "axes"], ["ones4"]),
                  helper.make_node("Sub", ["one", "ones4"], ["inverted"]),
                  helper.make_node("Mul", ["inverted", "min"], ["mask"])]
    nodes += [helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", "vt"], ["context"]),
              helper.make_node("Transpose", ["context"], ["merged"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["merged", "shape3"], ["attended"]),
              helper.make_node("MatMul", ["attended", "wo"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", D])]
    if form == "probs_output":  # the attention weights read outside
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["B", N, "S", "S"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", D])],
                          outputs, [numpy_helper.from_array(v, k) for k, v in arr.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION)


def _run(model, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the nodes as written
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


def _reference(model, x):
    """The same attention in numpy, from the graph's weights."""
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.startswith("w")}
    q, k, v = ((x @ w[f"w{c}"]).reshape(*x.shape[:2], N, H).transpose(0, 2, 1, 3) for c in "qkv")
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(H)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(x.shape) @ w["wo"]


@pytest.mark.parametrize("form", ["div_zero_mask", "mask_first", "mul_no_mask"])
def test_attention_forms_become_one_node(form):
    model = _attention_graph(form)
    x = np.random.default_rng(1).standard_normal((3, 5, D)).astype(np.float32)
    before = _run(model, x)
    assert fuse_attention(model) == 1
    onnx.checker.check_model(model)
    ops = [(n.domain, n.op_type) for n in model.graph.node]
    assert (CONTRIB, "MultiHeadAttention") in ops
    assert not {"Softmax", "Transpose", "Sub", "Unsqueeze"} & {op for _, op in ops}  # the zero mask's nodes went
    assert next(n for n in model.graph.node if n.op_type == "MultiHeadAttention").attribute[0].i == N
    for shape in ((3, 5, D), (1, 9, D)):
        x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        after = _run(model, x)
        np.testing.assert_allclose(after, _reference(model, x), rtol=0, atol=1e-5)
    np.testing.assert_allclose(_run(model, np.random.default_rng(1).standard_normal((3, 5, D)).astype(np.float32)),
                               before, rtol=0, atol=1e-5)


@pytest.mark.parametrize("form", ["causal_mask", "probs_output", "k_not_transposed", "scale_from_input",
                                  "div_by_zero"])
def test_attention_near_misses_are_left_alone(form):
    model = _attention_graph(form)
    nodes = [n.op_type for n in model.graph.node]
    assert fuse_attention(model) == 0
    assert [n.op_type for n in model.graph.node] == nodes


@pytest.mark.parametrize("preset,fused", [("tiny-bert", 2), ("tiny-gpt2", 0)])
def test_exported_backbone_fuses_where_it_may_and_still_matches_torch(tmp_path, preset, fused):
    """BERT's layers (a mask of zeros) become MultiHeadAttention nodes; GPT-2's causal mask keeps its layers."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from alignts.export.backbones import load_backbone
    from alignts.export.onnx_export import export_onnx, validate_onnx

    bb = load_backbone(preset)

    class Body(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = bb.model

        def forward(self, embeds):
            return bb.forward_embeds(embeds, model=self.lm)

    body = Body().eval()
    d = bb.d_model
    path = export_onnx(body, (torch.randn(2, 6, d),), tmp_path / "body.onnx", ["embeds"], ["hidden"],
                       {"embeds": {0: "batch", 1: "tokens"}})
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("MultiHeadAttention") == fused
    if fused:
        assert "Softmax" not in ops
    shapes = [(2, 6), (5, 11), (1, 3)]
    diff = validate_onnx(body, path, lambda t: (torch.randn(*shapes[t], d),), n_trials=3, tol=1e-4)
    assert diff < 1e-4
