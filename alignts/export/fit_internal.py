"""Internal paradigm end to end: data -> train (LoRA) -> fuse -> export (ONNX fp32/int8, GGUF) -> bundle.

Every variant is validated twice: its core against the fused torch core on fresh random patches
(``validation.max_abs_diff``), and the whole runtime path (numba RevIN/patching + backend + de-normalize)
against the torch model on real validation windows (``validation.end_to_end_max_abs_diff``). Both are recorded
fidelity numbers; what decides whether a quantized variant is kept is the accuracy gate
(:mod:`alignts.export.gate`, shared with ``alignts quantize``): its validation MSE change against onnx-fp32
(``Variant.accuracy``). int8 is built dynamic and static (QDQ, calibrated on training windows); the gate keeps
the better as ``onnx-int8``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from alignts.errors import InputError, ValidationError
from alignts.export.gate import MAX_REL_MSE_CHANGE
from alignts.export.internal import InternalConfig
from alignts.export.train import TrainConfig

log = logging.getLogger(__name__)

ONNX_TOL = 1e-4
# f32: llama.cpp vs torch on the fused LM (tiny backbones ~1e-5; MiniLM BERT measured 2e-3 on normalized
# outputs through a width-8064 head); f16 weights add rounding.
GGUF_TOL = {"f32": 5e-3, "f16": 5e-2}
IO_NAME = "io.npz"


@dataclass(frozen=True)
class FitInternalConfig:
    """One ``alignts fit internal`` run.

    data:      data spec (CSV path, .tsf, statsmodels:NAME) for ``alignts.data.load_data``.
    out:       bundle folder to write (atomically).
    backbone:  ``minilm`` | ``tiny-bert`` | ``tiny-gpt2`` | ``tiny-llama`` | a local HF folder.
    n_layers:  keep the first k blocks of the backbone (None = all).
    model:     shapes and LoRA (InternalConfig); train: the loop (TrainConfig).
    int8:      add the ``onnx-int8`` variant (dynamic or static, the better by the gate); gguf: add GGUF
               variants when llama.cpp is available.
    max_rel_mse_change: the accuracy gate (``alignts.export.gate``): a quantized variant whose validation MSE
               is more than this much worse than onnx-fp32's, relative, is left out (the reason recorded).
    gguf_dtypes: GGUF weight types to write.
    overwrite: replace an existing ``out``.
    columns:   channels to use (None = every numeric column).
    train_percent: few-shot protocol: train on the first P% of the training windows (the scaler still sees
               the whole train split; ``alignts.data.splits.few_shot_border``); 100 = all.
    """

    data: str
    out: str
    backbone: str = "minilm"
    n_layers: int | None = None
    model: InternalConfig = field(default_factory=InternalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    int8: bool = True
    gguf: bool = True
    gguf_dtypes: tuple[str, ...] = ("f32", "f16")
    overwrite: bool = False
    columns: tuple[str, ...] | None = None
    train_percent: int = 100
    max_rel_mse_change: float = MAX_REL_MSE_CHANGE


def _gguf_available() -> str | None:
    """None when the GGUF path can run here, else the reason it cannot."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama-cpp-python is not installed (pip install 'alignts[gguf]')"
    try:
        from alignts.export.gguf_writer import write_gguf  # noqa: F401
        from alignts.runtime.backends.gguf import LlamaCppModel  # noqa: F401
    except ImportError as e:
        return f"GGUF writer/backend not importable ({e})"
    return None


