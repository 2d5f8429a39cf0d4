"""Streams over the server: open, update (forecasts that fall due), forecast, describe, close; the in-memory cap
moves idle streams to --stream-dir, every stream is written there at shutdown and resumed by the next server."""

from __future__ import annotations

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from alignts.serve.app import ServeConfig  # noqa: E402

from serve_util import ServerThread, expected, reference  # noqa: E402


def _points(n: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return (20 + rng.standard_normal(n).cumsum()).tolist()


def test_stream_routes_and_answers(tiny_bundles):
    cfg = ServeConfig(models=(f"m={tiny_bundles['internal']}",), max_batch=4)
    with ServerThread(cfg) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        r = c.post("/v1/models/m/streams", json={"forecast_every": 8})
        assert r.status_code == 201, r.text
        sid = r.json()["stream_id"]
        pts = _points(40)
        r = c.post(f"/v1/streams/{sid}/update", json={"values": pts[:20], "timestamps": list(range(20))})
        assert r.status_code == 200, r.text
        due = r.json()["forecasts"]
        assert r.json()["n_seen"] == 20 and len(due) == 1 and due[0]["t"] == 19 and due[0]["skipped"] == 1
        assert len(due[0]["forecast"]["mean"]) == 8 and "0.9" in due[0]["forecast"]["quantiles"]
        for i in range(20, 40):  # one point per call, NaN allowed
            r = c.post(f"/v1/streams/{sid}/update", json={"values": [None if i == 30 else pts[i]],
                                                          "timestamps": [i]})
            assert r.status_code == 200, r.text
        r = c.post(f"/v1/streams/{sid}/forecast", json={"quantiles": [0.25, 0.75]})
        assert r.status_code == 200, r.text
        got = r.json()
        window = np.asarray(pts[-32:], dtype=np.float64)
        window[30 - 8] = np.nan
        meta = c.get("/v2/models/m").json()
        f = reference(tiny_bundles["internal"], meta)
        mean, _, q = expected(f, f.context(window[None, None]), meta["parameters"]["batching"], levels=(0.25, 0.75))
        assert np.array_equal(got["mean"], mean[0, 0]) and np.array_equal(got["quantiles"]["0.75"], q[0, 0, :, 1])
        info = c.get(f"/v1/streams/{sid}").json()
        assert info["n_seen"] == 40 and info["n_missing"] == 1 and info["model_name"] == "m"
        # errors
        assert c.post(f"/v1/streams/{sid}/update", json={"values": [[1.0, 2.0]]}).status_code == 400
        r = c.post(f"/v1/streams/{sid}/update", json={"values": [1.0], "timestamps": [3]})
        assert r.status_code == 400 and "not after" in r.json()["error"]
        assert c.post(f"/v1/streams/{sid}/update", content=b'{"values": [Infinity]}').status_code == 400
        assert c.post("/v1/streams/nosuchstream1/forecast").status_code == 404
        assert c.post("/v1/models/nope/streams").status_code == 404
        assert c.delete(f"/v1/streams/{sid}").status_code == 204
        assert c.get(f"/v1/streams/{sid}").status_code == 404
        # a time cadence: every 10 s of the stream's timestamps
        r = c.post("/v1/models/m/streams", json={"forecast_every_s": 10})
        assert r.status_code == 201 and r.json()["forecast_every_s"] == 10
        tid = r.json()["stream_id"]
        r = c.post(f"/v1/streams/{tid}/update", json={"values": pts[:12], "timestamps": [3 * i for i in range(12)]})
        assert [d["t"] for d in r.json()["forecasts"]] == [11]  # due at 10, 20, 30: coalesced into one (latest)
        assert r.json()["forecasts"][0]["skipped"] == 2
        r = c.post(f"/v1/streams/{tid}/update", json={"values": pts[12:13]})
        assert r.status_code == 400 and "timestamps" in r.json()["error"]
        for bad in ({"forecast_every_s": "10"}, {"forecast_every_s": 0}, {"forecast_every": 2, "forecast_every_s": 5}):
            assert c.post("/v1/models/m/streams", json=bad).status_code == 400, bad


def test_stream_cap_spills_and_shutdown_persists(tiny_bundles, tmp_path):
    sdir = tmp_path / "streams"
    cfg = ServeConfig(models=(f"m={tiny_bundles['internal']}",), max_batch=4, max_streams=1, stream_dir=str(sdir))
    pts = _points(50, seed=1)
    with ServerThread(cfg) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        a = c.post("/v1/models/m/streams", json={}).json()["stream_id"]
        c.post(f"/v1/streams/{a}/update", json={"values": pts[:30]})
        b = c.post("/v1/models/m/streams", json={}).json()["stream_id"]  # the cap: a moves to the folder
        assert (sdir / f"{a}.state").is_file() and len(s.state.streams) == 1
        c.post(f"/v1/streams/{b}/update", json={"values": pts[:10]})
        r = c.post(f"/v1/streams/{a}/update", json={"values": pts[30:40]})  # restored from the folder
        assert r.status_code == 200 and r.json()["n_seen"] == 40
        before = c.post(f"/v1/streams/{a}/forecast").json()
    assert (sdir / f"{a}.state").is_file() and (sdir / f"{b}.state").is_file()  # written at shutdown
    with ServerThread(cfg) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        after = c.post(f"/v1/streams/{a}/forecast").json()
        assert after["n_seen"] == 40 and after["mean"] == before["mean"]
        assert c.get(f"/v1/streams/{b}").json()["n_seen"] == 10
    # no folder: a full table refuses new streams with 429
    with ServerThread(ServeConfig(models=(f"m={tiny_bundles['internal']}",), max_streams=1)) as s:
        assert httpx.post(s.url + "/v1/models/m/streams").status_code == 201
        r = httpx.post(s.url + "/v1/models/m/streams")
        assert r.status_code == 429 and "--max-streams 1" in r.json()["error"] and r.headers["retry-after"]
