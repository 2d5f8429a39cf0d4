"""llama.cpp backend: run GGUF models through llama-cpp-python's low-level ctypes API (torch-free).

Two uses:
- ``hidden_states(embeds)``: input embeddings in, final hidden states out (Internal and Bridging on GGUF).
- ``prefill`` / ``step``: n parallel sequences sharing one prompt, logits out (Injective sampling loop).

Every file goes through :func:`alignts.runtime.gguf_check.check_gguf` (adapters through
``check_lora_adapter``) before llama.cpp is handed it: llama.cpp aborts on some malformed files, and
llama-cpp-python does not raise when an adapter fails to load.

Thread safety: a llama.cpp context (its KV cache, batch and output buffers) serves one call at a time, and so
do this class's numpy batch buffers. Every method that touches them holds the model's ``lock`` (re-entrant), so
one model may be called from many threads: the calls run one after another, each with ``n_threads`` cores.
A caller whose work spans several calls (``prefill`` then ``step``...) holds ``lock`` around all of them.

llama.cpp's own log is silenced by default and routed to ``logging`` at DEBUG (logger
``alignts.runtime.backends.gguf.llama_cpp``); its last lines are quoted in errors.

Threads: llama.cpp's workers meet at a spinning barrier after every graph node, so a thread more than the idle
cores spins for one the kernel descheduled (:mod:`alignts.runtime.threads`). With ``adapt_threads`` (the default
when ``n_threads`` is not given) each call uses at most the cores idle at its start, and at least one. The workers
live in one ggml threadpool per model with polling level 0: between calls they sleep on a condition variable
instead of spinning (llama.cpp's default pools poll at level 50).

Accuracy defaults: f32 KV cache and flash attention off. Measured on a tiny LLaMA (hidden states, max abs diff vs
transformers): f32 KV 7e-7, f16 KV 2e-4, flash attention (either KV type) 3e-4. An Injective plan keeps its
decode's cache in f16 beside weights no finer than that where alignts' f16 decode kernels are built in
(:func:`f16_decode_kernels`, :func:`alignts.runtime.budget.decode_kv_type`; generation logits vs torch 1.6e-4 on
the tiny GPT-2 with f32 weights). GPT-2 and BERT sit at ~5e-4
whatever the setting: ggml's GELU is the tanh form read from an f16 table (BERT was trained with the erf
GELU: 8.5e-3 on the real all-MiniLM-L6-v2).
"""

from __future__ import annotations

import collections
import ctypes
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alignts.errors import ArtifactError, BackendUnavailableError, InputError, ShapeError, missing_extra
from alignts.runtime.backends.gguf_native import (BAD_SEQ, BAD_TOKEN, CONTEXT_FULL, NativeStep, native_functions,
                                                  raw_decode_loop, stage_step)
from alignts.runtime.budget import embedding_geometry
from alignts.runtime.gguf_check import GGUFInfo, check_context, check_gguf, check_lora_adapter

logger = logging.getLogger(__name__)
_llama_log = logging.getLogger(__name__ + ".llama_cpp")

KV_TYPES = ("f32", "f16")  # KV cache types offered; their ggml_type numbers are gguf.GGMLQuantizationType's
_FLASH_ATTN = {None: -1, False: 0, True: 1}

_lock = threading.Lock()
_state: dict[str, Any] = {"lib": None, "log_cb": None}
_recent_log: collections.deque[str] = collections.deque(maxlen=20)
# Loaded llama_models shared by the contexts of one process (a server's workers, forecasters of one bundle):
# {key: [llama_model pointer, users]}, the key being the file (path, size, mtime) and the load parameters.
# Read into memory (huge pages), each context would otherwise hold its own copy of the weights; llama.cpp's
# contexts only read a model. Under _lock.
_models: dict[tuple, list] = {}
# an empty NULL-terminated device list: a model loaded with it offloads to none of a GPU build's devices
_NO_DEVICES = (ctypes.c_void_p * 1)()


def _lib():
    """Import llama_cpp once, initialise the backend and install the silent log callback."""
    with _lock:
        if _state["lib"] is not None:
            return _state["lib"]
        try:
            import llama_cpp.llama_cpp as L
        except ImportError as e:
            if e.name in (None, "llama_cpp", "llama_cpp.llama_cpp"):
                raise missing_extra("llama-cpp-python", "gguf") from e
            # llama-cpp-python is there but one of its own dependencies is not (e.g. installed with --no-deps)
            raise BackendUnavailableError(
                f"llama-cpp-python is installed but cannot be imported: its dependency {e.name!r} is missing "
                f"({e}). Fix: pip install {e.name} (or pip install 'alignts[gguf]').") from e

        @L.llama_log_callback
        def _cb(level: int, text: bytes, user_data) -> None:  # noqa: ARG001
            msg = text.decode("utf-8", errors="replace").rstrip("\n")
            if msg:
                _recent_log.append(msg)
                _llama_log.debug("%s", msg)

        _state["log_cb"] = _cb  # keep the callback alive as long as the library
        L.llama_log_set(_cb, ctypes.c_void_p(0))
        L.llama_backend_init()
        _state["lib"] = L
        return L


def numpy_batch(L, cap: int):
    """A ``llama_batch`` of ``cap`` entries whose arrays numpy owns (no llama_batch_init/free; filled by vectorized
    writes): (tok, pos, n_seq_id, seq_id, logits flags, seq_id pointers, batch). One sequence id per entry; the
    caller points ``batch.token`` or ``batch.embd`` at its input."""
    tok = np.zeros(cap, dtype=np.int32)
    pos = np.zeros(cap, dtype=np.int32)
    nseq = np.ones(cap, dtype=np.int32)
    seq = np.zeros(cap, dtype=np.int32)
    out = np.zeros(cap, dtype=np.int8)
    i32p = ctypes.POINTER(ctypes.c_int32)
    seq_ptrs = (i32p * cap)(*[ctypes.cast(seq.ctypes.data + 4 * i, i32p) for i in range(cap)])
    b = L.llama_batch()
    b.pos = pos.ctypes.data_as(i32p)
    b.n_seq_id = nseq.ctypes.data_as(i32p)
    b.seq_id = seq_ptrs
    b.logits = out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
    return tok, pos, nseq, seq, out, seq_ptrs, b


