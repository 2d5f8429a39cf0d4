"""Bundle manifests: the self-description of an exported artifact folder.

A bundle is a folder: ``manifest.json`` beside ONNX files (weights may sit in ``.onnx.data`` beside), GGUF
files and small ``.npz`` weight files. The manifest names the paradigm, architecture, every file with sha256
and size, the variants (one per backend x dtype) with their I/O names, dynamic axes and export validation,
codec/normalization settings, LoRA facts, limits and versions.

This module is the single place that reads, verifies and writes manifests (torch-free), and the single way
into a bundle's files: :func:`bundle_file` resolves a bundle-relative name (a plain relative path, listed in
the manifest, inside the folder, no symbolic link on the way) and checks its size and sha256 once per
process (ONNX external-data files included), so nothing a variant reads escapes the seal.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import mmap
import os
import posixpath
import re
import shutil
import stat
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from alignts.errors import ArtifactError, ManifestError

FORMAT = "alignts-bundle"
FORMAT_VERSION = "1.1"  # 1.1: Variant.accuracy (the validation-MSE gate); 1.0 manifests read as before
MANIFEST_NAME = "manifest.json"
PARADIGMS = ("internal", "bridging", "injective", "backbone")
BACKENDS = ("onnx", "gguf")
# The trained torch tensors (alignts.export.reference.load_torch rebuilds the torch model from them); the
# runtime never reads this file.
TORCH_TRAINED_NAME = "torch_trained.safetensors"
REEXPORT = "Fix: re-export the bundle (alignts fit ...) or restore its manifest.json"
MAX_MANIFEST_BYTES = 64 << 20
MAX_DEPTH = 32      # JSON nesting; alignts writes 4 levels
MAX_LEN = 1 << 20   # context, horizon, patch counts (points)
MAX_CTX = 1 << 20   # LM context (tokens); the model's own context_length bounds it again at load
MAX_NAME = 1024

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
    accuracy:    the accuracy gate's record (``alignts.export.gate``): the forecast error the variant adds on
                 held-out validation windows, in the scaled space the model is trained in: {"mse",
                 "reference", "reference_mse", "rel_mse_change", "max_rel_mse_change", "passed", "n_windows",
                 "n_series", "ms_per_series", "cpu" (where it was timed: ``threads.cpu_label``), ...}; {} for
                 bundles written before the gate (format 1.0).
    extra:       backend facts (e.g. the GGUF architecture, the kv cache type it was validated with); every
                 ``*_file`` key names a file listed in Manifest.files.
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
    accuracy: Mapping[str, Any] = field(default_factory=dict)


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

    Every field the runtime reads is checked when the manifest is read (types, finite numbers, ranges, file
    names): a malformed manifest raises ManifestError there, never a raw exception later.
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

    def reads(self, variant: Variant) -> tuple[str, ...]:
        """Every bundle file ``variant`` reads: its ``files``, the files its ``extra`` names (``*_file``
        keys) and the files the config/codec name (``table``, ``tokenizer``)."""
        names = list(variant.files)
        named = [v for k, v in variant.extra.items() if k.endswith("_file")]
        named += [sec[k] for sec, keys in ((self.config, _CONFIG_FILES), (self.codec, _CODEC_FILES))
                  for k in keys if isinstance(sec.get(k), str)]
        names.extend(n for n in named if n not in names)
        return tuple(names)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["files"] = {k: dataclasses.asdict(v) for k, v in self.files.items()}
        return _plain(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "manifest") -> "Manifest":
        if not isinstance(d, Mapping):
            raise ManifestError(f"{where}: expected a JSON object, got {type(d).__name__}. {REEXPORT}.")
        _check_depth(d, where)
        if d.get("format") != FORMAT:
            raise ManifestError(f"{where}: 'format' is {_show(d.get('format'))}, expected {FORMAT!r}; "
                                "this folder is not an alignts bundle (re-export it with `alignts fit ...`).")
        version = d.get("format_version", "")
        if not isinstance(version, str) or version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
            raise ManifestError(f"{where}: format_version {_show(version)} is not readable by this alignts "
                                f"(reads {FORMAT_VERSION.split('.')[0]}.x). HINT: upgrade alignts "
                                "(pip install -U alignts) or re-export the bundle with this version.")
        chk = _Checker(where)
        for key in ("paradigm", "architecture"):
            chk.typed(d, "", key, str, required=True)
        sections = {key: chk.typed(d, "", key, Mapping) for key in _SECTIONS}  # null reads as {}
        files_raw = chk.typed(d, "", "files", Mapping, required=True)
        variants_raw = chk.typed(d, "", "variants", list, required=True)
        files = {}
        for name, e in files_raw.items():
            check_name(name, f"{where}: files key")
            e = chk.typed(files_raw, "files", name, Mapping, required=True)
            sha = chk.typed(e, f"files[{name!r}]", "sha256", str, required=True)
            if not _HEX64.fullmatch(sha):
                chk.fail(f"files[{name!r}].sha256", sha, "64 lowercase hex digits")
            size = chk.number(e, f"files[{name!r}]", "size", _Int(0, 1 << 50), required=True)
            files[name] = FileEntry(sha256=sha, size=int(size))
        variants = tuple(chk.variant(v, i) for i, v in enumerate(variants_raw))
        m = cls(paradigm=d["paradigm"], architecture=d["architecture"], files=files, variants=variants,
                format=d["format"], format_version=version, **sections)
        if m.paradigm not in PARADIGMS:
            raise ManifestError(f"{where}: unknown paradigm {m.paradigm!r}; expected one of {PARADIGMS}. "
                                f"{REEXPORT}.")
        chk.sections(m)
        names = [v.name for v in m.variants]
        for v in m.variants:
            if names.count(v.name) > 1:
                chk.fail("variants", v.name, "unique variant names")
            for f in m.reads(v):
                if f not in m.files:
                    raise ManifestError(f"{where}: variant {v.name!r} reads {f!r}, which the manifest's 'files' "
                                        "does not list (so it would never be hashed); expected every file a "
                                        f"variant reads listed with its sha256. {REEXPORT}.")
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


# ------------------------------------------------------------------------------------------ field checks

@dataclass(frozen=True)
class _Int:
    low: int
    high: int


@dataclass(frozen=True)
class _Num:
    low: float
    high: float
    low_open: bool = False  # low itself excluded (eps > 0)


_STR, _BOOL, _STRS, _MAP = "str", "bool", "strs", "map"
_SECTIONS = ("config", "normalization", "codec", "lora", "backbone", "limits", "training", "versions")
_CONFIG_FILES = ("table", "tokenizer")   # backbone bundles: the word-embedding table and tokenizer
_CODEC_FILES = ("tokenizer",)
_WIDTH = _Int(1, 1 << 17)
_RULES: dict[str, dict[str, Any]] = {
    "config": {
        "context_len": _Int(1, MAX_LEN), "horizon": _Int(1, MAX_LEN), "n_channels": _Int(1, 1 << 16),
        "patch_len": _Int(1, MAX_LEN), "stride": _Int(1, MAX_LEN), "n_patches": _Int(1, MAX_LEN),
        "d_model": _WIDTH, "d_llm": _WIDTH, "d_ff": _WIDTH, "d_keys": _WIDTH, "n_heads": _Int(1, 4096),
        "n_prototypes": _Int(1, 1 << 24), "prompt_len": _Int(0, MAX_CTX), "top_k": _Int(0, 4096),
        "decimals": _Int(0, 15), "eps": _Num(0.0, 1.0, low_open=True), "n_ctx": _Int(1, MAX_CTX),
        "samples": _Int(1, 4096), "temperature": _Num(0.0, 1e3), "top_p": _Num(0.0, 1.0, low_open=True),
        "seed": _Int(-(1 << 63), (1 << 63) - 1), "n_embd": _Int(0, 1 << 17), "n_layer": _Int(0, 512),
        "n_layers": _Int(0, 512), "n_head": _Int(0, 4096), "n_heads_lm": _Int(1, 4096), "d_ff_lm": _WIDTH,
        "n_vocab": _Int(0, 1 << 24), "max_positions": _Int(1, MAX_CTX), "greedy": _BOOL, "prefix_bos": _BOOL,
        "linear_skip": _BOOL, "description": _STR, "columns": _STRS, "table": _STR, "tokenizer": _STR,
        "scaler": _MAP,
    },
    "normalization": {"eps": _Num(0.0, 1.0, low_open=True), "affine": _BOOL, "kind": _STR},
    "codec": {"precision": _Int(0, 15), "max_digits": _Int(1, 15), "alpha": _Num(0.0, 1.0, low_open=True),
              "beta": _Num(0.0, 1e6), "basic": _BOOL, "prefix_bos": _BOOL, "value_sep": _STR, "digit_sep": _STR,
              "tokenizer": _STR, "kind": _STR, "table": _MAP},
    "lora": {"rank": _Int(0, 1 << 16), "alpha": _Num(-1e6, 1e6), "scale": _Num(-1e6, 1e6), "fused": _BOOL,
             "targets": _STRS, "base_sha256": _STR},
    "backbone": {"sha256": _STR, "name": _STR, "architecture": _STR, "path": _STR, "bytes": _Int(0, 1 << 50),
                 "weight_bytes": _Int(0, 1 << 50), "n_layers": _Int(0, 512)},
    "extra": {"adapter_scale": _Num(-1e6, 1e6), "lora_scale": _Num(-1e6, 1e6), "lora_alpha": _Num(-1e6, 1e6),
              "lora_rank": _Int(1, 1 << 16), "n_ctx": _Int(1, MAX_CTX), "n_batch": _Int(1, MAX_CTX),
              "n_seq_max": _Int(1, 4096), "n_ctx_train": _Int(0, MAX_CTX), "kv_type": ("f32", "f16"),
              "architecture": _STR, "backbone_variant": _STR},
    "accuracy": {"mse": _Num(0.0, 1e300), "reference_mse": _Num(0.0, 1e300), "rel_mse_change": _Num(-1.0, 1e300),
                 "max_rel_mse_change": _Num(0.0, 1e300), "passed": _BOOL, "n_windows": _Int(0, 1 << 40),
                 "n_series": _Int(0, 1 << 40), "ms_per_series": _Num(0.0, 1e300), "reference": _STR,
                 "metric": _STR, "split": _STR, "space": _STR, "batch_size": _Int(1, 1 << 30),
                 "threads": _Int(1, 1 << 16), "cpu": _STR},
}
# keys whose null means "none" to the runtime (no channel count, no scaler, no column names, no description)
_NULLABLE = {"n_channels", "scaler", "columns", "description", "mse", "rel_mse_change", "threads"}
# config keys each paradigm's runtime cannot do without
_REQUIRED = {"internal": ("context_len", "horizon", "patch_len", "stride", "n_patches"),
             "bridging": ("context_len", "horizon", "patch_len", "stride", "n_patches", "d_llm", "d_ff",
                          "prompt_len"),
             "backbone": ("d_model",), "injective": ()}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TYPE_NAMES = {str: "a string", bool: "true or false", Mapping: "an object", list: "an array"}


def _show(v: Any, width: int = 60) -> str:
    s = repr(v) if isinstance(v, (str, int, float, bool)) or v is None else type(v).__name__
    return s if len(s) <= width else s[:width - 3] + "..."


def _check_depth(d: Any, where: str) -> None:
    stack = [(d, 0)]
    while stack:
        x, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ManifestError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels; expected the flat "
                                f"structure alignts writes. {REEXPORT}.")
        if isinstance(x, Mapping):
            stack.extend((v, depth + 1) for v in x.values())
        elif isinstance(x, list):
            stack.extend((v, depth + 1) for v in x)


class _Checker:
    """Typed reads of manifest fields; every failure is a ManifestError with expected / got / fix."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, got: Any, expected: str):
        raise ManifestError(f"{self.where}: {key} is {_show(got)}; expected {expected}. {REEXPORT}.")

    def typed(self, d: Mapping, section: str, key: str, kind: type, required: bool = False):
        name = f"{section}.{key}" if section else key
        if key not in d or d[key] is None:
            if required:
                raise ManifestError(f"{self.where}: {name} is missing; expected {_TYPE_NAMES[kind]}. {REEXPORT}.")
            return {} if kind is Mapping else None
        v = d[key]
        if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
            self.fail(name, v, _TYPE_NAMES[kind])
        return v

    def number(self, d: Mapping, section: str, key: str, rule, required: bool = False):
        name = f"{section}.{key}" if section else key
        v = d.get(key)
        if v is None:
            if required:
                raise ManifestError(f"{self.where}: {name} is missing; expected {_describe(rule)}. {REEXPORT}.")
            return None
        ok = _is_number(v)
        if ok and isinstance(rule, _Int):
            ok = (isinstance(v, int) or v.is_integer()) and rule.low <= v <= rule.high
        elif ok:
            ok = (rule.low < v if rule.low_open else rule.low <= v) and v <= rule.high
        if not ok:
            self.fail(name, v, _describe(rule))
        return v

    def field(self, d: Mapping, section: str, key: str, rule) -> None:
        name = f"{section}.{key}"
        v = d.get(key)
        if v is None:
            # the runtime reads d.get(key, default): an explicit null would reach int()/float() as None
            if key in d and key not in _NULLABLE:
                self.fail(name, None, _describe(rule) if isinstance(rule, (_Int, _Num)) else "a value, not null")
            return
        if isinstance(rule, (_Int, _Num)):
            self.number(d, section, key, rule)
        elif isinstance(rule, tuple):
            if v not in rule:
                self.fail(name, v, f"one of {', '.join(rule)}")
        elif rule == _STRS:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                self.fail(name, v, "an array of strings")
        else:
            self.typed(d, section, key, {_STR: str, _BOOL: bool, _MAP: Mapping}[rule])

    def section(self, d: Mapping, section: str, rules: Mapping[str, Any]) -> None:
        for key, rule in rules.items():
            self.field(d, section, key, rule)

    def variant(self, v: Any, i: int) -> Variant:
        where = f"variants[{i}]"
        if not isinstance(v, Mapping):
            self.fail(where, v, "an object")
        fields = [f.name for f in dataclasses.fields(Variant)]
        unknown = sorted(set(v) - set(fields))
        if unknown:
            self.fail(f"{where} keys", unknown[0], f"only {', '.join(fields)}")
        name = self.typed(v, where, "name", str, required=True)
        backend = self.typed(v, where, "backend", str, required=True)
        if backend not in BACKENDS:
            raise ManifestError(f"{self.where}: variant {name!r} has unknown backend {backend!r}; expected one "
                                f"of {BACKENDS}. {REEXPORT}.")
        files = self.typed(v, where, "files", list, required=True)
        if not files:
            self.fail(f"{where}.files", files, "a non-empty array of file names")
        for f in files:
            check_name(f, f"{self.where}: variant {name!r} files")
        lists = {}
        for key in ("inputs", "outputs"):
            lst = self.typed(v, where, key, list) or []
            if not all(isinstance(x, str) for x in lst):
                self.fail(f"{where}.{key}", lst, "an array of strings")
            lists[key] = tuple(lst)
        extra = self.typed(v, where, "extra", Mapping)
        self.section(extra, f"{where}.extra", _RULES["extra"])
        for key, val in extra.items():
            if key.endswith("_file"):
                if not isinstance(val, str):
                    self.fail(f"{where}.extra.{key}", val, "a file name (a string)")
                check_name(val, f"{self.where}: {where}.extra.{key}")
        accuracy = self.typed(v, where, "accuracy", Mapping)
        self.section(accuracy, f"{where}.accuracy", _RULES["accuracy"])
        axes = self.typed(v, where, "dynamic_axes", Mapping)
        if not all(isinstance(a, Mapping) for a in axes.values()):
            self.fail(f"{where}.dynamic_axes", axes, "{tensor: {axis: name}}")
        return Variant(name=name, backend=backend, dtype=self.typed(v, where, "dtype", str, required=True),
                       files=tuple(files), inputs=lists["inputs"], outputs=lists["outputs"], dynamic_axes=axes,
                       validation=self.typed(v, where, "validation", Mapping),
                       weight_bytes=int(self.number(v, where, "weight_bytes", _Int(0, 1 << 50)) or 0),
                       extra=extra, accuracy=accuracy)

    def sections(self, m: Manifest) -> None:
        self.config(m.config, m.paradigm)
        for section in ("normalization", "codec", "lora", "backbone"):
            self.section(getattr(m, section), section, _RULES[section])
        for key, v in m.limits.items():  # byte and length limits: never negative, never NaN
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.number(m.limits, "limits", key, _Num(0.0, 1e18))
        if isinstance(m.codec.get("tokenizer"), str):
            check_name(m.codec["tokenizer"], f"{self.where}: codec.tokenizer")

    def config(self, c: Mapping, paradigm: str) -> None:
        self.section(c, "config", _RULES["config"])
        for key in _REQUIRED[paradigm]:
            if c.get(key) is None:
                raise ManifestError(f"{self.where}: config.{key} is missing; the {paradigm} paradigm needs it "
                                    f"(expected {_describe(_RULES['config'][key])}). {REEXPORT}.")
        for key in _CONFIG_FILES:
            if isinstance(c.get(key), str):
                check_name(c[key], f"{self.where}: config.{key}")
        if paradigm in ("internal", "bridging"):
            L, P, S, N = (int(c[k]) for k in ("context_len", "patch_len", "stride", "n_patches"))
            if L < P or (L - P) // S + 2 != N:
                self.fail("config.n_patches", N, f"(context_len - patch_len) // stride + 2 with context_len={L} "
                          f">= patch_len={P}, stride={S}")
        sc = c.get("scaler")
        if sc:
            self._scaler(sc, c.get("n_channels"))

    def _scaler(self, sc: Mapping, n_channels: Any) -> None:
        for key in ("mean", "std"):
            v = sc.get(key)
            ok = isinstance(v, list) and all(_is_number(x) and (key == "mean" or x > 0) for x in v)
            if not ok or (n_channels is not None and len(v) != n_channels):
                want = "finite numbers" if key == "mean" else "finite numbers > 0"
                self.fail(f"config.scaler.{key}", v, f"an array of {n_channels or 'C'} {want}")


