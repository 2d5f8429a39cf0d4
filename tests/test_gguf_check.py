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
    w.add_feed_forward_length(4 * n_embd)
    w.add_layer_norm_eps(1e-5)
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
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
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


# ------------------------------------------------------------------------ issue 11: crafted files (defects 3-7)
# Each case is a complete, loadable GPT-2 (tests/gguf_craft.py) with one field changed. The ABORTS cases made
# llama.cpp 0.3.36 abort the process (SIGABRT, exit 134) at load or at the first decode when alignts' check let
# them through (results/hardening/seal_gguf.md); the others it refused or, for NaN weights, ran silently. All must
# be an ArtifactError naming the field before llama.cpp sees the file.
from dataclasses import replace  # noqa: E402

from gguf_craft import ARR, F32, F64, I32, STR, U16, U32, U64, U8, Gguf, lora_adapter, tiny_gpt2  # noqa: E402

from alignts.runtime.gguf_check import check_context  # noqa: E402


def _tensor(g: Gguf, i: int, **change) -> Gguf:
    name, ne, t, data = g.tensors[i]
    vals = {"name": name, "ne": ne, "t": t, "data": data, **change}
    g.tensors[i] = (vals["name"], vals["ne"], vals["t"], vals["data"])
    return g


ABORTS = {
    "block_count_513": (lambda g: g.set("gpt2.block_count", U32, 513),
                        "block_count is 513; expected an integer in 1..512"),
    "block_count_0": (lambda g: g.set("gpt2.block_count", U32, 0), "block_count is 0"),
    "nextn_layers": (lambda g: g.set("gpt2.nextn_predict_layers", U32, 2), "nextn_predict_layers is 2"),
    "expert_count": (lambda g: g.set("gpt2.expert_count", U32, 2000),
                     "expert_count is 2000; expected an integer in 0..1024"),
    "expert_used": (lambda g: g.set("gpt2.expert_count", U32, 2).set("gpt2.expert_used_count", U32, 3),
                    "expert_used_count is 3"),
    "expert_used_alone": (lambda g: g.set("gpt2.expert_used_count", U32, 1), "expert_used_count is 1"),
    "duplicate_tokens": (lambda g: g.set("tokenizer.ggml.tokens", ARR, (STR, ["a"] * 16)), "'a' appears twice"),
    "rope_scaling": (lambda g: g.set("gpt2.rope.scaling.type", STR, "bogus"), "rope.scaling.type is 'bogus'"),
    "layer_norm_nan": (lambda g: g.set("gpt2.attention.layer_norm_epsilon", F32, float("nan")),
                       "layer_norm_epsilon is nan; expected a finite number > 0"),
    "alignment_16": (lambda g: g.set("general.alignment", U32, 16),
                     "general.alignment is 16; expected a power of two >= 32"),
    "int_weights": (lambda g: _tensor(g, 0, t=26), "has type I32; expected a float or quantized weight type"),
    "quantized_bias": (lambda g: _tensor(g, 3, t=8, data=b"\0" * 34), "the vector 'output_norm.bias' has type Q8_0"),
}
REFUSED = {
    "no_ffn": (lambda g: g.drop("gpt2.feed_forward_length"), "feed_forward_length is 'missing'"),
    "heads_not_dividing": (lambda g: g.set("gpt2.attention.head_count", U32, 3), "a divisor of embedding_length 32"),
    "kv_heads": (lambda g: g.set("gpt2.attention.head_count_kv", U32, 3), "head_count_kv is 3; expected a divisor"),
    "head_dims": (lambda g: g.set("gpt2.attention.key_length", U32, 8).set("gpt2.attention.value_length", U32, 4),
                  "value_length is 4; expected the key length 8"),
    "layer_array": (lambda g: g.set("gpt2.attention.head_count", ARR, (U32, [4, 4])), "an array of 1 integers"),
    "context_0": (lambda g: g.set("gpt2.context_length", U32, 0), "context_length is 0"),
    "block_count_str": (lambda g: g.set("gpt2.block_count", STR, "1"), "block_count is '1'; expected an integer"),
    "block_count_huge": (lambda g: g.set("gpt2.block_count", U64, 2 ** 64 - 1), "block_count is 18446744073709551615"),
    "arch_int": (lambda g: g.set("general.architecture", U32, 7), "general.architecture is 7; expected a string"),
    "nested_array": (lambda g: g.set("x.nested", ARR, (ARR, [(U8, [1])])), "array of arrays"),
    "empty_vocab": (lambda g: g.set("tokenizer.ggml.tokens", ARR, (STR, [])).drop("tokenizer.ggml.token_type"),
                    "a vocabulary of at least one token"),
    "tokens_not_strings": (lambda g: g.set("tokenizer.ggml.tokens", ARR, (I32, [1, 2])), "an array of strings"),
    "short_token_types": (lambda g: g.set("tokenizer.ggml.token_type", ARR, (I32, [1])), "at least 16 items"),
    "split_file": (lambda g: g.set("split.count", U16, 2), "split.count is 2; expected 1: a single-file GGUF"),
    "alignment": (lambda g: g.set("general.alignment", U32, 48), "general.alignment is 48"),
    "alignment_str": (lambda g: g.set("general.alignment", STR, "32"), "general.alignment is '32'"),
    "file_type_str": (lambda g: g.set("general.file_type", STR, "f32"), "general.file_type is 'f32'"),
}


