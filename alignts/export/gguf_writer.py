"""Write Hugging Face BERT / GPT-2 / LLaMA models and PEFT LoRA adapters as GGUF files for llama.cpp.

Torch side. Tensor names and hyperparameter keys follow llama.cpp's gguf-py ``constants.py`` for the three
architectures; the layout facts (GPT-2 ``Conv1D`` weights are stored [in, out] and must be transposed; LLaMA
Q/K rows are re-ordered from Hugging Face's rotate-half RoPE to llama.cpp's interleaved-pair RoPE; BERT's
WordPiece tokens carry a phantom space) come from llama.cpp's converter and loader.

Public API::

    write_gguf(model, path, *, dtype="f32", tokens=None, token_types=None, merges=None,
               tokenizer_model=None, metadata=None, ...) -> Path
    vocab_from_hf_tokenizer(tokenizer) -> dict            # kwargs for write_gguf
    lora_tensors_from_peft(peft_model, adapter_name="default") -> LoraTensors
    write_lora_adapter_gguf(lora_tensors, arch, path, alpha, base_sha256=None, metadata=None) -> Path

Project metadata goes under ``alignts.*`` (keys defined once in :class:`alignts.runtime.gguf_check.Keys`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from alignts.errors import InputError, missing_extra
from alignts.runtime.gguf_check import ALIGNTS_GGUF_FORMAT_VERSION, Keys

logger = logging.getLogger(__name__)

DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")
# Vocabulary rows kept by ``write_gguf(embeddings_only=True)``: models only ever fed input embeddings (Internal's LM,
# Bridging's backbone) need no token table, and llama.cpp reserves n_vocab logits per output row of a decode.
STUB_VOCAB = 16
KNOWN_ARCHS = ("bert", "gpt2", "llama")

__all__ = ["Keys", "DTYPES", "KNOWN_ARCHS", "LoraTensors", "write_gguf", "vocab_from_hf_tokenizer",
           "lora_tensors_from_peft", "write_lora_adapter_gguf", "llama_permute_qk"]


def _gguf():
    try:
        import gguf
    except ImportError as e:
        raise missing_extra("gguf", "export") from e
    return gguf


# --------------------------------------------------------------------------------------------------------------
# tensors per architecture: each yields (gguf name, numpy array in [out, in] / [rows, cols] order)


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").float().numpy()


def llama_permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Re-order the rows of a LLaMA q/k projection (or of a LoRA B / a bias) from HF to llama.cpp RoPE order.

    HF rotates dimension i with i + head_dim/2 (rotate_half); llama.cpp's LLAMA architecture rotates pairs
    (2i, 2i+1). Row ``2i + c`` of a head in the output is row ``c*head_dim/2 + i`` of the input.
    w: [n_head * head_dim, ...] -> same shape.
    """
    out = w.shape[0]
    hd = out // n_head
    return w.reshape(n_head, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _base_module(model, arch: str):
    """The bare transformer inside a task model (GPT2LMHeadModel.transformer, LlamaForCausalLM.model, ...)."""
    attr = {"bert": "bert", "gpt2": "transformer", "llama": "model"}[arch]
    inner = getattr(model, attr, None)
    if inner is not None and inner is not model and hasattr(inner, "config"):
        return inner
    return model


def _output_head(model, base) -> Any | None:
    """An untied LM head weight, or None when absent or tied to the input embeddings."""
    head = getattr(model, "lm_head", None)
    if head is None or model is base:
        return None
    emb = base.get_input_embeddings().weight
    if head.weight.data_ptr() == emb.data_ptr():
        return None
    return head.weight


def _name_map(arch: str, n_layer: int):
    """gguf-py's HF -> GGUF tensor-name map of an architecture (llama.cpp's own conversion tables)."""
    gguf = _gguf()
    return gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layer)


