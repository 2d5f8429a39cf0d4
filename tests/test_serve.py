"""`alignts serve` over real HTTP on 127.0.0.1: every KServe v2 route with httpx and tritonclient.http, all three
paradigms, the JSON series route, v2 error JSON, dynamic batching (batched answers = single answers, 8
concurrent clients = serial answers), the bounded queue (429), and many models under one budget (shared
backbone, LRU eviction). Bundles: tests/tiny_bundles.py (conftest's tiny_bundles)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from alignts.serve.app import ServeConfig  # noqa: E402

from serve_util import AUTH, TOKEN, ServerThread, expected, infer_body, outputs_of, reference, series  # noqa: E402

PARADIGMS = ("internal", "bridging", "injective")


@pytest.fixture(scope="module")
def server(tiny_bundles):
    cfg = ServeConfig(models=tuple(f"{p}={tiny_bundles[p]}" for p in PARADIGMS), max_batch=8, max_wait_ms=20,
                      token=TOKEN, max_body_bytes=200_000)
    with ServerThread(cfg) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def refs(server, client, tiny_bundles):
    out = {}
    for p in PARADIGMS:
        meta = client.get(f"/v2/models/{p}").json()
        out[p] = (reference(tiny_bundles[p], meta), meta["parameters"]["batching"])
    return out


def test_the_server_freezes_the_objects_alive_after_its_start(server):
    import gc

    # ServeConfig.freeze_gc (default): the preloaded models' objects sit in the permanent generation
    assert gc.get_freeze_count() > 10_000


def test_health_and_metadata(client, server):
    assert httpx.get(server.url + "/v2/health/live").json() == {"live": True}  # health needs no token
    r = httpx.get(server.url + "/v2/health/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    meta = client.get("/v2").json()
    assert meta["name"] == "alignts" and "binary_tensor_data" in meta["extensions"]
    assert {m["name"] for m in client.get("/v2/models").json()["models"]} == set(PARADIGMS)
    for p in PARADIGMS:
        m = client.get(f"/v2/models/{p}").json()
        assert m["name"] == p and m["platform"] == f"alignts_{p}" and m["inputs"][0]["name"] == "x"
        outs = [o["name"] for o in m["outputs"]]
        assert outs[:2] == ["forecast", "median"] and "quantiles" in outs
        prm = m["parameters"]
        assert prm["state"] == "ready" and prm["batch_size"] == 8
        assert prm["memory"]["model_estimate_bytes"] > 0 and prm["memory"]["rss_bytes"] > 0
        assert prm["batching"] == {"injective": "per-request"}.get(p, prm["batching"])
        v = m["versions"][0]
        assert client.get(f"/v2/models/{p}/versions/{v}").json()["name"] == p
        assert client.get(f"/v2/models/{p}/ready").status_code == 200
        assert client.get(f"/v2/models/{p}/versions/{v}/ready").status_code == 200


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_infer_json_equals_in_process(client, refs, paradigm):
    f, batching = refs[paradigm]
    x = series(1, 3, 1, 40, seed=1)[0]
    r = client.post(f"/v2/models/{paradigm}/infer", json={**infer_body(x), "id": "req-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == paradigm and body["id"] == "req-1"
    out = outputs_of(body)
    mean, median, q = expected(f, x, batching)
    assert np.array_equal(out["forecast"], mean) and np.array_equal(out["median"], median)
    assert np.array_equal(out["quantiles"], q)
    assert body["parameters"]["quantile_levels"] == "0.1,0.5,0.9"
    # [B, T] for a one-channel model, FP32, only the outputs asked for, other levels
    x32 = x[:, 0, :].astype(np.float32)
    d = {"inputs": [{"name": "x", "shape": list(x32.shape), "datatype": "FP32", "data": x32.reshape(-1).tolist()}],
         "outputs": [{"name": "quantiles"}], "parameters": {"quantiles": [0.25, 0.75]}}
    r = client.post(f"/v2/models/{paradigm}/infer", json=d)
    assert r.status_code == 200, r.text
    out = outputs_of(r.json())
    assert list(out) == ["quantiles"]
    assert np.array_equal(out["quantiles"], expected(f, x32[:, None, :].astype(np.float64), batching,
                                                     levels=(0.25, 0.75))[2])


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_tritonclient_http(server, refs, paradigm):
    tc = pytest.importorskip("tritonclient.http")
    f, batching = refs[paradigm]
    c = tc.InferenceServerClient(server.url.removeprefix("http://"))
    h = dict(AUTH)
    assert c.is_server_live(headers=h) and c.is_server_ready(headers=h) and c.is_model_ready(paradigm, headers=h)
    meta = c.get_model_metadata(paradigm, headers=h)
    assert meta["inputs"][0]["name"] == "x"
    x = series(1, 2, 1, 32, seed=2)[0].astype(np.float32)
    mean, median, q = expected(f, x.astype(np.float64), batching)
    for binary in (True, False):
        inp = tc.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [tc.InferRequestedOutput(n, binary_data=binary) for n in ("forecast", "quantiles")]
        res = c.infer(paradigm, [inp], outputs=outs, headers=dict(AUTH))  # infer adds its own headers to the dict
        assert np.array_equal(res.as_numpy("forecast"), mean)
        assert np.array_equal(res.as_numpy("quantiles"), q)
        assert res.get_response()["model_name"] == paradigm
    c.close()


def test_series_route(client, refs):
    f, batching = refs["internal"]
    x = series(1, 2, 1, 36, seed=3)[0]
    stamps = [f"2024-01-01T{h:02d}:00:00" for h in range(24)] + [f"2024-01-02T{h:02d}:00:00" for h in range(12)]
    body = {"series": [{"id": "a", "timestamps": stamps, "values": x[0, 0].tolist()},
                       {"id": "b", "values": x[1, 0].tolist()}], "quantiles": [0.1, 0.9]}
    r = client.post("/v1/models/internal/forecast", json=body)
    assert r.status_code == 200, r.text
    d = r.json()
    mean, _, q = expected(f, x, batching, levels=(0.1, 0.9))
    a, b = d["forecasts"]
    assert a["id"] == "a" and a["timestamps"][0] == "2024-01-02T12:00:00" and len(a["timestamps"]) == 8
    assert b["timestamps"] == list(range(36, 44))  # no timestamps: step numbers
    assert np.array_equal(a["mean"], mean[0, 0]) and np.array_equal(b["quantiles"]["0.9"], q[1, 0, :, 1])


def test_errors_are_v2_json(client, server):
    def err(r, code, *words):
        assert r.status_code == code, r.text
        msg = r.json()["error"]
        for w in words:
            assert w in msg, msg
        return msg

    x = series(1, 1, 1, 32)[0]
    err(client.post("/v2/models/nope/infer", json=infer_body(x)), 404, "'nope'", "expected one of")
    err(client.get("/v2/models/nope"), 404, "not served")
    err(client.get("/v2/nowhere"), 404, "expected a KServe v2 route")
    err(client.post("/v2/models/internal/infer", content=b"{not json"), 400, "not valid JSON")
    err(client.post("/v2/models/internal/infer", json={"inputs": []}), 400, "'x'")
    err(client.post("/v2/models/internal/infer", json=infer_body(series(1, 1, 2, 32)[0])), 400, "2 channels")
    bad = infer_body(x)
    bad["inputs"][0]["shape"] = [1, 1, 31]
    err(client.post("/v2/models/internal/infer", json=bad), 400, "32 values for shape [1, 1, 31]")
    bad["inputs"][0].update(shape=[1, 1, 32], datatype="INT8")
    err(client.post("/v2/models/internal/infer", json=bad), 400, "FP32 or FP64")
    err(client.post("/v2/models/internal/infer", json=infer_body(x, quantiles=[0.9, 0.1])), 400, "quantile")
    err(client.post("/v2/models/internal/infer", json=infer_body(x, outputs=["logits"])), 400, "'logits'")
    big = series(1, 1, 1, 30_000)[0]
    err(client.post("/v2/models/internal/infer", json=infer_body(big)), 413, "at most 200000")
    xi = x.copy()
    xi[0, 0, 5] = np.inf
    err(client.post("/v2/models/internal/infer", content=infer_body_nan(xi)), 400, "inf")
    xn = np.full_like(x, np.nan)
    body = infer_body(x)
    body["inputs"][0]["data"] = [None] * x.size
    err(client.post("/v2/models/internal/infer", json=body), 400, "not a number")
    r = client.post("/v2/models/internal/infer", content=infer_body_nan(xn), headers={"content-type": "application/json"})
    err(r, 400, "no observed value")
    r = httpx.post(server.url + "/v2/models/internal/infer", json=infer_body(x))
    err(r, 401, "bearer token")
    assert r.headers["www-authenticate"] == "Bearer"
    err(httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer wrong-token-xx"}), 401, "bearer")


def infer_body_nan(x: np.ndarray) -> bytes:
    import json

    return json.dumps(infer_body(x)).encode()  # Python's json writes NaN; the server reads it


def test_nan_gaps_are_filled_like_the_runtime(client, refs):
    f, batching = refs["internal"]
    x = series(1, 1, 1, 40, seed=4)[0]
    x[0, 0, [3, 10, 11, 39]] = np.nan
    r = client.post("/v2/models/internal/infer", content=infer_body_nan(x),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert np.array_equal(outputs_of(r.json())["forecast"], expected(f, f.context(x), batching)[0])


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_eight_concurrent_clients_get_the_serial_answers(client, paradigm):
    xs = series(8, 2, 1, 32, seed=5)
    serial = [outputs_of(client.post(f"/v2/models/{paradigm}/infer", json=infer_body(x)).json()) for x in xs]
    before = _metric(client, "alignts_batch_requests_sum", paradigm)
    calls = 6 if paradigm == "injective" else 20
    barrier = threading.Barrier(8)

    def work(t: int) -> int:
        diffs = 0
        with httpx.Client(base_url=client.base_url, headers=AUTH, timeout=120) as c:
            barrier.wait()
            for i in range(calls):
                k = (t + i) % 8
                r = c.post(f"/v2/models/{paradigm}/infer", json=infer_body(xs[k]))
                assert r.status_code == 200, r.text
                out = outputs_of(r.json())
                diffs += not all(np.array_equal(out[n], serial[k][n]) for n in serial[k])
        return diffs

    with ThreadPoolExecutor(8) as ex:
        assert sum(ex.map(work, range(8))) == 0
    n_req = _metric(client, "alignts_batch_requests_sum", paradigm) - before
    n_calls = _metric(client, "alignts_batch_requests_count", paradigm)
    assert n_req == 8 * calls
    mode = client.get(f"/v2/models/{paradigm}").json()["parameters"]["batching"]
    if mode != "per-request":  # batched (per-request: a model whose rows depend on their company, e.g. int8)
        assert n_calls < _metric(client, "alignts_requests_total", paradigm, 'route="infer",code="200"')


def _metric(client, name: str, model: str, extra: str = "") -> float:
    """Sum of ``name``'s samples for ``model`` whose labels include every ``k="v"`` of ``extra``."""
    text = client.get("/metrics").text
    want = [f'model="{model}"'] + [w for w in extra.split(",") if w]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_route(client):
    text = client.get("/metrics").text
    for name in ("alignts_requests_total", "alignts_request_seconds_bucket", "alignts_batch_rows_bucket",
                 "alignts_queue_depth", "alignts_inflight_requests", "alignts_process_rss_bytes",
                 "alignts_model_estimate_bytes", "alignts_rejected_total", "alignts_model_loaded"):
        assert name in text, name
    assert _metric(client, "alignts_rejected_total", "internal", 'reason="too_large"') >= 1


