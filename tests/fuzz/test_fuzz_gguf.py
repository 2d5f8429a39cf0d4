"""Fuzz target for the GGUF check (issue 11, defects 3, 5 and 7): structure-aware mutations of real GGUF files.

Property: ``check_gguf`` (and ``check_lora_adapter`` for adapters) returns or raises an AlignTSError subclass,
never another exception, and never runs longer than TIMEOUT_S; a file it accepts loads and decodes in llama.cpp
through the runtime's LlamaCppModel in a child process without crashing it (the child answers for every file;
a dead child is a crash, its file kept for the report).

Seeds: the GGUFs of the embedded numeric LM bundle (alignts/assets/numeric_lm, f16 and q8_0, real exports), the
crafted runnable GPT-2 of tests/gguf_craft.py and a LoRA adapter for it. Mutations (1-3 per input): metadata
values replaced by hostile ones of any type (llama.cpp's limits and one past them, NaN, huge integers, long
strings, repeated tokens), keys deleted, duplicated or added (every key llama.cpp's loader asserts on), arrays
nested up to 3000 deep, tensor infos changed (dims, types, names, offsets), header counts and versions that lie,
and byte flips, truncation and insertions in the header.

Budget: the ``alignts-fuzz`` profile (tests/fuzz/conftest.py; ALIGNTS_FUZZ_EXAMPLES); the llama.cpp target runs a
quarter of it, one structure edit per input so that more files pass the check. ALIGNTS_FUZZ_REPORT=path appends
the counts (inputs, outcomes, non-AlignTS exceptions, crashes) as JSON lines; ALIGNTS_FUZZ_KEEP_GOING=1 counts
non-AlignTS exceptions and crashes instead of failing at the first (crashing files are kept in the temp folder).
"""

from __future__ import annotations

import collections
import copy
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from findings import site
from gguf_craft import (ARR, BOOL, F32, F64, I32, I64, STR, U8, U16, U32, U64, Gguf, from_file, lora_adapter,
                        tiny_gpt2)
from hypothesis import given, settings
from hypothesis import strategies as st

from alignts.errors import AlignTSError
from alignts.runtime.gguf_check import check_gguf, check_lora_adapter

FUZZ = settings.get_profile("alignts-fuzz")
LLAMA_FUZZ = settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 4))
TIMEOUT_S = 20
KEEP_GOING = os.environ.get("ALIGNTS_FUZZ_KEEP_GOING") == "1"  # count findings instead of stopping at the first
ASSETS = Path(__file__).resolve().parents[2] / "alignts" / "assets" / "numeric_lm"

