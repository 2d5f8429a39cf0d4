"""The result of :meth:`alignts.runtime.forecaster.Forecaster.forecast` (torch-free, numpy only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from alignts.errors import InputError

if TYPE_CHECKING:
    from alignts.runtime.forecaster import Plan

QUANTILE_METHODS = ("samples", "conformal", "none")


@dataclass(frozen=True)
class Forecast:
    """A forecast in the caller's (raw) units.

    mean:      [B, C, H] point forecast (Internal/Bridging: the model's output; Injective: mean of samples)
    median:    [B, C, H] (Internal/Bridging: = mean; Injective: the sample median, LLMTime's point forecast)
    quantiles: [B, C, H, Q] monotone non-decreasing along Q, or None when not requested
    quantile_levels: tuple of Q floats in (0, 1), sorted ascending (empty when no quantiles)
    quantile_method: "samples" (Injective), "conformal" (Internal/Bridging, from the manifest's calibration),
                     or "none" (no quantiles requested)
    plan:      the runtime Plan the call ran under
    """

    mean: np.ndarray
    median: np.ndarray
    quantiles: np.ndarray | None
    quantile_levels: tuple[float, ...]
    quantile_method: str
    plan: "Plan"

    def quantile(self, level: float) -> np.ndarray:
        """The ``[B, C, H]`` forecast at one of :attr:`quantile_levels`."""
        lv = np.asarray(self.quantile_levels, dtype=np.float64)
        hit = np.flatnonzero(np.isclose(lv, float(level), rtol=0, atol=1e-9))
        if self.quantiles is None or hit.size == 0:
            raise InputError(f"quantile level {level!r} was not computed; expected one of "
                             f"{list(self.quantile_levels)}. Fix: pass it in forecast(x, quantiles=...).")
        return self.quantiles[..., int(hit[0])]
