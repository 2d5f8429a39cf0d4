"""Quantized variants of an existing bundle: ONNX int8 and GGUF f16 / bf16 / q8_0 / q4_0 (no torch needed).

- ONNX ``int8``: dynamic per-channel int8 quantization of the MatMul weights of every ``.onnx`` file of the
  bundle's fp32 ONNX variant (``onnxruntime.quantization``, through ``alignts.export.onnx_export.quantize_int8``).
- GGUF ``f16`` / ``bf16`` / ``q8_0`` / ``q4_0``: the f32 GGUF re-written tensor by tensor with gguf-py (2-D weights
  quantized, norms, biases and position embeddings kept f32, rows not a multiple of the block size written f16:
  the same rules as ``alignts.export.gguf_writer.write_gguf``); every metadata key is copied. They run with
  exact attention, as gguf-f32 does (older bundles' encoder variants record flash attention, ``extra.flash_attn``,
  which the runtimes still honor: see :data:`FLASH_ATTN_DTYPES`).

- ONNX ``int8`` of an Internal bundle is built twice: dynamic (above) and static (``quantize_int8_static``:
  QDQ, per-channel weights, activation ranges calibrated on normalized patches of training windows); the
  accuracy gate keeps the better of the two under the name ``onnx-int8`` (``extra.quantization`` says which).

Internal bundles are judged by the accuracy gate (:mod:`alignts.export.gate`, the same function ``alignts fit``
uses): the relative change of the validation MSE against the bundle's fp32 variant, in the scaled space, on the
bundle's data (``data``, default the manifest's ``training.data``). A new variant over ``max_rel_mse_change``
is not added (its row says why); every variant of the bundle gets a fresh ``accuracy`` record from the same run.
Each new variant's fidelity is recorded too, not enforced, in ``validation``: the max abs diff of its forecasts
against the fp32 variant of the same backend (itself validated against torch at export) on seeded random walks
(``max_abs_diff``, ``relative_max_abs_diff``, ``reference``, ``n_inputs``); a NaN/inf output raises
ValidationError. Injective bundles have no gate (greedy digits differ discretely): their difference is recorded.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from alignts.errors import ArtifactError, InputError, ValidationError
from alignts.export.gate import MAX_REL_MSE_CHANGE
from alignts.runtime.manifest import (FORMAT_VERSION, Manifest, Variant, bundle_lock, file_entries,
                                      read_manifest, write_manifest)

log = logging.getLogger(__name__)

ONNX_DTYPES = ("int8",)
GGUF_DTYPES = ("f16", "bf16", "q8_0", "q4_0")
# GGUF dtypes whose encoder (BERT) variants record flash attention (``Variant.extra["flash_attn"]``; the runtimes
# honor the record). Sessions 6-8 wrote it for bf16 / q8_0 / q4_0: ggml's flash attention skipped the masked blocks
# between the series of one decode (results/speed_llama.md, section 6). alignts' llama.cpp now attends per series
# without a mask (scripts/patch_llama.py, change 4), and exact attention is the faster one: MiniLM hidden states of
# 7 series, 1 thread, exact / flash: f32 18.4 / 21.0 ms, bf16 10.8 / 13.6, q8_0 11.4 / 13.8 (section 9). So none.
FLASH_ATTN_DTYPES: tuple[str, ...] = ()
DTYPES = ONNX_DTYPES + GGUF_DTYPES
STATIC = "int8-static"  # the staged static int8 candidate (judged beside dynamic int8; one of them is kept)
_FLOAT_SOURCES = {"onnx": ("fp32",), "gguf": ("f32", "f16")}


def _renamed(name: str, old: str, new: str) -> str:
    """``core.onnx`` -> ``core.int8.onnx``; ``lm.f32.gguf`` -> ``lm.q8_0.gguf``."""
    p = Path(name)
    parts = p.name.split(".")
    if old in parts[:-1]:
        parts[parts.index(old)] = new
    else:
        parts.insert(len(parts) - 1, new)
    return str(p.with_name(".".join(parts)))


def _variant_name(src: Variant, dtype: str) -> str:
    return src.name.replace(src.dtype, dtype) if src.dtype in src.name else f"{src.name}-{dtype}"


def requantize_gguf(src: str | os.PathLike, dst: str | os.PathLike, dtype: str) -> dict[str, int]:
    """Write ``dst``: the GGUF ``src`` (f32/f16 tensors) with its 2-D weights in ``dtype``; returns
    {tensor type written: count}. Refuses a source that is already quantized (quantizing twice compounds
    the error: quantize from the f32 file)."""
    from alignts.export.gguf_writer import Keys, _add_tensor, _ftype, _gguf, _keep_f32, _tmp_beside

    gguf = _gguf()
    if dtype not in GGUF_DTYPES + ("f32",):
        raise InputError(f"GGUF dtype {dtype!r}: expected one of {('f32',) + GGUF_DTYPES}.")
    reader = gguf.GGUFReader(str(src))
    K = gguf.Keys.General
    arch_field = reader.fields.get(K.ARCHITECTURE)
    if arch_field is None:
        raise ArtifactError(f"{src}: no general.architecture key; expected a GGUF model. Re-export it.")
    arch = str(arch_field.contents())
    dst = Path(dst)
    tmp = _tmp_beside(dst)
    written: dict[str, int] = {}
    try:
        w = gguf.GGUFWriter(tmp, arch)
        for key, f in reader.fields.items():
            if key.startswith("GGUF.") or key in (K.ARCHITECTURE, K.FILE_TYPE, Keys.DTYPE):
                continue
            sub = f.types[1] if len(f.types) > 1 else None
            w.add_key_value(key, f.contents(), f.types[0], sub)
        w.add_file_type(_ftype(dtype))
        w.add_string(Keys.DTYPE, dtype)
        keep_f32 = _keep_f32()
        for t in reader.tensors:
            tt = gguf.GGMLQuantizationType(int(t.tensor_type))
            if tt not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                raise ArtifactError(f"{src}: tensor {t.name!r} is {tt.name}; expected f32/f16 tensors to quantize "
                                    "from. Fix: quantize from the bundle's gguf-f32 variant.")
            arr = np.asarray(t.data, dtype=np.float32).reshape(tuple(int(n) for n in reversed(t.shape)))
            kind = _add_tensor(w, t.name, arr, "f32" if t.name in keep_f32 else dtype)
            written[kind] = written.get(kind, 0) + 1
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("wrote %s (%s): %s", dst, dtype, written)
    return written


def _source_variant(m: Manifest, backend: str) -> Variant | None:
    for want in _FLOAT_SOURCES[backend]:
        for v in m.variants:
            if v.backend == backend and v.dtype == want:
                return v
    return None


def random_walks(m: Manifest, n: int, seed: int) -> np.ndarray:
    """[n, C, L] seeded random walks on the scaled data's scale: the inputs variants are compared on."""
    c = m.config
    C = int(c.get("n_channels") or 1)
    L = int(c.get("context_len") or 96)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, C, L)).cumsum(-1) * 0.3 + rng.standard_normal((n, C, 1))
    return x.astype(np.float32)  # [n, C, L] random walks on the scaled data's scale


