"""`alignts stream BUNDLE`: forecast a series as its points arrive (CSV or JSON lines, stdin or a file).

Input, one point a line (blank lines and ``#`` comments ignored):
- CSV: ``v1,v2,...`` or, after a header line naming the columns, rows with a ``timestamp`` / ``date`` / ``time``
  column (ISO text or seconds) beside the channels; empty fields are missing values (NaN);
- JSON: ``{"timestamp": ..., "values": [v1, ...]}`` (``values`` may be one number), or ``[v1, ...]``; null is NaN.
A bad line (unparseable, wrong channel count, inf, a timestamp not after the previous one) is reported on stderr
with its line number and skipped; the count is in the summary. Lines are read by a thread of their own and
queued, so input keeps arriving while a forecast runs; the stream ingests everything queued in one update
(policy ``latest``: one forecast from the newest window, the due points it coalesced reported as ``skipped``,
the points still queued as ``backlog``).

Output: one JSON line per forecast: ``t`` (index of the window's last point), ``timestamp``, ``horizon``,
``mean`` and ``median`` ([C][H]), ``quantiles`` ({level: [C][H]}, where the bundle gives them), ``lag``,
``skipped``, ``backlog``, ``drift`` (events since the previous forecast), ``reanchored``, ``latency_ms``.
``--state FILE`` resumes from FILE when it exists and saves the stream there at the end (atomically).
"""

from __future__ import annotations

import json
import math
import queue
import sys
import threading
import time

import numpy as np

from alignts.errors import AlignTSError, InputError

_TS_NAMES = ("timestamp", "date", "time", "ts")
_EOF = object()


def add_arguments(p):
    p.add_argument("bundle", help="bundle folder")
    p.add_argument("--input", default="-", help="CSV / JSON lines file, or - for stdin (default)")
    p.add_argument("--follow", action="store_true", help="keep reading a file as it grows (like tail -f); stops "
                   "after --idle seconds without a new line")
    p.add_argument("--idle", type=float, default=None, help="with --follow: stop after this many seconds without "
                   "input (default: never)")
    p.add_argument("--every", type=int, default=None, help="forecast every k points (default 1)")
    p.add_argument("--every-seconds", type=float, default=None, metavar="S",
                   help="forecast every S seconds of the input's own timestamps instead (each line needs one)")
    p.add_argument("--out", default="-", help="JSON lines of forecasts to this file, or - for stdout (default)")
    p.add_argument("--quantiles", default=None, help="comma-separated levels, e.g. 0.1,0.9, or none (default: "
                   "0.1,0.5,0.9 where the bundle gives quantiles)")
    p.add_argument("--channels", type=int, default=None, help="channels per point (default: the bundle's, else "
                   "read from the first good line)")
    p.add_argument("--state", default=None, help="resume from this state file if it exists; save to it at the end")
    p.add_argument("--drift", action="store_true", help="Page-Hinkley drift detection on the forecast errors "
                   "(re-anchors on an event)")
    p.add_argument("--correct", action="store_true", help="with --drift: RLS output correction after a drift event")
    p.add_argument("--no-kv", action="store_true", help="recompute the window at every forecast (no KV reuse)")
    p.add_argument("--variant", default=None)
    p.add_argument("--context", type=int, default=None, help="Injective: context length L to plan")
    p.add_argument("--horizon", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)


class LineParser:
    """One input line -> (values [C] float64, timestamp or None); InputError for a bad line."""

    def __init__(self, n_channels: int | None):
        self.n_channels = n_channels
        self.columns: list[str] | None = None
        self.ts_col: int | None = None

    def parse(self, line: str):
        s = line.strip()
        if s.startswith("{") or s.startswith("["):
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e.msg} at column {e.colno})") from None
            ts = None
            if isinstance(obj, dict):
                if "values" not in obj:
                    raise InputError(f"a JSON object needs 'values'; got keys {sorted(obj)[:5]}")
                ts, obj = obj.get("timestamp"), obj["values"]
            vals = obj if isinstance(obj, list) else [obj]
            try:
                x = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"values must be numbers or null; got {str(vals)[:60]}") from None
            return self._check(x), ts
        fields = [f.strip() for f in s.split(",")]
        if self.columns is None and any(_word(f) for f in fields):
            self.columns = fields
            low = [f.lower() for f in fields]
            self.ts_col = next((low.index(n) for n in _TS_NAMES if n in low), None)
            return None
        ts = None
        if self.ts_col is not None:
            if len(fields) <= self.ts_col:
                raise InputError(f"expected {len(self.columns)} fields (header {self.columns}); got {len(fields)}")
            ts = fields.pop(self.ts_col)
            try:
                ts = float(ts)
            except ValueError:
                pass
        try:
            x = np.array([float(f) if f not in ("", "nan", "NaN", "NA") else np.nan for f in fields])
        except ValueError:
            raise InputError(f"fields must be numbers (empty = missing); got {fields[:6]}") from None
        return self._check(x), ts

    def _check(self, x: np.ndarray) -> np.ndarray:
        if self.n_channels is None:
            self.n_channels = x.size
        if x.size != self.n_channels:
            raise InputError(f"expected {self.n_channels} values (channels); got {x.size}")
        if np.isinf(x).any():
            raise InputError("a value is inf; expected finite numbers (empty or null for a missing one)")
        return x


def _word(field: str) -> bool:
    if field == "" or field.lower() in ("nan", "na"):
        return False
    try:
        float(field)
        return False
    except ValueError:
        return not field[:4].isdigit()  # an ISO date is a value of a timestamp column, not a header