def _dup_key(g: Gguf) -> Gguf:
    g.kv.append(("gpt2.block_count", U32, 1))
    return g


STRUCTURE = {
    "dup_key": (_dup_key, "'gpt2.block_count' is repeated"),
    "lying_kv_count": (lambda g: replace(g, n_kv=10 ** 9), "keys; expected at most"),
    "lying_tensor_count": (lambda g: replace(g, n_tensors=200), "truncated"),
    "five_dims": (lambda g: _tensor(g, 0, ne=(1, 1, 1, 1, 1)), "5 dimensions; expected at most 4"),
    "zero_dim": (lambda g: _tensor(g, 0, ne=(32, 0)), "expected each >= 1"),
    "long_name": (lambda g: _tensor(g, 0, name="t" * 64), "a tensor name of 64 bytes"),
    "unknown_type": (lambda g: _tensor(g, 0, t=99), "unknown ggml type 99"),
    "unaligned": (lambda g: replace(g, offsets=[4] * len(g.tensors)),
                  "expected a multiple of the alignment 32"),
    "nan_weight": (lambda g: _tensor(g, 0, data=np.full(16 * 32, np.nan, np.float32).tobytes()),
                   "token_embd.weight' holds 512 NaN/inf values"),
    "version_9": (lambda g: replace(g, version=9), "GGUF version 9"),
    "value_type_99": (lambda g: g.set("x.y", 99, b""), "unknown GGUF value type 99"),
}


@pytest.mark.parametrize("case", sorted({**ABORTS, **REFUSED, **STRUCTURE}))
def test_crafted_model_is_refused(tmp_path, case):
    make, phrase = {**ABORTS, **REFUSED, **STRUCTURE}[case]
    p = make(tiny_gpt2()).write(tmp_path / f"{case}.gguf")
    with pytest.raises(ArtifactError) as e:
        check_gguf(p)
    assert phrase in str(e.value), str(e.value)
    assert str(p) in str(e.value) and ("expected" in str(e.value) or "truncated" in str(e.value))


def test_the_crafted_base_is_good(tmp_path):
    info = check_gguf(tiny_gpt2().write(tmp_path / "ok.gguf"))
    assert (info.n_layer, info.n_embd, info.n_head, info.n_head_kv, info.n_vocab, info.values_scanned) == \
        (1, 32, 4, 4, 16, True)
    assert info.kv_per_token == (8 + 8) * 4  # K and V of 4 heads x 8 dims, one layer


@pytest.mark.parametrize("alpha,phrase", [((F32, float("nan")), "alpha is nan; expected a finite float32"),
                                          ((F64, 4.0), "alpha is 4.0; expected a finite float32"),
                                          ((STR, "4"), "alpha is '4'")])
def test_crafted_adapter_is_refused(tmp_path, alpha, phrase):
    """llama.cpp reads adapter.lora.alpha with gguf_get_val_f32, which aborts on any other type; NaN gives NaN
    outputs."""
    base = tiny_gpt2()
    b = base.write(tmp_path / "base.gguf")
    good = lora_adapter(base).write(tmp_path / "good.gguf")
    assert check_lora_adapter(good, b).lora_alpha == 4.0
    bad = lora_adapter(base, alpha=alpha).write(tmp_path / "bad.gguf")
    with pytest.raises(ArtifactError, match=phrase):
        check_lora_adapter(bad, b)


