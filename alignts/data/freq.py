"""Frequency inference and the seasonal period that goes with a frequency."""

from __future__ import annotations

import warnings

import numpy as np

from alignts.errors import InputError

# Monash .tsf @frequency keywords -> seasonal period (the Monash archive's own seasonality table).
_KEYWORD_PERIODS = {
    "4_seconds": 21600, "10_seconds": 8640, "minutely": 1440, "10_minutes": 144, "half_hourly": 48,
    "hourly": 24, "daily": 7, "weekly": 52, "monthly": 12, "quarterly": 4, "yearly": 1,
}
_DAY_NS = 86_400 * 10**9


def infer_freq(timestamps: np.ndarray | None) -> str | None:
    """A pandas frequency string for ``timestamps`` ([T] datetime64), or None.

    Uses ``pandas.infer_freq``; when the index has gaps it falls back to the most common step.
    """
    import pandas as pd
    if timestamps is None or len(timestamps) < 3:
        return None
    idx = pd.DatetimeIndex(np.asarray(timestamps, dtype="datetime64[ns]"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas 3 warns that infer_freq will return an offset
            f = pd.infer_freq(idx)
    except (TypeError, ValueError):
        f = None
    if f is not None:
        return f if isinstance(f, str) else f.freqstr
    steps = np.diff(idx.asi8)
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    vals, counts = np.unique(steps, return_counts=True)
    step = int(vals[np.argmax(counts)])
    days = step / _DAY_NS
    # Calendar steps are not fixed in ns: name them by their typical length.
    for lo, hi, name in ((28, 31, "MS"), (89, 92, "QS"), (365, 366, "YS")):
        if lo <= days <= hi:
            return name
    if step % _DAY_NS == 0:
        n_days = step // _DAY_NS
        return "D" if n_days == 1 else f"{n_days}D"
    return pd.tseries.frequencies.to_offset(pd.Timedelta(step)).freqstr


def seasonal_period(freq: str | None) -> int:
    """The seasonal period (in steps) for a frequency: hourly 24, 15-min 96, daily 7, weekly 52,
    monthly 12, quarterly 4, yearly 1; any other sub-daily step gives the number of steps per day.

    Accepts pandas frequency strings (``"h"``, ``"15min"``, ``"W-SUN"``, ``"MS"``) and Monash keywords.
    Raises InputError when ``freq`` is None or unknown (pass ``period=`` explicitly then).
    """
    import pandas as pd
    if freq is None:
        raise InputError("the seasonal period cannot be derived: the data has no known frequency. "
                         "Fix: pass period=N (e.g. --period 24 for hourly data).")
    key = freq.strip().lower()
    if key in _KEYWORD_PERIODS:
        return _KEYWORD_PERIODS[key]
    try:
        off = pd.tseries.frequencies.to_offset(freq)
    except ValueError as e:
        raise InputError(f"unknown frequency {freq!r} ({e}). Fix: pass period=N explicitly.") from None
    name = type(off).__name__
    if "Month" in name:
        return max(1, 12 // off.n)
    if "Quarter" in name:
        return max(1, 4 // off.n)
    if "Year" in name:
        return 1
    if name == "Week":
        return max(1, 52 // off.n)
    if name in ("BusinessDay", "CustomBusinessDay"):
        return 5
    try:
        ns = pd.Timedelta(off).value
    except (TypeError, ValueError):
        raise InputError(f"no seasonal period known for frequency {freq!r}. Fix: pass period=N.") from None
    if ns <= 0:
        raise InputError(f"frequency {freq!r} has a non-positive step. Fix: pass period=N.")
    if ns < _DAY_NS:
        return max(1, _DAY_NS // ns)
    if ns == _DAY_NS:
        return 7
    if ns == 7 * _DAY_NS:
        return 52
    return 1


def future_index(timestamps, freq: str | None, n_rows: int, horizon: int):
    """Timestamps of the H steps after a series (``timestamps`` [T] datetimes continued by ``freq``), numbers
    continued by their most common step, or step numbers ``n_rows..n_rows+H-1`` when neither is known."""
    import pandas as pd

    ts = None if timestamps is None else np.asarray(timestamps)
    if ts is not None and ts.size and ts.dtype.kind in "iuf":
        steps = np.diff(ts)
        vals, counts = np.unique(steps[steps > 0], return_counts=True)
        step = vals[np.argmax(counts)] if vals.size else 1
        return pd.Index(ts[-1] + step * np.arange(1, horizon + 1))
    if ts is not None and ts.size and freq:
        try:
            return pd.date_range(start=pd.Timestamp(ts[-1]), periods=horizon + 1, freq=freq)[1:]
        except (ValueError, TypeError):
            pass
    return pd.RangeIndex(n_rows, n_rows + horizon, name="step")
