"""Quantiles for point forecasters from split-conformal calibration (torch-free, numpy only).

Internal and Bridging bundles forecast one path; their quantiles come from the residuals of the model on the
validation split, stored in ``manifest.config["conformal"]`` by ``alignts fit`` or ``alignts calibrate``
(:mod:`alignts.eval.calibrate` writes it)::

    {"method": "split-conformal", "split": "val", "n_windows": 512, "n_series": 3584,
     "normalized_by": "instance_std", "levels": [0.01, ..., 0.99],
     "residual_quantiles": [[q_level0_h0, ..., q_level0_hH-1], ...]}      # [n_levels][H]

A residual is ``r = (y - yhat) / s`` in the units the model sees (after the training scaler), with ``s`` the
instance std of the window's context (:func:`context_std`, the model's RevIN statistic), so intervals widen
with each window's own volatility. At run time a level ``tau`` is interpolated linearly between the stored
levels and ``quantile = yhat + s * q_tau(h)``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from alignts.errors import InputError, ManifestError, ShapeError
from alignts.kernels.norm import instance_stats

METHOD = "split-conformal"
NORMALIZED_BY = "instance_std"
EPS = 1e-5  # the RevIN eps the paradigms use
DEFAULT_LEVELS = (0.01, 0.025, 0.05) + tuple(round(0.1 + 0.05 * i, 2) for i in range(17)) + (0.95, 0.975, 0.99)
_CALIBRATE_FIX = "Fix: alignts calibrate {bundle} --data DATA (or re-fit the bundle with this alignts)."


def context_std(context: np.ndarray) -> np.ndarray:
    """The residual scale ``s`` of each series: instance std (eps 1e-5) of ``context [..., L]`` -> ``[..., 1]``."""
    return instance_stats(context, EPS)[1]


def order_statistic_index(n: np.ndarray, tau: float) -> np.ndarray:
    """1-based rank of the split-conformal ``tau`` quantile among ``n`` sorted residuals (per column).

    The level moves towards the tail, ``ceil((n + 1) tau) / n`` for tau >= 0.5 and ``floor((n + 1) tau) / n``
    below, clipped to [0, 1]; the empirical quantile at level ``k / n`` is the k-th smallest value (k >= 1)."""
    n = np.asarray(n, dtype=np.int64)
    x = (n + 1) * float(tau)
    k = np.ceil(x - 1e-9) if tau >= 0.5 else np.floor(x + 1e-9)  # 1e-9: (n + 1) * 0.7 is 7.000000000000001
    return np.clip(k.astype(np.int64), 1, np.maximum(n, 1))


def split_conformal_quantiles(residuals: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Per-column split-conformal quantiles of ``residuals [n, H]`` (NaN = not observed) -> ``[len(levels), H]``."""
    r = np.asarray(residuals, dtype=np.float64)
    if r.ndim != 2:
        raise ShapeError(f"residuals: expected [n, H]; got shape {r.shape}.")
    n = np.isfinite(r).sum(axis=0)  # [H]
    if (n == 0).any():
        h = int(np.argmin(n))
        raise InputError(f"no observed residual at horizon step {h}; expected at least one per step. Fix: "
                         "calibrate on a split with observed targets.")
    ordered = np.sort(np.where(np.isfinite(r), r, np.inf), axis=0)  # missing ones sort last
    cols = np.arange(r.shape[1])
    return np.stack([ordered[order_statistic_index(n, tau) - 1, cols] for tau in check_levels(levels)])


