"""onnxruntime sessions for bundle variants (CPU or CUDA, no silent fallback)."""

from __future__ import annotations

import functools
import logging
import os
from typing import Mapping

import numpy as np

from alignts.errors import ArtifactError, BackendUnavailableError, InputError, missing_extra
from alignts.runtime.budget import onnx_run_series

log = logging.getLogger(__name__)


# pip distributions that install the `onnxruntime` module: they share its folder, so two of them overwrite each
# other's files (DESIGN.md: onnxruntime and onnxruntime-gpu cannot coexist)
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")

# The ONNX IR version of the graphs alignts builds by hand (bench probes, tests): what its exports carry (torch.onnx
# writes 10) and every onnxruntime it supports reads (>= 1.18). onnx >= 1.23 writes IR 14 unless told, which
# onnxruntime-gpu 1.31.1, the newest GPU wheel, refuses: "Unsupported model IR version: 14, max supported IR
# version: 13" (seen on the lent H200, results/cuda/README.md).
IR_VERSION = 10


@functools.lru_cache(maxsize=1)
def ort_distributions() -> tuple[tuple[str, str], ...]:
    """The installed distributions of ``ORT_DISTRIBUTIONS`` as ((name, version), ...), from their metadata."""
    from importlib import metadata

    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            pass
    return tuple(found)


def _ort():
    """The ``onnxruntime`` module, imported on first use: the one place every ONNX backend gets it from.

    Raises BackendUnavailableError when it is not installed, or when onnxruntime and onnxruntime-gpu are both
    installed (the one installed last overwrote the other's files; which one runs is an accident)."""
    dists = ort_distributions()
    if len(dists) > 1:
        raise BackendUnavailableError(
            f"{' and '.join(f'{n} {v}' for n, v in dists)} are installed together; expected one of them: they "
            "install into the same folder and overwrite each other. Fix: pip uninstall -y onnxruntime "
            "onnxruntime-gpu, then pip install 'alignts[cpu]' (CPU) or 'alignts[gpu]' (CUDA), not both.")
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise missing_extra("onnxruntime", "cpu") from e
    return ort


def cuda_providers(ort) -> list[str]:
    """The provider list for device='cuda', after loading the CUDA libraries onnxruntime-gpu needs.

    onnxruntime-gpu >= 1.31 is built for CUDA 13 and finds cuBLAS/cuDNN from the nvidia-* pip wheels only
    after ``onnxruntime.preload_dlls()`` (LD_LIBRARY_PATH and system CUDA work without it). Raises
    BackendUnavailableError when this onnxruntime has no CUDA provider at all.
    """
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise BackendUnavailableError(
            f"device='cuda' asked, but this onnxruntime has no CUDA provider (available: "
            f"{ort.get_available_providers()}). Fix: pip install 'alignts[gpu]' (instead of [cpu]) "
            "or use device='cpu'.")
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as e:  # noqa: BLE001 - system CUDA may still work; the session check decides
            log.warning("onnxruntime.preload_dlls() failed (%s); relying on the system CUDA libraries", e)
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


# onnxruntime graph rewrites left out on the CPU. SkipLayerNormFusion turns a residual Add + LayerNormalization
# into SkipLayerNormalization, whose CPU kernel is a scalar loop with a division per element: 0.46 ms for one
# 154 x 384 MiniLM activation where Add + LayerNormalization take 0.08 together (onnxruntime 1.32, Intel Xeon,
# 1 thread; 22-31 % of an int8 Internal forecast's kernel time). Its CUDA kernel is fast: CUDA sessions keep it.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def session_options(ort, threads: int | None = None, arena: bool = True, enable_mem_pattern: bool = True,
                    disable_prepacking: bool = False, spin: bool = True, device: str = "cpu"):
    """``onnxruntime.SessionOptions`` with the memory options of a plan (see :class:`OnnxSession`); on
    ``device="cpu"`` without the rewrites of ``CPU_DISABLED_OPTIMIZERS``."""
    so = ort.SessionOptions()
    if device == "cpu":
        so.add_session_config_entry("optimization.disable_specified_optimizers", ";".join(CPU_DISABLED_OPTIMIZERS))
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = bool(arena)
    so.enable_mem_pattern = bool(enable_mem_pattern)
    if disable_prepacking:  # pre-packed MatMul weights are a second copy of every weight
        so.add_session_config_entry("session.disable_prepacking", "1")
    if threads:
        so.intra_op_num_threads = int(threads)
    return so