def check_config(c: Mapping[str, Any], paradigm: str, where: str = "manifest") -> None:
    """The checks :meth:`Manifest.from_dict` makes on a ``config`` section of ``paradigm`` (types, ranges, required
    keys, file names, patch count, scaler); ManifestError with expected / got / fix on the first failure."""
    _Checker(where).config(c, paradigm)


def config_value(key: str, v: Any) -> Any:
    """A checked (non-null) ``config`` value as Python reads it: integers as int, numbers as float, arrays as
    tuples; other values as they are."""
    rule = _RULES["config"].get(key)
    if isinstance(rule, _Int):
        return int(v)
    if isinstance(rule, _Num):
        return float(v)
    return tuple(v) if isinstance(v, list) else v


def _is_number(x: Any) -> bool:
    """A finite JSON number (huge integers compare exactly; converting them to float would overflow)."""
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return -1e308 < x < 1e308
    return isinstance(x, float) and math.isfinite(x)


def _describe(rule) -> str:
    if isinstance(rule, _Int):
        return f"an integer in {rule.low}..{rule.high}"
    lo = f"> {rule.low:g}" if rule.low_open else f">= {rule.low:g}"
    return f"a finite number {lo} and <= {rule.high:g}"


# ------------------------------------------------------------------------------------ bundle files

