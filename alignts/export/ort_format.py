"""ORT-format variants of a bundle's ONNX variants, for devices that run a reduced-operator onnxruntime.

onnxruntime's minimal builds load only ORT-format models (a flatbuffer, no protobuf parser) and can be compiled
with just the operators a set of models needs. For each ONNX variant (``onnx-fp32``, ``onnx-int8``, ...) this
module writes:

- ``<file>.ort``: the model saved by onnxruntime itself in ORT format after its *basic* graph optimizations
  (constant folding, redundant-node removal: hardware-independent, so the file runs on any CPU; the extended and
  layout optimizations that tie a graph to one instruction set are left to the device's session), and
- ``<file>.required_operators.config``: the operators (domain, opset, op types) the ``.ort`` file uses, the input
  of onnxruntime's ``--include_ops_by_config`` build option (onnxruntime/tools/ort_format_model).

Both files are listed and sealed in the manifest; the new variant (``<source>-ort``, same backend and dtype,
``extra = {"format": "ort", "source": ..., "required_operators": ...}``) is validated against its ONNX source
through the runtime on seeded random-walk inputs: the forecasts must agree within ``REL_TOL`` relative to the
source's largest |forecast| (basic optimizations reorder no arithmetic that matters; the difference is recorded).
Internal bundles only: Bridging's adapter and Injective's causal LM are loaded by name, not by variant file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from alignts.errors import InputError, ValidationError
from alignts.export.quantize import copy_bundle, random_walks, restore, runtime_forecasts
from alignts.runtime.manifest import (Manifest, Variant, bundle_lock, bundle_file, file_entries, read_manifest,
                                      write_manifest)

log = logging.getLogger(__name__)

REL_TOL = 1e-4  # relative max abs diff vs the ONNX source above which an ORT-format variant is refused
SUFFIX = "-ort"


def convert_to_ort(src: str | os.PathLike, dst: str | os.PathLike, config: str | os.PathLike) -> list[str]:
    """Write ``dst`` (ORT format, basic optimizations) from the ONNX model ``src`` and ``config`` (its required
    operators); returns the config's lines (``domain;opset;op,op,...``)."""
    from alignts.runtime.backends.onnx import _ort

    ort = _ort()
    from onnxruntime.tools.ort_format_model import create_config_from_models

    dst, config = Path(dst), Path(config)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])  # saving is a side effect of loading
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    create_config_from_models([dst], config, enable_type_reduction=False)
    lines = [ln for ln in config.read_text().splitlines() if ln and not ln.startswith("#")]
    # the tool's header names the absolute path of the model on this machine: name the bundle file instead
    config.write_text(f"# Generated from model/s:\n# - {dst.name}\n" + "".join(ln + "\n" for ln in lines))
    return lines


