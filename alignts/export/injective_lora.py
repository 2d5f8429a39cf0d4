"""``alignts fit injective --lora``: LoRA fine-tuning of the causal LM on digit strings of the user's series.

The base is the embedded numeric LM (rebuilt in torch from its f16 GGUF) or a local GPT-2 folder. Documents
are windows of the user's series (the last ``horizon`` points of each series are left out), scaled with the
LLMTime scaler on a prefix and encoded with the bundle's codec table, exactly as forecasting prompts are.
Exports: the base GGUF + a llama.cpp LoRA adapter GGUF (``write_lora_adapter_gguf``, checked with
``check_lora_adapter`` before llama.cpp sees it) and a fused GGUF (LoRA merged into the weights).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from alignts.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraFitConfig:
    """LoRA fine-tuning options.

    data: the series to tune on (CSV / .tsf / statsmodels:NAME). rank, alpha: LoRA (on attention c_attn and
    c_proj). steps, batch_size, lr: AdamW. max_tokens: tokens per training row (<= the model's context).
    """

    data: str
    rank: int = 8
    alpha: float = 16.0
    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    max_tokens: int = 512
    seed: int = 0
    threads: int = 2


def gpt2_from_gguf(path: str | Path):
    """A transformers GPT2LMHeadModel with the weights of a gpt2 GGUF (f32/f16/q8_0 dequantized)."""
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignts.runtime.gguf_check import check_gguf

    info = check_gguf(path, expect_arch="gpt2")
    r = GGUFReader(str(path))
    t = {x.name: np.asarray(dequantize(x.data, x.tensor_type), dtype=np.float32).reshape(
        tuple(int(d) for d in reversed(x.shape))) for x in r.tensors}
    cfg = GPT2Config(vocab_size=info.n_vocab, n_positions=info.n_ctx_train, n_embd=info.n_embd,
                     n_layer=info.n_layer, n_head=info.n_head, bos_token_id=0, eos_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    sd = {"transformer.wte.weight": t["token_embd.weight"], "transformer.wpe.weight": t["position_embd.weight"],
          "transformer.ln_f.weight": t["output_norm.weight"], "transformer.ln_f.bias": t["output_norm.bias"]}
    names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
             "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for i in range(cfg.n_layer):
        for hf, gg in names.items():
            w = t[f"blk.{i}.{gg}.weight"]
            sd[f"transformer.h.{i}.{hf}.weight"] = w.T if w.ndim == 2 else w  # Conv1D stores [in, out]
            sd[f"transformer.h.{i}.{hf}.bias"] = t[f"blk.{i}.{gg}.bias"]
    sd["lm_head.weight"] = t.get("output.weight", t["token_embd.weight"])
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()},
                                                strict=False)
    missing = [m for m in missing if not m.endswith("attn.bias") and not m.endswith("masked_bias")]
    if missing or unexpected:
        raise InputError(f"{path}: GGUF tensors do not map onto GPT-2 (missing {missing}, unexpected {unexpected}).")
    return model.eval()


def lora_documents(data_spec: str, table, settings, horizon: int, n_docs: int, max_tokens: int, bos: int,
                   rng: np.random.Generator) -> list[np.ndarray]:
    """Token documents cut from the user's series (their last ``horizon`` points left out)."""
    from alignts.data import load_data
    from alignts.data.series import fill_missing
    from alignts.kernels.digits import encode_digits
    from alignts.kernels.scaler import llmtime_scale, llmtime_scaler

    data = load_data(data_spec)
    series = []
    for i in range(data.n_channels):
        s = data.series(i)
        s = fill_missing(s[~np.isnan(s)][:, None])[:, 0] if np.isnan(s).any() else s
        s = s[:-horizon] if s.size > horizon + 16 else s
        if s.size >= 16 and np.ptp(s) > 0:
            series.append(s)
    if not series:
        raise InputError(f"{data_spec}: no series with >= 16 points (after holding out {horizon}) to tune on.")
    per_value = settings.precision + 2
    docs = []
    for _ in range(n_docs):
        s = series[rng.integers(len(series))]
        n = int(min(s.size, max(16, (max_tokens - 1) // per_value)))
        n = int(rng.integers(min(16, n), n + 1))
        start = int(rng.integers(0, s.size - n + 1))
        w = s[start:start + n][None]
        k = max(2, int(n * rng.uniform(0.6, 1.0)))
        off, sc = llmtime_scaler(w[:, :k], settings.alpha, settings.beta, settings.basic)
        lim = (10 ** settings.max_digits - 1) / 10 ** settings.precision
        ids, ln = encode_digits(np.clip(llmtime_scale(w, off, sc), -lim, lim), table, settings.precision)
        docs.append(np.r_[bos, ids[0, : ln[0]]][:max_tokens])
    return docs


def fit_injective_lora(out: str | Path, cfg, lcfg: LoraFitConfig, overwrite: bool = False) -> Path:
    """Tune LoRA on ``lcfg.data`` and write an Injective bundle with adapter and fused variants."""
    import shutil
    import tempfile

    import torch
    from peft import LoraConfig, get_peft_model

    from alignts.export.bundle import command_line, finish_bundle, variant_record
    from alignts.export.fit_injective import NUMERIC_LM_DIR, fit_injective
    from alignts.export.gguf_writer import lora_tensors_from_peft, write_gguf, write_lora_adapter_gguf
    from alignts.export.numeric_lm import gguf_vocab
    from alignts.runtime.codec_table import CodecSettings, table_from_dict
    from alignts.runtime.gguf_check import check_lora_adapter
    from alignts.runtime.configs import runtime_config
    from alignts.runtime.manifest import bundle_writer, read_manifest, sha256_file

    if cfg.model is not None:
        raise InputError("--lora tunes the embedded numeric LM in this version; leave --model out "
                         "(LoRA on other GGUF/HF models is not built yet).")
    t0 = time.time()
    torch.manual_seed(lcfg.seed)
    torch.set_num_threads(lcfg.threads)
    rng = np.random.default_rng(lcfg.seed)
    with tempfile.TemporaryDirectory() as td:
        base_bundle = fit_injective(Path(td) / "base", cfg)
        m = read_manifest(base_bundle)
        settings = CodecSettings.from_dict(m.codec)
        table = table_from_dict(m.codec["table"])
        base_variant = next(v for v in m.variants if v.dtype == "f16")
        base_gguf = base_bundle / base_variant.files[0]
        model = gpt2_from_gguf(base_gguf)
        n_ctx = runtime_config(m).n_ctx
        bos = int(m.codec["vocab"]["bos_id"])
        docs = lora_documents(lcfg.data, table, settings, cfg.horizon, lcfg.steps * lcfg.batch_size,
                              min(lcfg.max_tokens, n_ctx), bos, rng)
        peft_model = get_peft_model(model, LoraConfig(r=lcfg.rank, lora_alpha=lcfg.alpha, lora_dropout=0.0,
                                                      target_modules=["c_attn", "c_proj"], fan_in_fan_out=True,
                                                      bias="none"))
        peft_model.train()
        opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lcfg.lr)
        losses = []
        for step in range(lcfg.steps):
            batch = docs[step * lcfg.batch_size:(step + 1) * lcfg.batch_size]
            T = max(d.size for d in batch)
            ids = np.zeros((len(batch), T), dtype=np.int64)
            labels = np.full((len(batch), T), -100, dtype=np.int64)
            mask = np.zeros((len(batch), T), dtype=np.int64)
            for i, d in enumerate(batch):
                ids[i, : d.size], labels[i, : d.size], mask[i, : d.size] = d, d, 1
            loss = peft_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                              labels=torch.from_numpy(labels)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
            if step % 20 == 0:
                log.info("lora step %d loss %.4f", step, losses[-1])
        peft_model.eval()
        lt = lora_tensors_from_peft(peft_model)
        with bundle_writer(out, overwrite) as tmp:
            shutil.copy2(base_gguf, tmp / "base.gguf")
            base_sha = sha256_file(tmp / "base.gguf")
            write_lora_adapter_gguf(lt, None, tmp / "lora.gguf", base_sha256=base_sha,
                                    metadata={"paradigm": "injective"})
            check_lora_adapter(tmp / "lora.gguf", tmp / "base.gguf")
            fused = peft_model.merge_and_unload()
            write_gguf(fused, tmp / "fused-f16.gguf", dtype="f16", **gguf_vocab(), metadata={"paradigm": "injective"})
            shutil.copy2(NUMERIC_LM_DIR / "tokenizer.json", tmp / "tokenizer.json")
            variants = [
                variant_record(tmp, "gguf-f16-fused", "gguf", "f16", ["fused-f16.gguf"],
                               extra={"architecture": "gpt2", "lora": "fused"}),
                variant_record(tmp, "gguf-f16-lora", "gguf", "f16", ["base.gguf", "lora.gguf"],
                               extra={"architecture": "gpt2", "lora_file": "lora.gguf", "lora_scale": 1.0}),
            ]
            finish_bundle(tmp, "injective", "gpt2", variants, extra_files=["tokenizer.json"],
                          config=dict(m.config), codec=dict(m.codec), limits=dict(m.limits),
                          lora={"rank": lcfg.rank, "alpha": lcfg.alpha, "targets": ["c_attn", "c_proj"],
                                "fused": False, "base_sha256": base_sha},
                          training={"command": command_line(), "data": lcfg.data, "seed": lcfg.seed,
                                    "wall_s": round(time.time() - t0, 1), "trained": True,
                                    "lora_steps": lcfg.steps, "loss_first": losses[0], "loss_last": losses[-1],
                                    "config": asdict(lcfg)})
    return Path(out)