def _gguf_name(tmap, hf_key: str) -> str:
    """The GGUF name of an HF state_dict key: "h.0.attn.c_attn.weight" -> "blk.0.attn_qkv.weight"."""
    name = tmap.get_name(hf_key, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise NotImplementedError(f"gguf-py has no GGUF name for the tensor {hf_key!r}; expected a tensor "
                                  "llama.cpp's conversion knows. Fix: upgrade gguf (pip install -U gguf).")
    return name


def _gpt2_tensors(model, cfg) -> Iterator[tuple[str, np.ndarray]]:
    base = _base_module(model, "gpt2")
    sd = base.state_dict()
    tm = _name_map("gpt2", cfg.n_layer)
    for key in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):
        yield _gguf_name(tm, key), _np(sd[key])
    for i in range(cfg.n_layer):
        for hf in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            w = _np(sd[f"h.{i}.{hf}.weight"])
            if w.ndim == 2:
                w = w.T  # Conv1D stores [in, out]
            yield _gguf_name(tm, f"h.{i}.{hf}.weight"), np.ascontiguousarray(w)
            yield _gguf_name(tm, f"h.{i}.{hf}.bias"), _np(sd[f"h.{i}.{hf}.bias"])
    head = _output_head(model, base)
    if head is not None:
        yield _gguf_name(tm, "lm_head.weight"), _np(head)


def _bert_tensors(model, cfg) -> Iterator[tuple[str, np.ndarray]]:
    base = _base_module(model, "bert")
    sd = base.state_dict()
    tm = _name_map("bert", cfg.num_hidden_layers)
    for key in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"):
        yield _gguf_name(tm, key), _np(sd[key])
    for i in range(cfg.num_hidden_layers):
        for hf in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                   "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
            for kind in ("weight", "bias"):
                key = f"encoder.layer.{i}.{hf}.{kind}"
                yield _gguf_name(tm, key), _np(sd[key])


def _llama_tensors(model, cfg) -> Iterator[tuple[str, np.ndarray]]:
    gguf = _gguf()
    base = _base_module(model, "llama")
    sd = base.state_dict()
    tm = _name_map("llama", cfg.num_hidden_layers)
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    permute = {gguf.MODEL_TENSOR.ATTN_Q: n_head, gguf.MODEL_TENSOR.ATTN_K: n_kv}
    for key in ("embed_tokens.weight", "norm.weight"):
        yield _gguf_name(tm, key), _np(sd[key])
    for i in range(cfg.num_hidden_layers):
        for hf in ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                   "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            for kind in ("weight", "bias"):
                key = f"layers.{i}.{hf}.{kind}"
                if key not in sd:
                    continue
                w = _np(sd[key])
                heads = permute.get(tm.get_type(key, try_suffixes=(".weight", ".bias")))
                if heads is not None:
                    w = llama_permute_qk(w, heads)
                yield _gguf_name(tm, key), np.ascontiguousarray(w)
    head = _output_head(model, base)
    if head is not None:
        yield _gguf_name(tm, "lm_head.weight"), _np(head)


def _gpt2_hparams(w, cfg, n_vocab: int) -> None:
    w.add_context_length(cfg.n_positions)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(cfg.n_inner or 4 * cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_head_count(cfg.n_head)
    w.add_layer_norm_eps(cfg.layer_norm_epsilon)


def _bert_hparams(w, cfg, n_vocab: int) -> None:
    gguf = _gguf()
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_layer_norm_eps(cfg.layer_norm_eps)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.NONE)
    w.add_token_type_count(cfg.type_vocab_size)


def _llama_hparams(w, cfg, n_vocab: int) -> None:
    rs = getattr(cfg, "rope_scaling", None) or {}
    rtype = rs.get("rope_type", rs.get("type", "default"))
    if rtype not in ("default", "linear"):
        raise NotImplementedError(f"LLaMA rope_scaling type {rtype!r} is not supported by the GGUF writer; "
                                  "supported: none/default, linear.")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_vocab_size(n_vocab)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads or cfg.num_attention_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(getattr(cfg, "rope_theta", 10000.0)))
    w.add_rope_dimension_count(head_dim)
    if head_dim != cfg.hidden_size // cfg.num_attention_heads:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if rtype == "linear":
        gguf = _gguf()
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rs["factor"]))


@dataclass(frozen=True)
class _ArchSpec:
    tensors: Callable
    hparams: Callable
    default_tokenizer: str


# Registry of architectures (keyed by HF config.model_type).
_ARCHS: dict[str, _ArchSpec] = {
    "bert": _ArchSpec(_bert_tensors, _bert_hparams, "bert"),
    "gpt2": _ArchSpec(_gpt2_tensors, _gpt2_hparams, "gpt2"),
    "llama": _ArchSpec(_llama_tensors, _llama_hparams, "gpt2"),
}


def _arch_of(model) -> str:
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt not in _ARCHS:
        raise NotImplementedError(f"GGUF export of model_type {mt!r} is not supported; known: "
                                  f"{', '.join(KNOWN_ARCHS)}.")
    return mt


