"""`alignts bench serve BUNDLE`: the server under load beside in-process forecasts, in one run.

For each batching mode (dynamic batching on, and off: one backend call per request) an ``alignts serve`` child
process serves the bundle on 127.0.0.1 (a free port; nothing else is ever contacted). A load generator (one
asyncio event loop, a minimal keep-alive HTTP/1.1 client per connection) runs N concurrent clients for each N
in ``clients``; each client sends v2 infer requests of ``rows`` series back to back until the level has sent
``requests`` requests or run ``duration`` seconds, whichever comes first. A 429 answer is counted and the
client backs off ``BACKOFF`` seconds; a request with no answer in ``timeout`` seconds counts as a timeout. The
server's RSS is sampled every 20 ms.

``server_cpus`` / ``client_cpus`` pin the server (and the in-process reference) and the load generator to disjoint
CPUs, as a load test run from another machine would: otherwise the clients' HTTP work takes cores from the model
it measures, and the ratio below reads the load generator as much as the server.

Beside each level, the bundle runs in this process with the server's plan (variant, batch size): ``forecast``
on batches of ``min(N * rows, max_batch)`` series (what dynamic batching can gather from N clients), timed
over ``inproc_calls`` calls; ``ratio`` = served series/s over in-process series/s at that batch size.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignts.errors import InputError

BACKOFF = 0.05


@dataclass(frozen=True)
class ServeBenchConfig:
    """clients: concurrency levels; requests / duration: bounds of each level (count, seconds); rows: series per
    request; max_batch / max_wait_ms / max_queue / budget / workers: the server's options; timeout: a request
    with no answer by then is a timeout; inproc_calls: timed in-process calls per level."""

    clients: tuple[int, ...] = (1, 8, 32, 128)
    requests: int = 2000
    duration: float = 20.0
    rows: int = 1
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 64
    budget: str | None = "2GB"
    workers: int = 1
    timeout: float = 30.0
    inproc_calls: int = 50
    batching_modes: tuple[bool, ...] = (True, False)
    server_cpus: tuple[int, ...] | None = None
    client_cpus: tuple[int, ...] | None = None

    def check(self) -> None:
        if not self.clients or min(self.clients) < 1 or max(self.clients) > 1024:
            raise InputError(f"--clients {self.clients}: expected levels from 1 to 1024, e.g. 1,8,32,128.")
        if self.requests < 1 or not 0 < self.duration <= 600:
            raise InputError(f"--requests {self.requests} / --duration {self.duration}: expected >= 1 request and "
                             "0 < duration <= 600 seconds (every level is bounded in count and time).")
        if self.rows < 1 or self.max_batch < 1:
            raise InputError("--rows and --max-batch: expected >= 1.")
        if (self.server_cpus is None) != (self.client_cpus is None):
            raise InputError("--server-cpus and --client-cpus go together (disjoint CPU lists, e.g. 0 and 1).")
        if self.server_cpus is not None:
            have = os.sched_getaffinity(0)
            for name, cpus in (("--server-cpus", self.server_cpus), ("--client-cpus", self.client_cpus)):
                if not cpus or not set(cpus) <= have:
                    raise InputError(f"{name} {list(cpus)}: expected CPUs this process may use, {sorted(have)}.")
            if set(self.server_cpus) & set(self.client_cpus):
                raise InputError(f"--server-cpus {list(self.server_cpus)} and --client-cpus "
                                 f"{list(self.client_cpus)} overlap: the point is to keep them apart.")


def parse_cpus(text: str | None) -> tuple[int, ...] | None:
    """``"0,2-3"`` -> (0, 2, 3); None stays None."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            out += range(int(a), int(b or a) + 1)
    except ValueError:
        raise InputError(f"CPU list {text!r}: expected numbers and ranges, e.g. 0 or 0,2-3.") from None
    return tuple(sorted(set(out)))