def test_llama_cpp_never_sees_a_file_that_aborts_it(tmp_path):
    """Through the runtime's LlamaCppModel, in a child process: every ABORTS file is an ArtifactError and the child
    exits 0 (before the checks each of these killed the process with SIGABRT)."""
    pytest.importorskip("llama_cpp")
    paths = [str(make(tiny_gpt2()).write(tmp_path / f"{name}.gguf")) for name, (make, _) in ABORTS.items()]
    ok = str(tiny_gpt2().write(tmp_path / "ok.gguf"))
    code = textwrap.dedent("""
        import sys
        from alignts.errors import ArtifactError
        from alignts.runtime.backends.gguf import LlamaCppModel
        m = LlamaCppModel(sys.argv[1], n_ctx=16)
        print("ok", m.n_embd)
        for p in sys.argv[2:]:
            try:
                LlamaCppModel(p, n_ctx=16)
                print("LOADED", p)
            except ArtifactError as e:
                print("refused", p)
    """)
    out = subprocess.run([sys.executable, "-c", code, ok, *paths], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert lines[0] == "ok 32" and sum(ln.startswith("refused") for ln in lines) == len(ABORTS), out.stdout


def test_check_context_bounds_n_ctx(tmp_path):
    info = check_gguf(tiny_gpt2(n_ctx=64).write(tmp_path / "m.gguf"))
    assert check_context(info, 64, 2, "f32") == 64 * 2 * 64 * 4
    with pytest.raises(ArtifactError, match="n_ctx=65 tokens asked; expected 1..64, the model's context_length"):
        check_context(info, 65)
    with pytest.raises(ArtifactError, match="KV cache .* expected it to fit this machine's"):
        check_context(info, 64, 2 ** 40)
    pytest.importorskip("llama_cpp")
    from alignts.runtime.backends.gguf import LlamaCppModel

    with pytest.raises(ArtifactError, match="n_ctx=1000000000 tokens asked"):
        LlamaCppModel(info.path, n_ctx=10 ** 9)


def test_bad_header_past_64_mib_is_not_read_into_memory(tmp_path):
    """A 1 GiB sparse file whose header holds a 900 MiB string and then a bad value type: refused without its pages
    being read (before: the whole file was read, 1.1 GB RSS)."""
    p = tmp_path / "sparse.gguf"
    n = 900 << 20
    head = (b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (2).to_bytes(8, "little")
            + (1).to_bytes(8, "little") + b"a" + (8).to_bytes(4, "little") + n.to_bytes(8, "little"))
    tail = (1).to_bytes(8, "little") + b"b" + (77).to_bytes(4, "little")
    with open(p, "wb") as f:
        f.write(head)
        f.seek(len(head) + n)
        f.write(tail)
        f.truncate(1 << 30)
    code = textwrap.dedent(f"""
        import resource
        from alignts.errors import ArtifactError
        from alignts.runtime.gguf_check import check_gguf
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            check_gguf({str(p)!r})
        except ArtifactError as e:
            print("refused", "unknown GGUF value type 77" in str(e))
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[:2] == ["refused", "True"], out.stdout
    assert int(lines[2]) < 64, f"check_gguf grew RSS by {lines[2]} MiB"


def test_inspect_runs_the_gguf_checks(tmp_path, capsys):
    from alignts.cli import main
    from alignts.runtime.manifest import Manifest, Variant, file_entries, write_manifest

    def bundle(name: str, g: Gguf) -> Path:
        b = tmp_path / name
        b.mkdir()
        g.write(b / "lm.gguf")
        write_manifest(b, Manifest(paradigm="injective", architecture="gpt2", files=file_entries(b, ["lm.gguf"]),
                                   variants=(Variant("gguf-f32", "gguf", "f32", ("lm.gguf",)),),
                                   config={"n_ctx": 64}))
        return b

    assert main(["inspect", str(bundle("good", tiny_gpt2()))]) == 0
    assert "gguf checks passed: lm.gguf" in capsys.readouterr().out
    for case in ("block_count_513", "duplicate_tokens"):
        b = bundle(case, ABORTS[case][0](tiny_gpt2()))
        assert main(["inspect", str(b)]) == 2
        assert main(["inspect", "--no-verify", str(b)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2 and ABORTS[case][1] in err[0], err
