"""The served models under one memory budget: the plan, load on demand, least-recently-used eviction, and the
bundle checks that take a changed model out of service (torch-free).

The budget is the server process's resident memory. It holds one process overhead (the interpreter, numpy,
pandas, numba, the runtime libraries the plans open: :func:`alignts.runtime.budget.runtime_overhead` for the
heaviest paradigm served, plus ``SERVER_OVERHEAD`` for starlette, uvicorn and prometheus-client) and, for each
loaded model, its weights + activations + KV cache at the server's batch size (the planner's estimate less its
process overhead) times its contexts, llama.cpp's weights once (its contexts share one llama_model). Bridging
adapters over the same backbone (hash, variant, memory settings) load it once (:mod:`alignts.runtime.backbone_store`):
its weights count once.

:meth:`ModelRegistry.plan` starts from each model's most accurate variant with the fast settings and steps
down (lean settings, then smaller variants, one step of the model that saves most at a time) until every model
fits together. When even the smallest choices do not, each model takes the most accurate variant that fits the
budget alone, and models are loaded on demand, evicting the least recently used idle ones.

Contexts per model (``workers`` = threads running backend calls): an onnxruntime Internal or Bridging session is
thread-safe and shared by every worker; a llama.cpp Internal model and an Injective generator (llama.cpp or
onnxruntime, whose generation holds the forecaster's lock) serve one call at a time, so they get one forecaster
(one context) per worker; Bridging on llama.cpp shares its backbone (one llama.cpp context under its lock) in the
process, so it gets one.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from alignts.errors import AlignTSError, ArtifactError, BudgetExceededError, InputError
from alignts.runtime.budget import (GGUF_WEIGHT_FACTOR, MiB, ONNX_WEIGHT_FACTOR, PROCESS_BASE, available_backends,
                                    estimate_peak, format_bytes, rank_variants, runtime_backends, runtime_overhead)
from alignts.runtime.manifest import MANIFEST_NAME, Manifest, read_manifest, sha256_file, verify_files

log = logging.getLogger(__name__)

# starlette + uvicorn + prometheus-client + the serve package imported, measured as peak RSS over the runtime
# alone (VmHWM of `python -c "import alignts.serve.app"` minus `import alignts.runtime`, this venv: 24 MiB)
SERVER_OVERHEAD = 32 * MiB


class ModelNotFound(AlignTSError, LookupError):
    """No model of that name is served (HTTP 404)."""


class ModelUnavailable(AlignTSError):
    """The model is out of service (its bundle changed or failed to load) or cannot be loaded now (HTTP 503)."""

    def __init__(self, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


def read_rss() -> int:
    """This process's resident set size in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class Candidate:
    """One way to run a model: variant, settings mode, bytes of its own (weights + activations + KV, per
    context), the shared backbone's key and bytes (Bridging; None otherwise), contexts, the estimate, and the
    bytes of own_bytes that every context reads from one copy (llama.cpp's weights: one llama_model a process,
    alignts.runtime.backends.gguf; 0 for onnxruntime, whose Injective sessions hold a copy each)."""

    variant: str
    backend: str
    mode: str
    own_bytes: int
    contexts: int
    backbone: tuple | None
    backbone_bytes: int
    estimate_total: int
    shared_bytes: int = 0

    @property
    def own_total(self) -> int:
        """Its own bytes over all its contexts: the shared ones once."""
        return self.own_bytes * self.contexts - self.shared_bytes * (self.contexts - 1)

    @property
    def alone(self) -> int:
        return self.own_total + self.backbone_bytes


@dataclass
class ModelEntry:
    """A served model: its bundle and plan, and while loaded its forecasters (one per context)."""

    name: str
    bundle: Path
    manifest: Manifest
    manifest_sha256: str
    candidates: list[Candidate]
    choice: Candidate | None = None
    state: str = "unloaded"          # unloaded | loading | ready | failed
    error: str | None = None
    forecasters: list[Any] = field(default_factory=list)
    free: "queue.SimpleQueue[Any] | None" = None
    inflight: int = 0
    last_used: float = 0.0
    loads: int = 0
    evictions: int = 0
    load_seconds: float = 0.0
    rss_delta: int = 0
    batching: str = "dynamic"        # dynamic | padded | per-request
    pinned: str | None = None        # the variant given as PATH@VARIANT
    backbone_files: tuple | None = None  # Bridging: (folder, manifest, manifest sha256, files read)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def paradigm(self) -> str:
        return self.manifest.paradigm

    @property
    def version(self) -> str:
        return self.manifest_sha256[:12]

    @property
    def first(self) -> Any:
        return self.forecasters[0] if self.forecasters else None