def fit_internal(cfg: FitInternalConfig, command: str | None = None):
    """Run the whole Internal pipeline; returns the written Manifest. Nothing stays at ``cfg.out`` on failure,
    except when only the calibration that follows the export fails (:func:`alignts.export.bundle.calibrate_written`)."""
    import torch

    from alignts.data.load import load_data
    from alignts.data.splits import make_splits, sliding_windows
    from alignts.export.backbones import load_backbone
    from alignts.export.bundle import calibrate_written, command_line
    from alignts.export.internal import build_model, count_params
    from alignts.export.linear_skip import fit_linear_skip
    from alignts.export.train import resolve_device, train
    from alignts.errors import ArtifactError

    t0 = time.perf_counter()
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:  # fail before the (long) training
        raise ArtifactError(f"{str(out)!r} already exists; choose another --out or pass --overwrite.")
    mcfg = cfg.model
    mcfg.check()
    if mcfg.ablate_lm != "none":  # the LM-removed twin has no LM to put LoRA on
        mcfg = replace(mcfg, lora_rank=0)
    resolve_device(cfg.train.device)  # a missing GPU fails before the data and the LM load
    L, H = mcfg.context_len, mcfg.horizon
    data = load_data(cfg.data, columns=list(cfg.columns) if cfg.columns else None)
    splits = make_splits(data, L, H, train_percent=cfg.train_percent)
    train_xy = sliding_windows(splits.train, L, H)
    val_xy = sliding_windows(splits.val, L, H)
    log.info("data %s: %d channels, %d train / %d val windows", data.name, data.n_channels,
             train_xy[0].shape[0], val_xy[0].shape[0])
    if cfg.train.threads:
        torch.set_num_threads(int(cfg.train.threads))
    backbone = load_backbone(cfg.backbone, n_layers=cfg.n_layers, seed=cfg.train.seed)
    model = build_model(backbone, mcfg, seed=cfg.train.seed)
    n_train, n_total = count_params(model)
    skip_info = fit_linear_skip(model.core.skip, mcfg, train_xy, val_xy) if mcfg.linear_skip else None
    result = train(model, train_xy, val_xy, cfg.train)
    log.info("trained: best val mse %.4f after %d epochs (%.0f s, %s)", result.best_val_mse, result.epochs_run,
             result.wall_s, result.stopped_by)
    import copy

    unfused = copy.deepcopy(model.core) if mcfg.lora_rank > 0 and cfg.gguf else None  # for the GGUF adapter
    targets = list(model.core.targets)
    from alignts.export.reference import internal_trained_state

    trained = internal_trained_state(model, backbone, mcfg, seed=cfg.train.seed)  # before fusing: LoRA A/B
    model.core.fuse_lora()
    model.eval()
    training = {
        "data": str(cfg.data), "data_name": data.name, "command": command or command_line(),
        "backbone": str(cfg.backbone), "n_layers": backbone.n_layers, **asdict(cfg.train),
        "best_val_mse": result.best_val_mse, "epochs_run": result.epochs_run, "stopped_by": result.stopped_by,
        "train_wall_s": result.wall_s, "history": list(result.history),
        "n_train_windows": int(train_xy[0].shape[0]), "n_val_windows": int(val_xy[0].shape[0]),
        "trainable_params": n_train, "total_params": n_total, "start_val_mse": result.start_val_mse,
        "train_percent": splits.train_percent, "train_rows": int(splits.train.shape[0]),
        "ablate_lm": mcfg.ablate_lm, "device_used": result.device,
    }
    if skip_info is not None:
        training["linear_skip"] = skip_info
    from alignts.runtime.configs import InternalRuntimeConfig

    config = InternalRuntimeConfig(
        context_len=L, horizon=H, n_channels=data.n_channels, patch_len=mcfg.patch_len, stride=mcfg.stride,
        n_patches=mcfg.n_patches, d_model=backbone.d_model, eps=mcfg.eps, columns=tuple(data.columns),
        scaler={"mean": splits.mean.tolist(), "std": splits.std.tolist()}, linear_skip=mcfg.linear_skip,
        extra={"freq": data.freq, "split_scheme": splits.scheme, "ablate_lm": mcfg.ablate_lm}).to_dict()
    lora = {"rank": mcfg.lora_rank, "alpha": mcfg.lora_alpha, "dropout": mcfg.lora_dropout, "targets": targets,
            "fused": True, "base_sha256": backbone.source_sha256, "trainable": list(backbone.trainable_names())
            if mcfg.train_norms else []} if mcfg.lora_rank > 0 else {}
    manifest = export_bundle(model, backbone, cfg, config=config, lora=lora, training=training,
                             unfused_core=unfused, check_xy=(val_xy[0][:4], None), trained=trained,
                             splits=splits)
    manifest = calibrate_written(out, splits, cfg.train.threads) or manifest
    log.info("bundle %s written in %.0f s total", out, time.perf_counter() - t0)
    return manifest


