"""The torch model of a bundle, rebuilt: the eager reference that ``alignts bench`` times the runtime against.

At export the fit writes only what training changed into ``torch_trained.safetensors`` (listed with its
sha256 in the manifest like every other file): Internal: the LoRA A/B tensors (unfused), the trained layer
norms and position embeddings, and every core tensor outside the LM (patch embedding, head, linear skip);
Bridging: the adapter (patch embedding, reprogramming layer, head) and the text prototypes ``[K, d_llm]``,
constant once trained (the ``[V, K]`` mapping that made them is not kept, as in the ONNX export). The file's
header records how to rebuild the rest: the paradigm's config dataclass (all fields) and the backbone
(spec, depth, seed, sha256 of its weights; a local-folder spec is kept as given, so rebuild where it exists).

:func:`load_torch` loads the base backbone from the registry (``alignts.export.backbones``; the recorded
sha256 is checked, tiny seeded presets rebuild bit for bit), builds the model with the paradigm's own
builder, loads the trained tensors, fuses LoRA and returns it in eval mode: ``x [B, C, L] -> [B, C, H]``.

Writing: take the state before LoRA is fused, write it inside ``bundle_writer``::

    state = internal_trained_state(model, backbone, model_cfg, seed)   # or bridging_trained_state(...)
    ...fuse, export into tmp...
    extra_files.append(write_trained(tmp, state))                       # -> finish_bundle(extra_files=...)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from alignts.errors import ArtifactError
from alignts.runtime.manifest import TORCH_TRAINED_NAME as TRAINED_NAME

log = logging.getLogger(__name__)

TRAINED_FORMAT = "alignts-torch-trained"
TRAINED_VERSION = "1"
PROTOTYPES = "prototype_table"  # Bridging: the trained text prototypes [K, d_llm]


@dataclass(frozen=True)
class TrainedState:
    """What :func:`write_trained` puts in ``torch_trained.safetensors``.

    paradigm:     ``internal`` | ``bridging``.
    tensors:      {state-dict name: tensor}, the trained tensors only (CPU, fp32, unfused LoRA).
    model_config: every field of the paradigm's config dataclass (``InternalConfig``, ``BridgingConfig``).
    backbone:     {"spec", "n_layers", "seed", "source_sha256", "architecture"}: ``load_backbone`` arguments
                  and the sha256 of the base weights.
    """

    paradigm: str
    tensors: Mapping[str, Any]
    model_config: Mapping[str, Any]
    backbone: Mapping[str, Any]


def _backbone_record(backbone, seed: int) -> dict[str, Any]:
    return {"spec": str(backbone.spec), "n_layers": int(backbone.n_layers), "seed": int(seed),
            "source_sha256": str(backbone.source_sha256), "architecture": str(backbone.name)}


def _detached(items) -> dict[str, Any]:
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in items}


def internal_trained_state(model, backbone, cfg, seed: int) -> TrainedState:
    """The trained tensors of an Internal model (``InternalModel`` or its core), taken BEFORE ``fuse_lora``.

    cfg: the ``InternalConfig`` it was built with; seed: the ``load_backbone``/``build_model`` seed.
    Keeps every core tensor outside the LM, the LoRA A/B, and the LM parameters that were trained.
    """
    core = getattr(model, "core", model)
    if getattr(core, "fused", False) and cfg.lora_rank > 0:
        raise ArtifactError("internal_trained_state: the core's LoRA is already fused, so its A/B tensors are "
                            "gone; call it before core.fuse_lora().")
    trained = {n for n, p in core.named_parameters() if p.requires_grad}
    items = [(k, v) for k, v in core.state_dict().items()
             if not k.startswith("lm.") or "lora_" in k or k in trained]
    return TrainedState("internal", _detached(items), dataclasses.asdict(cfg), _backbone_record(backbone, seed))


def bridging_trained_state(model, backbone, seed: int) -> TrainedState:
    """The trained tensors of a ``BridgingModel``: everything outside the frozen LM, with the prototypes
    ``[K, d_llm]`` in place of the ``[V, K]`` mapping that made them (constant once trained)."""
    import torch

    with torch.no_grad():
        protos = model.prototypes()
    items = [(k, v) for k, v in model.state_dict().items() if not k.startswith(("lm.", "mapping."))]
    return TrainedState("bridging", _detached(items + [(PROTOTYPES, protos)]), dataclasses.asdict(model.cfg),
                        _backbone_record(backbone, seed))


def write_trained(folder: str | os.PathLike, state: TrainedState, name: str = TRAINED_NAME) -> str:
    """Write ``folder/name`` (safetensors; the rebuild recipe in its header); returns ``name`` for the
    manifest's file list (``finish_bundle(extra_files=[...])``)."""
    from safetensors.torch import save_file

    meta = {"format": TRAINED_FORMAT, "format_version": TRAINED_VERSION, "paradigm": state.paradigm,
            "model_config": json.dumps(_plain(state.model_config), sort_keys=True),
            "backbone": json.dumps(dict(state.backbone), sort_keys=True)}
    save_file(dict(state.tensors), str(Path(folder) / name), metadata=meta)
    n = sum(int(t.numel()) for t in state.tensors.values())
    log.info("wrote %s: %d trained tensors, %d values", name, len(state.tensors), n)
    return name