# --------------------------------------------------------------------------------------------------------------
# vocabulary


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _synthetic_vocab(arch: str, n_vocab: int) -> dict[str, Any]:
    """A made-up vocabulary of exactly n_vocab tokens (for models used only with input embeddings)."""
    gguf = _gguf()
    N, C, U = int(gguf.TokenType.NORMAL), int(gguf.TokenType.CONTROL), int(gguf.TokenType.UNUSED)
    if arch == "bert":
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        if n_vocab < len(special) + 1:
            raise InputError(f"a BERT vocabulary needs at least {len(special) + 1} tokens, the model has {n_vocab}.")
        words = [f"\u2581{d}" for d in "0123456789"] + [f"\u2581t{i}" for i in range(n_vocab)]
        tokens = special + words[: n_vocab - len(special)]
        types = [C] * len(special) + [N] * (n_vocab - len(special))
        return dict(tokens=tokens, token_types=types, merges=None, tokenizer_model="bert",
                    special_ids=dict(pad=0, unk=1, bos=2, cls=2, sep=3, mask=4))
    b2u = _bytes_to_unicode()
    first = [ord(c) for c in "\n 0123456789,.-"]
    order = first + [b for b in range(256) if b not in first]
    tokens = [b2u[b] for b in order]
    if n_vocab < 2:
        raise InputError(f"a vocabulary needs at least 2 tokens, the model has {n_vocab}.")
    if n_vocab <= len(tokens):
        tokens = tokens[: n_vocab - 1]
    else:
        tokens += [f"<|unused{i}|>" for i in range(n_vocab - 1 - len(tokens))]
    types = [N if not t.startswith("<|unused") else U for t in tokens]
    tokens.append("<|endoftext|>")
    types.append(C)
    eos = n_vocab - 1
    # llama.cpp refuses an empty merges list; one merge of two existing single-byte tokens is enough.
    return dict(tokens=tokens, token_types=types, merges=[f"{tokens[1]} {tokens[2]}"], tokenizer_model="gpt2",
                special_ids=dict(bos=eos, eos=eos), tokenizer_pre="default")


def _wpm_phantom(tok: str) -> str:
    """WordPiece token -> llama.cpp WPM form: continuation '##x' -> 'x', word start 'x' -> '\u2581x'."""
    if tok.startswith("[") and tok.endswith("]"):
        return tok
    if tok.startswith("##"):
        return tok[2:]
    return "\u2581" + tok


def vocab_from_hf_tokenizer(tokenizer) -> dict[str, Any]:
    """Read a Hugging Face fast tokenizer (transformers ``PreTrainedTokenizerFast`` or ``tokenizers.Tokenizer``).

    Returns the vocabulary keyword arguments of :func:`write_gguf` (tokens, token_types, merges,
    tokenizer_model, special_ids, tokenizer_pre). Supports WordPiece (-> "bert") and byte-level BPE
    (-> "gpt2"); other models raise NotImplementedError.
    """
    gguf = _gguf()
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    spec = json.loads(backend.to_str())
    model = spec["model"]
    kind = model["type"]
    vocab: dict[str, int] = dict(model["vocab"])
    for added in spec.get("added_tokens", []):
        vocab.setdefault(added["content"], added["id"])
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [int(gguf.TokenType.UNUSED)] * n
    for t, i in vocab.items():
        tokens[i] = t
        types[i] = int(gguf.TokenType.NORMAL)
    special_contents = {a["content"] for a in spec.get("added_tokens", []) if a.get("special")}
    for t, i in vocab.items():
        if t in special_contents:
            types[i] = int(gguf.TokenType.CONTROL)
    special_ids: dict[str, int] = {}
    for name, attr in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unk_token_id"),
                       ("sep", "sep_token_id"), ("pad", "pad_token_id"), ("cls", "cls_token_id"),
                       ("mask", "mask_token_id")):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, int):
            special_ids[name] = v
    if kind == "WordPiece":
        tokens = [_wpm_phantom(t) for t in tokens]
        if "cls" in special_ids:
            special_ids.setdefault("bos", special_ids["cls"])
        return dict(tokens=tokens, token_types=types, merges=None, tokenizer_model="bert",
                    special_ids=special_ids, tokenizer_pre=None)
    if kind == "BPE":
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        if not merges:
            raise InputError("the BPE tokenizer has no merges; llama.cpp needs them. Pass a complete tokenizer.")
        pre = spec.get("pre_tokenizer") or {}
        byte_level = pre.get("type") == "ByteLevel" or any(
            p.get("type") == "ByteLevel" for p in pre.get("pretokenizers", []) or [])
        if not byte_level:
            raise NotImplementedError("only byte-level BPE tokenizers (GPT-2 style) are supported; "
                                      "SentencePiece-style ones need tokens+scores with tokenizer_model='llama'.")
        # A plain ByteLevel pre-tokenizer with its regex is GPT-2's; other regexes (llama3, qwen2, ...) need the
        # caller to name llama.cpp's pre-tokenizer (tokenizer_pre=...), else llama.cpp uses its default.
        gpt2_pre = pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
        if not gpt2_pre:
            logger.warning("BPE tokenizer with a custom pre-tokenizer: pass tokenizer_pre= (llama.cpp's name for it) "
                           "to write_gguf, else llama.cpp splits text with its default rules")
        return dict(tokens=tokens, token_types=types, merges=merges, tokenizer_model="gpt2",
                    special_ids=special_ids, tokenizer_pre="gpt-2" if gpt2_pre else None)
    raise NotImplementedError(f"tokenizer model {kind!r} is not supported; supported: WordPiece, byte-level BPE.")


