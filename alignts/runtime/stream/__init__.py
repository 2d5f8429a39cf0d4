"""Streams: forecast an unbounded series in bounded memory (torch-free).

    f = alignts.runtime.load("bundle/"); f.plan()
    s = f.stream(forecast_every=24, drift=True)     # or Stream(f, ...); many streams may share f
    for point in sensor:                              # [C] or [k, C] per call, NaN = missing
        for sf in s.update(point, timestamps=now):    # the forecasts that fell due (StreamForecast)
            use(sf.forecast.median, sf.lag, sf.drift)
    fc = s.forecast()                                 # a Forecast [1, C, H] now, in raw units
    s.save("s.state"); s = Stream.restore("s.state", f)  # atomic; refused if corrupt or from another bundle

Memory is O(L) per stream: the window is a ring buffer (:class:`alignts.kernels.stream.WindowStats`, which also
keeps its count/mean/var/min/max in O(1) per point). ``update`` does O(1) work per point; forecasts run when
asked, every ``forecast_every`` points or every ``forecast_every_s`` seconds of the stream's own timestamps (the
first point at or after each due time; every update must then carry timestamps): policy ``latest`` (default) runs one forecast per update call from the
newest window and reports the due points it coalesced (``skipped``) and how far behind it ran (``lag``), policy
``every`` runs one per due point. No observation is ever dropped.

Input rules: ``values`` must have the stream's C channels (ShapeError); NaN is a missing value: counted
(``n_missing``), kept in the window and filled by the batch rule at forecast time (``Forecaster.context``); inf
and timestamps that do not increase strictly are refused (InputError) and nothing of that update is applied.

Engines (:mod:`alignts.runtime.stream.engines`): Injective on llama.cpp and Internal on a LLaMA-family GGUF
backbone reuse their KV cache (``kv=None`` picks it, ``kv=False`` recomputes); every other forecaster recomputes its
window, i.e. its stream forecast IS the batch forecast of :meth:`Stream.window`. Drift (``drift=True`` or a :class:`DriftConfig`): Page-Hinkley on the stream's
own forecast errors, re-anchoring and an optional RLS output correction (:mod:`alignts.runtime.stream.drift`).
"""

from alignts.runtime.stream.core import Stream, StreamForecast, StreamState
from alignts.runtime.stream.drift import DriftConfig

__all__ = ["Stream", "StreamForecast", "StreamState", "DriftConfig"]
