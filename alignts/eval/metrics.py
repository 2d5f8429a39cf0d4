"""Forecast metrics. Arrays may have any shape; time is the last axis for ``mase``; quantiles add a last axis Q.

Point forecasts: ``mse``, ``mae``, ``smape``, ``mase``. Quantile forecasts: ``coverage`` of an interval,
``wql`` (weighted quantile loss) and ``crps_quantiles`` (CRPS approximated from the quantiles), both from the
pinball loss that :class:`QuantileScores` accumulates over batches.

NaN policy: the metrics raise InputError on NaN/inf unless a ``mask`` is given, in which case only entries
where the mask is True are scored (those must be finite). ``mase`` is NaN-safe in its history (the scale uses
only pairs of observed values) but not in ``y_true``/``y_pred``.
"""

from __future__ import annotations

import numpy as np

from typing import Sequence

from alignts.errors import InputError, ShapeError
from alignts.runtime.conformal import check_levels


def _pair(y_true, y_pred, mask, name: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise ShapeError(f"{name}: y_true {t.shape} and y_pred {p.shape} differ in shape. "
                         "Fix: predict exactly the target's shape.")
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != t.shape:
            raise ShapeError(f"{name}: mask {m.shape} must match y_true {t.shape}.")
        t, p = t[m], p[m]
    if t.size == 0:
        raise InputError(f"{name}: nothing to score (empty arrays or an all-False mask). Fix: pass targets.")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        which = "y_pred" if np.isfinite(t).all() else "y_true"
        raise InputError(f"{name}: {which} holds NaN or inf where it is scored. Fix: pass mask= to skip "
                         "missing targets, or check the forecaster's output.")
    return t, p


def mse(y_true, y_pred, mask=None) -> float:
    """Mean squared error over all (masked) entries."""
    t, p = _pair(y_true, y_pred, mask, "mse")
    return float(np.mean((t - p) ** 2))


def mae(y_true, y_pred, mask=None) -> float:
    """Mean absolute error over all (masked) entries."""
    t, p = _pair(y_true, y_pred, mask, "mae")
    return float(np.mean(np.abs(t - p)))


def smape(y_true, y_pred, mask=None) -> float:
    """Symmetric MAPE in percent (0..200): ``200 * |y - f| / (|y| + |f|)``, 0 where both are 0."""
    t, p = _pair(y_true, y_pred, mask, "smape")
    den = np.abs(t) + np.abs(p)
    ratio = np.divide(np.abs(t - p), den, out=np.zeros_like(den), where=den > 0)
    return float(200.0 * ratio.mean())


def mase_scale(history, m: int = 1) -> float:
    """The MASE denominator: mean ``|h_t - h_{t-m}|`` over the in-sample history ``[T]`` (NaN pairs skipped).

    Falls back to ``m = 1`` when the history is not longer than ``m``. Returns NaN when no pair is observed
    and 0 for a constant history (callers decide what to do with those).
    """
    h = np.asarray(history, dtype=np.float64).reshape(-1)
    if m < 1:
        raise InputError(f"mase: the seasonal period m must be >= 1; got {m}.")
    if h.size <= m:
        m = 1
    if h.size <= m:
        return float("nan")
    d = np.abs(h[m:] - h[:-m])
    d = d[np.isfinite(d)]
    return float(d.mean()) if d.size else float("nan")


def mase(y_true, y_pred, history, m: int = 1) -> float:
    """Mean absolute scaled error of one series: MAE of the forecast over ``mase_scale(history, m)``.

    ``y_true``/``y_pred`` are ``[H]``; ``history`` ``[T]`` is the in-sample part before the forecast.
    Raises InputError when the scale is 0 or undefined (constant or too-short history).
    """
    t, p = _pair(y_true, y_pred, None, "mase")
    scale = mase_scale(history, m)
    if not np.isfinite(scale) or scale == 0:
        raise InputError(f"mase: the history (length {np.asarray(history).size}) gives scale {scale} "
                         f"with m={m}; MASE is undefined for a constant or too-short history. "
                         "Fix: leave such series out or report MAE.")
    return float(np.mean(np.abs(t - p)) / scale)


# ------------------------------------------------------------------------------------------- quantiles

def coverage(y, lo, hi, mask=None) -> float:
    """Fraction of (masked) entries with ``lo <= y <= hi``; ``y``, ``lo``, ``hi`` share one shape."""
    t, a = _pair(y, lo, mask, "coverage")
    _, b = _pair(y, hi, mask, "coverage")
    return float(np.mean((a <= t) & (t <= b)))


class QuantileScores:
    """Running sums of the pinball loss per level, ``sum |y|``, entries and hits of the outer interval
    (lowest to highest level), so that ``wql``, ``crps`` and ``coverage`` over many batches equal the metric
    of the batches joined.

    Pinball loss of level tau: ``max(tau (y - q), (tau - 1) (y - q))``.
    """

    def __init__(self, levels: Sequence[float]):
        self.levels = check_levels(levels)
        self.loss = np.zeros(self.levels.size)  # [Q]
        self.abs_y = 0.0
        self.n = 0
        self.hits = 0

    def add(self, y, quantiles, mask=None) -> "QuantileScores":
        """Add ``y [...]`` with ``quantiles [..., Q]`` (Q = len(levels)) where ``mask [...]`` is True."""
        t = np.asarray(y, dtype=np.float64)
        q = np.asarray(quantiles, dtype=np.float64)
        if q.shape != t.shape + (self.levels.size,):
            raise ShapeError(f"quantiles {q.shape}: expected y's shape {t.shape} + ({self.levels.size},) "
                             "(one value per level). Fix: stack the quantiles on a last axis.")
        if mask is not None:
            m = np.asarray(mask, dtype=bool)
            if m.shape != t.shape:
                raise ShapeError(f"quantile scores: mask {m.shape} must match y {t.shape}.")
            t, q = t[m], q[m]
        t, q = t.reshape(-1), q.reshape(-1, self.levels.size)
        if not (np.isfinite(t).all() and np.isfinite(q).all()):
            which = "quantiles" if np.isfinite(t).all() else "y"
            raise InputError(f"quantile scores: {which} holds NaN or inf where it is scored. Fix: pass mask= to "
                             "skip missing targets, or check the forecaster's output.")
        d = t[:, None] - q  # [n, Q]
        self.loss += np.maximum(self.levels * d, (self.levels - 1) * d).sum(axis=0)
        self.abs_y += float(np.abs(t).sum())
        self.n += t.size
        self.hits += int(((q[:, 0] <= t) & (t <= q[:, -1])).sum())
        return self

    def _need(self, what: str) -> None:
        if self.n == 0:
            raise InputError(f"{what}: nothing to score (empty arrays or an all-False mask). Fix: pass targets.")

    @property
    def wql(self) -> float:
        """Weighted quantile loss (GluonTS ``mean_wQuantileLoss``, Chronos' WQL): mean over levels of
        ``2 * sum pinball / sum |y|``."""
        self._need("wql")
        if self.abs_y == 0:
            raise InputError("wql: sum |y| is 0 (all targets are zero), so the weighted loss is undefined. "
                             "Fix: report crps_quantiles instead.")
        return float(np.mean(2 * self.loss / self.abs_y))

    @property
    def crps(self) -> float:
        """CRPS approximated by the quantiles: mean over levels and entries of ``2 * pinball`` (= MAE for a
        single level 0.5; the finer the levels, the closer to the integral over all levels)."""
        self._need("crps")
        return float(np.mean(2 * self.loss / self.n))

    @property
    def coverage(self) -> float:
        """Fraction of entries inside [lowest level's quantile, highest level's quantile]."""
        self._need("coverage")
        return self.hits / self.n


def wql(y, quantiles, levels: Sequence[float], mask=None) -> float:
    """Weighted quantile loss of ``quantiles [..., Q]`` at ``levels`` for ``y [...]`` (see QuantileScores.wql)."""
    return QuantileScores(levels).add(y, quantiles, mask).wql


def crps_quantiles(y, quantiles, levels: Sequence[float], mask=None) -> float:
    """CRPS approximated from ``quantiles [..., Q]`` at ``levels`` (see QuantileScores.crps)."""
    return QuantileScores(levels).add(y, quantiles, mask).crps
