"""LLaMA-family backbones (Llama, SmolLM; RoPE, RMSNorm)."""

from __future__ import annotations

from alignts.export.backbones import Arch, register


def _tiny_config(d: dict):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=d["vocab"], hidden_size=d["d_model"], num_hidden_layers=d["n_layers"],
                       num_attention_heads=d["n_heads"], num_key_value_heads=max(1, d["n_heads"] // 2),
                       intermediate_size=d["d_ff"], max_position_embeddings=d["max_pos"], tie_word_embeddings=True)


def _model_class():
    from transformers import LlamaModel

    return LlamaModel


def _truncate(model, k: int) -> None:
    model.layers = model.layers[:k]
    model.config.num_hidden_layers = k
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = list(model.config.layer_types)[:k]


def _forward(model, embeds):
    # Positions come from RoPE inside attention; the output is after the final RMSNorm.
    return model(inputs_embeds=embeds, use_cache=False).last_hidden_state


@register("llama")
def arch() -> Arch:
    return Arch(name="llama", model_types=("llama",), causal=True,
                lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"),
                trainable_names=("norm",),
                tiny_config=_tiny_config, model_class=_model_class, truncate=_truncate,
                n_layers=lambda c: c.num_hidden_layers, word_embeddings=lambda m: m.embed_tokens,
                forward_embeds=_forward)