def parse_model_arg(arg: str) -> tuple[str, Path, str | None]:
    """``[NAME=]PATH[@VARIANT]`` -> (name, path, variant): the name defaults to the folder's name; a variant pins
    the model to it (default: the planner chooses)."""
    name, sep, path = arg.partition("=")
    if not sep:
        path, name = arg, ""
    path, at, variant = path.rpartition("@") if "@" in path else (path, "", "")
    name = name or Path(path.rstrip("/")).name
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise InputError(f"model name {name!r} (from {arg!r}): expected letters, digits, '-', '_' or '.'. Fix: pass "
                         "NAME=BUNDLE_FOLDER.")
    return name, Path(path), (variant or None)


def _backbone_files(f: Any) -> tuple | None:
    """(folder, manifest, manifest sha256, the files it reads) of a planned Bridging forecaster's backbone."""
    lb = getattr(f, "backbone", None)
    if lb is None or not hasattr(lb, "manifest"):
        return None
    from alignts.runtime.configs import BackboneRuntimeConfig

    cfg = BackboneRuntimeConfig.from_manifest(lb.manifest)
    reads = tuple(dict.fromkeys(lb.manifest.reads(lb.variant) + (cfg.table, cfg.tokenizer)))
    return Path(lb.path), lb.manifest, lb.sha256, reads