def _plain(x):
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# ------------------------------------------------------------------------------------------------ loading


def read_trained(bundle: str | os.PathLike, verify: bool = True):
    """(manifest, {name: tensor}, header) of a bundle's ``torch_trained.safetensors``.

    Raises ArtifactError when the file is missing (a bundle from before this file existed: re-fit it),
    tampered with (sha256/size differ from the manifest) or not an alignts trained-tensor file.
    """
    from safetensors import safe_open

    from alignts.runtime.manifest import read_manifest, verify_files

    bundle = Path(bundle)
    m = read_manifest(bundle, verify=False)
    if TRAINED_NAME not in m.files:
        cmd = dict(m.training).get("command") or f"alignts fit {m.paradigm} ..."
        raise ArtifactError(
            f"bundle {str(bundle)!r} has no {TRAINED_NAME} (the trained torch tensors), so its torch model "
            "cannot be rebuilt; it was exported before alignts wrote that file"
            + ("" if m.paradigm in _LOADERS else f", or its paradigm ({m.paradigm}) has no torch twin")
            + f". Fix: re-fit it with this alignts ({cmd}).")
    if verify:
        verify_files(bundle, m, only=(TRAINED_NAME,))
    tensors = {}
    with safe_open(str(bundle / TRAINED_NAME), framework="pt") as fh:
        header = dict(fh.metadata() or {})
        for k in fh.keys():
            tensors[k] = fh.get_tensor(k)
    if header.get("format") != TRAINED_FORMAT:
        raise ArtifactError(f"{bundle / TRAINED_NAME}: header format {header.get('format')!r}, expected "
                            f"{TRAINED_FORMAT!r}; not written by alignts. Re-fit the bundle.")
    if header.get("format_version", "").split(".")[0] != TRAINED_VERSION:
        raise ArtifactError(f"{bundle / TRAINED_NAME}: format_version {header.get('format_version')!r}, this "
                            f"alignts reads {TRAINED_VERSION}. HINT: upgrade alignts or re-fit the bundle.")
    if header.get("paradigm") != m.paradigm:
        raise ArtifactError(f"{bundle / TRAINED_NAME}: written for paradigm {header.get('paradigm')!r}, the "
                            f"manifest says {m.paradigm!r}; the bundle is inconsistent, re-fit it.")
    header["model_config"] = json.loads(header["model_config"])
    header["backbone"] = json.loads(header["backbone"])
    return m, tensors, header