def _last_log() -> str:
    lines = [ln for ln in _recent_log if ln.strip()][-4:]
    return (" llama.cpp said: " + " | ".join(lines)) if lines else ""


def decode_error(rc: int, what: str) -> BackendUnavailableError:
    """The error for llama_decode's non-zero return ``rc`` on ``what`` (e.g. "12 tokens")."""
    hint = ("the KV cache is full: raise n_ctx" if rc == 1 else "see the llama.cpp log (logger "
            f"{_llama_log.name}, DEBUG)")
    return BackendUnavailableError(f"llama_decode failed with code {rc} on {what}; {hint}.{_last_log()}")


def _set_mmap(L, mp, on: bool) -> None:
    """Map the GGUF file or read it: ``load_mode`` in newer llama.cpp, ``use_mmap`` in older."""
    if hasattr(mp, "load_mode"):
        mp.load_mode = L.LLAMA_LOAD_MODE_MMAP if on else L.LLAMA_LOAD_MODE_NONE
    else:
        mp.use_mmap = on


def _mmap_on(L, mp) -> bool:
    if hasattr(mp, "load_mode"):  # AUTO maps the file on CPU (measured: the file shows in /proc/self/maps)
        return int(mp.load_mode) in (getattr(L, "LLAMA_LOAD_MODE_AUTO", -1), L.LLAMA_LOAD_MODE_MMAP,
                                     getattr(L, "LLAMA_LOAD_MODE_MMAP_MLOCK", 3))
    return bool(mp.use_mmap)


def _locked(method):
    """Run ``method`` holding the model's lock (see the module docstring: one call at a time per context)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


def _default_threads() -> int:
    from alignts.runtime.threads import physical_cores

    return physical_cores()


class _TPParams(ctypes.Structure):
    """ggml.h's ``struct ggml_threadpool_params`` (GGML_MAX_N_THREADS = 512)."""

    _fields_ = [("cpumask", ctypes.c_bool * 512), ("n_threads", ctypes.c_int), ("prio", ctypes.c_int),
                ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool), ("paused", ctypes.c_bool)]


def _threadpool_api(L):
    """(new, free, attach, params_init) from the loaded libraries, or None where this build lacks one.

    ggml_threadpool_new lives in the CPU backend, which a GGML_BACKEND_DL build loads at run time: it is found
    through the backend registry (ggml_backend_reg_get_proc_address), as llama.cpp's own tools do."""
    with _lock:
        if "tp_api" in _state:
            return _state["tp_api"]
        api = None
        try:
            # through libllama's handle: dlsym searches its dependencies, the libggml whose backend registry
            # llama.cpp filled (llama_cpp._ggml opens a second copy of libggml, with an empty registry)
            g = lib = L._lib
            vp = ctypes.c_void_p
            g.ggml_backend_dev_by_type.restype, g.ggml_backend_dev_by_type.argtypes = vp, [ctypes.c_int]
            g.ggml_backend_dev_backend_reg.restype, g.ggml_backend_dev_backend_reg.argtypes = vp, [vp]
            g.ggml_backend_reg_get_proc_address.restype = vp
            g.ggml_backend_reg_get_proc_address.argtypes = [vp, ctypes.c_char_p]
            g.ggml_threadpool_params_init.restype = None
            g.ggml_threadpool_params_init.argtypes = [ctypes.POINTER(_TPParams), ctypes.c_int]
            dev = g.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
            reg = g.ggml_backend_dev_backend_reg(dev) if dev else None
            new = g.ggml_backend_reg_get_proc_address(reg, b"ggml_threadpool_new") if reg else None
            free = g.ggml_backend_reg_get_proc_address(reg, b"ggml_threadpool_free") if reg else None
            if new and free:
                lib.llama_attach_threadpool.restype, lib.llama_attach_threadpool.argtypes = None, [vp, vp, vp]
                api = (ctypes.CFUNCTYPE(vp, ctypes.POINTER(_TPParams))(new), ctypes.CFUNCTYPE(None, vp)(free),
                       lib.llama_attach_threadpool, g.ggml_threadpool_params_init)
        except (ImportError, AttributeError, OSError) as e:  # an older or stripped build: llama.cpp's own pools
            logger.debug("no ggml threadpool API (%s); llama.cpp makes its pools per call", e)
        _state["tp_api"] = api
        return api


def attach_threadpool(L, ctx, n: int):
    """Attach one ggml threadpool of ``n`` workers at polling level 0 (asleep between calls) to the llama.cpp
    context ``ctx``; returns it (free it with :func:`free_threadpool` after the context), or None where the API is
    missing (llama.cpp then makes a pool per graph)."""
    api = _threadpool_api(L)
    if api is None:
        return None
    new, _, attach, init = api
    p = _TPParams()
    init(ctypes.byref(p), int(n))
    p.poll = 0
    tp = new(ctypes.byref(p))
    if tp:
        attach(ctx, tp, tp)
    return tp or None


def free_threadpool(L, tp) -> None:
    if tp:
        _threadpool_api(L)[1](tp)


def amx_unsafe() -> bool:
    """Whether this llama.cpp would run ggml's AMX kernels: a build without scripts/patch_llama.py change 8 (patch
    level < 8, e.g. a stock llama-cpp-python) on an x86-64 CPU with AMX-INT8. Those kernels raised SIGILL when gcc
    12 built them and gave q8_0 products 2.0-2.5 off torch on small widths (results/speed_llama.md section 13)."""
    import platform

    from alignts.runtime.threads import cpu_model_and_flags

    if platform.machine().lower() not in ("x86_64", "amd64") or llama_patch_level() >= 8:
        return False
    return "amx_int8" in (cpu_model_and_flags()[1] or ())


