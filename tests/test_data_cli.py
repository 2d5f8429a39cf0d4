"""`alignts data describe`."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from alignts.cli import data as data_cli


def _run(argv):
    p = argparse.ArgumentParser(prog="alignts data")
    data_cli.add_arguments(p)
    args = p.parse_args(argv)
    return data_cli.run(args)


def _csv(tmp_path):
    n = 500
    df = pd.DataFrame({"date": pd.date_range("2021-01-01", periods=n, freq="D"),
                       "x": np.arange(n, dtype=float), "y": np.cos(np.arange(n))})
    df.loc[[5, 6, 40], "y"] = np.nan
    p = tmp_path / "daily.csv"
    df.to_csv(p, index=False)
    return p


def test_describe_table_and_json(tmp_path, capsys):
    p = _csv(tmp_path)
    assert _run(["describe", str(p), "--context", "28", "--horizon", "7"]) == 0
    out = capsys.readouterr().out
    assert "daily" in out and "D (seasonal period 7)" in out and "missing values  3" in out
    assert "test" in out and "windows" in out
    assert _run(["describe", str(p), "--context", "28", "--horizon", "7", "--json", str(tmp_path / "d.json")]) == 0
    assert "daily" in capsys.readouterr().out  # the table still prints
    info = json.loads((tmp_path / "d.json").read_text())
    sp = info["splits"]
    assert info["rows"] == 500 and info["missing"] == {"x": 0, "y": 3} and sp["scheme"] == "ratio"
    assert sp["borders"] == [[0, 350 - 28, 400 - 28], [350, 400, 500]]
    assert sp["test_windows"] == 100 + 28 - 28 - 7 + 1


def test_describe_too_short_reports_split_error(tmp_path, capsys):
    assert _run(["describe", str(_csv(tmp_path)), "--context", "400", "--horizon", "50"]) == 0
    assert "L + H = 400 + 50 = 450" in capsys.readouterr().out


def test_data_without_subverb_prints_help_and_exits_2(capsys):
    from alignts.cli import main

    assert main(["data"]) == 2
    assert "describe" in capsys.readouterr().out


def test_describe_bad_input_exits_2(tmp_path, capsys):
    from alignts.cli import main

    p = tmp_path / "bad.csv"
    p.write_text("date,name\n2020-01-01,a\n")
    assert main(["data", "describe", str(p)]) == 2
    assert "no numeric columns" in capsys.readouterr().err


def test_describe_etth1(etth1, tmp_path):
    assert _run(["describe", str(etth1), "--context", "336", "--horizon", "96", "--json", str(tmp_path / "d.json")]) == 0
    sp = json.loads((tmp_path / "d.json").read_text())["splits"]
    assert sp["scheme"] == "ett_hour" and sp["test_windows"] == 2785 and sp["test_windows_all_channels"] == 19495


def test_describe_statsmodels_co2(capsys):
    pytest.importorskip("statsmodels")
    assert _run(["describe", "statsmodels:co2"]) == 0
    out = capsys.readouterr().out
    assert "co2" in out and "W-SAT (seasonal period 52)" in out and "missing values  59" in out
