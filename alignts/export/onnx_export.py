"""ONNX export (torch.onnx dynamo exporter), validation against torch, and int8 dynamic quantization."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from alignts.errors import ValidationError
from alignts.export.onnx_fuse import fuse_file
from alignts.runtime.backends.onnx import _ort

log = logging.getLogger(__name__)


def export_onnx(module, example_inputs: tuple, path: str | os.PathLike, input_names: Sequence[str],
                output_names: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
                opset: int = 18) -> Path:
    """Export ``module`` (eval mode) to a single ONNX file at ``path`` with the dynamo exporter.

    example_inputs: tensors for one forward call; dynamic_axes: {input name: {axis: axis name}} (only inputs
    need entries; outputs follow). Weights stay inside the file (models here are far below 2 GB). Exact GELUs
    become onnxruntime Gelu nodes and unmasked multi-head attention one MultiHeadAttention node each
    (:mod:`alignts.export.onnx_fuse`). Avoid ``Tensor.unfold`` in the module: gather with indices instead.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch._dynamo", "torch.export"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    dynamic_shapes = None
    if dynamic_axes:
        dims: dict[str, object] = {}
        dynamic_shapes = []
        for name in input_names:
            axes = dynamic_axes.get(name, {})
            spec = {}
            for ax, ax_name in axes.items():
                dims.setdefault(ax_name, torch.export.Dim(ax_name, min=1, max=1 << 20))
                spec[int(ax)] = dims[ax_name]
            dynamic_shapes.append(spec or None)
        dynamic_shapes = tuple(dynamic_shapes)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, tuple(example_inputs), dynamo=True, input_names=list(input_names),
                                 output_names=list(output_names), dynamic_shapes=dynamic_shapes,
                                 opset_version=opset, verbose=False, report=False)
    prog.save(str(path), external_data=False)
    fuse_file(path)
    log.info("exported %s (%d bytes)", path, path.stat().st_size)
    return path


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _feed(a) -> np.ndarray:
    """An input as onnxruntime takes it: float32, integers (token positions) as int64."""
    a = _to_numpy(a)
    return a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float32)


def validate_onnx(module, path: str | os.PathLike, make_inputs: Callable[[int], tuple], n_trials: int = 3,
                  tol: float = 1e-4, relative: bool = False, scaled: bool = False) -> float:
    """Run torch ``module`` and the ONNX file on ``n_trials`` fresh inputs; return the max abs difference.

    make_inputs(trial) -> a tuple of tensors (or arrays) for one call; use different shapes across trials
    to exercise the dynamic axes. Raises ValidationError when the difference exceeds ``tol`` (``relative``: the
    difference over torch's max |output| is returned and checked; ``scaled``: the absolute difference is returned
    and checked against ``tol x max(1, max |output|)``, the pipeline checks' rule, for outputs whose size grows in
    training, as an adapter's LM-space embeddings do).
    """
    import torch

    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    module.eval()
    worst, scale = 0.0, 0.0
    for t in range(n_trials):
        inputs = make_inputs(t)
        tin = tuple(torch.as_tensor(_to_numpy(a)) for a in inputs)
        with torch.no_grad():
            ref = module(*tin)
        refs = ref if isinstance(ref, (tuple, list)) else (ref,)
        outs = sess.run(None, {n: _feed(a) for n, a in zip(names, tin)})
        for r, o in zip(refs, outs):
            r = _to_numpy(r)
            if r.shape != o.shape:
                raise ValidationError(f"{path}: output shape {o.shape} differs from torch's {r.shape} "
                                      f"(trial {t}); the export is broken, re-export it.")
            worst = max(worst, float(np.max(np.abs(r - o))) if r.size else 0.0)
            scale = max(scale, float(np.max(np.abs(r))) if r.size else 0.0)
    if relative:
        worst = worst / max(scale, 1e-12)
    limit = tol * max(1.0, scale) if scaled else tol
    if not np.isfinite(worst) or worst > limit:
        kind = "relative max abs diff" if relative else "max abs diff"
        bound = f"{tol:.1g} x max(1, |y| = {scale:.3g})" if scaled else f"{tol:.1g}"
        raise ValidationError(f"{path}: {kind} vs torch {worst:.3g} exceeds the tolerance {bound} "
                              f"over {n_trials} random inputs; the export is wrong (check for ops the exporter "
                              "mistranslates) or the tolerance is too tight for this dtype.")
    return worst


