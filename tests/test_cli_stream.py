"""`alignts stream`: CSV and JSON lines in (a file, a file being appended to, stdin), one JSON line per forecast
out; bad lines reported with their number and skipped, never ending the stream; --state resumes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from alignts.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective

    return fit_injective(tmp_path_factory.mktemp("cli_stream") / "inj", InjectiveFitConfig(samples=2))


def _csv(n: int, bad: dict[int, str] | None = None) -> str:
    lines = ["timestamp,x,y"]
    for i in range(n):
        ts = f"2024-01-{1 + i // 24:02d}T{i % 24:02d}:00:00"
        lines.append((bad or {}).get(i, f"{ts},{50 + 10 * np.sin(i / 6):.3f},{3 + np.cos(i / 12):.3f}"))
    return "\n".join(lines) + "\n"


def _read(path):
    return [json.loads(s) for s in path.read_text().splitlines()]


def test_csv_file_with_bad_lines(bundle, tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text(_csv(60, {20: "2024-01-01T20:00:00,abc,1", 30: "2024-01-02T06:00:00,1,2,3",
                             40: "2024-01-02T16:00:00,inf,2", 45: "2023-01-01T00:00:00,1,2",
                             50: "2024-01-03T02:00:00,,2"}))
    out = tmp_path / "out.jsonl"
    rc = main(["stream", str(bundle), "--input", str(src), "--every", "10", "--context", "32", "--horizon", "3",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0
    for n in (22, 32, 42, 47):  # file line numbers (header = line 1)
        assert f"line {n}: skipped" in err
    assert "56 points" in err and "4 bad lines skipped" in err and "1 missing values" in err
    rows = _read(out)
    assert rows and rows[-1]["horizon"] == 3 and np.array(rows[-1]["median"]).shape == (2, 3)
    assert set(rows[-1]["quantiles"]) == {"0.1", "0.5", "0.9"} and "lag" in rows[-1] and "drift" in rows[-1]


def test_follows_a_growing_file_and_resumes_from_state(bundle, tmp_path, capsys):
    src = tmp_path / "grow.csv"
    text = _csv(40).splitlines(keepends=True)
    src.write_text("".join(text[:11]))

    def append():
        for line in text[11:]:
            time.sleep(0.01)
            with open(src, "a") as fh:
                fh.write(line)

    th = threading.Thread(target=append)
    th.start()
    out, state = tmp_path / "out.jsonl", tmp_path / "s.state"
    args = ["stream", str(bundle), "--input", str(src), "--follow", "--idle", "1.5", "--every", "5", "--context",
            "24", "--horizon", "2", "--out", str(out), "--state", str(state), "--quantiles", "none"]
    assert main(args) == 0
    th.join()
    rows = _read(out)
    assert rows[-1]["t"] == 39 and "quantiles" not in rows[-1]
    assert "40 points" in capsys.readouterr().err and state.exists()
    src.write_text("\n".join(_csv(45).splitlines()[41:]) + "\n")  # the next 5 points, no header
    src.write_text("timestamp,x,y\n" + src.read_text())
    assert main([a for a in args if a not in ("--follow",)]) == 0
    assert "resumed" in capsys.readouterr().err and _read(out)[-1]["t"] == 44


def test_json_lines_on_stdin(bundle):
    lines = [json.dumps({"timestamp": i * 60.0, "values": [float(np.sin(i / 5))]}) for i in range(30)]
    lines.insert(10, "{broken")
    lines.insert(15, json.dumps([1.0, 2.0]))
    r = subprocess.run([sys.executable, "-m", "alignts", "stream", str(bundle), "--every", "15", "--context", "16",
                        "--horizon", "2"], input="\n".join(lines) + "\n", capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(s) for s in r.stdout.splitlines()]
    # due after points 14 and 29; both fall in one update when the reader queued every line first
    assert [row["t"] for row in rows] in ([29], [14, 29]) and rows[-1]["timestamp"] == 29 * 60.0
    assert "line 11: skipped: not valid JSON" in r.stderr and "line 16: skipped: expected 1 values" in r.stderr


def test_every_seconds_forecasts_by_the_lines_timestamps(bundle, tmp_path, capsys):
    t0 = 1_700_000_000.0
    lines = [json.dumps({"timestamp": t0 + 3600 * i, "values": [50 + 10 * np.sin(i / 6), 3.0]}) for i in range(30)]
    lines[0] = json.dumps([50.0, 3.0])  # hourly points; line 1 has no timestamp
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    rc = main(["stream", str(bundle), "--input", str(src), "--every-seconds", str(6 * 3600), "--context", "16",
               "--horizon", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0 and "line 1: skipped: no timestamp; --every-seconds" in err and "29 points" in err
    rows = _read(out)
    # due every 6 h from the first good point (hour 1): at hours 7, 13, 19 and 25. The reader may queue several
    # lines for one update, whose one forecast then reports the due times it coalesced as `skipped`: 4 due times
    # in all, none before hour 7, each slot once.
    slots = [(r["timestamp"] - t0 - 3600) // (6 * 3600) for r in rows]
    assert rows and min(slots) >= 1 and slots == sorted(set(slots))
    assert sum(1 + r["skipped"] for r in rows) == 4
    assert main(["stream", str(bundle), "--input", str(src), "--every", "2", "--every-seconds", "60"]) == 2
    assert "two cadences" in capsys.readouterr().err
