"""BERT (encoder-only) backbones, e.g. the embedded all-MiniLM-L6-v2."""

from __future__ import annotations

from alignts.export.backbones import Arch, register


def _tiny_config(d: dict):
    from transformers import BertConfig

    return BertConfig(vocab_size=d["vocab"], hidden_size=d["d_model"], num_hidden_layers=d["n_layers"],
                      num_attention_heads=d["n_heads"], intermediate_size=d["d_ff"],
                      max_position_embeddings=d["max_pos"])


def _model_class():
    from transformers import BertModel

    return BertModel


def _truncate(model, k: int) -> None:
    model.encoder.layer = model.encoder.layer[:k]
    model.config.num_hidden_layers = k


def _forward(model, embeds):
    # BertModel adds position and token-type embeddings, then its embedding LayerNorm.
    return model(inputs_embeds=embeds).last_hidden_state


def _first(out):
    return out[0] if isinstance(out, tuple) else out  # transformers 4 returns tuples from these modules


def _forward_rows(model, embeds, rows):
    """The final hidden states of the tokens ``rows`` (int64 ``[n]``) only: the last layer's attention reads every
    token, then its output projection, residual, LayerNorms and FFN run on those rows, the cut alignts' llama.cpp
    makes in its BERT graph (``inp_out_ids``; scripts/patch_llama.py changes 19 and 20). The same values as
    ``_forward``'s rows: with no mask, the layers run as ``BertModel`` runs them (its mask of ones adds zeros)."""
    h = model.embeddings(inputs_embeds=embeds)
    *body, last = model.encoder.layer
    for layer in body:
        h = _first(layer(h))
    out = last.attention.output
    x = out.dense(_first(last.attention.self(h)).index_select(1, rows))
    x = out.LayerNorm(out.dropout(x) + h.index_select(1, rows))
    return last.output(last.intermediate(x), x)


@register("bert")
def arch() -> Arch:
    return Arch(name="bert", model_types=("bert",), causal=False,
                lora_targets=("query", "key", "value"),
                trainable_names=("LayerNorm", "position_embeddings"),
                tiny_config=_tiny_config, model_class=_model_class, truncate=_truncate,
                n_layers=lambda c: c.num_hidden_layers,
                word_embeddings=lambda m: m.embeddings.word_embeddings, forward_embeds=_forward,
                forward_rows=_forward_rows)
