"""Memory budgets: estimate a bundle's peak resident memory from its manifest and pick what fits (torch-free).

Nothing is loaded: the estimate reads the manifest (and, when the manifest lacks the model's depth or heads,
the header of a GGUF file in the bundle, never its tensors), so an impossible budget fails in milliseconds.

    from alignts.runtime.budget import parse_budget, choose, describe_plan
    c = choose(manifest, parse_budget("300MB"), batch_size=8)
    c.variant, c.batch_size, c.settings      # e.g. "onnx-int8", 8, {"arena": False, ...}
    print(describe_plan(c))

The peak is modelled as ``weights + activations + kv_cache + runtime_overhead`` (:class:`Estimate`):

- weights: the variant's files (``Variant.weight_bytes``, else the manifest's file sizes) times a per-backend
  residency factor: onnxruntime holds the parsed protobuf, the initializers and pre-packed MatMul weights while
  a session is created (``ONNX_WEIGHT_FACTOR``); llama.cpp maps the GGUF file and touches every page once.
  Bridging bundles add their shared backbone's bytes (``manifest.backbone.weight_bytes``) in the backbone's
  backend; the adapter always runs in onnxruntime. Sizes that are negative, fractional or past 2**50 bytes
  raise ManifestError: an estimate is never negative.
- activations: the live tensors of one forward call over ``S = batch_size * n_channels`` series of ``T`` tokens,
  float32: a few ``[S, T, d]`` buffers, the ``[S, T, d_ff]`` MLP pair and the ``[S, h, T, T]`` attention
  scores, times the allocator factor (onnxruntime's arena rounds chunks up; llama.cpp reserves its compute
  graph for ``n_batch`` tokens), plus the numpy input/output copies.
- kv_cache (llama.cpp, causal LMs): ``2 * n_layer * n_ctx * d * bytes(kv type)`` over every parallel sequence.
- runtime_overhead: what the process loads besides the model (:func:`runtime_overhead`): the interpreter with
  the CLI's imports (pandas, the data loaders) and the paradigm's numba kernels compiled from a cold cache
  (``PROCESS_BASE``), plus every runtime library the plan opens (``RUNTIME_LIBRARY``: Bridging loads
  onnxruntime for its adapter beside a llama.cpp backbone), plus ``OVERHEAD_MARGIN``; measured with
  :func:`alignts.bench.memory.measure_overhead`.

:func:`choose` walks the variants in :func:`rank_variants` order: in a gated bundle (variants carrying the
accuracy gate's record, ``Variant.accuracy``, see ``alignts.export.gate``) the fastest variant within the gate first
(by the time each took on the gate's validation windows in one run, ``ms_per_series``, on the CPU the record names:
planning on another one warns, :func:`timed_elsewhere`), then variants without a
record, then those over the gate; in a bundle written before the gate, from the most accurate (fp32/f32, then f16,
then int8/q8_0, then q4_0; ties broken by the export validation error). Each first with the fast backend settings
and then with the lean ones
(onnxruntime arena, memory pattern and weight pre-packing off; llama.cpp f16 KV cache), and only then halves
the batch size. When nothing fits, :class:`BudgetExceededError` names the smallest budget that works.

The budget is the host process's resident memory on CPU. On CUDA (weights and activations on the device, a CUDA
context in the process) the model is not calibrated: no GPU was available to measure it.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from alignts.errors import AlignTSError, ArtifactError, BudgetExceededError, InputError, ManifestError
from alignts.runtime.configs import BackboneRuntimeConfig, BridgingRuntimeConfig, InjectiveRuntimeConfig, runtime_config
from alignts.runtime.manifest import Manifest, Variant

log = logging.getLogger(__name__)

MiB = 1 << 20
MAX_BYTES = 1 << 50  # a size past this in a manifest is a broken manifest, not a model
# Process baseline, measured (peak RSS, VmHWM) in a venv made by scripts/setup (x86-64, Python 3.11, numpy 2.4,
# numba 0.68, onnxruntime 1.32, llama-cpp-python 0.3.36) with
#   python -c "from alignts.bench.memory import measure_overhead as m; print(m('bridging', ('onnx', 'gguf')))"
# PROCESS_BASE: pandas + the data loaders + the runtime imported, the paradigm's kernels compiled from a cold
# numba cache (a first run on a device; a warm cache peaks 14-40 MiB lower): internal / bridging / injective
# 215 / 236 / 243 MiB (202 / 222 / 230 MiB after later lazy-import changes; the constants keep the first).
# Internal re-measured at 222 MiB (+ hot page cache) once ray[data] put pyarrow in the default venv: pandas imports
# it when installed (64 MiB on `import pandas`), and tests/test_budget_rss.py's onnx-fp32 case peaked 1.6 MiB over.
# RUNTIME_LIBRARY: what opening the library on a trivial model adds (onnxruntime 32-33 MiB, of which ~12 are the
# onnx package the measurement uses to build its model; llama.cpp 8-9 MiB), plus the fixed cost of a real
# session / llama.cpp context that the tiny bundles of tests/test_budget_rss.py show beyond their weights and
# activations (onnxruntime 7-14 MiB, llama.cpp 12-16 MiB). Re-measure on another platform.
# PAGE_CACHE_HOT: RSS counts the pages of shared libraries a process maps, and the kernel maps more of them
# around each touched page when the file is in the page cache (fault-around). Right after an install (or any
# run that read the files) `import numba` alone peaks at 118 MB instead of 56 MB (llvmlite's 178 MB
# libllvmlite.so): a fresh clone + venv peaked 13-34 MiB above the constants above, measured with a colder cache.
# PYARROW_IMPORT: pandas imports pyarrow whenever it is installed (ray[data] brings it: the default venv of
# scripts/setup has it): `import numba, pandas` peaks at 252 MB with it and 187 MB without, in a venv made minutes
# before (the CI case); tests/test_budget_rss.py's seven plans peaked 32-51 MiB over estimates that left it out.
PROCESS_BASE = {"internal": 222 * MiB, "bridging": 236 * MiB, "injective": 243 * MiB}
RUNTIME_LIBRARY = {"onnx": 34 * MiB, "gguf": 24 * MiB}
PAGE_CACHE_HOT = 48 * MiB
PYARROW_IMPORT = 64 * MiB
OVERHEAD_MARGIN = 16 * MiB
# Weight residency (resident bytes per file byte) and live-activation factor (resident bytes per byte of the
# live-tensor model below), fitted to peak RSS measured in child processes (alignts.bench.memory.measure_peak)
# on an ETTh1 MiniLM Internal bundle (6 layers, width 384, 42 patches, 7 channels; onnx-fp32 50 MB, onnx-int8
# 13 MB) at batch 1/8/32: fp32 254/413/884 MiB, int8 221/368/856 MiB; the factors below over-estimate those by
# 5-15 %. The "lean" values (arena, memory pattern and pre-packing off, which plan() hands the backends) were
# measured the same way on the ETTh1 Internal bundle (onnx-fp32) and the ETTh1 Bridging bundle (adapter + 2-layer
# MiniLM backbone, onnx-fp32) at batch 1/8/32, 2 forecasts after plan, in the developers' venv (overhead ~192 MiB):
# Internal fast 266/313/548 MiB, lean 240/278/386; Bridging fast 343/1037/3419, lean 289/607/1636. A lean factor
# of 1.5 over-estimates every lean case (by 2-6 % for Internal with the developers' overhead, more with the
# constant above).
ONNX_WEIGHT_FACTOR = {"fast": 1.2, "lean": 1.1}
GGUF_WEIGHT_FACTOR = 1.1
ACT_FACTOR = {"fast": 3.0, "lean": 1.5}
# llama.cpp allocates its compute graph once for n_batch tokens; fitted on tiny bundles, checked on 2-layer MiniLM
# Internal and Bridging bundles (results/hardening/concurrency_budget.md)
GGUF_ACT_FACTOR = 1.5
# llama.cpp's output buffer holds n_vocab logits per output row even when only hidden states are read
# (llama_context::output_reserve): 62 MiB for 512 rows of BERT's 30522 tokens, so the GGUFs fed input embeddings
# only (Internal, Bridging backbones) carry a stub vocabulary (gguf_writer.STUB_VOCAB); the GGUF header says which.
# A vocabulary neither the manifest nor a GGUF tells is taken as GPT-2's, the largest of the registry's backbones.
DEFAULT_N_VOCAB = 50257
LLAMA_N_BATCH = 512  # llama.cpp's default n_batch: its compute graph is reserved for this many tokens
# Tokens per llama_decode of a BERT encoder's hidden states. llama.cpp encodes a decode's tokens in one shot with
# a [tokens, tokens] mask between the series, so attention and softmax grow with the square of the series per
# decode while the weight products run faster on more rows. With alignts' packed f32 GEMM in ggml
# (scripts/patch_llama.py) the products gain up to ~150 rows: MiniLM Internal bundle, N=22 tokens a series, 1
# thread, AMD EPYC (Zen 5), wall ms of hidden_states: 7 series in groups of 1 / 2 / 3 / 4 / 7 / 8 took 31.4 / 25.4
# / 22.6 / 21.2 / 21.2 / 21.1 (f32 weights); 56 series in groups of 3 / 7 / 8 / 14 / 23: 168 / 163 / 161 / 188 / 217
# (results/speed_llama.md, section 8). With llama.cpp's own kernels the best group was ~64 tokens (section 3).
# alignts' llama.cpp also attends per series (scripts/patch_llama.py, change 4: S equal series a decode run as S
# [N x N] attention streams), so the square is gone there: 56 series in groups of 7 / 8 / 14 / 28 / 56 took 148.5 /
# 148.9 / 145.0 / 144.0 / 144.1 ms (section 9). ~160 tokens stays for a stock llama.cpp (no streams there).
ENCODER_DECODE_TOKENS = 160
# The same with alignts' llama.cpp (streams): larger groups pay where series are long. The Bridging MiniLM backbone
# (119 tokens a series), gguf-f32 forecast of one ETTh1 window (7 series), wall ms: 1 / 2 / 4 series a decode took
# 43.4 / 42.0 / 40.4 at 1 thread, 30.2 / - / 27.8 at 2 threads, 331 / - / 309 at batch 8 (results/speed_llama.md,
# section 10); 22-token Internal series in groups of 14-28: 144-145 ms against 148.5 in groups of 7 (section 9).
ENCODER_STREAMS_DECODE_TOKENS = 480
# The same with flash attention (what older bundles' reduced-precision GGUF variants record in
# ``Variant.extra["flash_attn"]``; alignts.export.quantize no longer does): ggml's flash-attention kernel skips the
# masked cells, so the group is limited by the weight products' cache use only.
# Measured the same way (wall ms, 1 thread, quiet machine): 56 series of 22 tokens in groups of 3 / 7 / 14 / 23
# took 279 / 263 / 240 / 260 ms (f32 weights), 193 / 169 / 164 / 175 ms (bf16); 7 Bridging series of 119 tokens in
# groups of 1 / 2 / 4 / 7: 62 / 60 / 61 / 64 ms (results/speed_llama.md, section 4).
FLASH_DECODE_TOKENS = 256
# Tokens per onnxruntime run of an encoder (Bridging's shared backbone, Internal's whole model): its activations
# ([series, heads, T, T] attention scores, [series x T, d_ff] FFN rows) leave the caches when a whole batch goes in
# one run. MiniLM Bridging (119 tokens a series, 56 series at batch 8, quiet machine): batch 8 cost 9.8x / 9.3x
# batch 1 in one run (1 / 2 threads), 7.7x / 7.5x in runs of 8 series. MiniLM Internal (22 tokens, 56 series,
# Intel Xeon, in step): onnx-int8 171 / 102 ms in one run (1 / 2 threads), 154 / 94 in two of 28; onnx-fp32 392 /
# 196 against 386 / 194 (results/speed_llama.md, section 18).
ONNX_RUN_TOKENS = 1024
# Injective's parallel samples in one llama.cpp KV cache (LlamaCppModel(kv_unified=True)) instead of a stream each:
# the prompt's cells are shared (a stream each holds and reads its own copy of them), but every sample's token
# attends over every sample's generated cells (masked). Shared wins while the samples' generated tokens are few
# beside the prompt. 20 samples after a 294-token prompt, AMD EPYC (Zen 5), raw llama.cpp tokens/s, streams ->
# shared, 1 thread (results/speed_llama/kv_shared.py, section 10 of results/speed_llama.md): the shipped numeric LM
# (q8_0) 2096 -> 4322 at 1580 generated tokens (5.4 prompts' worth), 1992 -> 2913 at 3220 (11), 1708 -> 1688 at 6600
# (22); a 12 x 768 GPT-2 (q8_0, weights from DRAM) 367 -> 490 at 2700 (9.2), 334 -> 356 at 5500 (19), 286 -> 241 at
# 10700 (36). 2 threads: the same order, shared ahead up to 22 prompts (3049 -> 3216), behind at 36 (488 -> 412).
# Shared while all samples' generated tokens are at most this many prompts' worth:
SHARED_KV_PROMPTS = 16

# the backend settings a plan carries (Choice.settings, Plan.settings), per backend
SETTINGS_KEYS = {"onnx": ("arena", "enable_mem_pattern", "disable_prepacking"),
                 "gguf": ("n_ctx", "n_seq_max", "n_batch", "kv_type", "use_mmap")}

# accuracy rank of a weight type (lower = more accurate); ties are broken by the export validation error
DTYPE_RANK = {"fp32": 0, "f32": 0, "f16": 1, "bf16": 1, "int8": 2, "q8_0": 2, "q4_0": 3, "q4_1": 3}
KV_BYTES = {"f32": 4, "f16": 2}

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
          "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_budget(value: str | int | float | None) -> int | None:
    """A memory budget in bytes: ``300MB`` (10^6), ``1.5GiB`` (2^30), ``512k``, ``1e9`` or an int; None stays None.

    Raises InputError on anything else (negative, zero, unknown unit, not a number).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(f"budget={value!r}: expected a size such as 300MB, 1.5GiB or a number of bytes.")
    if isinstance(value, (int, float)):
        n = float(value)
    else:
        s = str(value).strip()
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)", s)
        if not m or m.group(2).lower() not in _UNITS:
            raise InputError(f"budget={value!r}: expected a size such as 300MB, 1.5GiB, 512MiB or a number of "
                             f"bytes (units: {', '.join(u for u in _UNITS if u)}, case-insensitive).")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(n) or n < 1:
        raise InputError(f"budget={value!r}: expected a positive size (at least 1 byte), e.g. 300MB.")
    return int(n)


