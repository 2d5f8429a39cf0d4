"""validate_onnx: every ONNX export is checked against torch on fresh inputs; ``scaled`` judges outputs whose size
grows in training (a Bridging adapter's LM-space embeddings) by tol x max(1, |y|), as the pipeline checks do."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from alignts.errors import ValidationError  # noqa: E402
from alignts.export.onnx_export import export_onnx, validate_onnx  # noqa: E402


def _linear(scale: float):
    torch.manual_seed(0)
    m = torch.nn.Linear(64, 32)
    with torch.no_grad():
        m.weight.mul_(scale)
        m.bias.mul_(scale)
    return m.eval()


def _inputs(t: int):
    g = torch.Generator().manual_seed(t)
    return (torch.randn(1 + 2 * t, 64, generator=g),)


def test_scaled_tolerance_follows_the_output_size(tmp_path):
    big = _linear(1e4)  # outputs ~1e5, like a trained adapter's embeddings grown far past 1
    path = tmp_path / "big.onnx"
    export_onnx(big, _inputs(0), path, ["x"], ["y"], dynamic_axes={"x": {0: "batch"}})
    with torch.no_grad():
        big.bias.add_(1e-3)  # a difference of 1e-3: far above 1e-4, far below 1e-4 of the outputs' size
    with pytest.raises(ValidationError, match="exceeds the tolerance"):
        validate_onnx(big, path, _inputs, tol=1e-4)
    diff = validate_onnx(big, path, _inputs, tol=1e-4, scaled=True)
    assert 1e-4 < diff < 1.0


def test_scaled_still_refuses_a_wrong_export(tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(_linear(1.0), _inputs(0), path, ["x"], ["y"], dynamic_axes={"x": {0: "batch"}})
    other = _linear(1.0)
    with torch.no_grad():
        other.bias.add_(0.01)  # the file no longer matches this module
    with pytest.raises(ValidationError, match=r"max\(1, \|y\|"):
        validate_onnx(other, path, _inputs, tol=1e-4, scaled=True)
