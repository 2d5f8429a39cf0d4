"""Helpers of the serve tests: a server on 127.0.0.1 (a free port) in a thread or a child process, and the
in-process reference forecasts (the same variant and batch size as the server's plan)."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class ServerThread:
    """``with ServerThread(cfg) as s:`` runs the app on uvicorn in a thread (127.0.0.1, a free port); ``s.url``."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __enter__(self):
        import uvicorn

        from alignts.serve.app import ServeState, create_app

        self.state = ServeState(self.cfg)
        app = create_app(self.cfg, self.state)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > 120:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(60)
        gc.unfreeze()  # the app froze pytest's objects at its start (ServeConfig.freeze_gc)


def start_child(args: list[str], tmp: Path, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """``alignts serve ARGS --port 0`` in a child process; returns (process, base url) once it listens."""
    ready = tmp / f"ready-{time.monotonic_ns()}"
    log = open(tmp / f"serve-{time.monotonic_ns()}.log", "wb")
    e = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
    p = subprocess.Popen([sys.executable, "-m", "alignts", "serve", *args, "--host", "127.0.0.1", "--port", "0",
                          "--ready-file", str(ready)], stdout=log, stderr=subprocess.STDOUT, env=e)
    t0 = time.monotonic()
    while not ready.exists():
        if p.poll() is not None or time.monotonic() - t0 > 120:
            p.kill()
            raise RuntimeError(f"alignts serve did not start: {Path(log.name).read_text()[-3000:]}")
        time.sleep(0.05)
    p.log_path = log.name
    return p, "http://" + ready.read_text().strip()


def infer_body(x: np.ndarray, quantiles=None, outputs=None) -> dict:
    d = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP64", "data": x.reshape(-1).tolist()}]}
    if quantiles is not None:
        d["parameters"] = {"quantiles": list(quantiles)}
    if outputs is not None:
        d["outputs"] = [{"name": o} for o in outputs]
    return d


def outputs_of(resp_json: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"], dtype=np.float64).reshape(o["shape"]) for o in resp_json["outputs"]}


def series(n: int, b: int, c: int, t: int, seed: int = 0) -> list[np.ndarray]:
    """n different inputs [b, c, t] (random walks around 20)."""
    rng = np.random.default_rng(seed)
    return [20 + rng.standard_normal((b, c, t)).cumsum(-1) for _ in range(n)]


def reference(bundle: Path, meta: dict):
    """An in-process forecaster planned as the server planned the model (variant, batch size)."""
    import alignts.runtime as rt

    p = meta["parameters"]
    f = rt.load(bundle)
    f.plan(variant=p["variant"], batch_size=p["batch_size"])
    return f


def expected(f, x: np.ndarray, batching: str, levels=(0.1, 0.5, 0.9)):
    """What the server answers for ``x`` alone: the forecaster's answer; in ``padded`` mode on rows padded to
    the batch size (the bits the backend gives at that shape)."""
    n, bs = x.shape[0], f.planned.batch_size
    if batching == "padded" and n % bs:
        x = np.concatenate([x, np.repeat(x[:1], bs - n % bs, axis=0)])
    levels = levels if f.quantile_method != "none" else None
    fc = f.forecast(x, quantiles=levels)
    q = None if fc.quantiles is None else fc.quantiles[:n]
    return fc.mean[:n], fc.median[:n], q