def export_bundle(model, backbone, cfg: FitInternalConfig, config: dict, lora: dict, training: dict,
                  unfused_core=None, check_xy=None, trained=None, splits=None):
    """Export a trained, fused InternalModel to ``cfg.out`` (atomic); returns the Manifest.

    unfused_core: a copy of the core taken before LoRA was fused; when given (and llama.cpp is available),
    the base LM and the LoRA adapter are also written as GGUF (variant ``gguf-f32-lora``).
    check_xy: (x [B, C, L], _) real windows for the end-to-end runtime check of every variant.
    trained: ``alignts.export.reference.internal_trained_state`` (written as the torch-only trained tensors).
    splits: the data splits; with them static int8 is calibrated on training windows and every variant goes
    through the accuracy gate on validation windows (without: dynamic int8 only, no gate).
    """
    import torch

    from alignts.export.bundle import finish_bundle, validation_record, variant_record
    from alignts.export.onnx_export import export_onnx, quantize_int8, quantize_int8_static, validate_onnx
    from alignts.runtime.manifest import bundle_writer, write_manifest

    mcfg = cfg.model
    core = model.core
    n, p = mcfg.n_patches, mcfg.patch_len
    gen = torch.Generator().manual_seed(cfg.train.seed + 1)

    def make_inputs(t):  # fresh random normalized patches, a different batch size each trial
        return (torch.randn(t + 2, n, p, generator=gen),)

    axes = {"patches": {0: "S"}, "forecast": {0: "S"}}
    variants = []
    with bundle_writer(cfg.out, overwrite=cfg.overwrite) as tmp:
        export_onnx(core, make_inputs(0), tmp / "core.onnx", ["patches"], ["forecast"], {"patches": {0: "S"}})
        d = validate_onnx(core, tmp / "core.onnx", make_inputs, n_trials=3, tol=ONNX_TOL)
        variants.append(variant_record(tmp, "onnx-fp32", "onnx", "fp32", ["core.onnx"], ["patches"], ["forecast"],
                                       axes, validation_record(d, ONNX_TOL, 3)))
        skipped: dict[str, str] = {}
        if cfg.int8:
            forms = [("onnx-int8", "core.int8.onnx", "dynamic")]
            if splits is not None:
                forms.append(("onnx-int8-static", "core.int8-static.onnx", "static-qdq"))
            for name, fname, how in forms:
                if how == "dynamic":
                    quantize_int8(tmp / "core.onnx", tmp / fname)
                else:
                    from alignts.export.gate import calibration_patches

                    quantize_int8_static(tmp / "core.onnx", tmp / fname,
                                         [{"patches": b} for b in calibration_patches(splits, mcfg)])
                d8 = validate_onnx(core, tmp / fname, make_inputs, n_trials=3, tol=float("inf"))
                r8 = validate_onnx(core, tmp / fname, make_inputs, n_trials=3, tol=float("inf"), relative=True)
                variants.append(variant_record(tmp, name, "onnx", "int8", [fname], ["patches"], ["forecast"], axes,
                                               validation_record(d8, None, 3, relative_max_abs_diff=r8),
                                               extra={"quantization": how}))
        sd = core.state_dict()
        io = dict(patch_w=sd["patch_embed.weight"].numpy(), patch_b=sd["patch_embed.bias"].numpy(),
                  head_w=sd["head.weight"].numpy(), head_b=sd["head.bias"].numpy())
        if core.skip is not None:
            io.update(skip_w=sd["skip.weight"].numpy(), skip_b=sd["skip.bias"].numpy())
        np.savez(tmp / IO_NAME, **io)
        extra_files = [IO_NAME]
        if trained is not None:  # the trained torch tensors, for alignts.export.reference.load_torch
            from alignts.export.reference import write_trained

            extra_files.append(write_trained(tmp, trained))
        gguf_note = None
        if cfg.gguf:
            gguf_note = ("the LM is ablated (identity): there is no LM to run in llama.cpp"
                         if core.lm is None else _gguf_available())
            if gguf_note is None:
                try:
                    variants.extend(_export_gguf(core, backbone, cfg, tmp, make_inputs))
                except Exception as e:  # optional variant: keep the bundle (and the training), say why
                    for f in tmp.glob("lm.*.gguf"):
                        f.unlink()
                    skipped["gguf"] = str(e)
                    log.warning("GGUF variants left out: %s", e)
                if unfused_core is not None:
                    try:
                        variants.append(_export_gguf_lora(core, unfused_core, backbone, cfg, tmp, make_inputs))
                    except Exception as e:  # optional variant, as above
                        for f in ("lm.base.f32.gguf", "lora.gguf"):
                            (tmp / f).unlink(missing_ok=True)
                        skipped["gguf-f32-lora"] = str(e)
                        log.warning("gguf-f32-lora left out: %s", e)
            else:
                (log.info if core.lm is None else log.warning)("GGUF variants skipped: %s", gguf_note)
        limits = {"max_context": mcfg.context_len, "max_horizon": mcfg.horizon}
        if gguf_note:
            skipped["gguf"] = gguf_note
        extra = {"skipped_variants": skipped} if skipped else {}
        m = finish_bundle(tmp, "internal", backbone.name, variants, extra_files=extra_files, config=config,
                          normalization={"kind": "revin", "eps": mcfg.eps, "affine": False}, lora=lora,
                          limits=limits, training={**training, **extra})
        if check_xy is not None:
            checked, failed = _end_to_end_check(model, tmp, m, np.asarray(check_xy[0], dtype=np.float32))
            if failed:  # drop optional variants the runtime cannot run, and their files
                skipped.update(failed)
                keep = {f for v in checked for f in v.files} | set(extra_files)
                for f in m.files:
                    if f not in keep:
                        (tmp / f).unlink(missing_ok=True)
                m = finish_bundle(tmp, "internal", backbone.name, checked, extra_files=extra_files, config=config,
                                  normalization=m.normalization, lora=lora, limits=limits,
                                  training={**training, "skipped_variants": skipped})
            else:
                m = replace(m, variants=tuple(checked))
                write_manifest(tmp, m)
        if splits is not None:
            m = _gate(tmp, m, splits, cfg, skipped, extra_files,
                      dict(config=config, normalization=m.normalization, lora=lora, limits=limits, training=training))
    return m