def _add_vocab(w, *, tokens, token_types, merges, tokenizer_model, scores, special_ids, tokenizer_pre) -> None:
    w.add_tokenizer_model(tokenizer_model)
    if tokenizer_pre:
        w.add_tokenizer_pre(tokenizer_pre)
    w.add_token_list(list(tokens))
    if token_types is not None:
        w.add_token_types([int(t) for t in token_types])
    if scores is not None:
        w.add_token_scores([float(s) for s in scores])
    if tokenizer_model == "gpt2":
        if not merges:
            raise InputError("tokenizer_model 'gpt2' needs a non-empty merges list (llama.cpp refuses an empty one); "
                             "pass merges=['a b', ...] or use vocab_from_hf_tokenizer(tokenizer).")
        w.add_token_merges(list(merges))
    adders = {"bos": w.add_bos_token_id, "eos": w.add_eos_token_id, "unk": w.add_unk_token_id,
              "sep": w.add_sep_token_id, "pad": w.add_pad_token_id, "mask": w.add_mask_token_id}
    for name, val in (special_ids or {}).items():
        if name in adders and val is not None and 0 <= int(val) < len(tokens):
            adders[name](int(val))
    if tokenizer_model in ("gpt2", "bert"):
        w.add_add_bos_token(False)


# --------------------------------------------------------------------------------------------------------------
# writing


def _qtype(dtype: str):
    return _gguf().GGMLQuantizationType[dtype.upper()]


def _ftype(dtype: str):
    """llama.cpp's general.file_type of a dtype: f32 -> ALL_F32, q8_0 -> MOSTLY_Q8_0."""
    return _gguf().LlamaFileType["ALL_F32" if dtype == "f32" else f"MOSTLY_{dtype.upper()}"]


def _keep_f32() -> tuple[str, ...]:
    """Kept f32 in every dtype: small tensors where precision matters more than bytes."""
    gguf = _gguf()
    return tuple(gguf.TENSOR_NAMES[t] + ".weight" for t in (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES))


def _add_tensor(w, name: str, arr: np.ndarray, dtype: str) -> str:
    """Add one tensor, quantized per dtype where it is a 2-D weight; returns the type written."""
    gguf = _gguf()
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if dtype == "f32" or arr.ndim < 2 or not name.endswith(".weight") or name in _keep_f32():
        w.add_tensor(name, arr)
        return "f32"
    if dtype == "f16":
        w.add_tensor(name, arr.astype(np.float16))
        return "f16"
    qt = _qtype(dtype)
    if dtype == "bf16":  # any row length; gguf-py rounds to nearest even
        w.add_tensor(name, gguf.quants.quantize(arr, qt), raw_dtype=qt)
        return "bf16"
    block = gguf.GGML_QUANT_SIZES[qt][0]
    if arr.shape[-1] % block != 0:
        logger.info("%s: row length %d is not a multiple of %d; written as f16", name, arr.shape[-1], block)
        w.add_tensor(name, arr.astype(np.float16))
        return "f16"
    w.add_tensor(name, gguf.quants.quantize(arr, qt), raw_dtype=qt)
    return dtype


