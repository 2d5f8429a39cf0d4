"""The exact-GELU rewrite of exported ONNX graphs (alignts.export.onnx_fuse): what it fuses, what it leaves, and
that a fused export still matches torch."""

from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from alignts.export.onnx_fuse import CONTRIB, fuse_erf_gelu  # noqa: E402
from alignts.runtime.backends.onnx import IR_VERSION  # noqa: E402

D = 16


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _graph(form: str, extra_output: bool = False):
    """y = GELU(x @ w) written out the ways exporters do (``form``), or near misses of it."""
    c = {"sqrt2": math.sqrt(2.0), "rsqrt2": math.sqrt(0.5), "one": 1.0, "half": 0.5, "two": 2.0}
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in c.items()]
    inits.append(numpy_helper.from_array(np.random.default_rng(0).standard_normal((D, D)).astype(np.float32), "w"))
    scale = {"div": helper.make_node("Div", ["h", "sqrt2"], ["s"]),
             "mul": helper.make_node("Mul", ["rsqrt2", "h"], ["s"]),
             "wrong_scale": helper.make_node("Div", ["h", "two"], ["s"])}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             scale["div" if form in ("torch", "half_last", "shared") else form],
             helper.make_node("Erf", ["s"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"])]
    if form == "half_last":  # x * (1 + erf) first, then * 0.5
        nodes += [helper.make_node("Mul", ["h", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    else:  # torch's dynamo export: 0.5 * (1 + erf) first, then * x
        nodes += [helper.make_node("Mul", ["half", "a"], ["m"]), helper.make_node("Mul", ["h", "m"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["S", D])]
    if form == "shared":  # an intermediate value read by a second node
        nodes.append(helper.make_node("Neg", ["a"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["S", D]))
    if extra_output:
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, ["S", D]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["S", D])], outputs,
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION)


def _run(model, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the nodes as written
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


@pytest.mark.parametrize("form", ["torch", "half_last", "mul"])
def test_exact_gelu_forms_become_one_gelu_node(form):
    model = _graph(form)
    x = np.random.default_rng(1).standard_normal((5, D)).astype(np.float32)
    before = _run(model, x)
    assert fuse_erf_gelu(model) == 1
    ops = [(n.domain, n.op_type) for n in model.graph.node]
    assert ops == [("", "MatMul"), (CONTRIB, "Gelu")]
    scale = "rsqrt2" if form == "mul" else "sqrt2"
    left = {t.name for t in model.graph.initializer}
    assert left == {"w", "sqrt2", "rsqrt2", "two"} - {scale}  # the formula's constants went, nothing else did
    onnx.checker.check_model(model)
    after = _run(model, x)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5)
    w = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "w")
    np.testing.assert_allclose(after, _gelu(x @ w), atol=1e-4)


@pytest.mark.parametrize("form,extra_output", [("wrong_scale", False), ("shared", False), ("torch", True)])
def test_near_misses_are_left_alone(form, extra_output):
    model = _graph(form, extra_output)
    nodes = [n.op_type for n in model.graph.node]
    assert fuse_erf_gelu(model) == 0
    assert [n.op_type for n in model.graph.node] == nodes


def test_export_fuses_and_still_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from alignts.export.onnx_export import export_onnx, validate_onnx

    torch.manual_seed(0)
    ffn = torch.nn.Sequential(torch.nn.Linear(D, 4 * D), torch.nn.GELU(), torch.nn.Linear(4 * D, D),
                              torch.nn.GELU())
    path = export_onnx(ffn, (torch.randn(3, D),), tmp_path / "ffn.onnx", ["x"], ["y"], {"x": {0: "S"}})
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Gelu") == 2 and "Erf" not in ops
    diff = validate_onnx(ffn, path, lambda t: (torch.randn(2 + 5 * t, D),), n_trials=3, tol=1e-5)
    assert diff < 1e-5


def test_int8_quantizes_a_transposed_gemm_whose_weight_has_a_value_info(tmp_path):
    """torch.onnx writes a value_info for every initializer; onnxruntime <= 1.31's dynamic quantizer transposes a
    transB=1 Gemm's weight in place and its shape inference then fails on the stale entry (onnxruntime-gpu 1.31.1,
    the newest GPU wheel, on the lent H200). quantize_int8 drops those entries first."""
    from alignts.export.onnx_export import quantize_int8

    w = np.random.default_rng(0).standard_normal((2 * D, D)).astype(np.float32)  # [out, in]: transB=1
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["S", D])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["S", 2 * D])],
                          [numpy_helper.from_array(w, "w")],
                          value_info=[helper.make_tensor_value_info("w", TensorProto.FLOAT, [2 * D, D])])
    src = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION), str(src))
    dst = quantize_int8(src, tmp_path / "gemm.int8.onnx", keep_input_layers_fp32=False)
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    assert "Gemm" not in ops and any("Integer" in op or "Quant" in op for op in ops), ops
    x = np.random.default_rng(1).standard_normal((5, D)).astype(np.float32)
    got = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ref = x @ w.T
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    assert [v.name for v in onnx.load(str(src)).graph.value_info] == ["w"]  # the source file is left as it was
