"""Scale-out on Ray (``pip install 'alignts[ray]'``): the server app as a Ray Serve deployment, and batch
forecasting of many files with Ray Data.

``alignts serve BUNDLE... --ray [--replicas N] [--ray-address ADDR]`` deploys :func:`alignts.serve.app.create_app`
(the same routes, batching, budget and metrics, per replica) behind Ray Serve's HTTP proxy on ``--host``/``--port``.
``alignts forecast BUNDLE --data DIR --ray`` maps a forecaster actor (the bundle loaded and planned once per actor)
over the files of DIR with Ray Data; :func:`forecast_files` is the same without Ray, and both return the same rows.

Without ``--ray-address`` a local single-node cluster starts in the process. Several machines: start the head
with ``ray start --head --port 6379``, each worker with ``ray start --address HEAD_IP:6379`` (alignts and the
bundles at the same paths on every node), then run the command anywhere in the cluster with
``--ray-address auto``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, Sequence

from alignts.errors import InputError, missing_extra

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".csv", ".tsf")


def _ray():
    try:
        import ray
    except ImportError as e:
        raise missing_extra("ray", "ray", "for --ray") from e
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None, object_store_memory: int | None = None) -> Any:
    """Connect to ``address`` (``auto``, ``HOST:PORT``) or start a local cluster; workers find this alignts."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    import alignts

    src = str(Path(alignts.__file__).resolve().parents[1])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "include_dashboard": False,
                              "log_to_driver": False}
    if address is None:
        kwargs.update(num_cpus=num_cpus, object_store_memory=object_store_memory)
    ray.init(address=address, **kwargs)
    return ray


def deployment(cfg, replicas: int = 1):
    """The Ray Serve application: ``replicas`` copies of the alignts app, each with its own models and budget."""
    _ray()
    from ray import serve

    from alignts.serve.app import create_app

    class AlignTSServe:
        def __init__(self, cfg):
            self.cfg = cfg

        def __serve_build_asgi_app__(self):
            return create_app(self.cfg)

    ingress = serve.ingress()(AlignTSServe)
    d = serve.deployment(ingress, name="alignts", num_replicas=int(replicas),
                         max_ongoing_requests=max(8, cfg.max_queue), ray_actor_options={"num_cpus": 1})
    return d.bind(cfg)


def serve_ray(cfg, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, address: str | None = None,
              ready_file: str | None = None) -> int:
    """Run the deployment until SIGTERM/SIGINT, then shut Ray Serve down (and the local cluster, if started)."""
    if int(replicas) < 1:
        raise InputError(f"--replicas {replicas}: expected >= 1.")
    if port == 0:
        raise InputError("--port 0: Ray Serve's proxy needs a fixed port; pass one, e.g. --port 8000.")
    ray = init_ray(address)
    from ray import serve

    serve.start(http_options={"host": host, "port": int(port)})
    serve.run(deployment(cfg, replicas), name="alignts", route_prefix="/")
    log.info("Ray Serve: %d replica(s) of alignts on http://%s:%d", replicas, host, port)
    if ready_file:
        with open(ready_file + ".tmp", "w") as f:
            f.write(f"{host}:{port}\n")
        os.replace(ready_file + ".tmp", ready_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down Ray Serve")
    serve.shutdown()
    ray.shutdown()
    return 0


def data_files(folder: str | os.PathLike) -> list[Path]:
    """The CSV / .tsf files of ``folder``, sorted by name."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no .csv or .tsf file; expected a folder of data files (one series set each).")
    return files


def forecast_file(f, path: str | os.PathLike, quantiles: Sequence[float] | None):
    """One data file's forecast (``Forecaster.forecast_df``'s long frame) with a ``file`` column first."""
    import pandas as pd

    from alignts.data.load import load_data

    data = load_data(str(path), columns=list(f.cfg.columns) if f.cfg.columns else None)
    index = pd.DatetimeIndex(data.timestamps) if data.timestamps is not None else None
    frame = pd.DataFrame(data.values, columns=list(data.columns), index=index)
    df = f.forecast_df(frame, target=list(data.columns), quantiles=quantiles)
    df.insert(0, "file", Path(path).name)
    return df


def _planned(bundle: str, plan: dict):
    from alignts.runtime import load

    f = load(bundle)
    f.plan(**plan)
    return f


def forecast_files(bundle: str, files: Sequence[str | os.PathLike], plan: dict,
                   quantiles: Sequence[float] | None):
    """Every file's forecast in this process, one frame (files in order)."""
    import pandas as pd

    f = _planned(bundle, plan)
    return pd.concat([forecast_file(f, p, quantiles) for p in files], ignore_index=True)


class _ForecastActor:
    """A Ray Data actor: the bundle loaded and planned once, then one forecast per file of each batch."""

    def __init__(self, bundle: str, plan: dict, quantiles):
        self.f = _planned(bundle, plan)
        self.quantiles = quantiles

    def __call__(self, batch):
        import pandas as pd

        return pd.concat([forecast_file(self.f, p, self.quantiles) for p in batch["path"]], ignore_index=True)


def forecast_files_ray(bundle: str, files: Sequence[str | os.PathLike], plan: dict,
                       quantiles: Sequence[float] | None, actors: int = 2, address: str | None = None):
    """:func:`forecast_files` with Ray Data: ``actors`` forecaster actors over the files (one block per file);
    the same frame, files in order."""
    init_ray(address)
    import ray

    paths = [str(Path(p).resolve()) for p in files]
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=len(paths))
    out = ds.map_batches(_ForecastActor, fn_constructor_kwargs={"bundle": str(Path(bundle).resolve()), "plan": plan,
                                                                "quantiles": quantiles},
                         batch_size=1, batch_format="pandas", concurrency=max(1, int(actors)), num_cpus=1)
    df = out.to_pandas()
    import pandas as pd

    for c in df.columns:  # Arrow-backed columns back to the numpy / pandas dtypes forecast_files has
        dt = df[c].dtype
        if isinstance(dt, pd.ArrowDtype):
            df[c] = df[c].astype(str) if "string" in str(dt) else df[c].astype(dt.numpy_dtype)
    order = {Path(p).name: i for i, p in enumerate(paths)}
    df["_order"] = df["file"].map(order)
    return df.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
