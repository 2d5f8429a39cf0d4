"""`alignts bench serve --quick`: both batching modes, every level, the in-process reference beside, JSON and
markdown written (numbers are not asserted: a unit test times nothing)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")


def test_bench_serve_quick(tiny_bundles, tmp_path, capsys):
    from alignts.cli import main

    out, md = tmp_path / "serve.json", tmp_path / "serve.md"
    assert main(["bench", "serve", str(tiny_bundles["internal"]), "--quick", "--json", str(out), "--md", str(md)]) == 0
    d = json.loads(out.read_text())
    rows = d["rows"]
    assert [(r["batching"] != "off", r["clients"]) for r in rows] == [(True, 1), (True, 4), (False, 1), (False, 4)]
    for r in rows:
        assert r["ok"] == r["requests"] == 40 and r["timeouts"] == r["errors"] == 0
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["inproc_series_per_s"] > 0
        assert r["server_peak_rss"] > 0 and r["inproc_batch"] == (min(r["clients"], 32) if r["batching"] != "off" else 1)
    assert "| batching | clients |" in md.read_text() and "load average" in md.read_text()
    assert main(["bench", "serve"]) == 2  # one line: `serve` takes one bundle
    assert "takes one bundle" in capsys.readouterr().err
