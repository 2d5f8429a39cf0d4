"""Loading series from CSV files, Monash ``.tsf`` files and the datasets bundled with statsmodels.

Nothing is changed on load: missing values stay NaN with a mask (see ``alignts.data.series`` for the
missing-value policy applied when windows are built).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from alignts.data.freq import infer_freq
from alignts.data.series import TimeSeriesData
from alignts.errors import DataError

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".tsf")
_DATE_NAMES = ("date", "datetime", "timestamp", "time", "ds")


def load_data(spec: str | Path, columns: Sequence[str] | None = None, target: str | None = None,
              date_column: str | None = None) -> TimeSeriesData:
    """Load a data source into a ``TimeSeriesData``.

    Args:
        spec: a path to a ``.csv`` or Monash ``.tsf`` file, or ``statsmodels:NAME`` (see ``STATSMODELS``).
        columns: keep only these channels (in this order). Default: every numeric column.
        target: put this channel last (as ETT's ``OT``), so "the last channel" means the target.
        date_column: the CSV column holding timestamps; default a column named ``date`` (or datetime,
            timestamp, time, ds), else the first column when it parses as dates.

    Raises:
        DataError: missing file, unknown suffix or statsmodels name, no numeric columns, a date column
            that does not parse, inf values, unknown column names.
    """
    spec = str(spec)
    if spec.startswith("statsmodels:"):
        data = _load_statsmodels(spec.split(":", 1)[1])
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DataError(f"data file {str(path)!r} does not exist. Fix: give the path of a .csv or .tsf "
                            f"file, or statsmodels:NAME with NAME one of {', '.join(STATSMODELS)}.")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            data = _load_csv(path, date_column, needed=columns)
        elif suffix == ".tsf":
            data = load_tsf(path)
        else:
            raise DataError(f"unknown data file type {path.suffix!r} ({path.name}); expected one of "
                            f"{', '.join(SUFFIXES)} or statsmodels:NAME. Fix: convert it to CSV with a "
                            "date column and numeric columns.")
    return select_columns(data, columns, target)


def select_columns(data: TimeSeriesData, columns: Sequence[str] | None = None,
                   target: str | None = None) -> TimeSeriesData:
    """Keep ``columns`` (in order) and move ``target`` last; returns a new ``TimeSeriesData``."""
    names = list(data.columns)
    order = list(columns) if columns is not None else list(names)
    if target is not None:
        order = [c for c in order if c != target] + [target]
    unknown = [c for c in order if c not in names]
    if unknown:
        raise DataError(f"column(s) {unknown} not in {data.source}; it has {names}. "
                        "Fix: pass names from that list (case matters).")
    if not order:
        raise DataError("columns= selected no column. Fix: name at least one column.")
    if order == names:
        return data
    idx = [names.index(c) for c in order]
    return TimeSeriesData(name=data.name, values=data.values[:, idx], columns=tuple(order),
                          timestamps=data.timestamps, freq=data.freq, mask=data.mask[:, idx],
                          source=data.source, horizon=data.horizon,
                          starts=tuple(data.starts[i] for i in idx) if data.starts else (),
                          collection=data.collection)


# ---------------------------------------------------------------------------------------------- CSV

def _load_csv(path: Path, date_column: str | None, needed: Sequence[str] | None) -> TimeSeriesData:
    import pandas as pd
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path} is not a readable CSV file ({e}). Fix: give a comma-separated file with a "
                        "header row.") from None
    if df.shape[0] == 0:
        raise DataError(f"{path} has a header but no rows. Fix: give a file with data rows.")

    date_col = _find_date_column(df, date_column, path)
    timestamps = None
    if date_col is not None:
        timestamps = _parse_dates(df[date_col], date_col, path)
        df = df.drop(columns=[date_col])

    numeric, dropped = [], []
    for c in df.columns:
        s = df[c]
        if pd.api.types.is_bool_dtype(s):
            dropped.append(c)
        elif pd.api.types.is_numeric_dtype(s):
            numeric.append(c)
        elif needed is not None and c in needed:
            conv = pd.to_numeric(s, errors="coerce")
            bad = s[conv.isna() & s.notna()]
            raise DataError(f"column {c!r} of {path} is not numeric: row {bad.index[0]} holds "
                            f"{bad.iloc[0]!r}. Fix: clean that column or leave it out of columns=.")
        else:
            dropped.append(c)
    if dropped:
        log.info("%s: ignoring non-numeric column(s) %s", path.name, dropped)
    if not numeric:
        raise DataError(f"{path} has no numeric columns (columns: {list(df.columns) + ([date_col] if date_col else [])}"
                        f"{', non-numeric: ' + str(dropped) if dropped else ''}). Expected a date column and "
                        "one or more numeric columns. Fix: give a CSV with numeric value columns.")
    values = df[numeric].to_numpy(dtype=np.float64)  # [T, C]
    _check_finite(values, numeric, path, timestamps)

    if timestamps is not None and not pd.Index(timestamps).is_monotonic_increasing:
        log.warning("%s: rows are not in time order; sorting them by %s", path.name, date_col)
        order = np.argsort(timestamps, kind="stable")
        timestamps, values = timestamps[order], values[order]
    return TimeSeriesData(name=path.stem, values=values, columns=tuple(str(c) for c in numeric),
                          timestamps=timestamps, freq=infer_freq(timestamps), mask=~np.isnan(values),
                          source=str(path))


def _find_date_column(df: pd.DataFrame, date_column: str | None, path: Path) -> str | None:
    import pandas as pd
    if date_column is not None:
        if date_column not in df.columns:
            raise DataError(f"date column {date_column!r} not in {path}; columns are {list(df.columns)}. "
                            "Fix: pass one of those as date_column (--date-column).")
        return date_column
    for c in df.columns:
        if str(c).strip().lower() in _DATE_NAMES:
            return c
    first = df.columns[0]
    s = df[first]
    if not pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) and s.notna().any():
        try:
            pd.to_datetime(pd.Series([s.dropna().iloc[0]]), format="mixed")
        except (ValueError, TypeError, OverflowError):
            return None
        return first
    return None


def _parse_dates(s: pd.Series, name: str, path: Path) -> np.ndarray:
    import pandas as pd
    try:
        ts = pd.to_datetime(s, errors="coerce", format="mixed")
    except (ValueError, TypeError, OverflowError):
        ts = pd.Series(pd.NaT, index=s.index)
    bad = ts.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"date column {name!r} of {path} does not parse as dates: {int(bad.sum())} of "
                        f"{len(s)} values fail, e.g. row {i} = {s.iloc[i]!r}. Expected values like "
                        "'2016-07-01 00:00:00'. Fix: correct those values, or pass date_column= "
                        "(--date-column) naming the right column.")
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.to_numpy(dtype="datetime64[ns]")


def _check_finite(values: np.ndarray, columns: Sequence[str], path: Path | str,
                  timestamps: np.ndarray | None) -> None:
    import pandas as pd
    inf = np.isinf(values)
    if inf.any():
        r, c = (int(v[0]) for v in np.nonzero(inf))
        when = f" ({pd.Timestamp(timestamps[r])})" if timestamps is not None else ""
        raise DataError(f"{path}: column {columns[c]!r} holds {values[r, c]} at row {r}{when} "
                        f"({int(inf.sum())} inf value(s) in all). Expected finite numbers or empty cells "
                        "for missing values. Fix: replace inf with an empty cell (it is then treated as missing).")


# ---------------------------------------------------------------------------------------------- TSF

def load_tsf(path: str | Path) -> TimeSeriesData:
    """Read a Monash ``.tsf`` file into a right-aligned collection (one column per series).

    Header: ``@attribute NAME TYPE`` (in the order they prefix each data line), ``@frequency``,
    ``@horizon``, ``@missing``, ``@equallength``; ``@data`` then one series per line:
    ``attr1:attr2:...:v1,v2,...`` with ``?`` for missing values.
    """
    path = Path(path)
    attrs: list[str] = []
    meta: dict[str, str] = {}
    names, starts, series = [], [], []
    in_data = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise DataError(f"{path}:{lineno}: expected a header line starting with '@' before "
                                    f"@data, got {line[:60]!r}. Fix: check the file is a Monash .tsf file.")
                key, _, rest = line[1:].partition(" ")
                key = key.lower()
                if key == "attribute":
                    attrs.append(rest.split()[0])
                elif key == "data":
                    in_data = True
                else:
                    meta[key] = rest.strip()
                continue
            parts = line.split(":", len(attrs))
            if len(parts) != len(attrs) + 1:
                raise DataError(f"{path}:{lineno}: expected {len(attrs)} attribute field(s) and the values "
                                f"separated by ':', got {line[:60]!r}. Fix: repair that line.")
            fields = dict(zip(attrs, parts[:-1]))
            try:
                vals = np.array([np.nan if v.strip() == "?" else float(v) for v in parts[-1].split(",")],
                                dtype=np.float64)
            except ValueError as e:
                raise DataError(f"{path}:{lineno}: a value is not a number ({e}). Expected numbers or '?' "
                                "for missing. Fix: repair that line.") from None
            if np.isinf(vals).any():
                raise DataError(f"{path}:{lineno}: series {parts[0]!r} holds inf at position "
                                f"{int(np.flatnonzero(np.isinf(vals))[0])}. Fix: replace it with '?'.")
            names.append(fields.get("series_name", f"series_{len(names)}"))
            starts.append(fields.get("start_timestamp", ""))
            series.append(vals)
    if not in_data or not series:
        raise DataError(f"{path} has no @data section with series. Fix: check the file is a Monash .tsf file.")
    t_max = max(len(s) for s in series)
    values = np.full((t_max, len(series)), np.nan)  # [T, S], right-aligned
    for i, s in enumerate(series):
        values[t_max - len(s):, i] = s
    horizon = int(meta["horizon"]) if meta.get("horizon", "").strip().isdigit() else None
    return TimeSeriesData(name=path.stem, values=values, columns=tuple(names), timestamps=None,
                          freq=meta.get("frequency") or None, mask=~np.isnan(values), source=str(path),
                          horizon=horizon, starts=tuple(starts) if any(starts) else (), collection=True)


# ---------------------------------------------------------------------------------------- statsmodels

def _sm_frame(name: str) -> pd.DataFrame:
    import statsmodels.api as sm  # a runtime dependency; imported lazily because it is slow (~1 s)

    return getattr(sm.datasets, name).load_pandas().data


def _sm_co2():
    import pandas as pd
    df = _sm_frame("co2")
    return pd.DatetimeIndex(df.index), df[["co2"]]


def _sm_years(name: str, year_col: str, value_cols: Sequence[str]):
    import pandas as pd
    df = _sm_frame(name)
    ts = pd.to_datetime(df[year_col].astype(int).astype(str), format="%Y")
    return pd.DatetimeIndex(ts), df[list(value_cols)]


def _sm_elnino():
    import pandas as pd
    df = _sm_frame("elnino")
    months = [c for c in df.columns if c != "YEAR"]
    vals = df[months].to_numpy(dtype=np.float64).reshape(-1)  # year-major: JAN..DEC per year
    ts = pd.date_range(f"{int(df['YEAR'].iloc[0])}-01-01", periods=vals.size, freq="MS")
    return ts, pd.DataFrame({"sst": vals})


def _sm_macrodata():
    import pandas as pd
    df = _sm_frame("macrodata")
    ts = pd.PeriodIndex.from_fields(year=df["year"].astype(int), quarter=df["quarter"].astype(int),
                                    freq="Q").to_timestamp()
    return pd.DatetimeIndex(ts), df.drop(columns=["year", "quarter"])


STATSMODELS = {
    "co2": (_sm_co2, "weekly atmospheric CO2 at Mauna Loa, ppm (1958-2001), with gaps"),
    "sunspots": (lambda: _sm_years("sunspots", "YEAR", ["SUNACTIVITY"]), "yearly sunspot numbers 1700-2008"),
    "elnino": (_sm_elnino, "monthly Pacific sea-surface temperature 1950-2010"),
    "nile": (lambda: _sm_years("nile", "year", ["volume"]), "yearly Nile flow at Aswan 1871-1970"),
    "macrodata": (_sm_macrodata, "quarterly US macroeconomic data 1959-2009 (12 series)"),
}


def _load_statsmodels(name: str) -> TimeSeriesData:
    key = name.strip().lower()
    if key not in STATSMODELS:
        raise DataError(f"unknown statsmodels dataset {name!r}; supported: {', '.join(STATSMODELS)}. "
                        "Fix: use statsmodels:NAME with one of those names.")
    ts, df = STATSMODELS[key][0]()
    values = df.to_numpy(dtype=np.float64)
    timestamps = ts.to_numpy(dtype="datetime64[ns]")
    return TimeSeriesData(name=key, values=values, columns=tuple(str(c) for c in df.columns),
                          timestamps=timestamps, freq=infer_freq(timestamps), mask=~np.isnan(values),
                          source=f"statsmodels:{key}")
