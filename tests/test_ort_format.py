"""ORT-format variants (issue #16 part 5): `alignts quantize --to ort` adds an ORT-format twin of each ONNX
variant of an Internal bundle, with its required-operators config, sealed and validated against its source."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.exporters.onnx")

import alignts.runtime as rt  # noqa: E402
from alignts.cli import main  # noqa: E402
from alignts.errors import ArtifactError, InputError  # noqa: E402
from alignts.export.ort_format import add_ort_variants  # noqa: E402

from tiny_bundles import internal_bundle  # noqa: E402


@pytest.fixture(scope="module")
def internal(tmp_path_factory):
    return internal_bundle(tmp_path_factory.mktemp("ort"), "statsmodels:co2")


@pytest.fixture
def bundle(internal, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(internal, dst)
    return dst


def _x(f, batch=3, seed=1):
    rng = np.random.default_rng(seed)
    return (300 + rng.standard_normal((batch, f.n_channels or 1, f.context_len)).cumsum(-1)).astype(np.float32)


def test_ort_twin_forecasts_like_its_onnx_source(bundle):
    m, rows = add_ort_variants(bundle)
    assert [r["variant"] for r in rows] == ["onnx-fp32-ort"]
    v = next(v for v in m.variants if v.name == "onnx-fp32-ort")
    assert v.backend == "onnx" and v.dtype == "fp32" and v.extra["format"] == "ort"
    ort_file, cfg = v.files[0], v.extra["required_operators"]
    assert ort_file.endswith(".ort") and ort_file in m.files and cfg in m.files
    assert (bundle / ort_file).read_bytes()[4:8] == b"ORTM"  # the flatbuffer's file identifier, not protobuf
    ops = rows[0]["operators"]
    assert any(ln.startswith("ai.onnx;") and "MatMul" in ln for ln in ops)
    assert str(bundle) not in (bundle / cfg).read_text()  # no absolute path of the build machine
    assert v.validation["relative_max_abs_diff"] <= v.validation["relative_tolerance"]

    f = rt.load(bundle)  # verifies every listed file, the new ones included
    x = _x(f)
    f.plan(variant="onnx-fp32")
    ref = f.forecast(x)
    f.plan(variant="onnx-fp32-ort")
    got = f.forecast(x)
    scale = np.abs(ref.mean).max()
    assert np.abs(got.mean - ref.mean).max() <= 1e-5 * scale


def test_cli_adds_ort_twins_of_new_int8_into_a_copy(bundle, tmp_path, capsys):
    out = tmp_path / "copy"
    assert main(["quantize", str(bundle), "--to", "int8,ort", "--out", str(out)]) == 0
    names = [v["name"] for v in json.loads((out / "manifest.json").read_text())["variants"]]
    assert {"onnx-int8", "onnx-fp32-ort", "onnx-int8-ort"} <= set(names)
    assert "onnx-fp32-ort" not in [v.name for v in rt.load(bundle).manifest.variants]  # source untouched
    f = rt.load(out)
    x = _x(f)
    f.plan(variant="onnx-int8")
    ref = f.forecast(x).mean
    f.plan(variant="onnx-int8-ort")
    assert np.abs(f.forecast(x).mean - ref).max() <= 1e-4 * np.abs(ref).max()
    # again: nothing to add, nothing rebuilt
    assert main(["quantize", str(out), "--to", "ort"]) == 0
    assert "nothing to add" in capsys.readouterr().out


def test_tampered_ort_file_is_refused(bundle):
    add_ort_variants(bundle)
    f = rt.load(bundle)
    blob = bytearray((bundle / "core.ort").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (bundle / "core.ort").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="core.ort"):
        f.plan(variant="onnx-fp32-ort")


def test_unknown_source_is_refused(bundle):
    with pytest.raises(InputError, match="not ONNX variants"):
        add_ort_variants(bundle, sources=("gguf-f32",))