def _reader(path: str, follow: bool, idle: float | None, q: queue.Queue) -> None:
    fh = sys.stdin if path == "-" else open(path)  # noqa: SIM115 - closed below
    try:
        quiet_since = time.monotonic()
        buf = ""
        while True:
            line = fh.readline()
            if line:
                buf += line
                if buf.endswith("\n"):
                    q.put(buf)
                    buf = ""
                quiet_since = time.monotonic()
                continue
            if not follow or path == "-":
                break
            if idle is not None and time.monotonic() - quiet_since > idle:
                break
            time.sleep(0.05)
        if buf:
            q.put(buf)
    finally:
        q.put(_EOF)
        if fh is not sys.stdin:
            fh.close()


def _round(a: np.ndarray) -> list:
    return [[None if not math.isfinite(v) else float(f"{v:.6g}") for v in row] for row in np.asarray(a)]


def forecast_line(sf, backlog: int) -> dict:
    fc = sf.forecast
    out = {"t": sf.t, "timestamp": sf.timestamp, "horizon": int(fc.mean.shape[-1]), "mean": _round(fc.mean[0]),
           "median": _round(fc.median[0])}
    if fc.quantiles is not None:
        out["quantiles"] = {str(lv): _round(fc.quantiles[0, :, :, i]) for i, lv in enumerate(fc.quantile_levels)}
    out.update(lag=sf.lag, skipped=sf.skipped, backlog=backlog, drift=list(sf.drift), reanchored=sf.reanchored,
               latency_ms=round(sf.latency_s * 1e3, 3))
    return out


def run(args) -> int:
    from pathlib import Path

    from alignts.cli.output import parse_levels
    from alignts.runtime import load
    from alignts.runtime.stream import DriftConfig, Stream
    from alignts.runtime.stream.core import parse_timestamps

    if args.every is not None and args.every_seconds is not None:
        raise InputError("--every (points) and --every-seconds (time) are two cadences; pass one.")
    if args.every is not None and args.every < 1:
        raise InputError(f"--every {args.every}: expected >= 1.")
    every = args.every if args.every is not None or args.every_seconds is not None else 1
    f = load(args.bundle)
    plan_kw = {"horizon": args.horizon, "variant": args.variant, "threads": args.threads}
    if args.context is not None:
        plan_kw["context_len"] = args.context
    f.plan(**plan_kw)
    levels = parse_levels(args.quantiles)
    if args.quantiles is None and f.quantile_method != "none":
        levels = (0.1, 0.5, 0.9)
    drift = DriftConfig(correct=args.correct) if args.drift else None
    parser = LineParser(args.channels or f.n_channels)
    stream = None
    if args.state and Path(args.state).exists():
        stream = Stream.restore(args.state, f)
        parser.n_channels = stream.n_channels
        print(f"resumed {args.state}: {stream.n_seen} points seen", file=sys.stderr)

    q: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(args.input, args.follow, args.idle, q), daemon=True).start()
    out = sys.stdout if args.out == "-" else open(args.out, "a")  # noqa: SIM115 - closed below
    n_line = n_bad = n_points = n_fc = 0
    last_ts: float | None = stream.last_timestamp if stream else None
    try:
        done = False
        while not done:
            lines = [q.get()]
            while not q.empty():
                lines.append(q.get_nowait())
            rows, stamps = [], []
            for line in lines:
                if line is _EOF:
                    done = True
                    continue
                n_line += 1
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    got = parser.parse(line)
                    if got is None:  # a CSV header
                        continue
                    x, ts = got
                    if ts is not None:
                        t = float(parse_timestamps([ts], 1)[0])
                        if last_ts is not None and t <= last_ts:
                            raise InputError(f"timestamp {ts!r} is not after the previous one")
                        ts, last_ts = t, t
                    elif last_ts is not None:
                        raise InputError("no timestamp, but the points before had one")
                    elif args.every_seconds is not None and (stream is None or stream.forecast_every_s is not None):
                        raise InputError("no timestamp; --every-seconds forecasts by the lines' own timestamps")
                except AlignTSError as e:
                    n_bad += 1
                    print(f"alignts stream: line {n_line}: skipped: {e}", file=sys.stderr)
                    continue
                rows.append(x)
                stamps.append(ts)
            if not rows:
                continue
            if stream is None:
                stream = f.stream(n_channels=parser.n_channels, forecast_every=every, quantiles=levels,
                                  kv=False if args.no_kv else None, drift=drift,
                                  forecast_every_s=args.every_seconds)
            timed = np.array([s is not None for s in stamps])
            cuts = np.flatnonzero(timed[1:] != timed[:-1]) + 1  # points without timestamps precede timed ones
            for part in np.split(np.arange(len(rows)), cuts):
                ts = [stamps[i] for i in part] if timed[part[0]] else None
                for sf in stream.update(np.stack([rows[i] for i in part]), timestamps=ts):
                    out.write(json.dumps(forecast_line(sf, q.qsize())) + "\n")
                    out.flush()
                    n_fc += 1
            n_points += len(rows)
    finally:
        if out is not sys.stdout:
            out.close()
        if stream is not None and args.state:
            stream.save(args.state)
    print(f"alignts stream: {n_points} points, {n_fc} forecasts, {n_bad} bad lines skipped"
          + (f", {stream.n_missing} missing values, {stream.n_skipped} due forecasts coalesced, "
             f"{stream.drift.n_events if stream.drift else 0} drift events; engine {stream.engine.describe()}"
             if stream else ""), file=sys.stderr)
    return 0