def f16_decode_kernels() -> bool:
    """Whether this llama.cpp's CPU kernels take an f16 KV cache's decode products as f32 dot products
    (scripts/patch_llama.py change 7, native/ggml/alignts_sgemm_f32.h ``dot_rows_f16``: x86-64 with F16C). Without
    them ggml rounds each query to f16 and takes one dot product an output: the shipped numeric LM's one-sample step
    ~2x slower than with an f32 cache (results/speed_llama.md section 12)."""
    import platform

    return platform.machine().lower() in ("x86_64", "amd64") and llama_patch_level() >= 7


def llama_patch_level() -> int:
    """How many of scripts/patch_llama.py's changes the installed llama.cpp carries: its libllama's
    ``alignts_llama_patch_level()``, 0 for a stock build (no such symbol). 4 and up: an encoder attends per series."""
    if _state.get("patch_level") is None:
        fn = getattr(_lib()._lib, "alignts_llama_patch_level", None)
        if fn is not None:
            fn.restype, fn.argtypes = ctypes.c_int, []
        _state["patch_level"] = int(fn()) if fn is not None else 0
    return _state["patch_level"]


THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages() -> bool:
    """Whether a GGUF that llama.cpp reads into memory (``use_mmap=False``) lands in transparent huge pages: this
    build's ggml asks for them (scripts/patch_llama.py change 21), Linux's THP mode is ``always`` or ``madvise``
    (``/sys/kernel/mm/transparent_hugepage/enabled``) and ALIGNTS_HUGE_PAGES is not ``0``. A decode step streams
    every weight once: a 12 x 768 GPT-2 at q8_0 steps 1.15x (1 thread) / 1.18x (2) faster read into huge pages
    than mapped, and 0.94-0.96x read into 4 KB pages (results/speed_llama.md section 28), so without huge pages
    the file stays mapped."""
    if os.environ.get("ALIGNTS_HUGE_PAGES") == "0" or llama_patch_level() < 21:
        return False
    try:
        mode = THP_ENABLED.read_text()
    except OSError:  # not Linux, or no THP in this kernel
        return False
    return "[never]" not in mode and "[" in mode


def default_use_mmap() -> bool:
    """A GGUF mapped (True) or read into memory (False) when the caller does not say: read where that gives huge
    pages (:func:`huge_pages`), else mapped (llama.cpp's own default on a CPU; with every layer on a GPU the host
    keeps no copy either way). Mapped pages are shared by the processes that map the same file and can be dropped
    under memory pressure; read ones are this process's own, which the lean memory plans avoid
    (:func:`alignts.runtime.budget.gguf_use_mmap`)."""
    return not huge_pages()


def encoder_outputs_marked() -> bool:
    """Whether the installed llama.cpp computes a BERT's token embeddings only for the tokens a batch flags as
    outputs (scripts/patch_llama.py change 19: its last layer's FFN then skips the others); else every row."""
    return llama_patch_level() >= 19


def _native_functions():
    """(decode, get_logits) for compiled loops (:mod:`alignts.runtime.backends.gguf_native`), None for a stock
    llama.cpp (no ``alignts_llama_decode``, scripts/patch_llama.py change 9). Looked up once."""
    if "native" not in _state:
        _state["native"] = native_functions(_lib()._lib)
    return _state["native"]


def _model_key(path: Path, mp, device: str) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, device, int(mp.n_gpu_layers),
            int(getattr(mp, "load_mode", -1)), bool(getattr(mp, "use_mmap", False)),
            bool(getattr(mp, "use_extra_bufts", True)))


def _acquire_model(L, path: Path, mp, device: str) -> tuple:
    """(the llama_model of ``path`` loaded with ``mp``, its key): the one another open of the same file and
    parameters already holds, or a new one. Every acquire is paired with a :func:`_release_model` of the key."""
    key = _model_key(path, mp, device)
    with _lock:
        held = _models.get(key)
        if held is not None:
            held[1] += 1
            return held[0], key
        model = L.llama_model_load_from_file(str(path).encode(), mp)  # under the lock: one load of a file at a time
        if not model:
            raise ArtifactError(f"llama.cpp could not load {path} (it passed alignts' checks); expected a GGUF "
                                f"model of a supported architecture.{_last_log()}")
        _models[key] = [model, 1]
        return model, key


def _release_model(L, key: tuple) -> None:
    """One user fewer of the model acquired under ``key``; the last one frees it."""
    with _lock:
        held = _models[key]
        held[1] -= 1
        if held[1] == 0:
            del _models[key]
            L.llama_model_free(held[0])


def shared_models() -> int:
    """How many llama_models this process holds (each shared by one or more LlamaCppModel)."""
    with _lock:
        return len(_models)


