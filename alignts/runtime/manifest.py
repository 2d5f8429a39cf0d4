"""Bundle manifests: the self-description of an exported artifact folder.

A bundle is a folder: ``manifest.json`` beside ONNX files (weights may sit in ``.onnx.data`` beside), GGUF
files and small ``.npz`` weight files. The manifest names the paradigm, architecture, every file with sha256
and size, the variants (one per backend x dtype) with their I/O names, dynamic axes and export validation,
codec/normalization settings, LoRA facts, limits and versions.

This module is the single place that reads, verifies and writes manifests (torch-free).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from alignts.errors import ArtifactError, ManifestError

FORMAT = "alignts-bundle"
FORMAT_VERSION = "1.0"
MANIFEST_NAME = "manifest.json"
PARADIGMS = ("internal", "bridging", "injective", "backbone")
BACKENDS = ("onnx", "gguf")
# The trained torch tensors (alignts.export.reference.load_torch rebuilds the torch model from them); the
# runtime never reads this file.
TORCH_TRAINED_NAME = "torch_trained.safetensors"


def package_versions(names) -> dict[str, str]:
    """Installed versions of the distributions ``names`` (``_`` read as ``-``); missing ones are left out."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return out


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle, relative to the bundle folder."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Variant:
    """One runnable form of the model: a backend, a dtype and the files it needs.

    name:        unique in the bundle, e.g. ``onnx-fp32``, ``onnx-int8``, ``gguf-f32``, ``gguf-q8_0``.
    backend:     ``onnx`` or ``gguf``.
    dtype:       weight type: ``fp32``, ``int8`` (ONNX); ``f32``, ``f16``, ``q8_0``, ``q4_0`` (GGUF).
    files:       bundle-relative paths this variant reads (all listed in Manifest.files).
    inputs/outputs: I/O tensor names, in order.
    dynamic_axes: {tensor name: {axis index as str: axis name}}.
    validation:  export check against torch: {"max_abs_diff": float, "tolerance": float, "n_inputs": int,
                 "reference": "torch-fp32"}.
    weight_bytes: bytes of weights this variant loads (for the memory planner).
    extra:       backend facts (e.g. the GGUF architecture, the kv cache type it was validated with).
    """

    name: str
    backend: str
    dtype: str
    files: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    dynamic_axes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    validation: Mapping[str, Any] = field(default_factory=dict)
    weight_bytes: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` of a bundle.

    paradigm:      ``internal`` | ``bridging`` | ``injective`` | ``backbone`` (a frozen LM shared by adapters).
    architecture:  backbone architecture (``bert``, ``gpt2``, ``llama``), as in the backbone registry.
    files:         {relative path: FileEntry}; every file the bundle holds.
    variants:      runnable forms, most accurate first.
    config:        paradigm settings the runtime needs (context_len, horizon, n_channels, patch_len, stride,
                   d_model, ...); the paradigm module documents its keys.
    normalization: e.g. {"kind": "revin", "eps": 1e-5, "affine": false}.
    codec:         Injective codec settings (precision, alpha, beta, separators, ...); {} otherwise.
    lora:          {"rank", "alpha", "targets", "fused", "base_sha256"}; {} when no LoRA.
    backbone:      Bridging: {"sha256": hash of the backbone bundle's manifest, "name": ...}; {} otherwise.
    limits:        {"max_context", "max_horizon", "peak_bytes_estimate", ...}.
    training:      how it was fitted: data, command, budget, wall_s, seed, metrics on validation.
    versions:      {"alignts": ..., "torch": ..., "onnx": ..., ...} of the exporting environment.
    """

    paradigm: str
    architecture: str
    files: Mapping[str, FileEntry]
    variants: tuple[Variant, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    normalization: Mapping[str, Any] = field(default_factory=dict)
    codec: Mapping[str, Any] = field(default_factory=dict)
    lora: Mapping[str, Any] = field(default_factory=dict)
    backbone: Mapping[str, Any] = field(default_factory=dict)
    limits: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: str = FORMAT_VERSION

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.variants)
        raise ArtifactError(f"bundle has no variant {name!r}; it has: {known}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["files"] = {k: dataclasses.asdict(v) for k, v in self.files.items()}
        return _plain(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "manifest") -> "Manifest":
        if d.get("format") != FORMAT:
            raise ManifestError(f"{where}: 'format' is {d.get('format')!r}, expected {FORMAT!r}; "
                                "this folder is not an alignts bundle (re-export it with `alignts fit ...`).")
        version = str(d.get("format_version", ""))
        if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
            raise ManifestError(f"{where}: format_version {version!r} is not readable by this alignts "
                                f"(reads {FORMAT_VERSION.split('.')[0]}.x). HINT: upgrade alignts "
                                "(pip install -U alignts) or re-export the bundle with this version.")
        try:
            files = {k: FileEntry(sha256=str(v["sha256"]), size=int(v["size"])) for k, v in d["files"].items()}
            variants = tuple(
                Variant(**{**v, "files": tuple(v["files"]), "inputs": tuple(v.get("inputs", ())),
                           "outputs": tuple(v.get("outputs", ()))})
                for v in d["variants"]
            )
            known = {f.name for f in dataclasses.fields(cls)} - {"files", "variants"}
            rest = {k: v for k, v in d.items() if k in known}
            m = cls(files=files, variants=variants, **rest)
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{where}: malformed manifest ({type(e).__name__}: {e}); "
                                "re-export the bundle.") from e
        if m.paradigm not in PARADIGMS:
            raise ManifestError(f"{where}: unknown paradigm {m.paradigm!r}; expected one of {PARADIGMS}.")
        for v in m.variants:
            if v.backend not in BACKENDS:
                raise ManifestError(f"{where}: variant {v.name!r} has unknown backend {v.backend!r}; "
                                    f"expected one of {BACKENDS}.")
            for f in v.files:
                if f not in m.files:
                    raise ManifestError(f"{where}: variant {v.name!r} uses {f!r}, which the manifest's "
                                        "'files' does not list; the bundle is inconsistent, re-export it.")
        return m


def _plain(x: Any) -> Any:
    """Turn tuples/mappings/numpy scalars into JSON-ready Python values."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalar
        return x.item()
    return x


def manifest_sha256(bundle: str | os.PathLike) -> str:
    """Identity of a bundle: sha256 of its manifest.json (which itself lists every file's sha256)."""
    return sha256_file(Path(bundle) / MANIFEST_NAME)


def read_manifest(bundle: str | os.PathLike, verify: bool = True, only: tuple[str, ...] | None = None) -> Manifest:
    """Parse ``bundle/manifest.json``; with ``verify``, check size and sha256 of the files it lists.

    only: verify just these bundle-relative files (the ones a chosen variant reads); None = all files.
    Raises ManifestError for a missing/malformed manifest, ArtifactError for a missing or tampered file.
    """
    bundle = Path(bundle)
    path = bundle / MANIFEST_NAME
    if not bundle.is_dir():
        raise ArtifactError(f"bundle folder {str(bundle)!r} does not exist; pass the folder that "
                            "`alignts fit ... --out FOLDER` wrote.")
    if not path.is_file():
        raise ManifestError(f"{str(bundle)!r} has no {MANIFEST_NAME}; it is not an alignts bundle "
                            "(or the export was interrupted: re-run `alignts fit ...`).")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e}); the file is corrupt, re-export the bundle.") from e
    if not isinstance(d, dict):
        raise ManifestError(f"{path}: expected a JSON object, got {type(d).__name__}; re-export the bundle.")
    m = Manifest.from_dict(d, where=str(path))
    if verify:
        verify_files(bundle, m, only)
    return m


def verify_files(bundle: str | os.PathLike, m: Manifest, only: tuple[str, ...] | None = None) -> None:
    """Check that every listed file exists with the recorded size and sha256."""
    bundle = Path(bundle)
    for rel, entry in m.files.items():
        if only is not None and rel not in only:
            continue
        p = bundle / rel
        if not p.is_file():
            raise ArtifactError(f"bundle {str(bundle)!r} is missing {rel!r} (listed in its manifest); "
                                "copy the whole bundle folder or re-export it.")
        size = p.stat().st_size
        if size != entry.size:
            raise ArtifactError(f"{p}: size {size} bytes, manifest says {entry.size}; the file is truncated "
                                "or was changed after export. Re-export the bundle or restore the file.")
        digest = sha256_file(p)
        if digest != entry.sha256:
            raise ArtifactError(f"{p}: sha256 {digest[:16]}... does not match the manifest's "
                                f"{entry.sha256[:16]}...; the file was tampered with or corrupted. "
                                "Re-export the bundle or restore the file.")


@contextmanager
def bundle_writer(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Write a bundle atomically: files go to a temporary sibling folder that replaces ``out`` only on success.

    A failure (or Ctrl-C) leaves nothing half-written at ``out``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ArtifactError(f"{str(out)!r} already exists; choose another --out or pass --overwrite.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_manifest(folder: str | os.PathLike, m: Manifest) -> Path:
    """Write ``folder/manifest.json`` (sorted keys, indented)."""
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(m.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def file_entries(folder: str | os.PathLike, names: list[str] | tuple[str, ...]) -> dict[str, FileEntry]:
    """FileEntry (sha256, size) for each bundle-relative name in ``folder``."""
    folder = Path(folder)
    return {n: FileEntry(sha256=sha256_file(folder / n), size=(folder / n).stat().st_size) for n in names}