def _config(cls, recorded: Mapping[str, Any], where: str):
    """``cls(**recorded)``: unknown fields (a newer alignts) raise; missing ones take the defaults."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(recorded) - set(fields) - {"n_patches"})
    if unknown:
        raise ArtifactError(f"{where}: model config fields {unknown} are unknown to this alignts's "
                            f"{cls.__name__}; the bundle was written by a newer alignts. HINT: upgrade alignts.")
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in recorded.items() if k in fields}
    return cls(**kw)


def _check_shapes(cfg, manifest_config: Mapping[str, Any], where: str) -> None:
    for k in ("context_len", "horizon", "patch_len", "stride"):
        if k in manifest_config and int(manifest_config[k]) != int(getattr(cfg, k)):
            raise ArtifactError(f"{where}: {k}={getattr(cfg, k)} in the trained-tensor file but {manifest_config[k]} "
                                "in the manifest; the bundle is inconsistent, re-fit it.")


def _backbone(rec: Mapping[str, Any], expected_sha: set[str], where: str):
    from alignts.export.backbones import load_backbone

    try:
        backbone = load_backbone(rec["spec"], n_layers=int(rec["n_layers"]), seed=int(rec.get("seed", 0)))
    except NotImplementedError as e:
        raise ArtifactError(f"{where}: the base backbone {rec['spec']!r} it was fitted on cannot be loaded here "
                            f"({e}). Fix: run where that backbone folder exists.") from e
    want = {s for s in expected_sha | {rec.get("source_sha256")} if s}
    if want and {backbone.source_sha256} != want:
        raise ArtifactError(f"{where}: base backbone {rec['spec']!r} has weights sha256 "
                            f"{backbone.source_sha256[:16]}..., the bundle was fitted on "
                            f"{', '.join(sorted(s[:16] + '...' for s in want))}; the LoRA/adapter would sit on "
                            "other weights. Fix: use the same backbone files, or re-fit.")
    return backbone


def _load_state(module, tensors: Mapping[str, Any], must_have: Callable[[str], bool], where: str) -> None:
    """Load ``tensors`` into ``module``; every key that ``must_have`` selects must be in the file."""
    expected = [k for k in module.state_dict() if must_have(k)]
    missing = sorted(set(expected) - set(tensors))
    result = module.load_state_dict(dict(tensors), strict=False)
    unexpected = sorted(result.unexpected_keys)
    if missing or unexpected:
        raise ArtifactError(f"{where}: the trained tensors do not fit the rebuilt model (missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}); the file and this alignts disagree. Re-fit the bundle.")


def _load_internal(bundle: Path, m, tensors, header):
    import torch

    from alignts.export.internal import InternalConfig, build_model

    where = str(bundle / TRAINED_NAME)
    cfg = _config(InternalConfig, header["model_config"], where)
    _check_shapes(cfg, m.config, where)
    rec = header["backbone"]
    backbone = _backbone(rec, {dict(m.lora).get("base_sha256")} - {None}, where)
    with torch.random.fork_rng():  # build_core seeds torch; keep the caller's RNG as it was
        model = build_model(backbone, cfg, seed=int(rec.get("seed", 0)))
    core = model.core
    _load_state(core, tensors, lambda k: not k.startswith("lm.") or "lora_" in k, where)
    core.fuse_lora()
    return model


def _load_bridging(bundle: Path, m, tensors, header):
    from alignts.export.backbone_bundle import tokenizer_text
    from alignts.export.bridging import BridgingConfig, BridgingModel
    from alignts.runtime.tokenize import PromptTokenizer

    where = str(bundle / TRAINED_NAME)
    cfg = _config(BridgingConfig, header["model_config"], where)
    _check_shapes(cfg, m.config, where)
    if PROTOTYPES not in tensors:
        raise ArtifactError(f"{where}: no {PROTOTYPES!r} tensor; the file is incomplete, re-fit the bundle.")
    rec = header["backbone"]
    backbone = _backbone(rec, {dict(m.backbone).get("source_sha256")} - {None}, where)
    tokenizer = PromptTokenizer(tokenizer_text(backbone).encode("utf-8"))
    rest = {k: v for k, v in tensors.items() if k != PROTOTYPES}
    model = BridgingModel(backbone, cfg, tokenizer, prototypes=tensors[PROTOTYPES])
    _load_state(model, rest, lambda k: not k.startswith("lm.") and k != PROTOTYPES, where)
    return model


_LOADERS = {"internal": _load_internal, "bridging": _load_bridging}


def load_torch(bundle: str | os.PathLike, verify: bool = True):
    """The bundle's torch model in eval mode (LoRA fused): ``x [B, C, L] float32 tensor -> [B, C, H]``.

    Rebuilds the base backbone from the registry, builds the model from the recorded config, loads
    ``torch_trained.safetensors`` (sha256-checked against the manifest with ``verify``). Raises
    ArtifactError (missing/tampered file, other base weights) or NotImplementedError (a paradigm without a
    torch twin here: Injective).
    """
    bundle = Path(bundle)
    from alignts.runtime.manifest import read_manifest

    paradigm = read_manifest(bundle, verify=False).paradigm
    if paradigm not in _LOADERS:
        raise NotImplementedError(f"no torch model to rebuild for paradigm {paradigm!r} bundles; known: "
                                  f"{', '.join(sorted(_LOADERS))}.")
    m, tensors, header = read_trained(bundle, verify=verify)
    model = _LOADERS[paradigm](bundle, m, tensors, header)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
