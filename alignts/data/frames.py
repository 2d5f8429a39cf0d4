"""DataFrames in and out of the forecast contract (``Forecaster.forecast_df``, ``alignts forecast --out``).

Long format (GluonTS / Chronos / AutoGluon): one row per (item, timestamp) with an item id column, a timestamp
column and one numeric column per target. Wide format (what ``load_data`` gives): time down the rows, one
numeric column per channel. Either way the result is long: one row per (item, target, future step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from alignts.data.freq import future_index, infer_freq
from alignts.errors import InputError

ID_COLUMNS = ("item_id", "id", "unique_id")  # GluonTS / AutoGluon, Chronos examples, Nixtla
TIMESTAMP_COLUMNS = ("timestamp", "date")
TARGET = "target"


@dataclass(frozen=True)
class FrameSeries:
    """The series of a frame, one item each.

    values:     B float64 arrays ``[C, T_i]`` (NaN where missing), items in order of first appearance.
    timestamps: B arrays ``[T_i]`` (datetimes or numbers), or None per item without any.
    freqs:      B pandas frequencies inferred per item (None where unknown).
    ids:        B item ids (long format), or None (a wide frame: one item).
    id_column, timestamp_column: the output's column names; targets: the C target column names.
    """

    values: list[np.ndarray]
    timestamps: list[np.ndarray | None]
    freqs: list[str | None]
    ids: list[Any] | None
    id_column: str | None
    timestamp_column: str
    targets: list[str]


def frame_series(df: Any, id_column: str | None = None, timestamp_column: str | None = None,
                 target: str | Sequence[str] | None = None) -> FrameSeries:
    """Split a long or wide DataFrame into its series (see ``Forecaster.forecast_df`` for the defaults)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a pandas DataFrame; got {type(df).__name__}. Fix: pass arrays to forecast().")
    if isinstance(df.index, pd.MultiIndex):  # AutoGluon's TimeSeriesDataFrame: (item_id, timestamp)
        df = df.reset_index()
    for name, col in (("id_column", id_column), ("timestamp_column", timestamp_column)):
        if col is not None and col not in df.columns:
            raise InputError(f"{name}={col!r} is not a column; expected one of {list(df.columns)}. Fix: name an "
                             "existing column.")
    if id_column is None:
        id_column = next((c for c in ID_COLUMNS if c in df.columns), None)
    if timestamp_column is None:
        timestamp_column = next((c for c in TIMESTAMP_COLUMNS if c in df.columns), None)
    targets = _targets(df, target, exclude={id_column, timestamp_column}, long=id_column is not None)
    if id_column is None:
        ts = df[timestamp_column] if timestamp_column else _index_stamps(df.index)
        items: list[tuple[Any, Any, Any]] = [(None, df, ts)]
    else:
        items = []
        for key, g in df.groupby(id_column, sort=False):
            if timestamp_column:
                g = g.sort_values(timestamp_column, kind="stable")
            items.append((key, g, g[timestamp_column] if timestamp_column else None))
    values, stamps, freqs = [], [], []
    for key, g, ts in items:
        values.append(g[targets].to_numpy(dtype=np.float64, na_value=np.nan).T)
        t = _timestamps(ts, key)
        stamps.append(t)
        freqs.append(infer_freq(t) if t is not None and t.dtype.kind == "M" else None)
    known = next((f for f in freqs if f), None)  # items too short to infer one take the frame's
    return FrameSeries(values=values, timestamps=stamps, freqs=[f or known for f in freqs],
                       ids=None if id_column is None else [k for k, _, _ in items], id_column=id_column,
                       timestamp_column=timestamp_column or "timestamp", targets=targets)


def forecast_frame(fs: FrameSeries, mean: np.ndarray, quantiles: np.ndarray | None,
                   levels: Sequence[float]) -> Any:
    """The long output frame: ``mean [B, C, H]`` and ``quantiles [B, C, H, Q]`` at ``levels`` -> one row per
    (item, target, step) with the id column (long input), the timestamp column, ``target`` (several targets),
    ``mean`` and one column per level named ``str(level)``."""
    import pandas as pd

    B, C, H = mean.shape
    idx = [future_index(fs.timestamps[b], fs.freqs[b], fs.values[b].shape[1], H) for b in range(B)]
    cols: dict[str, Any] = {}
    if fs.ids is not None:
        cols[fs.id_column] = np.repeat(np.asarray(fs.ids, dtype=object), C * H)
    cols[fs.timestamp_column] = np.concatenate([np.tile(np.asarray(i), C) for i in idx])
    if C > 1:
        cols[TARGET] = np.tile(np.repeat(np.asarray(fs.targets, dtype=object), H), B)
    cols["mean"] = mean.reshape(-1)
    for k, lv in enumerate(levels):
        cols[str(float(lv))] = quantiles[..., k].reshape(-1)
    return pd.DataFrame(cols)


def _targets(df, target, exclude: set, long: bool) -> list[str]:
    """The target columns: ``target`` (a name or a list), else ``target`` (long format) or every numeric column
    (wide format); each must be real numbers."""
    import pandas as pd

    if target is not None:
        names = [target] if isinstance(target, str) else list(target)
    elif long and TARGET in df.columns:
        names = [TARGET]
    else:
        names = [c for c in df.select_dtypes("number").columns if c not in exclude]
        if long or not names:
            raise InputError(f"no target column found; expected {'a `target` column' if long else 'numeric columns'}"
                             f" (columns: {list(df.columns)}). Fix: pass target='NAME' (or a list for several "
                             "channels).")
    for c in names:
        if c not in df.columns:
            raise InputError(f"target {c!r} is not a column; expected one of {list(df.columns)}. Fix: name an "
                             "existing column.")
        dt = df[c].dtype
        if not pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt) or getattr(dt, "kind", "") == "c":
            raise InputError(f"target column {c!r} has dtype {dt}; expected real numbers. Fix: convert it to float "
                             "(NaN for missing values).")
    return names


def _index_stamps(index):
    """A wide frame's index as its timestamps when it holds dates or numbers (not the default 0..T-1)."""
    import pandas as pd

    if isinstance(index, pd.DatetimeIndex) or (type(index) is not pd.RangeIndex
                                               and pd.api.types.is_numeric_dtype(index.dtype)):
        return index.to_series()
    return None


def _timestamps(ts, item) -> np.ndarray | None:
    """A timestamp column or index as datetime64 (numbers stay numbers); duplicates raise InputError."""
    import pandas as pd

    if ts is None:
        return None
    if pd.api.types.is_numeric_dtype(ts.dtype) and not pd.api.types.is_bool_dtype(ts.dtype):
        t = np.asarray(ts)
    else:
        try:
            t = pd.DatetimeIndex(pd.to_datetime(ts)).to_numpy()
        except (TypeError, ValueError) as e:
            raise InputError(f"timestamps cannot be read as dates ({e}); expected datetimes or numbers. Fix: pass "
                             "timestamp_column= naming the right column.") from None
    if len(t) != len(np.unique(t)):
        where = "" if item is None else f" of item {item!r}"
        raise InputError(f"the timestamps{where} repeat; expected one row per timestamp. Fix: aggregate the "
                         "duplicates (e.g. df.groupby([id, timestamp]).mean()).")
    return t
