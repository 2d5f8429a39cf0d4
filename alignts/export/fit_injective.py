"""Build an Injective (LLMTime) bundle: a frozen causal LM, its codec table and sampling settings.

Models:
- default: the embedded numeric LM (package data ``alignts/assets/numeric_lm``; GGUF f16 and q8_0 copied in);
- a ``.gguf`` file: copied in (its vocabulary checked before llama.cpp reads it, then read by llama.cpp);
- a Hugging Face folder (GPT-2, LLaMA-family): exported to ONNX with past key/values (optimum-onnx,
  ``text-generation-with-past``) and to GGUF f32 (``write_gguf``), both validated against torch.

Nothing is trained unless ``lora`` is given (see :mod:`alignts.export.injective_lora`).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from alignts.errors import ArtifactError, InputError
from alignts.export.bundle import command_line, finish_bundle, validation_record, variant_record
from alignts.runtime.codec_table import (CodecSettings, build_codec_table, gguf_token_list, hf_vocab,
                                         precheck_token_list, table_to_dict)
from alignts.runtime.configs import InjectiveRuntimeConfig
from alignts.runtime.manifest import bundle_writer, read_manifest

log = logging.getLogger(__name__)

NUMERIC_LM_DIR = Path(__file__).resolve().parents[1] / "assets" / "numeric_lm"


@dataclass(frozen=True)
class InjectiveFitConfig:
    """Options of ``alignts fit injective``.

    model:       None (embedded numeric LM), a .gguf file or a Hugging Face folder.
    context_len, horizon: defaults stored in the bundle (plan may change them).
    samples, temperature, top_p, greedy, seed: sampling (LLMTime: 20, 0.9, 0.9).
    precision:   digits after the decimal point of scaled values (None: the model's own, else LLMTime's 3).
    description: domain text put before the digits (models whose tokenizer can write text only).
    n_ctx:       token context (None: the model's trained context, at most 4096).
    backends:    for a Hugging Face folder: which variants to export ("onnx", "gguf").
    """

    model: str | None = None
    context_len: int = InjectiveRuntimeConfig.context_len
    horizon: int = InjectiveRuntimeConfig.horizon
    samples: int = InjectiveRuntimeConfig.samples
    temperature: float = InjectiveRuntimeConfig.temperature
    top_p: float = InjectiveRuntimeConfig.top_p
    greedy: bool = InjectiveRuntimeConfig.greedy
    seed: int = InjectiveRuntimeConfig.seed
    precision: int | None = None
    description: str = ""
    n_ctx: int | None = None
    backends: tuple[str, ...] = ("onnx", "gguf")


def numeric_lm_manifest():
    """The packaged numeric LM's manifest (ArtifactError when the package data is missing or damaged)."""
    if not (NUMERIC_LM_DIR / "manifest.json").is_file():
        raise ArtifactError(f"the embedded numeric LM is missing at {NUMERIC_LM_DIR}; expected the package data "
                            "(manifest.json + GGUF). Fix: reinstall alignts or rebuild it with "
                            "scripts/build_numeric_lm.")
    return read_manifest(NUMERIC_LM_DIR)


def _settings(base: dict, cfg: InjectiveFitConfig, digit_sep: str) -> CodecSettings:
    s = CodecSettings.from_dict(base) if base else CodecSettings()
    s = replace(s, digit_sep=digit_sep)
    if cfg.precision is not None:
        if not 0 <= cfg.precision <= 8:
            raise InputError(f"--precision {cfg.precision}: expected 0..8 (LLMTime: 3).")
        s = replace(s, precision=int(cfg.precision), max_digits=int(cfg.precision) + 3)
    return s


def _check_description(vocab, text: str) -> None:
    if not text:
        return
    ids = vocab.tokenize(text)
    back = "".join(vocab.piece(i) for i in ids)
    if not ids or back.strip() != text.strip():
        raise InputError(f"--description {text[:40]!r}: this model's vocabulary cannot write it (reads back as "
                         f"{back[:40]!r}); the embedded numeric LM knows digits only. Fix: drop --description "
                         "or pass a text LM with --model.")


def _config(cfg: InjectiveFitConfig, n_ctx: int, n_layer: int, n_embd: int) -> dict[str, Any]:
    return InjectiveRuntimeConfig(context_len=cfg.context_len, horizon=cfg.horizon, n_ctx=n_ctx, samples=cfg.samples,
                                  temperature=cfg.temperature, top_p=cfg.top_p, greedy=cfg.greedy, seed=cfg.seed,
                                  description=cfg.description, n_layer=n_layer, n_embd=n_embd).to_dict()


def fit_injective(out: str | Path, cfg: InjectiveFitConfig = InjectiveFitConfig(), data_name: str | None = None,
                  overwrite: bool = False) -> Path:
    """Write an Injective bundle at ``out``; returns its path."""
    if cfg.samples < 1 or cfg.horizon < 1 or cfg.context_len < 2:
        raise InputError(f"samples={cfg.samples}, horizon={cfg.horizon}, context_len={cfg.context_len}: expected "
                         ">= 1, >= 1, >= 2.")
    t0 = time.time()
    model = cfg.model
    if model is None:
        return _from_numeric_lm(out, cfg, data_name, overwrite, t0)
    p = Path(model).expanduser()
    if p.is_file():
        return _from_gguf(out, cfg, p, data_name, overwrite, t0)
    if p.is_dir():
        return _from_hf(out, cfg, p, data_name, overwrite, t0)
    raise ArtifactError(f"--model {model!r} does not exist; expected a .gguf file or a Hugging Face model folder "
                        "(or leave --model out for the embedded numeric LM).")


def _training(cfg: InjectiveFitConfig, data_name: str | None, t0: float, **extra) -> dict[str, Any]:
    return {"command": command_line(), "data": data_name, "seed": cfg.seed, "wall_s": round(time.time() - t0, 2),
            "trained": False, **extra}


def _from_numeric_lm(out, cfg, data_name, overwrite, t0) -> Path:
    base = numeric_lm_manifest()
    vocab = hf_vocab(NUMERIC_LM_DIR / "tokenizer.json")
    _check_description(vocab, cfg.description)
    table, dsep, info = build_codec_table(vocab, base.codec.get("value_sep", " ,"))
    settings = _settings(dict(base.codec), cfg, dsep)
    n_ctx = InjectiveRuntimeConfig.from_manifest(base).n_ctx
    with bundle_writer(out, overwrite) as tmp:
        variants = []
        for v in base.variants:
            for f in v.files:
                shutil.copy2(NUMERIC_LM_DIR / f, tmp / f)
            variants.append(variant_record(tmp, v.name, v.backend, v.dtype, v.files, validation=v.validation,
                                           extra=v.extra))
        shutil.copy2(NUMERIC_LM_DIR / "tokenizer.json", tmp / "tokenizer.json")
        tcfg = base.training.get("config", {})
        finish_bundle(tmp, "injective", "gpt2", variants, extra_files=["tokenizer.json"],
                      config=_config(cfg, n_ctx, int(tcfg.get("n_layer", 4)), int(tcfg.get("n_embd", 128))),
                      codec={**settings.to_dict(), "table": table_to_dict(table), "tokenizer": "tokenizer.json",
                             "vocab": {"digits_merge": info.digits_merge, "bos_id": info.bos_id,
                                       "eos_id": info.eos_id}},
                      limits={"max_context_tokens": n_ctx},
                      training=_training(cfg, data_name, t0, model="embedded numeric LM",
                                         model_training=dict(base.training)))
    return Path(out)


def _from_gguf(out, cfg, path: Path, data_name, overwrite, t0) -> Path:
    from alignts.runtime.backends.gguf import LlamaCppModel
    from alignts.runtime.codec_table import llama_vocab
    from alignts.runtime.gguf_check import check_gguf

    info_g = check_gguf(path)
    if info_g.general_type == "adapter":
        raise ArtifactError(f"{path} is a LoRA adapter, not a model; pass the base model with --model.")
    precheck_token_list(gguf_token_list(path), str(path))
    n_ctx = int(cfg.n_ctx or min(info_g.n_ctx_train or 2048, 4096))
    with LlamaCppModel(path, n_ctx=min(n_ctx, 512), n_seq_max=1) as m:
        vocab = llama_vocab(m)
        _check_description(vocab, cfg.description)
        table, dsep, info = build_codec_table(vocab)
    settings = _settings({}, cfg, dsep)
    dtype = info_g.file_type_name if info_g.file_type_name in ("f32", "f16", "bf16", "q8_0", "q4_0") else "f32"
    with bundle_writer(out, overwrite) as tmp:
        name = "model.gguf"
        shutil.copy2(path, tmp / name)
        v = variant_record(tmp, f"gguf-{dtype}", "gguf", dtype, [name], extra={"architecture": info_g.arch})
        finish_bundle(tmp, "injective", info_g.arch, [v],
                      config=_config(cfg, n_ctx, info_g.n_layer, info_g.n_embd),
                      codec={**settings.to_dict(), "table": table_to_dict(table),
                             "vocab": {"digits_merge": info.digits_merge, "bos_id": info.bos_id,
                                       "eos_id": info.eos_id}},
                      limits={"max_context_tokens": n_ctx},
                      training=_training(cfg, data_name, t0, model=str(path)))
    return Path(out)


def export_onnx_with_past(hf_dir: str | Path, out_dir: str | Path) -> Path:
    """Export a local causal LM folder with optimum-onnx (``text-generation-with-past``); returns model.onnx."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as e:
        raise InputError("optimum-onnx is not installed; it exports the KV-cache ONNX decoder. Fix: pip install "
                         "'alignts[export]'") from e
    out_dir = Path(out_dir)
    main_export(str(hf_dir), output=str(out_dir), task="text-generation-with-past", device="cpu",
                local_files_only=True)
    onnx = out_dir / "model.onnx"
    if not onnx.is_file():
        raise ArtifactError(f"optimum wrote no model.onnx into {out_dir}; expected the merged decoder with past.")
    return onnx


def _from_hf(out, cfg, folder: Path, data_name, overwrite, t0) -> Path:
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM

    vocab = hf_vocab(folder)
    _check_description(vocab, cfg.description)
    table, dsep, info = build_codec_table(vocab)
    settings = _settings({}, cfg, dsep)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    mcfg = model.config
    arch = {"GPT2LMHeadModel": "gpt2", "LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "llama"}.get(
        (mcfg.architectures or [type(model).__name__])[0], mcfg.model_type)
    n_pos = int(getattr(mcfg, "n_positions", None) or getattr(mcfg, "max_position_embeddings", 2048))
    n_ctx = int(cfg.n_ctx or min(n_pos, 4096))
    n_layer = int(getattr(mcfg, "num_hidden_layers", getattr(mcfg, "n_layer", 1)))
    n_embd = int(getattr(mcfg, "hidden_size", getattr(mcfg, "n_embd", 1)))
    probe = _probe_ids(table, settings)
    with torch.no_grad():
        ref = model(torch.as_tensor(probe)[None]).logits[0].numpy()  # [T, V]
    with bundle_writer(out, overwrite) as tmp:
        variants = []
        if "onnx" in cfg.backends:
            with tempfile.TemporaryDirectory() as td:
                src = export_onnx_with_past(folder, td)
                shutil.copy2(src, tmp / "model.onnx")
                if (Path(td) / "model.onnx_data").is_file():
                    shutil.copy2(Path(td) / "model.onnx_data", tmp / "model.onnx_data")
            files = ["model.onnx"] + (["model.onnx_data"] if (tmp / "model.onnx_data").is_file() else [])
            diff = _onnx_diff(tmp / "model.onnx", probe, ref)
            variants.append(variant_record(tmp, "onnx-fp32", "onnx", "fp32", files,
                                           validation=validation_record(diff, 1e-3, 1),
                                           extra={"task": "text-generation-with-past"}))
        if "gguf" in cfg.backends:
            from alignts.export.gguf_writer import vocab_from_hf_tokenizer, write_gguf

            tok = _hf_tokenizer(folder)
            write_gguf(model, tmp / "model-f32.gguf", dtype="f32", **vocab_from_hf_tokenizer(tok),
                       metadata={"paradigm": "injective"})
            diff = _gguf_diff(tmp / "model-f32.gguf", probe, ref)
            variants.append(variant_record(tmp, "gguf-f32", "gguf", "f32", ["model-f32.gguf"],
                                           validation=validation_record(diff, 1e-3, 1),
                                           extra={"architecture": arch}))
        if not variants:
            raise InputError(f"backends={cfg.backends}: expected 'onnx' and/or 'gguf'.")
        shutil.copy2(folder / "tokenizer.json", tmp / "tokenizer.json")
        if (folder / "tokenizer_config.json").is_file():
            shutil.copy2(folder / "tokenizer_config.json", tmp / "tokenizer_config.json")
        extra = ["tokenizer.json"] + (["tokenizer_config.json"] if (tmp / "tokenizer_config.json").is_file() else [])
        finish_bundle(tmp, "injective", arch, variants, extra_files=extra,
                      config=_config(cfg, n_ctx, n_layer, n_embd),
                      codec={**settings.to_dict(), "table": table_to_dict(table), "tokenizer": "tokenizer.json",
                             "vocab": {"digits_merge": info.digits_merge, "bos_id": info.bos_id,
                                       "eos_id": info.eos_id}},
                      limits={"max_context_tokens": n_ctx},
                      training=_training(cfg, data_name, t0, model=str(folder)))
    return Path(out)


def _hf_tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))


def _probe_ids(table, settings: CodecSettings) -> np.ndarray:
    from alignts.kernels.digits import encode_digits

    z = np.linspace(0.2, 1.1, 12)[None] + 0.05 * np.sin(np.arange(12))[None]
    ids, n = encode_digits(z, table, settings.precision)
    return ids[0, : n[0]]


def _onnx_diff(path: Path, probe: np.ndarray, ref: np.ndarray) -> float:
    from alignts.runtime.backends.onnx_causal import OrtCausalLM

    m = OrtCausalLM(path, n_ctx=probe.size + 2)
    got = [m.prefill(probe[:1], 1)[0]]
    for t in probe[1:]:
        got.append(m.step([int(t)])[0])
    return float(np.max(np.abs(np.stack(got) - ref)))


def _gguf_diff(path: Path, probe: np.ndarray, ref: np.ndarray) -> float:
    from alignts.runtime.backends.gguf import LlamaCppModel

    with LlamaCppModel(path, n_ctx=probe.size + 2, n_seq_max=1) as m:
        got = [m.prefill(probe[:1], 1)[0]]
        for t in probe[1:]:
            got.append(m.step([int(t)])[0])
    return float(np.max(np.abs(np.stack(got) - ref)))
