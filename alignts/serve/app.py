"""The ASGI app (starlette): the KServe v2 / Open Inference Protocol routes, a JSON route for raw series with
timestamps, Prometheus metrics, bearer-token auth, a request size limit and a bounded queue per model.

| route | answer |
|---|---|
| ``GET /v2`` | server metadata (name, version, extensions) |
| ``GET /v2/health/live``, ``GET /v2/health/ready`` | 200 while live / ready (503 while shutting down) |
| ``GET /v2/models`` | the served models and their state |
| ``GET /v2/models/{name}[/versions/{v}]`` | model metadata: inputs, outputs, and in ``parameters`` the plan, memory numbers and batching mode |
| ``GET /v2/models/{name}[/versions/{v}]/ready`` | 200 when the model can serve (loaded or loadable), else 503 |
| ``POST /v2/models/{name}[/versions/{v}]/infer`` | a v2 infer request (:mod:`alignts.serve.protocol`) |
| ``POST /v1/models/{name}/forecast`` | ``{"series": [{"id", "timestamps", "values"}], "quantiles"}`` -> future timestamps, mean, quantiles per series |
| ``POST /v1/models/{name}/streams``, ``/v1/streams/{id}/update``, ``/v1/streams/{id}/forecast``, ``GET/DELETE /v1/streams/{id}`` | streams (:mod:`alignts.serve.streams`) |
| ``GET /metrics`` | Prometheus text format (:mod:`alignts.serve.metrics`) |

Errors are v2 error JSON ``{"error": "..."}``: 400 bad input, 401 missing/wrong token, 404 unknown model or
route, 413 body over the limit, 429 queue full and 503 shutting down / model out of service (both with
Retry-After), 500 internal.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from alignts.errors import AlignTSError, InputError, NonFiniteOutputError
from alignts.serve.batcher import Batcher, QueueFull, run_batch
from alignts.serve.metrics import Metrics
from alignts.serve.protocol import HEADER_LENGTH, INPUT_NAME, encode_infer, parse_infer
from alignts.serve.registry import ModelNotFound, ModelRegistry, ModelUnavailable, parse_model_arg

log = logging.getLogger(__name__)
access = logging.getLogger("alignts.serve.access")

DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
OPEN_ROUTES = ("/v2/health/live", "/v2/health/ready")


@dataclass(frozen=True)
class ServeConfig:
    """What ``alignts serve`` takes.

    models:        ``PATH`` or ``NAME=PATH`` bundle folders (the name defaults to the folder's name).
    budget:        bytes for the whole server process (None = no limit): see :mod:`alignts.serve.registry`.
    max_batch:     series rows per backend call (the plans' batch size).
    max_wait_ms:   how long the first request of a batch waits for company.
    batching:      False: one backend call per request (no gathering).
    workers:       threads running backend calls (and contexts for backends that run one call at a time).
    max_queue:     queued requests per model and quantile levels before 429.
    max_body_bytes: request bodies above this are refused (413); ``max_elements``: values per input tensor.
    token:         bearer token every route but the health checks needs (None = open).
    device, threads: the plans' device and backend threads.
    preload:       load the models that fit at start (else on the first request).
    freeze_gc:     after the start (and the preload), collect once and move every object alive into the garbage
                   collector's permanent generation (``gc.freeze``): a collection then walks only what requests
                   allocate, not the ~130 000 objects numba, onnxruntime and llama.cpp's bindings leave
                   (Bridging gguf-bf16, one series batch: 64.5 -> 60.8 ms a forecast; results/speed_llama.md
                   section 15).
    max_streams, stream_dir: streams held in memory, and where idle ones and all of them at shutdown are
                   written (:mod:`alignts.serve.streams`; None = kept in memory only).
    """

    models: tuple[str, ...]
    budget: int | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    batching: bool = True
    workers: int = 1
    max_queue: int = 128
    max_body_bytes: int = 16 << 20
    max_elements: int = 1 << 22
    token: str | None = None
    device: str = "cpu"
    threads: int | None = None
    preload: bool = True
    freeze_gc: bool = True
    max_streams: int = 1024
    stream_dir: str | None = None

    def check(self) -> None:
        for k in ("max_batch", "workers", "max_queue", "max_body_bytes", "max_elements", "max_streams"):
            if int(getattr(self, k)) < 1:
                raise InputError(f"--{k.replace('_', '-')} {getattr(self, k)}: expected >= 1.")
        if not (math.isfinite(self.max_wait_ms) and 0 <= self.max_wait_ms <= 10_000):
            raise InputError(f"--max-wait-ms {self.max_wait_ms}: expected 0..10000 milliseconds.")
        if self.token is not None and len(self.token) < 8:
            raise InputError("--token: expected at least 8 characters (a random secret, e.g. from "
                             "`python -c 'import secrets; print(secrets.token_urlsafe())'`).")


class ServeState:
    """Registry, worker threads, batchers and metrics of one app."""

    def __init__(self, cfg: ServeConfig):
        cfg.check()
        self.cfg = cfg
        self.registry = ModelRegistry([parse_model_arg(m) for m in cfg.models], cfg.budget, cfg.max_batch,
                                      workers=cfg.workers, device=cfg.device, threads=cfg.threads)
        self.executor = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="alignts-backend")
        self.metrics = Metrics()
        self.batchers: dict[tuple, Batcher] = {}
        self.checkers: dict[str, Any] = {}
        from alignts.serve.streams import StreamTable

        self.streams = StreamTable(self.registry, cfg.max_streams, cfg.stream_dir)
        self.shutting_down = False
        self.inflight = 0

    def checker(self, name: str) -> Any:
        """An unplanned forecaster of the model for the input checks (context, scaler, levels): no backend."""
        from alignts.runtime import load

        e = self.registry.get(name)
        f = self.checkers.get(name)
        if f is None or f.manifest is not e.manifest:
            f = self.checkers[name] = load(e.bundle, verify=False)
            f.manifest = e.manifest
        return f

    def batcher(self, name: str, levels: tuple[float, ...] | None) -> Batcher:
        key = (name, levels)
        b = self.batchers.get(key)
        if b is None:
            def call(items, name=name, levels=levels):
                e, f = self.registry.acquire(name)
                try:
                    return run_batch(f, e.batching, [it.context for it in items], levels, self.cfg.max_batch)
                finally:
                    self.registry.release(e, f)

            b = self.batchers[key] = Batcher(key, call, self.executor, self.cfg.max_batch, self.cfg.max_wait_ms / 1e3,
                                             self.cfg.max_queue, batching=self.cfg.batching, slots=self.cfg.workers,
                                             on_batch=self.metrics.on_batch)
        return b

    async def startup(self) -> None:
        if self.cfg.preload:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.registry.preload)
        if self.cfg.freeze_gc:
            gc.collect()
            gc.freeze()

    async def shutdown(self) -> None:
        """Finish every queued and running batch, then stop the workers (in-flight requests keep their answers)."""
        self.shutting_down = True
        for b in list(self.batchers.values()):
            await b.drain()
        for b in list(self.batchers.values()):
            await b.stop()
        n = await asyncio.get_running_loop().run_in_executor(self.executor, self.streams.persist_all)
        if n:
            log.info("wrote %d stream(s) to %s", n, self.cfg.stream_dir)
        self.executor.shutdown(wait=True)


def error(status: int, msg: str, retry_after: float | None = None):
    from starlette.responses import JSONResponse

    headers = {"retry-after": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return JSONResponse({"error": msg}, status_code=status, headers=headers)


def _status(e: BaseException) -> tuple[int, str, float | None]:
    from alignts.serve.streams import StreamNotFound, StreamsFull

    if isinstance(e, (ModelNotFound, StreamNotFound)):
        return 404, str(e), None
    if isinstance(e, (QueueFull, StreamsFull)):
        return 429, str(e), e.retry_after
    if isinstance(e, ModelUnavailable):
        return 503, str(e), e.retry_after
    if isinstance(e, NonFiniteOutputError):
        return 422, str(e), None
    if isinstance(e, InputError):
        return 400, str(e), None
    if isinstance(e, AlignTSError):
        return 500, str(e), None
    return 500, f"internal error: {type(e).__name__}: {e}", None


class TooLarge(Exception):
    pass


def guarded(fn, state: "ServeState"):
    """An endpoint whose every error leaves as v2 error JSON with its status (and counted in the metrics)."""
    import functools

    @functools.wraps(fn)
    async def endpoint(request):
        model = request.path_params.get("name", "")
        try:
            return await fn(request)
        except TooLarge as e:
            state.metrics.rejected.labels(model, "too_large").inc()
            return error(413, f"request body of {e.args[0]}+ bytes; this server takes at most "
                              f"{state.cfg.max_body_bytes} (--max-body). Fix: send smaller batches.")
        except Exception as e:  # noqa: BLE001 - every error leaves as v2 error JSON
            code, msg, retry = _status(e)
            if code == 429:
                state.metrics.rejected.labels(model, "queue_full").inc()
            elif code == 503:
                state.metrics.rejected.labels(model, "busy").inc()
            if code >= 500:
                log.error("%s %s -> %d: %s", request.method, request.url.path, code, msg,
                          exc_info=not isinstance(e, AlignTSError))
            return error(code, msg, retry)

    return endpoint


async def read_body(request, limit: int) -> bytes:
    n = request.headers.get("content-length")
    if n is not None and n.isdigit() and int(n) > limit:
        raise TooLarge(int(n))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


async def _answer(request, fut: asyncio.Future, state: ServeState, name: str):
    """The request's result, or None when the client left first (its queued item is then dropped)."""
    disc = asyncio.ensure_future(request.receive())
    try:
        done, _ = await asyncio.wait({fut, disc}, return_when=asyncio.FIRST_COMPLETED)
        if fut in done:
            return fut.result()
        msg = disc.result()
        if msg.get("type") == "http.disconnect":
            fut.cancel()
            state.metrics.disconnects.labels(name).inc()
            log.info("client left before its answer (model %s)", name)
            return None
        return await fut
    finally:
        if not disc.done():
            disc.cancel()


def create_app(cfg: ServeConfig, state: ServeState | None = None):
    """The starlette app serving ``cfg.models`` (see the module docstring)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from alignts import __version__

    st = state or ServeState(cfg)

    def levels_for(f, asked: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if asked is None:
            return DEFAULT_QUANTILES if f.quantile_method != "none" else None
        # the forecaster's own check: ascending levels in (0, 1) that the bundle's calibration covers
        return f._quantile_levels(asked) if asked else None

    async def server_meta(request):
        return JSONResponse({"name": "alignts", "version": __version__,
                             "extensions": ["binary_tensor_data", "alignts_series_forecast"]})

    async def live(request):
        return JSONResponse({"live": True})

    async def ready(request):
        if st.shutting_down:
            return error(503, "shutting down", retry_after=1)
        bad = [n for n, e in st.registry.entries.items() if e.state == "failed"]
        ok = not bad
        body = {"ready": ok, "models": {n: e.state for n, e in st.registry.entries.items()}}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def models(request):
        return JSONResponse({"models": [{"name": n, "version": e.version, "state": e.state, "paradigm": e.paradigm}
                                        for n, e in st.registry.entries.items()]})

    def _entry(request):
        name = request.path_params["name"]
        e = st.registry.get(name)
        v = request.path_params.get("version")
        if v not in (None, "", e.version):
            raise ModelNotFound(f"model {name!r} version {v!r} is not served; expected version {e.version!r} (the "
                                "first 12 hex digits of its manifest sha256).")
        return e

    async def model_meta(request):
        e = _entry(request)
        f = st.checker(e.name)
        c, h = f.n_channels or -1, f.horizon
        outs = [{"name": "forecast", "datatype": "FP64", "shape": [-1, c, h]},
                {"name": "median", "datatype": "FP64", "shape": [-1, c, h]}]
        if f.quantile_method != "none":
            outs.append({"name": "quantiles", "datatype": "FP64", "shape": [-1, c, h, -1]})
        return JSONResponse({"name": e.name, "versions": [e.version], "platform": f"alignts_{e.paradigm}",
                             "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, c, -1]}],
                             "outputs": outs, "parameters": st.registry.describe(e)})

    async def model_ready(request):
        e = _entry(request)
        if st.shutting_down:
            return error(503, "shutting down", retry_after=1)
        if e.state == "failed":
            return error(503, e.error or "failed")
        return JSONResponse({"name": e.name, "ready": True, "state": e.state})

    async def run(name: str, ctx: np.ndarray, levels, request):
        b = st.batcher(name, levels)
        fut = b.submit(ctx)
        return await _answer(request, fut, st, name)

    async def infer(request):
        e = _entry(request)
        body = await read_body(request, cfg.max_body_bytes)
        f = st.checker(e.name)
        req = parse_infer(body, request.headers.get(HEADER_LENGTH), f.n_channels, cfg.max_elements)
        levels = levels_for(f, req.quantiles)
        ctx = f.context(req.x)
        f.prepare(f.scale(ctx))  # the input rule (finite, float32 range): 400 here, not in the batch
        res = await run(e.name, ctx, levels, request)
        if res is None:
            return Response(status_code=499)
        tensors = {"forecast": res.mean, "median": res.median}
        if res.quantiles is not None:
            tensors["quantiles"] = res.quantiles
        params = {"quantile_levels": ",".join(f"{v:g}" for v in res.levels), "quantile_method": res.method,
                  "batch_requests": res.batch_requests, "batch_rows": res.batch_rows}
        data, headers = encode_infer(e.name, e.version, req, tensors, params)
        return Response(data, headers=headers, media_type=headers["content-type"])

    async def series_forecast(request):
        e = _entry(request)
        body = await read_body(request, cfg.max_body_bytes)
        f = st.checker(e.name)
        series, ids, stamps, asked = parse_series(body, f.n_channels, cfg.max_elements)
        levels = levels_for(f, asked)
        ctx = f.context(series)
        f.prepare(f.scale(ctx))
        res = await run(e.name, ctx, levels, request)
        if res is None:
            return Response(status_code=499)
        out = []
        for i in range(len(series)):
            item = {"id": ids[i], "timestamps": future_stamps(stamps[i], series[i].shape[-1], res.mean.shape[-1]),
                    "mean": _channels(res.mean[i], f.n_channels)}
            if res.quantiles is not None:
                item["quantiles"] = {f"{lv:g}": _channels(res.quantiles[i, ..., k], f.n_channels)
                                     for k, lv in enumerate(res.levels)}
            out.append(item)
        return JSONResponse({"model_name": e.name, "model_version": e.version, "quantile_method": res.method,
                             "quantile_levels": list(res.levels), "forecasts": out})

    async def in_thread(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(st.executor, fn, *args)

    async def json_body(request) -> dict:
        body = await read_body(request, cfg.max_body_bytes)
        if not body:
            return {}
        try:
            d = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise InputError(f"the request body is not valid JSON ({type(e).__name__}); expected an object.") from None
        if not isinstance(d, dict):
            raise InputError(f"the request body is JSON {type(d).__name__}; expected an object.")
        return d

    async def stream_open(request):
        e = _entry(request)
        d = await json_body(request)
        every, q = d.get("forecast_every"), d.get("quantiles")
        if every is not None and (not isinstance(every, int) or isinstance(every, bool)):
            raise InputError(f"forecast_every {every!r}: expected a whole number of points >= 1, or null.")
        if q is not None and (not isinstance(q, list) or not all(isinstance(v, (int, float)) for v in q)):
            raise InputError(f"quantiles {q!r}: expected a list of levels in (0, 1).")
        every_s = d.get("forecast_every_s")
        if every_s is not None and (not isinstance(every_s, (int, float)) or isinstance(every_s, bool)):
            raise InputError(f"forecast_every_s {every_s!r}: expected seconds > 0 (of the stream's timestamps), or "
                             "null.")
        levels = tuple(q) if q is not None else (DEFAULT_QUANTILES if st.checker(e.name).quantile_method != "none"
                                                else None)
        sid = await in_thread(st.streams.create, e.name, every, levels, bool(d.get("drift", False)), every_s)
        h = st.streams.get(sid)
        return JSONResponse({"stream_id": sid, "model_name": e.name, "model_version": e.version,
                             **h.stream.describe()}, status_code=201)

    async def stream_update(request):
        from alignts.serve.streams import due_json, points

        h = st.streams.get(request.path_params["sid"])
        d = await json_body(request)
        a = points(d.get("values"), h.stream.n_channels)
        due = await in_thread(h.stream.update, a, d.get("timestamps"))
        return JSONResponse({"stream_id": request.path_params["sid"], "n_seen": h.stream.n_seen,
                             "forecasts": [due_json(sf, h.stream.n_channels) for sf in due]})

    async def stream_forecast(request):
        from alignts.serve.streams import forecast_json

        h = st.streams.get(request.path_params["sid"])
        d = await json_body(request)
        q = d.get("quantiles", ())
        if q is not None and q != () and (not isinstance(q, list) or not all(isinstance(v, (int, float)) for v in q)):
            raise InputError(f"quantiles {q!r}: expected a list of levels in (0, 1), or null for none.")
        fc = await in_thread(h.stream.forecast, d.get("horizon"), tuple(q) if isinstance(q, list) else q)
        return JSONResponse({"stream_id": request.path_params["sid"], "n_seen": h.stream.n_seen,
                             **forecast_json(fc, h.stream.n_channels)})

    async def stream_info(request):
        sid = request.path_params["sid"]
        if request.method == "DELETE":
            st.streams.drop(sid)
            return Response(status_code=204)
        h = st.streams.get(sid)
        return JSONResponse({"stream_id": sid, "model_name": h.model, **h.stream.describe()})

    async def metrics(request):
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(st.metrics.render(st.registry, st.batchers), media_type=CONTENT_TYPE_LATEST)

    def R(path, fn, **kw):
        return Route(path, guarded(fn, st), **kw)

    routes = [
        R("/v2", server_meta), R("/v2/health/live", live), R("/v2/health/ready", ready),
        R("/v2/models", models),
        R("/v2/models/{name}", model_meta), R("/v2/models/{name}/versions/{version}", model_meta),
        R("/v2/models/{name}/ready", model_ready),
        R("/v2/models/{name}/versions/{version}/ready", model_ready),
        R("/v2/models/{name}/infer", infer, methods=["POST"]),
        R("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        R("/v1/models/{name}/forecast", series_forecast, methods=["POST"]),
        R("/v1/models/{name}/streams", stream_open, methods=["POST"]),
        R("/v1/streams/{sid}/update", stream_update, methods=["POST"]),
        R("/v1/streams/{sid}/forecast", stream_forecast, methods=["POST"]),
        R("/v1/streams/{sid}", stream_info, methods=["GET", "DELETE"]),
        R("/metrics", metrics),
    ]

    @asynccontextmanager
    async def lifespan(app):
        await st.startup()
        log.info("serving %s", ", ".join(st.registry.entries))
        yield
        log.info("shutting down: finishing %d in-flight request(s)", st.inflight)
        await st.shutdown()

    async def not_found(request, exc):
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}; expected a KServe v2 "
                     "route (/v2/health/live, /v2/models/NAME/infer, ...) or /v1/models/NAME/forecast, /metrics.")

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.serve = st
    return Guard(app, st)


class Guard:
    """ASGI wrapper around the routes: token check, shutdown refusal, error JSON, metrics and the access log."""

    def __init__(self, app, state: ServeState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st, path = self.state, scope.get("path", "")
        route, model = _route_of(path)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_(msg):
            if msg["type"] == "http.response.start":
                status["code"] = msg["status"]
            await send(msg)

        resp = None
        token = st.cfg.token
        if token is not None and path not in OPEN_ROUTES:
            auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            if not (auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), token.encode())):
                st.metrics.rejected.labels(model or "", "unauthorized").inc()
                resp = error(401, "missing or wrong bearer token; expected the header 'Authorization: Bearer "
                                  "<token>' with the server's --token.")
                resp.headers["www-authenticate"] = "Bearer"
        if resp is None and st.shutting_down and route in ("infer", "forecast", "stream"):
            st.metrics.rejected.labels(model or "", "shutting_down").inc()
            resp = error(503, "the server is shutting down; retry on another replica.", retry_after=1)
        if resp is not None:
            await resp(scope, receive, send_)
        else:
            st.inflight += 1
            st.metrics.inflight.inc()
            try:
                await self.app(scope, receive, send_)
            finally:
                st.inflight -= 1
                st.metrics.inflight.dec()
        dt = time.perf_counter() - t0
        code = status["code"]
        if route != "metrics":
            st.metrics.requests.labels(model or "", route, str(code)).inc()
            st.metrics.latency.labels(model or "", route).observe(dt)
        access.info("request", extra={"fields": {"method": scope.get("method"), "path": path, "status": code,
                                                 "ms": round(dt * 1e3, 3), "model": model}})


def _route_of(path: str) -> tuple[str, str | None]:
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[1] == "models":
        model = parts[2]
        tail = parts[-1]
        kind = {"infer": "infer", "ready": "model_ready", "forecast": "forecast", "streams": "stream"}.get(
            tail, "model_meta")
        return kind, model
    if path.startswith("/v1/streams/"):
        return "stream", None
    if path.startswith("/v2/health"):
        return "health", None
    if path == "/metrics":
        return "metrics", None
    return "other", None


def parse_series(body: bytes, n_channels: int | None, max_elements: int):
    """The JSON route's body -> (series [C, T_i] list, ids, timestamps, quantile levels or None)."""
    try:
        d = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise InputError(f"the request body is not valid JSON ({type(e).__name__}); expected "
                         '{"series": [{"id": "a", "timestamps": [...], "values": [...]}], "quantiles": [0.1, 0.9]}.'
                         ) from None
    items = d.get("series") if isinstance(d, dict) else None
    if not isinstance(items, list) or not items:
        raise InputError('expected "series": a non-empty list of {"id", "timestamps" (optional), "values"} objects.')
    series, ids, stamps, total = [], [], [], 0
    for i, s in enumerate(items):
        if not isinstance(s, dict) or not isinstance(s.get("values"), list) or not s["values"]:
            raise InputError(f'series {i}: expected an object with "values": [T numbers] (one channel) or '
                             "[[T numbers] per channel].")
        try:
            v = np.asarray([np.nan if x is None else x for x in s["values"]] if not isinstance(s["values"][0], list)
                           else [[np.nan if x is None else x for x in row] for row in s["values"]], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"series {i}: values must be numbers (null for a missing value), as [T] or [C][T] "
                             "lists of equal lengths.") from None
        v = v[None] if v.ndim == 1 else v
        if v.ndim != 2 or (n_channels is not None and v.shape[0] != n_channels):
            raise InputError(f"series {i}: values of shape {list(v.shape)}; expected [{n_channels or 'C'}][T] "
                             f"(or [T] for a one-channel model).")
        total += v.size
        if total > max_elements:
            raise InputError(f"the series hold more than {max_elements} values; send fewer per request.")
        ts = s.get("timestamps")
        if ts is not None and (not isinstance(ts, list) or len(ts) != v.shape[1]):
            raise InputError(f"series {i}: {len(ts) if isinstance(ts, list) else ts!r} timestamps for {v.shape[1]} "
                             "values; expected one per value (ISO dates or numbers).")
        series.append(v)
        ids.append(s.get("id", i))
        stamps.append(ts)
    q = d.get("quantiles")
    if q is not None and (not isinstance(q, list) or not all(isinstance(x, (int, float)) for x in q)):
        raise InputError(f"quantiles {q!r}: expected a list of levels in (0, 1), e.g. [0.1, 0.5, 0.9].")
    return series, ids, stamps, None if q is None else tuple(float(x) for x in q)


def future_stamps(ts: list | None, n: int, h: int) -> list:
    """The H timestamps after ``ts`` (ISO text continued by the inferred frequency, numbers by their step), or
    step numbers n..n+H-1."""
    import pandas as pd

    from alignts.data.freq import future_index, infer_freq

    arr = None
    if ts is not None:
        if all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts):
            arr = np.asarray(ts)
        else:
            try:
                arr = pd.DatetimeIndex(pd.to_datetime(ts)).to_numpy()
            except (ValueError, TypeError) as e:
                raise InputError(f"timestamps: {e}; expected ISO dates (e.g. 2024-01-01T00:00:00) or numbers.") from None
    freq = infer_freq(arr) if arr is not None and arr.dtype.kind == "M" else None
    idx = future_index(arr, freq, n, h)
    return [t.isoformat() if hasattr(t, "isoformat") else (t.item() if hasattr(t, "item") else t) for t in idx]


def _channels(a: np.ndarray, n_channels: int | None) -> list:
    """[C, H] -> [[H]] lists, or [H] for a one-channel model."""
    return a[0].tolist() if a.shape[0] == 1 and n_channels in (None, 1) else a.tolist()