def _gate(tmp: Path, m, splits, cfg: FitInternalConfig, skipped: dict, extra_files: list, fields: dict):
    """The accuracy gate (alignts.export.gate, as ``alignts quantize``): every variant judged on validation
    windows against onnx-fp32; quantized ones over the gate, and the worse int8 form, are left out with the
    reason in ``training.skipped_variants``; the records go into each variant's ``accuracy``."""
    from alignts.export import gate
    from alignts.export.bundle import finish_bundle
    from alignts.runtime.budget import available_backends

    mcfg = cfg.model
    windows = gate.gate_windows(splits, mcfg.context_len, mcfg.horizon)
    have = set(available_backends())
    records = gate.judge(tmp, [v.name for v in m.variants if v.backend in have], "onnx-fp32", windows,
                         cfg.max_rel_mse_change, threads=cfg.train.threads)
    optional = {v.name for v in m.variants if v.dtype not in ("fp32", "f32")}
    kept, verdicts, names = gate.select(m.variants, records, optional)
    rejected = {}
    for n, line in verdicts.items():
        log.info("gate %s: %s", n, line)
        if n not in names:
            skipped[n] = line
            rejected[n] = records[n]
    keep = {f for v in kept for f in v.files} | set(extra_files)
    for f in m.files:
        if f not in keep:
            (tmp / f).unlink(missing_ok=True)
    training = fields.pop("training")
    if skipped:
        training = {**training, "skipped_variants": skipped}
    if rejected:  # the records of what the gate left out (what was kept carries its own)
        training = {**training, "gate_rejected": rejected}
    return finish_bundle(tmp, "internal", m.architecture, kept, extra_files=extra_files, training=training,
                         versions=m.versions, **fields)


