"""Streams over the server: a stream id per client, ``update`` / ``forecast`` routes on
:class:`alignts.runtime.stream.Stream`, a cap on the streams held in memory, and their states persisted on
shutdown (torch-free).

| route | body | answer |
|---|---|---|
| ``POST /v1/models/{name}/streams`` | ``{"forecast_every": k, "forecast_every_s": s, "quantiles": [...], "drift": bool}`` (all optional; one cadence) | 201 ``{"stream_id", ...}`` |
| ``POST /v1/streams/{id}/update`` | ``{"values": [C] or [k][C] (a flat [k] for one channel), "timestamps": [k]}`` | ``{"n_seen", "forecasts": [the forecasts that fell due]}`` |
| ``POST /v1/streams/{id}/forecast`` | ``{"quantiles": [...]}`` (optional) | the forecast of the current window |
| ``GET /v1/streams/{id}`` / ``DELETE /v1/streams/{id}`` | | the stream's counters / 204 |

At most ``max_streams`` streams live in memory. With a ``stream_dir``, the least recently used one is written
there (``<id>.state``, the runtime's atomic state file, and ``<id>.json`` naming its model) to make room, and
every stream is written there at shutdown; a stream id found there is restored on its next request (also after a
restart). Without one, a full table answers 429 to new streams and streams end with the process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignts.errors import AlignTSError, InputError

log = logging.getLogger(__name__)

ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")


class StreamNotFound(AlignTSError, LookupError):
    """No stream of that id (HTTP 404)."""


class StreamsFull(AlignTSError):
    """max_streams streams are held and none can be written to disk (HTTP 429)."""

    retry_after = 60.0


@dataclass
class Held:
    model: str
    stream: Any       # alignts.runtime.stream.Stream
    last_used: float


class StreamTable:
    """The server's streams: ``create``, ``get`` (restoring a persisted one), ``drop``, ``persist_all``."""

    def __init__(self, registry, max_streams: int = 1024, stream_dir: str | os.PathLike | None = None):
        self.registry = registry
        self.max_streams = int(max_streams)
        self.dir = Path(stream_dir) if stream_dir else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.held: "OrderedDict[str, Held]" = OrderedDict()
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self.held)

    def _forecaster(self, model: str):
        e, f = self.registry.acquire(model)  # loads it when needed, checks the bundle
        self.registry.release(e, f)
        return e.first

    def create(self, model: str, forecast_every: int | None = None, quantiles=None, drift: bool = False,
               forecast_every_s: float | None = None) -> str:
        f = self._forecaster(model)
        s = f.stream(forecast_every=forecast_every, quantiles=quantiles, drift=bool(drift),
                     forecast_every_s=forecast_every_s)
        sid = secrets.token_urlsafe(12)
        with self._lock:
            self._make_room()
            self.held[sid] = Held(model, s, time.monotonic())
        return sid

    def _make_room(self) -> None:
        while len(self.held) >= self.max_streams:
            if self.dir is None:
                raise StreamsFull(f"{len(self.held)} streams are open (--max-streams {self.max_streams}) and there is "
                                  "no --stream-dir to move idle ones to; close streams you no longer need (DELETE "
                                  "/v1/streams/ID) or retry later.")
            sid, h = next(iter(self.held.items()))
            self._write(sid, h)
            del self.held[sid]
            log.info("stream %s moved to %s (least recently used)", sid, self.dir)

    def get(self, sid: str) -> Held:
        """The stream, restored from the stream folder if it was moved there; its forecaster re-bound when its
        model was reloaded since."""
        if not ID_RE.fullmatch(sid):
            raise StreamNotFound(f"stream id {sid!r}: expected the id POST /v1/models/NAME/streams returned.")
        with self._lock:
            h = self.held.get(sid)
            if h is None:
                h = self._read(sid)
                self._make_room()
                self.held[sid] = h
            self.held.move_to_end(sid)
            h.last_used = time.monotonic()
        f = self._forecaster(h.model)
        if h.stream.f is not f:  # the model was evicted and loaded again: resume on the new forecaster
            from alignts.runtime.stream import Stream

            h.stream = Stream.restore(h.stream.state(), f)
        return h

    def drop(self, sid: str) -> None:
        self.get(sid)
        with self._lock:
            self.held.pop(sid, None)
        if self.dir is not None:
            for suffix in (".state", ".json"):
                (self.dir / f"{sid}{suffix}").unlink(missing_ok=True)

    def persist_all(self) -> int:
        """Write every held stream to the stream folder (shutdown); returns how many."""
        if self.dir is None:
            return 0
        with self._lock:
            for sid, h in self.held.items():
                self._write(sid, h)
            return len(self.held)

    def _write(self, sid: str, h: Held) -> None:
        h.stream.save(self.dir / f"{sid}.state")
        tmp = self.dir / f".{sid}.json.tmp"
        tmp.write_text(json.dumps({"model": h.model}))
        os.replace(tmp, self.dir / f"{sid}.json")

    def _read(self, sid: str) -> Held:
        if self.dir is None or not (self.dir / f"{sid}.state").is_file():
            raise StreamNotFound(f"stream {sid!r} does not exist (or was closed); open one with POST "
                                 "/v1/models/NAME/streams.")
        from alignts.runtime.stream import Stream

        model = json.loads((self.dir / f"{sid}.json").read_text())["model"]
        s = Stream.restore(self.dir / f"{sid}.state", self._forecaster(model))
        log.info("stream %s restored from %s", sid, self.dir)
        return Held(model, s, time.monotonic())


def points(values: Any, n_channels: int) -> np.ndarray:
    """The update body's ``values`` as float64 ``[k, C]`` (null = NaN); a flat list is k points of a one-channel
    stream, or one point of a C-channel one."""
    if not isinstance(values, list) or not values:
        raise InputError('expected "values": [C] (one point), [k][C] (k points) or, for one channel, [k].')
    try:
        if isinstance(values[0], list):
            a = np.asarray([[np.nan if v is None else v for v in row] for row in values], dtype=np.float64)
        else:
            a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
            a = a[:, None] if n_channels == 1 else a[None]
    except (TypeError, ValueError):
        raise InputError('"values" must hold numbers (null for a missing value) in lists of equal lengths.') from None
    return a


def forecast_json(fc, n_channels: int) -> dict[str, Any]:
    """A stream Forecast ``[1, C, H]`` as JSON: mean, median ([H] for one channel, else [C][H]) and quantiles by
    level."""
    def ch(a):
        return a[0, 0].tolist() if n_channels == 1 else a[0].tolist()

    out: dict[str, Any] = {"mean": ch(fc.mean), "median": ch(fc.median), "quantile_method": fc.quantile_method,
                           "quantile_levels": list(fc.quantile_levels)}
    if fc.quantiles is not None:
        out["quantiles"] = {f"{lv:g}": ch(fc.quantiles[..., k]) for k, lv in enumerate(fc.quantile_levels)}
    return out


def due_json(sf, n_channels: int) -> dict[str, Any]:
    return {"t": sf.t, "timestamp": sf.timestamp, "lag": sf.lag, "skipped": sf.skipped, "drift": list(sf.drift),
            "reanchored": sf.reanchored, "latency_ms": round(sf.latency_s * 1e3, 3),
            "forecast": forecast_json(sf.forecast, n_channels)}
