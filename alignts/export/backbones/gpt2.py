"""GPT-2 backbones (GPT4TS uses the first 6 blocks of GPT-2)."""

from __future__ import annotations

from alignts.export.backbones import Arch, register


def _tiny_config(d: dict):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=d["vocab"], n_embd=d["d_model"], n_layer=d["n_layers"], n_head=d["n_heads"],
                      n_inner=d["d_ff"], n_positions=d["max_pos"])


def _model_class():
    from transformers import GPT2Model

    return GPT2Model


def _truncate(model, k: int) -> None:
    model.h = model.h[:k]
    model.config.n_layer = k


def _forward(model, embeds):
    # GPT2Model adds the learned position embeddings (wpe) and ends with ln_f.
    return model(inputs_embeds=embeds, use_cache=False).last_hidden_state


@register("gpt2")
def arch() -> Arch:
    # c_attn is a Conv1D (weights stored [in, out]): PEFT needs fan_in_fan_out=True for it (LLM4TS, CALF).
    return Arch(name="gpt2", model_types=("gpt2",), causal=True, lora_targets=("c_attn",),
                trainable_names=("ln_", "wpe"),
                tiny_config=_tiny_config, model_class=_model_class, truncate=_truncate,
                n_layers=lambda c: c.n_layer, word_embeddings=lambda m: m.wte, forward_embeds=_forward)