_NAME_PART = re.compile(r"[^/\\\x00]+")
# ONNX external data: a StringStringEntryProto {key: "location", value: <path>} in wire format
_ONNX_LOCATION = b"\x0a\x08location\x12"
_digests: dict[tuple, tuple[str, tuple[str, ...]]] = {}  # stat identity -> (sha256, ONNX external-data refs)
_digests_lock = threading.Lock()


def check_name(rel: Any, where: str = "bundle file") -> str:
    """``rel`` if it is a plain bundle-relative path (``a.gguf``, ``sub/b.npz``); else ManifestError.

    Refused: non-strings, empty names, absolute paths, ``.`` / ``..`` / empty components, backslashes, NUL.
    """
    ok = isinstance(rel, str) and 0 < len(rel) <= MAX_NAME
    if ok:
        parts = rel.split("/")
        ok = all(_NAME_PART.fullmatch(p) and p not in (".", "..") for p in parts)
    if not ok:
        raise ManifestError(f"{where}: {_show(rel)} is not a plain relative file name inside the bundle; "
                            "expected a path like 'model.gguf' or 'sub/io.npz' (no '..', no leading '/', no "
                            f"backslash). {REEXPORT}.")
    return rel


def bundle_file(bundle: str | os.PathLike, manifest: Manifest, rel: str, verify: bool = True) -> Path:
    """The path of bundle file ``rel``, safe to open: the one way into a bundle's files.

    ``rel`` must be a plain relative name (:func:`check_name`) listed in ``manifest.files``; no component on the
    way may be a symbolic link, and the file must be a regular file of the listed size. With ``verify`` its
    sha256 is checked, once per process while the file is unchanged (same inode, size, mtime and ctime); an
    ONNX file's external-data files must be listed too and are verified with it.
    Raises ManifestError for a bad name, ArtifactError for an unlisted, missing, linked or tampered file.
    """
    return _resolve(Path(bundle), manifest, rel, verify, ())


