"""GGUF validation (alignts.runtime.gguf_check): bad files raise ArtifactError before llama.cpp sees them.

Torch-free: the GGUF files here are written with gguf-py directly.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from alignts.errors import ArtifactError  # noqa: E402
from alignts.runtime.gguf_check import Keys, check_gguf, check_lora_adapter  # noqa: E402


def _write_model(path: Path, n_embd: int = 32, n_vocab: int = 16, arch: str = "gpt2") -> Path:
    """A minimal (not runnable) GGUF model header + two tensors, written with gguf-py."""
    w = gguf.GGUFWriter(path, arch)
    w.add_type("model")
    w.add_context_length(64)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_head_count(4)
    w.add_file_type(0)
    w.add_token_list([f"t{i}" for i in range(n_vocab)])
    w.add_string(Keys.PARADIGM, "internal")
    w.add_int64("alignts.context_len", 96)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((n_vocab, n_embd)).astype(np.float32))
    w.add_tensor("blk.0.attn_qkv.weight", rng.standard_normal((3 * n_embd, n_embd)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _write_adapter(path: Path, a_shape, b_shape, arch="gpt2", base_sha256=None, alpha=8.0) -> Path:
    w = gguf.GGUFWriter(path, arch)
    w.add_type("adapter")
    w.add_string(Keys.Adapter.TYPE, "lora")
    w.add_float32(Keys.Adapter.LORA_ALPHA, alpha)
    if base_sha256:
        w.add_string(Keys.BASE_SHA256, base_sha256)
    w.add_tensor("blk.0.attn_qkv.weight.lora_a", np.zeros(a_shape, np.float32))
    w.add_tensor("blk.0.attn_qkv.weight.lora_b", np.zeros(b_shape, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def model_file(tmp_path) -> Path:
    return _write_model(tmp_path / "m.gguf")


def test_reads_facts(model_file):
    info = check_gguf(model_file, expect_arch="gpt2")
    assert (info.arch, info.n_embd, info.n_layer, info.n_vocab, info.tensor_count) == ("gpt2", 32, 1, 16, 2)
    assert info.file_type_name == "f32" and info.general_type == "model"
    assert info.tensors["blk.0.attn_qkv.weight"] == ((96, 32), "F32")
    assert info.metadata == {"alignts.paradigm": "internal", "alignts.context_len": 96}


def test_not_a_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ArtifactError, match="not a GGUF"):
        check_gguf(p)
    with pytest.raises(ArtifactError, match="does not exist"):
        check_gguf(tmp_path / "missing.gguf")


@pytest.mark.parametrize("keep", [0.999, 0.5, 0.05, 12])
def test_truncated(model_file, tmp_path, keep):
    data = model_file.read_bytes()
    n = int(len(data) * keep) if keep < 1 else keep
    p = tmp_path / "t.gguf"
    p.write_bytes(data[:n])
    with pytest.raises(ArtifactError, match="truncated"):
        check_gguf(p)


def test_wrong_arch(model_file):
    with pytest.raises(ArtifactError, match="expected 'llama'"):
        check_gguf(model_file, expect_arch="llama")


def test_adapter_ok_and_mismatches(model_file, tmp_path):
    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    good = _write_adapter(tmp_path / "a.gguf", (4, 32), (96, 4), base_sha256=sha)
    assert check_lora_adapter(good, model_file).lora_alpha == 8.0
    other = _write_model(tmp_path / "other.gguf", n_embd=64)
    with pytest.raises(ArtifactError, match="another base model"):
        check_lora_adapter(good, other)  # shapes do not fit the 64-wide base
    transposed = _write_adapter(tmp_path / "t.gguf", (32, 4), (4, 96))
    with pytest.raises(ArtifactError, match="transposed"):
        check_lora_adapter(transposed, model_file)
    wrong_sha = _write_adapter(tmp_path / "s.gguf", (4, 32), (96, 4), base_sha256="0" * 64)
    with pytest.raises(ArtifactError, match="sha256") as e:
        check_lora_adapter(wrong_sha, model_file)
    assert str(model_file) in str(e.value) and str(wrong_sha) in str(e.value)
    wrong_arch = _write_adapter(tmp_path / "w.gguf", (4, 32), (96, 4), arch="llama")
    with pytest.raises(ArtifactError, match="architecture"):
        check_lora_adapter(wrong_arch, model_file)
    with pytest.raises(ArtifactError, match="expected 'adapter'"):
        check_lora_adapter(model_file, model_file)


def test_runtime_imports_without_torch(model_file):
    code = textwrap.dedent(f"""
        import sys
        for m in ("torch", "transformers", "peft"):
            sys.modules[m] = None  # importing them now fails
        from alignts.runtime.gguf_check import check_gguf
        import alignts.runtime.backends.gguf as b
        print(check_gguf({str(model_file)!r}).arch, hasattr(b, "LlamaCppModel"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["gpt2", "True"]
