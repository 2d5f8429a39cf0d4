"""Loading series from CSV files, Monash ``.tsf`` files and the datasets bundled with statsmodels.

Nothing is changed on load: missing values stay NaN with a mask (see ``alignts.data.series`` for the
missing-value policy applied when windows are built).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from alignts.data.freq import infer_freq
from alignts.data.series import TimeSeriesData
from alignts.errors import DataError

if TYPE_CHECKING:  # pandas is imported where it is used (annotations only here)
    import pandas as pd

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
            timestamp, time, ds), else the first column when it parses as dates. A column of numbers is read
            by magnitude as epoch seconds, ms, us or ns (dates 1973-2286), as yyyymmdd, or, below 1e8 and
            increasing, as step numbers (no timestamps); anything else is refused rather than guessed.

    CSV fields are separated by commas, or by semicolons (decimal commas accepted), tabs or '|' when the
    header line holds no comma. Integers beyond 64 bits are numbers.

    Raises:
        DataError: missing or unreadable file, unknown suffix or statsmodels name, no numeric columns, a date
            column that does not parse (or mixes epoch units), dates past 2262, repeated timestamps or .tsf
            series names, inf values (or numbers beyond float64), unknown column names.
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
    sep, header = _sniff_delimiter(path)
    df = _read_csv(path, sep)
    if df.shape[0] == 0:
        raise DataError(f"{path} has a header but no rows. Fix: give a file with data rows.")
    if sep == ";" and not any(pd.api.types.is_numeric_dtype(df[c]) for c in df.columns):
        df = _read_csv(path, sep, decimal=",")  # ';' files often write decimal commas (1,5)

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
        elif pd.api.types.is_numeric_dtype(s) or _is_big_int(s):
            numeric.append(c)
        elif needed is not None and c in needed:
            bad = s[s.notna() & pd.to_numeric(s, errors="coerce").isna()]
            example = f"row {bad.index[0]} holds {bad.iloc[0]!r}" if len(bad) else f"its type is {s.dtype}"
            raise DataError(f"column {c!r} of {path} is not numeric: {example}. Fix: clean that column or leave "
                            "it out of columns=.")
        else:
            dropped.append(c)
    if dropped:
        log.info("%s: ignoring non-numeric column(s) %s", path.name, dropped)
    if not numeric:
        cols = [str(c) for c in list(df.columns) + ([date_col] if date_col is not None else [])]
        raise DataError(f"{path} has no numeric columns: read with {_SEP_NAMES[sep]} as the separator, the header "
                        f"{header[:120]!r} gives the column(s) {cols[:10]}"
                        f"{', none of them numeric: ' + str([str(c) for c in dropped][:10]) if dropped else ''}. "
                        "Expected a date column and one or more numeric columns, separated by commas (semicolons "
                        "and tabs are detected from the header). Fix: give a CSV with numeric value columns.")
    values = np.column_stack([_column_values(df[c]) for c in numeric])  # [T, C]
    _check_finite(values, numeric, path, timestamps)

    if timestamps is not None:
        _check_unique_times(timestamps, date_col, path)
        if not pd.Index(timestamps).is_monotonic_increasing:
            log.warning("%s: rows are not in time order; sorting them by %s", path.name, date_col)
            order = np.argsort(timestamps, kind="stable")
            timestamps, values = timestamps[order], values[order]
    return TimeSeriesData(name=path.stem, values=values, columns=tuple(str(c) for c in numeric),
                          timestamps=timestamps, freq=infer_freq(timestamps), mask=~np.isnan(values),
                          source=str(path))


_SEP_NAMES = {",": "','", ";": "';'", "\t": "tabs", "|": "'|'"}


def _read_csv(path: Path, sep: str, **kw) -> pd.DataFrame:
    import pandas as pd
    try:
        return pd.read_csv(path, sep=sep, **kw)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, ValueError, OverflowError,
            csv.Error) as e:
        raise DataError(f"{path} is not a readable CSV file ({type(e).__name__}: {str(e)[:200]}). Expected a "
                        f"header row and one row per time step, separated by {_SEP_NAMES[sep]}. Fix: give a "
                        "comma-separated file with a header row.") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}. Fix: check the path and its permissions.") from None


def _sniff_delimiter(path: Path) -> tuple[str, str]:
    """The field separator of a CSV and its header line: ',' unless the header has none and holds ';', tab
    or '|' (in that order of preference); a wrong guess still fails later with what was found."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            header = f.readline().lstrip("\ufeff").rstrip("\r\n")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}. Fix: check the path and its permissions.") from None
    for sep in _SEP_NAMES:
        if sep in header:
            return sep, header
    return ",", header


def _is_big_int(s: pd.Series) -> bool:
    """A column pandas left untyped because an integer does not fit 64 bits (>= 2**64): still numeric."""
    if s.dtype != object:
        return False
    v = s.dropna()
    return bool(len(v)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)


