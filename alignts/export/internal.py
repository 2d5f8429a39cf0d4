"""The Internal paradigm model (GPT4TS / LLM4TS): the LM itself is tuned, with LoRA.

RevIN (no affine) -> patches (replication pad by stride) -> Linear(P -> d) -> the first k blocks of a backbone
LM with LoRA on attention (layer norms and position embeddings trainable) -> flatten -> Linear(d * N -> H)
-> de-normalize. Channel-independent: every channel is its own series.

Optional ``linear_skip``: a frozen Linear(L -> H) on the normalized context, fitted in closed form (ridge, its
strength chosen on the validation windows) before training, is added to the head's output; the LM and head
then learn the residual. Off by default (GPT4TS as published).

Optional ``ablate_lm="identity"``: the LM-removed twin (Tan et al., NeurIPS 2024, "w/o LLM"): the same
pipeline with the LM blocks replaced by identity, ``patches -> Linear(P -> d) -> flatten -> Linear -> H``,
trained the same way; it shows what the LM itself buys.

Split in two so the export carries only the learned part: :class:`InternalCore` maps normalized
``patches [S, N, P]`` to a normalized forecast ``[S, H]`` (exported to ONNX); :class:`InternalModel` wraps it
with the torch RevIN/patching that the runtime replaces with the numba kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignts.errors import InputError
from alignts.runtime.configs import InternalRuntimeConfig

ABLATIONS = ("none", "identity")  # what replaces the LM: nothing (it runs) or identity (the LM-removed twin)


@dataclass(frozen=True)
class InternalConfig:
    """Shape and LoRA settings of an Internal model (serialized into the manifest's ``config``/``lora``).

    context_len, horizon: L and H.
    patch_len, stride:    P and the patch stride; ``n_patches = (L - P) // stride + 2``.
    eps:                  RevIN epsilon, ``std = sqrt(var + eps)``.
    lora_rank, lora_alpha, lora_dropout: LoRA settings (LLM4TS: rank 8, alpha 32).
    lora_targets:         module names LoRA wraps; None = the architecture's attention projections.
    train_norms:          train layer norms and position embeddings too (GPT4TS).
    head_init:            ``"zeros"``: the head starts at 0, so the untrained model forecasts the context
                          mean (a sane start when the budget allows few steps); ``"default"``: torch's init.
    linear_skip:          add a frozen Linear(L -> H) on the normalized context (see the module docstring;
                          fitted by :func:`alignts.export.linear_skip.fit_linear_skip`).
    ablate_lm:            ``"none"`` (the LM runs) or ``"identity"`` (the LM blocks are replaced by identity:
                          no LoRA, nothing of the LM in the exported graph).
    """

    context_len: int = 336
    horizon: int = 96
    patch_len: int = 16
    stride: int = 8
    eps: float = InternalRuntimeConfig.eps
    lora_rank: int = 8
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] | None = None
    train_norms: bool = True
    head_init: str = "zeros"
    linear_skip: bool = False
    ablate_lm: str = "none"

    @property
    def n_patches(self) -> int:
        return (self.context_len - self.patch_len) // self.stride + 2

    def check(self) -> None:
        if self.context_len < self.patch_len or self.stride < 1 or self.horizon < 1:
            raise InputError(f"context_len={self.context_len}, patch_len={self.patch_len}, stride={self.stride}, "
                             f"horizon={self.horizon}: expected context_len >= patch_len >= 1, stride >= 1, "
                             "horizon >= 1. Fix: pass a longer --context.")
        if self.linear_skip and self.stride > self.patch_len:
            raise InputError(f"linear_skip with stride={self.stride} > patch_len={self.patch_len}: the patches skip "
                             "context points, so the skip path cannot read the context. Fix: --stride <= --patch-len.")
        if self.ablate_lm not in ABLATIONS:
            raise InputError(f"ablate_lm={self.ablate_lm!r}: expected one of {ABLATIONS}. Fix: --ablate-lm identity "
                             "for the LM-removed twin, or leave it out.")
        if self.lora_rank < 0:
            raise InputError(f"lora_rank={self.lora_rank}: expected >= 0 (0 = no LoRA).")


def _torch():
    import torch
    from torch import nn

    return torch, nn


def build_core(backbone, cfg: InternalConfig, seed: int = 0):
    """An :class:`InternalCore` around ``backbone`` (modified in place: LoRA layers are injected)."""
    torch, nn = _torch()

    class InternalCore(nn.Module):
        """patches [S, N, P] (normalized) -> forecast [S, H] (normalized)."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(seed)
            self.patch_embed = nn.Linear(cfg.patch_len, backbone.d_model)
            self.lm = None if cfg.ablate_lm == "identity" else backbone.model
            self.head = nn.Linear(backbone.d_model * cfg.n_patches, cfg.horizon)
            if cfg.head_init == "zeros":
                nn.init.zeros_(self.head.weight)
                nn.init.zeros_(self.head.bias)
            self._peft = None  # kept out of the module tree: it shares self.lm's parameters
            self.cfg = cfg
            if self.lm is None:  # the LM-removed twin: no LM, no LoRA
                self.targets = ()
                self._add_skip()
                return
            targets = tuple(cfg.lora_targets or backbone.lora_targets)
            for p in self.lm.parameters():
                p.requires_grad_(False)
            if cfg.lora_rank > 0:
                from peft import LoraConfig, get_peft_model

                lcfg = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                  target_modules=list(targets), fan_in_fan_out=backbone.name == "gpt2",
                                  bias="none")
                # get_peft_model swaps LoRA layers into self.lm in place and freezes the rest.
                object.__setattr__(self, "_peft", get_peft_model(self.lm, lcfg))
            if cfg.train_norms:
                for n, p in self.lm.named_parameters():
                    if any(t in n for t in backbone.trainable_names()):
                        p.requires_grad_(True)
            self.targets = targets
            self._add_skip()  # after LoRA: its init draws from the seeded RNG in this order

        def _add_skip(self):
            self.skip = None
            if cfg.linear_skip:
                self.skip = nn.Linear(cfg.context_len, cfg.horizon)
                nn.init.zeros_(self.skip.weight)
                nn.init.zeros_(self.skip.bias)
                self.skip.requires_grad_(False)  # fitted in closed form (fit_linear_skip), then frozen

        def forward(self, patches):  # [S, N, P] -> [S, H]
            e = self.patch_embed(patches)  # [S, N, d]
            h = e if self.lm is None else backbone.forward_embeds(e, model=self.lm)  # [S, N, d]
            y = self.head(h.reshape(h.shape[0], -1))
            if self.skip is not None:
                y = y + self.skip(context_from_patches(patches, cfg.stride, cfg.context_len))
            return y

        def lora_state(self) -> dict:
            """The LoRA A/B tensors (unfused), by parameter name."""
            if self.lm is None:
                return {}
            return {n: p.detach().clone() for n, p in self.lm.named_parameters() if "lora_" in n}

        def fuse_lora(self) -> None:
            """Merge LoRA into the base weights (merge_and_unload); the module then holds plain layers."""
            if self._peft is not None:
                merged = self._peft.merge_and_unload()
                self.lm = merged
                object.__setattr__(self, "_peft", None)

        @property
        def fused(self) -> bool:
            return self._peft is None

    return InternalCore()