class LlamaCppModel:
    """A GGUF model loaded in llama.cpp (CPU, or CUDA with every layer offloaded).

    Args:
        path: the .gguf file (checked with check_gguf first; ArtifactError if bad).
        n_ctx: context length per sequence (tokens); the KV cache holds n_ctx * n_seq_max cells.
        n_batch: most tokens per llama_decode call (also the physical batch size).
        n_seq_max: most parallel sequences (Injective's n_parallel; hidden_states batch width).
        embeddings: start the context with embeddings output on (hidden_states turns it on anyway).
        kv_type: "f32" (default, accurate) or "f16".
        n_threads: CPU threads (None = the physical cores this process may use).
        adapt_threads: use at most the cores idle at the start of each call (see the module docstring); None =
            on when n_threads is None, so an explicit n_threads is used as given.
        n_gpu_layers: layers to offload (device="cuda" forces all).
        loras: [(adapter_path, scale)], each validated with check_lora_adapter.
        device: "cpu" or "cuda" (no silent CPU fallback: BackendUnavailableError if offload is impossible).
        flash_attn: False (default, accurate), True, or None = llama.cpp's choice (on for CPU; ~3e-4 less accurate;
            a BERT encoder casts K/V to f16 under it, ~1e-2 on MiniLM's hidden states). With it on, an encoder's
            hidden_states put more series in one decode (``budget.FLASH_DECODE_TOKENS``).
        expect_arch: raise ArtifactError unless the file's architecture is this.
        use_mmap: map the file (True), read it into memory (False), or None = :func:`default_use_mmap` (read
            where ggml gives it huge pages, else mapped).
        kv_unified: one KV cache for all sequences (llama.cpp's kv_unified) instead of one stream each. With it,
            :meth:`prefill`'s prompt cells are shared by every sample (no copies) and a step reads them once for
            all samples, but each token attends over every sample's cells (masked): a win while the samples'
            generated tokens stay few beside the prompt (:func:`alignts.runtime.budget.shared_prompt_kv`
            decides for Injective). Ignored for an encoder or a single sequence; hidden states of several series
            leave it off (each series then attends within its own stream, not over all of them masked).
        kv_cells: with kv_unified, the shared cache's cells (None = n_ctx * n_seq_max; n_ctx..n_ctx * n_seq_max):
            Injective asks for one window plus every other sample's most generated tokens
            (:func:`alignts.runtime.budget.shared_kv_cells`). A step past them fails (llama_decode: cache full).

    n_ctx, n_seq_max, n_batch, kv_type and use_mmap are the keys of a memory plan's ``settings``
    (:func:`alignts.runtime.budget.choose`).

    Attributes: info (GGUFInfo), arch, n_embd, n_vocab, n_ctx, n_seq_max, eos_id; settings (what was applied);
    model_params, context_params (the llama.cpp structs the model and context were created with); lock (an
    RLock every call holds; hold it across prefill + steps so that no other thread's call comes between).
    """

    def __init__(self, path: str | os.PathLike, *, n_ctx: int = 512, n_batch: int = 512, n_seq_max: int = 1,
                 embeddings: bool = False, kv_type: str = "f32", n_threads: int | None = None,
                 n_gpu_layers: int = 0, loras: Sequence[tuple[str | os.PathLike, float]] = (),
                 device: str = "cpu", flash_attn: bool | None = False, expect_arch: str | None = None,
                 use_mmap: bool | None = None, adapt_threads: bool | None = None, kv_unified: bool = False,
                 kv_cells: int | None = None):
        self.lock = threading.RLock()
        self._model = None
        self._ctx = None
        self._threadpool = None
        self._adapters: list[Any] = []
        self.path = Path(path)
        self.info: GGUFInfo = check_gguf(self.path, expect_arch=expect_arch)
        if self.info.general_type == "adapter":
            raise ArtifactError(f"{self.path} is a LoRA adapter, not a model; pass the base model as path and "
                                "the adapter in loras=[(adapter_path, scale)].")
        lora_infos = [(check_lora_adapter(p, self.path, base_info=self.info), float(s)) for p, s in loras]
        if kv_type not in KV_TYPES:
            raise InputError(f"kv_type {kv_type!r} is not supported; expected one of {KV_TYPES}.")
        if device not in ("cpu", "cuda"):
            raise InputError(f"device {device!r} is not supported; expected 'cpu' or 'cuda'.")
        if n_ctx < 1 or n_batch < 1 or n_seq_max < 1:
            raise InputError(f"n_ctx, n_batch, n_seq_max must be >= 1, got {n_ctx}, {n_batch}, {n_seq_max}.")
        if kv_cells is not None and not n_ctx <= int(kv_cells) <= n_ctx * n_seq_max:
            raise InputError(f"kv_cells={kv_cells}: expected {n_ctx}..{n_ctx * n_seq_max} (n_ctx .. n_ctx x "
                             "n_seq_max).")
        check_context(self.info, int(n_ctx), int(n_seq_max), kv_type)  # the model's context_length, the RAM
        if self.info.arch in ("gpt2", "bert") and 0 < self.info.n_ctx_train < n_ctx:
            # learned position embeddings: a position past the table aborts the process inside ggml
            raise InputError(f"n_ctx={n_ctx} exceeds the {self.info.n_ctx_train} position embeddings of "
                             f"{self.path}; pass n_ctx <= {self.info.n_ctx_train}.")

        L = _lib()
        self._L = L
        if device == "cuda":
            if not L.llama_supports_gpu_offload():
                raise BackendUnavailableError(
                    "device='cuda' was asked, but this llama-cpp-python build cannot offload to a GPU; expected "
                    "a CUDA build. Fix: install a CUDA build of llama-cpp-python (CMAKE_ARGS='-DGGML_CUDA=on'), "
                    "or use device='cpu'.")
            n_gpu_layers = -1
        self.device = device
        self.arch = self.info.arch
        self.n_seq_max = int(n_seq_max)
        self.n_ctx = int(n_ctx)
        self.n_batch = int(n_batch)
        self.kv_type = kv_type
        self.flash_attn = flash_attn

        mp = L.llama_model_default_params()
        mp.n_gpu_layers = int(n_gpu_layers)
        if device == "cpu":
            # No devices for llama.cpp to offload to. In a CUDA build it otherwise keeps the weights in the GPU's
            # pinned host buffers (ahead of the CPU's repacked panels, change 16) and runs a large batch's
            # products on the GPU (op_offload): a device="cpu" forecast on the GPU. A CPU-only build has no such
            # device: nothing changes there.
            mp.devices = ctypes.addressof(_NO_DEVICES)
        if hasattr(mp, "use_extra_bufts") and amx_unsafe():  # keep weights off ggml's AMX path (and its repacks)
            mp.use_extra_bufts = False
            if not _state.get("amx_warned"):
                _state["amx_warned"] = True
                logger.warning("this llama.cpp is not alignts' build and this CPU has AMX: ggml's AMX kernels "
                               "(SIGILL under gcc 12, wrong q8_0 products) are kept out by turning extra buffer "
                               "types off, which also skips ggml's q4_0 repacking. Fix: install alignts' "
                               "llama-cpp-python build (bash scripts/setup).")
        _set_mmap(L, mp, default_use_mmap() if use_mmap is None else bool(use_mmap))
        self.model_params = mp
        self._model, self._model_key = _acquire_model(L, self.path, mp, device)

        self._is_encoder = self.arch == "bert"  # no KV cache: llama_decode runs the encoder
        import gguf  # numpy-only core dependency: its enums give the ggml numbers

        self.kv_unified = bool(kv_unified) and not self._is_encoder and self.n_seq_max > 1
        cp = L.llama_context_default_params()
        cp.n_ctx = int(kv_cells) if self.kv_unified and kv_cells is not None else self.n_ctx * self.n_seq_max
        cp.n_batch = self.n_batch
        cp.n_ubatch = self.n_batch  # encoders need the whole batch in one ubatch
        cp.n_seq_max = self.n_seq_max
        cp.n_outputs_max_per_seq = 0
        nt = int(n_threads or _default_threads())
        self.n_threads = nt  # the most threads a call uses
        self.adapt_threads = n_threads is None if adapt_threads is None else bool(adapt_threads)
        self.threads_used = nt  # the threads of the last call
        cp.n_threads = nt
        cp.n_threads_batch = nt
        cp.pooling_type = int(gguf.PoolingType.NONE)
        cp.flash_attn_type = _FLASH_ATTN[flash_attn]
        cp.type_k = cp.type_v = int(gguf.GGMLQuantizationType[kv_type.upper()])
        cp.embeddings = bool(embeddings or self._is_encoder)
        cp.no_perf = True
        cp.kv_unified = self.kv_unified
        self.context_params = cp
        self.settings = {"n_ctx": self.n_ctx, "n_seq_max": self.n_seq_max, "n_batch": self.n_batch,
                         "kv_type": kv_type, "use_mmap": _mmap_on(L, mp), "flash_attn": flash_attn,
                         "kv_unified": self.kv_unified, "kv_cells": int(cp.n_ctx)}
        ctx = L.llama_init_from_model(self._model, cp)
        if not ctx:
            self.close()
            raise BackendUnavailableError(f"llama.cpp could not create a context for {self.path} (n_ctx="
                                          f"{cp.n_ctx}, n_batch={n_batch}, n_seq_max={n_seq_max}); expected "
                                          f"enough memory. Fix: lower n_ctx/n_batch/n_seq_max.{_last_log()}")
        self._ctx = ctx
        self._embeddings_on = bool(cp.embeddings)
        self._mem = L.llama_get_memory(ctx)
        if device == "cpu" and nt > 1:
            self._attach_threadpool(nt)

        self._vocab = L.llama_model_get_vocab(self._model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self.n_embd = int(L.llama_model_n_embd(self._model))
        self.eos_id = int(L.llama_vocab_eos(self._vocab))

        if lora_infos:
            self._set_loras(lora_infos)

        # One batch, owned by numpy (no llama_batch_init/free): filled by vectorized writes.
        cap = max(self.n_batch, self.n_seq_max)
        self._cap = cap
        self._embd = np.zeros((cap, self.n_embd), dtype=np.float32)
        self._tok, self._pos, self._nseq, self._seq, self._out, self._seq_ptrs, self._batch = numpy_batch(L, cap)
        self._tok_ptr = self._tok.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self._embd_ptr = self._embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self._seq_pos = np.zeros(self.n_seq_max, dtype=np.int32)  # next position per sequence
        self._logits_views: dict[tuple[int, int], np.ndarray] = {}
        self._embd_views: dict[tuple[int, int], np.ndarray] = {}
        self._n_live = 0
        logger.debug("loaded %s (%s, n_embd=%d, n_vocab=%d, device=%s, kv=%s)", self.path, self.arch,
                     self.n_embd, self.n_vocab, device, kv_type)

    # ---------------------------------------------------------------------------------------------- lifecycle

    def _set_loras(self, lora_infos: list[tuple[GGUFInfo, float]]) -> None:
        L = self._L
        for info, _ in lora_infos:
            ad = L.llama_adapter_lora_init(self._model, str(info.path).encode())
            if not ad:
                self.close()
                raise ArtifactError(f"llama.cpp refused LoRA adapter {info.path} for base {self.path} (it passed "
                                    f"alignts' checks).{_last_log()}")
            self._adapters.append(ad)
        arr = (L.llama_adapter_lora_p_ctypes * len(self._adapters))(*self._adapters)
        scales = (ctypes.c_float * len(self._adapters))(*[s for _, s in lora_infos])
        rc = L.llama_set_adapters_lora(self._ctx, arr, len(self._adapters), scales)
        if rc != 0:
            self.close()
            raise ArtifactError(f"llama.cpp could not apply the LoRA adapters to {self.path} (code {rc})."
                                f"{_last_log()}")

    def _attach_threadpool(self, n: int) -> None:
        self._threadpool = attach_threadpool(self._L, self._ctx, n)

    def _use_threads(self) -> int:
        """Set this call's thread count: n_threads, or the idle cores when fewer and adapt_threads is on."""
        n = self.n_threads
        if self.adapt_threads and n > 1:
            from alignts.runtime.threads import idle_cores

            n = idle_cores(n)
        if n != self.threads_used:
            self._L.llama_set_n_threads(self._ctx, n, n)
            self.threads_used = n
        return n

    @_locked
    def close(self) -> None:
        """Free the context, adapters, threadpool and model (idempotent)."""
        L = getattr(self, "_L", None)
        if L is None:
            return
        if self._ctx:
            L.llama_free(self._ctx)
            self._ctx = None
        if self._threadpool:
            free_threadpool(L, self._threadpool)
            self._threadpool = None
        for ad in self._adapters:
            L.llama_adapter_lora_free(ad)
        self._adapters = []
        if self._model:
            _release_model(L, self._model_key)
            self._model = None

    def __enter__(self) -> "LlamaCppModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _check_open(self) -> None:
        if not self._ctx:
            raise InputError(f"the llama.cpp model {self.path} is closed; create a new LlamaCppModel.")

    # ---------------------------------------------------------------------------------------------- decoding

    def _decode(self, n: int, use_embd: bool) -> None:
        b = self._batch
        b.n_tokens = n
        b.token = None if use_embd else self._tok_ptr
        b.embd = self._embd_ptr if use_embd else None
        rc = self._L.llama_decode(self._ctx, b)
        if rc != 0:
            raise decode_error(rc, f"{n} tokens")

    def _set_embeddings(self, on: bool) -> None:
        if self._embeddings_on != on and not self._is_encoder:
            self._L.llama_set_embeddings(self._ctx, on)
            self._embeddings_on = on

    @_locked
    def clear(self) -> None:
        """Forget every sequence (KV cache metadata)."""
        if self._mem:
            self._L.llama_memory_clear(self._mem, False)
        self._seq_pos[:] = 0
        self._n_live = 0

    @property
    def last_rows_only(self) -> bool:
        """Whether ``hidden_states(..., last=k)`` runs the last layer after its attention (output projection on)
        on the k rows alone: a BERT from patch level 20 (level 19 cut after the output projection, change 20)."""
        return self._is_encoder and llama_patch_level() >= 20

    @_locked
    def hidden_states(self, embeds: np.ndarray, last: int | None = None) -> np.ndarray:
        """Final hidden states for input embeddings.

        embeds: [S, N, d] float32 (d = n_embd) -> [S, N, d] float32: after the final norm for gpt2/llama,
        the last layer's output for BERT (positions 0..N-1 and, for BERT, token type 0 are added by the model,
        as transformers does for ``inputs_embeds``). ``last``: only each series' last ``last`` tokens' states,
        [S, last, d]; the others are not output, and on alignts' build a BERT's last layer skips their residual,
        norms and FFN (scripts/patch_llama.py change 19; level 18 and below compute every row and return these).
        Each series is its own sequence; up to
        min(n_seq_max, n_batch // N) series go in one llama_decode, and for a BERT encoder on CPU no more than
        :func:`alignts.runtime.budget.embedding_geometry` gives for N and this build (:func:`llama_patch_level`):
        a stock llama.cpp encoder attends over every token of a decode with a mask between series, a cost that
        grows with the square of the group unless flash attention skips the masked cells, while alignts' build
        attends per series (scripts/patch_llama.py, change 4) and takes larger groups; a causal LM keeps one KV
        stream per sequence (llama.cpp's kv_unified off) and takes all series at once.
        The decode reads the embeddings in place (no copy into a batch buffer); the KV cache (causal LMs only:
        an encoder has none) is cleared before each group.
        """
        self._check_open()
        x = np.ascontiguousarray(embeds, dtype=np.float32)
        if x.ndim != 3 or x.shape[2] != self.n_embd:
            raise ShapeError(f"embeds must be [S, N, {self.n_embd}] float32, got shape {list(x.shape)}.")
        S, N, d = x.shape
        last = N if last is None else int(last)
        if not 1 <= last <= N:
            raise ShapeError(f"last={last}: expected 1 <= last <= N={N} (the tokens of each series to return).")
        if N > self.n_ctx:
            raise ShapeError(f"sequence length {N} exceeds n_ctx={self.n_ctx}; create the model with n_ctx >= {N}.")
        if self._is_encoder and N > self.n_batch:
            raise ShapeError(f"BERT needs a whole sequence in one batch: N={N} > n_batch={self.n_batch}; create the "
                             f"model with n_batch >= {N}.")
        if self._is_encoder and N > self.info.n_ctx_train:
            raise ShapeError(f"N={N} exceeds the model's {self.info.n_ctx_train} position embeddings.")
        self._set_embeddings(True)
        self._use_threads()
        # only a BERT on alignts' build computes just the rows flagged as outputs; llama.cpp outputs every row of
        # a causal LM's decode with embeddings on (and an encoder's before change 19): the last ones are taken here
        marked = last < N and self._is_encoder and encoder_outputs_marked()
        rows = last if marked else N  # the rows each series' decode returns
        out = np.empty((S, rows, d), dtype=np.float32)
        if S == 0 or N == 0:
            return out[:, rows - last:]
        per = max(1, min(self.n_seq_max, self.n_batch // N))
        if self._is_encoder and self.device == "cpu":  # the rule was measured on CPUs (a GPU: unmeasured)
            per = min(per, embedding_geometry(N, S, encoder=True, flash=bool(self.flash_attn),
                                              streams=llama_patch_level() >= 4)[0])
        self._out[:] = 1
        self._nseq[:] = 1
        if N <= self.n_batch:
            # one layout for every group: series j of the group at rows j*N..(j+1)*N-1, positions 0..N-1
            g = min(per, S)
            self._pos[:g * N].reshape(g, N)[:] = np.arange(N, dtype=np.int32)
            self._seq[:g * N].reshape(g, N)[:] = np.arange(g, dtype=np.int32)[:, None]
            if marked:  # the last `last` of each series
                self._out[:g * N].reshape(g, N)[:] = np.arange(N) >= N - last
            flat = x.reshape(S * N, d)
            for s0 in range(0, S, per):
                k = min(per, S - s0)
                if self._mem and not self._is_encoder:
                    self._L.llama_memory_clear(self._mem, False)
                self._decode_embd(flat[s0 * N:(s0 + k) * N], out[s0:s0 + k].reshape(k * rows, d))
        else:  # one long causal sequence in chunks (the KV cache carries the prefix)
            for s0 in range(S):
                self.clear()
                for t0 in range(0, N, self.n_batch):
                    n = min(self.n_batch, N - t0)
                    self._pos[:n] = np.arange(t0, t0 + n, dtype=np.int32)
                    self._seq[:n] = 0
                    self._decode_embd(x[s0, t0:t0 + n], out[s0, t0:t0 + n])
        self.clear()
        return out[:, rows - last:]

    def _decode_embd(self, rows: np.ndarray, dest: np.ndarray) -> None:
        """Decode ``rows`` [n, d] (C-contiguous float32, read in place) with the batch's pos/seq/output flags
        already set, and copy the output embeddings (the rows flagged, in order) into ``dest`` [n_out, d]."""
        n, d = rows.shape
        b = self._batch
        b.n_tokens = n
        b.token = None
        b.embd = rows.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        rc = self._L.llama_decode(self._ctx, b)
        b.embd = self._embd_ptr  # never leave a pointer into the caller's array behind
        if rc != 0:
            hint = ("the KV cache is full: raise n_ctx" if rc == 1 else "see the llama.cpp log (logger "
                    f"{_llama_log.name}, DEBUG)")
            raise BackendUnavailableError(f"llama_decode failed with code {rc} on {n} tokens; {hint}.{_last_log()}")
        n_out = len(dest)
        ptr = self._L.llama_get_embeddings(self._ctx)
        addr = ctypes.cast(ptr, ctypes.c_void_p).value
        if not addr:
            raise BackendUnavailableError(f"{self.path}: llama.cpp returned no embeddings.{_last_log()}")
        view = self._embd_views.get((addr, n_out))
        if view is None:  # a ctypes array type per call costs tens of microseconds: reuse views per buffer
            if len(self._embd_views) > 16:
                self._embd_views.clear()
            view = self._embd_views[(addr, n_out)] = np.ctypeslib.as_array(ptr, shape=(n_out, d))
        dest[...] = view

    # ---------------------------------------------------------------------------------------------- generation

    @_locked
    def reset(self) -> None:
        """Forget all sequences (start a new prompt)."""
        self._check_open()
        self.clear()

    def _logits(self, n: int, copy: bool) -> np.ndarray:
        ptr = self._L.llama_get_logits(self._ctx)
        if not ptr:
            raise BackendUnavailableError(f"{self.path}: llama.cpp returned no logits (a {self.arch} model has "
                                          "no LM head?); expected a causal LM.")
        addr = ctypes.addressof(ptr.contents)  # ~0.2 us; ctypes.cast(ptr, c_void_p).value ~1.3 us
        view = self._logits_views.get((addr, n))
        if view is None:  # building a ctypes array type costs tens of microseconds: reuse views per buffer
            if len(self._logits_views) > 64:
                self._logits_views.clear()
            view = self._logits_views[(addr, n)] = np.ctypeslib.as_array(ptr, shape=(n, self.n_vocab))
        return view.copy() if copy else view

    @_locked
    def prefill(self, prompt_ids: Sequence[int] | np.ndarray, n_parallel: int = 1, copy: bool = True) -> np.ndarray:
        """Decode the prompt once (sequence 0), share its KV with sequences 1..n_parallel-1.

        prompt_ids: [T] token ids (T >= 1). Returns the logits after the last prompt token, [n_parallel, V]
        float32 (the same row repeated). Sequences continue with :meth:`step`.
        """
        self._check_open()
        if self._is_encoder:
            raise InputError(f"{self.path} is a BERT encoder; generation needs a causal LM (gpt2, llama).")
        ids = np.asarray(prompt_ids, dtype=np.int32).reshape(-1)
        T = ids.shape[0]
        if T < 1:
            raise InputError("prefill needs at least one prompt token; got none.")
        if not 1 <= n_parallel <= self.n_seq_max:
            raise InputError(f"n_parallel={n_parallel} must be in 1..n_seq_max={self.n_seq_max}; create the model "
                             f"with n_seq_max >= {n_parallel}.")
        if T >= self.n_ctx:
            raise ShapeError(f"prompt of {T} tokens does not fit n_ctx={self.n_ctx}. Fix: a shorter context or "
                             "horizon, or a larger n_ctx when the model was trained for it.")
        if ids.min() < 0 or ids.max() >= self.n_vocab:
            raise InputError(f"prompt token ids must be in [0, {self.n_vocab}); got {ids.min()}..{ids.max()}.")
        self._set_embeddings(False)
        self._use_threads()
        self.clear()
        self._nseq[:] = 1
        for t0 in range(0, T, self.n_batch):
            n = min(self.n_batch, T - t0)
            self._tok[:n] = ids[t0:t0 + n]
            self._pos[:n] = np.arange(t0, t0 + n, dtype=np.int32)
            self._seq[:n] = 0
            self._out[:n] = 0
            if t0 + n == T:
                self._out[n - 1] = 1
            self._decode(n, use_embd=False)
        row = self._logits(1, copy=True)
        for s in range(1, n_parallel):
            self._L.llama_memory_seq_cp(self._mem, 0, s, -1, -1)
        self._seq_pos[:n_parallel] = T
        self._n_live = n_parallel
        return np.repeat(row, n_parallel, axis=0) if copy or n_parallel > 1 else row

    @_locked
    def step(self, tokens: Sequence[int] | np.ndarray, seq_ids: Sequence[int] | np.ndarray | None = None,
             copy: bool = True) -> np.ndarray:
        """Append one token to each live sequence and return the next-token logits.

        tokens: [n] token ids, one per sequence; seq_ids: [n] which sequences (default 0..n-1, n = the
        n_parallel of prefill). Returns [n, V] float32 (a copy; copy=False gives a view valid until the next
        call).
        """
        self._check_open()  # a close() from another thread may have come between prefill and this step
        tok = np.asarray(tokens).reshape(-1)
        n = tok.shape[0]
        if seq_ids is None:
            if n != self._n_live:
                raise ShapeError(f"step got {n} tokens but {self._n_live} sequences are live (prefill's n_parallel); "
                                 "pass seq_ids to step a subset.")
            seq = self._arange[:n] if n <= len(self._arange) else np.arange(n, dtype=np.int32)
        else:
            seq = np.asarray(seq_ids).reshape(-1)
            if seq.shape[0] != n or n == 0:
                raise ShapeError(f"seq_ids must be {n} ids, one a token; got {seq.tolist()}.")
        if tok.dtype.kind not in "iu" or seq.dtype.kind not in "iu":
            raise InputError(f"token and sequence ids must be integers; got {tok.dtype} and {seq.dtype}.")
        bad = stage_step(tok, seq, self._seq_pos, self._n_live, self.n_ctx, self.n_vocab, self._tok, self._pos,
                         self._seq, self._nseq, self._out)
        if bad == BAD_SEQ:
            raise ShapeError(f"seq_ids must be {n} distinct ids in [0, {self._n_live}); got {seq.tolist()}.")
        if bad == CONTEXT_FULL:
            raise ShapeError(f"a sequence reached n_ctx={self.n_ctx} tokens; create the model with a larger n_ctx.")
        if bad == BAD_TOKEN:
            raise InputError(f"token ids must be in [0, {self.n_vocab}); got {tok.tolist()}.")
        try:
            self._decode(n, use_embd=False)
        except BackendUnavailableError:
            self._seq_pos[seq] -= 1  # stage_step advanced them: the step did not happen
            raise
        return self._logits(n, copy)

    @_locked
    def native_step(self):
        """This model's decode step for a compiled loop (a :class:`~alignts.runtime.backends.gguf_native.NativeStep`),
        valid until the next call of any other method; None for a stock llama.cpp (callers :meth:`step`). Call it
        after :meth:`prefill`, holding ``lock`` until the loop is done (it points the batch at the token buffer)."""
        self._check_open()
        fns = _native_functions()
        if fns is None:
            return None
        b = self._batch
        b.token = self._tok_ptr
        b.embd = None
        field = ctypes.addressof(b) + type(b).n_tokens.offset
        n_tokens = np.ctypeslib.as_array((ctypes.c_int32 * 1).from_address(field))
        return NativeStep(fns[0], fns[1], ctypes.cast(self._ctx, ctypes.c_void_p).value, ctypes.addressof(b),
                          n_tokens, self._tok, self._pos, self._seq, self._nseq, self._out, self._seq_pos,
                          self._n_live, self.n_ctx, self.n_vocab)

    @property
    def _arange(self) -> np.ndarray:
        a = getattr(self, "_arange_cache", None)
        if a is None:
            a = self._arange_cache = np.arange(self.n_seq_max, dtype=np.int32)
        return a

    # ---------------------------------------------------------------------------------------------- vocabulary

    @_locked
    def tokenize(self, text: str, add_special: bool = False) -> np.ndarray:
        """Token ids [T] int32 of ``text`` with the model's own tokenizer."""
        self._check_open()
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        buf = (ctypes.c_int32 * cap)()
        n = self._L.llama_tokenize(self._vocab, raw, len(raw), buf, cap, add_special, False)
        if n < 0:
            cap = -n
            buf = (ctypes.c_int32 * cap)()
            n = self._L.llama_tokenize(self._vocab, raw, len(raw), buf, cap, add_special, False)
        if n < 0:
            raise InputError(f"llama.cpp could not tokenize {text[:40]!r}.{_last_log()}")
        return np.frombuffer(buf, dtype=np.int32, count=n).copy()

    @_locked
    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (byte-level tokens may be partial UTF-8)."""
        buf = ctypes.create_string_buffer(64)
        n = self._L.llama_token_to_piece(self._vocab, int(token_id), buf, 64, 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._L.llama_token_to_piece(self._vocab, int(token_id), buf, -n, 0, True)
        return buf.raw[:n]

    def token_piece(self, token_id: int) -> str:
        """The text of one token (invalid UTF-8 replaced)."""
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    # ---------------------------------------------------------------------------------------------- benchmark

    @_locked
    def raw_decode_benchmark(self, prompt_ids: Sequence[int] | np.ndarray, tokens: np.ndarray,
                             n_parallel: int | None = None) -> dict[str, Any]:
        """Time plain llama.cpp decoding of fixed tokens: the floor an Injective sampling loop is compared to.

        prompt_ids: [T]; tokens: [n_steps, n_parallel] ids fed one row per step (no sampling, no logits copy),
        from a compiled loop where this llama.cpp has ``alignts_llama_decode`` (no Python between decodes; a
        stock build: a Python loop).
        Returns {"prefill_s", "decode_s", "n_steps", "n_parallel", "tokens_per_s", "loop"} ("loop": "compiled" or
        "python").
        """
        tokens = np.asarray(tokens, dtype=np.int32)
        if tokens.ndim != 2:
            raise ShapeError(f"tokens must be [n_steps, n_parallel], got shape {list(tokens.shape)}.")
        n = n_parallel or tokens.shape[1]
        if n != tokens.shape[1]:
            raise ShapeError(f"n_parallel={n} but tokens has {tokens.shape[1]} columns; expected one a sequence.")
        t0 = time.perf_counter()
        self.prefill(prompt_ids, n, copy=False)
        native = self.native_step()
        t1 = time.perf_counter()
        if native is not None:
            status, code = raw_decode_loop(native.decode, native.get_logits, native.ctx, native.batch,
                                           native.n_tokens, native.tok, native.pos, native.seq, native.nseq,
                                           native.out, native.seq_pos, native.n_ctx, native.n_vocab,
                                           np.ascontiguousarray(tokens))
            native.check(status, code)
        else:
            L, ctx, b = self._L, self._ctx, self._batch
            self._seq[:n] = self._arange[:n]
            self._nseq[:n] = 1
            self._out[:n] = 1
            pos = int(self._seq_pos[0])
            b.n_tokens = n
            b.token = self._tok_ptr
            b.embd = None
            for row in tokens:
                self._tok[:n] = row
                self._pos[:n] = pos
                if L.llama_decode(ctx, b) != 0:
                    raise BackendUnavailableError(f"llama_decode failed in the benchmark at position {pos}."
                                                  f"{_last_log()}")
                L.llama_get_logits(ctx)
                pos += 1
            self._seq_pos[:n] = pos
        self._L.llama_synchronize(self._ctx)
        t2 = time.perf_counter()
        steps = tokens.shape[0]
        return {"prefill_s": t1 - t0, "decode_s": t2 - t1, "n_steps": float(steps), "n_parallel": float(n),
                "tokens_per_s": steps * n / max(t2 - t1, 1e-12), "loop": "python" if native is None else "compiled"}
