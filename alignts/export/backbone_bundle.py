"""Export a frozen backbone once, as its own bundle (paradigm ``backbone``), shared by Bridging adapters.

Bundle contents:
- ``backbone.onnx``: ``inputs_embeds [S, T, d] -> hidden [S, T, d]`` (fp32, dynamic S and T); a BERT's (an
  architecture with ``forward_rows``) also takes ``output_rows [n]`` (int64 token positions) and returns
  ``hidden [S, n, d]``, its last layer after the attention (output projection, residual, LayerNorms, FFN) run on
  those rows only, as alignts' llama.cpp does for the tokens flagged as outputs (Bridging reads its N patch tokens);
- ``word_embeddings.npy``: the frozen token embedding table ``[V, d]`` float32 (prompt prefixes are looked
  up here at run time; it is part of the frozen backbone, so adapters never ship it);
- ``tokenizer.json``: the backbone's own tokenizer (tiny test presets, which have none, get a small
  word-level tokenizer over the prompt vocabulary, see :func:`tiny_tokenizer_json`);
- quantized forms of the same weights: ``backbone.int8.onnx`` (dynamic int8, ``onnx-int8``) and, beside
  ``backbone-f32.gguf``, ``backbone-bf16.gguf`` / ``backbone-q8_0.gguf`` / ``backbone-q4_0.gguf`` (exact attention;
  older exports recorded flash attention for an encoder's: ``alignts.export.quantize.FLASH_ATTN_DTYPES``); their max
  abs diff vs torch is recorded, not enforced: each adapter bundle judges them on its own validation windows (the
  accuracy gate, ``alignts.export.gate``) and lists only those within it. Static int8 needs data, and a backbone
  is shared by adapters of any data: it is not built here.

A backbone bundle is identified by the sha256 of its manifest.json. In a backbone store folder it is
exported once: :func:`ensure_backbone_bundle` first looks for a bundle built from the same weights and
settings (``config.backbone_key``) and reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from alignts.errors import ArtifactError
from alignts.export.bundle import finish_bundle, validation_record, variant_record
from alignts.runtime.backbone_store import ROWS_INPUT
from alignts.runtime.manifest import MANIFEST_NAME, bundle_writer, manifest_sha256, read_manifest

log = logging.getLogger(__name__)

ONNX_NAME = "backbone.onnx"
ONNX_INT8_NAME = "backbone.int8.onnx"
GGUF_NAME = "backbone-f32.gguf"
GGUF_QUANTIZED = ("bf16", "q8_0", "q4_0")
# llama.cpp (f32 weights, f32 KV cache) vs torch, relative to max |hidden|: its GELU is the tanh form through an
# f16 table, so BERT differs by ~3.5e-4 of the hidden scale on 2 MiniLM layers (2.6e-3 absolute, 0.024 on 6).
GGUF_REL_TOL = 5e-3
TABLE_NAME = "word_embeddings.npy"
TOKENIZER_NAME = "tokenizer.json"
KEY_VERSION = 7  # bump when the export itself changes, so stores do not reuse stale bundles (3: quantized variants,
# 4: gguf-bf16 and flash attention on the reduced-precision encoder variants, 5: GGUFs with a stub vocabulary,
# 6: exact attention on every variant again, 7: a BERT's ONNX graphs take ROWS_INPUT)

_TINY_WORDS = ("dataset description task forecast the next steps given previous information input statistics "
               "min max median value trend of is upward downward top lags are a an time series data hourly "
               "daily load temperature").split()


def tiny_tokenizer_json(vocab_size: int) -> str:
    """A word-level tokenizer.json over the prompt's words, digits and punctuation (ids < ``vocab_size``).

    For the tiny random test backbones, which come without a tokenizer. Digits are split one by one.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1}
    for w in list("0123456789.,:;-[]()") + list(_TINY_WORDS):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    return tok.to_str()


def tokenizer_text(backbone) -> str:
    """The backbone's tokenizer.json text (or the tiny word-level one when it has none)."""
    if backbone.tokenizer_json:
        return Path(backbone.tokenizer_json).read_text(encoding="utf-8")
    return tiny_tokenizer_json(int(backbone.word_embeddings.shape[0]))