def _add_metadata(w, metadata: Mapping[str, Any] | None) -> None:
    for k, v in (metadata or {}).items():
        key = k if k.startswith(Keys.PREFIX) else Keys.PREFIX + k
        if isinstance(v, bool):
            w.add_bool(key, v)
        elif isinstance(v, (int, np.integer)):
            w.add_int64(key, int(v))
        elif isinstance(v, (float, np.floating)):
            w.add_float64(key, float(v))
        elif isinstance(v, str):
            w.add_string(key, v)
        else:
            raise InputError(f"GGUF metadata {k!r} must be a flat str/int/float/bool, got {type(v).__name__}; "
                             "serialize it (e.g. json.dumps) first.")


def _finish(w, tmp: Path, path: Path) -> Path:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path


def _tmp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_gguf(model, path: str | os.PathLike, *, dtype: str = "f32", tokens: Sequence[str] | None = None,
               token_types: Sequence[int] | None = None, merges: Sequence[str] | None = None,
               tokenizer_model: str | None = None, metadata: Mapping[str, Any] | None = None,
               scores: Sequence[float] | None = None, special_ids: Mapping[str, int] | None = None,
               tokenizer_pre: str | None = None, name: str | None = None, embeddings_only: bool = False) -> Path:
    """Write a Hugging Face BERT / GPT-2 / LLaMA model (bare or with its task head) as one GGUF file.

    dtype: ``f32`` | ``f16`` | ``bf16`` | ``q8_0`` | ``q4_0`` for 2-D weight matrices (norms, biases, position and
        token-type embeddings stay f32; q8_0/q4_0 rows not a multiple of 32 fall back to f16).
    tokens/token_types/merges/tokenizer_model/scores/special_ids/tokenizer_pre: the vocabulary
        (``vocab_from_hf_tokenizer(tok)`` gives them). When ``tokens`` is None a synthetic vocabulary of the
        model's size is written (``alignts.synthetic_vocab = 1``): BERT WordPiece-style ("bert"), else
        byte-level ("gpt2") with one merge. Tokens shorter than the embedding are padded with unused tokens.
    special_ids: {"bos"|"eos"|"unk"|"sep"|"pad"|"mask"|"cls": id}.
    embeddings_only: the model is only ever fed input embeddings (Internal's LM, Bridging's backbone): the token
        embedding and any LM head keep their first ``STUB_VOCAB`` rows under a synthetic vocabulary of that size
        (``alignts.embeddings_only = 1``): a MiniLM file halves and llama.cpp's logits buffer (n_vocab floats per
        decoded row) all but goes.
    metadata: flat str/int/float/bool values written as ``alignts.<key>`` (e.g. paradigm, source_sha256).
    Returns the path. Written atomically (temporary file renamed on success).
    """
    gguf = _gguf()
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not supported; expected one of {DTYPES}.")
    arch = _arch_of(model)
    spec = _ARCHS[arch]
    cfg = model.config
    path = Path(path)
    tensors = list(spec.tensors(model, cfg))
    n_vocab = tensors[0][1].shape[0]
    assert tensors[0][0] == "token_embd.weight"
    if embeddings_only:
        if tokens is not None:
            raise InputError("write_gguf(embeddings_only=True) writes its own stub vocabulary; pass no tokens.")
        n_vocab = min(n_vocab, STUB_VOCAB)
        vocab_rows = ("token_embd.weight", gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.OUTPUT] + ".weight")
        tensors = [(n, a[:n_vocab] if n in vocab_rows else a) for n, a in tensors]

    synthetic = tokens is None
    if synthetic:
        vocab = _synthetic_vocab(arch, n_vocab)
    else:
        tokens = list(tokens)
        if len(tokens) > n_vocab:
            raise InputError(f"the vocabulary has {len(tokens)} tokens but the model's embedding has {n_vocab} rows; "
                             "pass the tokenizer that belongs to this model.")
        types = list(token_types) if token_types is not None else [int(gguf.TokenType.NORMAL)] * len(tokens)
        if len(types) != len(tokens):
            raise InputError(f"token_types has {len(types)} entries, tokens has {len(tokens)}; they must match.")
        sc = list(scores) if scores is not None else None
        if len(tokens) < n_vocab:  # HF models often pad the embedding past the tokenizer
            pad = n_vocab - len(tokens)
            tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
            types += [int(gguf.TokenType.UNUSED)] * pad
            if sc is not None:
                sc += [0.0] * pad
        vocab = dict(tokens=tokens, token_types=types, merges=merges,
                     tokenizer_model=tokenizer_model or spec.default_tokenizer, special_ids=special_ids,
                     tokenizer_pre=tokenizer_pre)
        vocab["scores"] = sc
    vocab.setdefault("scores", None)
    vocab.setdefault("tokenizer_pre", None)

    tmp = _tmp_beside(path)
    try:
        w = gguf.GGUFWriter(tmp, arch)
        w.add_type("model")
        w.add_name(name or getattr(cfg, "_name_or_path", "") or f"alignts-{arch}")
        spec.hparams(w, cfg, n_vocab)
        w.add_file_type(_ftype(dtype))
        _add_vocab(w, **vocab)
        hf_arch = (getattr(cfg, "architectures", None) or [type(model).__name__])[0]
        _add_metadata(w, {Keys.FORMAT_VERSION: ALIGNTS_GGUF_FORMAT_VERSION, Keys.ROLE: "model",
                          Keys.DTYPE: dtype, Keys.HF_ARCHITECTURE: hf_arch,
                          Keys.SYNTHETIC_VOCAB: int(synthetic), Keys.EMBEDDINGS_ONLY: int(embeddings_only)})
        _add_metadata(w, metadata)
        written: dict[str, int] = {}
        for tname, arr in tensors:
            t = _add_tensor(w, tname, arr, dtype)
            written[t] = written.get(t, 0) + 1
        logger.info("writing %s: %s, %d tensors %s", path, arch, len(tensors), written)
        return _finish(w, tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------------------------------------------
# LoRA


@dataclass(frozen=True)
class LoraTensors:
    """LoRA weights ready for GGUF, in llama.cpp's layout and naming.

    tensors: {(layer, gguf target e.g. "attn_qkv"): (A [r, in], B [out, r])}, float32, B already re-ordered
             for LLaMA q/k. Delta W [out, in] = (alpha / r) * B @ A.
    alpha:   the adapter alpha (llama.cpp scales by user_scale * alpha / r); 0 means "scale 1, folded into B".
    arch:    gguf architecture ("gpt2", "llama", "bert").
    """

    tensors: Mapping[tuple[int, str], tuple[np.ndarray, np.ndarray]]
    alpha: float
    arch: str

    @property
    def rank(self) -> int:
        return int(next(iter(self.tensors.values()))[0].shape[0])


# LoRA targets llama.cpp can take: (HF module pattern, its state_dict key per layer, names for the error message)
_PEFT_TARGETS = {
    "gpt2": (re.compile(r"(?:^|\.)h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)$"), "h.{}.{}",
             "attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj"),
    "llama": (re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)$"),
              "layers.{}.{}", "self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj"),
    "bert": (re.compile(r"(?:^|\.)layer\.(\d+)\.(attention\.self\.(?:query|key|value)|attention\.output\.dense|"
                        r"intermediate\.dense|output\.dense)$"), "encoder.layer.{}.{}",
             "attention.self.{query,key,value}, attention.output.dense, intermediate.dense, output.dense"),
}


