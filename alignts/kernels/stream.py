"""Incremental kernels for streams: O(1) work per new observation, each beside its NumPy twin (``*_ref``).

- Windowed running statistics over the last ``W`` points of every channel (``WindowStats``): count, mean,
  population variance (Welford's add/remove updates, recomputed exactly once every ``W`` points so rounding
  cannot drift), min and max (monotonic deques, amortized O(1)). NaN points take a slot of the window but count
  nowhere (NaN-aware, like ``instance_stats``). Twin: ``window_stats_ref`` computes the same from the window.
- Incremental patching (``patch_push``): the raw patches of ``patch_len`` every ``stride`` points on the grid
  that starts at the stream's first point, kept in a ring of the last ``K`` patches; each point lands in the
  ``ceil(P / stride)`` patches that contain it. ``window_patches`` assembles the ``[C, N, P]`` patches of a
  window whose start lies on the grid, with ``patchify``'s replication pad for the tail.
- Incremental digit encoding (``encode_fixed``): new values under a frozen LLMTime scaler (``(x - offset) /
  scale``, clipped to +-``lim``) -> LLMTime digit ids, concatenated, with the tokens of each value (what a KV
  cache needs to evict whole values). The same ids as ``encode_digits`` of the scaled values.
- Page-Hinkley test (``page_hinkley``) per channel on a monitored signal (a stream's forecast errors): mean
  ``m_n``, ``cum = alpha * cum + (x - m_n - delta)``, alarm when ``cum - min(cum) > threshold`` after
  ``min_n`` points; a channel's state resets after its alarm. NaN points are skipped.

Inputs are float arrays ``[k, C]`` (k new points of C channels); inf is the caller's to refuse (the stream
does). States are plain numpy arrays owned by the caller, so they can be saved and restored.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numba import njit

from alignts.errors import InputError, ShapeError
from alignts.kernels.digits import CodecTable, encode_digits_ref
from alignts.kernels.numba_cache import CACHE

__all__ = ["WindowStats", "window_stats_ref", "patch_push", "patch_push_ref", "window_patches", "encode_fixed",
           "encode_fixed_ref", "PH_FIELDS", "page_hinkley", "page_hinkley_ref"]


def _points(x, n_channels: int, name: str = "x") -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != n_channels:
        raise ShapeError(f"{name} must be [k, {n_channels}] (k points of {n_channels} channels); got shape "
                         f"{a.shape}. Fix: one row per time step, one column per channel")
    if np.isinf(a).any():
        raise InputError(f"{name} contains inf; expected finite values or NaN. Fix: clean the input")
    return np.ascontiguousarray(a)


# ---------------------------------------------------------------------------------------- windowed statistics

@njit(cache=CACHE)
def _recompute(buf, c, n_in, cnt, mean, m2):
    n = 0
    acc = 0.0
    for i in range(n_in):
        v = buf[c, i]
        if v == v:
            acc += v
            n += 1
    m = acc / n if n > 0 else 0.0
    ss = 0.0
    for i in range(n_in):
        v = buf[c, i]
        if v == v:
            ss += (v - m) * (v - m)
    cnt[c] = n
    mean[c] = m
    m2[c] = ss


@njit(cache=CACHE)
def _window_push(buf, tt, x, cnt, mean, m2, qmin, hmin, nmin, qmax, hmax, nmax):  # pragma: no cover - numba
    # buf [C, W] ring (slot t % W), tt [1] points seen; x [k, C]; deques of time indices [C, W] with head/len
    n_c, w = buf.shape
    for i in range(x.shape[0]):
        t = tt[0]
        pos = t % w
        for c in range(n_c):
            old = buf[c, pos] if t >= w else np.nan
            if old == old:  # Welford remove
                n = cnt[c] - 1
                if n == 0:
                    mean[c] = 0.0
                    m2[c] = 0.0
                else:
                    d = old - mean[c]
                    mean[c] -= d / n
                    m2[c] -= d * (old - mean[c])
                cnt[c] = n
            v = x[i, c]
            buf[c, pos] = v
            if v == v:  # Welford add
                n = cnt[c] + 1
                d = v - mean[c]
                mean[c] += d / n
                m2[c] += d * (v - mean[c])
                cnt[c] = n
            # drop indices that left the window, then the dominated ones, then push t
            while nmin[c] > 0 and qmin[c, hmin[c]] <= t - w:
                hmin[c] = (hmin[c] + 1) % w
                nmin[c] -= 1
            while nmax[c] > 0 and qmax[c, hmax[c]] <= t - w:
                hmax[c] = (hmax[c] + 1) % w
                nmax[c] -= 1
            if v == v:
                while nmin[c] > 0 and buf[c, qmin[c, (hmin[c] + nmin[c] - 1) % w] % w] >= v:
                    nmin[c] -= 1
                qmin[c, (hmin[c] + nmin[c]) % w] = t
                nmin[c] += 1
                while nmax[c] > 0 and buf[c, qmax[c, (hmax[c] + nmax[c] - 1) % w] % w] <= v:
                    nmax[c] -= 1
                qmax[c, (hmax[c] + nmax[c]) % w] = t
                nmax[c] += 1
        tt[0] = t + 1
        if (t + 1) % w == 0:  # once per W points: exact sums again (amortized O(1))
            for c in range(n_c):
                _recompute(buf, c, w, cnt, mean, m2)


@dataclass
class WindowStats:
    """Running statistics of the last ``window`` points of ``n_channels`` channels; ``push(x [k, C])`` costs
    O(k * C) whatever the window. ``buf`` is the window itself (a ring: the point seen at time t sits in slot
    ``t % window``; NaN = missing) and ``values()`` unrolls it oldest first.

    Fields are numpy arrays (``arrays()`` / ``from_arrays`` save and restore them)."""

    buf: np.ndarray        # [C, W] float64
    seen: np.ndarray       # [1] int64: points pushed so far
    cnt: np.ndarray        # [C] int64 observed (non-NaN) points in the window
    mean: np.ndarray       # [C]
    m2: np.ndarray         # [C] sum of squared deviations
    qmin: np.ndarray       # [C, W] int64 deque of time indices (increasing values)
    hmin: np.ndarray       # [C] deque head
    nmin: np.ndarray       # [C] deque length
    qmax: np.ndarray
    hmax: np.ndarray
    nmax: np.ndarray

    FIELDS = ("buf", "seen", "cnt", "mean", "m2", "qmin", "hmin", "nmin", "qmax", "hmax", "nmax")

    @classmethod
    def empty(cls, n_channels: int, window: int) -> "WindowStats":
        if int(n_channels) < 1 or int(window) < 1:
            raise InputError(f"n_channels and window must be >= 1; got {n_channels}, {window}.")
        c, w = int(n_channels), int(window)
        i = lambda *s: np.zeros(s, dtype=np.int64)  # noqa: E731
        return cls(np.full((c, w), np.nan), i(1), i(c), np.zeros(c), np.zeros(c), i(c, w), i(c), i(c),
                   i(c, w), i(c), i(c))

    @property
    def n_channels(self) -> int:
        return self.buf.shape[0]

    @property
    def window(self) -> int:
        return self.buf.shape[1]

    @property
    def n_seen(self) -> int:
        return int(self.seen[0])

    def push(self, x) -> None:
        """Add ``x [k, C]`` (or one point ``[C]``), oldest first; NaN = missing, inf refused."""
        a = _points(x, self.n_channels)
        _window_push(self.buf, self.seen, a, self.cnt, self.mean, self.m2, self.qmin, self.hmin, self.nmin,
                     self.qmax, self.hmax, self.nmax)

    def values(self) -> np.ndarray:
        """The window oldest first: [C, min(n_seen, W)] (a copy)."""
        n, w = self.n_seen, self.window
        if n < w:
            return self.buf[:, :n].copy()
        p = n % w
        return np.concatenate([self.buf[:, p:], self.buf[:, :p]], axis=1)

    def stats(self) -> dict[str, np.ndarray]:
        """{count [C] int64, mean, var (population), min, max [C] float64}; NaN where a channel has no point."""
        w = self.window
        none = self.cnt == 0
        mean = np.where(none, np.nan, self.mean)
        var = np.where(none, np.nan, np.maximum(self.m2, 0.0) / np.maximum(self.cnt, 1))
        rows = np.arange(self.n_channels)
        mn = np.where(self.nmin > 0, self.buf[rows, self.qmin[rows, self.hmin] % w], np.nan)
        mx = np.where(self.nmax > 0, self.buf[rows, self.qmax[rows, self.hmax] % w], np.nan)
        return {"count": self.cnt.copy(), "mean": mean, "var": var, "min": mn, "max": mx}

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.FIELDS}

    @classmethod
    def from_arrays(cls, d) -> "WindowStats":
        try:
            s = cls(**{k: np.array(d[k]) for k in cls.FIELDS})
        except KeyError as e:
            raise InputError(f"window statistics state lacks {e}; expected the arrays {cls.FIELDS}.") from None
        c, w = s.buf.shape
        if any(getattr(s, k).shape != (c, w) for k in ("qmin", "qmax")) or s.seen.shape != (1,) or any(
                getattr(s, k).shape != (c,) for k in ("cnt", "mean", "m2", "hmin", "nmin", "hmax", "nmax")):
            raise InputError("window statistics state has inconsistent array shapes; expected the arrays "
                             "WindowStats.arrays() wrote.")
        return s


def window_stats_ref(values) -> dict[str, np.ndarray]:
    """NumPy twin of :meth:`WindowStats.stats` from the window itself ``values [C, T]`` (NaN = missing)."""
    a = np.asarray(values, dtype=np.float64)
    cnt = (~np.isnan(a)).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN channel: NaN is the answer
        mean = np.nanmean(a, axis=1) if a.shape[1] else np.full(a.shape[0], np.nan)
        var = np.nanvar(a, axis=1) if a.shape[1] else np.full(a.shape[0], np.nan)
        mn = np.nanmin(a, axis=1) if a.shape[1] else np.full(a.shape[0], np.nan)
        mx = np.nanmax(a, axis=1) if a.shape[1] else np.full(a.shape[0], np.nan)
    return {"count": cnt.astype(np.int64), "mean": mean, "var": var, "min": mn, "max": mx}


# ---------------------------------------------------------------------------------------- incremental patching

@njit(cache=CACHE)
def _patch_push(ring, x, t0, stride):  # pragma: no cover - numba
    # ring [C, K, P]; x [k, C] the points at times t0..t0+k-1
    n_c, k_ring, p_len = ring.shape
    for i in range(x.shape[0]):
        t = t0 + i
        j_hi = t // stride
        j_lo = (t - p_len + stride) // stride if t >= p_len else 0  # ceil((t - P + 1) / stride)
        for j in range(j_lo, j_hi + 1):
            slot = j % k_ring
            off = t - j * stride
            for c in range(n_c):
                ring[c, slot, off] = x[i, c]


def _ring_args(ring, x, t0: int, stride: int) -> tuple[np.ndarray, int]:
    r = np.asarray(ring)
    if r.ndim != 3 or r.dtype != np.float64:
        raise ShapeError(f"ring must be float64 [C, K, P]; got {r.dtype} {r.shape}.")
    if int(stride) < 1 or int(stride) > r.shape[2] or int(t0) < 0:
        raise InputError(f"stride must be in 1..patch_len={r.shape[2]} and t0 >= 0; got stride={stride}, t0={t0}.")
    return _points(x, r.shape[0]), int(stride)


def patch_push(ring: np.ndarray, x, t0: int, stride: int) -> None:
    """Write the points ``x [k, C]`` seen at times ``t0..t0+k-1`` into the patch ring ``ring [C, K, P]`` in
    place: patch ``j`` (times ``j*stride .. j*stride+P-1``) lives in slot ``j % K``. O(k * C * P / stride)."""
    a, s = _ring_args(ring, x, t0, stride)
    _patch_push(ring, a, int(t0), s)


def patch_push_ref(ring: np.ndarray, x, t0: int, stride: int) -> None:
    """NumPy twin of :func:`patch_push` (one vectorized write per patch touched)."""
    a, s = _ring_args(ring, x, t0, stride)
    k_ring, p_len = ring.shape[1], ring.shape[2]
    t = int(t0) + np.arange(a.shape[0])
    for j in range(max(0, (int(t[0]) - p_len + s) // s) if t[0] >= p_len else 0, int(t[-1]) // s + 1):
        inside = (t >= j * s) & (t < j * s + p_len)
        ring[:, j % k_ring, t[inside] - j * s] = a[inside].T


def window_patches(ring: np.ndarray, window: np.ndarray, start: int, stride: int) -> np.ndarray:
    """The patches ``[C, N, P]`` of ``window [C, L]`` (the points at times ``start..start+L-1``) that
    ``patchify(window, P, stride)`` gives, read from ``ring`` for the patches wholly inside the window and cut
    from ``window`` (replication-padded) for the tail. ``start`` must lie on the grid (``start % stride == 0``)
    and the ring must hold the window's patches (K >= N)."""
    c, k_ring, p_len = ring.shape
    length = window.shape[1]
    if start % stride or length < p_len:
        raise InputError(f"window start {start} is not on the patch grid (stride {stride}) or L={length} < P="
                         f"{p_len}; expected start % stride == 0. Fix: re-patch the window (patchify).")
    n = (length - p_len) // stride + 2
    if k_ring < n:
        raise ShapeError(f"the ring holds {k_ring} patches; the window has {n}. Fix: a ring of K >= {n}.")
    full = (length - p_len) // stride + 1  # patches with start + P <= L
    j0 = start // stride
    out = np.empty((c, n, p_len), dtype=np.float64)
    out[:, :full] = ring[:, (j0 + np.arange(full)) % k_ring]
    idx = np.minimum(np.arange(full, n)[:, None] * stride + np.arange(p_len)[None, :], length - 1)  # [n-full, P]
    out[:, full:] = window[:, idx]
    return out