def max_positions(backbone) -> int | None:
    """Longest sequence the backbone's position embeddings allow (None = not limited by the config)."""
    cfg = backbone.hf_config
    for name in ("max_position_embeddings", "n_positions"):
        v = getattr(cfg, name, None)
        if v:
            return int(v)
    return None


def backbone_key(backbone, tok_text: str) -> str:
    """sha256 over what determines the exported bundle: weights, depth, tokenizer, export version."""
    facts = dict(key_version=KEY_VERSION, arch=backbone.name, source_sha256=backbone.source_sha256,
                 n_layers=backbone.n_layers, d_model=int(backbone.d_model),
                 vocab=int(backbone.word_embeddings.shape[0]),
                 tokenizer_sha256=hashlib.sha256(tok_text.encode("utf-8")).hexdigest())
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def gguf_runtime_kwargs(max_pos: int | None) -> dict:
    """llama.cpp context settings the GGUF variant is validated and run with (stored in the variant)."""
    n = int(max_pos or 512)
    return {"n_ctx": n, "n_batch": n, "n_seq_max": 4, "kv_type": "f32"}


def _export_gguf(backbone, module, tmp: Path, shapes, gen, max_pos: int | None):
    """Write and validate the gguf-f32 variant; returns (Variant, None) or (None, why it was skipped)."""

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None, "llama-cpp-python is not installed (pip install 'alignts[gguf]')"
    from alignts.export.bundle import validation_record, variant_record
    from alignts.export.gguf_writer import write_gguf

    write_gguf(backbone.model, tmp / GGUF_NAME, dtype="f32", embeddings_only=True,  # the prefix rows come from
               metadata={"paradigm": "backbone", "source_sha256": backbone.source_sha256})  # word_embeddings.npy
    kw = gguf_runtime_kwargs(max_pos)
    worst, rel, top = _gguf_diff(tmp / GGUF_NAME, module, shapes, gen, int(backbone.d_model), kw)
    if not np.isfinite(rel) or rel > GGUF_REL_TOL:
        return None, (f"llama.cpp hidden states differ from torch by {worst:.3g} ({rel:.3g} of max |hidden|) > "
                      f"{GGUF_REL_TOL:g}")
    v = variant_record(tmp, "gguf-f32", "gguf", "f32", [GGUF_NAME], inputs=["inputs_embeds"], outputs=["hidden"],
                       validation=validation_record(worst, GGUF_REL_TOL * top, len(shapes), relative_max_abs_diff=rel,
                                                    relative_tolerance=GGUF_REL_TOL), extra=kw)
    return v, None


def _gguf_diff(path: Path, module, shapes, gen, d: int, kw: dict) -> tuple[float, float, float]:
    """(max abs diff, relative to max |hidden|, max |hidden|) of llama.cpp's hidden states vs torch on random
    embeddings of ``shapes``."""
    import torch

    from alignts.runtime.backends.gguf import LlamaCppModel

    lm = LlamaCppModel(str(path), embeddings=True, **kw)
    try:
        worst, rel, top = 0.0, 0.0, 0.0
        for s_, t_ in shapes:
            e = torch.randn(s_, t_, d, generator=gen)
            with torch.no_grad():
                ref = module(e).numpy()
            got = np.asarray(lm.hidden_states(e.numpy()), dtype=np.float32)
            diff = float(np.max(np.abs(ref - got)))
            m = max(float(np.max(np.abs(ref))), 1e-12)
            worst, rel, top = max(worst, diff), max(rel, diff / m), max(top, m)
    finally:
        close = getattr(lm, "close", None)
        if close:
            close()
    return worst, rel, top


