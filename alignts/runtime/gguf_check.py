"""Validate GGUF files before llama.cpp sees them (torch-free; numpy + gguf-py only).

llama.cpp aborts the process on some malformed files and llama-cpp-python does not raise when a LoRA adapter
fails to load (the process can crash later), so every GGUF goes through :func:`check_gguf` (and every adapter
through :func:`check_lora_adapter`) first; both raise :class:`alignts.errors.ArtifactError` naming the file,
what was expected, what came, and the fix.

The project's own metadata lives under the ``alignts.`` key namespace; :class:`Keys` defines every key once
(the torch-side writer in ``alignts.export.gguf_writer`` imports it from here).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import mmap
import os
import stat as stat_mod
import struct
import threading
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
    EMBEDDINGS_ONLY = "alignts.embeddings_only"  # 1: fed input embeddings only, token table cut to a stub
    # llama.cpp's own keys (general.*, adapter.*, tokenizer.ggml.*) are gguf-py's gguf.Keys


ALIGNTS_GGUF_FORMAT_VERSION = "1"

# llama.cpp's own limits (src/llama-hparams.h, ggml/include/ggml.h): past them it aborts or refuses the file
MAX_LAYERS = 512        # LLAMA_MAX_LAYERS
MAX_EXPERTS = 1024      # LLAMA_MAX_EXPERTS
MAX_DIMS = 4            # GGML_MAX_DIMS
MAX_TENSOR_NAME = 63    # GGML_MAX_NAME - 1
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")
# weights are scanned for NaN/inf (see GGUFInfo.values_scanned) in files up to this size
SCAN_MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class GGUFInfo:
    """Facts about a GGUF file, read without loading its weights.

    tensors: {name: (shape in numpy order, i.e. the reverse of ggml's ne, type name)}.
    metadata: the ``alignts.*`` keys (full key names) with their values.
    file_type: ``general.file_type`` (llama_ftype number; -1 when absent), file_type_name its name.
    n_head_kv: KV heads of the first layer; kv_per_token: K and V values one token keeps in the KV cache,
    summed over layers (the cache holds n_ctx * n_seq_max tokens).
    values_scanned: the f32/f16/bf16 tensors and the scales of q4_0/q4_1/q5_0/q5_1/q8_0 tensors were checked for
    NaN/inf (done by default for files up to SCAN_MAX_BYTES).
    tokens: ``tokenizer.ggml.tokens`` as text (empty when the file has none).
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
    n_head_kv: int = 0
    kv_per_token: int = 0
    values_scanned: bool = False
    tokens: tuple[str, ...] = ()


def _gguf():
    try:
        import gguf
    except ImportError as e:  # gguf is a core dependency; fail loudly
        raise missing_extra("gguf", "cpu") from e
    return gguf


_MAX_COUNT = 1 << 24  # more tensors/keys/array items than this means a corrupt header
_KEEP_ITEMS = 4096    # numeric arrays up to this length are kept (per-layer values); longer ones only counted
_MAX_STRING = 1 << 16  # keys, tokens
_MAX_VALUE = 1 << 20   # string values (chat templates run to some kilobytes)
_FIX = "Re-export the file (or restore the bundle)."


class _Truncated(Exception):
    pass


@dataclass(frozen=True)
class _Long:
    """A string value longer than _MAX_VALUE, skipped unread."""

    n: int


@dataclass(frozen=True)
class _Arr:
    """A GGUF array value: item type, length, and the items when kept (short numeric arrays, the tokens)."""

    item_type: int
    n: int
    items: tuple | None


@dataclass(frozen=True)
class _Parsed:
    version: int
    kv: dict[str, Any]              # scalars and strings; arrays as _Arr
    types: dict[str, int]           # GGUF value type of every key
    tensors: list[tuple[str, tuple[int, ...], int, int]]  # (name, ne, ggml type, offset in data section)
    data_start: int


def _types():
    T = _gguf().GGUFValueType
    scalar = {T.UINT8: "<B", T.INT8: "<b", T.UINT16: "<H", T.INT16: "<h", T.UINT32: "<I", T.INT32: "<i",
              T.FLOAT32: "<f", T.BOOL: "<?", T.UINT64: "<Q", T.INT64: "<q", T.FLOAT64: "<d"}
    return T, {int(k): v for k, v in scalar.items()}


def _int_types() -> tuple[int, ...]:
    T = _gguf().GGUFValueType
    return (T.UINT8, T.INT8, T.UINT16, T.INT16, T.UINT32, T.INT32, T.UINT64, T.INT64)


def _file_type_name(ftype: int) -> str:
    """llama.cpp's name of a general.file_type, lower case without ALL_/MOSTLY_: 7 -> "q8_0"."""
    if ftype < 0:
        return "none"
    try:
        name = _gguf().LlamaFileType(ftype).name
    except ValueError:
        return "unknown"
    return name.removeprefix("ALL_").removeprefix("MOSTLY_").lower()


def _parse(path: Path, buf) -> _Parsed:
    """Parse a GGUF (v2/v3) header from ``buf`` (an mmap: only the header's pages are touched)."""
    T, scalar = _types()
    tokens_key = _gguf().Keys.Tokenizer.LIST
    size = len(buf)
    off = 0

    def take(fmt: str):
        nonlocal off
        n = struct.calcsize(fmt)
        if off + n > size:
            raise _Truncated
        v = struct.unpack_from(fmt, buf, off)[0]
        off += n
        return v

    def string(limit: int = _MAX_STRING, what: str = "a string") -> str | _Long:
        """A string of at most ``limit`` bytes (longer: ArtifactError for names, a _Long for values that are
        skipped unread, so a huge string never reaches memory)."""
        nonlocal off
        n = take("<Q")
        if n > size - off:
            raise _Truncated
        if n > limit:
            if what == "a value":
                off += n
                return _Long(n)
            raise ArtifactError(f"{path}: {what} of {n} bytes in the header; expected at most {limit}. The file is "
                                f"corrupt. {_FIX}")
        s = bytes(buf[off:off + n]).decode("utf-8", errors="replace")
        off += n
        return s

    def skip_strings(n: int, keep: bool) -> tuple | None:
        nonlocal off
        items = [] if keep else None
        for _ in range(n):
            if keep:
                items.append(string(what="a token"))
            else:
                k = take("<Q")
                if k > size - off:
                    raise _Truncated
                off += k
        return tuple(items) if keep else None

    def array(key: str) -> _Arr:
        nonlocal off
        it, n = take("<I"), take("<Q")
        if n > _MAX_COUNT:
            raise ArtifactError(f"{path}: {key} is an array of {n} items; expected at most {_MAX_COUNT}. The "
                                f"file is corrupt. {_FIX}")
        if it == T.STRING:
            return _Arr(it, n, skip_strings(n, keep=key == tokens_key))
        if it == T.ARRAY:
            raise ArtifactError(f"{path}: {key} is an array of arrays; expected a flat array (llama.cpp reads no "
                                f"nested arrays). {_FIX}")
        if it not in scalar:
            raise ArtifactError(f"{path}: {key} is an array of unknown GGUF type {it}; expected one of the GGUF "
                                f"value types 0-12. The file is corrupt or from a newer GGUF version. {_FIX}")
        width = struct.calcsize(scalar[it])
        if n * width > size - off:
            raise _Truncated
        items = struct.unpack_from(f"<{n}{scalar[it][1]}", buf, off) if n <= _KEEP_ITEMS else None
        off += n * width
        return _Arr(it, n, items)

    if size < 4 or bytes(buf[:4]) != GGUF_MAGIC:
        raise ArtifactError(f"{path}: not a GGUF file (first bytes {bytes(buf[:4])!r}, expected {GGUF_MAGIC!r}); "
                            "pass a .gguf file written by alignts or llama.cpp's converters.")
    off = 4
    version = take("<I")
    if version not in (2, 3):
        raise ArtifactError(f"{path}: GGUF version {version}, expected 2 or 3; re-export the file with a current "
                            "gguf package.")
    n_tensors, n_kv = take("<Q"), take("<Q")
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise ArtifactError(f"{path}: header claims {n_tensors} tensors and {n_kv} keys; expected at most "
                            f"{_MAX_COUNT} of each. The file is corrupt. {_FIX}")
    kv: dict[str, Any] = {}
    types: dict[str, int] = {}
    for _ in range(n_kv):
        key = string(what="a metadata key")
        if not key or key in kv:
            raise ArtifactError(f"{path}: metadata key {key!r} is {'empty' if not key else 'repeated'}; expected "
                                f"unique, non-empty keys (llama.cpp refuses the file). {_FIX}")
        t = take("<I")
        if t == T.ARRAY:
            kv[key] = array(key)
        elif t == T.STRING:
            kv[key] = string(_MAX_VALUE, "a value")
        elif t in scalar:
            kv[key] = take(scalar[t])
        else:
            raise ArtifactError(f"{path}: {key} has unknown GGUF value type {t}; expected one of 0-12. The file is "
                                f"corrupt or from a newer GGUF version. {_FIX}")
        types[key] = t
    tensors = []
    for _ in range(n_tensors):
        name = string(MAX_TENSOR_NAME, "a tensor name")
        nd = take("<I")
        if nd > MAX_DIMS:
            raise ArtifactError(f"{path}: tensor {name!r} has {nd} dimensions; expected at most {MAX_DIMS}. The "
                                f"file is corrupt. {_FIX}")
        ne = tuple(take("<Q") for _ in range(nd))
        tensors.append((name, ne, take("<I"), take("<Q")))
    alignment = _gguf().Keys.General.ALIGNMENT
    align = kv.get(alignment, 32)
    # ggml's CPU buffers need tensor data aligned to TENSOR_ALIGNMENT (32): below it llama.cpp aborts
    if types.get(alignment, T.UINT32) not in _int_types() or align < 32 or align & (align - 1):
        raise ArtifactError(f"{path}: general.alignment is {align!r}; expected a power of two >= 32. The file is "
                            f"corrupt. {_FIX}")
    data_start = (off + align - 1) // align * align
    return _Parsed(version, kv, types, tensors, data_start)


_NOT_WEIGHT_TYPES = ("I8", "I16", "I32", "I64", "F64")  # gguf.GGMLQuantizationType names


class _Fields:
    """Typed reads of GGUF metadata: a wrong type or a value out of range is an ArtifactError."""

    def __init__(self, path: Path, parsed: _Parsed):
        self.path, self.kv, self.types = path, parsed.kv, parsed.types

    def fail(self, key: str, got: Any, expected: str):
        shown = f"an array of {got.n}" if isinstance(got, _Arr) else \
            f"a {got.n}-byte string" if isinstance(got, _Long) else repr(got)[:60]
        raise ArtifactError(f"{self.path}: {key} is {shown}; expected {expected}. {_FIX}")

    def int(self, key: str, default: int | None = None, low: int = 0, high: int = (1 << 32) - 1) -> int | None:
        if key not in self.kv:
            if default is None:
                self.fail(key, "missing", f"an integer in {low}..{high}")
            return default
        v = self.kv[key]
        if self.types[key] not in _int_types() or not low <= v <= high:
            self.fail(key, v, f"an integer in {low}..{high}")
        return int(v)

    def float(self, key: str, positive: bool = False, f32: bool = False) -> float | None:
        if key not in self.kv:
            return None
        v, t = self.kv[key], self.types[key]
        T = _gguf().GGUFValueType
        ok = t == T.FLOAT32 if f32 else t in (T.FLOAT32, T.FLOAT64, *_int_types())
        if not ok or not math.isfinite(v) or (positive and v <= 0):
            want = "a finite float32" if f32 else "a finite number"
            self.fail(key, v, want + (" > 0" if positive else ""))
        return float(v)

    def str(self, key: str, default: str | None = None) -> str | None:
        if key not in self.kv:
            return default
        v = self.kv[key]
        if not isinstance(v, str):
            self.fail(key, v, "a string of at most 1 MiB")
        return v

    def per_layer(self, key: str, n_layer: int, default: int, low: int = 0, high: int = 1 << 20) -> list[int]:
        """A value llama.cpp reads as one number for every layer or as an array of n_layer numbers."""
        v = self.kv.get(key)
        if v is None and not low <= default:
            self.fail(key, "missing", f"an integer in {low}..{high} (llama.cpp aborts on {default})")
        if not isinstance(v, _Arr):
            return [self.int(key, default, low, high)] * n_layer
        if v.item_type not in _int_types() or v.n != n_layer or v.items is None:
            self.fail(key, v, f"an integer or an array of {n_layer} integers (one per layer)")
        if not all(low <= x <= high for x in v.items):
            self.fail(key, v, f"integers in {low}..{high}")
        return list(v.items)


def _tensor_nbytes(path: Path, name: str, ne: tuple[int, ...], t: int) -> int:
    gguf = _gguf()
    try:
        qt = gguf.GGMLQuantizationType(t)
        block, tsize = gguf.GGML_QUANT_SIZES[qt]
    except (ValueError, KeyError) as e:
        raise ArtifactError(f"{path}: tensor {name!r} has unknown ggml type {t}; expected a type llama.cpp "
                            "knows. The file is corrupt or too new: re-export it.") from e
    if qt.name in _NOT_WEIGHT_TYPES:  # llama.cpp has no kernels for these as weights: it crashes (SIGSEGV)
        raise ArtifactError(f"{path}: tensor {name!r} has type {qt.name}; expected a float or quantized weight "
                            f"type (F32, F16, BF16, Q8_0, ...). The file is corrupt. {_FIX}")
    if any(d < 1 for d in ne) or math.prod(ne) >= 1 << 60:
        raise ArtifactError(f"{path}: tensor {name!r} has dimensions {list(ne)}; expected each >= 1 and fewer than "
                            f"2**60 elements. The file is corrupt. {_FIX}")
    if ne and ne[0] % block:
        raise ArtifactError(f"{path}: tensor {name!r} has rows of {ne[0]}; expected a multiple of the {qt.name} "
                            f"block size {block}. The file is corrupt. {_FIX}")
    return math.prod(ne) // block * tsize


def _type_name(t: int) -> str:
    gguf = _gguf()
    try:
        return gguf.GGMLQuantizationType(t).name
    except ValueError:
        return str(t)


def _check_hparams(f: _Fields, arch: str, tensors: Mapping[str, tuple]) -> dict[str, int]:
    """Bound every hyperparameter llama.cpp asserts on while loading (src/llama-model.cpp load_hparams,
    llama-vocab.cpp, the gpt2/llama/bert graphs), so it refuses nothing by aborting the process."""
    p = f"{arch}."
    n_layer = f.int(p + "block_count", None, 1, MAX_LAYERS)
    n_ctx_train = f.int(p + "context_length", None, 1)
    n_embd = f.int(p + "embedding_length", None, 1, 1 << 20)
    f.int(p + "nextn_predict_layers", 0, 0, n_layer)
    n_expert = f.int(p + "expert_count", 0, 0, MAX_EXPERTS)
    used = max(f.per_layer(p + "expert_used_count", n_layer, 0, 0, n_expert))
    groups = f.int(p + "expert_group_count", 0, 0, max(0, n_expert - 1))
    group_used = f.int(p + "expert_group_used_count", 0)
    if n_expert and (used == 0 or (groups > 1 and (n_expert % groups or not 0 < group_used < groups))):
        f.fail(p + "expert_used_count", used, f"1..{n_expert} experts used per token, and expert groups that "
               f"divide {n_expert} with 0 < groups used < groups")
    if not n_expert and (used or groups):
        f.fail(p + "expert_used_count", used, "0 (with expert_group_count 0) when expert_count is 0")
    ours = arch in ARCHITECTURES  # the graphs alignts runs need heads and a feed-forward in every layer
    lo = 1 if ours else 0
    n_head = f.per_layer(p + "attention.head_count", n_layer, 0, lo, 1 << 16)
    n_head_kv = f.per_layer(p + "attention.head_count_kv", n_layer, 0, lo, 1 << 16) \
        if p + "attention.head_count_kv" in f.kv else n_head
    f.per_layer(p + "feed_forward_length", n_layer, 0, lo, 1 << 24)
    kv_per_token = 0
    if n_head[0]:
        head_k = f.int(p + "attention.key_length", n_embd // n_head[0], 1, 1 << 16)
        head_v = f.int(p + "attention.value_length", n_embd // n_head[0], 1, 1 << 16)
        if ours and p + "attention.key_length" not in f.kv and n_embd % n_head[0]:
            f.fail(p + "attention.head_count", n_head[0], f"a divisor of embedding_length {n_embd}")
        if ours and head_k != head_v:
            f.fail(p + "attention.value_length", head_v, f"the key length {head_k} (llama.cpp's {arch} graph)")
        for h, hkv in zip(n_head, n_head_kv):
            if hkv > h or (hkv and h % hkv):
                f.fail(p + "attention.head_count_kv", hkv, f"a divisor of head_count {h}")
            kv_per_token += (head_k + head_v) * hkv
        if arch == "llama":
            f.int(p + "rope.dimension_count", head_k, head_k, head_k)
    scaling = f.str(p + "rope.scaling.type")
    if scaling is not None and scaling not in ROPE_SCALING_TYPES:
        f.fail(p + "rope.scaling.type", scaling, f"one of {', '.join(ROPE_SCALING_TYPES)}")
    for key in ("attention.layer_norm_epsilon", "attention.layer_norm_rms_epsilon"):
        f.float(p + key, positive=True)
    n_vocab = _check_vocab(f, arch)
    if ours and n_vocab < 1:
        tokens_key = _gguf().Keys.Tokenizer.LIST
        f.fail(tokens_key, f.kv.get(tokens_key, "missing"), "a vocabulary of at least one token")
    emb = tensors.get("token_embd.weight")
    if emb is not None and ours and emb[0] != (n_vocab, n_embd):
        raise ArtifactError(f"{f.path}: token_embd.weight has shape {list(emb[0])}; expected [{n_vocab}, {n_embd}] "
                            f"(vocabulary x embedding_length). {_FIX}")
    return {"n_layer": n_layer, "n_ctx_train": n_ctx_train, "n_embd": n_embd, "n_head": n_head[0],
            "n_head_kv": n_head_kv[0], "n_vocab": n_vocab, "kv_per_token": kv_per_token}


def _check_vocab(f: _Fields, arch: str) -> int:
    """The vocabulary size, after the checks llama.cpp's vocabulary loader asserts or throws on."""
    gguf = _gguf()
    K, T = gguf.Keys.Tokenizer, gguf.GGUFValueType
    f.str(K.MODEL)
    tokens = f.kv.get(K.LIST)
    if tokens is None:
        return f.int(f"{arch}.vocab_size", 0, 0, 1 << 24)
    if not isinstance(tokens, _Arr) or tokens.item_type != T.STRING:
        f.fail(K.LIST, tokens, "an array of strings")
    seen = set(tokens.items)
    if len(seen) != tokens.n:
        dup = next(t for i, t in enumerate(tokens.items) if t in tokens.items[:i])
        f.fail(K.LIST, tokens, f"distinct tokens ({dup!r} appears twice; llama.cpp aborts on a repeated token)")
    for key, item_types in ((K.SCORES, (T.INT32, T.FLOAT32)), (K.TOKEN_TYPE, (T.INT32,))):
        v = f.kv.get(key)
        if v is not None and (not isinstance(v, _Arr) or v.item_type not in item_types or v.n < tokens.n):
            f.fail(key, v, f"an array of at least {tokens.n} items (one per token)")
    return tokens.n


def _scan_values(path: Path, buf, parsed: _Parsed) -> None:
    """NaN/inf in f32/f16/bf16 tensors, and in the f16 block scales (d, and m where there is one) of
    q4_0/q4_1/q5_0/q5_1/q8_0 tensors; other quantized types are not scanned."""
    gguf = _gguf()
    Q = gguf.GGMLQuantizationType
    scales = {Q.Q4_0: 2, Q.Q5_0: 2, Q.Q8_0: 2, Q.Q4_1: 4, Q.Q5_1: 4}  # leading bytes of f16 scales per block
    for name, ne, t, toff in parsed.tensors:
        n = math.prod(ne)
        start = parsed.data_start + toff
        if t in (Q.F32, Q.F16):
            a = np.frombuffer(buf, dtype=np.float32 if t == Q.F32 else np.float16, count=n, offset=start)
            bad = int(np.count_nonzero(~np.isfinite(a)))
        elif t == Q.BF16:  # no numpy bf16: an all-ones exponent is inf or NaN
            a = np.frombuffer(buf, dtype=np.uint16, count=n, offset=start)
            bad = int(np.count_nonzero((a & 0x7F80) == 0x7F80))
        elif t in scales:
            block, tsize = gguf.GGML_QUANT_SIZES[Q(t)]
            a = np.frombuffer(buf, dtype=np.uint8, count=n // block * tsize, offset=start)
            d = a.reshape(-1, tsize)[:, :scales[t]].copy().view(np.float16)
            bad = int(np.count_nonzero(~np.isfinite(d)))
        else:
            continue
        del a  # no view may outlive the mmap
        if bad:
            raise ArtifactError(f"{path}: tensor {name!r} holds {bad} NaN/inf values; expected finite weights (the "
                                f"export diverged or the file was edited). {_FIX}")


_info_cache: dict[tuple, GGUFInfo] = {}
_info_lock = threading.Lock()


def check_gguf(path: str | os.PathLike, expect_arch: str | None = None, scan_values: bool | None = None) -> GGUFInfo:
    """Check that ``path`` is a complete GGUF (model or adapter) that llama.cpp loads without aborting, and
    return its facts.

    Raises ArtifactError for: a missing file, bad magic (not a GGUF), an unreadable or malformed header
    (wrong value types, nested arrays, repeated keys or tokens, split files, alignment below 32), tensors llama.cpp
    cannot compute with (integer types, quantized vectors), tensor data that runs past the end of the file
    (truncated), hyperparameters past llama.cpp's limits (block_count > 512, heads that do not divide the width,
    expert counts, unknown RoPE scaling, ...), NaN/inf weights (``scan_values``; None = in files up to
    SCAN_MAX_BYTES), or ``general.architecture`` != ``expect_arch``. The header is read through mmap: only its
    pages are touched. The result is cached per unchanged file (inode, size, mtime, ctime).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or not stat_mod.S_ISREG(st.st_mode):
        raise ArtifactError(f"GGUF file {str(path)!r} does not exist; pass the path of a .gguf file "
                            "(bundles list theirs in manifest.json).")
    scan = st.st_size <= SCAN_MAX_BYTES if scan_values is None else bool(scan_values)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _info_lock:
        info = _info_cache.get(key)
    if info is None or (scan and not info.values_scanned):
        info = _read_info(path, st.st_size, scan)
        with _info_lock:
            _info_cache[key] = info
            if len(_info_cache) > 256:  # oldest first: a long-lived process checks few files, a fuzzer many
                _info_cache.pop(next(iter(_info_cache)))
    if info.path != path:
        info = dataclasses.replace(info, path=path)
    if expect_arch is not None and info.arch != expect_arch:
        raise ArtifactError(f"{path}: architecture is {info.arch!r}, expected {expect_arch!r}; pass the GGUF "
                            f"exported for a {expect_arch} backbone.")
    return info


def _read_info(path: Path, size: int, scan: bool) -> GGUFInfo:
    if size == 0:
        raise ArtifactError(f"{path}: empty file; expected a GGUF model. The copy or download was interrupted: "
                            "copy it again or re-export it.")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            parsed = _parse(path, buf)
        except _Truncated:
            raise ArtifactError(f"{path}: truncated inside the GGUF header ({size} bytes); expected a complete "
                                "file. The copy or download was interrupted: copy it again or re-export it.") from None
        info = _facts(path, size, parsed)
        if scan:
            _scan_values(path, buf, parsed)
    logger.debug("checked %s: arch=%s type=%s tensors=%d", path, info.arch, info.general_type, info.tensor_count)
    return dataclasses.replace(info, values_scanned=scan)


def _facts(path: Path, size: int, parsed: _Parsed) -> GGUFInfo:
    f = _Fields(path, parsed)
    K = _gguf().Keys
    arch = f.str(K.General.ARCHITECTURE)
    if not arch:
        raise ArtifactError(f"{path}: no {K.General.ARCHITECTURE} key; expected a GGUF model or adapter "
                            "with an architecture. Re-export the file.")
    general_type = f.str(K.General.TYPE, "model")
    if f.int("split.count", 1, 0, 1 << 16) > 1:  # llama.cpp would open sibling files no manifest lists
        f.fail("split.count", parsed.kv["split.count"], "1: a single-file GGUF (merge split files with "
               "llama-gguf-split --merge)")
    tensors: dict[str, tuple[tuple[int, ...], str]] = {}
    end = parsed.data_start
    align = parsed.kv.get(K.General.ALIGNMENT, 32)
    for name, ne, t, toff in parsed.tensors:
        if name in tensors:
            raise ArtifactError(f"{path}: tensor {name!r} appears twice; expected unique tensor names. The file is "
                                f"corrupt. {_FIX}")
        if toff % align:
            raise ArtifactError(f"{path}: tensor {name!r} starts at offset {toff}; expected a multiple of the "
                                f"alignment {align}. The file is corrupt. {_FIX}")
        tensors[name] = (tuple(reversed(ne)), _type_name(t))  # ggml ne -> numpy order
        if all(d == 1 for d in ne[1:]) and tensors[name][1] not in ("F32", "F16", "BF16"):
            # norms and biases enter ggml's add/mul, which abort on a quantized operand
            raise ArtifactError(f"{path}: the vector {name!r} has type {tensors[name][1]}; expected F32, F16 or BF16. "
                                f"The file is corrupt. {_FIX}")
        end = max(end, parsed.data_start + toff + _tensor_nbytes(path, name, ne, t))
    if end > size:
        raise ArtifactError(f"{path}: truncated; tensor data needs {end} bytes but the file has {size}. "
                            "The copy or download was interrupted: copy the file again or re-export it.")
    ftype = f.int(K.General.FILE_TYPE, -1, -1, 1 << 16)
    alpha = adapter_type = None
    hp = {"n_layer": 0, "n_ctx_train": 0, "n_embd": 0, "n_head": 0, "n_head_kv": 0, "kv_per_token": 0,
          "n_vocab": 0}
    if general_type == "adapter":
        # llama.cpp reads these with gguf_get_val_str / _f32, which abort on another type
        adapter_type = f.str(K.Adapter.TYPE)
        alpha = f.float(K.Adapter.LORA_ALPHA, f32=True)
    else:
        if "token_embd.weight" not in tensors:
            raise ArtifactError(f"{path}: no token_embd.weight tensor; expected a complete {arch} model. "
                                "Re-export it.")
        hp = _check_hparams(f, arch, tensors)
    return GGUFInfo(
        path=path, arch=arch, general_type=general_type, n_embd=hp["n_embd"], n_layer=hp["n_layer"],
        n_vocab=hp["n_vocab"], n_ctx_train=hp["n_ctx_train"], n_head=hp["n_head"], tensor_count=len(tensors),
        file_type=ftype, file_type_name=_file_type_name(ftype),
        size_bytes=size, tensors=tensors,
        metadata={k: v for k, v in parsed.kv.items() if k.startswith(Keys.PREFIX) and isinstance(v, (str, int, float))},
        lora_alpha=alpha, adapter_type=adapter_type, n_head_kv=hp["n_head_kv"], kv_per_token=hp["kv_per_token"],
        tokens=_token_texts(parsed.kv.get(_gguf().Keys.Tokenizer.LIST)))


def _token_texts(tokens: Any) -> tuple[str, ...]:
    """The vocabulary the header parse kept (checked by _check_vocab), so no caller parses the file again."""
    return tuple(tokens.items) if isinstance(tokens, _Arr) and tokens.items else ()


def physical_memory() -> int:
    """Bytes of RAM of this machine (0 when unknown)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def check_context(info: GGUFInfo, n_ctx: int, n_seq_max: int = 1, kv_type: str = "f32") -> int:
    """Bound a llama.cpp context before it is created; returns the KV cache's bytes.

    n_ctx (tokens per sequence) must lie in 1..the model's context_length, and the KV cache (n_ctx x n_seq_max
    tokens x ``info.kv_per_token`` values) must fit this machine's memory: past either, llama.cpp reads
    positions it has no embedding for (and aborts) or tries to allocate what is not there.
    """
    kv_bytes = int(n_ctx) * int(n_seq_max) * info.kv_per_token * (2 if kv_type == "f16" else 4)
    if n_ctx < 1 or (info.n_ctx_train and n_ctx > info.n_ctx_train):
        raise ArtifactError(f"{info.path}: n_ctx={n_ctx} tokens asked; expected 1..{info.n_ctx_train}, the model's "
                            f"context_length. Fix: lower n_ctx (re-export with --n-ctx {info.n_ctx_train} or less).")
    ram = physical_memory()
    if ram and kv_bytes + info.size_bytes > ram:
        raise ArtifactError(f"{info.path}: n_ctx={n_ctx} x {n_seq_max} sequences needs a {kv_bytes / 2**30:.1f} GiB "
                            f"KV cache ({kv_type}) beside {info.size_bytes / 2**30:.2f} GiB of weights; expected it "
                            f"to fit this machine's {ram / 2**30:.1f} GiB. Fix: lower n_ctx or the samples "
                            "(parallel sequences).")
    return kv_bytes


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