def _resolve(bundle: Path, manifest: Manifest, rel: str, verify: bool, chain: tuple[str, ...]) -> Path:
    """bundle_file, with the ONNX files whose external data led here (a model naming itself stops the walk)."""
    check_name(rel, f"bundle {str(bundle)!r}")
    entry = manifest.files.get(rel)
    if entry is None:
        raise ArtifactError(f"bundle {str(bundle)!r}: {rel!r} is read but not listed in its manifest's 'files', "
                            "so it was never hashed; expected every file a variant reads listed with its sha256. "
                            "Fix: re-export the bundle.")
    path = bundle
    for part in rel.split("/"):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise ArtifactError(f"bundle {str(bundle)!r} is missing {rel!r} (listed in its manifest); copy the "
                                "whole bundle folder or re-export it.") from None
        except OSError as e:
            raise ArtifactError(f"bundle {str(bundle)!r}: cannot read {rel!r} ({e}); expected a readable file. "
                                "Fix: check the folder's permissions.") from e
        if stat.S_ISLNK(st.st_mode):
            raise ArtifactError(f"bundle {str(bundle)!r}: {str(path)!r} is a symbolic link (to "
                                f"{os.readlink(path)!r}); expected the real file inside the bundle folder, since a "
                                "link can leave it. Fix: copy the bundle with its files (cp -rL) or re-export it.")
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(f"bundle {str(bundle)!r}: {rel!r} is not a regular file; expected the file written "
                            "at export. Fix: re-export the bundle.")
    if verify:
        for ref in _verify(bundle, rel, path, entry):
            if ref not in chain + (rel,):
                _resolve(bundle, manifest, ref, True, chain + (rel,))
    return path