def _export_gguf(core, backbone, cfg, tmp: Path, make_inputs) -> list:
    """GGUF of the fused LM (f32, f16) validated through llama.cpp against the torch core."""
    from alignts.export.bundle import validation_record, variant_record
    from alignts.export.gguf_writer import write_gguf

    variants = []
    n = cfg.model.n_patches
    for dtype in cfg.gguf_dtypes:
        name = f"lm.{dtype}.gguf"
        write_gguf(core.lm, tmp / name, dtype=dtype, metadata={"alignts.paradigm": "internal"}, embeddings_only=True)
        worst, n_in = _gguf_core_diff(tmp / name, core, make_inputs, n), 2
        tol = GGUF_TOL.get(dtype, 1e-1)
        if not np.isfinite(worst) or worst > tol:
            raise ValidationError(f"GGUF {name}: max abs diff vs torch {worst:.3g} exceeds {tol:g} through "
                                  "llama.cpp (f32 KV cache); the GGUF conversion is wrong for this backbone.")
        variants.append(variant_record(tmp, f"gguf-{dtype}", "gguf", dtype, [name, IO_NAME],
                                       validation=validation_record(worst, tol, n_in),
                                       extra={"lm_file": name, "io_file": IO_NAME, "kv_type": "f32",
                                              "architecture": backbone.name}))
    return variants