HOSTILE = [
    (U32, 0), (U32, 1), (U32, 2), (U32, 3), (U32, 512), (U32, 513), (U32, 1024), (U32, 1025), (U32, 2 ** 31),
    (U32, 2 ** 32 - 1), (I32, -1), (I32, -(2 ** 31)), (U64, 2 ** 64 - 1), (I64, -(2 ** 63)), (U8, 255), (U16, 7),
    (F32, float("nan")), (F32, float("inf")), (F32, -0.0), (F32, 0.0), (F32, 1e-30), (F64, 4.0), (BOOL, True),
    (STR, ""), (STR, "bogus"), (STR, "gpt2"), (STR, "llama"), (STR, "adapter"), (STR, "lora"), (STR, "yarn"),
    (STR, "x" * 70_000), (ARR, (U32, [4])), (ARR, (U32, [4, 4])), (ARR, (I32, [])), (ARR, (STR, ["a", "a"])),
    (ARR, (STR, [])), (ARR, (F32, [float("nan")])), (ARR, (ARR, [(U8, [1])])), (99, b""), (12345, b"\0" * 8),
]
KEYS = ["{a}.block_count", "{a}.context_length", "{a}.embedding_length", "{a}.feed_forward_length",
        "{a}.attention.head_count", "{a}.attention.head_count_kv", "{a}.attention.key_length",
        "{a}.attention.value_length", "{a}.attention.layer_norm_epsilon", "{a}.attention.layer_norm_rms_epsilon",
        "{a}.expert_count", "{a}.expert_used_count", "{a}.expert_group_count", "{a}.expert_group_used_count",
        "{a}.nextn_predict_layers", "{a}.rope.scaling.type", "{a}.rope.dimension_count", "{a}.vocab_size",
        "general.architecture", "general.type", "general.alignment", "general.file_type", "split.count",
        "adapter.type", "adapter.lora.alpha", "tokenizer.ggml.model", "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "alignts.paradigm"]


def _seeds() -> dict[str, tuple[Gguf, Gguf | None]]:
    """{name: (gguf, base it is an adapter of, or None)}."""
    base = tiny_gpt2()
    seeds = {"tiny_gpt2": (base, None), "lora": (lora_adapter(base), base)}
    for f in sorted(ASSETS.glob("*.gguf")):
        seeds[f.stem] = (from_file(f), None)
    return seeds


SEEDS = _seeds()
STATS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


# ------------------------------------------------------------------------------------------------ mutations

def _hostile(data):
    return data.draw(st.sampled_from(HOSTILE), label="hostile")


def _set_value(data, g: Gguf) -> None:
    if g.kv:
        i = data.draw(st.integers(0, len(g.kv) - 1))
        g.kv[i] = (g.kv[i][0], *_hostile(data))


def _delete(data, g: Gguf) -> None:
    if g.kv:
        del g.kv[data.draw(st.integers(0, len(g.kv) - 1))]


def _duplicate(data, g: Gguf) -> None:
    if g.kv:
        g.kv.insert(data.draw(st.integers(0, len(g.kv))), g.kv[data.draw(st.integers(0, len(g.kv) - 1))])


def _add_key(data, g: Gguf) -> None:
    arch = g.get("general.architecture") if isinstance(g.get("general.architecture"), str) else "gpt2"
    g.set(data.draw(st.sampled_from(KEYS)).format(a=arch), *_hostile(data))


def _nest(data, g: Gguf) -> None:
    depth = data.draw(st.sampled_from([1, 2, 30, 1000, 3000]))
    payload = struct.pack("<IQ", U8, 1) + b"\x01"
    for _ in range(depth):
        payload = struct.pack("<IQ", ARR, 1) + payload
    key = data.draw(st.sampled_from(["x.nested", "tokenizer.ggml.tokens", "gpt2.attention.head_count"]))
    g.set(key, ARR, payload)


def _tensor(data, g: Gguf) -> None:
    if not g.tensors:
        return
    i = data.draw(st.integers(0, len(g.tensors) - 1))
    name, ne, t, raw = g.tensors[i]
    what = data.draw(st.sampled_from(["ne", "type", "name", "drop", "dup", "data", "offset"]))
    if what == "ne":
        ne = tuple(data.draw(st.lists(st.sampled_from([0, 1, 3, 32, 2 ** 31, 2 ** 62, 2 ** 64 - 1]), max_size=6)))
    elif what == "type":
        t = data.draw(st.integers(0, 45))
    elif what == "name":
        name = data.draw(st.sampled_from(["", "t" * 64, "t" * 63, g.tensors[0][0], "blk.999.attn_qkv.weight"]))
    elif what == "drop":
        del g.tensors[i]
        return
    elif what == "dup":
        g.tensors.append(g.tensors[i])
        return
    elif what == "data":
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    else:
        offs = [0]
        for _, _, _, r in g.tensors[:-1]:
            offs.append(offs[-1] + (len(r) + g.alignment - 1) // g.alignment * g.alignment)
        offs[i] = data.draw(st.sampled_from([1, 31, 2 ** 40, 2 ** 64 - 1 - offs[i]]))
        g.offsets = offs
    g.tensors[i] = (name, ne, t, raw)


def _header(data, g: Gguf) -> None:
    what = data.draw(st.sampled_from(["version", "n_kv", "n_tensors", "alignment"]))
    value = data.draw(st.sampled_from([0, 1, 2, 4, 64, 2 ** 24 + 1, 2 ** 63]))
    if what == "alignment":
        g.set("general.alignment", U32, min(value, 2 ** 32 - 1))
    elif what == "version":
        g.version = min(value, 2 ** 32 - 1)
    else:
        setattr(g, what, value)


STRUCTURE_OPS = [_set_value, _set_value, _add_key, _add_key, _delete, _duplicate, _nest, _tensor, _tensor, _header]


def _bytes(data, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        head = min(len(b), 4096)  # the header: where the parser lives
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "u64"]))
        if op == "flip" and head:
            b[data.draw(st.integers(0, head - 1))] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            b = b[:data.draw(st.integers(0, len(b)))]
        elif op == "insert":
            at = data.draw(st.integers(0, head))
            b[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        elif head >= 8:
            at = data.draw(st.integers(0, head - 8))
            b[at:at + 8] = struct.pack("<Q", data.draw(st.sampled_from([0, 1, 2 ** 32, 2 ** 63, 2 ** 64 - 1])))
    return bytes(b)


def mutate(data, seed: Gguf, max_edits: int = 3, byte_edits: bool = True) -> bytes:
    g = copy.deepcopy(seed)
    for _ in range(data.draw(st.integers(1, max_edits), label="edits")):
        data.draw(st.sampled_from(STRUCTURE_OPS), label="op")(data, g)
    raw = g.to_bytes()
    return _bytes(data, raw) if byte_edits and data.draw(st.booleans(), label="bytes") else raw


# ---------------------------------------------------------------------------------------------------- runs

class _Hang(Exception):
    pass


def _on_alarm(signum, frame):  # noqa: ARG001
    raise _Hang(f"no answer within {TIMEOUT_S} s")


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="fuzz-gguf-") as d:
        yield Path(d)
    _report()


def _report() -> None:
    path = os.environ.get("ALIGNTS_FUZZ_REPORT")
    for target, counts in STATS.items():
        line = {"target": target, **dict(counts)}
        print(json.dumps(line))
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(line) + "\n")
    STATS.clear()


