"""On-prem serving of alignts bundles (torch-free; ``pip install 'alignts[serve]'``).

``alignts serve BUNDLE...`` runs :func:`alignts.serve.app.create_app` on uvicorn: the KServe v2 / Open Inference
Protocol over HTTP (stock clients such as ``tritonclient.http`` work), dynamic batching per model
(:mod:`~alignts.serve.batcher`), many models in one memory budget with load on demand and LRU eviction
(:mod:`~alignts.serve.registry`), Prometheus metrics, a bearer token, request limits and graceful shutdown
(:mod:`~alignts.serve.server`). ``alignts serve --ray`` runs the same app as a Ray Serve deployment and
``alignts forecast --data DIR --ray`` maps forecasters over files with Ray Data (:mod:`~alignts.serve.ray`).
"""

from __future__ import annotations

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name):
    if name in __all__:
        from alignts.serve import app

        return getattr(app, name)
    raise AttributeError(name)