def runtime_forecasts(folder: Path, names: Sequence[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """{variant: forecast_scaled(x)} through the runtime (Injective greedy, so variants decode alike)."""
    from alignts.runtime import load

    f = load(folder, verify=False)
    if f.paradigm == "injective" and hasattr(f, "set_sampling"):
        f.set_sampling(greedy=True, n_samples=1)  # deterministic: compare the same decoding path
    out = {}
    for n in names:
        f.plan(variant=n, batch_size=x.shape[0])
        out[n] = np.asarray(f.forecast_scaled(x), dtype=np.float64)
    return out


def copy_bundle(src: Path, dst: str | os.PathLike, overwrite: bool) -> Path:
    """Copy the bundle ``src`` to ``dst`` (the folder a ``--out`` edit writes); an existing ``dst`` is replaced only
    with ``overwrite``."""
    dst = Path(dst)
    if dst.exists():
        if not overwrite:
            raise ArtifactError(f"{str(dst)!r} already exists; choose another --out or pass --overwrite.")
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def restore(folder: Path, m: Manifest, created: Iterable[str]) -> None:
    """Undo a failed in-place edit: the manifest ``m`` back, and the files the edit created that ``m`` does not
    list removed."""
    write_manifest(folder, m)
    for rel in created:
        if rel not in m.files:
            (folder / rel).unlink(missing_ok=True)


def quantize_bundle(bundle: str | os.PathLike, dtypes: Iterable[str] = ("int8", "bf16", "q8_0", "q4_0"),
                    out: str | os.PathLike | None = None, overwrite: bool = False, n_check: int = 8,
                    seed: int = 0, data: str | None = None, max_rel_mse_change: float = MAX_REL_MSE_CHANGE,
                    gate_windows: int | None = None, threads: int | None = None) -> tuple[Manifest, list[dict[str, Any]]]:
    """Add quantized variants to ``bundle`` (in place, or to a copy at ``out``); returns (manifest, rows).

    dtypes: any of ``int8`` (from the fp32 ONNX variant; Internal: dynamic and static, the better kept),
    ``f16``, ``bf16``, ``q8_0``, ``q4_0`` (from the f32 GGUF). A variant that exists already is skipped unless
    ``overwrite``. data / max_rel_mse_change / gate_windows / threads: the accuracy gate's data (default the
    manifest's ``training.data``), threshold, number of validation windows (default ``gate.GATE_WINDOWS``) and
    backend threads. rows: one dict per candidate (variant, source, bytes, max_abs_diff, relative_max_abs_diff,
    kept, verdict, rel_mse_change) for the CLI. Holds the written folder's writer lock
    (:func:`alignts.runtime.manifest.bundle_lock`), as ``fit`` and ``calibrate`` do.
    """
    target = Path(bundle if out is None else out)
    target.parent.mkdir(parents=True, exist_ok=True)
    with bundle_lock(target):
        return _quantize(bundle, dtypes, out, overwrite, n_check, seed, data, max_rel_mse_change, gate_windows,
                         threads)


def _quantize(bundle, dtypes, out, overwrite: bool, n_check: int, seed: int, data, max_rel: float,
              n_windows: int | None, threads: int | None):
    from alignts.export import gate

    dtypes = list(dict.fromkeys(dtypes))
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        raise InputError(f"dtypes {bad or dtypes}: expected some of {DTYPES}. Fix: e.g. --to int8,q8_0")
    max_rel = gate.check_threshold(max_rel)
    folder = Path(bundle)
    m = read_manifest(folder, verify=True)
    if m.paradigm == "bridging":
        raise InputError(f"{folder}: a Bridging bundle's weights are its shared backbone's, which another bundle "
                         "owns (by hash); quantizing the small adapter alone gains nothing. Fix: quantize an "
                         "Internal or Injective bundle; Bridging runs the backbone's onnx-fp32 / gguf-f32.")
    gated = m.paradigm == "internal"
    splits = gate.data_splits(m, data) if gated else None  # fails before anything is written
    if out is not None:
        folder = copy_bundle(folder, out, overwrite)
    todo: list[tuple[str, Variant]] = []
    for d in dtypes:
        backend = "onnx" if d in ONNX_DTYPES else "gguf"
        src = _source_variant(m, backend)
        if src is None:
            own = ONNX_DTYPES if backend == "onnx" else GGUF_DTYPES
            raise InputError(f"{d}: the bundle has no {backend} {'/'.join(_FLOAT_SOURCES[backend])} variant to "
                             f"quantize from (it has {', '.join(v.name for v in m.variants)}). Fix: re-export with "
                             f"that backend (e.g. without --no-gguf), or ask only for "
                             f"{', '.join(x for x in DTYPES if x not in own)}.")
        name = _variant_name(src, d)
        if any(v.name == name for v in m.variants) and not overwrite:
            log.info("%s exists; skipped (pass overwrite=True to rebuild it)", name)
            continue
        todo.append((d, src))
        if d == "int8" and gated:
            todo.append((STATIC, src))
    if not todo:
        return m, []
    new_variants: list[Variant] = []
    created: list[str] = []
    try:
        for d, src in todo:
            suffix = ".onnx" if src.backend == "onnx" else ".gguf"
            mapping = {f: _renamed(f, src.dtype, d) for f in src.files if f.endswith(suffix)}
            for old, new in mapping.items():
                created.append(new)
                if d == STATIC:
                    from alignts.export.onnx_export import quantize_int8_static
                    from alignts.runtime.configs import runtime_config

                    batches = [{src.inputs[0]: p} for p in gate.calibration_patches(splits, runtime_config(m))]
                    quantize_int8_static(folder / old, folder / new, batches)
                elif src.backend == "onnx":
                    from alignts.export.onnx_export import quantize_int8

                    quantize_int8(folder / old, folder / new)
                else:
                    requantize_gguf(folder / old, folder / new, d)
            files = tuple(mapping.get(f, f) for f in src.files)
            extra = {k: (mapping.get(v, v) if isinstance(v, str) else v) for k, v in src.extra.items()}
            if src.backend == "onnx":
                extra["quantization"] = "static-qdq" if d == STATIC else "dynamic"
            elif m.paradigm == "internal" and m.architecture == "bert" and d in FLASH_ATTN_DTYPES:
                extra["flash_attn"] = True
            size = sum((folder / f).stat().st_size for f in files)
            new_variants.append(Variant(name=_variant_name(src, d), backend=src.backend,
                                        dtype="int8" if d == STATIC else d, files=files, inputs=src.inputs,
                                        outputs=src.outputs, dynamic_axes=src.dynamic_axes, validation={},
                                        weight_bytes=int(size), extra=extra))

        def ordered(news: Sequence[Variant], base: Sequence[Variant] = m.variants) -> tuple[Variant, ...]:
            by = {v.name: v for v in news}  # replaced ones keep their place
            return tuple(by.pop(v.name, v) for v in base) + tuple(by.values())

        def files_for(variants: Sequence[Variant]) -> dict:
            fs = dict(m.files)
            for v in variants:
                if v.name in {n.name for n in new_variants}:
                    fs.update(file_entries(folder, [f for f in v.files if f not in fs or f.endswith((".onnx", ".gguf"))]))
            return fs

        staged = replace(m, files=files_for(new_variants), variants=ordered(new_variants),
                         format_version=FORMAT_VERSION)
        write_manifest(folder, staged)  # the runtime needs the variants listed to run them
        checked, rows = _fidelity(folder, m, new_variants, n_check, seed)
        final_variants = list(ordered(checked, staged.variants))
        if gated:
            final_variants, rows = _gate(folder, m, final_variants, rows, splits, max_rel, n_windows, threads)
        kept = {v.name for v in final_variants}
        used = {f for v in final_variants for f in m.reads(v)}
        for rel in created:
            if rel not in used:
                (folder / rel).unlink(missing_ok=True)
        final = replace(staged, variants=tuple(final_variants),
                        files={k: e for k, e in files_for(final_variants).items()
                               if k in used or (k in m.files and k not in created)})
        write_manifest(folder, final)
        for r in rows:
            r.setdefault("kept", r["variant"] in kept)
    except BaseException:
        restore(folder, m, created)
        raise
    return final, rows


def _fidelity(folder: Path, m: Manifest, new_variants: Sequence[Variant], n_check: int, seed: int):
    """Each new variant's forecasts vs the fp32 variant of its backend on seeded random walks (recorded in
    ``validation``; non-finite forecasts raise ValidationError)."""
    x = random_walks(m, n_check, seed)
    refs = {b: _source_variant(m, b) for b in ("onnx", "gguf")}
    ref_names = [r.name for r in refs.values() if r is not None and any(v.backend == r.backend
                                                                       for v in new_variants)]
    got = runtime_forecasts(folder, ref_names + [v.name for v in new_variants], x)
    rows, checked = [], []
    for v in new_variants:
        ref = refs[v.backend]
        diff = float(np.abs(got[v.name] - got[ref.name]).max())
        scale = float(np.abs(got[ref.name]).max()) or 1e-12
        if not np.isfinite(diff):
            raise ValidationError(f"{v.name}: forecasts non-finite values on {n_check} random inputs where "
                                  f"{ref.name} does not; expected a usable variant. Fix: use a finer dtype "
                                  "(q8_0 instead of q4_0).")
        val = {"max_abs_diff": diff, "relative_max_abs_diff": diff / scale, "tolerance": None,
               "n_inputs": int(n_check), "reference": f"{ref.name} (runtime)",
               "method": "end-to-end runtime forecasts on seeded random walks (recorded, not a gate)"}
        checked.append(replace(v, validation=val))
        rows.append({"variant": v.name, "source": ref.name, "bytes": v.weight_bytes, "max_abs_diff": diff,
                     "relative_max_abs_diff": diff / scale, "quantization": v.extra.get("quantization")})
    return checked, rows


def _gate(folder: Path, m: Manifest, variants: list[Variant], rows: list[dict], splits, max_rel: float,
          n_windows: int | None, threads: int | None):
    """Judge every runnable variant on the validation windows; drop the new ones over the gate and the worse of
    the two int8 forms. Returns (variants, rows)."""
    from alignts.export import gate
    from alignts.runtime.budget import available_backends
    from alignts.runtime.configs import runtime_config

    cfg = runtime_config(m)
    windows = gate.gate_windows(splits, int(cfg.context_len), int(cfg.horizon), n_windows or gate.GATE_WINDOWS)
    have = set(available_backends())
    records = gate.judge(folder, [v.name for v in variants if v.backend in have], gate.reference_variant(m),
                         windows, max_rel, threads)
    new = {r["variant"] for r in rows}
    kept, verdicts, final_names = gate.select(variants, records, optional=new)
    for r in rows:
        rec = records.get(r["variant"])
        r.update(rel_mse_change=rec and rec["rel_mse_change"], verdict=verdicts.get(r["variant"], ""),
                 kept=r["variant"] in final_names, kept_as=final_names.get(r["variant"]))
    return kept, rows
