"""Run the app on uvicorn: structured logs, and a graceful shutdown on SIGTERM / SIGINT.

On the signal the server stops listening, answers 503 (Retry-After) to new infer requests on open
connections, finishes every request it accepted (queued and running batches included), then exits 0.
``graceful_timeout`` bounds the wait.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from alignts.serve.app import ServeConfig, ServeState, create_app

log = logging.getLogger(__name__)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg and the record's ``fields`` (the access log's)."""

    def format(self, record: logging.LogRecord) -> str:
        d = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
             "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        d.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{super().format(record)}{' ' + extra if extra else ''}"


def setup_logging(fmt: str = "json", level: int = logging.INFO, access_log: bool = True) -> None:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: "
                                                                        "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(level)
    logging.getLogger("alignts.serve.access").setLevel(logging.INFO if access_log else logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # our access log has the same facts


def serve(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, graceful_timeout: float = 30.0,
          ready_file: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns 0 after a graceful shutdown.

    ready_file: write ``host:port`` there once the socket listens (tests and scripts: port 0 picks a free port).
    """
    import uvicorn

    state = ServeState(cfg)
    app = create_app(cfg, state)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            state.shutting_down = True  # new infer requests get 503 from here on
            log.info("signal %s: graceful shutdown", sig)
            super().handle_exit(sig, frame)
            # uvicorn raises the captured signal again once it has shut down (the process then dies of it); a
            # graceful shutdown is a success here: exit 0
            getattr(self, "_captured_signals", []).clear()

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and ready_file:
                bound = [s.getsockname() for srv in self.servers for s in srv.sockets]
                h, p = bound[0][:2]
                with open(ready_file + ".tmp", "w") as f:
                    f.write(f"{h}:{p}\n")
                import os

                os.replace(ready_file + ".tmp", ready_file)
                log.info("listening on http://%s:%d", h, p)

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=graceful_timeout, lifespan="on")
    server = Server(config)
    server.run()
    return 0 if server.started else 1
