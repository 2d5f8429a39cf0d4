"""GGUF files as editable structures, for the crafted-file tests and the GGUF fuzz target.

A :class:`Gguf` is the header (key/value pairs with their GGUF types, tensor infos) plus the tensor data;
``to_bytes`` serializes it byte for byte as the GGUF v3 spec lays it out, including what gguf-py refuses to
write (wrong value types, nested arrays, counts that lie, unaligned offsets), so a test can hand llama.cpp and
the checker exactly the malformed file it means. ``from_file`` reads a real GGUF (gguf-py's reader) into one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

V = GGUFValueType
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = (
    V.UINT8, V.INT8, V.UINT16, V.INT16, V.UINT32, V.INT32, V.FLOAT32, V.BOOL, V.STRING, V.ARRAY, V.UINT64, V.INT64,
    V.FLOAT64)
_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q",
        I64: "<q", F64: "<d"}
GGML_F32, GGML_F16 = GGMLQuantizationType.F32, GGMLQuantizationType.F16


@dataclass
class Gguf:
    """kv: [(key, type, value)]; an ARR value is (item type, [items]) and may nest; an unknown type's value is
    its raw bytes (so may any value, e.g. arrays nested too deep to build). tensors: [(name, ne in ggml
    order, ggml type, data bytes)]. Offsets are laid out by to_bytes (aligned) unless ``offsets`` is given."""

    kv: list[tuple[str, int, object]] = field(default_factory=list)
    tensors: list[tuple[str, tuple[int, ...], int, bytes]] = field(default_factory=list)
    version: int = 3
    alignment: int = 32
    n_tensors: int | None = None  # header counts; None = the true ones
    n_kv: int | None = None
    offsets: list[int] | None = None

    def get(self, key: str):
        return next((v for k, _, v in self.kv if k == key), None)

    def set(self, key: str, vtype: int, value) -> "Gguf":
        """Replace ``key`` (or append it)."""
        for i, (k, _, _) in enumerate(self.kv):
            if k == key:
                self.kv[i] = (key, vtype, value)
                return self
        self.kv.append((key, vtype, value))
        return self

    def drop(self, key: str) -> "Gguf":
        self.kv = [e for e in self.kv if e[0] != key]
        return self

    def to_bytes(self) -> bytes:
        out = bytearray(b"GGUF")
        out += struct.pack("<IQQ", self.version, len(self.tensors) if self.n_tensors is None else self.n_tensors,
                           len(self.kv) if self.n_kv is None else self.n_kv)
        for key, t, v in self.kv:
            out += _string(key) + struct.pack("<I", t) + _value(t, v)
        offsets, off = [], 0
        for _, _, _, data in self.tensors:
            offsets.append(off)
            off = (off + len(data) + self.alignment - 1) // self.alignment * self.alignment
        offsets = self.offsets or offsets
        for (name, ne, t, _), o in zip(self.tensors, offsets):
            out += _string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
            out += struct.pack("<IQ", t, o)
        out += b"\0" * (-len(out) % self.alignment)
        start = len(out)
        for (_, _, _, data), o in zip(self.tensors, offsets):
            if start + o - len(out) > 1 << 26:  # a far-away offset: its data is left out (the file ends early)
                continue
            out += b"\0" * max(0, start + o - len(out))
            out += data
        return bytes(out)

    def write(self, path: Path) -> Path:
        Path(path).write_bytes(self.to_bytes())
        return Path(path)


def _string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _value(t: int, v) -> bytes:
    if isinstance(v, (bytes, bytearray)) and t != STR:  # a raw payload (an unknown type, a deeply nested array)
        return bytes(v)
    if t == STR:
        return _string(v)
    if t == ARR:
        it, items = v
        return struct.pack("<IQ", it, len(items)) + b"".join(_value(it, x) for x in items)
    return struct.pack(_FMT[t], v)


def tiny_gpt2(n_layer: int = 1, n_embd: int = 32, n_head: int = 4, n_ctx: int = 64, seed: int = 0) -> Gguf:
    """A complete GPT-2 llama.cpp loads and runs (random f32 weights, a 16-token digits vocabulary)."""
    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", ",", "-", " "] + [str(i) for i in range(10)] + ["a", "b"]
    V, ff = len(tokens), 4 * n_embd
    g = Gguf(kv=[
        ("general.architecture", STR, "gpt2"), ("general.type", STR, "model"), ("general.file_type", U32, 0),
        ("gpt2.context_length", U32, n_ctx), ("gpt2.embedding_length", U32, n_embd),
        ("gpt2.feed_forward_length", U32, ff), ("gpt2.block_count", U32, n_layer),
        ("gpt2.attention.head_count", U32, n_head), ("gpt2.attention.layer_norm_epsilon", F32, 1e-5),
        ("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, "gpt-2"),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)), ("tokenizer.ggml.token_type", ARR, (I32, [3] + [1] * (V - 1))),
        ("tokenizer.ggml.merges", ARR, (STR, ["a b"])), ("tokenizer.ggml.bos_token_id", U32, 0),
        ("tokenizer.ggml.eos_token_id", U32, 0), ("alignts.paradigm", STR, "injective"),
    ])

    def add(name: str, *shape: int, scale: float = 0.02) -> None:  # shape in numpy order
        a = (rng.standard_normal(shape) * scale).astype(np.float32) if scale else np.ones(shape, np.float32)
        g.tensors.append((name, tuple(reversed(shape)), GGML_F32, a.tobytes()))

    add("token_embd.weight", V, n_embd)
    add("position_embd.weight", n_ctx, n_embd)
    add("output_norm.weight", n_embd, scale=0)
    add("output_norm.bias", n_embd)
    for i in range(n_layer):
        for norm in ("attn_norm", "ffn_norm"):
            add(f"blk.{i}.{norm}.weight", n_embd, scale=0)
            add(f"blk.{i}.{norm}.bias", n_embd)
        add(f"blk.{i}.attn_qkv.weight", 3 * n_embd, n_embd)
        add(f"blk.{i}.attn_qkv.bias", 3 * n_embd)
        add(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        add(f"blk.{i}.attn_output.bias", n_embd)
        add(f"blk.{i}.ffn_up.weight", ff, n_embd)
        add(f"blk.{i}.ffn_up.bias", ff)
        add(f"blk.{i}.ffn_down.weight", n_embd, ff)
        add(f"blk.{i}.ffn_down.bias", n_embd)
    return g


def lora_adapter(base: Gguf, rank: int = 2, alpha: tuple[int, object] = (F32, 4.0)) -> Gguf:
    """A LoRA adapter for the first layer's attn_qkv of ``base`` (a tiny_gpt2)."""
    n_embd = base.get("gpt2.embedding_length")
    g = Gguf(kv=[("general.architecture", STR, "gpt2"), ("general.type", STR, "adapter"),
                 ("adapter.type", STR, "lora"), ("adapter.lora.alpha", *alpha)])
    a = np.full((rank, n_embd), 0.01, np.float32)
    b = np.full((3 * n_embd, rank), 0.01, np.float32)
    g.tensors += [("blk.0.attn_qkv.weight.lora_a", (n_embd, rank), GGML_F32, a.tobytes()),
                  ("blk.0.attn_qkv.weight.lora_b", (rank, 3 * n_embd), GGML_F32, b.tobytes())]
    return g


def from_file(path: str | Path) -> Gguf:
    """A real GGUF as a Gguf (through gguf-py's reader); to_bytes() gives a file llama.cpp reads the same way."""
    import gguf

    r = gguf.GGUFReader(str(path))
    g = Gguf(alignment=int(r.alignment))
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        t = int(f.types[0])
        v = f.contents()
        if t == ARR:
            v = (int(f.types[1]), list(v))
        g.kv.append((key, t, v))
    for t in r.tensors:
        g.tensors.append((t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), bytes(t.data.tobytes())))
    return g