def conformal_quantiles(point: np.ndarray, context: np.ndarray, conformal: Mapping[str, Any] | None,
                        levels: Sequence[float], bundle: str = "BUNDLE") -> np.ndarray:
    """Quantiles around a point forecast from a bundle's calibration, in the model's (scaled) units.

    point:     ``[B, C, H]`` forecast after the training scaler (``Forecaster.forecast_scaled``).
    context:   ``[B, C, L]`` the scaled context the model read (its instance std scales the residuals).
    conformal: ``manifest.config.get("conformal")``; None raises InputError with the fix.
    levels:    ascending quantile levels within the stored range.
    Returns ``[B, C, H, Q]`` float64, non-decreasing along Q.
    """
    stored, table = _table(conformal, bundle)
    lv = check_levels(levels)
    lo, hi = float(stored[0]), float(stored[-1])
    out = [v for v in lv if not lo - 1e-12 <= v <= hi + 1e-12]
    if out:
        raise InputError(f"quantile levels {out} are outside the calibrated range [{lo:g}, {hi:g}] of {bundle}; "
                         f"expected levels within it. Fix: request levels in [{lo:g}, {hi:g}], or re-calibrate "
                         "with wider levels (alignts.eval.calibrate.calibrate(..., levels=...)).")
    p = np.asarray(point, dtype=np.float64)
    if p.ndim != 3:
        raise ShapeError(f"point: expected [B, C, H]; got shape {p.shape}.")
    H = p.shape[-1]
    if H > table.shape[1]:
        raise ShapeError(f"point has H={H} steps; the calibration of {bundle} covers {table.shape[1]}. "
                         "Fix: forecast at most that horizon, or re-calibrate.")
    s = context_std(context)  # [B, C, 1]
    if s.shape != p.shape[:-1] + (1,):
        raise ShapeError(f"context {np.shape(context)} does not match point {p.shape}; expected [B, C, L] "
                         "with the point's B and C.")
    x = np.clip(lv, lo, hi)
    i = np.clip(np.searchsorted(stored, x, side="right") - 1, 0, len(stored) - 2)
    w = ((x - stored[i]) / (stored[i + 1] - stored[i]))[:, None]
    q = (1 - w) * table[i, :H] + w * table[i + 1, :H]  # [Q, H]
    return np.sort(p[..., None] + s[..., None] * q.T, axis=-1)


def check_levels(levels: Sequence[float]) -> np.ndarray:
    """``levels`` as a float64 array, or InputError unless strictly ascending in (0, 1)."""
    try:
        lv = np.asarray(levels, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"quantile levels {levels!r}: expected numbers in (0, 1). Fix: e.g. (0.1, 0.5, 0.9).") \
            from None
    if lv.size == 0 or not np.all((lv > 0) & (lv < 1)) or np.any(np.diff(lv) <= 0):
        raise InputError(f"quantile levels {lv.tolist()}: expected strictly ascending numbers in (0, 1). "
                         "Fix: e.g. (0.1, 0.5, 0.9).")
    return lv


def _table(conformal: Mapping[str, Any] | None, bundle: str) -> tuple[np.ndarray, np.ndarray]:
    """(levels [K], residual_quantiles [K, H]) of a stored calibration, checked."""
    if not conformal:
        raise InputError(f"{bundle} has no calibration (no config 'conformal' in its manifest); expected a "
                         f"calibrated Internal/Bridging bundle for quantiles. {_CALIBRATE_FIX.format(bundle=bundle)}")
    fix = _CALIBRATE_FIX.format(bundle=bundle)
    if not isinstance(conformal, Mapping) or conformal.get("method") != METHOD \
            or conformal.get("normalized_by") != NORMALIZED_BY:
        got = {k: conformal.get(k) for k in ("method", "normalized_by")} if isinstance(conformal, Mapping) \
            else type(conformal).__name__
        raise ManifestError(f"{bundle}: config.conformal is {got}; expected method {METHOD!r} normalized by "
                            f"{NORMALIZED_BY!r}. {fix}")
    try:
        stored = np.asarray(conformal.get("levels"), dtype=np.float64)
        table = np.asarray(conformal.get("residual_quantiles"), dtype=np.float64)
    except (TypeError, ValueError):
        stored = table = np.empty(0)
    ok = (stored.ndim == 1 and stored.size >= 2 and table.ndim == 2 and table.shape[0] == stored.size
          and table.shape[1] >= 1 and np.isfinite(table).all() and np.all((stored > 0) & (stored < 1))
          and np.all(np.diff(stored) > 0))
    if not ok:
        raise ManifestError(f"{bundle}: config.conformal holds levels of shape {stored.shape} and "
                            f"residual_quantiles of shape {table.shape}; expected >= 2 ascending levels in (0, 1) "
                            f"and a finite [n_levels][H] table. {fix}")
    return stored, table

