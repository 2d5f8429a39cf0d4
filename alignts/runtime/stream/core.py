"""``Stream``: forecast an unbounded series in bounded memory with a planned forecaster (see the package docstring)."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alignts.errors import ArtifactError, InputError, ShapeError
from alignts.kernels.stream import WindowStats
from alignts.runtime.inputs import as_float_array
from alignts.runtime.manifest import manifest_sha256
from alignts.runtime.result import Forecast
from alignts.runtime.stream import state as state_file
from alignts.runtime.stream.drift import DriftConfig, DriftMonitor

log = logging.getLogger(__name__)

POLICIES = ("latest", "every")


@dataclass(frozen=True)
class StreamForecast:
    """One forecast a stream made because it fell due (``forecast_every`` points or ``forecast_every_s`` seconds).

    forecast:  the :class:`Forecast` (``[1, C, H]``, raw units) of the window ending at observation ``t``.
    t:         index of the window's last observation (0 = the stream's first); timestamp: its timestamp or None.
    lag:       observations that arrived after this forecast fell due and before it ran (0 = on time).
    skipped:   due forecasts coalesced into this one (policy ``latest``: an update brought several due points).
    drift:     drift events since the previous forecast: [{"t": index, "channels": [...]}].
    reanchored: the engine re-anchored for this forecast (Injective KV: scaler refit + full prefill).
    latency_s: wall time of the forecast.
    """

    forecast: Forecast
    t: int
    timestamp: float | None
    lag: int
    skipped: int
    drift: tuple[dict[str, Any], ...]
    reanchored: bool
    latency_s: float


@dataclass(frozen=True)
class StreamState:
    """A stream's saved state: JSON-able ``meta`` and numpy ``arrays``; ``save(path)`` writes it atomically."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    def save(self, path: str | os.PathLike) -> Path:
        return state_file.save(path, self.meta, self.arrays)

    def to_bytes(self) -> bytes:
        return state_file.dumps(self.meta, self.arrays)


def parse_timestamps(ts: Any, k: int) -> np.ndarray:
    """``ts`` (k numbers in seconds, datetime64, ISO strings or datetimes) -> float64 seconds [k]."""
    a = np.asarray(ts).reshape(-1) if not np.isscalar(ts) else np.asarray([ts])
    if a.shape[0] != k:
        raise ShapeError(f"got {a.shape[0]} timestamps for {k} points; expected one per point.")
    if a.dtype.kind in "iuf":
        out = a.astype(np.float64)
    else:
        try:
            out = a.astype("datetime64[ns]").astype(np.int64) / 1e9
        except (ValueError, TypeError) as e:
            raise InputError(f"timestamps {a[:3].tolist()}...: expected numbers (seconds), datetime64 or ISO "
                             f"strings ({e}).") from None
    if not np.isfinite(out).all():
        raise InputError("timestamps contain NaN/inf/NaT; expected one finite timestamp per point.")
    return out


