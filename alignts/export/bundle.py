"""Shared bundle-writing helpers: exporter versions, variant records, the final manifest and its calibration.

Use inside ``alignts.runtime.manifest.bundle_writer(out)`` so nothing half-written stays on disk::

    with bundle_writer(out, overwrite) as tmp:
        ...write files into tmp...
        v = variant_record(tmp, "onnx-fp32", "onnx", "fp32", ["core.onnx"], validation=...)
        finish_bundle(tmp, paradigm="internal", architecture="gpt2", variants=[v], config=...)
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from alignts.errors import AlignTSError
from alignts.runtime.manifest import Manifest, Variant, file_entries, package_versions, write_manifest

log = logging.getLogger(__name__)

_VERSIONED = ("alignts", "numpy", "torch", "transformers", "peft", "onnx", "onnxscript", "onnxruntime",
              "gguf", "llama_cpp_python", "numba")


def versions() -> dict[str, str]:
    """Versions of the exporting environment (packages that are not installed are left out)."""
    return {"python": platform.python_version(), **package_versions(_VERSIONED)}


def validation_record(max_abs_diff: float, tolerance: float | None, n_inputs: int,
                      reference: str = "torch-fp32", **extra: Any) -> dict[str, Any]:
    """The ``Variant.validation`` dict: the export check against torch."""
    return {"max_abs_diff": float(max_abs_diff), "tolerance": None if tolerance is None else float(tolerance), "n_inputs": int(n_inputs),
            "reference": reference, **extra}


def variant_record(folder: str | Path, name: str, backend: str, dtype: str, files: Sequence[str],
                   inputs: Sequence[str] = (), outputs: Sequence[str] = (),
                   dynamic_axes: Mapping[str, Mapping[str, str]] | None = None,
                   validation: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Variant:
    """A :class:`Variant` whose ``weight_bytes`` is the total size of its files in ``folder``."""
    folder = Path(folder)
    size = sum((folder / f).stat().st_size for f in files)
    axes = {k: {str(a): n for a, n in v.items()} for k, v in (dynamic_axes or {}).items()}
    return Variant(name=name, backend=backend, dtype=dtype, files=tuple(files), inputs=tuple(inputs),
                   outputs=tuple(outputs), dynamic_axes=axes, validation=dict(validation or {}),
                   weight_bytes=int(size), extra=dict(extra or {}))


def finish_bundle(folder: str | Path, paradigm: str, architecture: str, variants: Iterable[Variant],
                  extra_files: Sequence[str] = (), **fields: Any) -> Manifest:
    """Hash every file the variants use (plus ``extra_files``), write ``manifest.json``, return the Manifest.

    fields: the other Manifest fields (config, normalization, lora, limits, training, ...); ``versions``
    defaults to :func:`versions`.
    """
    variants = tuple(variants)
    names: list[str] = []
    for v in variants:
        names.extend(f for f in v.files if f not in names)
    names.extend(f for f in extra_files if f not in names)
    fields.setdefault("versions", versions())
    m = Manifest(paradigm=paradigm, architecture=architecture, files=file_entries(folder, names),
                 variants=variants, **fields)
    write_manifest(folder, m)
    return m


def command_line() -> str:
    """The command that is running (for the manifest's ``training.command``)."""
    import shlex

    argv = list(sys.argv)
    if argv and argv[0].endswith(("alignts", "__main__.py")):
        argv[0] = "alignts"
    return " ".join(shlex.quote(a) for a in argv)


def calibrate_written(out: str | Path, splits, threads: int | None = None):
    """Add the split-conformal calibration (``alignts.eval.calibrate``, at most 512 validation windows through
    the runtime's first variant) to a bundle just written; returns its new Manifest. When only the calibration
    fails, the trained bundle stays, uncalibrated, with a warning naming the fix; returns None then."""
    from alignts.eval.calibrate import calibrate_bundle

    t0 = time.perf_counter()
    try:
        m = calibrate_bundle(out, splits, threads=threads)
    except AlignTSError as e:
        log.warning("bundle %s left without quantiles: calibration failed: %s. Fix: alignts calibrate %s "
                    "--data DATA", out, e, out)
        return None
    log.info("calibrated %s in %.1f s", out, time.perf_counter() - t0)
    return m