def test_batched_rows_equal_single_rows(tiny_bundles):
    """The batcher's split is exact: requests gathered into one call get the rows each gets alone."""
    from alignts.serve.batcher import run_batch
    from alignts.serve.registry import ModelRegistry

    for p in PARADIGMS:
        reg = ModelRegistry([(p, tiny_bundles[p])], None, max_batch=8)
        e, f = reg.acquire(p)
        xs = [f.context(x) for x in series(5, 1 + (p != "injective"), 1, 32, seed=6)]
        together = run_batch(f, e.batching, xs, (0.1, 0.9), 8)
        alone = [run_batch(f, e.batching, [x], (0.1, 0.9), 8)[0] for x in xs]
        for a, b in zip(together, alone):
            assert np.array_equal(a.mean, b.mean) and np.array_equal(a.quantiles, b.quantiles), p
        assert together[0].batch_requests == 5
        reg.release(e, f)


def test_queue_bound_answers_429(tiny_bundles):
    """A full queue is refused at once with Retry-After (the batcher's bound, no HTTP timing involved)."""
    from alignts.serve.batcher import Batcher, QueueFull

    gate = threading.Event()

    def slow(items):
        gate.wait(30)
        return [None] * len(items)

    async def main():
        b = Batcher(("m", None), slow, None, max_batch=1, max_wait=0, max_queue=2)
        futs = [b.submit(np.zeros((1, 1, 4)))]
        await asyncio.sleep(0.05)  # the first batch is running: the next two wait in the queue
        futs += [b.submit(np.zeros((1, 1, 4))) for _ in range(2)]
        with pytest.raises(QueueFull) as e:
            b.submit(np.zeros((1, 1, 4)))
        assert e.value.retry_after >= 1
        gate.set()
        await asyncio.gather(*futs)
        await b.stop()

    asyncio.run(main())


