"""manifest.json as an attacker or a careless editor writes it (issue 11, defects 4 and 5): every malformed
manifest is a ManifestError that says what was expected, what came and the fix, raised when it is read, never
a raw exception later and never a silently wrong forecast."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alignts.errors import ManifestError
from alignts.runtime import load
from alignts.runtime.manifest import MAX_DEPTH, read_manifest

BASE = {
    "format": "alignts-bundle", "format_version": "1.0", "paradigm": "internal", "architecture": "gpt2",
    "files": {"core.onnx": {"sha256": "0" * 64, "size": 10}, "io.npz": {"sha256": "1" * 64, "size": 5}},
    "variants": [{"name": "onnx-fp32", "backend": "onnx", "dtype": "fp32", "files": ["core.onnx"]},
                 {"name": "gguf-f32", "backend": "gguf", "dtype": "f32", "files": ["core.onnx", "io.npz"],
                  "extra": {"io_file": "io.npz", "adapter_scale": 1.0, "kv_type": "f32"}}],
    "config": {"context_len": 16, "horizon": 4, "n_channels": 2, "patch_len": 8, "stride": 8, "n_patches": 3,
               "eps": 1e-5, "scaler": {"mean": [0.0, 1.0], "std": [1.0, 2.0]}},
    "normalization": {"kind": "revin", "eps": 1e-5, "affine": False},
    "lora": {"rank": 8, "alpha": 16.0}, "limits": {"max_context": 16, "peak_bytes_estimate": 1000},
    "training": {"note": "free-form", "loss": float("nan")},
}


def _write(tmp_path: Path, d) -> Path:
    b = tmp_path / "b"
    b.mkdir(exist_ok=True)
    (b / "manifest.json").write_text(d if isinstance(d, str) else json.dumps(d))
    return b


def _with(path: str, value):
    """BASE with the value at ``a/b/c`` replaced (DELETE removes it)."""
    d = json.loads(json.dumps(BASE))
    *parents, last = path.split("/")
    node = d
    for k in parents:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return d


DELETE = object()


def test_the_base_reads(tmp_path):
    m = read_manifest(_write(tmp_path, BASE), verify=False)
    assert m.config["stride"] == 8 and math.isnan(m.training["loss"])  # free-form sections stay free


@pytest.mark.parametrize("path,value,phrase", [
    # defect 4: numbers that gave NaN cells or constant wrong forecasts
    ("lora/alpha", float("nan"), "lora.alpha is nan; expected a finite number"),
    ("lora/alpha", float("inf"), "lora.alpha is inf"),
    ("config/eps", float("nan"), "config.eps is nan; expected a finite number > 0"),
    ("config/eps", -1e-5, "config.eps is -1e-05; expected a finite number > 0"),
    ("config/eps", 0, "config.eps is 0"),
    ("normalization/eps", float("nan"), "normalization.eps is nan"),
    ("variants/1/extra/adapter_scale", float("nan"), "adapter_scale is nan"),
    ("config/scaler", {"mean": [0.0, float("nan")], "std": [1.0, 1.0]}, "config.scaler.mean"),
    ("config/scaler", {"mean": [0.0, 1.0], "std": [1.0, 0.0]}, "finite numbers > 0"),
    ("config/scaler", {"mean": [0.0], "std": [1.0]}, "an array of 2"),
    # defect 5: shapes, types, ranges
    ("config/stride", 0, "config.stride is 0; expected an integer in 1..1048576"),
    ("config/patch_len", 0, "config.patch_len is 0"),
    ("config/context_len", 10 ** 9, "config.context_len is 1000000000"),
    ("config/horizon", -3, "config.horizon is -3"),
    ("config/horizon", 2.5, "config.horizon is 2.5; expected an integer"),
    ("config/horizon", True, "config.horizon is True"),
    ("config/horizon", "24", "config.horizon is '24'"),
    ("config/n_patches", 4, "config.n_patches is 4; expected (context_len - patch_len) // stride + 2"),
    ("config/n_ctx", 10 ** 9, "config.n_ctx is 1000000000"),
    ("config/samples", 0, "config.samples is 0"),
    ("config/top_p", 0, "config.top_p is 0"),
    ("config/context_len", DELETE, "config.context_len is missing; the internal paradigm needs it"),
    ("config", [], "config is list; expected an object"),
    ("config/columns", "x", "config.columns is 'x'; expected an array of strings"),
    ("variants/1/weight_bytes", -5, "weight_bytes is -5; expected an integer in 0"),
    ("variants/1/extra/kv_type", "q4", "kv_type is 'q4'; expected one of f32, f16"),
    ("variants/1/files", [], "a non-empty array"),
    ("variants/1/files", "io.npz", "files is 'io.npz'; expected an array"),
    ("variants/1/extra/io_file", 7, "io_file is 7; expected a file name"),
    ("variants/1/name", "onnx-fp32", "unique variant names"),
    ("variants/0", "x", "variants[0] is 'x'; expected an object"),
    ("variants/0/bogus", 1, "only name, backend"),
    ("files/io.npz", {"sha256": "xyz", "size": 5}, "sha256 is 'xyz'; expected 64 lowercase hex"),
    ("files/io.npz", {"sha256": "1" * 64, "size": -1}, "size is -1"),
    ("files/io.npz", [], "expected an object"),
    ("files", [], "files is list; expected an object"),
    ("paradigm", 3, "paradigm is 3; expected a string"),
    ("format_version", 1, "format_version 1 is not readable"),
    ("limits/peak_bytes_estimate", -1, "limits.peak_bytes_estimate is -1"),
    ("codec", {"precision": 99}, "codec.precision is 99; expected an integer in 0..15"),
])
def test_malformed_fields(tmp_path, path, value, phrase):
    b = _write(tmp_path, _with(path, value) if "/" in path else {**BASE, path: value}
               if value is not DELETE else {k: v for k, v in BASE.items() if k != path})
    with pytest.raises(ManifestError) as e:
        read_manifest(b, verify=False)
    msg = str(e.value)
    assert phrase in msg, msg
    assert "expected" in msg and "Fix" in msg or "HINT" in msg, msg




@pytest.mark.parametrize("text,phrase", [
    ('{"format": ' + "1" * 100_000 + "}", "not valid JSON"),  # past Python's int digit limit
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),     # past the recursion limit
    ("\xff\xfe{}", "not valid JSON"),
    ("{", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"format": "alignts-bundle", "format_version": "1.0", "training": ' + "[" * 40 + "]" * 40 + "}",
     f"nested deeper than {MAX_DEPTH}"),
    ('{"format": 1e999}', "'format' is inf"),
])
def test_malformed_json(tmp_path, text, phrase):
    b = tmp_path / "b"
    b.mkdir()
    (b / "manifest.json").write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    with pytest.raises(ManifestError, match=phrase):
        read_manifest(b, verify=False)


def test_huge_manifest_is_refused_unread(tmp_path):
    b = tmp_path / "b"
    b.mkdir()
    with open(b / "manifest.json", "wb") as f:
        f.truncate(65 << 20)  # sparse
    with pytest.raises(ManifestError, match="larger than 64 MiB"):
        read_manifest(b, verify=False)


@pytest.mark.parametrize("paradigm,missing", [("bridging", "d_llm"), ("backbone", "d_model")])
def test_required_config_per_paradigm(tmp_path, paradigm, missing):
    with pytest.raises(ManifestError, match=f"config.{missing} is missing; the {paradigm} paradigm needs it"):
        read_manifest(_write(tmp_path, {**BASE, "paradigm": paradigm}), verify=False)


def test_injective_codec_and_sampling_are_checked_before_use(tmp_path):
    inj = {**BASE, "paradigm": "injective", "config": {"n_ctx": 64, "temperature": float("nan")}, "codec": {}}
    with pytest.raises(ManifestError, match="config.temperature is nan"):
        load(_write(tmp_path, inj), verify=False)
    inj["config"] = {"n_ctx": 64}
    inj["codec"] = {"alpha": 0.0}
    with pytest.raises(ManifestError, match="codec.alpha is 0.0; expected a finite number > 0"):
        load(_write(tmp_path, inj), verify=False)


@pytest.mark.parametrize("path", ["config/eps", "config/stride", "variants/1/extra/kv_type", "normalization/eps",
                                  "variants/1/extra/io_file"])
def test_null_where_the_runtime_reads_a_value(tmp_path, path):
    """``config.get("eps", 1e-5)`` returns None for an explicit null: refused at read, not left to float(None)."""
    with pytest.raises(ManifestError, match=f"{path.split('/')[-1]} is None; expected (a|an|one) "):
        read_manifest(_write(tmp_path, _with(path, None)), verify=False)


def test_null_where_it_means_none(tmp_path):
    m = read_manifest(_write(tmp_path, _with("config/scaler", None)), verify=False)
    assert m.config["scaler"] is None
