"""alignts-run --stream (native/runner/stream.c): points on stdin, one JSON line per forecast, against the Python
stream (alignts/runtime/stream, window engine: the batch forecast of the window) on the same tiny bundles.

- Internal and Bridging (gguf-f32): every forecast within 1e-4 of the Python stream's (the tolerance of
  tests/test_native_runner.py), quantiles included; Injective (greedy): equal to the printed digits;
- CSV with an ISO timestamp column and JSON lines; missing values (empty / null) filled as the Python stream
  fills them; bad lines (wrong channel count, not a number, inf, bad JSON, a timestamp going backwards, a line
  over 64 KiB) reported with their line number, counted, skipped;
- policy latest coalesces the due points of input already waiting (skipped / lag), --context-from warms the
  window;
- memory: peak RSS after 200k points equals that after 20k (bounded: a ring buffer and one line buffer).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pd = pytest.importorskip("pandas")

import test_native_runner as _nr  # noqa: E402

# the runner build and the tiny bundles of tests/test_native_runner.py (module fixtures, one per module)
runner, internal_bundle, bridging_bundle, injective_bundle = (_nr.runner, _nr.internal_bundle, _nr.bridging_bundle,
                                                              _nr.injective_bundle)

LEVELS = (0.1, 0.5, 0.9)


def stream(exe, bundle, text: str, *args, valgrind: bool = False) -> subprocess.CompletedProcess:
    cmd = [str(exe), str(bundle), "--stream", *map(str, args)]
    if valgrind:
        cmd = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
               "--errors-for-leak-kinds=definite,indirect,possible", "--error-exitcode=99", *cmd]
    return subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=600)


def _rows(csv, n: int) -> tuple[list[str], np.ndarray]:
    """The last n rows of the test CSV: ISO timestamps and values [n, 2] with two gaps (NaN)."""
    df = pd.read_csv(csv).tail(n).reset_index(drop=True)
    v = np.array(df[["x", "y"]], dtype=np.float64)
    v[5, 0] = np.nan
    v[n - 3, 1] = np.nan
    stamps = [d.replace(" ", "T") for d in df["date"]]
    return stamps, v


def _python(bundle, values, stamps, every, variant=None, levels=LEVELS):
    """{t: Forecast} of the Python stream (policy every, window engine) fed the same points."""
    from alignts.runtime import load

    f = load(bundle)
    f.plan(variant=variant)
    s = f.stream(n_channels=values.shape[1], forecast_every=every, policy="every", quantiles=levels, kv=False)
    out = {}
    for i in range(values.shape[0]):
        for sf in s.update(values[i], timestamps=None if stamps is None else [stamps[i]]):
            out[sf.t] = sf
    return out


def _summary(err: str) -> dict:
    m = re.search(r"(\d+) points, (\d+) forecasts, (\d+) bad lines skipped, (\d+) missing values, (\d+) due "
                  r"forecasts coalesced, (\d+) forecasts failed; peak RSS (\d+) KiB", err)
    assert m, err[-2000:]
    keys = ("points", "forecasts", "bad", "missing", "coalesced", "failed", "rss")
    return dict(zip(keys, map(int, m.groups())))


def _close(got, want, tol):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    d = float(np.abs(got - want).max())
    assert d < tol * max(1.0, float(np.abs(want).max())), d


@pytest.mark.parametrize("paradigm", ["internal", "bridging"])
def test_point_forecasters_equal_python_stream(runner, csv, paradigm, request):
    bundle = request.getfixturevalue(f"{paradigm}_bundle")
    conformal = bool(json.loads((bundle / "manifest.json").read_text())["config"].get("conformal"))
    stamps, v = _rows(csv, 70)
    bad = {10: "{s},abc,1", 20: "{s},1,2,3", 30: "{s},inf,2", 40: "2000-01-01T00:00:00,1,2"}
    lines = ["date,x,y"]
    for i in range(len(v)):
        lines.append(",".join([stamps[i]] + ["" if np.isnan(a) else repr(float(a)) for a in v[i]]))
        if i in bad:
            lines.append(bad[i].format(s=stamps[i]))
    r = stream(runner, bundle, "\n".join(lines) + "\n", "--variant", "gguf-f32", "--every", 7, "--policy", "every")
    assert r.returncode == 0, r.stderr[-3000:]
    s = _summary(r.stderr)
    assert (s["points"], s["bad"], s["missing"], s["failed"]) == (70, 4, 2, 0)
    for n in (13, 24, 35, 46):  # the bad lines' numbers on stdin (header = line 1)
        assert f"stdin line {n}: skipped" in r.stderr
    assert "expected 2 values (channels); got 3" in r.stderr and "is not after the previous one" in r.stderr
    assert "a value is inf" in r.stderr and "fields must be numbers" in r.stderr
    got = [json.loads(x) for x in r.stdout.splitlines()]
    want = _python(bundle, v, stamps, 7, variant="gguf-f32", levels=LEVELS if conformal else None)
    assert [g["t"] for g in got] == sorted(want) == list(range(6, 70, 7))
    for g in got:
        w = want[g["t"]]
        assert g["timestamp"] == w.timestamp and (g["lag"], g["skipped"]) == (0, 0) and g["horizon"] == w.forecast.mean.shape[-1]
        _close(g["mean"], w.forecast.mean[0], 1e-4)
        _close(g["median"], w.forecast.median[0], 1e-4)
        assert conformal == ("quantiles" in g)
        for i, lv in enumerate(LEVELS if conformal else ()):
            _close(g["quantiles"][str(lv)], w.forecast.quantiles[0, :, :, i], 1e-4)
    # the first forecast read 7 points: a short window left-padded as Forecaster.context pads it
    assert got[0]["t"] == 6


def test_injective_json_lines_equal_python_stream(runner, csv, injective_bundle):
    _, v = _rows(csv, 60)
    lines = []
    for i in range(len(v)):
        vals = [None if np.isnan(a) else float(a) for a in v[i]]
        lines.append(json.dumps({"values": vals}) if i % 2 else json.dumps(vals))
    bad = ['{"values": [1, 2', '{"timestamp": 5}', '["a", 1]', "x" * 70000, "[1, Infinity]", "[1]"]
    text = "\n".join(lines[:1] + bad + lines[1:]) + "\n"
    r = stream(runner, injective_bundle, text, "--every", 9, "--policy", "every", "--greedy")
    assert r.returncode == 0, r.stderr[-3000:]
    s = _summary(r.stderr)
    assert (s["points"], s["bad"], s["missing"], s["failed"]) == (60, 6, 2, 0)
    for n in range(2, 8):
        assert f"stdin line {n}: skipped" in r.stderr
    assert "not valid JSON" in r.stderr and "needs 'values'" in r.stderr and "longer than 65535 bytes" in r.stderr
    got = [json.loads(x) for x in r.stdout.splitlines()]
    want = _python(injective_bundle, v, None, 9)
    assert [g["t"] for g in got] == sorted(want)
    for g in got:
        w = want[g["t"]].forecast
        assert "mean" not in g  # the C API gives the sample median, not the mean
        assert g["median"] == [[float(f"{a:.6g}") for a in row] for row in w.median[0]]
        for i, lv in enumerate(LEVELS):
            assert g["quantiles"][str(lv)] == [[float(f"{a:.6g}") for a in row] for row in w.quantiles[0, :, :, i]]


def test_latest_policy_and_context_from(runner, csv, internal_bundle, tmp_path):
    _, v = _rows(csv, 90)
    v = np.nan_to_num(v, nan=0.5)
    text = "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in v)
    warm = tmp_path / "warm.csv"
    warm.write_text("x,y\n" + "".join(text.splitlines(keepends=True)[:50]))
    # a file on stdin is all waiting: the due points coalesce into one forecast of the newest window
    r = stream(runner, internal_bundle, "".join(text.splitlines(keepends=True)[50:]), "--variant", "gguf-f32",
               "--every", 4, "--context-from", warm, "--quantiles", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    (g,) = [json.loads(x) for x in r.stdout.splitlines()]
    due = [t for t in range(50, 90) if (t + 1) % 4 == 0]
    assert (g["t"], g["skipped"], g["lag"], g["line"]) == (89, len(due) - 1, 89 - due[0], 40)
    assert "quantiles" not in g
    want = _python(internal_bundle, v, None, 90, variant="gguf-f32", levels=None)[89]
    _close(g["mean"], want.forecast.mean[0], 1e-4)
    assert _summary(r.stderr)["coalesced"] == len(due) - 1


def test_memory_is_bounded(runner, internal_bundle, tmp_path):
    rng = np.random.default_rng(0)
    rss = {}
    for n in (20_000, 200_000):
        x = rng.standard_normal((n, 2)).round(4)
        text = "\n".join(f"{a},{b}" for a, b in x) + "\n"
        r = stream(runner, internal_bundle, text, "--variant", "gguf-f32", "--every", 5000)
        assert r.returncode == 0, r.stderr[-3000:]
        s = _summary(r.stderr)
        assert s["points"] == n and s["forecasts"] >= 1
        rss[n] = s["rss"]
    assert rss[200_000] - rss[20_000] < 2048, rss  # KiB: no growth with the number of points


def test_usage_errors(runner, internal_bundle, csv):
    r = stream(runner, internal_bundle, "", "--data", csv)
    assert r.returncode == 2 and "--stream reads points from stdin" in r.stderr
    r = stream(runner, internal_bundle, "", "--quantiles", "0.9,0.1")
    assert r.returncode == 2 and "ascending levels" in r.stderr
    r = stream(runner, internal_bundle, "", "--every", 0)
    assert r.returncode == 2 and "expected an integer >= 1" in r.stderr
    r = stream(runner, internal_bundle, "1,2\n", "--context-from", "/nonexistent/warm.csv")
    assert r.returncode == 1 and "cannot open --context-from" in r.stderr


def test_valgrind_clean(runner, injective_bundle):
    if not shutil.which("valgrind"):
        pytest.skip("valgrind is not installed")
    lines = ["[1.5, 2]", '{"values": [1, 2', '["a", 1]', "[1, Infinity]", "[1]", "x" * 70000]
    lines += [json.dumps({"timestamp": i, "values": [float(np.sin(i / 5)), None if i == 7 else i % 5]})
              for i in range(30)]
    lines += ['{"timestamp": 3, "values": [1, 2]}', "1,2"]  # backwards; no timestamp after timed points
    r = stream(runner, injective_bundle, "\n".join(lines), "--every", 10, "--policy", "every", "--greedy",
               "--threads", 1, valgrind=True)
    _nr._skip_if_valgrind_cannot_run_llama(r)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ERROR SUMMARY: 0 errors" in r.stderr, r.stderr[-3000:]
    s = _summary(r.stderr)
    assert (s["points"], s["forecasts"], s["bad"], s["missing"]) == (31, 3, 7, 1)
    assert "item 0 is a string" in r.stderr and "stdin line 38: skipped: no timestamp" in r.stderr