def test_http_429_with_retry_after(tiny_bundles):
    cfg = ServeConfig(models=(f"inj={tiny_bundles['injective']}",), max_batch=4, max_queue=1, batching=False)
    with ServerThread(cfg) as s:
        x = series(1, 4, 1, 32)[0]

        def one(_):
            return httpx.post(s.url + "/v2/models/inj/infer", json=infer_body(x), timeout=120)

        with ThreadPoolExecutor(8) as ex:
            rs = list(ex.map(one, range(8)))
        codes = sorted(r.status_code for r in rs)
        assert codes.count(200) >= 2 and 429 in codes, codes
        r429 = next(r for r in rs if r.status_code == 429)
        assert int(r429.headers["retry-after"]) >= 1 and "--max-queue" in r429.json()["error"]


def test_many_models_one_budget_lru_and_shared_backbone(tiny_bundles):
    from alignts.runtime import backbone_store
    from alignts.serve.registry import ModelRegistry

    names = [("a", tiny_bundles["bridging"]), ("b", tiny_bundles["bridging"]), ("i", tiny_bundles["internal"]),
             ("j", tiny_bundles["injective"])]
    free = ModelRegistry(names, None, max_batch=4)
    both = {n: e.choice for n, e in free.entries.items()}
    one = free.total_bytes({"a": both["a"]})
    assert free.total_bytes({"a": both["a"], "b": both["b"]}) - one == both["b"].own_bytes  # backbone once
    # just under every model's best plan together: the planner steps some model down and keeps all resident
    tight = ModelRegistry(names, free.total_bytes(both) - 1, max_batch=4)
    assert tight.mode == "resident" and tight.total_bytes({n: e.choice for n, e in tight.entries.items()}) < \
        free.total_bytes(both)
    # under the smallest plans together: each model alone, loaded on demand, least recently used evicted
    least = {n: min(e.candidates, key=lambda c: free.total_bytes({n: c})) for n, e in free.entries.items()}
    budget = free.total_bytes(least) - 1
    assert all(free.total_bytes({n: c}) <= budget for n, c in least.items())
    cfg = ServeConfig(models=tuple(f"{n}={p}" for n, p in names), budget=budget, max_batch=4)
    with ServerThread(cfg) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        x = series(1, 1, 1, 32)[0]
        first = {}
        for rnd in range(2):
            for n, _ in names:
                r = c.post(f"/v2/models/{n}/infer", json=infer_body(x))
                assert r.status_code == 200, r.text
                out = outputs_of(r.json())["forecast"]
                if rnd == 0:
                    first[n] = out
                assert np.array_equal(out, first[n])  # reloaded models answer the same
        metas = {n: c.get(f"/v2/models/{n}").json()["parameters"] for n, _ in names}
        assert sum(m["evictions"] for m in metas.values()) >= 1
        assert all(m["memory"]["budget_bytes"] == budget and m["memory"]["plan"] == "on-demand" for m in metas.values())
        assert all(m["memory"]["loaded_estimate_bytes"] <= budget for m in metas.values())
        assert sum(m["loads"] for m in metas.values()) > len(names)  # evicted models came back on demand
    # two adapters over one backbone, all resident: the backbone loads once
    backbone_store.clear_cache()
    opened = backbone_store.cache_info()["opened"]
    with ServerThread(ServeConfig(models=tuple(f"{n}={p}" for n, p in names[:2]), max_batch=4)) as s:
        metas = [httpx.get(f"{s.url}/v2/models/{n}").json()["parameters"] for n in ("a", "b")]
        assert [m["state"] for m in metas] == ["ready", "ready"]
        assert metas[0]["memory"]["shared_backbone"] == metas[1]["memory"]["shared_backbone"] is not None
        assert backbone_store.cache_info()["opened"] - opened == 1