class _Pinned:
    """Run a block on ``cpus`` (this thread's affinity; None: unchanged), restoring the old set after."""

    def __init__(self, cpus: tuple[int, ...] | None):
        self.cpus, self.old = cpus, None

    def __enter__(self):
        if self.cpus is not None:
            self.old = os.sched_getaffinity(0)
            os.sched_setaffinity(0, self.cpus)

    def __exit__(self, *exc):
        if self.old is not None:
            os.sched_setaffinity(0, self.old)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def start_server(bundle: str, cfg: ServeBenchConfig, batching: bool, workdir: Path) -> tuple[subprocess.Popen, str]:
    """``alignts serve`` in a child process on 127.0.0.1:0; returns (process, base url)."""
    ready = workdir / f"ready-{int(batching)}"
    args = [sys.executable, "-m", "alignts", "serve", f"m={bundle}", "--host", "127.0.0.1", "--port", "0",
            "--ready-file", str(ready), "--max-batch", str(cfg.max_batch), "--max-wait-ms", str(cfg.max_wait_ms),
            "--max-queue", str(cfg.max_queue), "--workers", str(cfg.workers), "--log-format", "json"]
    if cfg.budget:
        args += ["--budget", cfg.budget]
    if not batching:
        args.append("--no-batching")
    log = open(workdir / f"serve-{int(batching)}.log", "wb")
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    if cfg.server_cpus is not None:  # pin, then exec the server (affinity survives exec; no preexec_fn in threads)
        args = [sys.executable, "-c", f"import os, sys; os.sched_setaffinity(0, {sorted(cfg.server_cpus)}); "
                "os.execv(sys.argv[1], sys.argv[1:])", *args]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env)
    t0 = time.monotonic()
    while not ready.exists():
        if p.poll() is not None or time.monotonic() - t0 > 300:
            p.kill()
            raise RuntimeError(f"alignts serve did not start; its log: {(workdir / log.name).read_text()[-2000:]}")
        time.sleep(0.05)
    return p, "http://" + ready.read_text().strip()


