"""onnxruntime sessions for bundle variants (CPU or CUDA, no silent fallback)."""

from __future__ import annotations

import logging
import os
from typing import Mapping

import numpy as np

from alignts.errors import BackendUnavailableError, InputError, missing_extra

log = logging.getLogger(__name__)


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise missing_extra("onnxruntime", "cpu") from e
    return ort


class OnnxSession:
    """One ``onnxruntime.InferenceSession``.

    device: ``cpu`` or ``cuda``. With ``cuda`` the CUDA execution provider must really be active, otherwise
    BackendUnavailableError (onnxruntime-gpu silently falls back to CPU when CUDA libraries are missing).
    threads: intra-op threads (None = onnxruntime's default).
    enable_mem_pattern, arena: onnxruntime memory options (turn off to lower peak memory).
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None,
                 enable_mem_pattern: bool = True, arena: bool = True):
        ort = _ort()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.enable_mem_pattern = bool(enable_mem_pattern)
        so.enable_cpu_mem_arena = bool(arena)
        if threads:
            so.intra_op_num_threads = int(threads)
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    f"device='cuda' asked, but this onnxruntime has no CUDA provider (available: "
                    f"{ort.get_available_providers()}). Fix: pip install 'alignts[gpu]' (instead of [cpu]) "
                    "or use device='cpu'.")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise InputError(f"device={device!r}: expected 'cpu' or 'cuda'.")
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, so, providers=providers)
        self.providers = tuple(self.session.get_providers())
        if device == "cuda" and "CUDAExecutionProvider" not in self.providers:
            raise BackendUnavailableError(
                f"device='cuda' asked, but onnxruntime fell back to {self.providers} (CUDA/cuDNN libraries not "
                "found or not matching). Fix: install the CUDA 12 runtime and cuDNN 9 libraries onnxruntime-gpu "
                "needs, or use device='cpu'.")
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        log.info("onnx session %s on %s", self.path, self.providers[0])

    @property
    def provider(self) -> str:
        return self.providers[0]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run with ``feeds`` {input name: array}; returns the outputs in order."""
        missing = set(self.input_names) - set(feeds)
        if missing:
            raise InputError(f"ONNX model {self.path} needs inputs {self.input_names}; missing {sorted(missing)}.")
        return self.session.run(None, {k: np.ascontiguousarray(v) for k, v in feeds.items()})