def _gguf_core_diff(gguf_path: Path, core, make_inputs, n: int, loras=(), n_trials: int = 2) -> float:
    """max abs diff of (numpy patch embedding -> llama.cpp hidden states -> numpy head [+ skip]) vs the torch core."""
    import torch

    from alignts.runtime.backends.gguf import LlamaCppModel

    from alignts.kernels.patch import context_from_patches

    sd = {k: v.numpy() for k, v in core.state_dict().items() if k.startswith(("patch_embed", "head", "skip"))}
    worst = 0.0
    with LlamaCppModel(str(gguf_path), n_ctx=n, n_batch=max(512, n), embeddings=True, kv_type="f32",
                       n_seq_max=max(1, min(8, max(512, n) // n)), loras=list(loras)) as lm:
        for t in range(n_trials):
            (x,) = make_inputs(t)
            with torch.no_grad():
                ref = core(x).numpy()
            e = x.numpy() @ sd["patch_embed.weight"].T + sd["patch_embed.bias"]
            h = np.asarray(lm.hidden_states(np.ascontiguousarray(e, dtype=np.float32)))
            y = h.reshape(h.shape[0], -1) @ sd["head.weight"].T + sd["head.bias"]
            if "skip.weight" in sd:
                z = context_from_patches(x.numpy(), core.cfg.stride, core.cfg.context_len)
                y = y + z @ sd["skip.weight"].T + sd["skip.bias"]
            worst = max(worst, float(np.abs(y - ref).max()))
    return worst


def _export_gguf_lora(core, unfused_core, backbone, cfg, tmp: Path, make_inputs):
    """The unfused form for llama.cpp: base LM (trained norms, LoRA not merged) + a LoRA adapter GGUF,
    checked (check_lora_adapter, inside LlamaCppModel) before llama.cpp loads it, validated vs the fused core."""
    from alignts.export.bundle import validation_record, variant_record
    from alignts.export.gguf_writer import lora_tensors_from_peft, write_gguf, write_lora_adapter_gguf
    from alignts.runtime.manifest import sha256_file

    peft_model = unfused_core._peft
    tensors = lora_tensors_from_peft(peft_model)
    base = peft_model.unload()  # drop the LoRA layers without merging them
    write_gguf(base, tmp / "lm.base.f32.gguf", dtype="f32", metadata={"alignts.paradigm": "internal"},
               embeddings_only=True)
    write_lora_adapter_gguf(tensors, None, tmp / "lora.gguf", base_sha256=sha256_file(tmp / "lm.base.f32.gguf"))
    worst = _gguf_core_diff(tmp / "lm.base.f32.gguf", core, make_inputs, cfg.model.n_patches,
                            loras=[(str(tmp / "lora.gguf"), 1.0)])
    tol = GGUF_TOL["f32"]
    if not np.isfinite(worst) or worst > tol:
        raise ValidationError(f"gguf-f32-lora: base + adapter through llama.cpp differs from the fused torch "
                              f"core by {worst:.3g} > {tol:g}.")
    return variant_record(tmp, "gguf-f32-lora", "gguf", "f32", ["lm.base.f32.gguf", "lora.gguf", IO_NAME],
                          validation=validation_record(worst, tol, 2, reference="torch-fp32 (LoRA fused)"),
                          extra={"lm_file": "lm.base.f32.gguf", "adapter_file": "lora.gguf", "adapter_scale": 1.0,
                                 "io_file": IO_NAME, "kv_type": "f32", "architecture": backbone.name,
                                 "lora_rank": tensors.rank, "lora_alpha": tensors.alpha})


def _end_to_end_check(model, folder: Path, m, x: np.ndarray):
    """Run every variant through the runtime on real windows; record its diff vs the torch model.

    Returns (variants that ran, with the diff in their validation; {name: why} for optional variants that
    failed). The first variant (onnx-fp32) must run and match: its failure is raised.
    """
    import torch

    from alignts.runtime import load

    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    f = load(folder, verify=False)
    ok, failed = [], {}
    for i, v in enumerate(m.variants):
        try:
            f.plan(variant=v.name, batch_size=x.shape[0])
            got = f.forecast_scaled(x)
        except Exception as e:
            if i == 0:
                raise
            failed[v.name] = f"the runtime could not run it: {type(e).__name__}: {e}"
            log.warning("variant %s left out: %s", v.name, failed[v.name])
            continue
        d = float(np.abs(got - ref).max())
        if i == 0 and not d <= 10 * ONNX_TOL:
            raise ValidationError(f"{v.name}: the runtime path (numba RevIN/patching + ONNX core) differs from "
                                  f"torch by {d:.3g} on real windows (> {10 * ONNX_TOL:g}); a kernel or export bug.")
        log.info("variant %s end-to-end max abs diff %.3g", v.name, d)
        ok.append(replace(v, validation={**v.validation, "end_to_end_max_abs_diff": d,
                                         "end_to_end_n_windows": int(x.shape[0])}))
    return ok, failed


def check_config(cfg: FitInternalConfig) -> None:
    """Cheap checks before anything loads."""
    from alignts.export.gate import check_threshold

    check_threshold(cfg.max_rel_mse_change)
    if cfg.n_layers is not None and cfg.n_layers < 1:
        raise InputError(f"--layers {cfg.n_layers}: expected >= 1.")
    from alignts.data.splits import check_train_percent

    check_train_percent(cfg.train_percent)
    cfg.model.check()