def lora_tensors_from_peft(peft_model, adapter_name: str = "default") -> LoraTensors:
    """Extract the LoRA A/B matrices of a PEFT model (unmerged) in llama.cpp's layout.

    Works for GPT-2 (Conv1D, fan_in_fan_out), LLaMA and BERT targets. Raises InputError when the model holds
    no LoRA layers for ``adapter_name`` or targets a module llama.cpp cannot take (e.g. embeddings).
    """
    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    arch = _arch_of(base)
    pattern, key_format, supported = _PEFT_TARGETS[arch]
    cfg = base.config
    n_layer = getattr(cfg, "n_layer", None) or cfg.num_hidden_layers
    tm = _name_map(arch, n_layer)
    found: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
    scalings: dict[tuple[int, str], float] = {}
    for mname, mod in peft_model.named_modules():
        la = getattr(mod, "lora_A", None)
        if la is None or not hasattr(la, "keys") or adapter_name not in la:
            continue
        if getattr(mod, "merged", False):
            raise InputError(f"{mname}: the LoRA weights are merged into the base; export the unmerged PEFT "
                             "model (or write the merged model with write_gguf instead).")
        m = pattern.search(mname)
        if m is None:
            raise InputError(f"LoRA on module {mname!r} cannot be written for llama.cpp ({arch}); supported "
                             f"targets: {supported}.")
        layer = int(m.group(1))
        target = _gguf_name(tm, key_format.format(layer, m.group(2)) + ".weight").split(".")[2]  # "attn_qkv"
        a = _np(la[adapter_name].weight)                 # [r, in]
        b = _np(mod.lora_B[adapter_name].weight)         # [out, r]
        if target == "attn_q" and arch == "llama":
            b = llama_permute_qk(b, cfg.num_attention_heads)
        elif target == "attn_k" and arch == "llama":
            b = llama_permute_qk(b, cfg.num_key_value_heads or cfg.num_attention_heads)
        found[(layer, target)] = (np.ascontiguousarray(a), np.ascontiguousarray(b))
        scalings[(layer, target)] = float(mod.scaling[adapter_name])
    if not found:
        raise InputError(f"no LoRA layers named {adapter_name!r} in the model; expected a PEFT model with "
                         "LoRA on attention/MLP projections.")
    ranks = {a.shape[0] for a, _ in found.values()}
    scales = set(scalings.values())
    if len(ranks) == 1 and len(scales) == 1:
        return LoraTensors(tensors=found, alpha=scales.pop() * ranks.pop(), arch=arch)
    # Mixed ranks/scalings (rank_pattern, alpha_pattern): fold each scaling into B, alpha 0 -> scale 1.
    folded = {k: (a, b * scalings[k]) for k, (a, b) in found.items()}
    return LoraTensors(tensors=folded, alpha=0.0, arch=arch)


