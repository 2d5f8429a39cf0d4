"""The in-memory series type and the missing-value policy.

Missing-value policy
--------------------
Loading never changes the data: missing entries stay NaN in ``TimeSeriesData.values`` and ``mask`` records
what was observed (True = observed). Only when training or evaluation windows are built are gaps filled,
per split segment and per channel (``fill_missing``):

- interior gaps are linearly interpolated between the observations on either side;
- leading gaps are back-filled with the first observation (trailing gaps forward-filled with the last one);
- a channel with no observation at all in a segment is filled with 0 (the scaled mean);
- a (window, channel) pair whose context is entirely missing is not scored, and the number dropped is
  reported (``evaluate`` returns it as ``n_dropped``); targets that were missing are not scored either.

The scaler statistics use observed values only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alignts.errors import ShapeError


@dataclass(frozen=True)
class TimeSeriesData:
    """A multivariate series or a collection of series, time first.

    Attributes:
        name: short name (file stem or ``statsmodels:NAME``), used to pick split schemes and published rows.
        values: float64 ``[T, C]``, NaN where missing.
        columns: one name per channel (``C``).
        timestamps: datetime64[ns] ``[T]`` or None (collections of unequal series, or no date column).
        freq: a pandas frequency string (``"h"``, ``"15min"``, ``"MS"``) or a Monash keyword
            (``"monthly"``), or None when it cannot be inferred.
        mask: bool ``[T, C]``, True where the value was observed (before any filling).
        source: where it came from (path or ``statsmodels:NAME``).
        horizon: the dataset's own forecast horizon (Monash ``@horizon``), else None.
        starts: for collections, the start timestamp of each series as text (Monash), else empty.
        collection: True for a right-aligned collection of separate series (Monash), False for one
            multivariate series with a shared time axis.

    A collection of unequal-length series (Monash) is stored right-aligned: every series ends at row T-1,
    shorter ones have NaN in front; one column per series.
    """

    name: str
    values: np.ndarray  # [T, C] float64
    columns: tuple[str, ...]
    timestamps: np.ndarray | None  # [T] datetime64[ns]
    freq: str | None
    mask: np.ndarray  # [T, C] bool
    source: str
    horizon: int | None = None
    starts: tuple[str, ...] = field(default=())
    collection: bool = False

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise ShapeError(f"TimeSeriesData.values must be [T, C]; got shape {self.values.shape}. "
                             "Fix: reshape a single series to [T, 1].")
        if self.mask.shape != self.values.shape:
            raise ShapeError(f"mask shape {self.mask.shape} must equal values shape {self.values.shape}.")
        if len(self.columns) != self.values.shape[1]:
            raise ShapeError(f"{len(self.columns)} column names for {self.values.shape[1]} channels.")
        if self.timestamps is not None and len(self.timestamps) != self.values.shape[0]:
            raise ShapeError(f"{len(self.timestamps)} timestamps for {self.values.shape[0]} rows.")

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.values.shape[1])

    def missing_counts(self) -> np.ndarray:
        """Missing values per channel ``[C]``; for a collection the right-alignment padding is not counted."""
        miss = ~self.mask
        if self.collection:
            miss = miss & (np.cumsum(self.mask, axis=0) > 0)
        return miss.sum(axis=0)

    def series(self, i: int) -> np.ndarray:
        """Column ``i`` with its leading missing values (right-aligned padding) removed: ``[T_i]``."""
        col = self.values[:, i]
        obs = np.flatnonzero(~np.isnan(col))
        return col[obs[0]:].copy() if obs.size else col[:0].copy()


def fill_missing(values: np.ndarray) -> np.ndarray:
    """Fill NaN per channel by the module's policy: interior linear, ends nearest observation, empty -> 0.

    ``values`` is ``[T, C]`` (or ``[T]``); returns a new float64 array of the same shape without NaN.
    """
    arr = np.array(values, dtype=np.float64, copy=True)
    flat = arr.reshape(arr.shape[0], -1)  # [T, C]
    t = np.arange(flat.shape[0], dtype=np.float64)
    for c in range(flat.shape[1]):
        col = flat[:, c]
        miss = np.isnan(col)
        if not miss.any():
            continue
        if miss.all():
            col[:] = 0.0
            continue
        # np.interp is linear inside and constant (nearest observation) outside the observed range.
        col[miss] = np.interp(t[miss], t[~miss], col[~miss])
    return arr