def context_from_patches(patches, stride: int, context_len: int):
    """The normalized context ``[S, L]`` back from replication-padded patches ``[S, N, P]`` (torch).

    Patch n starts at ``n * stride``: the first ``stride`` values of every patch but the last, then the whole
    last patch, cover the padded series from its start; its first L values are the context. The runtime's
    numpy twin is ``alignts.kernels.patch.context_from_patches``.
    """
    import torch

    head = patches[:, :-1, :stride].reshape(patches.shape[0], -1)
    return torch.cat([head, patches[:, -1, :]], dim=-1)[:, :context_len]


def build_model(backbone, cfg: InternalConfig, seed: int = 0):
    """The trainable :class:`InternalModel`: x [B, C, L] -> forecast [B, C, H] (RevIN + patching in torch)."""
    torch, nn = _torch()
    cfg.check()
    core = build_core(backbone, cfg, seed)

    class InternalModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.core = core
            self.cfg = cfg
            idx = (torch.arange(cfg.n_patches)[:, None] * cfg.stride + torch.arange(cfg.patch_len)[None, :])
            self.register_buffer("patch_index", idx, persistent=False)  # [N, P]

        def normalize_patch(self, x):  # x [S, L] -> patches [S, N, P], mean [S, 1], std [S, 1]
            mean = x.mean(-1, keepdim=True)
            std = torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + cfg.eps)
            z = (x - mean) / std
            z = torch.cat([z, z[:, -1:].expand(-1, cfg.stride)], dim=-1)  # replication pad by stride
            return z[:, self.patch_index], mean, std  # gather, not unfold (exportable)

        def forward(self, x):  # [B, C, L] -> [B, C, H]
            b, c, length = x.shape
            patches, mean, std = self.normalize_patch(x.reshape(b * c, length))
            y = self.core(patches) * std + mean  # [B*C, H]
            return y.reshape(b, c, -1)

    return InternalModel()


def count_params(module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return train, total