def write_lora_adapter_gguf(lora_tensors: LoraTensors | Mapping[tuple[int, str], tuple[np.ndarray, np.ndarray]],
                            arch: str | None, path: str | os.PathLike, alpha: float | None = None,
                            base_sha256: str | None = None, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a llama.cpp LoRA adapter GGUF.

    lora_tensors: a :class:`LoraTensors` (then arch/alpha may be None) or {(layer, target): (A [r, in],
        B [out, r])} with targets named as GGUF tensors (``attn_qkv``, ``attn_q``, ``ffn_up``, ...).
        Tensors are written as ``blk.N.<target>.weight.lora_a`` (ggml ne [in, r]) and ``.lora_b`` (ne [r, out]).
    alpha: written to ``adapter.lora.alpha``; llama.cpp applies scale * alpha / r.
    base_sha256: sha256 of the base GGUF file, stored as ``alignts.base_sha256`` and checked by
        ``alignts.runtime.gguf_check.check_lora_adapter``.
    """
    gguf = _gguf()
    if isinstance(lora_tensors, LoraTensors):
        arch = arch or lora_tensors.arch
        alpha = lora_tensors.alpha if alpha is None else alpha
        tensors = lora_tensors.tensors
    else:
        tensors = lora_tensors
    if arch not in KNOWN_ARCHS:
        raise NotImplementedError(f"LoRA adapters for architecture {arch!r} are not supported; known: {KNOWN_ARCHS}.")
    if alpha is None:
        raise InputError("write_lora_adapter_gguf needs alpha (the LoRA alpha; llama.cpp scales by alpha / r).")
    if not tensors:
        raise InputError("no LoRA tensors to write.")
    path = Path(path)
    tmp = _tmp_beside(path)
    try:
        w = gguf.GGUFWriter(tmp, arch)
        w.add_type("adapter")
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        meta = {Keys.FORMAT_VERSION: ALIGNTS_GGUF_FORMAT_VERSION, Keys.ROLE: "lora"}
        if base_sha256:
            meta[Keys.BASE_SHA256] = base_sha256
        _add_metadata(w, meta)
        _add_metadata(w, metadata)
        for (layer, target), (a, b) in sorted(tensors.items()):
            a = np.ascontiguousarray(a, dtype=np.float32)
            b = np.ascontiguousarray(b, dtype=np.float32)
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
                raise InputError(f"LoRA {target} of layer {layer}: A {list(a.shape)} and B {list(b.shape)} do not "
                                 "form a product; expected A [r, in] and B [out, r].")
            w.add_tensor(f"blk.{layer}.{target}.weight.lora_a", a)
            w.add_tensor(f"blk.{layer}.{target}.weight.lora_b", b)
        return _finish(w, tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
