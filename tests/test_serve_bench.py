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


def test_cpu_lists_are_parsed_and_checked():
    import os

    from alignts.bench.serve import ServeBenchConfig, parse_cpus
    from alignts.errors import InputError

    assert parse_cpus("0,2-3") == (0, 2, 3) and parse_cpus(None) is None
    with pytest.raises(InputError, match="expected numbers and ranges"):
        parse_cpus("a")
    have = sorted(os.sched_getaffinity(0))
    with pytest.raises(InputError, match="go together"):
        ServeBenchConfig(server_cpus=(have[0],)).check()
    with pytest.raises(InputError, match="overlap"):
        ServeBenchConfig(server_cpus=(have[0],), client_cpus=(have[0],)).check()
    with pytest.raises(InputError, match="expected CPUs this process may use"):
        ServeBenchConfig(server_cpus=(have[0],), client_cpus=(4096,)).check()


@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2, reason="needs 2 CPUs to keep apart")
def test_server_is_pinned_apart_from_the_load_generator(tiny_bundles, tmp_path):
    import os

    from alignts.bench.serve import ServeBenchConfig, _Pinned, start_server

    a, b = sorted(os.sched_getaffinity(0))[:2]
    cfg = ServeBenchConfig(server_cpus=(a,), client_cpus=(b,))
    cfg.check()
    p, _ = start_server(str(tiny_bundles["internal"]), cfg, True, tmp_path)
    try:
        assert os.sched_getaffinity(p.pid) == {a}
        mine = os.sched_getaffinity(0)
        with _Pinned(cfg.client_cpus):
            assert os.sched_getaffinity(0) == {b}
        assert os.sched_getaffinity(0) == mine  # restored
    finally:
        p.terminate()
        p.wait(60)
