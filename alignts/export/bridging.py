"""The Bridging (Time-LLM) model in torch: a reprogramming adapter into a frozen LM, prompt-as-prefix.

Graph per series (channel-independent, ``x  # [B, C, L]`` is flattened to ``[S, L]``):

RevIN (no affine, eps 1e-5) -> patches (16/8, replication pad by stride) -> patch embedding
(Conv1d(P -> d_model, kernel 3, circular) over the patch axis) -> reprogramming cross-attention from patches
onto K text prototypes (``Linear(V -> K)`` over the frozen word embeddings) projected to the LM width ->
``[prompt prefix embeddings ; reprogrammed patches]`` -> frozen LM on input embeddings -> last N hidden
states, first d_ff features, flattened -> Linear -> H -> de-normalize.

Only the patch embedding, the prototype mapping, the reprogramming layer and the head are trained.

``linear_skip``: a frozen Linear(L -> H) on the normalized context, fitted in closed form before training
(:func:`alignts.export.linear_skip.fit_linear_skip`, as Internal's), is added to the head's output, and the head
starts at 0: the untrained model forecasts as that ridge and the adapter + LM learn the residual.

``ablate_lm="identity"``: the LM-removed twin (Tan et al., NeurIPS 2024, "w/o LLM"): the frozen LM is replaced by
identity, so the reprogrammed patches go straight to the head (no prompt, no backbone at run time); trained the
same way.
For export the prototypes are constant, so the reprogramming keys and values are precomputed and the keys folded
into the query projection (:class:`AdapterExport`); no ``[V, K]`` matrix ships to the runtime.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from alignts.errors import InputError
from alignts.runtime.configs import BridgingRuntimeConfig
from alignts.runtime.prompt import PromptConfig, prompt_ids
from alignts.runtime.tokenize import PromptTokenizer


@dataclass(frozen=True)
class BridgingConfig:
    """Bridging (Time-LLM) settings; serialized into the manifest's ``config``.

    context_len, horizon: L and H.
    patch_len, stride:  patching (Time-LLM: 16, 8); ``n_patches = (L - patch_len) // stride + 2``.
    d_model:            patch-embedding width (Time-LLM ETTh1: 32).
    n_heads, d_keys:    reprogramming attention heads and per-head key width (Time-LLM: 8, 128).
    n_prototypes:       number of text prototypes K (Time-LLM: 1000).
    d_ff:               hidden features per patch kept for the head (<= LM width).
    dropout:            dropout on the patch embedding, attention and head input (training only).
    eps:                RevIN eps.
    prompt_len:         prompt tokens, left-padded or cut to this length (0 = choose at fit time).
    description:        dataset description in the prompt.
    top_k:              lags listed in the prompt.
    ablate_lm:          ``"none"`` (the frozen LM runs) or ``"identity"`` (the LM-removed twin, see above).
    linear_skip:        add the fitted Linear(L -> H) on the normalized context (see above); the head starts at 0.
    """

    context_len: int = 336
    horizon: int = 96
    patch_len: int = 16
    stride: int = 8
    d_model: int = 32
    n_heads: int = BridgingRuntimeConfig.n_heads
    d_keys: int = BridgingRuntimeConfig.d_keys
    n_prototypes: int = BridgingRuntimeConfig.n_prototypes
    d_ff: int = 128
    dropout: float = 0.1
    eps: float = BridgingRuntimeConfig.eps
    prompt_len: int = 0
    description: str = BridgingRuntimeConfig.description
    top_k: int = BridgingRuntimeConfig.top_k
    ablate_lm: str = BridgingRuntimeConfig.ablate_lm
    linear_skip: bool = False

    @property
    def n_patches(self) -> int:
        return (self.context_len - self.patch_len) // self.stride + 2

    def check(self) -> None:
        """Raise InputError on settings no model can be built with (before any data or LM is loaded)."""
        if self.ablate_lm not in ("none", "identity"):
            raise InputError(f"ablate_lm={self.ablate_lm!r}: expected 'none' or 'identity'. Fix: --ablate-lm identity "
                             "for the LM-removed twin, or leave it out.")
        if self.context_len < self.patch_len:
            raise InputError(f"context_len={self.context_len} is shorter than patch_len={self.patch_len}; "
                             "pass a longer --context.")
        if self.linear_skip and self.stride > self.patch_len:
            raise InputError(f"linear_skip with stride={self.stride} > patch_len={self.patch_len}: the patches skip "
                             "points, so the runtimes cannot read the context back from them. Fix: --stride <= "
                             "--patch-len, or leave out --linear-skip.")

    def prompt(self) -> PromptConfig:
        return PromptConfig(description=self.description, context_len=self.context_len, horizon=self.horizon,
                            top_k=self.top_k, eps=self.eps)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n_patches": self.n_patches}


def patch_index(context_len: int, patch_len: int, stride: int) -> torch.Tensor:
    """Gather index ``[N, P]`` into ``x[..., L]`` that equals replication padding by ``stride`` then unfold."""
    n = (context_len - patch_len) // stride + 2
    idx = torch.arange(n)[:, None] * stride + torch.arange(patch_len)[None, :]
    return idx.clamp(max=context_len - 1)


class PatchEmbedding(nn.Module):
    """Conv1d(P -> d_model, kernel 3, circular padding, no bias) over the patch axis: ``[S, N, P] -> [S, N, D]``."""

    def __init__(self, patch_len: int, d_model: int):
        super().__init__()
        self.conv = nn.Conv1d(patch_len, d_model, kernel_size=3, padding=0, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, patches):  # [S, N, P]
        x = patches.transpose(1, 2)  # [S, P, N]
        x = torch.cat([x[..., -1:], x, x[..., :1]], dim=-1)  # circular pad 1 (explicit: exports everywhere)
        return self.conv(x).transpose(1, 2)  # [S, N, D]


class Reprogramming(nn.Module):
    """Cross-attention from patch embeddings (queries) to text prototypes (keys/values), out to the LM width."""

    def __init__(self, d_model: int, n_heads: int, d_keys: int, d_llm: int, dropout: float = 0.1):
        super().__init__()
        self.n_heads, self.d_keys = n_heads, d_keys
        self.query = nn.Linear(d_model, n_heads * d_keys)
        self.key = nn.Linear(d_llm, n_heads * d_keys)
        self.value = nn.Linear(d_llm, n_heads * d_keys)
        self.out = nn.Linear(n_heads * d_keys, d_llm)
        self.dropout = nn.Dropout(dropout)

    def attend(self, q_in, keys, values):
        """q_in [S, N, D]; keys, values [K, H*E] (already projected) -> [S, N, d_llm]."""
        S, N, _ = q_in.shape
        H, E = self.n_heads, self.d_keys
        q = self.query(q_in).reshape(S, N, H, E).transpose(1, 2)  # [S, H, N, E]
        k = keys.reshape(-1, H, E).permute(1, 2, 0)  # [H, E, K]
        v = values.reshape(-1, H, E).transpose(0, 1)  # [H, K, E]
        att = torch.softmax(torch.matmul(q, k) / math.sqrt(E), dim=-1)  # [S, H, N, K]
        o = torch.matmul(self.dropout(att), v)  # [S, H, N, E]
        return self.out(o.transpose(1, 2).reshape(S, N, H * E))

    def forward(self, q_in, prototypes):  # prototypes [K, d_llm]
        return self.attend(q_in, self.key(prototypes), self.value(prototypes))


class BridgingModel(nn.Module):
    """Time-LLM over a frozen :class:`~alignts.export.backbones.Backbone`.

    forward(x  # [B, C, L] float32, scaled data) -> forecast  # [B, C, H]
    The prompt ids are computed from ``x`` with the runtime's own prompt/tokenizer code.
    prototypes: a fixed ``[K, d_llm]`` prototype table instead of the trainable ``[V, K]`` mapping (the
    rebuilt reference of ``alignts.export.reference.load_torch``).
    """

    def __init__(self, backbone, cfg: BridgingConfig, tokenizer: PromptTokenizer, prototypes=None):
        super().__init__()
        if cfg.prompt_len < 1:
            raise InputError(f"BridgingConfig.prompt_len must be >= 1 here, got {cfg.prompt_len}; "
                             "choose it with natural_prompt_len() before building the model.")
        d_llm = int(backbone.d_model)
        if not 1 <= cfg.d_ff <= d_llm:
            raise InputError(f"d_ff={cfg.d_ff}: expected 1..{d_llm} (the backbone width). Fix: pass a smaller --d-ff.")
        cfg.check()
        self.cfg = cfg
        self.backbone_ref = backbone  # dataclass; its model is registered below so .to()/eval() reach it
        self.lm = backbone.model
        for p in self.lm.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.prompt_cfg = cfg.prompt()
        emb = torch.as_tensor(np.asarray(backbone.word_embeddings.detach().cpu() if hasattr(
            backbone.word_embeddings, "detach") else backbone.word_embeddings), dtype=torch.float32)
        self.register_buffer("word_emb", emb, persistent=False)  # [V, d] frozen
        V = emb.shape[0]
        self.register_buffer("patch_idx", patch_index(cfg.context_len, cfg.patch_len, cfg.stride), persistent=False)
        self.patch_embed = PatchEmbedding(cfg.patch_len, cfg.d_model)
        if prototypes is None:
            self.mapping = nn.Linear(V, cfg.n_prototypes)
        else:  # fixed (trained) prototypes [K, d_llm]: the rebuilt reference, no [V, K] mapping
            protos = torch.as_tensor(prototypes, dtype=torch.float32)
            if tuple(protos.shape) != (cfg.n_prototypes, d_llm):
                raise InputError(f"prototypes of shape {tuple(protos.shape)}: expected ({cfg.n_prototypes}, {d_llm}) "
                                 "(n_prototypes, backbone width).")
            self.mapping = None
            self.register_buffer("prototype_table", protos.clone())
        self.reprogram = Reprogramming(cfg.d_model, cfg.n_heads, cfg.d_keys, d_llm, cfg.dropout)
        self.head = nn.Linear(cfg.d_ff * cfg.n_patches, cfg.horizon)
        self.dropout = nn.Dropout(cfg.dropout)
        self.skip = None
        if cfg.linear_skip:  # the head starts at 0: the untrained model is the skip's ridge
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            self.skip = nn.Linear(cfg.context_len, cfg.horizon)
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)
            self.skip.requires_grad_(False)  # fitted in closed form (fit_linear_skip), then frozen

    def train(self, mode: bool = True):
        super().train(mode)
        self.lm.eval()  # the frozen LM never runs its dropout
        return self

    def prototypes(self) -> torch.Tensor:
        """Text prototypes ``[K, d_llm]``: Linear(V -> K) applied over the vocabulary axis of the embeddings
        (or the fixed table the model was built with)."""
        if self.mapping is None:
            return self.prototype_table
        return self.mapping(self.word_emb.t()).t()

    def prompt_ids(self, x_flat: torch.Tensor) -> torch.Tensor:
        ids = prompt_ids(x_flat.detach().cpu().numpy(), self.prompt_cfg, self.tokenizer, self.cfg.prompt_len)
        return torch.from_numpy(ids).to(x_flat.device)

    def normalize(self, x_flat):
        """RevIN: ``[S, L] -> (z [S, L], mean [S, 1], std [S, 1])``."""
        mean = x_flat.mean(dim=-1, keepdim=True)
        std = torch.sqrt(x_flat.var(dim=-1, keepdim=True, unbiased=False) + self.cfg.eps)
        return (x_flat - mean) / std, mean, std

    def adapter(self, patches, prototypes=None):
        """``patches [S, N, P] -> [S, N, d_llm]`` (embedding + reprogramming)."""
        protos = self.prototypes() if prototypes is None else prototypes
        return self.reprogram(self.dropout(self.patch_embed(patches)), protos)

    def head_forward(self, hidden_last):
        """``hidden_last [S, N, d_llm]`` (the last N hidden states) -> normalized forecast ``[S, H]``."""
        S = hidden_last.shape[0]
        return self.head(self.dropout(hidden_last[..., :self.cfg.d_ff].reshape(S, -1)))

    def forward_flat(self, x_flat, ids=None):
        """``x_flat [S, L]`` -> forecast ``[S, H]`` (de-normalized)."""
        z, mean, std = self.normalize(x_flat)
        enc = self.adapter(z[:, self.patch_idx])  # [S, N, d]
        if self.cfg.ablate_lm == "identity":  # the LM-removed twin: no prompt, no LM
            y = self.head_forward(enc)
        else:
            ids = self.prompt_ids(x_flat) if ids is None else ids
            prefix = self.word_emb[ids]  # [S, T, d]
            hidden = self.backbone_ref.forward_embeds(torch.cat([prefix, enc], dim=1), model=self.lm)
            y = self.head_forward(hidden[:, -self.cfg.n_patches:])
        if self.skip is not None:
            y = y + self.skip(z)
        return y * std + mean

    def forward(self, x):  # [B, C, L] -> [B, C, H]
        if x.shape[-1] != self.cfg.context_len:
            raise InputError(f"expected context length {self.cfg.context_len}, got {x.shape[-1]}")
        lead = x.shape[:-1]
        y = self.forward_flat(x.reshape(-1, x.shape[-1]).float())
        return y.reshape(*lead, self.cfg.horizon)


class AdapterExport(nn.Module):
    """Export form of the adapter: ``patches [S, N, P] -> embeddings [S, N, d_llm]``, the same function as
    ``model.adapter`` (eval) with what depends only on the weights computed once, in float64:

    - the prototypes' keys folded into the query projection: head h's scores ``(x Wq_h^T + bq_h) K_h^T / sqrt(E)``
      are ``[x, 1] G_h`` with ``G_h = [Wq_h^T K_h^T ; bq_h K_h^T] / sqrt(E)`` ``[D + 1, K]``, one product of
      width D + 1 (the patch embedding's 32, and the bias as a row) where the query and score products had E
      then E (Time-LLM: 128); for 8 heads, 1000 prototypes and d_llm 384 a patch costs 3.4 MFLOP instead of 5.0;
    - the values ``[H, K, E]``, one block a head;
    - every patch of every series in one product a head (``[H, S*N, K]``), not one small product a series.
    """

    def __init__(self, model: BridgingModel):
        super().__init__()
        rp = model.reprogram
        H, E = rp.n_heads, rp.d_keys
        with torch.no_grad():
            protos = model.prototypes().double()
            keys = (protos @ rp.key.weight.double().t() + rp.key.bias.double()).reshape(-1, H, E)  # [K, H, E]
            values = (protos @ rp.value.weight.double().t() + rp.value.bias.double()).reshape(-1, H, E)
            wq = rp.query.weight.double().reshape(H, E, -1)  # [H, E, D]
            bq = rp.query.bias.double().reshape(H, E)
            scale = 1.0 / math.sqrt(E)
            g = torch.einsum("hed,khe->hdk", wq, keys)  # [H, D, K]
            c = torch.einsum("he,khe->hk", bq, keys)[:, None, :]  # [H, 1, K]
        self.patch_embed = model.patch_embed
        self.out = rp.out
        self.register_buffer("scores_w", (torch.cat([g, c], dim=1) * scale).float().contiguous())  # [H, D + 1, K]
        self.register_buffer("values", values.transpose(0, 1).float().contiguous())  # [H, K, E]

    def forward(self, patches):
        x = self.patch_embed(patches)  # [S, N, D]
        n, d = x.shape[1], x.shape[2]
        x1 = nn.functional.pad(x.reshape(1, -1, d), (0, 1), value=1.0)  # [1, S*N, D + 1]: the last column 1
        att = torch.softmax(torch.matmul(x1, self.scores_w), dim=-1)  # [H, S*N, K]
        o = torch.matmul(att, self.values)  # [H, S*N, E]
        return self.out(o.transpose(0, 1).reshape(-1, n, o.shape[0] * o.shape[2]))


class BackboneExport(nn.Module):
    """Export form of the frozen LM: ``inputs_embeds [S, T, d] -> hidden [S, T, d]``; with ``output_rows [n]``
    (int64 token positions) ``-> [S, n, d]``, those tokens' states only (``Backbone.forward_rows``)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone_ref = backbone
        self.lm = backbone.model

    def forward(self, inputs_embeds, output_rows=None):
        if output_rows is None:
            return self.backbone_ref.forward_embeds(inputs_embeds, model=self.lm)
        return self.backbone_ref.forward_rows(inputs_embeds, output_rows, model=self.lm)
