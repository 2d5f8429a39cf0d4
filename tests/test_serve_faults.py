"""Faults of `alignts serve`: clients that leave mid-request, a body with no length that grows past the limit, a
bundle tampered with or deleted while the server runs (that model answers 503, the others keep serving, and it
comes back when restored), and SIGTERM under load (every accepted request answered, exit 0, RSS under --budget
all along). The server package imports no torch."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from alignts.serve.app import ServeConfig  # noqa: E402

from serve_util import ServerThread, expected, infer_body, outputs_of, reference, series, start_child  # noqa: E402


def _metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_serve_package_imports_no_torch():
    code = ("import sys, alignts.serve.app, alignts.serve.registry, alignts.serve.server, alignts.cli.serve; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=os.getcwd())).returncode == 0


def test_client_disconnects_and_unbounded_body(tiny_bundles):
    cfg = ServeConfig(models=(f"m={tiny_bundles['internal']}", f"slow={tiny_bundles['injective']}"), max_batch=32,
                      max_body_bytes=100_000)
    with ServerThread(cfg) as s:
        x = series(1, 1, 1, 32)[0]
        import json

        body = json.dumps(infer_body(series(1, 96, 1, 32)[0])).encode()  # 96 Injective generations: > 1 s
        head = (f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        # 1. leaves while sending the body
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(head + body[: len(body) // 2])
        # 2. sends the whole request, leaves while it runs
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(head + body)
            time.sleep(0.3)
        t0 = time.monotonic()
        while _metric(s.url, "alignts_client_disconnects_total{") < 1 and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        assert _metric(s.url, "alignts_client_disconnects_total{") == 1
        # the server keeps serving
        r = httpx.post(s.url + "/v2/models/m/infer", json=infer_body(x), timeout=30)
        assert r.status_code == 200 and outputs_of(r.json())["forecast"].shape == (1, 1, 8)
        # a chunked body (no Content-Length) is cut at the limit: 413, not read to the end

        def chunks():
            for _ in range(100):
                yield b" " * 10_000

        r = httpx.post(s.url + "/v2/models/m/infer", content=chunks(), timeout=30)
        assert r.status_code == 413 and "at most 100000" in r.json()["error"]


def test_tampered_or_deleted_bundle_takes_only_that_model_out(tiny_bundles, tmp_path):
    mine = tmp_path / "copy"
    shutil.copytree(tiny_bundles["internal"], mine)
    cfg = ServeConfig(models=(f"copy={mine}", f"other={tiny_bundles['internal']}", f"inj={tiny_bundles['injective']}"),
                      max_batch=4, max_wait_ms=1)
    with ServerThread(cfg) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        x = series(1, 1, 1, 32)[0]
        good = c.post("/v2/models/copy/infer", json=infer_body(x))
        assert good.status_code == 200
        variant = c.get("/v2/models/copy").json()["parameters"]["variant"]
        import json

        files = json.loads((mine / "manifest.json").read_text())
        name = next(v for v in files["variants"] if v["name"] == variant)["files"][0]
        target = mine / name
        original = target.read_bytes()
        target.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit, same size
        r = c.post("/v2/models/copy/infer", json=infer_body(x))
        assert r.status_code == 503 and "out of service" in r.json()["error"] and "sha256" in r.json()["error"]
        assert c.get("/v2/models/copy/ready").status_code == 503
        assert c.get("/v2/health/ready").status_code == 503
        for other in ("other", "inj"):
            assert c.post(f"/v2/models/{other}/infer", json=infer_body(x)).status_code == 200
        target.write_bytes(original)  # restored: back in service with the same answers
        r = c.post("/v2/models/copy/infer", json=infer_body(x))
        assert r.status_code == 200 and r.json()["outputs"] == good.json()["outputs"]
        # a manifest rewritten whole (its files still verify) is served as the new version
        v1 = c.get("/v2/models/copy").json()["versions"][0]
        m = json.loads((mine / "manifest.json").read_text())
        m["training"] = {**m.get("training", {}), "note": "rewritten"}
        (mine / "manifest.json").write_text(json.dumps(m))
        r = c.post("/v2/models/copy/infer", json=infer_body(x))
        assert r.status_code == 200 and r.json()["model_version"] != v1
        assert r.json()["outputs"] == good.json()["outputs"]
        target.unlink()
        r = c.post("/v2/models/copy/infer", json=infer_body(x))
        assert r.status_code == 503 and "is missing 'core.onnx'" in r.json()["error"]
        assert c.post("/v2/models/other/infer", json=infer_body(x)).status_code == 200


def test_tampered_backbone_takes_its_adapter_out(tiny_bundles, tmp_path):
    from alignts.runtime import backbone_store

    backbone_store.clear_cache()  # the copy's backbone is loaded from the copy, not shared with earlier tests
    root = tmp_path / "b"
    shutil.copytree(tiny_bundles["bridging"], root / "bridging")
    shutil.copytree(tiny_bundles["bridging"].parent / "backbones", root / "backbones")
    cfg = ServeConfig(models=(f"br={root / 'bridging'}", f"other={tiny_bundles['internal']}"), max_batch=4)
    with ServerThread(cfg) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        x = series(1, 1, 1, 32)[0]
        assert c.post("/v2/models/br/infer", json=infer_body(x)).status_code == 200
        # every weight file of the backbone (the planner may have chosen any of its gate-passing variants)
        targets = sorted(p for p in next((root / "backbones").iterdir()).iterdir() if p.suffix in (".onnx", ".gguf"))
        originals = [t.read_bytes() for t in targets]
        for t, original in zip(targets, originals):
            t.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
        r = c.post("/v2/models/br/infer", json=infer_body(x))
        assert r.status_code == 503 and any(t.name in r.json()["error"] for t in targets), r.text
        assert c.post("/v2/models/other/infer", json=infer_body(x)).status_code == 200
        for t, original in zip(targets, originals):
            t.write_bytes(original)
        assert c.post("/v2/models/br/infer", json=infer_body(x)).status_code == 200


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_sigterm_under_load_answers_every_accepted_request(tiny_bundles, tmp_path):
    budget = 2_000_000_000
    # Injective generations, one request at a time: 16 requests of 4 series queue up for seconds
    p, url = start_child([f"m={tiny_bundles['injective']}", f"i={tiny_bundles['internal']}", "--budget", "2GB",
                          "--max-batch", "8", "--no-batching", "--log-format", "json"], tmp_path)
    try:
        xs = series(16, 4, 1, 32, seed=9)
        meta = httpx.get(url + "/v2/models/m", timeout=30).json()
        f = reference(tiny_bundles["injective"], meta)
        serial = [expected(f, x, meta["parameters"]["batching"])[0] for x in xs]
        peak = [_rss(p.pid)]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak.append(_rss(p.pid))
                except OSError:
                    return
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def one(k: int):
            with httpx.Client(base_url=url, timeout=60) as c:
                return c.post("/v2/models/m/infer", json=infer_body(xs[k]))

        big = series(1, 96, 1, 32, seed=10)[0]  # seconds of generation on the one worker: the others queue behind it
        with ThreadPoolExecutor(17) as ex:
            head = ex.submit(lambda: httpx.post(url + "/v2/models/m/infer", json=infer_body(big), timeout=120))
            t0 = time.monotonic()
            while _metric(url, "alignts_inflight_requests") < 2 and time.monotonic() - t0 < 20:
                time.sleep(0.01)
            futs = [ex.submit(one, k) for k in range(16)]
            t0 = time.monotonic()  # every request accepted (in the server's hands) before the signal
            while _metric(url, "alignts_inflight_requests") < 18 and time.monotonic() - t0 < 20:
                time.sleep(0.01)
            assert _metric(url, "alignts_inflight_requests") >= 18  # 17 + this /metrics call
            p.send_signal(signal.SIGTERM)
            rs = [f.result() for f in futs]
            assert head.result().status_code == 200
        assert [r.status_code for r in rs] == [200] * 16, [r.text for r in rs if r.status_code != 200]
        for k in range(16):
            assert np.array_equal(outputs_of(rs[k].json())["forecast"], serial[k])
        assert p.wait(30) == 0
        stop.set()
        sampler.join(5)
        assert max(peak) < budget, max(peak)
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/v2/health/live", timeout=2)
        log = open(p.log_path).read()
        assert '"msg": "signal' in log and "graceful shutdown" in log
    finally:
        if p.poll() is None:
            p.kill()
