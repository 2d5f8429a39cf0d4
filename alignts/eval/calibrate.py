"""Split-conformal calibration of Internal and Bridging bundles (the quantiles of :mod:`alignts.runtime.conformal`).

``calibrate(forecaster, splits)`` runs a planned forecaster over validation windows (scaled with the training
scaler, as ``alignts eval`` scores), takes the residuals ``(y - yhat) / s`` (``s``: instance std of each
window's context) and returns the ``config["conformal"]`` dict: per horizon step, the split-conformal
quantile of the residuals at each level. ``write_calibration`` stores it in a bundle's manifest;
``calibrate_bundle`` does both for a bundle folder (``alignts fit`` and ``alignts calibrate`` call it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alignts.data.splits import Splits
from alignts.errors import InputError
from alignts.eval.evaluate import split_windows, window_batches
from alignts.runtime.conformal import (DEFAULT_LEVELS, METHOD, NORMALIZED_BY, check_levels, context_std,
                                       split_conformal_quantiles)
from alignts.runtime.manifest import Manifest, bundle_lock, read_manifest, write_manifest

log = logging.getLogger(__name__)

MAX_WINDOWS = 512
CALIBRATED = ("internal", "bridging")  # Injective's quantiles come from its samples


def check_paradigm(paradigm: str) -> None:
    """InputError unless bundles of ``paradigm`` take a calibration."""
    if paradigm not in CALIBRATED:
        raise InputError(f"calibration is for {' and '.join(CALIBRATED)} bundles; got a {paradigm} one. Fix: "
                         "none needed for Injective: its quantiles come from its samples (forecast_quantiles).")


def calibrate(forecaster, splits: Splits, max_windows: int = MAX_WINDOWS, levels: Sequence[float] = DEFAULT_LEVELS,
              split: str = "val", batch_size: int = 256, progress: bool = False) -> dict[str, Any]:
    """The ``config["conformal"]`` dict of a planned Internal/Bridging forecaster, from the ``split`` windows.

    splits: made for the forecaster's L and H (``make_splits(data, L, H)``); at most ``max_windows`` windows
    are used, evenly spaced over the split, every channel of each. Residual quantiles are rounded to 7
    significant digits (the models compute in float32).
    """
    check_paradigm(forecaster.paradigm)
    if max_windows < 1:
        raise InputError(f"max_windows={max_windows}: expected >= 1.")
    plan = forecaster.planned
    L, H = forecaster.context_len, forecaster.horizon
    if plan.horizon != H:
        raise InputError(f"the forecaster is planned for horizon {plan.horizon}; calibration needs the model's "
                         f"{H}. Fix: plan it without horizon=.")
    lv = check_levels(levels)
    n = split_windows(splits, split, L, H)[0].shape[0]
    index = np.unique(np.linspace(0, n - 1, min(n, max_windows)).round().astype(np.int64))
    _, batches = window_batches(splits, split, L, H, batch_size, index=index, progress=progress)
    t0 = time.perf_counter()
    residuals = []  # [B * C, H] each, NaN where not scored
    n_series = 0
    for b in batches:
        r = (b.y - forecaster.forecast_scaled(b.x)) / context_std(b.x)  # [B, C, H]
        if b.use is not None:
            r = np.where(b.use, r, np.nan)
            n_series += int(b.use.any(axis=-1).sum())
        else:
            n_series += r.shape[0] * r.shape[1]
        residuals.append(r.reshape(-1, H))
    table = split_conformal_quantiles(np.concatenate(residuals), lv)  # [K, H]
    log.info("calibrated on %d %s windows (%d series) in %.1f s", len(index), split, n_series,
             time.perf_counter() - t0)
    return {"method": METHOD, "split": split, "n_windows": int(len(index)), "n_series": n_series,
            "normalized_by": NORMALIZED_BY, "levels": [float(v) for v in lv],
            "residual_quantiles": [[float(f"{v:.7g}") for v in row] for row in table]}


def write_calibration(bundle_dir: str | os.PathLike, conformal: dict[str, Any]) -> Manifest:
    """Store ``conformal`` as ``config["conformal"]`` of the bundle's manifest (replacing any earlier one).

    Under the bundle's writer lock, and atomic (:func:`write_manifest`): a reader sees the old or the new
    manifest, never a half-written file. The bundle's other files are untouched. Returns the Manifest."""
    bundle = Path(bundle_dir)
    with bundle_lock(bundle):
        m = read_manifest(bundle, verify=False)
        m = dataclasses.replace(m, config={**m.config, "conformal": conformal})
        write_manifest(bundle, m)
    return m


def calibrate_bundle(bundle_dir: str | os.PathLike, splits: Splits, max_windows: int = MAX_WINDOWS,
                     variant: str | None = None, threads: int | None = None, batch_size: int = 8,
                     progress: bool = False) -> Manifest:
    """Calibrate a bundle folder through its runtime forecaster (``variant``; default the first, most accurate)
    and write the result into its manifest; returns the new Manifest."""
    from alignts.runtime import load

    f = load(bundle_dir)
    f.plan(variant=variant, threads=threads, batch_size=batch_size)
    return write_calibration(bundle_dir, calibrate(f, splits, max_windows=max_windows, progress=progress))