def _big_float(x: int) -> float:
    try:
        return float(x)
    except OverflowError:  # beyond float64: inf, refused by _check_finite
        return float("inf") if x > 0 else float("-inf")


def _column_values(s: pd.Series) -> np.ndarray:
    if s.dtype == object:  # integers beyond 64 bits
        return np.array([np.nan if x is None or x != x else _big_float(x) for x in s], dtype=np.float64)
    return s.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_unique_times(timestamps: np.ndarray, date_col: str, path: Path) -> None:
    import pandas as pd
    dup = pd.Index(timestamps).duplicated(keep=False)
    if dup.any():
        first = timestamps[np.flatnonzero(dup)[0]]
        rows = np.flatnonzero(timestamps == first)
        raise DataError(f"{path}: date column {date_col!r} repeats timestamps, e.g. {pd.Timestamp(first)} at data "
                        f"rows {rows[:5].tolist()} ({int(dup.sum())} rows share a timestamp with another); expected "
                        "one row per time step. Fix: remove or aggregate the duplicate rows (e.g. "
                        "df.groupby(date).mean()), or pass the right --date-column.")


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


# Integer timestamps: the unit each magnitude means (epoch dates 1973..2286), else they are not dates.
_EPOCH_UNITS = (("s", 1e8, 1e10), ("ms", 1e11, 1e13), ("us", 1e14, 1e16), ("ns", 1e17, 1e19))
_DATES_EXPECTED = ("Expected dates like '2016-07-01 00:00:00', integer epoch seconds / ms / us / ns (one unit), "
                   "yyyymmdd integers, or increasing step numbers.")


def _parse_dates(s: pd.Series, name: str, path: Path) -> np.ndarray | None:
    """datetime64[ns] [T] for a date column; None when it holds step numbers (0, 1, 2, ...)."""
    import pandas as pd
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return _parse_numeric_dates(s, name, path)
    ts = _to_datetime(s)
    bad = ts.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"date column {name!r} of {path} does not parse as dates: {int(bad.sum())} of "
                        f"{len(s)} values fail, e.g. row {i} = {s.iloc[i]!r}. {_DATES_EXPECTED} "
                        "Fix: correct those values, or pass date_column= (--date-column) naming the right column.")
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return _as_ns(ts, name, path)


def _to_datetime(s: pd.Series) -> pd.Series:
    """pandas' own parse (NaT where a value fails); mixed UTC offsets are converted to UTC."""
    import warnings

    import pandas as pd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns about mixed offsets and inferred formats
        for utc in (False, True):
            try:
                ts = pd.to_datetime(s, errors="coerce", format="mixed", utc=utc)
            except (ValueError, TypeError, OverflowError):
                continue
            if ts.dtype.kind == "M" or isinstance(ts.dtype, pd.DatetimeTZDtype):
                return ts
    return pd.Series(pd.NaT, index=s.index)


def _as_ns(ts, name: str, path: Path) -> np.ndarray:
    import pandas as pd
    try:
        return pd.DatetimeIndex(ts).as_unit("ns").to_numpy()
    except (ValueError, OverflowError) as e:  # OutOfBoundsDatetime: past 2262 or before 1677
        raise DataError(f"date column {name!r} of {path} holds dates outside 1677-09-22..2262-04-11, the "
                        f"range of nanosecond timestamps ({e}). Fix: correct those dates, or drop the date "
                        "column (rows are then numbered).") from None


def _parse_numeric_dates(s: pd.Series, name: str, path: Path) -> np.ndarray | None:
    import pandas as pd
    v = s.to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(v).all():
        i = int(np.flatnonzero(~np.isfinite(v))[0])
        raise DataError(f"date column {name!r} of {path} has a missing or non-finite value at row {i} "
                        f"({s.iloc[i]!r}). {_DATES_EXPECTED} Fix: fill in that date.")
    mag = np.abs(v)
    for unit, lo, hi in _EPOCH_UNITS:
        if ((mag >= lo) & (mag < hi)).all():
            log.info("%s: date column %r holds numbers; read as epoch %s", path.name, name, unit)
            return _as_ns(pd.to_datetime(v, unit=unit), name, path)
    integral = (v == np.round(v)).all()
    if integral and ((v >= 1e7) & (v < 1e8)).all():  # yyyymmdd
        ts = pd.to_datetime(pd.Series(v.astype(np.int64).astype(str)), format="%Y%m%d", errors="coerce")
        if ts.notna().all():
            log.info("%s: date column %r holds 8-digit integers; read as yyyymmdd", path.name, name)
            return _as_ns(ts, name, path)
    if integral and mag.max() < 1e8 and (np.diff(v) > 0).all():
        log.info("%s: date column %r holds increasing integers below 1e8; read as step numbers, not dates",
                 path.name, name)
        return None
    i = int(np.argmax(mag))
    raise DataError(f"date column {name!r} of {path} holds numbers that are neither epoch times of one unit nor "
                    f"increasing step numbers, e.g. row {i} = {s.iloc[i]!r} (magnitudes from {mag.min():.3g} to "
                    f"{mag.max():.3g}); reading them would guess the unit. {_DATES_EXPECTED} Fix: write ISO dates "
                    "or one epoch unit, or pass date_column= (--date-column) naming the right column.")