def _draw(shape: tuple[int, int], d: int, gen) -> tuple:
    """Random embeddings ``[S, T, d]`` and output rows for one validation call: the last ``ceil(T / 2)`` tokens, a
    tail as Bridging reads (callers drop the rows where the export has no such input)."""
    import torch

    s_, t_ = shape
    return torch.randn(s_, t_, d, generator=gen), torch.arange(t_ // 2, t_)


def _quantized(tmp: Path, variants: list, module, shapes, gen, d: int, encoder: bool) -> list:
    """onnx-int8 (dynamic) and, where gguf-f32 exists, gguf-bf16 / q8_0 / q4_0 of the same weights (flash
    attention on an encoder for the dtypes of FLASH_ATTN_DTYPES, now none), each with its max abs diff vs torch
    recorded (finite outputs required; the accuracy gate of each adapter decides)."""
    from alignts.errors import ValidationError
    from alignts.export.onnx_export import quantize_int8, validate_onnx
    from alignts.export.quantize import FLASH_ATTN_DTYPES, requantize_gguf

    out = []
    fp32 = variants[0]
    quantize_int8(tmp / ONNX_NAME, tmp / ONNX_INT8_NAME, keep_input_layers_fp32=False)
    k = len(fp32.inputs)
    draws = [_draw(sh, d, gen)[:k] for sh in shapes]
    diff = validate_onnx(module, tmp / ONNX_INT8_NAME, lambda t: draws[t], n_trials=len(shapes), tol=float("inf"))
    rel = validate_onnx(module, tmp / ONNX_INT8_NAME, lambda t: draws[t], n_trials=len(shapes), tol=float("inf"),
                        relative=True)
    out.append(variant_record(tmp, "onnx-int8", "onnx", "int8", [ONNX_INT8_NAME], inputs=fp32.inputs,
                              outputs=fp32.outputs, dynamic_axes=fp32.dynamic_axes,
                              validation=validation_record(diff, None, len(shapes), relative_max_abs_diff=rel),
                              extra={"quantization": "dynamic"}))
    f32 = next((v for v in variants if v.name == "gguf-f32"), None)
    for dt in GGUF_QUANTIZED if f32 is not None else ():
        name = GGUF_NAME.replace("f32", dt)
        requantize_gguf(tmp / GGUF_NAME, tmp / name, dt)
        kw = dict(f32.extra, flash_attn=True) if encoder and dt in FLASH_ATTN_DTYPES else dict(f32.extra)
        worst, rel, _ = _gguf_diff(tmp / name, module, shapes, gen, d, kw)
        if not np.isfinite(worst):
            raise ValidationError(f"backbone {name}: llama.cpp returns non-finite hidden states; expected a usable "
                                  "quantized backbone.")
        out.append(variant_record(tmp, f"gguf-{dt}", "gguf", dt, [name], inputs=f32.inputs, outputs=f32.outputs,
                                  validation=validation_record(worst, None, len(shapes), relative_max_abs_diff=rel),
                                  extra=kw))
    return out


def export_backbone_bundle(backbone, out: str | os.PathLike, *, tol: float = 1e-4, overwrite: bool = False,
                           seed: int = 0, gguf: bool = True) -> Path:
    """Write ``backbone`` as a backbone bundle at ``out`` (ONNX fp32 + embedding table + tokenizer).

    The ONNX graph is checked against torch on random embeddings of several batch sizes and lengths; the
    max abs diff goes into the variant's validation. With ``gguf`` (and llama-cpp-python installed) a
    ``gguf-f32`` variant (write_gguf) is added when llama.cpp reproduces torch within ``GGUF_REL_TOL``
    (relative to max |hidden|); otherwise
    the reason is recorded in ``config.gguf_skipped``. Returns ``out``.
    """
    import torch

    from alignts.export.bridging import BackboneExport
    from alignts.export.onnx_export import export_onnx, validate_onnx

    tok_text = tokenizer_text(backbone)
    key = backbone_key(backbone, tok_text)
    d = int(backbone.d_model)
    max_pos = max_positions(backbone)
    t_hi = min(max_pos or 64, 64)
    module = BackboneExport(backbone).eval()
    gen = torch.Generator().manual_seed(seed)
    table = backbone.word_embeddings.detach().cpu().numpy().astype(np.float32)
    inputs, axes = ["inputs_embeds"], {"inputs_embeds": {0: "batch", 1: "tokens"}}
    if backbone.has_forward_rows:  # the tokens whose states are read: the last layer after attention runs on those
        inputs.append(ROWS_INPUT)
        axes[ROWS_INPUT] = {0: "rows"}
    shapes = [(1, 5), (3, t_hi), (2, 17)]
    with bundle_writer(out, overwrite=overwrite) as tmp:
        example = (torch.randn(2, 12, d, generator=gen), torch.arange(7, 12))[:len(inputs)]
        export_onnx(module, example, tmp / ONNX_NAME, inputs, ["hidden"], dynamic_axes=axes)
        diff = validate_onnx(module, tmp / ONNX_NAME, lambda t: _draw(shapes[t], d, gen)[:len(inputs)],
                             n_trials=len(shapes), tol=tol)
        np.save(tmp / TABLE_NAME, table)
        (tmp / TOKENIZER_NAME).write_text(tok_text, encoding="utf-8")
        out_axes = {0: "batch", 1: "rows" if ROWS_INPUT in axes else "tokens"}
        variant = variant_record(tmp, "onnx-fp32", "onnx", "fp32", [ONNX_NAME], inputs=inputs, outputs=["hidden"],
                                 dynamic_axes={**axes, "hidden": out_axes},
                                 validation=validation_record(diff, tol, len(shapes)))
        variants, skipped = [variant], None
        if gguf:
            gv, skipped = _export_gguf(backbone, module, tmp, shapes, gen, max_pos)
            if gv is not None:
                variants.append(gv)
            else:
                log.warning("backbone gguf-f32 variant skipped: %s", skipped)
        variants.extend(_quantized(tmp, variants, module, shapes, gen, d, encoder=not backbone.causal))
        finish_bundle(
            tmp, paradigm="backbone", architecture=backbone.name, variants=variants,
            extra_files=[TABLE_NAME, TOKENIZER_NAME],
            config={"d_model": d, "n_layers": backbone.n_layers, "vocab_size": int(table.shape[0]),
                    "causal": bool(backbone.causal), "spec": backbone.spec, "source_sha256": backbone.source_sha256,
                    "backbone_key": key, "table": TABLE_NAME, "tokenizer": TOKENIZER_NAME,
                    "max_positions": max_pos, "gguf_skipped": skipped},
            limits={"max_tokens": max_pos})
    log.info("backbone bundle %s: max abs diff vs torch %.2e", out, diff)
    return Path(out)


def find_by_key(store: str | os.PathLike, key: str) -> Path | None:
    """A bundle in ``store`` whose manifest's ``config.backbone_key`` is ``key`` (verified), or None."""
    store = Path(store)
    if not store.is_dir():
        return None
    for child in sorted(store.iterdir()):
        if not (child / MANIFEST_NAME).is_file():
            continue
        try:
            m = read_manifest(child, verify=False)
        except ArtifactError:
            continue
        if m.paradigm == "backbone" and m.config.get("backbone_key") == key:
            try:
                read_manifest(child, verify=True)
            except ArtifactError as e:
                log.warning("backbone bundle %s matches but fails verification (%s); exporting anew", child, e)
                continue
            return child
    return None


def ensure_backbone_bundle(backbone, store: str | os.PathLike, *, tol: float = 1e-4,
                           gguf: bool = True) -> tuple[Path, str, bool]:
    """Export ``backbone`` into the backbone store folder ``store`` unless the same one is already there.

    Returns ``(bundle path, manifest sha256, reused)``.
    """
    store = Path(store)
    key = backbone_key(backbone, tokenizer_text(backbone))
    found = find_by_key(store, key)
    if found is not None:
        log.info("reusing backbone bundle %s", found)
        return found, manifest_sha256(found), True
    out = store / f"{backbone.name}-{key[:16]}"
    export_backbone_bundle(backbone, out, tol=tol, overwrite=True, gguf=gguf)
    return out, manifest_sha256(out), False
