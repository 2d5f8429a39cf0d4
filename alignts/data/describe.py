"""A summary of a data source: size, frequency, span, missing values and split sizes."""

from __future__ import annotations

import numpy as np

from alignts.data.freq import seasonal_period
from alignts.data.series import TimeSeriesData
from alignts.data.splits import n_windows, resolve_scheme, split_borders
from alignts.errors import InputError


def describe(data: TimeSeriesData, context_len: int | None = None, horizon: int | None = None,
             scheme: str = "auto") -> dict:
    """A JSON-ready summary of ``data``.

    Keys: name, source, rows, channels, columns, freq, seasonal_period, start, end, horizon (the dataset's
    own, Monash), missing ``{column: count}``, missing_total, and ``splits``: the scheme, borders and rows
    of train/val/test for context ``L`` (0 when not given) and, when ``L`` and ``H`` are given, the number
    of windows in each split (``test_windows`` is what ``evaluate`` scores). When the series is too short
    for the split, ``splits`` holds ``error`` instead.
    """
    import pandas as pd
    L = int(context_len or 0)
    H = int(horizon or 0)
    ts = data.timestamps
    try:
        period = seasonal_period(data.freq) if data.freq else None
    except InputError:
        period = None
    missing = data.missing_counts()
    out = {
        "name": data.name,
        "source": data.source,
        "rows": data.n_rows,
        "channels": data.n_channels,
        "columns": list(data.columns),
        "freq": data.freq,
        "seasonal_period": period,
        "start": str(pd.Timestamp(ts[0])) if ts is not None and len(ts) else None,
        "end": str(pd.Timestamp(ts[-1])) if ts is not None and len(ts) else None,
        "horizon": data.horizon,
        "missing": {c: int(v) for c, v in zip(data.columns, missing)},
        "missing_total": int(missing.sum()),
    }
    if data.collection:
        lengths = data.n_rows - np.argmax(data.mask, axis=0)  # first observation to the end
        out["series"] = data.n_channels
        out["series_lengths"] = {"min": int(lengths.min()), "median": float(np.median(lengths)),
                                 "max": int(lengths.max())}
        h = H or data.horizon
        if h:
            out["holdout"] = {"horizon": int(h), "series_longer_than_horizon": int((lengths > h).sum())}
    scheme = resolve_scheme(data.name, scheme)
    try:
        b1, b2 = split_borders(data.n_rows, max(L, 1), H, scheme, data.name)
    except InputError as e:
        out["splits"] = {"scheme": scheme, "error": str(e)}
        return out
    if L == 0:  # borders for L = 0: the raw segments
        b1 = (b1[0], b1[1] + 1, b1[2] + 1)
    splits = {"scheme": scheme, "context_len": L or None, "borders": [list(b1), list(b2)]}
    for name, s, e in zip(("train", "val", "test"), b1, b2):
        splits[f"{name}_rows"] = e - s
        if L and H:
            splits[f"{name}_windows"] = n_windows(e - s, L, H)
    if L and H:
        splits["test_windows_all_channels"] = splits["test_windows"] * data.n_channels
    out["splits"] = splits
    return out