def format_bytes(n: int | float | None) -> str:
    """``123456789`` -> ``'117.7 MiB'``."""
    if n is None:
        return "unlimited"
    n = float(n)
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class Estimate:
    """Estimated peak resident bytes of one plan, by part; ``total`` is their sum."""

    weights: int
    activations: int
    kv_cache: int
    runtime_overhead: int
    total: int
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` picked.

    variant/backend/dtype: the variant; batch_size: windows per backend call (may be below the asked one);
    settings: backend options (onnx: arena, enable_mem_pattern, disable_prepacking; gguf: n_ctx, n_seq_max,
    n_batch, kv_type, use_mmap; see ``SETTINGS_KEYS``); estimate: its Estimate; budget: what it was checked
    against (None = none); tried: every candidate looked at, in order, as (variant, batch_size, mode, total bytes);
    mode: ``fast`` (the backends' defaults) or ``lean`` (the low-memory settings).
    """

    variant: str
    backend: str
    dtype: str
    batch_size: int
    settings: Mapping[str, Any]
    estimate: Estimate
    budget: int | None
    asked_batch_size: int
    tried: tuple[tuple[str, int, str, int], ...] = ()
    mode: str = "fast"


@dataclass(frozen=True)
class _Shape:
    tokens: int        # T: tokens per sequence in one forward call
    series: int        # S: sequences per call
    width: int         # d
    layers: int
    heads: int
    d_ff: int
    causal: bool
    io_bytes: int      # numpy-side buffers (inputs, patches, outputs)
    n_vocab: int = 0
    generation: bool = False
    extra_act: int = 0  # paradigm-specific extra live bytes (Bridging's reprogramming scores)
    context_len: int = 0  # Injective: the plan's L and H (the prompt that decides a shared KV cache)
    horizon: int = 0


def runtime_backends(manifest: Manifest, v: Variant) -> tuple[str, ...]:
    """The runtime libraries a plan of ``v`` loads: its backend, and onnxruntime for a Bridging adapter."""
    return ("onnx", v.backend) if manifest.paradigm == "bridging" and v.backend != "onnx" else (v.backend,)


def runtime_overhead(paradigm: str, backends: Iterable[str]) -> int:
    """Bytes a process forecasting with ``paradigm`` on ``backends`` holds besides the model (see the constants)."""
    base = PROCESS_BASE.get(paradigm, max(PROCESS_BASE.values())) + (PYARROW_IMPORT if _pyarrow_installed() else 0)
    return base + sum(RUNTIME_LIBRARY[b] for b in set(backends)) + PAGE_CACHE_HOT + OVERHEAD_MARGIN


@functools.lru_cache(maxsize=1)
def _pyarrow_installed() -> bool:
    """Whether pyarrow can be imported (then pandas imports it too: see PYARROW_IMPORT); found, not imported."""
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


# one runtime library, the Internal paradigm (the common case)
RUNTIME_OVERHEAD = {b: runtime_overhead("internal", (b,)) for b in RUNTIME_LIBRARY}


def _size(value: Any, what: str, low: int = 0) -> int:
    """A size or count read from a manifest as an int in [low, MAX_BYTES]; ManifestError otherwise."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
          and value == int(value) and low <= value <= MAX_BYTES)
    if not ok:
        raise ManifestError(f"{what} is {value!r}; expected a whole number from {low} to {MAX_BYTES} (a memory "
                            "estimate is never negative). Fix: re-export the bundle, or correct manifest.json.")
    return int(value)


def _first(*vals, default=None):
    for v in vals:
        if v is not None:
            return v
    return default


def _gguf_facts(manifest: Manifest, bundle_dir: str | Path | None) -> dict[str, Any]:
    """n_layer, n_head, n_embd, d_ff, n_vocab from the header of a GGUF in the bundle (no tensor data read)."""
    if bundle_dir is None:
        return {}
    for v in manifest.variants:
        if v.backend != "gguf":
            continue
        name = v.extra.get("lm_file") or next((f for f in v.files if f.endswith(".gguf")), None)
        if name is None:
            continue
        from alignts.runtime.gguf_check import check_gguf
        from alignts.runtime.manifest import bundle_file

        # the sealed way in (names, symlinks); hashing is left to plan(), which verifies the chosen files once.
        # The header is an optional fact source: a missing or refused file is left to plan() to report.
        try:
            path = bundle_file(bundle_dir, manifest, name, verify=False)
        except ArtifactError:
            continue
        info = check_gguf(path)
        d_ff = None
        for tname, (shape, _) in info.tensors.items():
            if tname.startswith("blk.0.ffn_up") and len(shape) == 2:
                d_ff = int(shape[0])
                break
        return {"n_layer": info.n_layer, "n_head": info.n_head, "n_embd": info.n_embd, "d_ff": d_ff,
                "n_vocab": info.n_vocab}
    return {}


def _shape(manifest: Manifest, batch_size: int, context_len: int | None, horizon: int | None,
           n_channels: int | None, bundle_dir: str | Path | None) -> _Shape:
    cfg = runtime_config(manifest)
    t = dict(manifest.training)
    paradigm = manifest.paradigm
    g: dict[str, Any] = {}
    if cfg.n_layers is None or cfg.n_vocab is None or cfg.n_heads_lm is None:
        g = _gguf_facts(manifest, bundle_dir)
    L = _size(_first(context_len, cfg.context_len), "config.context_len", 1)
    H = _size(_first(horizon, cfg.horizon), "config.horizon", 1)
    C = _size(_first(n_channels, cfg.n_channels, default=1), "config.n_channels", 1)
    bb = dict(manifest.backbone)
    n_layer = n_embd = None
    if isinstance(cfg, InjectiveRuntimeConfig):
        n_layer, n_embd = cfg.n_layer, cfg.n_embd
    if isinstance(cfg, BridgingRuntimeConfig):  # the frozen LM's width, not the adapter's
        width = cfg.d_llm
    else:
        width = _first(getattr(cfg, "d_model", None), n_embd, g.get("n_embd"), default=768)
    width = _size(width, "the model width (config.d_model / d_llm / n_embd)", 1)
    layers = _size(_first(cfg.n_layers, n_layer, bb.get("n_layers"), t.get("n_layers"),
                          g.get("n_layer"), (t.get("config") or {}).get("n_layer")
                          if isinstance(t.get("config"), Mapping) else None, default=12), "the layer count", 1)
    # unknown head count: one head per 32 channels over-counts the [S, h, T, T] scores for most LMs
    heads = _size(_first(cfg.n_heads_lm, g.get("n_head"), default=max(1, width // 32)), "the head count", 1)
    d_ff = _size(_first(cfg.d_ff_lm, g.get("d_ff"), default=4 * width), "config.d_ff_lm", 1)
    causal = manifest.architecture not in ("bert",)
    io = 0
    if isinstance(cfg, InjectiveRuntimeConfig):
        n_ctx = _size(cfg.n_ctx, "config.n_ctx", 1)
        samples = _size(cfg.samples, "config.samples", 1)
        # one series at a time, all samples in parallel (n_seq_max = samples) over the whole context
        return _Shape(tokens=n_ctx, series=samples, width=width, layers=layers, heads=heads, d_ff=d_ff,
                      causal=True, io_bytes=batch_size * C * (L * 8 * 3 + samples * H * 8 * 2),
                      n_vocab=_size(_first(g.get("n_vocab"), cfg.n_vocab, default=32), "the vocabulary size", 1),
                      generation=True, context_len=L, horizon=H)
    patch_len, n_patches = cfg.patch_len, cfg.n_patches
    S = batch_size * C
    tokens = n_patches
    extra = 0
    if isinstance(cfg, BridgingRuntimeConfig):
        tokens = n_patches + cfg.prompt_len
        extra = S * cfg.n_heads * n_patches * cfg.n_prototypes * 4 * 2
        extra += S * cfg.prompt_len * width * 4  # the prefix embeddings built in numpy
    io = S * (L * 8 * 3 + n_patches * patch_len * 8 * 2 + H * 8 * 3)
    vocab = _first(g.get("n_vocab"), cfg.n_vocab,
                   _backbone_vocab(manifest, bundle_dir) if paradigm == "bridging" else None, default=DEFAULT_N_VOCAB)
    return _Shape(tokens=tokens, series=S, width=width, layers=layers, heads=heads, d_ff=d_ff, causal=causal,
                  io_bytes=io, n_vocab=_size(vocab, "the vocabulary size", 1), extra_act=extra)


def _backbone_vocab(manifest: Manifest, bundle_dir: str | Path | None) -> int | None:
    """A Bridging backbone's vocabulary size as llama.cpp sees it (its GGUF's header: a stub for new backbone
    bundles), else the backbone manifest's, from the backbone at the adapter's path hint (if there)."""
    hint = dict(manifest.backbone).get("path")
    if bundle_dir is None or not isinstance(hint, str) or not (Path(bundle_dir) / hint / "manifest.json").is_file():
        return None
    from alignts.runtime.manifest import read_manifest

    folder = Path(bundle_dir) / hint
    bm = read_manifest(folder, verify=False)
    return _first(_gguf_facts(bm, folder).get("n_vocab"), BackboneRuntimeConfig.from_manifest(bm).vocab_size)


def _weight_parts(manifest: Manifest, v: Variant) -> list[tuple[int, str]]:
    """[(file bytes, backend that loads them)]: the variant's files; for Bridging, its adapter (onnxruntime) and
    the shared backbone (the variant's backend)."""
    files = sum(_size(manifest.files[f].size, f"files[{f!r}].size") for f in v.files if f in manifest.files)
    own = _size(v.weight_bytes, f"variant {v.name!r} weight_bytes") or files
    if manifest.paradigm != "bridging":
        return [(own, v.backend)]
    backbone = _size(dict(manifest.backbone).get("weight_bytes", 0), "backbone.weight_bytes")
    return [(own, "onnx"), (backbone, v.backend)]


def embedding_geometry(tokens: int, series: int, encoder: bool, flash: bool = False,
                       streams: bool = True) -> tuple[int, int]:
    """(n_seq_max, n_batch) of llama.cpp hidden states for ``series`` sequences of ``tokens`` each: the series
    per llama_decode and the tokens of one decode (n_ubatch = n_batch, every series whole in one decode).

    A BERT encoder takes about ``ENCODER_STREAMS_DECODE_TOKENS`` tokens a decode on alignts' llama.cpp, which attends
    per series (``streams``; the larger group, so plans and memory estimates use it), ``ENCODER_DECODE_TOKENS`` on a
    stock one (its mask makes attention quadratic in the group), ``FLASH_DECODE_TOKENS`` with flash attention
    (``flash``); a causal LM keeps a KV stream per sequence and takes as many series as fit ``LLAMA_N_BATCH`` tokens
    (its output buffer holds n_vocab logits per token of a decode). A series longer than that: alone.
    """
    tokens, series = max(1, int(tokens)), max(1, int(series))
    if encoder:
        group = FLASH_DECODE_TOKENS if flash else ENCODER_STREAMS_DECODE_TOKENS if streams else ENCODER_DECODE_TOKENS
        per = max(1, round(group / tokens))
    else:
        per = max(1, LLAMA_N_BATCH // tokens)
    per = min(per, series)
    return per, per * tokens


def onnx_run_series(series: int, tokens: int) -> int:
    """Series per onnxruntime run for ``series`` sequences of ``tokens``: at most ``ONNX_RUN_TOKENS`` tokens a run
    (at least one series), the runs as even as they can be (56 series of 22 tokens: two runs of 28, not 46 + 10)."""
    series, tokens = max(1, int(series)), max(1, int(tokens))
    runs = -(-series // max(1, ONNX_RUN_TOKENS // tokens))
    return -(-series // runs)


def shared_prompt_kv(samples: int, prompt_tokens: int, generated_tokens: int) -> bool:
    """Whether ``samples`` parallel generations of ``generated_tokens`` each after one ``prompt_tokens`` prompt
    run in one shared llama.cpp KV cache (``LlamaCppModel(kv_unified=True)``): see ``SHARED_KV_PROMPTS``."""
    return samples > 1 and samples * max(0, int(generated_tokens)) <= SHARED_KV_PROMPTS * max(1, int(prompt_tokens))


def shared_kv_cells(n_ctx: int, samples: int, generated_tokens: int) -> int:
    """The cells a shared (``kv_unified``) Injective KV cache needs: one window of ``n_ctx`` (the prompt and the
    first sample's tokens, which the sampler stops at the window's end) plus every other sample's generated tokens,
    at most ``generated_tokens`` each (the grammar's bound, :func:`alignts.runtime.sampler.max_new_tokens`); never
    more than a stream each (n_ctx x samples). The numeric LM's demo bundle at 20 samples: 1024 + 19 x 192 cells
    instead of 20 x 1024."""
    n_ctx, samples = int(n_ctx), max(1, int(samples))
    return min(n_ctx * samples, n_ctx + (samples - 1) * min(max(0, int(generated_tokens)), n_ctx))


def _generation_cells(manifest: Manifest, n_ctx: int, samples: int, sh: _Shape) -> int:
    """The KV cells an Injective plan on llama.cpp opens (``paradigms.injective``'s rule, from the manifest's codec):
    :func:`shared_kv_cells` when its samples share one cache, else n_ctx x samples (also when the codec cannot say)."""
    from alignts.runtime.codec_table import CodecSettings, table_from_dict
    from alignts.runtime.paradigms.injective import DigitPrompter

    try:
        settings = CodecSettings.from_dict(manifest.codec)
        cells = DigitPrompter(table_from_dict(manifest.codec["table"]), settings, int(n_ctx)).shared_cache_cells(
            samples, sh.context_len, sh.horizon, settings.max_digits)
    except (KeyError, TypeError, ValueError, AlignTSError):
        cells = None
    return int(n_ctx) * int(samples) if cells is None else cells


def decode_kv_type(weight_dtype: str) -> str:
    """The KV cache type of a llama.cpp LM that generates (Injective) when the variant names none: f16 where the
    weights are no finer (f16, bf16, q8_0, q4_0) and this llama.cpp's CPU kernels take an f16 cache's decode
    products in f32 (:func:`alignts.runtime.backends.gguf.f16_decode_kernels`), else f32. A decode step reads the
    whole cache: f16 halves those bytes and the cache's memory (12 x 768 GPT-2, q8_0, one sample after 294 tokens,
    1 thread: +20 % tokens/s). On the shipped numeric LM the next-token distributions move by a KL of 1e-5 (f16
    weights) and, with q8_0 weights, by as much as the q8_0 rounding itself moves them from the f16 model's
    (results/speed_llama.md section 12). f32 weights, and types this module does not rank, keep an f32 cache."""
    if DTYPE_RANK.get(str(weight_dtype).lower(), 0) < 1:
        return "f32"
    try:
        from alignts.runtime.backends.gguf import f16_decode_kernels

        return "f16" if f16_decode_kernels() else "f32"
    except (ImportError, AlignTSError, OSError):  # no llama.cpp here: the plan is only an estimate
        return "f32"


def gguf_use_mmap(mode: str) -> bool:
    """A plan's llama.cpp ``use_mmap``: the lean plans map the GGUF (its pages shared between processes and
    droppable under pressure); the fast ones read it where that gives huge pages, a decode step's weights streaming
    1.15-1.18x faster (:func:`alignts.runtime.backends.gguf.default_use_mmap`), else map it too."""
    if mode == "lean":
        return True
    try:
        from alignts.runtime.backends.gguf import default_use_mmap

        return default_use_mmap()
    except (ImportError, AlignTSError, OSError):  # no llama.cpp here: the plan is only an estimate
        return True


def _mode_settings(v: Variant, mode: str, sh: _Shape) -> dict[str, Any]:
    if v.backend == "onnx":
        lean = mode == "lean"
        return {"arena": not lean, "enable_mem_pattern": not lean, "disable_prepacking": lean}
    default_kv = decode_kv_type(v.dtype) if sh.generation else "f32"
    kv = "f16" if mode == "lean" else str(v.extra.get("kv_type", default_kv))
    if sh.generation:  # one llama.cpp sequence per sample, each holding ``tokens`` cells
        return {"n_ctx": sh.tokens, "n_seq_max": sh.series, "n_batch": max(1, min(LLAMA_N_BATCH, sh.tokens)),
                "kv_type": kv, "use_mmap": gguf_use_mmap(mode)}
    n_seq, n_batch = embedding_geometry(sh.tokens, sh.series, encoder=not sh.causal,
                                        flash=bool(v.extra.get("flash_attn")))
    return {"n_ctx": sh.tokens, "n_seq_max": n_seq, "n_batch": n_batch, "kv_type": kv,
            "use_mmap": gguf_use_mmap(mode)}


def estimate_peak(manifest: Manifest, variant: str | Variant, batch_size: int = 1, context_len: int | None = None,
                  horizon: int | None = None, n_channels: int | None = None, mode: str = "fast",
                  bundle_dir: str | Path | None = None, overhead: int | None = None) -> Estimate:
    """Estimated peak resident bytes of planning ``variant`` at ``batch_size`` and forecasting once.

    mode: ``fast`` (backend defaults) or ``lean`` (onnxruntime arena / memory pattern / pre-packing off;
    llama.cpp f16 KV cache). bundle_dir: lets the estimate read a GGUF header for depth/heads when the manifest
    lacks them. overhead: replaces :func:`runtime_overhead`. See the module docstring for the model.
    """
    if mode not in ("fast", "lean"):
        raise InputError(f"mode={mode!r}: expected 'fast' or 'lean'.")
    if int(batch_size) < 1:
        raise InputError(f"batch_size={batch_size}: expected >= 1.")
    v = manifest.variant(variant) if isinstance(variant, str) else variant
    sh = _shape(manifest, int(batch_size), context_len, horizon, n_channels, bundle_dir)
    parts = _weight_parts(manifest, v)
    wfile = sum(b for b, _ in parts)
    # a Bridging adapter's onnxruntime session: the plan's onnx settings (a llama.cpp plan leaves it fast)
    onnx_mode = mode if v.backend == "onnx" else "fast"
    weights = sum(int(b * (ONNX_WEIGHT_FACTOR[onnx_mode] if be == "onnx" else GGUF_WEIGHT_FACTOR)) for b, be in parts)
    adapter_act = int(sh.extra_act * ACT_FACTOR[onnx_mode])  # Bridging's reprogramming, in onnxruntime
    S, T, d = sh.series, sh.tokens, sh.width
    kv = 0
    if v.backend == "onnx":
        live = S * T * (6 * d + 2 * sh.d_ff + 2 * sh.heads * T) * 4
        if sh.generation:  # onnxruntime causal LM: past key/values are tensors too
            kv = 2 * sh.layers * S * T * d * 4 * 2  # present + past copies
        activations = int(live * ACT_FACTOR[mode]) + adapter_act + sh.io_bytes
        settings = _mode_settings(v, mode, sh)
    else:
        settings = _mode_settings(v, mode, sh)
        n_ctx_total = settings["n_ctx"] * settings["n_seq_max"]
        if sh.generation:
            n_ctx_total = _generation_cells(manifest, settings["n_ctx"], settings["n_seq_max"], sh)
        n_kv = int(math.ceil(n_ctx_total / 256) * 256)  # llama.cpp pads the cache to 256 cells
        if sh.causal:
            kv = 2 * sh.layers * n_kv * d * KV_BYTES[settings["kv_type"]]
        ub = settings["n_batch"]
        # compute graph reserved for n_batch tokens: hidden/MLP buffers and the [n_kv, ub, h] scores
        graph = ub * (6 * d + 2 * sh.d_ff + 2 * sh.heads * min(n_kv, max(ub, T))) * 4
        out_buf = ub * (d + sh.n_vocab) * 4  # exact: not scaled by the allocator factor
        live = graph + S * T * d * 4 * 2  # + numpy embeds in/out
        activations = int(live * GGUF_ACT_FACTOR) + out_buf + adapter_act + sh.io_bytes
    backends = runtime_backends(manifest, v)
    over = runtime_overhead(manifest.paradigm, backends) if overhead is None else int(overhead)
    total = weights + activations + kv + over
    detail = {"variant": v.name, "backend": v.backend, "dtype": v.dtype, "mode": mode, "batch_size": int(batch_size),
              "series_per_call": S, "tokens": T, "width": d, "layers": sh.layers, "heads": sh.heads, "d_ff": sh.d_ff,
              "weight_file_bytes": wfile, "runtimes": backends, "settings": settings}
    return Estimate(weights=weights, activations=activations, kv_cache=int(kv), runtime_overhead=over,
                    total=int(total), detail=detail)


EQUAL_ERROR = 1e-4  # validation errors at or below this (the ONNX fp32 tolerance) rank as equal


def _accuracy_key(i: int, v: Variant) -> tuple:
    val = dict(v.validation)
    err = _first(val.get("end_to_end_max_abs_diff"), val.get("max_abs_diff"), default=math.inf)
    try:
        err = float(err)
    except (TypeError, ValueError):
        err = math.inf
    if err <= EQUAL_ERROR:  # float32 rounding noise: keep the manifest's order (ONNX before llama.cpp)
        err = 0.0
    return (DTYPE_RANK.get(v.dtype, 9), err, i)


def _gate_key(i: int, v: Variant) -> tuple:
    """Gated bundles: within the gate by measured speed, then unjudged variants, then those over the gate."""
    acc = dict(v.accuracy)
    ms = acc.get("ms_per_series")
    if acc.get("passed") is True and isinstance(ms, (int, float)) and math.isfinite(ms):
        return (0, float(ms)) + _accuracy_key(i, v)
    return (2 if acc.get("passed") is False else 1, 0.0) + _accuracy_key(i, v)


def is_gated(manifest: Manifest) -> bool:
    """Whether the accuracy gate timed some variant (then :func:`rank_variants` orders by those timings)."""
    return any(v.accuracy.get("ms_per_series") is not None for v in manifest.variants)


def timed_elsewhere(manifest: Manifest) -> str | None:
    """The CPU a gated bundle's variants were timed on (``accuracy.cpu``) when it is not this one, else None:
    :func:`rank_variants` orders them by those timings, and another CPU may order them otherwise (on the Intel
    Xeon of results/speed_llama.md section 14 gguf-bf16 is slower than gguf-f32; on the EPYC of section 12 it is
    1.6x faster)."""
    from alignts.runtime.threads import cpu_label

    cpus = {v.accuracy.get("cpu") for v in manifest.variants if v.accuracy.get("ms_per_series") is not None}
    cpus.discard(None)
    here = cpu_label()
    return None if not cpus or cpus == {here} else " / ".join(sorted(cpus))


def rank_variants(manifest: Manifest, names: Iterable[str] | None = None,
                  backends: Iterable[str] | None = None) -> list[Variant]:
    """Variants in the order the planner tries them.

    A gated bundle (some variant has an ``accuracy`` record with a timing): the variants within the accuracy gate
    from the fastest (``accuracy.ms_per_series``, measured on the gate's windows in one run), then those without
    a record, then those over the gate. Otherwise, from the most accurate: fp32/f32 < f16 < int8/q8_0 < q4_0,
    then by export validation error."""
    vs = list(manifest.variants)
    if names is not None:
        names = list(names)
        vs = [manifest.variant(n) for n in names]
    if backends is not None:
        bs = set(backends)
        vs = [v for v in vs if v.backend in bs]
    order = {v.name: i for i, v in enumerate(manifest.variants)}
    key = _gate_key if is_gated(manifest) else _accuracy_key
    return sorted(vs, key=lambda v: key(order[v.name], v))


def available_backends() -> tuple[str, ...]:
    """Backends whose library is importable here (checked without importing them)."""
    import importlib.util

    out = []
    if importlib.util.find_spec("onnxruntime") is not None:
        out.append("onnx")
    if importlib.util.find_spec("llama_cpp") is not None:
        out.append("gguf")
    return tuple(out)


def _batches(batch_size: int, shrink: bool) -> list[int]:
    out = [int(batch_size)]
    while shrink and out[-1] > 1:
        out.append(max(1, out[-1] // 2))
    return out


def choose(manifest: Manifest, budget_bytes: int | None, batch_size: int = 1, context_len: int | None = None,
           horizon: int | None = None, n_channels: int | None = None, variants: Iterable[str] | None = None,
           backends: Iterable[str] | None = None, shrink_batch: bool = True, lean_settings: bool = True,
           bundle_dir: str | Path | None = None) -> Choice:
    """The first variant of :func:`rank_variants` (the fastest within the accuracy gate; in bundles written before
    the gate, the most accurate), then the largest batch size, whose estimated peak fits ``budget_bytes``.

    Order: for each batch size (the asked one, then halved down to 1 when ``shrink_batch``), each variant from
    :func:`rank_variants` (only ``variants`` when given; only ``backends``, default the importable ones), first
    with the fast settings and then, when ``lean_settings``, with the lean ones. No budget: the first candidate.
    Raises BudgetExceededError (``min_budget_bytes`` = the smallest estimate of any candidate) before anything
    is loaded when nothing fits.
    """
    bs = tuple(backends) if backends is not None else available_backends()
    ranked = rank_variants(manifest, variants, bs)
    if not ranked:
        have = ", ".join(f"{v.name} ({v.backend})" for v in manifest.variants) or "none"
        raise InputError(f"no variant to choose from: the bundle has {have}; usable backends here: "
                         f"{', '.join(bs) or 'none'}. Fix: install the backend "
                         "(pip install 'alignts[cpu]' or 'alignts[gguf]') or pick another variant.")
    modes = ("fast", "lean") if lean_settings else ("fast",)
    tried: list[tuple[str, int, str, int]] = []
    best: tuple[int, Estimate, Variant, int, str] | None = None
    for b in _batches(batch_size, shrink_batch):
        for v in ranked:
            for mode in modes:
                if mode == "lean" and v.backend == "gguf" and not _kv_matters(manifest):
                    continue
                est = estimate_peak(manifest, v, b, context_len, horizon, n_channels, mode, bundle_dir)
                tried.append((v.name, b, mode, est.total))
                if best is None or est.total < best[0]:
                    best = (est.total, est, v, b, mode)
                if budget_bytes is None or est.total <= budget_bytes:
                    return Choice(variant=v.name, backend=v.backend, dtype=v.dtype, batch_size=b,
                                  settings=dict(est.detail["settings"]), estimate=est, budget=budget_bytes,
                                  asked_batch_size=int(batch_size), tried=tuple(tried), mode=mode)
    assert best is not None
    least, est, v, b, mode = best
    parts = (f"weights {format_bytes(est.weights)} + activations {format_bytes(est.activations)} + KV cache "
             f"{format_bytes(est.kv_cache)} + runtime {format_bytes(est.runtime_overhead)}")
    need_mb = int(math.ceil(least / 1e6))
    raise BudgetExceededError(
        f"no variant of this {manifest.paradigm} bundle fits a budget of {format_bytes(budget_bytes)} "
        f"({budget_bytes} bytes) at batch size {batch_size} or smaller; the smallest plan is {v.name} at batch "
        f"size {b} ({mode} settings) needing about {format_bytes(least)} ({parts}). Fix: raise the budget to at "
        f"least {least} bytes (--budget {need_mb}MB), or add a smaller variant (`alignts quantize BUNDLE`).",
        least)


def _kv_matters(manifest: Manifest) -> bool:
    return manifest.architecture != "bert"


def describe_plan(choice: Choice, estimate: Estimate | None = None, settings: Mapping[str, Any] | None = None,
                  mode: str | None = None) -> str:
    """Human-readable memory plan (``alignts inspect BUNDLE --budget X``, ``alignts forecast --budget X``).

    settings, mode: what the backends were really opened with (``Plan.settings``, ``Plan.memory_mode``) when
    they differ from the planner's choice.
    """
    e = estimate or choice.estimate
    settings = choice.settings if settings is None else settings
    mode = choice.mode if mode is None else mode
    lines = [f"memory plan: {choice.variant} ({choice.backend}, {choice.dtype}), batch size {choice.batch_size}"
             + (f" (asked {choice.asked_batch_size})" if choice.batch_size != choice.asked_batch_size else ""),
             f"  budget            {format_bytes(choice.budget)}",
             f"  estimated peak    {format_bytes(e.total)}",
             f"    weights         {format_bytes(e.weights)}  "
             f"(files {format_bytes(e.detail.get('weight_file_bytes'))})",
             f"    activations     {format_bytes(e.activations)}  ({e.detail.get('series_per_call')} series x "
             f"{e.detail.get('tokens')} tokens x width {e.detail.get('width')}, {e.detail.get('layers')} layers)",
             f"    KV cache        {format_bytes(e.kv_cache)}",
             f"    runtime         {format_bytes(e.runtime_overhead)}  (Python + pandas + numpy + numba + "
             f"{' + '.join(e.detail.get('runtimes', (choice.backend,)))})",
             f"  settings ({mode})".ljust(20) + ", ".join(f"{k}={v}" for k, v in settings.items())]
    if choice.budget is not None:
        lines.append(f"  headroom          {format_bytes(choice.budget - e.total)}")
    skipped = [t for t in choice.tried[:-1]]
    if skipped:
        lines.append("  did not fit: " + "; ".join(f"{n} b={b} {m} {format_bytes(t)}" for n, b, m, t in skipped[:8])
                     + (" ..." if len(skipped) > 8 else ""))
    return "\n".join(lines)
