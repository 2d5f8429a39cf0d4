"""How a stream turns its window into a forecast: the engines.

- ``WindowEngine`` (every paradigm and backend): the planned forecaster's ``forecast`` on the window, so the
  stream's forecast is the batch forecast of the same window, exactly. Internal on a BERT backbone (MiniLM) and
  Bridging always take this path (a bidirectional encoder has no cache to extend); so do Internal and Injective
  on ONNX and Internal on GPT-2 (learned absolute positions: a kept patch's cached keys carry its old position).
- ``InjectiveKVEngine`` (Injective on llama.cpp; :mod:`alignts.runtime.stream.kv`): the prompt stays in a KV
  cache between forecasts and only new values' tokens are decoded.
- ``InternalKVEngine`` (Internal on a LLaMA-family GGUF backbone; :mod:`alignts.runtime.stream.kv_internal`): the
  window's patch tokens stay in a KV cache and only new patches are decoded.

An engine has ``kind``, ``forecast(window [C, T], t_end, levels) ->
(Forecast, reanchored)``, ``reanchor()``, ``describe()``, ``state() -> (meta, arrays)`` and
``load_state(meta, arrays, stats)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alignts.errors import InputError

# Internal backbones whose positions are rotary (relative): a kept patch's cached keys stay valid as the window
# slides, and llama.cpp can move them down when positions run out
ROTARY_ARCHS = ("llama",)


class WindowEngine:
    """Recomputes the window with the batch forecaster at every forecast (exactly the batch result)."""

    kind = "window"

    def __init__(self, f, n_channels: int, why: str = ""):
        self.f = f
        self.why = why

    def forecast(self, window: np.ndarray, t_end: int, levels):
        return self.f.forecast(window[None], quantiles=levels), False

    def reanchor(self) -> None:
        pass

    def describe(self) -> str:
        return f"window: the batch forecast of the last L points at every forecast ({self.why})" if self.why else \
            "window: the batch forecast of the last L points at every forecast"

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {}

    def load_state(self, meta, arrays, stats) -> None:
        pass


def window_reason(paradigm: str, architecture: str, backend: str) -> str | None:
    """Why a forecaster streams by recomputing its window (None: Injective on llama.cpp reuses its KV cache)."""
    if paradigm == "injective":
        return None if backend == "gguf" else f"Injective on {backend}: no KV reuse is built for it"
    arch = (architecture or "").lower()
    if paradigm == "internal" and "bert" in arch:
        return "Internal on a BERT backbone: a bidirectional encoder recomputes the window"
    if paradigm == "bridging":
        return "Bridging: the frozen backbone reads the prompt and all patches again"
    if paradigm == "internal" and backend == "gguf" and arch in ROTARY_ARCHS:
        return None
    if paradigm == "internal" and backend == "gguf":
        return f"Internal on {arch}: learned absolute positions, a kept patch's cached keys cannot move"
    return f"Internal on {backend}: no KV reuse is built for it"


def stream_line(manifest) -> str:
    """What ``Stream`` does with each variant of a bundle (for ``alignts inspect``)."""
    parts = []
    kind = "kv-injective" if manifest.paradigm == "injective" else "kv-internal"
    for v in manifest.variants:
        why = window_reason(manifest.paradigm, manifest.architecture, v.backend)
        parts.append(f"{v.name}: " + (f"KV-cache reuse ({kind})" if why is None else f"recompute ({why})"))
    return "; ".join(parts)


def make_engine(f, n_channels: int, kv: bool | None):
    """The engine for a planned forecaster: KV reuse where it exists unless ``kv=False``; ``kv=True`` where it
    does not raises InputError."""
    why = window_reason(f.paradigm, f.manifest.architecture, f.planned.backend)
    if why is None and kv is not False:
        if f.paradigm == "injective":
            from alignts.runtime.stream.kv import InjectiveKVEngine

            return InjectiveKVEngine(f, n_channels)
        from alignts.runtime.stream.kv_internal import InternalKVEngine

        try:
            return InternalKVEngine(f, n_channels)
        except InputError as e:  # the built llama.cpp cannot shift this model's cache
            why = f"Internal on {f.manifest.architecture}: {e}"
    if kv is True:
        raise InputError(f"kv=True: this forecaster has no KV-cache stream ({why}); expected Injective, or Internal "
                         "on a LLaMA-family backbone, on a gguf variant. Fix: kv=None (the default picks what exists).")
    return WindowEngine(f, n_channels, why or "kv=False")