def _ort_errors(ort) -> tuple[type, ...]:
    """onnxruntime's own exception classes (Fail, InvalidArgument, InvalidProtobuf, ...)."""
    state = ort.capi.onnxruntime_pybind11_state
    return tuple(c for c in vars(state).values() if isinstance(c, type) and issubclass(c, Exception))


class OnnxSession:
    """One ``onnxruntime.InferenceSession``.

    device: ``cpu`` or ``cuda``. With ``cuda`` the CUDA execution provider must really be active, otherwise
    BackendUnavailableError (onnxruntime-gpu silently falls back to CPU when CUDA libraries are missing).
    threads: intra-op threads (None = onnxruntime's default).
    spin: let the intra-op workers spin between operators (onnxruntime's default, ~10 % faster for one session
        alone); off where a forecaster alternates two sessions (Bridging's adapter and backbone), whose
        spinning workers would take the cores the other session's run needs (MiniLM Bridging, 2 threads:
        53.5 ms a forecast spinning, 23.7 ms not).
    arena, enable_mem_pattern, disable_prepacking: onnxruntime memory options, the keys of a memory plan's
    ``settings`` (:func:`alignts.runtime.budget.choose`). The defaults are the fast ones; the lean ones (arena
    and memory pattern off, pre-packing off) lower peak memory. ``settings`` records what was applied.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None,
                 enable_mem_pattern: bool = True, arena: bool = True, disable_prepacking: bool = False,
                 spin: bool = True):
        ort = _ort()
        so = session_options(ort, threads, arena=arena, enable_mem_pattern=enable_mem_pattern,
                             disable_prepacking=disable_prepacking, spin=spin, device=device)
        if device == "cuda":
            providers = cuda_providers(ort)
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise InputError(f"device={device!r}: expected 'cpu' or 'cuda'.")
        self.path = str(path)
        self._errors = _ort_errors(ort)
        try:
            self.session = ort.InferenceSession(self.path, so, providers=providers)
        except self._errors as e:  # a damaged model, or external data onnxruntime refuses
            raise ArtifactError(f"{self.path}: onnxruntime cannot load it ({type(e).__name__}: {e}); expected an ONNX "
                                "model exported by alignts. Fix: re-export the bundle.") from e
        self.providers = tuple(self.session.get_providers())
        if device == "cuda" and "CUDAExecutionProvider" not in self.providers:
            raise BackendUnavailableError(
                f"device='cuda' asked, but onnxruntime fell back to {self.providers} (CUDA/cuDNN libraries not "
                "found or not matching). Fix: pip install 'alignts[gpu]' (onnxruntime-gpu[cuda,cudnn]: the CUDA 13 runtime, "
                "cuBLAS and cuDNN 9 it needs), or use device='cpu'.")
        self.settings = {"arena": bool(arena), "enable_mem_pattern": bool(enable_mem_pattern),
                         "disable_prepacking": bool(disable_prepacking)}
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        log.info("onnx session %s on %s", self.path, self.providers[0])

    @property
    def provider(self) -> str:
        return self.providers[0]

    def run_series(self, name: str, x: np.ndarray, feeds: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The first output for an encoder's ``x [series, tokens, ...]`` fed as ``name`` (``feeds``: other inputs,
        the same for every series), in runs of at most ``budget.ONNX_RUN_TOKENS`` tokens split evenly
        (:func:`budget.onnx_run_series`), joined on the series axis."""
        per = onnx_run_series(x.shape[0], x.shape[1])
        feeds = dict(feeds or {})
        if x.shape[0] <= per:
            return self.run({name: x, **feeds})[0]
        return np.concatenate([self.run({name: x[i:i + per], **feeds})[0] for i in range(0, x.shape[0], per)])

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run with ``feeds`` {input name: array}; returns the outputs in order."""
        missing = set(self.input_names) - set(feeds)
        if missing:
            raise InputError(f"ONNX model {self.path} needs inputs {self.input_names}; missing {sorted(missing)}.")
        try:
            return self.session.run(None, {k: np.ascontiguousarray(v) for k, v in feeds.items()})
        except self._errors as e:  # e.g. shapes that the bundle's config gives but the model does not take
            shapes = {k: np.shape(v) for k, v in feeds.items()}
            raise ArtifactError(f"ONNX model {self.path} refused inputs of shapes {shapes} ({type(e).__name__}: {e}); "
                                "expected the shapes its manifest's config gives. Fix: re-export the bundle.") from e
