"""Point-forecast metrics. Arrays may have any shape; time is the last axis for ``mase``.

NaN policy: ``mse``, ``mae`` and ``smape`` raise InputError on NaN/inf unless a ``mask`` is given, in which
case only entries where the mask is True are scored (those must be finite). ``mase`` is NaN-safe in its
history (the scale uses only pairs of observed values) but not in ``y_true``/``y_pred``.
"""

from __future__ import annotations

import numpy as np

from alignts.errors import InputError, ShapeError


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