_n = [0]


def _write(workdir: Path, name: str, raw: bytes) -> Path:
    _n[0] += 1  # a new file each time: check_gguf caches by inode
    p = workdir / f"{_n[0]}-{name}.gguf"
    p.write_bytes(raw)
    return p


def _check(path: Path, base: Path | None):
    """check_gguf / check_lora_adapter under an alarm: the outcome's name, or the exception for the test."""
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(TIMEOUT_S)
    try:
        info = check_lora_adapter(path, base) if base is not None else check_gguf(path)
        return "accepted", info
    except AlignTSError as e:
        return type(e).__name__, None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@given(data=st.data())
@FUZZ
def test_gguf_check_raises_only_alignts_errors(workdir, data):
    name = data.draw(st.sampled_from(sorted(SEEDS)), label="seed")
    seed, base = SEEDS[name]
    base_path = _write(workdir, "base", base.to_bytes()) if base is not None else None
    path = _write(workdir, name, mutate(data, seed))
    stats = STATS["check_gguf"]
    stats["inputs"] += 1
    try:
        outcome, _ = _check(path, base_path)
    except Exception as e:
        stats["non_alignts_exceptions"] += 1
        stats[f"raw {site(e)}"] += 1
        if not KEEP_GOING:
            raise AssertionError(f"{type(e).__name__} from the GGUF check on a mutated {name}: {e}") from e
        outcome = "raw"
    stats[outcome] += 1
    path.unlink()


# --------------------------------------------------------------------------- accepted files through llama.cpp

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from alignts.errors import AlignTSError
    from alignts.runtime.backends.gguf import LlamaCppModel
    from alignts.runtime.gguf_check import check_gguf
    for line in sys.stdin:
        path, base = line.rstrip("\\n").split("\\t")
        try:
            model, loras = (base, [(path, 1.0)]) if base else (path, [])
            n = min(4, check_gguf(model).n_ctx_train)
            m = LlamaCppModel(model, n_ctx=n, loras=loras, embeddings=True, n_threads=1)
            h = m.hidden_states(np.zeros((1, n, m.n_embd), np.float32))
            out = "ok" if np.isfinite(h).all() else "nonfinite"
        except AlignTSError as e:
            out = "alignts " + type(e).__name__
        except Exception as e:  # noqa: BLE001 - reported as a finding
            out = "raw " + type(e).__name__ + ": " + str(e)[:200]
        print("answer", out, flush=True)
""")


class _Llama:
    """A child process that loads each file it is sent; a dead child is a crash of the file it held."""

    def __init__(self):
        self.p = None

    def ask(self, path: Path, base: Path | None) -> str:
        if self.p is None or self.p.poll() is not None:
            env = {**os.environ, "GGML_NO_BACKTRACE": "1"}  # an abort exits at once, without a gdb backtrace
            self.p = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, env=env)
        self.p.stdin.write(f"{path}\t{base or ''}\n")
        self.p.stdin.flush()
        for line in self.p.stdout:  # llama.cpp may print; only "answer ..." lines are the child's
            if line.startswith("answer "):
                return line[len("answer "):].strip()
        self.p.wait(timeout=60)
        return f"crash (exit {self.p.returncode})"

    def close(self):
        if self.p is not None and self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=60)


@pytest.fixture(scope="module")
def llama():
    pytest.importorskip("llama_cpp")
    child = _Llama()
    yield child
    child.close()


@given(data=st.data())
@LLAMA_FUZZ
def test_accepted_files_do_not_crash_llama_cpp(workdir, llama, data):
    name = data.draw(st.sampled_from(sorted(SEEDS)), label="seed")
    seed, base = SEEDS[name]
    base_path = _write(workdir, "base", base.to_bytes()) if base is not None else None
    path = _write(workdir, name, mutate(data, seed, max_edits=1, byte_edits=False))  # more files reach llama.cpp
    stats = STATS["llama_cpp_load"]
    stats["inputs"] += 1
    try:
        outcome, info = _check(path, base_path)
    except Exception:  # the check's own failures are the other target's findings
        outcome = "raw"
    if outcome != "accepted" or (info.general_type != "adapter" and info.arch not in ("gpt2", "llama", "bert")):
        stats["refused_by_check"] += 1
        return
    answer = llama.ask(path, base_path)
    stats[answer.split(":")[0]] += 1
    if answer.startswith("crash"):
        stats["crashes"] += 1
        keep = workdir.parent / f"alignts-fuzz-crash-{path.name}"
        keep.write_bytes(path.read_bytes())
        assert KEEP_GOING, f"llama.cpp crashed ({answer}) on a file check_gguf accepted; kept at {keep}"
    elif answer.startswith("raw"):
        stats["non_alignts_exceptions"] += 1
        assert KEEP_GOING, f"{answer} on a mutated {name} the check accepted"
    path.unlink()
