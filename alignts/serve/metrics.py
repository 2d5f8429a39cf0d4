"""Prometheus metrics of the server (prometheus-client, one registry per app), served at ``/metrics``.

| metric | type | labels |
|---|---|---|
| ``alignts_requests_total`` | counter | model, route, code |
| ``alignts_request_seconds`` | histogram | model, route |
| ``alignts_batch_requests`` / ``alignts_batch_rows`` | histogram | model: requests and series rows per backend call |
| ``alignts_batch_seconds`` | histogram | model: one backend call |
| ``alignts_queue_depth`` | gauge | model: requests waiting |
| ``alignts_inflight_requests`` | gauge | requests accepted and not yet answered |
| ``alignts_rejected_total`` | counter | model, reason (queue_full, busy, shutting_down, too_large, unauthorized) |
| ``alignts_client_disconnects_total`` | counter | model |
| ``alignts_process_rss_bytes`` | gauge | the server process's resident memory |
| ``alignts_model_estimate_bytes`` / ``alignts_model_rss_delta_bytes`` | gauge | model: the planner's bytes for the model, and the RSS it added when it last loaded |
| ``alignts_model_loaded`` | gauge | model: 1 loaded, 0 not |
| ``alignts_model_loads_total`` / ``alignts_model_evictions_total`` | gauge | model |
"""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's metrics; ``render()`` refreshes the gauges from the registry and returns the text format."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter("alignts_requests_total", "HTTP requests answered", ["model", "route", "code"],
                                registry=r)
        self.latency = Histogram("alignts_request_seconds", "request latency (receipt to answer)", ["model", "route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_requests = Histogram("alignts_batch_requests", "requests per backend call", ["model"],
                                        buckets=BATCH_BUCKETS, registry=r)
        self.batch_rows = Histogram("alignts_batch_rows", "series rows per backend call", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("alignts_batch_seconds", "one backend call", ["model"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("alignts_queue_depth", "requests waiting for a backend call", ["model"], registry=r)
        self.inflight = Gauge("alignts_inflight_requests", "requests accepted and not yet answered", registry=r)
        self.rejected = Counter("alignts_rejected_total", "requests refused before they ran", ["model", "reason"],
                                registry=r)
        self.disconnects = Counter("alignts_client_disconnects_total", "clients that left before their answer",
                                   ["model"], registry=r)
        self.rss = Gauge("alignts_process_rss_bytes", "resident memory of the server process", registry=r)
        self.model_estimate = Gauge("alignts_model_estimate_bytes", "the planner's bytes for a model", ["model"],
                                    registry=r)
        self.model_rss = Gauge("alignts_model_rss_delta_bytes", "RSS a model added when it last loaded", ["model"],
                               registry=r)
        self.model_loaded = Gauge("alignts_model_loaded", "1 when the model is loaded", ["model"], registry=r)
        self.model_loads = Gauge("alignts_model_loads_total", "loads of the model", ["model"], registry=r)
        self.model_evictions = Gauge("alignts_model_evictions_total", "evictions of the model", ["model"], registry=r)

    def on_batch(self, key: tuple, n_requests: int, n_rows: int, seconds: float) -> None:
        model = key[0]
        self.batch_requests.labels(model).observe(n_requests)
        self.batch_rows.labels(model).observe(n_rows)
        self.batch_seconds.labels(model).observe(seconds)

    def render(self, registry: Any, batchers: dict) -> bytes:
        from prometheus_client import generate_latest

        from alignts.serve.registry import read_rss

        self.rss.set(read_rss())
        depth: dict[str, int] = {name: 0 for name in registry.entries}
        for key, b in list(batchers.items()):
            depth[key[0]] = depth.get(key[0], 0) + b.depth
        for name, e in registry.entries.items():
            self.queue_depth.labels(name).set(depth.get(name, 0))
            c = e.choice
            self.model_estimate.labels(name).set(c.alone)
            self.model_rss.labels(name).set(e.rss_delta)
            self.model_loaded.labels(name).set(1 if e.state == "ready" else 0)
            self.model_loads.labels(name).set(e.loads)
            self.model_evictions.labels(name).set(e.evictions)
        return generate_latest(self.registry)
