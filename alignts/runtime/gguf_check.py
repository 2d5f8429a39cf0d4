"""Validate GGUF files before llama.cpp sees them (torch-free; numpy + gguf-py only).

llama.cpp aborts the process on some malformed files and llama-cpp-python does not raise when a LoRA adapter
fails to load (the process can crash later), so every GGUF goes through :func:`check_gguf` (and every adapter
through :func:`check_lora_adapter`) first; both raise :class:`alignts.errors.ArtifactError` naming the file,
what was expected, what came, and the fix.

The project's own metadata lives under the ``alignts.`` key namespace; :class:`Keys` defines every key once
(the torch-side writer in ``alignts.export.gguf_writer`` imports it from here).
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from alignts.errors import ArtifactError, missing_extra
from alignts.runtime.manifest import sha256_file

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
ARCHITECTURES = ("bert", "gpt2", "llama")


class Keys:
    """Every alignts GGUF metadata key, defined once."""

    PREFIX = "alignts."
    FORMAT_VERSION = "alignts.format_version"  # str, see ALIGNTS_GGUF_FORMAT_VERSION
    PARADIGM = "alignts.paradigm"              # internal | bridging | injective | backbone
    ROLE = "alignts.role"                      # "model" or "lora"
    BASE_SHA256 = "alignts.base_sha256"        # adapter: sha256 of the base GGUF file it was made for
    SOURCE_SHA256 = "alignts.source_sha256"    # model: sha256 of the source weights (e.g. model.safetensors)
    HF_ARCHITECTURE = "alignts.hf_architecture"  # e.g. "GPT2LMHeadModel"
    DTYPE = "alignts.dtype"                    # f32 | f16 | q8_0 | q4_0
    SYNTHETIC_VOCAB = "alignts.synthetic_vocab"  # 1 when no tokenizer was given and the vocab is made up

    class General:
        ARCHITECTURE = "general.architecture"
        TYPE = "general.type"          # "model" | "adapter"
        FILE_TYPE = "general.file_type"
        ALIGNMENT = "general.alignment"

    class Adapter:
        TYPE = "adapter.type"            # "lora"
        LORA_ALPHA = "adapter.lora.alpha"


ALIGNTS_GGUF_FORMAT_VERSION = "1"


@dataclass(frozen=True)
class GGUFInfo:
    """Facts about a GGUF file, read without loading its weights.

    tensors: {name: (shape in numpy order, i.e. the reverse of ggml's ne, type name)}.
    metadata: the ``alignts.*`` keys (full key names) with their values.
    file_type: ``general.file_type`` (llama_ftype number; -1 when absent), file_type_name its name.
    """

    path: Path
    arch: str
    general_type: str
    n_embd: int
    n_layer: int
    n_vocab: int
    n_ctx_train: int
    n_head: int
    tensor_count: int
    file_type: int
    file_type_name: str
    size_bytes: int
    tensors: Mapping[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    lora_alpha: float | None = None
    adapter_type: str | None = None


_FTYPE_NAMES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 32: "bf16"}


def _gguf():
    try:
        import gguf
    except ImportError as e:  # gguf is a core dependency; fail loudly
        raise missing_extra("gguf", "cpu") from e
    return gguf


# GGUF value types -> struct format (scalars); 8 = string, 9 = array.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_MAX_COUNT = 1 << 24  # more tensors/keys/array items than this means a corrupt header


class _Truncated(Exception):
    pass


@dataclass(frozen=True)
class _Parsed:
    version: int
    kv: dict[str, Any]              # scalars and strings; arrays as lists when short, else their length
    arr_len: dict[str, int]         # length of every array value
    tensors: list[tuple[str, tuple[int, ...], int, int]]  # (name, ne, ggml type, offset in data section)
    data_start: int


def _parse(path: Path, buf: memoryview) -> _Parsed:
    """Parse a GGUF (v2/v3) header from ``buf`` without touching tensor data."""
    off = 0

    def take(fmt: str):
        nonlocal off
        size = struct.calcsize(fmt)
        if off + size > len(buf):
            raise _Truncated
        v = struct.unpack_from(fmt, buf, off)[0]
        off += size
        return v

    def string() -> str:
        nonlocal off
        n = take("<Q")
        if n > len(buf) - off:
            raise _Truncated
        s = bytes(buf[off:off + n]).decode("utf-8", errors="replace")
        off += n
        return s

    def value(t: int, keep: bool):
        if t in _SCALAR:
            return take(_SCALAR[t])
        if t == 8:
            return string()
        if t == 9:
            it, n = take("<I"), take("<Q")
            if n > _MAX_COUNT:
                raise ArtifactError(f"{path}: array of {n} items in the header; the file is corrupt. Re-export it.")
            items = [value(it, keep) for _ in range(n)]
            return items if keep else n
        raise ArtifactError(f"{path}: unknown GGUF value type {t}; the file is corrupt or from a newer GGUF "
                            "version. Re-export it.")

    if bytes(buf[:4]) != GGUF_MAGIC:
        raise ArtifactError(f"{path}: not a GGUF file (first bytes {bytes(buf[:4])!r}, expected {GGUF_MAGIC!r}); "
                            "pass a .gguf file written by alignts or llama.cpp's converters.")
    off = 4
    version = take("<I")
    if version not in (2, 3):
        raise ArtifactError(f"{path}: GGUF version {version}, expected 2 or 3; re-export the file with a current "
                            "gguf package.")
    n_tensors, n_kv = take("<Q"), take("<Q")
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise ArtifactError(f"{path}: header claims {n_tensors} tensors and {n_kv} keys; the file is corrupt. "
                            "Re-export it.")
    kv: dict[str, Any] = {}
    arr_len: dict[str, int] = {}
    for _ in range(n_kv):
        key = string()
        t = take("<I")
        if t == 9:
            save = off
            it, n = take("<I"), take("<Q")
            off = save
            arr_len[key] = n
            kv[key] = value(t, keep=n <= 64 and it != 9)
        else:
            kv[key] = value(t, keep=True)
    tensors = []
    for _ in range(n_tensors):
        name = string()
        nd = take("<I")
        if nd > 8:
            raise ArtifactError(f"{path}: tensor {name!r} has {nd} dimensions; the file is corrupt. Re-export it.")
        ne = tuple(take("<Q") for _ in range(nd))
        tensors.append((name, ne, take("<I"), take("<Q")))
    align = int(kv.get("general.alignment", 32))
    if align <= 0 or align & (align - 1):
        raise ArtifactError(f"{path}: general.alignment {align} is not a power of two; the file is corrupt.")
    data_start = (off + align - 1) // align * align
    return _Parsed(version, kv, arr_len, tensors, data_start)


def _tensor_nbytes(path: Path, name: str, ne: tuple[int, ...], t: int) -> int:
    gguf = _gguf()
    try:
        qt = gguf.GGMLQuantizationType(t)
        block, tsize = gguf.GGML_QUANT_SIZES[qt]
    except (ValueError, KeyError) as e:
        raise ArtifactError(f"{path}: tensor {name!r} has unknown ggml type {t}; expected a type llama.cpp "
                            "knows. The file is corrupt or too new: re-export it.") from e
    n = int(np.prod(ne, dtype=np.int64)) if ne else 1
    if ne and ne[0] % block:
        raise ArtifactError(f"{path}: tensor {name!r} row length {ne[0]} is not a multiple of the {qt.name} "
                            f"block size {block}; the file is corrupt. Re-export it.")
    return n // block * tsize


def _type_name(t: int) -> str:
    gguf = _gguf()
    try:
        return gguf.GGMLQuantizationType(t).name
    except ValueError:
        return str(t)


def check_gguf(path: str | os.PathLike, expect_arch: str | None = None) -> GGUFInfo:
    """Check that ``path`` is a complete GGUF (model or adapter) and return its facts.

    Raises ArtifactError for: a missing file, bad magic (not a GGUF), an unreadable header, tensor data that
    runs past the end of the file (truncated), or ``general.architecture`` != ``expect_arch``.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"GGUF file {str(path)!r} does not exist; pass the path of a .gguf file "
                            "(bundles list theirs in manifest.json).")
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(min(size, 64 << 20))  # the header; tensor data is never read
    try:
        parsed = _parse(path, memoryview(raw))
    except _Truncated:
        if len(raw) < size:  # header bigger than 64 MiB: read it all
            with open(path, "rb") as f:
                raw = f.read()
            try:
                parsed = _parse(path, memoryview(raw))
            except _Truncated:
                parsed = None
        else:
            parsed = None
        if parsed is None:
            raise ArtifactError(f"{path}: truncated inside the GGUF header ({size} bytes); expected a complete "
                                "file. The copy or download was interrupted: copy it again or re-export it.") from None
    fields = parsed.kv

    arch = fields.get(Keys.General.ARCHITECTURE)
    if not isinstance(arch, str):
        raise ArtifactError(f"{path}: no {Keys.General.ARCHITECTURE} key; expected a GGUF model or adapter "
                            "with an architecture. Re-export the file.")
    if expect_arch is not None and arch != expect_arch:
        raise ArtifactError(f"{path}: architecture is {arch!r}, expected {expect_arch!r}; pass the GGUF "
                            f"exported for a {expect_arch} backbone.")

    tensors: dict[str, tuple[tuple[int, ...], str]] = {}
    end = parsed.data_start
    for name, ne, t, toff in parsed.tensors:
        if name in tensors:
            raise ArtifactError(f"{path}: tensor {name!r} appears twice; the file is corrupt. Re-export it.")
        tensors[name] = (tuple(reversed(ne)), _type_name(t))  # ggml ne -> numpy order
        end = max(end, parsed.data_start + toff + _tensor_nbytes(path, name, ne, t))
    if end > size:
        raise ArtifactError(f"{path}: truncated; tensor data needs {end} bytes but the file has {size}. "
                            "The copy or download was interrupted: copy the file again or re-export it.")

    def geti(key: str, default: int = 0) -> int:
        v = fields.get(f"{arch}.{key}", default)
        if isinstance(v, (list, np.ndarray)):  # per-layer arrays: take the first
            v = v[0] if len(v) else default
        return int(v)

    n_vocab = geti("vocab_size", 0)
    if "tokenizer.ggml.tokens" in parsed.arr_len:
        n_vocab = parsed.arr_len["tokenizer.ggml.tokens"]
    elif "token_embd.weight" in tensors:
        n_vocab = tensors["token_embd.weight"][0][0]
    ftype = int(fields.get(Keys.General.FILE_TYPE, -1))
    alpha = fields.get(Keys.Adapter.LORA_ALPHA)
    info = GGUFInfo(
        path=path,
        arch=arch,
        general_type=str(fields.get(Keys.General.TYPE, "model")),
        n_embd=geti("embedding_length"),
        n_layer=geti("block_count"),
        n_vocab=int(n_vocab),
        n_ctx_train=geti("context_length"),
        n_head=geti("attention.head_count"),
        tensor_count=len(tensors),
        file_type=ftype,
        file_type_name=_FTYPE_NAMES.get(ftype, "unknown" if ftype >= 0 else "none"),
        size_bytes=size,
        tensors=tensors,
        metadata={k: v for k, v in fields.items() if k.startswith(Keys.PREFIX)},
        lora_alpha=None if alpha is None else float(alpha),
        adapter_type=fields.get(Keys.Adapter.TYPE),
    )
    if info.general_type != "adapter":
        if info.n_embd <= 0 or info.n_layer <= 0:
            raise ArtifactError(f"{path}: {arch}.embedding_length/{arch}.block_count missing or zero "
                                f"(got {info.n_embd}/{info.n_layer}); expected a complete model. Re-export it.")
        if "token_embd.weight" not in tensors:
            raise ArtifactError(f"{path}: no token_embd.weight tensor; expected a complete {arch} model. "
                                "Re-export it.")
    logger.debug("checked %s: arch=%s type=%s tensors=%d", path, arch, info.general_type, info.tensor_count)
    return info


def check_lora_adapter(adapter_path: str | os.PathLike, base_path: str | os.PathLike,
                       base_info: GGUFInfo | None = None) -> GGUFInfo:
    """Check that ``adapter_path`` is a LoRA adapter GGUF that fits the model at ``base_path``.

    Checks: general.type == "adapter", adapter.type == "lora", adapter.lora.alpha present, same architecture,
    every ``X.lora_a``/``X.lora_b`` pair targets an existing base tensor ``X`` with shapes
    A [r, in], B [out, r] where the base weight is [out, in] (numpy order), and ``alignts.base_sha256`` (if
    present) equals the base file's sha256. Raises ArtifactError naming both files.
    Returns the adapter's GGUFInfo.
    """
    base = base_info if base_info is not None else check_gguf(base_path)
    ad = check_gguf(adapter_path)
    a, b = ad.path, base.path
    if ad.general_type != "adapter":
        raise ArtifactError(f"{a}: general.type is {ad.general_type!r}, expected 'adapter'; pass a LoRA "
                            f"adapter GGUF (written by alignts' write_lora_adapter_gguf) for base {b}.")
    if ad.adapter_type != "lora":
        raise ArtifactError(f"{a}: adapter.type is {ad.adapter_type!r}, expected 'lora'; pass a LoRA adapter.")
    if ad.lora_alpha is None:
        raise ArtifactError(f"{a}: no adapter.lora.alpha key; expected a LoRA adapter with its alpha. "
                            "Re-export the adapter.")
    if ad.arch != base.arch:
        raise ArtifactError(f"adapter {a} is for architecture {ad.arch!r} but base {b} is {base.arch!r}; "
                            "pass the adapter exported for this base model.")
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, (shape, _) in ad.tensors.items():
        if name.endswith(".lora_a"):
            pairs.setdefault(name[:-7], {})["a"] = shape
        elif name.endswith(".lora_b"):
            pairs.setdefault(name[:-7], {})["b"] = shape
        elif name.endswith("_norm.weight"):
            continue  # llama.cpp ignores norm vectors in adapters
        else:
            raise ArtifactError(f"{a}: tensor {name!r} is neither .lora_a nor .lora_b; not a LoRA adapter "
                                "llama.cpp can load. Re-export it.")
    if not pairs:
        raise ArtifactError(f"{a}: the adapter holds no LoRA tensors; expected lora_a/lora_b pairs.")
    for target, ab in sorted(pairs.items()):
        if "a" not in ab or "b" not in ab:
            raise ArtifactError(f"{a}: LoRA tensor {target!r} lacks its {'lora_b' if 'a' in ab else 'lora_a'} "
                                "half; the adapter is incomplete. Re-export it.")
        if target not in base.tensors:
            raise ArtifactError(f"adapter {a} targets {target!r}, which base {b} does not have; the adapter "
                                "was made for another base model. Pass the matching base GGUF.")
        wshape = base.tensors[target][0]  # [out, in]
        sa, sb = ab["a"], ab["b"]
        ok = (len(wshape) == 2 and len(sa) == 2 and len(sb) == 2 and sa[1] == wshape[1]
              and sb[0] == wshape[0] and sa[0] == sb[1])
        if not ok:
            raise ArtifactError(f"adapter {a}: {target} has lora_a {list(sa)} and lora_b {list(sb)}, expected "
                                f"[r, {wshape[-1]}] and [{wshape[0]}, r] to fit base {b} weight {list(wshape)}; "
                                "the adapter was made for another base model (or written transposed).")
    want = ad.metadata.get(Keys.BASE_SHA256)
    if want:
        got = sha256_file(b)
        if got != want:
            raise ArtifactError(f"adapter {a} was made for a base with sha256 {str(want)[:16]}..., but base {b} "
                                f"has sha256 {got[:16]}...; pass the base GGUF the adapter was exported with.")
    return ad