def _ort_names(files: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """{``core.onnx``: (``core.ort``, ``core.required_operators.config``)} for the ONNX files of a variant."""
    out = {}
    for f in files:
        if f.endswith(".onnx"):
            stem = f[: -len(".onnx")]
            out[f] = (stem + ".ort", stem + ".required_operators.config")
    return out


def add_ort_variants(bundle: str | os.PathLike, sources: tuple[str, ...] | None = None,
                     out: str | os.PathLike | None = None, overwrite: bool = False, n_check: int = 8,
                     seed: int = 0) -> tuple[Manifest, list[dict[str, Any]]]:
    """Add an ORT-format twin of each ONNX variant of the Internal bundle ``bundle`` (in place, or in a copy at
    ``out``, under the written folder's writer lock); ``sources`` limits which (variant names), None = every ONNX
    variant without an ORT twin (``overwrite`` rebuilds existing twins and replaces ``out``). Returns the new
    manifest and one row per added variant (variant, source, bytes, operators, max_abs_diff, relative)."""
    folder = Path(bundle if out is None else out)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with bundle_lock(folder):
        if out is not None and Path(out) != Path(bundle):
            read_manifest(bundle, verify=True)  # copy only a sealed bundle
            copy_bundle(Path(bundle), folder, overwrite)
        return _add(folder, sources, overwrite, n_check, seed)


def _add(folder: Path, sources, overwrite: bool, n_check: int, seed: int):
    m = read_manifest(folder, verify=True)
    if m.paradigm != "internal":
        raise InputError(f"{folder}: ORT-format variants are made for Internal bundles; this one is "
                         f"{m.paradigm!r}. Fix: run `alignts quantize --to ort` on an Internal bundle.")
    onnx = [v for v in m.variants if v.backend == "onnx" and v.extra.get("format") != "ort"]
    if sources is not None:
        unknown = sorted(set(sources) - {v.name for v in onnx})
        if unknown:
            raise InputError(f"{unknown}: not ONNX variants of {folder} (it has "
                             f"{', '.join(v.name for v in onnx) or 'none'}).")
        onnx = [v for v in onnx if v.name in sources]
    if not onnx:
        raise InputError(f"{folder}: no ONNX variant to convert (variants: "
                         f"{', '.join(v.name for v in m.variants)}). Fix: re-export with ONNX.")
    existing = {v.name for v in m.variants}
    todo = [v for v in onnx if overwrite or v.name + SUFFIX not in existing]
    if not todo:
        return m, []
    made: list[Variant] = []
    created: list[str] = []
    ops: dict[str, list[str]] = {}
    try:
        for src in todo:
            names = _ort_names(src.files)
            files = []
            for onnx_name, (ort_name, cfg_name) in names.items():
                created += [ort_name, cfg_name]
                path = bundle_file(folder, m, onnx_name)  # sealed: the bytes converted are the listed ones
                ops[src.name + SUFFIX] = convert_to_ort(path, folder / ort_name, folder / cfg_name)
                files.append(ort_name)
            files += [f for f in src.files if f not in names]
            cfgs = [cfg for _, cfg in names.values()]
            size = sum((folder / f).stat().st_size for f in files if f.endswith(".ort"))
            made.append(Variant(name=src.name + SUFFIX, backend="onnx", dtype=src.dtype, files=tuple(files),
                                inputs=src.inputs, outputs=src.outputs, dynamic_axes=src.dynamic_axes,
                                validation={}, weight_bytes=int(size),
                                extra={**src.extra, "format": "ort", "source": src.name,
                                       "required_operators": cfgs[0] if len(cfgs) == 1 else cfgs}))
        all_files = dict(m.files)
        all_files.update(file_entries(folder, created))
        keep = tuple(v for v in m.variants if v.name not in {n.name for n in made})
        staged = replace(m, files=all_files, variants=keep + tuple(made))
        write_manifest(folder, staged)
        got = runtime_forecasts(folder, [v.extra["source"] for v in made] + [v.name for v in made],
                                random_walks(m, n_check, seed))
        rows, validated = [], []
        for v in made:
            ref = got[v.extra["source"]]
            diff = float(np.abs(got[v.name] - ref).max())
            rel = diff / (float(np.abs(ref).max()) or 1e-12)
            if not np.isfinite(diff) or rel > REL_TOL:
                raise ValidationError(f"{v.name}: relative max abs diff vs {v.extra['source']} is {rel:.3g} over "
                                      f"{n_check} random inputs, above {REL_TOL}; expected the same numbers as the "
                                      "ONNX source. Fix: report it with `alignts env` output.")
            validated.append(replace(v, validation={
                "max_abs_diff": diff, "relative_max_abs_diff": rel, "relative_tolerance": REL_TOL,
                "n_inputs": int(n_check), "reference": f"{v.extra['source']} (runtime)",
                "method": "end-to-end runtime forecasts on seeded random walks"}))
            rows.append({"variant": v.name, "source": v.extra["source"], "bytes": v.weight_bytes,
                         "operators": ops[v.name], "max_abs_diff": diff, "relative_max_abs_diff": rel})
        final = replace(staged, variants=keep + tuple(validated))
        write_manifest(folder, final)
    except BaseException:
        restore(folder, m, created)
        raise
    return final, rows