def _check_finite(values: np.ndarray, columns: Sequence[str], path: Path | str,
                  timestamps: np.ndarray | None) -> None:
    import pandas as pd
    inf = np.isinf(values)
    if inf.any():
        r, c = (int(v[0]) for v in np.nonzero(inf))
        when = f" ({pd.Timestamp(timestamps[r])})" if timestamps is not None else ""
        raise DataError(f"{path}: column {columns[c]!r} holds {values[r, c]} (inf, or a number beyond float64's "
                        f"±1.8e308) at row {r}{when} ({int(inf.sum())} such value(s) in all). Expected finite "
                        "numbers or empty cells "
                        "for missing values. Fix: replace inf with an empty cell (it is then treated as missing).")


# ---------------------------------------------------------------------------------------------- TSF

def load_tsf(path: str | Path) -> TimeSeriesData:
    """Read a Monash ``.tsf`` file into a right-aligned collection (one column per series).

    Header: ``@attribute NAME TYPE`` (in the order they prefix each data line), ``@frequency``,
    ``@horizon``, ``@missing``, ``@equallength``; ``@data`` then one series per line:
    ``attr1:attr2:...:v1,v2,...`` with ``?`` for missing values.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return _read_tsf(f, path)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}. Fix: check the path and its permissions.") from None


def _read_tsf(f, path: Path) -> TimeSeriesData:
    attrs: list[str] = []
    meta: dict[str, str] = {}
    names, starts, series = [], [], []
    first_line: dict[str, int] = {}  # series name -> its line
    in_data = False
    for lineno, raw in enumerate(f, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DataError(f"{path}:{lineno}: expected a header line starting with '@' before "
                                f"@data, got {line[:60]!r}. Fix: check the file is a Monash .tsf file.")
            head = line[1:].split(None, 1)
            key = head[0].lower() if head else ""
            rest = head[1] if len(head) > 1 else ""
            if key == "attribute":
                words = rest.split()
                if not words:
                    raise DataError(f"{path}:{lineno}: expected '@attribute NAME TYPE', got {line[:60]!r}. "
                                    "Fix: name the attribute (e.g. '@attribute series_name string').")
                attrs.append(words[0])
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
        name = fields.get("series_name", f"series_{len(names)}")
        if name in first_line:
            raise DataError(f"{path}:{lineno}: series name {name!r} repeats (first on line {first_line[name]}); "
                            "expected one line per series with a unique series_name. Fix: remove the duplicate "
                            "line or rename one of them.")
        first_line[name] = lineno
        texts = parts[-1].split(",")
        try:
            vals = np.array([np.nan if v.strip() == "?" else float(v) for v in texts], dtype=np.float64)
        except ValueError as e:
            raise DataError(f"{path}:{lineno}: a value is not a number ({e}). Expected numbers or '?' "
                            "for missing. Fix: repair that line.") from None
        if np.isinf(vals).any():
            i = int(np.flatnonzero(np.isinf(vals))[0])
            raise DataError(f"{path}:{lineno}: series {name!r} holds {texts[i].strip()[:40]!r} at position {i}: "
                            "inf, or a number beyond float64's ±1.8e308; expected finite numbers. Fix: replace "
                            "it with '?' (missing) or rescale the series.")
        names.append(name)
        starts.append(fields.get("start_timestamp", ""))
        series.append(vals)
    if not in_data or not series:
        raise DataError(f"{path} has no @data section with series. Fix: check the file is a Monash .tsf file.")
    t_max = max(len(s) for s in series)
    values = np.full((t_max, len(series)), np.nan)  # [T, S], right-aligned
    for i, s in enumerate(series):
        values[t_max - len(s):, i] = s
    h = meta.get("horizon", "").strip()
    horizon = int(h) if h.isascii() and h.isdecimal() and len(h) <= 9 else None
    return TimeSeriesData(name=path.stem, values=values, columns=tuple(names), timestamps=None,
                          freq=meta.get("frequency") or None, mask=~np.isnan(values), source=str(path),
                          horizon=horizon, starts=tuple(starts) if any(starts) else (), collection=True)


# ---------------------------------------------------------------------------------------- statsmodels

def _sm_frame(name: str) -> pd.DataFrame:
    try:
        import statsmodels.api as sm  # the [data] extra; imported lazily because it is slow (~1 s)
    except ImportError as e:
        from alignts.errors import missing_extra

        raise missing_extra("statsmodels", "data", "for statsmodels:NAME data") from e

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