class _Conn:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (the load generator's own: a client library would
    spend more of the shared cores than the server it measures). 127.0.0.1 only."""

    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def post(self, request: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(request)
        await self.writer.drain()
        status = await self.reader.readline()
        if not status:
            raise ConnectionError("the server closed the connection")
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            if k.lower() == "content-length":
                length = int(v)
            elif k.lower() == "connection" and v.strip().lower() == "close":
                close = True
        await self.reader.readexactly(length)
        if close:
            await self.close()
        return int(status.split()[1])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def _level(url: str, n_clients: int, body: bytes, cfg: ServeBenchConfig) -> dict[str, Any]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    if host not in ("127.0.0.1", "localhost"):
        raise InputError(f"the load generator talks to 127.0.0.1 only; got {host}.")
    request = (f"POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    lat: list[float] = []
    codes: dict[str, int] = {}
    sent = 0
    t_end = time.perf_counter() + cfg.duration

    async def one_client():
        nonlocal sent
        conn = _Conn(int(port))
        try:
            while sent < cfg.requests and time.perf_counter() < t_end:
                sent += 1
                t0 = time.perf_counter()
                try:
                    key = str(await asyncio.wait_for(conn.post(request), cfg.timeout))
                except asyncio.TimeoutError:
                    key = "timeout"
                    await conn.close()
                except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
                    key = type(e).__name__
                    await conn.close()
                codes[key] = codes.get(key, 0) + 1
                if key == "200":
                    lat.append(time.perf_counter() - t0)
                elif key == "429":
                    await asyncio.sleep(BACKOFF)
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(n_clients)))
    wall = time.perf_counter() - t0
    ok = codes.get("200", 0)
    ms = np.asarray(lat) * 1e3 if lat else np.asarray([np.nan])
    return {"requests": sent, "ok": ok, "rejected_429": codes.get("429", 0), "timeouts": codes.get("timeout", 0),
            "errors": sent - ok - codes.get("429", 0) - codes.get("timeout", 0), "codes": codes,
            "wall_s": wall, "req_per_s": ok / wall, "series_per_s": ok * cfg.rows / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(np.max(ms))}


def _inproc(f, x: np.ndarray, batch: int, calls: int) -> float:
    """In-process series/s of ``forecast`` on ``batch`` series (the median of ``calls`` timed calls)."""
    xb = np.concatenate([x] * (batch // x.shape[0] + 1))[:batch]
    for _ in range(3):
        f.forecast(xb)
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        f.forecast(xb)
        ts.append(time.perf_counter() - t0)
    return batch / float(np.median(ts))


def run_serve_bench(bundle: str, cfg: ServeBenchConfig) -> dict[str, Any]:
    """Every level of ``cfg`` in both batching modes, with the in-process reference; returns machine, config,
    rows."""
    import httpx

    import alignts.runtime as rt

    cfg.check()
    if not (Path(bundle) / "manifest.json").is_file():
        raise InputError(f"{bundle!r} is not a bundle folder (no manifest.json).")
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="alignts-bench-serve-") as tmp:
        for batching in cfg.batching_modes:
            p, url = start_server(bundle, cfg, batching, Path(tmp))
            try:
                meta = httpx.get(url + "/v2/models/m", timeout=60).json()["parameters"]
                f = rt.load(bundle)
                with _Pinned(cfg.server_cpus):  # the reference plans its threads on the server's CPUs
                    f.plan(variant=meta["variant"], batch_size=meta["batch_size"])
                rng = np.random.default_rng(0)
                c = meta["n_channels"] or 1
                x = 20 + rng.standard_normal((cfg.rows, c, meta["context_len"])).cumsum(-1)
                body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP64",
                                               "data": x.reshape(-1).tolist()}],
                                   "outputs": [{"name": "forecast"}]}).encode()
                for n in cfg.clients:
                    peak = [_rss(p.pid)]
                    stop = threading.Event()

                    def sample(peak=peak, stop=stop):
                        while not stop.is_set():
                            peak.append(_rss(p.pid))
                            time.sleep(0.02)

                    th = threading.Thread(target=sample, daemon=True)
                    th.start()
                    try:
                        with _Pinned(cfg.client_cpus):
                            r = asyncio.run(_level(url, n, body, cfg))
                    finally:
                        stop.set()
                        th.join()
                    b = min(n * cfg.rows, cfg.max_batch) if batching else cfg.rows
                    with _Pinned(cfg.server_cpus):
                        ref = _inproc(f, x, b, cfg.inproc_calls)
                    rows.append({"model": Path(bundle).name, "paradigm": meta["paradigm"], "variant": meta["variant"],
                                 "batching": meta["batching"] if batching else "off", "clients": n, **r,
                                 "inproc_batch": b, "inproc_series_per_s": ref, "ratio": r["series_per_s"] / ref,
                                 "server_peak_rss": max(peak)})
                del f
            finally:
                p.terminate()
                p.wait(60)
    return {"machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
                        "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
            "bundle": str(bundle), "config": asdict(cfg), "rows": rows}


def _cpu() -> str:
    from alignts.runtime.threads import cpu_label

    return cpu_label()


def to_markdown(result: dict[str, Any]) -> str:
    c = result["config"]
    m = result["machine"]
    lines = [f"bundle `{result['bundle']}`; {m['cpu']}, {m['cores']} cores, load average "
             f"{m['loadavg_before'][0]:.1f} before / {m['loadavg_after'][0]:.1f} after; server --max-batch "
             f"{c['max_batch']} --max-wait-ms {c['max_wait_ms']} --max-queue {c['max_queue']} --workers {c['workers']}"
             f" --budget {c['budget']}; {c['rows']} series per request; each level bounded by {c['requests']} "
             f"requests or {c['duration']} s" + (f"; server and in-process reference on CPUs {c['server_cpus']}, "
                                                 f"load generator on CPUs {c['client_cpus']}"
                                                 if c.get("server_cpus") else ""), "",
             "| batching | clients | ok | 429 | timeouts | errors | req/s | series/s | p50 ms | p90 ms | p99 ms | "
             "in-process batch | in-process series/s | served / in-process | server peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['batching']} | {r['clients']} | {r['ok']} | {r['rejected_429']} | {r['timeouts']} | "
                     f"{r['errors']} | {r['req_per_s']:.1f} | {r['series_per_s']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['inproc_batch']} | {r['inproc_series_per_s']:.1f} | "
                     f"{r['ratio']:.2f} | {r['server_peak_rss'] / 2**20:.0f} |")
    return "\n".join(lines)