# ---------------------------------------------------------------------------------------- digits, fixed scaler

@njit(cache=CACHE)
def _encode_fixed(x, offset, scale, lim, p_scale, digit_ids, dsep, vsep, minus_id, out, lengths):  # pragma: no cover
    # x [k] raw -> out [T] ids (all values, concatenated), lengths [k] tokens per value
    n_ds = dsep.shape[0]
    n_vs = vsep.shape[0]
    pos = 0
    for i in range(x.shape[0]):
        z = (x[i] - offset) / scale
        if z > lim:
            z = lim
        elif z < -lim:
            z = -lim
        v = np.int64(np.floor(abs(z) * p_scale))
        nd = 1
        p10 = np.int64(10)
        while nd < 19 and v >= p10:
            nd += 1
            p10 *= 10
        start = pos
        if z < 0:
            out[pos] = minus_id
            pos += 1
        end = pos + nd + (nd - 1) * n_ds
        q = end - 1
        for k in range(nd):
            if k > 0:
                for j in range(n_ds):
                    out[q - n_ds + 1 + j] = dsep[j]
                q -= n_ds
            out[q] = digit_ids[v % 10]
            v = v // 10
            q -= 1
        pos = end
        for j in range(n_vs):
            out[pos + j] = vsep[j]
        pos += n_vs
        lengths[i] = pos - start
    return pos