class Stream:
    """A series fed point by point to a planned forecaster; memory O(L) whatever the number of points.

    Create with ``forecaster.stream(...)``; see :mod:`alignts.runtime.stream` for the options and the rules.
    """

    def __init__(self, forecaster, n_channels: int | None = None, forecast_every: int | None = None,
                 policy: str = "latest", quantiles: Sequence[float] | None = None, kv: bool | None = None,
                 drift: DriftConfig | bool | None = None, forecast_every_s: float | None = None):
        from alignts.runtime.stream.engines import make_engine

        plan = forecaster.planned  # NotPlannedError before plan()
        self.f = forecaster
        fc = forecaster.n_channels
        if n_channels is not None and fc is not None and int(n_channels) != fc:
            raise ShapeError(f"n_channels={n_channels}: this bundle's model takes {fc} channels; pass {fc}.")
        self.n_channels = int(n_channels if n_channels is not None else (fc or 1))
        if self.n_channels < 1:
            raise InputError(f"n_channels={n_channels}: expected >= 1.")
        if forecast_every is not None and int(forecast_every) < 1:
            raise InputError(f"forecast_every={forecast_every}: expected an integer >= 1 (points) or None.")
        if forecast_every_s is not None:
            if forecast_every is not None:
                raise InputError("forecast_every (points) and forecast_every_s (seconds) are two cadences; pass one.")
            if (isinstance(forecast_every_s, bool) or not isinstance(forecast_every_s, (int, float))
                    or not math.isfinite(forecast_every_s) or forecast_every_s <= 0):
                raise InputError(f"forecast_every_s={forecast_every_s!r}: expected seconds > 0 (of the stream's own "
                                 "timestamps) or None.")
        if policy not in POLICIES:
            raise InputError(f"policy={policy!r}: expected one of {POLICIES}.")
        self.forecast_every = None if forecast_every is None else int(forecast_every)
        self.forecast_every_s = None if forecast_every_s is None else float(forecast_every_s)
        self.next_due_ts: float | None = None  # the time cadence's next due timestamp (set by the first point)
        self.policy = policy
        self.quantiles = forecaster._quantile_levels(quantiles)
        self.context_len = int(plan.context_len)
        self.horizon = int(plan.horizon)
        self.bundle_sha256 = manifest_sha256(forecaster.bundle_dir)
        self.stats = WindowStats.empty(self.n_channels, self.context_len)
        if drift is True:
            drift = DriftConfig()
        self.drift = DriftMonitor(self.n_channels, drift) if isinstance(drift, DriftConfig) else None
        self.engine = make_engine(forecaster, self.n_channels, kv)
        self.n_missing = 0
        self.n_forecasts = 0
        self.n_skipped = 0
        self.last_timestamp: float | None = None
        self._lock = threading.RLock()  # one update/forecast at a time per stream

    # ------------------------------------------------------------------------------------------------ facts
    @property
    def n_seen(self) -> int:
        """Observations received so far (missing ones included)."""
        return self.stats.n_seen

    def window(self) -> np.ndarray:
        """The window the next forecast reads, oldest first: [C, min(n_seen, L)] (NaN = missing)."""
        return self.stats.values()

    def window_stats(self) -> dict[str, np.ndarray]:
        """Running statistics of the window (count, mean, var, min, max per channel), O(1) to read."""
        return self.stats.stats()

    def describe(self) -> dict[str, Any]:
        return {"engine": self.engine.describe(), "n_channels": self.n_channels, "context_len": self.context_len,
                "horizon": self.horizon, "forecast_every": self.forecast_every,
                "forecast_every_s": self.forecast_every_s, "policy": self.policy, "n_seen": self.n_seen,
                "n_missing": self.n_missing, "n_forecasts": self.n_forecasts,
                "n_skipped": self.n_skipped, "drift_events": self.drift.n_events if self.drift else None,
                "correcting": bool(self.drift and self.drift.correcting())}

    # ------------------------------------------------------------------------------------------------ input
    def _points(self, values: Any, timestamps: Any) -> tuple[np.ndarray, np.ndarray | None]:
        a = as_float_array(values)
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or a.shape[1] != self.n_channels:
            raise ShapeError(f"expected values [{self.n_channels}] (one point) or [k, {self.n_channels}] (k points, "
                             f"one column per channel); got shape {a.shape}. Fix: send every channel of every "
                             "point, NaN for a missing one.")
        inf = np.isinf(a)
        if inf.any():
            i, c = np.argwhere(inf)[0]
            raise InputError(f"point {int(i)} of this update has inf in channel {int(c)}; expected a finite value "
                             "or NaN (missing). Nothing of this update was applied. Fix: send NaN for a value "
                             "the sensor could not measure.")
        ts = None
        if timestamps is not None:
            ts = parse_timestamps(timestamps, a.shape[0])
            prev = np.concatenate([[self.last_timestamp if self.last_timestamp is not None else -np.inf], ts[:-1]])
            back = np.flatnonzero(ts <= prev)
            if back.size:
                i = int(back[0])
                raise InputError(f"timestamp {float(ts[i])!r} of point {i} is not after the previous one ({float(prev[i])!r}); "
                                 "expected strictly increasing timestamps. Nothing of this update was applied. "
                                 "Fix: drop duplicated or late points, or start a new stream.")
        elif self.forecast_every_s is not None:
            raise InputError(f"this stream forecasts every {self.forecast_every_s:g} s of its timestamps, and this "
                             "update has none. Nothing of it was applied. Fix: pass timestamps= with every update "
                             "(or use forecast_every=k points).")
        return a, ts

    def _due_points(self, n0: int, k: int, ts: np.ndarray | None) -> tuple[list[int], float | None]:
        """Indices of the points of this update at which a forecast falls due, and the next due timestamp.

        Points cadence: every ``forecast_every``-th point. Time cadence: the first point at or after each due time
        (the first point of the stream sets the first due time ``forecast_every_s`` later); a gap longer than the
        cadence gives one forecast, at its first point, and the due times go on from the cadence's grid."""
        if self.forecast_every is not None:
            e = self.forecast_every
            return [t for t in range(n0, n0 + k) if (t + 1) % e == 0], None
        if self.forecast_every_s is None:
            return [], None
        step, nxt, due = self.forecast_every_s, self.next_due_ts, []
        for i, t in enumerate(ts):
            if nxt is None:
                nxt = float(t) + step
            elif t >= nxt:
                due.append(n0 + i)
                nxt += step * (math.floor((t - nxt) / step) + 1)
        return due, nxt

    def update(self, values: Any, timestamps: Any = None) -> list[StreamForecast]:
        """Add ``values`` ([C]: one point, or [k, C]: k points, oldest first; NaN = missing) with optional
        ``timestamps`` (k of them, strictly increasing). O(1) work per point besides the forecasts that fall
        due (``forecast_every`` / ``forecast_every_s``); returns those forecasts (empty without a cadence).

        Errors (nothing of the update is applied): wrong shape or channel count (ShapeError), inf, a
        timestamp that is not after the previous one, or no timestamps under a time cadence (InputError)."""
        a, ts = self._points(values, timestamps)
        out: list[StreamForecast] = []
        with self._lock:
            k = a.shape[0]
            n0 = self.n_seen
            due, next_due = self._due_points(n0, k, ts)
            if self.forecast_every_s is not None:
                self.next_due_ts = next_due
            if self.policy == "every":
                start = n0
                for t in due:
                    self._ingest(a[start - n0:t + 1 - n0], start)
                    start = t + 1
                    out.append(self._due(t, ts, n0, lag=0, skipped=0))
                self._ingest(a[start - n0:], start)
            else:
                self._ingest(a, n0)
                if due:
                    t_end = n0 + k - 1
                    self.n_skipped += len(due) - 1
                    out.append(self._due(t_end, ts, n0, lag=t_end - due[0], skipped=len(due) - 1))
            if ts is not None:
                self.last_timestamp = float(ts[-1])
        return out

    def _ingest(self, a: np.ndarray, t0: int) -> None:
        if a.shape[0] == 0:
            return
        self.n_missing += int(np.isnan(a).sum())
        if self.drift is not None:
            for i in range(a.shape[0]):
                if self.drift.observe(a[i], t0 + i) and self.drift.cfg.reanchor:
                    self.engine.reanchor()
        self.stats.push(a)

    def _due(self, t: int, ts: np.ndarray | None, n0: int, lag: int, skipped: int) -> StreamForecast:
        t0 = time.perf_counter()
        fc, re = self._forecast()
        stamp = float(ts[t - n0]) if ts is not None else None
        events = tuple(self.drift.take_events()) if self.drift is not None else ()
        return StreamForecast(forecast=fc, t=t, timestamp=stamp, lag=lag, skipped=skipped, drift=events,
                              reanchored=re, latency_s=time.perf_counter() - t0)

    # ------------------------------------------------------------------------------------------------ output
    def forecast(self, horizon: int | None = None, quantiles: Sequence[float] | None = ()) -> Forecast:
        """Forecast from the current window now: a :class:`Forecast` ``[1, C, H]`` in raw units.

        horizon: at most the planned H (None = H). quantiles: levels (``()`` = the stream's own, None = none).
        The window is the last L points; NaN in it are filled by the batch rule (``Forecaster.context``: interior
        gaps linear, leading ones back-filled, trailing ones forward-filled) and fewer than L points are
        left-padded with the first, so a stream without frozen statistics gives ``forecaster.forecast`` of
        :meth:`window` exactly."""
        h = self.horizon if horizon is None else int(horizon)
        if not 1 <= h <= self.horizon:
            raise ShapeError(f"horizon={horizon}: expected 1..{self.horizon} (the planned horizon).")
        with self._lock:
            fc, _ = self._forecast(self.quantiles if quantiles == () else self.f._quantile_levels(quantiles))
        if h == self.horizon:
            return fc
        return replace(fc, mean=fc.mean[..., :h], median=fc.median[..., :h],
                       quantiles=None if fc.quantiles is None else fc.quantiles[..., :h, :])

    def _forecast(self, levels=()) -> tuple[Forecast, bool]:
        levels = self.quantiles if levels == () else levels
        window = self.stats.values()
        if window.shape[1] == 0:
            raise InputError("the stream has no observation yet; expected at least one. Fix: update() first.")
        if np.isnan(window).all(axis=1).any():
            c = int(np.flatnonzero(np.isnan(window).all(axis=1))[0])
            raise InputError(f"channel {c} has no observed value in the window (all {window.shape[1]} missing); "
                             "expected at least one. Fix: send values for it.")
        fc, reanchored = self.engine.forecast(window, self.n_seen - 1, levels)
        self.n_forecasts += 1
        if self.drift is not None:
            x0 = np.array([row[~np.isnan(row)][-1] for row in window])
            scale = np.sqrt(self.stats.stats()["var"])
            self.drift.set_forecast(fc.median[0], self.n_seen - 1, x0, scale)
            if self.drift.correcting():
                cor = self.drift.correct
                q = None if fc.quantiles is None else np.sort(cor(fc.quantiles[0], x0, scale), axis=-1)[None]
                fc = replace(fc, mean=cor(fc.mean[0], x0, scale)[None], median=cor(fc.median[0], x0, scale)[None],
                             quantiles=q)
        return fc, reanchored

    # ------------------------------------------------------------------------------------------------ state
    def _identity(self) -> dict[str, Any]:
        p = self.f.planned
        return {"bundle_sha256": self.bundle_sha256, "paradigm": self.f.paradigm, "variant": p.variant,
                "context_len": self.context_len, "horizon": self.horizon, "n_channels": self.n_channels,
                "engine": self.engine.kind}

    def state(self) -> StreamState:
        """Everything needed to resume this stream (``Stream.restore``): the window, counters, drift state and the
        engine's state (Injective KV: the frozen scalers and the KV cache of every channel, so the resumed stream
        forecasts exactly what this one would)."""
        with self._lock:
            meta = {**self._identity(), "forecast_every": self.forecast_every,
                    "forecast_every_s": self.forecast_every_s, "next_due_ts": self.next_due_ts, "policy": self.policy,
                    "quantiles": list(self.quantiles) if self.quantiles else None, "n_missing": self.n_missing,
                    "n_forecasts": self.n_forecasts, "n_skipped": self.n_skipped,
                    "last_timestamp": self.last_timestamp}
            arrays = {f"stats.{k}": v.copy() for k, v in self.stats.arrays().items()}
            if self.drift is not None:
                dm, da = self.drift.state()
                meta["drift"] = dm
                arrays.update({f"drift.{k}": v.copy() for k, v in da.items()})
            em, ea = self.engine.state()
            meta["engine_state"] = em
            arrays.update({f"engine.{k}": v for k, v in ea.items()})
            return StreamState(meta, arrays)

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`state` to ``path`` atomically."""
        return self.state().save(path)

    @classmethod
    def restore(cls, state: StreamState | bytes | str | os.PathLike, forecaster) -> "Stream":
        """Resume a stream from :meth:`state` (a StreamState, its bytes, or a file written by :meth:`save`) on
        ``forecaster``, planned as when the state was taken. A corrupt state, or one from another bundle or
        plan, raises ArtifactError / InputError naming the difference."""
        if isinstance(state, StreamState):
            meta, arrays = state.meta, state.arrays
        elif isinstance(state, (bytes, bytearray)):
            meta, arrays = state_file.loads(bytes(state))
        else:
            meta, arrays = state_file.load(state)
        sha = manifest_sha256(forecaster.bundle_dir)
        if meta.get("bundle_sha256") != sha:
            raise ArtifactError(f"this stream state was written for the bundle whose manifest sha256 is "
                                f"{str(meta.get('bundle_sha256'))[:16]}..., not {forecaster.bundle_dir} ({sha[:16]}...); "
                                "expected the same bundle (a re-exported or re-calibrated bundle is another one). "
                                "Fix: restore it with the bundle it came from, or start a new stream.")
        drift = DriftConfig(**meta["drift"]["config"]) if "drift" in meta else None
        try:
            s = cls(forecaster, n_channels=meta["n_channels"], forecast_every=meta["forecast_every"],
                    policy=meta["policy"], quantiles=meta["quantiles"], kv=meta["engine"] != "window", drift=drift,
                    forecast_every_s=meta.get("forecast_every_s"))
        except KeyError as e:
            raise ArtifactError(f"stream state lacks {e}; it was not written by Stream.state().") from None
        mine = s._identity()
        diff = {k: (meta.get(k), v) for k, v in mine.items() if meta.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: state {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise InputError(f"the stream state does not match this forecaster's plan ({shown}). Fix: plan the "
                             f"forecaster as when the state was saved (variant={meta.get('variant')!r}, "
                             f"context_len={meta.get('context_len')}, horizon={meta.get('horizon')}).")
        pick = lambda prefix: {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}  # noqa: E731
        s.stats = WindowStats.from_arrays(pick("stats."))
        if s.stats.buf.shape != (s.n_channels, s.context_len):
            raise InputError(f"the stream state's window is {s.stats.buf.shape}; expected ({s.n_channels}, "
                             f"{s.context_len}).")
        if drift is not None:
            s.drift = DriftMonitor.from_state(meta["drift"], pick("drift."))
        s.n_missing, s.n_forecasts, s.n_skipped = (int(meta[k]) for k in ("n_missing", "n_forecasts", "n_skipped"))
        s.last_timestamp = meta["last_timestamp"]
        s.next_due_ts = meta.get("next_due_ts")
        s.engine.load_state(meta["engine_state"], pick("engine."), s.stats)
        return s