def _without_initializer_shapes(model):
    """``model`` without the value_info entries that repeat an initializer's shape (torch.onnx writes them).
    onnxruntime <= 1.31's dynamic quantizer transposes a Gemm's weight in place (transB=1) and leaves such an entry
    behind, and its shape inference then fails ("Inferred shape and existing shape differ"); 1.31.1 is the newest
    onnxruntime-gpu. The initializers carry their own shapes, so nothing is lost."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    keep = [v for v in g.value_info if v.name not in inits]
    del g.value_info[:]
    g.value_info.extend(keep)
    return model


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, keep_input_layers_fp32: bool = True,
                  per_channel: bool = True) -> Path:
    """Dynamic int8 quantization of the weight MatMul/Gemm nodes (onnxruntime.quantization); returns ``dst``.

    Per-channel int8 weights in 7-bit range (``reduce_range``: x86 u8 x s8 kernels without VNNI saturate
    the 16-bit intermediate sums with full-range weights; measured 7% vs 1% relative error on a tiny GPT-2),
    activations quantized per tensor at run time; activation x activation MatMuls (attention scores) stay fp32.
    keep_input_layers_fp32: leave nodes that read a graph input in fp32 (the patch embedding: tiny, and the largest
    int8 error on raw-scale inputs). per_channel=False: one scale a weight tensor, for batched 3-D weights (Bridging's
    folded adapter), which onnxruntime's DynamicQuantizeMatMul takes with per-tensor zero points only.
    """
    _ort()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    model = _without_initializer_shapes(onnx.load(str(src)))
    exclude = []
    if keep_input_layers_fp32:
        inputs = {i.name for i in model.graph.input}
        exclude = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and inputs & set(n.input)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("root").setLevel(logging.ERROR)
        quantize_dynamic(model, str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=True, nodes_to_exclude=exclude, extra_options={"MatMulConstBOnly": True})
    fuse_file(dst)  # a source exported before the GELU and attention rewrites
    return dst


def _input_layer_nodes(src: str | os.PathLike) -> list[str]:
    """MatMul/Gemm nodes that read a graph input (the patch embedding: kept fp32 by both int8 forms)."""
    import onnx

    g = onnx.load(str(src), load_external_data=False).graph
    inputs = {i.name for i in g.input}
    return [n.name for n in g.node if n.op_type in ("MatMul", "Gemm") and inputs & set(n.input)]


def quantize_int8_static(src: str | os.PathLike, dst: str | os.PathLike, batches: Sequence[Mapping[str, np.ndarray]],
                         keep_input_layers_fp32: bool = True, method: str = "minmax") -> Path:
    """Static int8 quantization (calibrated, QDQ format) of the weight MatMul/Gemm nodes; returns ``dst``.

    batches: the model's inputs for the calibration runs ({input name: array}), e.g. normalized patches of
    training windows (``alignts.export.gate.calibration_patches``); activation ranges are their min/max
    (``method="percentile"``: the 99.999th percentile). Weights: int8, symmetric, per output channel, in 7-bit
    range (``reduce_range``, for the same reason as :func:`quantize_int8`); activations: uint8, asymmetric, one
    scale per tensor fixed at calibration (no range computed at run time, unlike the dynamic form).
    Activation x activation MatMuls (attention) stay fp32; so do nodes reading a graph input when
    ``keep_input_layers_fp32``. onnxruntime fuses each DequantizeLinear -> MatMul -> QuantizeLinear into an
    integer MatMul at load.
    """
    _ort()
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"method={method!r}: expected one of {sorted(methods)}")
    dst = Path(dst)
    exclude = _input_layer_nodes(src) if keep_input_layers_fp32 else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("root").setLevel(logging.ERROR)
        quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm"], per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        calibrate_method=methods[method],
                        extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True,
                                       "ActivationSymmetric": False, "CalibMovingAverage": False})
    fuse_file(dst)  # a source exported before the GELU and attention rewrites
    return dst