class ModelRegistry:
    """Every served model, planned into ``budget`` bytes (None = no limit).

    acquire(name) -> (entry, forecaster) loads on demand (evicting idle models least recently used first) and
    re-checks the bundle's files (cached by stat identity: a changed file is hashed again); release() gives the
    forecaster back.
    """

    def __init__(self, models: Iterable[tuple], budget: int | None, max_batch: int,
                 workers: int = 1, device: str = "cpu", threads: int | None = None, row_check: bool = True):
        self.budget, self.max_batch, self.workers = budget, int(max_batch), max(1, int(workers))
        self.device, self.threads, self.row_check = device, threads, row_check
        self._lock = threading.RLock()
        self.entries: dict[str, ModelEntry] = {}
        backends = available_backends()
        for name, path, *pin in models:
            if name in self.entries:
                raise InputError(f"two models are named {name!r}; expected unique names. Fix: pass NAME=BUNDLE.")
            path = Path(path)
            m = read_manifest(path, verify=False)
            if m.paradigm == "backbone":
                raise InputError(f"{path} is a backbone bundle; serve the Bridging adapter bundles that use it.")
            variant = pin[0] if pin else None
            cands = self._candidates(path, m, backends, variant)
            self.entries[name] = ModelEntry(name=name, bundle=path, manifest=m,
                                            manifest_sha256=sha256_file(path / MANIFEST_NAME), candidates=cands,
                                            pinned=variant)
        if not self.entries:
            raise InputError("no model to serve; expected one or more bundle folders.")
        self.overhead = self._overhead()
        self.mode = self.plan()

    # -- the plan
    def _contexts(self, m: Manifest, backend: str) -> int:
        one_at_a_time = m.paradigm == "injective" or (backend == "gguf" and m.paradigm == "internal")
        return self.workers if one_at_a_time else 1

    def _candidates(self, path: Path, m: Manifest, backends: tuple[str, ...],
                    variant: str | None = None) -> list[Candidate]:
        out = []
        if variant is not None and variant not in [v.name for v in m.variants]:
            raise InputError(f"{path}@{variant}: the bundle has no variant {variant!r}; expected one of "
                             f"{[v.name for v in m.variants]}.")
        for v in rank_variants(m, names=[variant] if variant else None, backends=backends):
            for mode in ("fast", "lean"):
                if mode == "lean" and v.backend == "gguf" and m.architecture == "bert":
                    continue
                est = estimate_peak(m, v, self.max_batch, mode=mode, bundle_dir=path)
                bb_key, bb_bytes = None, 0
                if m.paradigm == "bridging":
                    bb = dict(m.backbone)
                    factor = ONNX_WEIGHT_FACTOR[mode] if v.backend == "onnx" else GGUF_WEIGHT_FACTOR
                    bb_bytes = int(int(bb.get("weight_bytes", 0)) * factor)
                    bb_key = (bb.get("sha256"), v.extra.get("backbone_variant", "onnx-fp32"), mode)
                own = max(0, est.total - est.runtime_overhead - bb_bytes)
                out.append(Candidate(variant=v.name, backend=v.backend, mode=mode, own_bytes=own,
                                     contexts=self._contexts(m, v.backend), backbone=bb_key, backbone_bytes=bb_bytes,
                                     estimate_total=est.total,
                                     shared_bytes=min(own, est.weights) if v.backend == "gguf" else 0))
        if not out:
            have = ", ".join(f"{v.name} ({v.backend})" for v in m.variants) or "none"
            raise InputError(f"{path}: no variant runs here (the bundle has {have}; backends here: "
                             f"{', '.join(backends) or 'none'}). Fix: pip install 'alignts[cpu]' or 'alignts[gguf]'.")
        return out

    def _overhead(self) -> int:
        paradigms = {e.paradigm for e in self.entries.values()}
        worst = max(paradigms, key=lambda p: PROCESS_BASE.get(p, max(PROCESS_BASE.values())))
        libs = {b for e in self.entries.values() for c in e.candidates[:1]
                for b in runtime_backends(e.manifest, e.manifest.variant(c.variant))}
        return runtime_overhead(worst, libs) + SERVER_OVERHEAD

    def total_bytes(self, choices: dict[str, Candidate]) -> int:
        """Overhead + every chosen model's own bytes + each distinct backbone once."""
        backbones = {c.backbone: c.backbone_bytes for c in choices.values() if c.backbone is not None}
        return self.overhead + sum(c.own_total for c in choices.values()) + sum(backbones.values())

    def plan(self) -> str:
        """Choose each model's candidate; returns ``resident`` (all fit together) or ``on-demand`` (LRU)."""
        choice = {n: e.candidates[0] for n, e in self.entries.items()}
        if self.budget is not None:
            step = {n: 0 for n in self.entries}
            while self.total_bytes(choice) > self.budget:
                best = None
                for n, e in self.entries.items():
                    if step[n] + 1 < len(e.candidates):
                        trial = dict(choice, **{n: e.candidates[step[n] + 1]})
                        saved = self.total_bytes(choice) - self.total_bytes(trial)
                        if best is None or saved > best[0]:
                            best = (saved, n)
                if best is None:
                    break
                step[best[1]] += 1
                choice[best[1]] = self.entries[best[1]].candidates[step[best[1]]]
        resident = self.budget is None or self.total_bytes(choice) <= self.budget
        if not resident:  # each model alone: the most accurate candidate that fits with the overhead
            for n, e in self.entries.items():
                fit = [c for c in e.candidates if self.overhead + c.alone <= self.budget]
                if not fit:
                    least = min(self.overhead + c.alone for c in e.candidates)
                    raise BudgetExceededError(
                        f"model {n!r} ({e.bundle}) does not fit --budget {format_bytes(self.budget)} even alone: its "
                        f"smallest plan needs about {format_bytes(least)} (server overhead "
                        f"{format_bytes(self.overhead)} included, batch size {self.max_batch}, "
                        f"{e.candidates[0].contexts} context(s)). Fix: raise --budget to at least {int(least / 1e6) + 1}MB, lower "
                        "--max-batch or --workers, or add a smaller variant (alignts quantize).", least)
                choice[n] = fit[0]
        for n, c in choice.items():
            self.entries[n].choice = c
        log.info("memory plan: %s, %s", "all models resident" if resident else "load on demand (LRU)",
                 ", ".join(f"{n}={c.variant}/{c.mode}" for n, c in choice.items()))
        return "resident" if resident else "on-demand"

    def loaded_bytes(self, extra: ModelEntry | None = None) -> int:
        chosen = {n: e.choice for n, e in self.entries.items() if e.state in ("ready", "loading") or e is extra}
        return self.total_bytes(chosen)

    # -- load, evict, check
    def get(self, name: str) -> ModelEntry:
        e = self.entries.get(name)
        if e is None:
            raise ModelNotFound(f"model {name!r} is not served here; expected one of {sorted(self.entries)}.")
        return e

    def preload(self) -> None:
        """Load models in the order given while they fit (all of them in the resident plan)."""
        for e in self.entries.values():
            with self._lock:
                fits = self.budget is None or self.loaded_bytes(extra=e) <= self.budget
            if not fits:
                break
            try:
                self._load(e)
            except AlignTSError as ex:
                log.error("model %s failed to load: %s", e.name, ex)

    def acquire(self, name: str) -> tuple[ModelEntry, Any]:
        """(entry, a forecaster) for one backend call; load it first when needed. Raises ModelNotFound,
        ModelUnavailable."""
        e = self.get(name)
        with e.lock:
            self._check_bundle(e)
            if e.state != "ready":
                self._load(e)
            with self._lock:
                e.inflight += 1
                e.last_used = time.monotonic()
        return e, (e.free.get() if e.free is not None else e.first)

    def release(self, e: ModelEntry, forecaster: Any) -> None:
        if e.free is not None:
            e.free.put(forecaster)
        with self._lock:
            e.inflight -= 1

    def _check_bundle(self, e: ModelEntry) -> None:
        """Take the model out of service when its manifest or a file its variant reads changed on disk
        (size/sha256; unchanged files are not hashed again); a failed model is re-checked on each request and
        comes back when its files are whole again."""
        try:
            sha = sha256_file(e.bundle / MANIFEST_NAME)
            m = e.manifest if sha == e.manifest_sha256 else read_manifest(e.bundle, verify=False)
            variant = m.variant(e.choice.variant)
            verify_files(e.bundle, m, only=m.reads(variant))
            if e.backbone_files is not None:  # the shared backbone a Bridging adapter runs on
                folder, bm, bsha, reads = e.backbone_files
                if sha256_file(folder / MANIFEST_NAME) != bsha:
                    raise ArtifactError(f"{folder / MANIFEST_NAME}: the backbone's manifest changed since it loaded")
                verify_files(folder, bm, only=reads)
        except (AlignTSError, OSError) as ex:
            msg = f"model {e.name!r} is out of service: its bundle {e.bundle} changed or is unreadable ({ex})"
            if e.state != "failed":
                log.error("%s", msg)
            self._unload(e, "failed", msg)
            raise ModelUnavailable(msg + " Fix: restore the bundle (or re-export it); the model comes back on the "
                                   "next request once its files verify.") from ex
        if sha != e.manifest_sha256:  # re-exported whole: serve the new bundle
            log.warning("model %s: manifest changed on disk; reloading", e.name)
            self._unload(e, "unloaded", None)
            e.manifest, e.manifest_sha256 = m, sha
            e.candidates = self._candidates(e.bundle, m, available_backends(), e.pinned)
            e.choice = e.candidates[0]
        elif e.state == "failed":
            e.state, e.error = "unloaded", None

    def _load(self, e: ModelEntry) -> None:
        from alignts.runtime import load

        with self._lock:
            if self.budget is not None:
                while self.loaded_bytes(extra=e) > self.budget:
                    idle = [x for x in self.entries.values() if x.state == "ready" and x.inflight == 0 and x is not e]
                    if not idle:
                        raise ModelUnavailable(
                            f"model {e.name!r} is not loaded and the budget {format_bytes(self.budget)} is taken "
                            "by models serving requests right now; retry shortly.", retry_after=1.0)
                    self._unload(min(idle, key=lambda x: x.last_used), "unloaded", None, evicted=True)
            e.state = "loading"
        t0, rss0 = time.perf_counter(), read_rss()
        c = e.choice
        try:
            fs = []
            for _ in range(c.contexts):
                f = load(e.bundle)
                f.plan(batch_size=self.max_batch, variant=c.variant, device=self.device, threads=self.threads,
                       budget=c.estimate_total)
                fs.append(f)
            e.batching = self._batching_mode(fs[0])
            e.backbone_files = _backbone_files(fs[0])
        except AlignTSError as ex:
            msg = f"model {e.name!r} failed to load: {ex}"
            self._unload(e, "failed", msg)
            raise ModelUnavailable(msg) from ex
        with self._lock:
            e.forecasters = fs
            e.free = None
            if c.contexts > 1:
                e.free = queue.SimpleQueue()
                for f in fs:
                    e.free.put(f)
            e.state, e.error = "ready", None
            e.loads += 1
            e.load_seconds = time.perf_counter() - t0
            e.rss_delta = max(0, read_rss() - rss0)
        log.info("loaded %s (%s, %s/%s, %d context(s), batching %s) in %.2f s", e.name, e.paradigm, c.variant, c.mode,
                 c.contexts, e.batching, e.load_seconds)

    def _batching_mode(self, f: Any) -> str:
        """``per-request`` for Injective (each call seeds its sampler: rows of two requests in one call would
        draw other random numbers) and for models whose rows depend on the other rows of a call (dynamic int8
        scales activations over the whole batch); else ``dynamic`` when a probe batch forecasts every row bit
        for bit as the same rows alone at every batch size 1..max_batch, and ``padded`` (every call runs
        max_batch rows) when the backend's kernels round differently at different batch sizes."""
        if f.paradigm == "injective":
            return "per-request"
        if not self.row_check or self.max_batch == 1:
            return "dynamic"
        rng = np.random.default_rng(0)
        x = rng.standard_normal((self.max_batch, f.n_channels or 1, f.context_len)).cumsum(-1)
        full = f.forecast_scaled(x)
        other = x.copy()
        other[1:] = 10 * rng.standard_normal(other[1:].shape).cumsum(-1)  # the same first row, other company
        if not np.array_equal(f.forecast_scaled(other)[0], full[0]):
            return "per-request"
        for k in range(1, self.max_batch):
            if not np.array_equal(f.forecast_scaled(x[:k]), full[:k]):
                return "padded"
        return "dynamic"

    def _unload(self, e: ModelEntry, state: str, error: str | None, evicted: bool = False) -> None:
        with self._lock:
            had = bool(e.forecasters)
            e.forecasters, e.free = [], None
            e.state, e.error = state, error
            if evicted:
                e.evictions += 1
        if had:
            gc.collect()
            if evicted:
                log.info("evicted %s (least recently used)", e.name)

    # -- what /v2/models/{name} shows
    def describe(self, e: ModelEntry) -> dict[str, Any]:
        from alignts.runtime.configs import runtime_config

        c, f, cfg = e.choice, e.first, runtime_config(e.manifest)
        out = {"paradigm": e.paradigm, "bundle": str(e.bundle), "state": e.state, "version": e.version,
               "variant": c.variant, "backend": c.backend, "memory_mode": c.mode, "batching": e.batching,
               "contexts": c.contexts, "context_len": cfg.context_len, "horizon": cfg.horizon,
               "memory": {"budget_bytes": self.budget, "plan": self.mode, "server_estimate_bytes": self.overhead,
                          "model_estimate_bytes": c.own_total,
                          "shared_backbone_bytes": c.backbone_bytes, "shared_backbone": c.backbone[0] if c.backbone
                          else None, "loaded_estimate_bytes": self.loaded_bytes(), "rss_bytes": read_rss(),
                          "rss_delta_at_load_bytes": e.rss_delta},
               "loads": e.loads, "evictions": e.evictions, "inflight": e.inflight}
        if f is not None:
            p = f.planned
            out.update(provider=p.provider, horizon=p.horizon, context_len=p.context_len, n_channels=p.n_channels,
                       batch_size=p.batch_size, quantile_method=f.quantile_method)
        if e.error:
            out["error"] = e.error
        return out
