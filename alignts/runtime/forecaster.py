"""The forecaster interface every paradigm implements, and the paradigm registry (torch-free).

Fixed lifecycle (timesfm's compile-before-forecast): ``load`` (artifacts, sha256 checked) -> ``plan`` (fix
context, horizon, batch, variant, device; check the memory budget; open the backend) -> ``forecast``.
``forecast`` before ``plan`` raises :class:`NotPlannedError`.

A paradigm module subclasses :class:`Forecaster`, implements ``_open`` and ``_forecast`` and registers itself
with ``@register_paradigm("name")``; :func:`alignts.runtime.load` dispatches on ``manifest.paradigm``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from alignts.errors import InputError, NotPlannedError, ShapeError
from alignts.runtime.manifest import Manifest, Variant, verify_files

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
_REGISTRY: dict[str, type] = {}


def register_paradigm(name: str):
    """Class decorator: ``@register_paradigm("internal") class InternalForecaster(Forecaster)``."""

    def deco(cls):
        _REGISTRY[name] = cls
        cls.paradigm = name
        return cls

    return deco


def paradigm_class(name: str) -> type:
    """The Forecaster class registered for ``name`` (imports ``alignts.runtime.paradigms.<name>`` first)."""
    import importlib

    if name not in _REGISTRY:
        try:
            importlib.import_module(f"alignts.runtime.paradigms.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"alignts.runtime.paradigms.{name}":
                raise
    if name not in _REGISTRY:
        raise NotImplementedError(f"no runtime for paradigm {name!r}; known: {', '.join(sorted(_REGISTRY)) or 'none'}. "
                                  "Fix: upgrade alignts or re-export the bundle with a supported paradigm.")
    return _REGISTRY[name]


@dataclass(frozen=True)
class Plan:
    """What ``plan`` fixed.

    variant, backend, dtype: the chosen variant.
    device:        requested device; provider: what actually runs it (e.g. ``CPUExecutionProvider``, ``llama.cpp``).
    context_len:   L fed to the model (longer inputs keep their last L points).
    horizon:       H returned (<= the model's horizon).
    batch_size:    series windows per backend call (bigger inputs are processed in chunks).
    n_channels:    C expected in every input.
    threads:       backend threads (None = backend default).
    peak_bytes_estimate: weights + activations estimate for this plan; budget: the budget it was checked against.
    settings:      backend settings the backends were opened with (onnxruntime: arena, enable_mem_pattern,
                   disable_prepacking; llama.cpp: n_ctx, n_seq_max, n_batch, kv_type, use_mmap): the memory
                   planner's (:func:`alignts.runtime.budget.choose`), with ``plan(settings=...)`` on top.
    memory_mode:   ``fast`` (the backends' defaults: always without a budget), ``lean`` (the planner needed the
                   low-memory settings to fit the budget) or ``custom`` (``plan(settings=...)`` was given).
    context_used:  points of context the model reads, the last ones: context_len, except where the model's
                   window holds fewer (Injective: the last values that fit the LM's context next to H values).
    """

    variant: str
    backend: str
    dtype: str
    device: str
    provider: str
    context_len: int
    horizon: int
    batch_size: int
    n_channels: int
    threads: int | None = None
    peak_bytes_estimate: int = 0
    budget: int | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    memory_mode: str = "fast"
    context_used: int | None = None


class Forecaster(ABC):
    """Base class: ``plan(...)`` then ``forecast(x [B, C, L]) -> [B, C, H]``.

    Subclasses implement ``_open(variant, device, threads, batch_size) -> provider`` and
    ``_forecast(x [B, C, L] float32) -> [B, C, H_model]``.
    """

    paradigm = "?"

    def __init__(self, bundle_dir: str | Path, manifest: Manifest):
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self._plan: Plan | None = None
        self._settings: dict[str, Any] = {}
        self.memory_choice = None  # the planner's Choice behind the last plan (for describe_plan)

    # -- facts from the manifest
    @property
    def context_len(self) -> int:
        return int(self.manifest.config["context_len"])

    @property
    def horizon(self) -> int:
        return int(self.manifest.config["horizon"])

    @property
    def n_channels(self) -> int | None:
        c = self.manifest.config.get("n_channels")
        return None if c is None else int(c)

    @property
    def context_used(self) -> int:
        """Points of the context the model reads (the last ones); a paradigm whose model reads fewer overrides."""
        return self.context_len

    @property
    def planned(self) -> Plan:
        if self._plan is None:
            raise NotPlannedError("forecast() was called before plan(); call forecaster.plan() first (it fixes "
                                  "context, horizon, batch size and the variant, and opens the backend).")
        return self._plan

    def _choose_variant(self, variant: str | None, budget: int | None, batch_size: int):
        """The memory planner's Choice (alignts.runtime.budget.choose): the most accurate variant whose estimated
        peak fits ``budget``, with the fast backend settings or, when only they fit, the lean ones; raises
        BudgetExceededError with the smallest workable budget, before anything is loaded."""
        from alignts.runtime.budget import choose

        if not self.manifest.variants:
            raise InputError(f"bundle {self.bundle_dir} has no variants; re-export it.")
        return choose(self.manifest, budget, batch_size, context_len=self.context_len, horizon=self.horizon,
                      n_channels=self.n_channels, variants=[variant] if variant else None, shrink_batch=False,
                      lean_settings=True, bundle_dir=self.bundle_dir)

    @property
    def backend_settings(self) -> dict[str, Any]:
        """The backend settings of the plan being opened (or last opened); see :attr:`Plan.settings`."""
        return dict(self._settings)

    def onnx_options(self) -> dict[str, Any]:
        """The planned onnxruntime options as keyword arguments of ``OnnxSession`` / ``OrtCausalLM``."""
        from alignts.runtime.budget import SETTINGS_KEYS

        return {k: self._settings[k] for k in SETTINGS_KEYS["onnx"] if k in self._settings}

    def llama_options(self, keys: tuple[str, ...] = ("kv_type", "use_mmap")) -> dict[str, Any]:
        """The planned llama.cpp settings as keyword arguments of ``LlamaCppModel`` (``keys``: which; by default
        the memory options, not the geometry n_ctx / n_seq_max / n_batch a paradigm fixes itself)."""
        return {k: self._settings[k] for k in keys if k in self._settings}

    def _opened_settings(self) -> dict[str, Any]:
        """What the backends were really opened with (recorded in the Plan); paradigms whose backends report
        their own settings override this."""
        return dict(self._settings)

    def plan(self, context_len: int | None = None, horizon: int | None = None, batch_size: int = 1,
             variant: str | None = None, device: str = "cpu", threads: int | None = None,
             budget: int | None = None, settings: Mapping[str, Any] | None = None) -> Plan:
        """Fix shapes and the variant, check the memory budget, open the backend; returns the Plan.

        context_len: must equal the model's L when given (the model was trained for it).
        horizon:     at most the model's H (None = H); the forecast is cut to it.
        variant:     a variant name (``alignts inspect`` lists them); None = the first that fits ``budget``.
        device:      ``cpu`` or ``cuda``; an unavailable device raises BackendUnavailableError (no fallback).
        budget:      memory budget in bytes (None = unlimited). Within a budget the backends get the planner's
                     settings: the fast ones when they fit, else the lean ones (onnxruntime arena, memory
                     pattern and pre-packing off; llama.cpp f16 KV cache) before a less accurate variant.
        settings:    backend settings that replace the planner's (keys of :attr:`Plan.settings` for the
                     chosen variant's backend), e.g. ``{"arena": False}``.
        """
        if device not in DEVICES:
            raise InputError(f"device={device!r}: expected one of {DEVICES}.")
        if context_len is not None and int(context_len) != self.context_len:
            raise ShapeError(f"context_len={context_len}: this bundle's model takes exactly L={self.context_len} "
                             f"points; pass context_len={self.context_len} (longer inputs keep their last L points).")
        h = self.horizon if horizon is None else int(horizon)
        if not 1 <= h <= self.horizon:
            raise ShapeError(f"horizon={horizon}: expected 1..{self.horizon} (the model's horizon); "
                             "re-fit with a longer --horizon for more.")
        if int(batch_size) < 1:
            raise InputError(f"batch_size={batch_size}: expected >= 1.")
        choice = self._choose_variant(variant, budget, int(batch_size))
        self.memory_choice = choice
        v = self.manifest.variant(choice.variant)
        planned = dict(choice.settings)
        if settings:
            from alignts.runtime.budget import SETTINGS_KEYS

            known = SETTINGS_KEYS.get(v.backend, ())
            unknown = sorted(set(settings) - set(known))
            if unknown:
                raise InputError(f"settings {unknown} do not apply to variant {v.name} ({v.backend}); expected some "
                                 f"of {', '.join(known)}.")
            planned.update(settings)
        verify_files(self.bundle_dir, self.manifest, only=v.files)
        self._plan = None
        self._settings = planned
        provider = self._open(v, device, threads, int(batch_size))
        self._plan = Plan(variant=v.name, backend=v.backend, dtype=v.dtype, device=device, provider=provider,
                          context_len=self.context_len, horizon=h, batch_size=int(batch_size),
                          n_channels=self.n_channels or 0, threads=threads,
                          peak_bytes_estimate=int(choice.estimate.total), budget=budget,
                          settings=self._opened_settings(), memory_mode="custom" if settings else choice.mode,
                          context_used=int(self.context_used))
        log.info("planned %s", self._plan)
        return self._plan

    # -- scaling with the training scaler (the CLI works on raw data)
    def scale(self, values: np.ndarray) -> np.ndarray:
        """Apply the bundle's training scaler to raw ``values [..., C, T]`` (identity when none stored)."""
        sc = self.manifest.config.get("scaler")
        if not sc:
            return values
        return (values - np.asarray(sc["mean"])[:, None]) / np.asarray(sc["std"])[:, None]

    def unscale(self, values: np.ndarray) -> np.ndarray:
        """Invert :meth:`scale` on ``values [..., C, H]``."""
        sc = self.manifest.config.get("scaler")
        if not sc:
            return values
        return values * np.asarray(sc["std"])[:, None] + np.asarray(sc["mean"])[:, None]

    # -- input checks
    def prepare(self, x: Any) -> np.ndarray:
        """Turn ``x`` ([B, C, T], [C, T] or a DataFrame with time down the rows) into float32 [B, C, L]."""
        if hasattr(x, "select_dtypes") and hasattr(x, "columns"):  # pandas.DataFrame: rows = time
            x = x.select_dtypes("number").to_numpy(dtype=np.float64).T[None]
        a = np.asarray(x, dtype=np.float64)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise ShapeError(f"expected x as [B, C, L], [C, L] or a DataFrame; got shape {a.shape}. "
                             "Fix: put channels second to last and time last.")
        c = self.n_channels
        if c is not None and a.shape[1] != c:
            raise ShapeError(f"expected {c} channels (the model was fitted on {c}); got {a.shape[1]} "
                             f"(input shape {a.shape}). Fix: pass the same columns as at fit time, time last.")
        L = self.context_len
        if a.shape[2] < L:
            raise ShapeError(f"expected at least L={L} time steps; got {a.shape[2]} (input shape {a.shape}). "
                             f"Fix: pass a longer history (the last {L} points are used).")
        a = a[:, :, -L:]
        bad = ~np.isfinite(a)
        if bad.any():
            pos = np.argwhere(bad)
            shown = ", ".join(f"(b={b}, c={ch}, t={t - L})" for b, ch, t in pos[:5])
            raise InputError(f"the context has {len(pos)} NaN/inf values, e.g. at {shown} (t counted from the "
                             "end); expected finite numbers. Fix: fill the gaps first (e.g. "
                             "DataFrame.interpolate().bfill(), or alignts.data.series.fill_missing).")
        return np.ascontiguousarray(a, dtype=np.float32)

    def forecast(self, x: Any) -> np.ndarray:
        """Forecast the next H steps of every channel: ``x [B, C, T>=L]`` (or [C, T], DataFrame) -> [B, C, H]."""
        plan = self.planned
        a = self.prepare(x)
        outs = [self._forecast(a[i:i + plan.batch_size]) for i in range(0, a.shape[0], plan.batch_size)]
        return np.concatenate(outs, axis=0)[:, :, :plan.horizon]

    @abstractmethod
    def _open(self, variant: Variant, device: str, threads: int | None, batch_size: int) -> str:
        """Open the backend for ``variant``; return the provider actually used."""

    @abstractmethod
    def _forecast(self, x: np.ndarray) -> np.ndarray:
        """x [B, C, L] float32, finite -> [B, C, H_model]."""

    def describe(self) -> dict[str, Any]:
        """Paradigm, variants and config (for ``alignts inspect``)."""
        m = self.manifest
        return {"paradigm": m.paradigm, "architecture": m.architecture,
                "variants": [v.name for v in m.variants], "config": dict(m.config)}
