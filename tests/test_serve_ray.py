"""Ray: the serve app as a Ray Serve deployment and batch forecasting with Ray Data, on a local single-node Ray
cluster started by the test (2 CPUs, a small object store, 127.0.0.1 only); answers equal the in-process ones."""

from __future__ import annotations

import socket

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")

from alignts.serve.app import ServeConfig  # noqa: E402

from serve_util import expected, infer_body, outputs_of, reference, series  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    from alignts.serve.ray import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=2, object_store_memory=80 * 2**20)
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_serve_deployment_answers_like_in_process(local_ray, tiny_bundles):
    from ray import serve

    from alignts.serve.ray import deployment

    port = _free_port()
    cfg = ServeConfig(models=(f"internal={tiny_bundles['internal']}", f"injective={tiny_bundles['injective']}"),
                      max_batch=8)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(deployment(cfg, replicas=1), name="alignts", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=120) as c:
            assert c.get("/v2/health/ready").json()["ready"] is True
            for name in ("internal", "injective"):
                meta = c.get(f"/v2/models/{name}").json()
                f = reference(tiny_bundles[name], meta)
                x = series(1, 2, 1, 32, seed=11)[0]
                r = c.post(f"/v2/models/{name}/infer", json=infer_body(x))
                assert r.status_code == 200, r.text
                out = outputs_of(r.json())
                mean, _, q = expected(f, x, meta["parameters"]["batching"])
                assert np.array_equal(out["forecast"], mean) and np.array_equal(out["quantiles"], q)
            assert c.post("/v2/models/nope/infer", json=infer_body(x)).status_code == 404
            assert "alignts_requests_total" in c.get("/metrics").text
    finally:
        serve.shutdown()


def test_ray_data_forecast_equals_in_process(local_ray, tiny_bundles, tmp_path):
    import pandas as pd

    from alignts.runtime import load
    from alignts.serve.ray import data_files, forecast_files, forecast_files_ray

    bundle = str(tiny_bundles["internal"])
    col = list(load(bundle, verify=False).cfg.columns or ["value"])
    folder = tmp_path / "many"
    folder.mkdir()
    for k, x in enumerate(series(5, 1, len(col), 60, seed=12)):
        df = pd.DataFrame(x[0].T, columns=col)
        df.insert(0, "date", pd.date_range("2020-01-01", periods=60, freq="MS"))
        df.to_csv(folder / f"s{k}.csv", index=False)
    files = data_files(folder)
    plan = {"batch_size": 4}
    local = forecast_files(bundle, files, plan, (0.1, 0.9))
    distributed = forecast_files_ray(bundle, files, plan, (0.1, 0.9), actors=2)
    assert list(local["file"].unique()) == [f"s{k}.csv" for k in range(5)]
    pd.testing.assert_frame_equal(distributed, local, check_exact=True)


def test_cli_forecast_folder_with_and_without_ray(local_ray, tiny_bundles, tmp_path):
    import pandas as pd

    from alignts.cli import main
    from alignts.runtime import load

    bundle = str(tiny_bundles["internal"])
    col = list(load(bundle, verify=False).cfg.columns or ["value"])
    folder = tmp_path / "files"
    folder.mkdir()
    for k, x in enumerate(series(3, 1, len(col), 50, seed=13)):
        df = pd.DataFrame(x[0].T, columns=col)
        df.insert(0, "date", pd.date_range("2021-01-01", periods=50, freq="D"))
        df.to_csv(folder / f"f{k}.csv", index=False)
    outs = {}
    for ray_flag in ([], ["--ray", "--actors", "2"]):
        out = tmp_path / f"out{len(ray_flag)}.csv"
        assert main(["forecast", bundle, "--data", str(folder), "--out", str(out), *ray_flag]) == 0
        outs[bool(ray_flag)] = out.read_text()
    assert outs[True] == outs[False]
    assert outs[False].splitlines()[0].startswith("file,")


@pytest.mark.slow  # ~25 s on 2 cores: a second local cluster; the deployment itself is tested above
def test_cli_serve_ray_until_sigterm(tiny_bundles, tmp_path):
    """`alignts serve --ray` in a child: its own local cluster, one replica, answers, then SIGTERM ends it."""
    import signal
    import subprocess
    import sys
    import time

    from serve_util import REPO

    port = _free_port()
    ready = tmp_path / "ready"
    log = open(tmp_path / "serve-ray.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "alignts", "serve", f"m={tiny_bundles['internal']}", "--ray",
                          "--replicas", "1", "--host", "127.0.0.1", "--port", str(port), "--ready-file", str(ready)],
                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**__import__("os").environ,
                                                                              "PYTHONPATH": str(REPO)})
    try:
        t0 = time.monotonic()
        while not ready.exists() and p.poll() is None and time.monotonic() - t0 < 180:
            time.sleep(0.2)
        assert ready.exists(), (tmp_path / "serve-ray.log").read_text()[-3000:]
        r = httpx.post(f"http://127.0.0.1:{port}/v2/models/m/infer", json=infer_body(series(1, 1, 1, 32)[0]),
                       timeout=60)
        assert r.status_code == 200 and outputs_of(r.json())["forecast"].shape == (1, 1, 8)
        p.send_signal(signal.SIGTERM)
        assert p.wait(120) == 0
    finally:
        if p.poll() is None:
            p.kill()