def _fixed_args(x, offset, scale, lim, precision):
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1))
    if not np.isfinite(a).all():
        raise InputError("values to encode contain NaN/inf; expected finite values. Fix: fill gaps first.")
    if not (np.isfinite(offset) and np.isfinite(scale) and scale > 0 and 0 < lim < 1e15):
        raise InputError(f"frozen scaler offset={offset}, scale={scale}, lim={lim}: expected finite, scale > 0, "
                         "0 < lim < 1e15.")
    p = int(precision)
    if p != precision or not 0 <= p <= 15 or lim * 10.0 ** p >= 1e18:
        raise InputError(f"precision={precision} with lim={lim}: expected 0..15 and lim * 10**precision < 1e18.")
    return a, p


def encode_fixed(x, offset: float, scale: float, lim: float, table: CodecTable,
                 precision: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Raw values ``x [k]`` under a frozen scaler -> (ids [T] int64, tokens per value [k] int64)."""
    a, p = _fixed_args(x, offset, scale, lim, precision)
    width = 1 + 19 + 18 * len(table.digit_sep) + len(table.value_sep)
    out = np.empty(a.size * width, dtype=np.int64)
    lengths = np.empty(a.size, dtype=np.int64)
    n = _encode_fixed(a, float(offset), float(scale), float(lim), 10.0 ** p,
                      np.asarray(table.digit_ids, dtype=np.int64), np.asarray(table.digit_sep, dtype=np.int64),
                      np.asarray(table.value_sep, dtype=np.int64), np.int64(table.minus_id), out, lengths)
    return out[:n].copy(), lengths


def encode_fixed_ref(x, offset: float, scale: float, lim: float, table: CodecTable,
                     precision: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`encode_fixed`: scale, clip, then ``encode_digits_ref`` with one value per row."""
    a, p = _fixed_args(x, offset, scale, lim, precision)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    z = np.clip((a - offset) / scale, -lim, lim)
    ids, lengths = encode_digits_ref(z[:, None], table, p)
    return ids[ids >= 0], lengths.astype(np.int64)


# ---------------------------------------------------------------------------------------- Page-Hinkley

PH_FIELDS = ("n", "mean", "cum", "min_cum")  # state [C, 4]


@njit(cache=CACHE)
def _page_hinkley(x, state, delta, threshold, alpha, min_n, alarms):  # pragma: no cover - numba
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            v = x[i, c]
            if v != v:
                continue
            n = state[c, 0] + 1.0
            m = state[c, 1] + (v - state[c, 1]) / n
            cum = alpha * state[c, 2] + (v - m - delta)
            mc = min(state[c, 3], cum)
            if n >= min_n and cum - mc > threshold:
                alarms[i, c] = True
                state[c, 0] = 0.0
                state[c, 1] = 0.0
                state[c, 2] = 0.0
                state[c, 3] = 0.0
            else:
                state[c, 0] = n
                state[c, 1] = m
                state[c, 2] = cum
                state[c, 3] = mc


def _ph_args(x, state, delta, threshold, alpha, min_n):
    s = np.asarray(state)
    if s.ndim != 2 or s.shape[1] != 4 or s.dtype != np.float64:
        raise ShapeError(f"Page-Hinkley state must be float64 [C, 4] {PH_FIELDS}; got {s.dtype} {s.shape}.")
    if not (delta >= 0 and threshold > 0 and 0 < alpha <= 1 and min_n >= 1):
        raise InputError(f"Page-Hinkley delta={delta}, threshold={threshold}, alpha={alpha}, min_n={min_n}: "
                         "expected delta >= 0, threshold > 0, 0 < alpha <= 1, min_n >= 1.")
    return _points(x, s.shape[0])


def page_hinkley(x, state: np.ndarray, delta: float = 0.005, threshold: float = 50.0, alpha: float = 0.9999,
                 min_n: int = 30) -> np.ndarray:
    """Feed ``x [k, C]`` to the per-channel Page-Hinkley tests whose ``state [C, 4]`` is updated in place;
    returns alarms [k, C] bool (a channel's state resets after an alarm)."""
    a = _ph_args(x, state, delta, threshold, alpha, min_n)
    alarms = np.zeros(a.shape, dtype=np.bool_)
    _page_hinkley(a, state, float(delta), float(threshold), float(alpha), float(min_n), alarms)
    return alarms


def page_hinkley_ref(x, state: np.ndarray, delta: float = 0.005, threshold: float = 50.0, alpha: float = 0.9999,
                     min_n: int = 30) -> np.ndarray:
    """NumPy twin of :func:`page_hinkley` (vectorized over channels, a loop over time)."""
    a = _ph_args(x, state, delta, threshold, alpha, min_n)
    alarms = np.zeros(a.shape, dtype=bool)
    for i in range(a.shape[0]):
        v = a[i]
        ok = ~np.isnan(v)
        n = state[:, 0] + 1.0
        m = state[:, 1] + (v - state[:, 1]) / n
        cum = alpha * state[:, 2] + (v - m - delta)
        mc = np.minimum(state[:, 3], cum)
        fire = ok & (n >= min_n) & (cum - mc > threshold)
        keep = ok & ~fire
        alarms[i] = fire
        state[keep] = np.stack([n, m, cum, mc], axis=1)[keep]
        state[fire] = 0.0
    return alarms