def _verify(bundle: Path, rel: str, path: Path, entry: FileEntry) -> tuple[str, ...]:
    """Check size and sha256 of one file (cached by stat identity); return its ONNX external-data names."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ArtifactError(f"bundle {str(bundle)!r}: cannot open {rel!r} ({e}); expected a readable regular "
                            "file, not a link. Fix: restore the file or re-export the bundle.") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if st.st_size != entry.size:
            raise ArtifactError(f"{path}: size {st.st_size} bytes, manifest says {entry.size}; the file is truncated "
                                "or was changed after export. Re-export the bundle or restore the file.")
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with _digests_lock:
            hit = _digests.get(key)
        if hit is None:
            h = hashlib.sha256()
            while block := f.read(1 << 20):
                h.update(block)
            refs = _onnx_external_data(f, st.st_size) if rel.endswith(".onnx") else ()
            hit = (h.hexdigest(), refs)
            with _digests_lock:
                _digests[key] = hit
                if len(_digests) > 4096:  # oldest first
                    _digests.pop(next(iter(_digests)))
    digest, refs = hit
    if digest != entry.sha256:
        raise ArtifactError(f"{path}: sha256 {digest[:16]}... does not match the manifest's {entry.sha256[:16]}...; "
                            "the file was tampered with or corrupted. Re-export the bundle or restore the file.")
    folder = posixpath.dirname(rel)
    out = []
    for loc in refs:
        name = posixpath.join(folder, loc) if folder else loc
        try:
            check_name(name)
        except ManifestError:
            raise ArtifactError(f"{path}: the ONNX model keeps tensor data in {loc!r}, outside the bundle folder; "
                                "expected external data beside the model, listed in the manifest. Fix: re-export "
                                "the bundle.") from None
        out.append(name)
    return tuple(out)


def _onnx_external_data(f, size: int) -> tuple[str, ...]:
    """The ``location`` of every external-data tensor in a serialized ONNX model, found in its bytes (no
    protobuf parse, no weights loaded)."""
    if size == 0:
        return ()
    found: list[str] = []
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        pos = mm.find(_ONNX_LOCATION)
        while pos >= 0:
            i, n, shift = pos + len(_ONNX_LOCATION), 0, 0
            while i < size and shift < 64:  # varint length
                b = mm[i]
                n |= (b & 0x7F) << shift
                i, shift = i + 1, shift + 7
                if not b & 0x80:
                    break
            loc = bytes(mm[i:i + min(n, MAX_NAME + 1)]).decode("utf-8", errors="replace")
            if loc not in found:
                found.append(loc)
            pos = mm.find(_ONNX_LOCATION, pos + 1)
    return tuple(found)


def load_npz(bundle: str | os.PathLike, manifest: Manifest, rel: str, required: tuple[str, ...] = ()) -> dict:
    """The arrays of bundle file ``rel`` (an ``.npz``), verified through :func:`bundle_file`.

    Pickled objects are refused (allow_pickle=False); every array must be numeric and finite, and the
    ``required`` keys present. Raises ArtifactError naming the file and the array.
    """
    import numpy as np

    path = bundle_file(bundle, manifest, rel)
    fix = "Fix: re-export the bundle."
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:  # numpy's refusal of pickled object arrays is a ValueError
        raise ArtifactError(f"{path}: not a plain numeric .npz ({e}); expected arrays written by numpy.savez "
                            f"without Python objects. {fix}") from e
    except Exception as e:  # noqa: BLE001 - zipfile/numpy raise many types on a corrupt archive
        raise ArtifactError(f"{path}: cannot read the .npz ({type(e).__name__}: {e}); expected a numpy .npz "
                            f"archive. {fix}") from e
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ArtifactError(f"{path}: arrays {missing} are missing (it has {sorted(arrays)}); expected "
                            f"{list(required)}. {fix}")
    for k, a in arrays.items():
        if a.dtype.kind not in "fiub":
            raise ArtifactError(f"{path}: array {k!r} has dtype {a.dtype}; expected numbers. {fix}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ArtifactError(f"{path}: array {k!r} holds {int((~np.isfinite(a)).sum())} NaN/inf values; "
                                f"expected finite weights (the export went wrong or the file was edited). {fix}")
    return arrays


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
    if path.is_symlink():
        raise ManifestError(f"{path} is a symbolic link; expected the bundle's own manifest.json file. Fix: copy "
                            "the bundle with its files (cp -rL) or re-export it.")
    if not path.is_file():
        raise ManifestError(f"{str(bundle)!r} has no {MANIFEST_NAME}; it is not an alignts bundle "
                            "(or the export was interrupted: re-run `alignts fit ...`).")
    with open(path, "rb") as f:
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; expected the few kilobytes "
                            f"alignts writes. {REEXPORT}.")
    try:
        d = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, int digit limit: ValueErrors
        raise ManifestError(f"{path}: not valid JSON ({type(e).__name__}: {str(e)[:200]}); the file is corrupt. "
                            f"{REEXPORT}.") from None
    m = Manifest.from_dict(d, where=str(path))
    if verify:
        verify_files(bundle, m, only)
    return m


def verify_files(bundle: str | os.PathLike, m: Manifest, only: tuple[str, ...] | None = None) -> None:
    """Check every listed file (or those in ``only``, which must be listed) through :func:`bundle_file`."""
    for rel in (m.files if only is None else only):
        bundle_file(bundle, m, rel)


@contextmanager
def bundle_writer(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Write a bundle atomically: files go to a temporary sibling folder that replaces ``out`` only on success.

    A failure (or Ctrl-C) leaves nothing half-written at ``out``. One writer at a time per ``out``: a lock file
    ``.OUT.lock`` beside it holds the writer's pid; a second writer raises ArtifactError naming that pid.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with bundle_lock(out):
        if out.exists() and not overwrite:
            raise ArtifactError(f"{str(out)!r} already exists; choose another --out or pass --overwrite.")
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            yield tmp
            old = None
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
                os.replace(out, old / "bundle")
            os.replace(tmp, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextmanager
def bundle_lock(out: str | os.PathLike) -> Iterator[None]:
    """An exclusive flock on ``.OUT.lock`` beside ``out``, holding this process's pid: one writer per bundle
    folder, whether it writes a new bundle (:func:`bundle_writer`) or edits one in place (quantize, calibrate).
    A second writer raises ArtifactError naming the holder. Not re-entrant."""
    out = Path(out)
    lock = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", errors="replace").strip() or "?"
            os.close(fd)
            raise ArtifactError(f"{str(out)!r} is being written by another process (pid {holder}, lock {lock}); "
                                "expected one writer per bundle folder. Fix: wait for that run to finish, or "
                                "write to another --out.") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and flock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        try:
            os.unlink(lock)
        finally:
            os.close(fd)


def write_manifest(folder: str | os.PathLike, m: Manifest) -> Path:
    """Write ``folder/manifest.json`` (sorted keys, indented), after the checks a reader makes.

    Atomic (a temporary file renamed over it): a reader of a bundle edited in place sees the old manifest or the
    new one, never half of one. Editors in place hold :func:`bundle_lock`."""
    d = m.to_dict()
    Manifest.from_dict(d, where=f"{Path(folder) / MANIFEST_NAME} (being written)")
    path = Path(folder) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def file_entries(folder: str | os.PathLike, names: list[str] | tuple[str, ...]) -> dict[str, FileEntry]:
    """FileEntry (sha256, size) for each bundle-relative name in ``folder``."""
    folder = Path(folder)
    return {n: FileEntry(sha256=sha256_file(folder / n), size=(folder / n).stat().st_size) for n in names}
