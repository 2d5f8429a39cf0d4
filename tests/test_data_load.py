"""Loading CSV / .tsf / statsmodels sources, frequency handling, the missing-value policy, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alignts.data import fill_missing, infer_freq, load_data, load_tsf, seasonal_period
from alignts.errors import DataError, InputError


def _csv(tmp_path, text: str, name: str = "s.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _hourly_csv(tmp_path, n=48, name="s.csv"):
    ts = pd.date_range("2020-01-01", periods=n, freq="h")
    df = pd.DataFrame({"date": ts, "a": np.arange(n, dtype=float), "OT": np.sin(np.arange(n)),
                       "b": np.arange(n) * 2.0, "label": ["x"] * n})
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


def test_csv_basic_and_target_last(tmp_path):
    p = _hourly_csv(tmp_path)
    d = load_data(p)
    assert d.columns == ("a", "OT", "b")  # the text column is ignored
    assert d.values.shape == (48, 3) and d.values.dtype == np.float64
    assert d.freq == "h" and seasonal_period(d.freq) == 24
    assert d.timestamps.dtype == np.dtype("datetime64[ns]")
    assert d.mask.all() and d.name == "s"
    t = load_data(p, target="OT")
    assert t.columns == ("a", "b", "OT")
    np.testing.assert_array_equal(t.values[:, -1], np.sin(np.arange(48)))
    c = load_data(p, columns=["b", "a"], target="a")
    assert c.columns == ("b", "a")


def test_csv_missing_values_kept_with_mask(tmp_path):
    p = _csv(tmp_path, "date,x,y\n2020-01-01,1,5\n2020-01-02,,6\n2020-01-03,3,\n2020-01-04,4,8\n")
    d = load_data(p)
    assert np.isnan(d.values[1, 0]) and np.isnan(d.values[2, 1])
    np.testing.assert_array_equal(d.mask, ~np.isnan(d.values))
    assert d.missing_counts().tolist() == [1, 1]
    assert d.freq == "D"


def test_csv_first_column_dates_and_forced_date_column(tmp_path):
    p = _csv(tmp_path, "when,v\n2021-01-01,1\n2021-02-01,2\n2021-03-01,3\n2021-04-01,4\n")
    d = load_data(p)
    assert d.columns == ("v",) and d.freq == "MS" and seasonal_period(d.freq) == 12
    q = _csv(tmp_path, "v,stamp\n1,2021-01-01\n2,2021-04-01\n3,2021-07-01\n4,2021-10-01\n", "q.csv")
    d = load_data(q, date_column="stamp")
    assert d.columns == ("v",) and seasonal_period(d.freq) == 4
    with pytest.raises(DataError, match="date column 'nope'.*Fix"):
        load_data(q, date_column="nope")


def test_csv_without_date_column(tmp_path):
    d = load_data(_csv(tmp_path, "x,y\n1,2\n3,4\n5,6\n"))
    assert d.timestamps is None and d.freq is None and d.values.shape == (3, 2)


def test_no_numeric_columns(tmp_path):
    p = _csv(tmp_path, "date,name\n2020-01-01,a\n2020-01-02,b\n")
    with pytest.raises(DataError, match="no numeric columns") as e:
        load_data(p)
    assert "Fix" in str(e.value)


def test_unparseable_date_column(tmp_path):
    p = _csv(tmp_path, "date,v\n2020-01-01,1\nnot-a-date,2\n2020-01-03,3\n")
    with pytest.raises(DataError) as e:
        load_data(p)
    msg = str(e.value)
    assert "'date'" in msg and "not-a-date" in msg and "row 1" in msg and "Fix" in msg


def test_inf_values_name_column_and_row(tmp_path):
    p = _csv(tmp_path, "date,a,b\n2020-01-01,1,2\n2020-01-02,3,inf\n2020-01-03,5,6\n")
    with pytest.raises(DataError) as e:
        load_data(p)
    msg = str(e.value)
    assert "'b'" in msg and "row 1" in msg and "2020-01-02" in msg and "Fix" in msg


def test_missing_file_unknown_suffix_unknown_column(tmp_path):
    with pytest.raises(DataError, match="does not exist.*Fix"):
        load_data(tmp_path / "absent.csv")
    p = _csv(tmp_path, "a\n1\n", "s.parquet")
    with pytest.raises(DataError, match=r"unknown data file type '\.parquet'.*\.csv"):
        load_data(p)
    with pytest.raises(DataError, match="'zz'.*Fix"):
        load_data(_hourly_csv(tmp_path), columns=["zz"])


def test_unknown_statsmodels_name_lists_supported():
    with pytest.raises(DataError) as e:
        load_data("statsmodels:nonesuch")
    for name in ("co2", "sunspots", "elnino", "nile", "macrodata"):
        assert name in str(e.value)


TSF = """# a comment
@relation Test
@attribute series_name string
@attribute start_timestamp date
@frequency monthly
@horizon 2
@missing true
@equallength false
@data
A:2000-01-01 00-00-00:1,2,3,4,5
B:2000-03-01 00-00-00:10,?,30
"""


def test_tsf_right_aligned_collection(tmp_path):
    p = tmp_path / "c.tsf"
    p.write_text(TSF)
    d = load_data(p)
    assert d.collection and d.horizon == 2 and d.freq == "monthly" and d.columns == ("A", "B")
    assert d.values.shape == (5, 2)
    np.testing.assert_array_equal(d.values[:, 0], [1, 2, 3, 4, 5])
    assert np.isnan(d.values[:2, 1]).all() and d.values[2, 1] == 10 and np.isnan(d.values[3, 1])
    assert d.missing_counts().tolist() == [0, 1]  # padding is not "missing"
    np.testing.assert_array_equal(d.series(1), [10, np.nan, 30])
    assert d.starts[1].startswith("2000-03-01")


def test_tsf_bad_line(tmp_path):
    p = tmp_path / "bad.tsf"
    p.write_text(TSF.replace("10,?,30", "10,abc,30"))
    with pytest.raises(DataError, match=r"bad.tsf:\d+.*not a number"):
        load_tsf(p)


def test_fill_missing_policy():
    x = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan], [4.0, np.nan], [np.nan, np.nan]])
    x[:, 1] = np.nan
    f = fill_missing(x)
    np.testing.assert_allclose(f[:, 0], [2.0, 2.0, 3.0, 4.0, 4.0])  # back-fill, interpolate, forward-fill
    np.testing.assert_array_equal(f[:, 1], 0.0)  # nothing observed
    assert np.isnan(x).sum() == 8  # input untouched


@pytest.mark.parametrize("freq,period", [("h", 24), ("15min", 96), ("D", 7), ("W-SUN", 52), ("MS", 12),
                                         ("ME", 12), ("QS-OCT", 4), ("YS-JAN", 1), ("30min", 48),
                                         ("monthly", 12), ("quarterly", 4), ("yearly", 1), ("half_hourly", 48)])
def test_seasonal_period(freq, period):
    assert seasonal_period(freq) == period


def test_seasonal_period_unknown():
    with pytest.raises(InputError, match="period"):
        seasonal_period(None)


def test_infer_freq_with_gap():
    ts = pd.date_range("2020-01-01", periods=50, freq="h").delete([10, 11]).to_numpy()
    assert infer_freq(ts) == "h"


def test_statsmodels_sources():
    co2 = load_data("statsmodels:co2")
    assert co2.columns == ("co2",) and co2.missing_counts()[0] == 59 and seasonal_period(co2.freq) == 52
    el = load_data("statsmodels:elnino")
    assert el.values.shape == (61 * 12, 1) and el.freq == "MS"
    mac = load_data("statsmodels:macrodata", columns=["realgdp", "cpi"])
    assert mac.values.shape == (203, 2) and seasonal_period(mac.freq) == 4
    assert load_data("statsmodels:nile").values.shape == (100, 1)
    assert load_data("statsmodels:sunspots").freq.startswith("YS")


def test_real_files(etth1, shared_data):
    d = load_data(etth1, target="OT")
    assert d.values.shape == (17420, 7) and d.columns[-1] == "OT" and d.freq == "h"
    t = shared_data / "monash" / "tourism_monthly_dataset.tsf"
    if t.is_file():
        m = load_data(t)
        assert m.values.shape[1] == 366 and m.horizon == 24 and m.freq == "monthly"


def test_infer_freq_daily_and_weekly_with_gaps():
    d = pd.date_range("2020-01-01", periods=30, freq="D").delete([3, 9]).to_numpy()
    assert infer_freq(d) == "D" and seasonal_period(infer_freq(d)) == 7
    w = pd.date_range("2020-01-01", periods=30, freq="7D").delete([3]).to_numpy()
    assert seasonal_period(infer_freq(w)) == 52
