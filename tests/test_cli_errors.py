"""Issue 11, defect 5 (CLI half): any error ends a verb with ONE line on stderr and a non-zero exit, never a
traceback; -v (before or after the verb) shows the traceback as well."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alignts import cli
from alignts.errors import DataError


def _run(argv, capsys):
    capsys.readouterr()
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _raising(exc):
    def run(args):
        raise exc
    return run


@pytest.fixture
def broken_verb(monkeypatch):
    """Make `alignts data describe` raise ``exc``."""
    def use(exc):
        monkeypatch.setattr("alignts.cli.data.run", _raising(exc))
    return use


@pytest.mark.parametrize("exc,code,line", [
    (DataError("x.csv has no rows.\nFix: add rows."), 2, "alignts data: error: x.csv has no rows. Fix: add rows."),
    (ZeroDivisionError("division by zero"), 1, "alignts data: internal error: ZeroDivisionError: division by zero "
                                               "(run with -v for the traceback; please report it)"),
    (RecursionError(), 1, "alignts data: internal error: RecursionError: RecursionError (run with -v"),
    (FileNotFoundError(2, "No such file or directory", "/no/such.csv"), 2,
     "alignts data: error: /no/such.csv: No such file or directory. Fix: check the path"),
    (OSError("Cannot save file into a non-existent directory: 'nope'"), 2,
     "alignts data: error: Cannot save file into a non-existent directory: 'nope'. Fix"),
    (NotImplementedError("no runtime for paradigm 'x'; known: internal"), 2,
     "alignts data: error: no runtime for paradigm 'x'"),
])
def test_one_line_and_exit_code(broken_verb, capsys, exc, code, line):
    broken_verb(exc)
    got, out, err = _run(["data", "describe", "whatever"], capsys)
    assert got == code
    assert len(err.splitlines()) == 1 and err.startswith(line), err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("argv", [["-v", "data", "describe", "x"], ["data", "-v", "describe", "x"]])
def test_verbose_shows_the_traceback_then_the_line(broken_verb, capsys, argv):
    broken_verb(KeyError("boom"))
    code, _, err = _run(argv, capsys)
    assert code == 1
    assert err.startswith("Traceback") and "KeyError: 'boom'" in err
    assert err.splitlines()[-1].startswith("alignts data: internal error: KeyError: 'boom'")


def test_real_errors_from_the_data_verb(tmp_path, capsys):
    code, _, err = _run(["data", "describe", str(tmp_path / "absent.csv")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "does not exist" in err
    dup = tmp_path / "dup.csv"
    dup.write_text("date,v\n2020-01-01,1\n2020-01-01,2\n")
    code, _, err = _run(["data", "describe", str(dup)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "repeats timestamps" in err
    tsf = tmp_path / "bare.tsf"
    tsf.write_text("@attribute\n@data\nA:1,2\n")
    code, _, err = _run(["data", "describe", str(tsf)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "@attribute NAME TYPE" in err


def test_missing_bundle_is_one_line(tmp_path, capsys):
    csv = tmp_path / "s.csv"
    csv.write_text("v\n1\n2\n")
    code, _, err = _run(["forecast", str(tmp_path / "nobundle"), "--data", str(csv)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "does not exist" in err


def test_console_entry_point_has_no_traceback(tmp_path):
    """The installed command path: a separate interpreter, stderr as the user sees it."""
    bad = tmp_path / "semi.csv"
    bad.write_text("date a\n2020-01-01 x\n")
    r = subprocess.run([sys.executable, "-m", "alignts", "data", "describe", str(bad)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "no numeric columns" in r.stderr and "Traceback" not in r.stderr
