"""Drift on a stream's own forecast errors: a Page-Hinkley test per channel and an RLS output correction.

Each observation that the latest forecast covers (lead h = 1..H after its origin) gives an error per channel,
normalized by the window's standard deviation at the origin: ``|y - yhat_h| / s``. The Page-Hinkley kernel
(:func:`alignts.kernels.stream.page_hinkley`) watches that signal for an upward shift of its mean; an alarm on any
channel is a drift event.

Correction (``correct=True``): per channel, recursive least squares with forgetting factor ``forget`` fits
``(y - x0) / s = w0 + w1 * (yhat - x0) / s`` (x0: the last value at the forecast's origin, s: the window's std),
i.e. a bias and a gain on the forecast's change from the last value. It learns from every scored observation,
starts from the identity (w = [0, 1]) and is reset there at every drift event; it is applied to forecasts
(mean, median, quantiles) from the first drift event on, once it has ``warmup`` updates since the reset. The
applied gain is clipped to [0, 2] (quantiles stay ordered) and the bias to +-2 window stds, and the RLS
covariance's trace is capped (no wind-up when the errors do not excite a direction).

The Page-Hinkley signal is the mean over channels of the normalized absolute errors, each clipped at 10 (one test per stream: seven
noisy channels tested apart would raise seven times the false alarms); events name the channels whose normalized
error exceeded the stream's mean error at the alarm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from alignts.errors import InputError
from alignts.kernels.stream import page_hinkley

EPS = 1e-8
P_MAX = 1e3      # largest trace of an RLS covariance
BIAS_MAX = 2.0   # the applied bias stays within 2 window stds
GAIN_MAX = 2.0   # and the gain within [0, 2]
ERR_MAX = 10.0   # a normalized error counts at most this much (a near-flat window makes s tiny)


@dataclass(frozen=True)
class DriftConfig:
    """How a stream watches and answers drift.

    detect:    run the Page-Hinkley test on the forecast errors.
    reanchor:  on a drift event, re-anchor the engine (Injective KV: refit the scaler and re-prefill).
    correct:   apply the RLS output correction after the first drift event.
    delta, threshold, alpha, min_n: Page-Hinkley's tolerance, alarm threshold (in units of normalized error),
               fading factor and the points it needs before an alarm.
    forget:    RLS forgetting factor (0 < forget <= 1); warmup: RLS updates before it is applied.
    """

    detect: bool = True
    reanchor: bool = True
    correct: bool = False
    delta: float = 0.25
    threshold: float = 50.0
    alpha: float = 0.999
    min_n: int = 30
    forget: float = 0.995
    warmup: int = 24

    def __post_init__(self):
        if not 0 < self.forget <= 1 or self.warmup < 0:
            raise InputError(f"forget={self.forget}, warmup={self.warmup}: expected 0 < forget <= 1, warmup >= 0.")
        page_hinkley(np.zeros((0, 1)), np.zeros((1, 4)), self.delta, self.threshold, self.alpha, self.min_n)


class DriftMonitor:
    """Scores the latest forecast against arriving observations; O(C) per observation."""

    def __init__(self, n_channels: int, config: DriftConfig = DriftConfig()):
        self.cfg = config
        c = int(n_channels)
        self.ph = np.zeros((1, 4))                  # one Page-Hinkley test on the channel-mean signal
        self.w = np.tile([0.0, 1.0], (c, 1))       # [C, 2]
        self.P = np.tile(np.eye(2) * 100.0, (c, 1, 1))  # [C, 2, 2]
        self.n_rls = np.zeros(c, dtype=np.int64)
        self.active = False                          # a drift event has happened: the correction may apply
        self.n_events = 0
        self.events: list[dict[str, Any]] = []       # the last 100 events (t, channels)
        self.pending: list[dict[str, int]] = []      # events not yet reported with a forecast
        self.yhat: np.ndarray | None = None          # [C, H] latest point forecast (raw units)
        self.origin = -1                             # index of the last observation it saw
        self.x0 = np.zeros(c)
        self.scale = np.ones(c)

    # -- forecasts in
    def set_forecast(self, yhat: np.ndarray, origin: int, x0: np.ndarray, scale: np.ndarray) -> None:
        """The stream made a forecast ``yhat [C, H]`` (uncorrected) after observation ``origin``."""
        self.yhat = np.asarray(yhat, dtype=np.float64)
        self.origin = int(origin)
        self.x0 = np.where(np.isfinite(x0), x0, 0.0)
        self.scale = np.where(np.isfinite(scale) & (scale > EPS), scale, 1.0)

    def observe(self, x: np.ndarray, t: int) -> list[int]:
        """Score observation ``x [C]`` (index t); returns the channels whose test fired (maybe empty)."""
        if self.yhat is None:
            return []
        h = t - self.origin - 1
        if not 0 <= h < self.yhat.shape[1]:
            return []
        err = (x - self.yhat[:, h]) / self.scale  # NaN where x is missing: skipped by both
        fired: list[int] = []
        a = np.minimum(np.abs(err), ERR_MAX)
        if self.cfg.detect and np.isfinite(a).any():
            sig = np.array([[np.nanmean(a)]])
            if page_hinkley(sig, self.ph, self.cfg.delta, self.cfg.threshold, self.cfg.alpha, self.cfg.min_n)[0, 0]:
                fired = np.flatnonzero(np.nan_to_num(a, nan=-1.0) >= sig[0, 0]).tolist()
        self._rls(x, h)
        if fired:
            self.n_events += 1
            ev = {"t": int(t), "channels": fired}
            self.events = (self.events + [ev])[-100:]
            self.pending.append(ev)
            if self.cfg.correct:
                self.active = True
                self.w[:] = (0.0, 1.0)
                self.P[:] = np.eye(2) * 100.0
                self.n_rls[:] = 0
        return fired

    def _rls(self, x: np.ndarray, h: int) -> None:
        ok = np.isfinite(x)
        if not ok.any():
            return
        phi = np.stack([np.ones_like(self.x0), (self.yhat[:, h] - self.x0) / self.scale], axis=1)  # [C, 2]
        y = (x - self.x0) / self.scale
        Pphi = np.einsum("cij,cj->ci", self.P, phi)
        k = Pphi / (self.cfg.forget + np.einsum("ci,ci->c", phi, Pphi))[:, None]
        e = y - np.einsum("ci,ci->c", self.w, phi)
        w = self.w + k * e[:, None]
        P = (self.P - np.einsum("ci,cj->cij", k, Pphi)) / self.cfg.forget
        tr = np.trace(P, axis1=1, axis2=2)  # no covariance wind-up while the inputs do not excite a direction
        P *= np.minimum(1.0, P_MAX / np.maximum(tr, EPS))[:, None, None]
        self.w[ok], self.P[ok] = w[ok], P[ok]
        self.n_rls[ok] += 1

    # -- forecasts out
    def correcting(self) -> bool:
        return self.cfg.correct and self.active and bool((self.n_rls >= self.cfg.warmup).all())

    def correct(self, values: np.ndarray, x0: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Apply the correction to ``values [C, H, ...]`` (raw units) around ``x0 [C]`` with ``scale [C]``."""
        s = np.where(np.isfinite(scale) & (scale > EPS), scale, 1.0)
        x0 = np.where(np.isfinite(x0), x0, 0.0)
        shape = (-1,) + (1,) * (values.ndim - 1)
        w0 = np.clip(self.w[:, 0], -BIAS_MAX, BIAS_MAX).reshape(shape)
        w1 = np.clip(self.w[:, 1], 0.0, GAIN_MAX).reshape(shape)
        return x0.reshape(shape) + s.reshape(shape) * w0 + w1 * (values - x0.reshape(shape))

    def take_events(self) -> list[dict[str, Any]]:
        out, self.pending = self.pending, []
        return out

    # -- state
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"config": asdict(self.cfg), "active": self.active, "n_events": self.n_events,
                "events": self.events, "pending": self.pending, "origin": self.origin}
        arrays = {"ph": self.ph, "w": self.w, "P": self.P, "n_rls": self.n_rls, "x0": self.x0, "scale": self.scale}
        if self.yhat is not None:
            arrays["yhat"] = self.yhat
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "DriftMonitor":
        m = cls(arrays["w"].shape[0], DriftConfig(**meta["config"]))
        m.ph, m.w, m.P, m.n_rls = (np.array(arrays[k]) for k in ("ph", "w", "P", "n_rls"))
        m.x0, m.scale = np.array(arrays["x0"]), np.array(arrays["scale"])
        m.yhat = np.array(arrays["yhat"]) if "yhat" in arrays else None
        m.active, m.n_events, m.origin = bool(meta["active"]), int(meta["n_events"]), int(meta["origin"])
        m.events, m.pending = list(meta["events"]), list(meta["pending"])
        return m
