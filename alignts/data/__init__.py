"""Data: loading (CSV, Monash .tsf, statsmodels:NAME), splits, train-only scaling, windows (numpy/pandas only).

Missing values are kept as NaN with a mask on load; see ``alignts.data.series`` for how gaps are filled when
windows are built.
"""

from alignts.data.describe import describe
from alignts.data.freq import infer_freq, seasonal_period
from alignts.data.load import STATSMODELS, load_data, load_tsf, select_columns
from alignts.data.series import TimeSeriesData, fill_missing
from alignts.data.splits import SCHEMES, Splits, make_splits, n_windows, sliding_windows, split_borders

__all__ = [
    "TimeSeriesData", "fill_missing", "load_data", "load_tsf", "select_columns", "STATSMODELS",
    "infer_freq", "seasonal_period", "Splits", "SCHEMES", "make_splits", "split_borders", "sliding_windows",
    "n_windows", "describe",
]