def test_llama_cpp_contexts_per_worker(tiny_bundles):
    """--workers 2: a llama.cpp Internal model and Injective get one context (forecaster) per worker, an ONNX
    session and a Bridging llama.cpp backbone one shared; 8 concurrent clients still get the serial answers."""
    models = (f"ig={tiny_bundles['internal']}@gguf-f32", f"io={tiny_bundles['internal']}@onnx-fp32",
              f"bg={tiny_bundles['bridging']}@gguf-f32", f"jg={tiny_bundles['injective']}@gguf-f32")
    with ServerThread(ServeConfig(models=models, max_batch=4, workers=2, max_wait_ms=10)) as s, \
            httpx.Client(base_url=s.url, timeout=120) as c:
        ctx = {m.split("=")[0]: c.get(f"/v2/models/{m.split('=')[0]}").json()["parameters"] for m in models}
        assert {n: (p["variant"], p["contexts"]) for n, p in ctx.items()} == {
            "ig": ("gguf-f32", 2), "io": ("onnx-fp32", 1), "bg": ("gguf-f32", 1), "jg": ("gguf-f32", 2)}
        ig = s.state.registry.entries["ig"].choice  # two contexts over one llama_model: its weights count once
        assert 0 < ig.shared_bytes < ig.own_bytes
        assert c.get("/v2/models/ig").json()["parameters"]["memory"]["model_estimate_bytes"] == \
            2 * ig.own_bytes - ig.shared_bytes
        fs = s.state.registry.entries["ig"].forecasters
        assert fs[0]._lm._model == fs[1]._lm._model
        xs = series(8, 2, 1, 32, seed=14)
        for name in ("ig", "bg", "jg"):
            serial = [outputs_of(c.post(f"/v2/models/{name}/infer", json=infer_body(x)).json()) for x in xs]

            def work(t: int, name=name, serial=serial) -> int:
                with httpx.Client(base_url=s.url, timeout=120) as cc:
                    out = [outputs_of(cc.post(f"/v2/models/{name}/infer", json=infer_body(xs[(t + i) % 8])).json())
                           for i in range(3)]
                return sum(not np.array_equal(o["forecast"], serial[(t + i) % 8]["forecast"]) for i, o in
                           enumerate(out))

            with ThreadPoolExecutor(8) as ex:
                assert sum(ex.map(work, range(8))) == 0, name
