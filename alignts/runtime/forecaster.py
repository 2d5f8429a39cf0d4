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
from typing import Any, Mapping, Sequence

import numpy as np

from alignts.errors import InputError, NotPlannedError, ShapeError
from alignts.runtime.configs import RuntimeConfig, runtime_config
from alignts.runtime.inputs import as_float_array, as_series, check_finite_forecast, check_float32_range, check_scaled
from alignts.runtime.manifest import Manifest, Variant, verify_files
from alignts.runtime.result import Forecast

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
_REGISTRY: dict[str, type] = {}


_warned_timed_elsewhere: set[str] = set()


def _warn_timed_elsewhere(manifest: Manifest, bundle_dir) -> None:
    """Once per bundle: the planner ranks its variants by timings taken on another CPU."""
    from alignts.runtime.budget import timed_elsewhere
    from alignts.runtime.threads import cpu_label

    where = timed_elsewhere(manifest)
    if where is None or str(bundle_dir) in _warned_timed_elsewhere:
        return
    _warned_timed_elsewhere.add(str(bundle_dir))
    log.warning("%s: the planner ranks the variants by timings measured on %s; this CPU is %s, where their order "
                "may differ. Fix: judge and time them here (alignts gate %s), or pass the fastest as --variant "
                "(plan(variant=...)).", bundle_dir, where, cpu_label(), bundle_dir)


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
    """Base class: ``plan(...)`` then ``forecast(x, quantiles=None) -> Forecast`` in raw units
    (``forecast_df`` for DataFrames; ``forecast_scaled(x [B, C, L]) -> [B, C, H]`` in the model's units).

    Subclasses implement ``_open(variant, device, threads, batch_size) -> provider`` and
    ``_forecast(x [B, C, L] float32) -> [B, C, H_model]``.

    Thread safety: once planned, ``forecast`` and ``forecast_scaled`` (and Injective's ``forecast_samples`` /
    ``forecast_quantiles`` / ``forecast_series``) may be called from many threads at once and return what a
    serial call returns. onnxruntime sessions run concurrently; a llama.cpp model runs one call at a time under
    its own lock; an Injective generation holds the forecaster's lock. ``plan`` is not meant to race with
    forecasts.
    """

    paradigm = "?"

    def __init__(self, bundle_dir: str | Path, manifest: Manifest):
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self._plan: Plan | None = None
        self._settings: dict[str, Any] = {}
        self.memory_choice = None  # the planner's Choice behind the last plan (for describe_plan)
        self._cfg = (manifest, runtime_config(manifest))  # a malformed config fails at load

    # -- facts from the manifest
    @property
    def cfg(self) -> RuntimeConfig:
        """The typed ``manifest.config`` (:mod:`alignts.runtime.configs`), read once per manifest."""
        if self._cfg[0] is not self.manifest:
            self._cfg = (self.manifest, runtime_config(self.manifest))
        return self._cfg[1]

    @property
    def context_len(self) -> int:
        return self.cfg.context_len

    @property
    def horizon(self) -> int:
        return self.cfg.horizon

    @property
    def n_channels(self) -> int | None:
        return self.cfg.n_channels

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
        if variant is None:
            _warn_timed_elsewhere(self.manifest, self.bundle_dir)
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
        """Apply the bundle's training scaler to raw ``values [..., C, T]`` (identity when none stored).

        Raises InputError where a finite value overflows, or where a series that float32 can represent
        becomes constant in float32 once scaled (e.g. values near 1e-308 for a scaler fitted on values near 1):
        the models would forecast it as a flat line."""
        sc = self.cfg.scaler
        if not sc:
            return values
        raw = np.asarray(values, dtype=np.float64)
        with np.errstate(over="ignore"):  # overflow is refused just below, with the value
            scaled = (raw - np.asarray(sc["mean"])[:, None]) / np.asarray(sc["std"])[:, None]
        check_scaled(raw, scaled, sc)
        return scaled

    def unscale(self, values: np.ndarray) -> np.ndarray:
        """Invert :meth:`scale` on ``values [..., C, H]``; NonFiniteOutputError when that overflows."""
        sc = self.cfg.scaler
        if not sc:
            return values
        with np.errstate(over="ignore"):
            out = values * np.asarray(sc["std"])[:, None] + np.asarray(sc["mean"])[:, None]
        check_finite_forecast(out, where="after the training scaler's inverse")
        return out

    # -- input checks
    def _batch(self, a: np.ndarray) -> np.ndarray:
        """``a`` ([B, C, T] or [C, T]) as [B, C, T] with B, C >= 1 and the model's C; ShapeError otherwise."""
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise ShapeError(f"expected x as [B, C, L], [C, L] or a DataFrame; got shape {a.shape}. "
                             "Fix: put channels second to last and time last.")
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise ShapeError(f"expected at least one series (B >= 1 and C >= 1); got shape {a.shape}. "
                             "Fix: pass a non-empty batch.")
        c = self.n_channels
        if c is not None and a.shape[1] != c:
            raise ShapeError(f"expected {c} channels (the model was fitted on {c}); got {a.shape[1]} "
                             f"(input shape {a.shape}). Fix: pass the same columns as at fit time, time last.")
        return a

    def prepare(self, x: Any) -> np.ndarray:
        """Turn ``x`` ([B, C, T], [C, T] or a DataFrame with time down the rows) into float32 [B, C, L].

        The rule (the models compute in float32): the last L points of every series must be finite (masked
        entries of a numpy masked array count as missing), within float32's range (|x| <= 3.4e38), and a
        series that is not all zeros must reach float32's normal range (max |x| >= 1.2e-38; below it float32
        keeps no precision and the forecast would be meaningless). Complex, text, object and dict inputs and
        empty batches are refused. Each refusal is an InputError (ShapeError for shapes) naming the fix.
        """
        a = self._batch(as_float_array(x))
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
        check_float32_range(a)
        return np.ascontiguousarray(a, dtype=np.float32)

    @property
    def quantile_method(self) -> str:
        """Where quantiles come from: ``conformal`` (the manifest's calibration) or ``none`` (not calibrated);
        Injective says ``samples``."""
        return "conformal" if self.cfg.conformal else "none"

    def forecast(self, x: Any, quantiles: Sequence[float] | None = None) -> Forecast:
        """Forecast the next H steps of every channel, in the units of ``x`` (raw; the training scaler is
        applied and inverted inside).

        x:         ``[B, C, T]`` or ``[C, T]`` array, a list of B series ``[C, T_i]`` (``[T_i]`` for one
                   channel) of any lengths ``T_i >= 1``, or a DataFrame with time down the rows (numeric
                   columns = channels). The context rule is :meth:`context`'s: NaN filled, last L points, short
                   series left-padded with their first value.
        quantiles: ascending levels in (0, 1), e.g. ``(0.1, 0.5, 0.9)``; None = none. Injective takes them from
                   its samples; Internal/Bridging from the bundle's split-conformal calibration
                   (InputError naming ``alignts calibrate`` when it has none).
        Returns a :class:`Forecast`; ``mean`` equals ``unscale(forecast_scaled(scale(x)))`` for Internal and
        Bridging, ``median`` does for Injective.
        """
        _ = self.planned  # NotPlannedError before plan()
        levels = self._quantile_levels(quantiles)
        a = self.prepare(self.scale(self.context(x)))
        return self._result(a, *self._predict(a, levels), levels)

    def _result(self, a: np.ndarray, mean: np.ndarray, median: np.ndarray, q: np.ndarray | None,
                levels: tuple[float, ...] | None) -> Forecast:
        """The Forecast of model-unit outputs for the prepared context ``a``: finiteness checked, unscaled."""
        for y in (mean, median) + ((q,) if q is not None else ()):
            check_finite_forecast(y, context=a if y.ndim == a.ndim else None)
        if q is not None:  # [B, C, H, Q]: unscale works on [..., C, H]
            q = np.moveaxis(self.unscale(np.moveaxis(q, -1, 0)), 0, -1)
        return Forecast(mean=self.unscale(mean), median=self.unscale(median), quantiles=q,
                        quantile_levels=levels or (), quantile_method="none" if q is None else self.quantile_method,
                        plan=self.planned)

    def stream(self, n_channels: int | None = None, forecast_every: int | None = None, policy: str = "latest",
               quantiles: Sequence[float] | None = None, kv: bool | None = None, drift=None,
               forecast_every_s: float | None = None):
        """A :class:`alignts.runtime.stream.Stream` on this planned forecaster: ``update(values)`` point by
        point in O(1) memory and work per point, ``forecast()`` when wanted, every ``forecast_every`` points or
        every ``forecast_every_s`` seconds of the stream's timestamps.
        See :mod:`alignts.runtime.stream` for the options; many streams may share one forecaster."""
        from alignts.runtime.stream import Stream

        return Stream(self, n_channels=n_channels, forecast_every=forecast_every, policy=policy,
                      quantiles=quantiles, kv=kv, drift=drift, forecast_every_s=forecast_every_s)

    def forecast_df(self, df: Any, id_column: str | None = None, timestamp_column: str | None = None,
                    target: str | Sequence[str] | None = None,
                    quantiles: Sequence[float] | None = (0.1, 0.5, 0.9)) -> Any:
        """Forecast every series of a DataFrame; returns a long-format DataFrame of the next H steps.

        Long format (GluonTS / Chronos / AutoGluon): one row per (item, timestamp), ``id_column`` (default: the
        first of ``item_id``, ``id``, ``unique_id`` present; an AutoGluon (item_id, timestamp) MultiIndex works
        too), ``timestamp_column`` and ``target`` (default ``target``; a list for a multi-channel model). Wide
        format (no id column): time down the rows, every numeric column a channel (or ``target``), timestamps
        from ``timestamp_column``, a ``timestamp``/``date`` column or a DatetimeIndex. Items may have different
        lengths (:meth:`context`'s rule).
        Output columns: the id column (long input), the timestamp column (future timestamps continued by each
        item's inferred frequency; step numbers when there is none), ``target`` (when several targets), ``mean``
        and one column per quantile level named ``str(level)`` (``"0.1"``, ``"0.5"``, ``"0.9"``).
        """
        from alignts.data.frames import forecast_frame, frame_series

        fs = frame_series(df, id_column=id_column, timestamp_column=timestamp_column, target=target)
        fc = self.forecast(fs.values, quantiles=quantiles)
        return forecast_frame(fs, fc.mean, fc.quantiles, fc.quantile_levels)

    def forecast_scaled(self, x: Any) -> np.ndarray:
        """The model's own units: ``x [B, C, T>=L]`` already scaled with the training scaler -> [B, C, H]
        (evaluation and benchmarks; NaN refused, see :meth:`prepare`)."""
        return self._point(self.prepare(x))

    def context(self, x: Any) -> np.ndarray:
        """Raw input (see :meth:`forecast`) -> float64 ``[B, C, L]``, the context the model reads.

        Per series: NaN (and masked entries) filled over the whole given series by the data layer's rule
        (:func:`alignts.data.series.fill_missing`: interior gaps linear, leading ones back-filled, trailing ones
        forward-filled); then its last L points; a series shorter than L is left-padded with its first filled
        value (what a NaN pad would become under the same rule; TimesFM pads short inputs too). An all-NaN
        series raises InputError. Other checks (channels, float32 range, inf) are :meth:`prepare`'s.
        """
        if isinstance(x, (list, tuple)):  # a batch of series, lengths may differ
            rows = [as_series(v, i) for i, v in enumerate(x)]
            if len({r.shape[0] for r in rows}) > 1:
                raise ShapeError(f"the series have {sorted({r.shape[0] for r in rows})} channels; expected the same "
                                 f"number in each (the model takes {self.n_channels or 'any'}). Fix: pass every "
                                 "series as [C, T_i] with the same C.")
            self._batch(np.empty((len(rows), rows[0].shape[0] if rows else 0, 0)))  # B, C: prepare's rule
            return np.stack([self._fill(r, i) for i, r in enumerate(rows)])
        a = self._batch(as_float_array(x))
        L = self.context_len
        if a.shape[2] >= L and not np.isnan(a[:, :, -L:]).any():
            return a[:, :, -L:]
        return np.stack([self._fill(r, i) for i, r in enumerate(a)])

    def _fill(self, series: np.ndarray, b: int) -> np.ndarray:
        """One series ``[C, T]`` -> ``[C, L]`` by :meth:`context`'s rule."""
        from alignts.data.series import fill_missing

        empty = np.isnan(series).all(axis=-1)
        if empty.any():
            raise InputError(f"series b={b}, channel {int(np.argmax(empty))} has no observed value "
                             f"({series.shape[-1]} points, all NaN/masked); expected at least one. Fix: drop it "
                             "or pass its history.")
        L = self.context_len
        a = fill_missing(series.T).T if np.isnan(series).any() else series
        a = a[:, -L:]
        if a.shape[1] < L:
            a = np.concatenate([np.repeat(a[:, :1], L - a.shape[1], axis=1), a], axis=1)
        return a

    def _quantile_levels(self, quantiles: Sequence[float] | None) -> tuple[float, ...] | None:
        """Checked levels, or None; a bundle that cannot give them fails here, before the model runs."""
        if quantiles is None:
            return None
        from alignts.runtime.conformal import check_levels, conformal_quantiles

        levels = tuple(float(v) for v in check_levels(quantiles))
        if self.quantile_method != "samples":  # the calibration's own errors (none stored, levels out of range)
            conformal_quantiles(np.zeros((1, 1, 1)), np.ones((1, 1, 2)), self.cfg.conformal,
                                levels, bundle=str(self.bundle_dir))
        return levels

    def _predict(self, a: np.ndarray, levels: tuple[float, ...] | None):
        """Model units: prepared ``a [B, C, L]`` -> (mean, median [B, C, H], quantiles [B, C, H, Q] or None).
        A point forecaster's mean and median are its output; quantiles come from the conformal calibration."""
        y = self._point(a)
        q = None
        if levels is not None:
            from alignts.runtime.conformal import conformal_quantiles

            q = conformal_quantiles(y, a, self.cfg.conformal, levels, bundle=str(self.bundle_dir))
        return y, y.copy(), q

    def _point(self, a: np.ndarray) -> np.ndarray:
        y = self._batched(self._forecast, a)
        check_finite_forecast(y, context=a)
        return y

    def _batched(self, fn, a: np.ndarray) -> np.ndarray:
        """``fn`` over chunks of at most batch_size windows of ``a [B, C, L]``, joined, cut to the planned H."""
        plan = self.planned
        outs = [fn(a[i:i + plan.batch_size]) for i in range(0, a.shape[0], plan.batch_size)]
        return np.concatenate(outs, axis=0)[..., :plan.horizon]

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
