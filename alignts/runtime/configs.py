"""Typed runtime configs: one frozen dataclass per paradigm for a manifest's ``config`` section (torch-free).

Export writes ``manifest.config`` through :meth:`RuntimeConfig.to_dict`; the runtime, the memory planner and the
CLI read the same dataclass (:func:`runtime_config`), so each default is defined here once. Reading validates with
the manifest's own field rules (:func:`alignts.runtime.manifest.check_config`); keys this version does not know
are kept in ``extra`` and written back (a newer bundle still loads, and a re-sealed one keeps them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from alignts.errors import ManifestError
from alignts.runtime.manifest import REEXPORT, Manifest, check_config, config_value


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """What every paradigm's runtime reads from ``manifest.config``.

    context_len, horizon: L and H the model was fitted for (required, except Injective: defaults there).
    n_channels:   channels C the model takes; None = any (channel-independent LMs).
    columns:      data columns at fit time, in channel order (``alignts forecast`` selects them); None = all
                  numeric.
    description:  dataset text (Bridging prompt, Injective domain prefix); None = the paradigm's default.
    n_layers, n_heads_lm, d_ff_lm, n_vocab: memory-planner hints on the LM; None = read from the GGUF header
                  or estimated from the width.
    scaler:       {"mean": [C], "std": [C]} of the training data (``forecast`` works in raw units and applies it
                  inside); None = the data was not scaled.
    conformal:    split-conformal calibration (:mod:`alignts.runtime.conformal`; Internal and Bridging); None =
                  not calibrated.
    extra:        keys this version does not read (``freq``, ``split_scheme``, ``dropout``, newer fields),
                  kept as written.
    """

    paradigm: ClassVar[str] = ""

    context_len: int
    horizon: int
    n_channels: int | None = None
    columns: tuple[str, ...] | None = None
    description: str | None = None
    n_layers: int | None = None
    n_heads_lm: int | None = None
    d_ff_lm: int | None = None
    n_vocab: int | None = None
    scaler: Mapping[str, Any] | None = None
    conformal: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> "RuntimeConfig":
        """Validate ``d`` (a manifest's ``config``) and read it; ManifestError (expected / got / fix) when a field
        is malformed or a required one missing."""
        if not isinstance(d, Mapping):
            raise ManifestError(f"{where}: config is {type(d).__name__}; expected an object. {REEXPORT}.")
        check_config(d, cls.paradigm, where)
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        kw = {k: config_value(k, d[k]) for k in known if d.get(k) is not None}
        missing = [k for k, f in known.items() if k not in kw and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ManifestError(f"{where}: config.{missing[0]} is missing; the {cls.paradigm} paradigm needs it. "
                                f"{REEXPORT}.")
        return cls(**kw, extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def from_manifest(cls, m: Manifest) -> "RuntimeConfig":
        return cls.from_dict(m.config, where=f"{m.paradigm} manifest")

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``config``: the fields that are set (None left out) over the kept extra keys."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "extra" and v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True, kw_only=True)
class PatchConfig(RuntimeConfig):
    """Patch models (Internal, Bridging): RevIN then replication-padded patches.

    patch_len, stride, n_patches: P, the patch stride and ``N = (L - P) // stride + 2`` (required).
    d_model:      patch-embedding width (Internal: the LM's width).
    eps:          RevIN epsilon, ``std = sqrt(var + eps)`` (1e-5).
    linear_skip:  the model adds a fitted Linear(L -> H) on the normalized context (``--linear-skip``; False).
    """

    patch_len: int
    stride: int
    n_patches: int
    d_model: int | None = None
    eps: float = 1e-5
    linear_skip: bool = False


@dataclass(frozen=True, kw_only=True)
class InternalRuntimeConfig(PatchConfig):
    """Internal (GPT4TS / LLM4TS) bundles: the fields of :class:`PatchConfig`."""

    paradigm: ClassVar[str] = "internal"


@dataclass(frozen=True, kw_only=True)
class BridgingRuntimeConfig(PatchConfig):
    """Bridging (Time-LLM) bundles; the fields of :class:`PatchConfig` and:

    d_llm:        the frozen backbone's width (required; checked against the backbone at load).
    d_ff:         hidden features per patch the head reads (required).
    prompt_len:   prompt tokens, left-padded or cut to this length (required).
    n_heads, d_keys, n_prototypes: reprogramming attention heads (8), per-head key width (128), text
                  prototypes (1000).
    top_k:        lags listed in the prompt (5).
    decimals:     decimals of the prompt's statistics (3).
    description:  the prompt's dataset text (``"a time series."``).
    backbone_spec: the backbone's registry spec at fit time (for ``load_torch``); None = not recorded.
    sizes:        adapter and backbone bytes at export (``alignts inspect``); None = not recorded.
    ablate_lm:    ``"none"``, or ``"identity"`` for the LM-removed twin (``fit bridging --ablate-lm``): the adapter's
                  embeddings go straight to the head; no prompt, no backbone bundle.
    """

    paradigm: ClassVar[str] = "bridging"

    d_llm: int
    d_ff: int
    prompt_len: int
    n_heads: int = 8
    d_keys: int = 128
    n_prototypes: int = 1000
    top_k: int = 5
    decimals: int = 3
    backbone_spec: str | None = None
    sizes: Mapping[str, Any] | None = None
    description: str = "a time series."
    ablate_lm: str = "none"


@dataclass(frozen=True, kw_only=True)
class InjectiveRuntimeConfig(RuntimeConfig):
    """Injective (LLMTime) bundles; ``codec`` is :class:`alignts.runtime.codec_table.CodecSettings`.

    context_len, horizon: defaults of ``plan`` (96, 24); any L >= 2 and H >= 1 that fit ``n_ctx`` may be planned.
    n_ctx:        token context of the LM (512).
    samples, temperature, top_p, greedy, seed: sampling (LLMTime: 20, 0.9, 0.9, False; seed 0).
    description:  domain text put before the digits; None or "" = none.
    n_layer, n_embd: the LM's depth and width (memory estimate; a tiny LM decodes on one thread); None =
                  unknown.
    model:        which LM (``numeric_lm`` for the embedded one); None = not recorded.
    """

    paradigm: ClassVar[str] = "injective"

    context_len: int = 96
    horizon: int = 24
    n_ctx: int = 512
    samples: int = 20
    temperature: float = 0.9
    top_p: float = 0.9
    greedy: bool = False
    seed: int = 0
    n_layer: int | None = None
    n_embd: int | None = None
    model: str | None = None


@dataclass(frozen=True, kw_only=True)
class BackboneRuntimeConfig(RuntimeConfig):
    """Backbone bundles (the frozen LM a Bridging adapter runs on).

    d_model:      the LM's width (required).
    vocab_size:   rows of the word-embedding table; None = not recorded.
    table, tokenizer: bundle files of the word-embedding table and the tokenizer (``word_embeddings.npy``,
                  ``tokenizer.json``).
    max_positions: the LM's position limit (llama.cpp's n_ctx of a GGUF variant); None = 512.
    context_len, horizon: unused (None).
    """

    paradigm: ClassVar[str] = "backbone"

    context_len: int | None = None
    horizon: int | None = None
    d_model: int
    vocab_size: int | None = None
    table: str = "word_embeddings.npy"
    tokenizer: str = "tokenizer.json"
    max_positions: int | None = None

    @property
    def n_ctx(self) -> int:
        return self.max_positions or 512


CONFIGS: dict[str, type[RuntimeConfig]] = {c.paradigm: c for c in (InternalRuntimeConfig, BridgingRuntimeConfig,
                                                                    InjectiveRuntimeConfig, BackboneRuntimeConfig)}


def runtime_config(m: Manifest) -> RuntimeConfig:
    """The typed config of manifest ``m`` (its paradigm's class)."""
    return CONFIGS[m.paradigm].from_manifest(m)

