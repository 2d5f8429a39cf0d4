"""Internal streams on a causal GGUF backbone with rotary positions (LLaMA family): patch-level KV-cache reuse.

Per stream, a llama.cpp context of its own on the forecaster's loaded model (weights shared, nothing reloaded),
one sequence per channel holding the window's N patch tokens. Internal's patches start every ``stride`` points
and the last one is replication-padded (``kernels.patch``), so when the window has moved by ``m * stride`` points
since the last forecast (1 <= m <= N - 2) the old patches 1+m..N-2 are the new 0..N-3-m: the forecast evicts the
m oldest tokens and the padded one (``llama_memory_seq_rm``), decodes only the m new real patches and the new
padded one, keeps the other hidden states, and runs the head on the N hidden states. Positions only grow; a
rotary model attends by relative position, so a kept token's cached keys stay valid, and when positions run out
the window is moved down (``llama_memory_seq_add``). GPT-2 (learned absolute positions) and BERT (bidirectional)
recompute the window (``engines.window_reason``).

Anchor (the batch forecast of the window exactly: instance statistics, all N patches decoded): at the first
forecast, when the window moved by a number of points that is not a multiple of ``stride`` or by N - 1 patches or
more, when the window holds a missing value (the batch rule fills gaps from both sides, so past patches change) or
fewer than L points (it is left-padded with its first one), when the window's own mean or std has moved more than
``STAT_TOL`` from the frozen ones,
when a new value leaves the anchor window's normalized range by more than one standard deviation, when every patch
of the anchor window has been replaced (so statistics are never older than one window), and on a drift event.

What differs from the batch forecast of the same window between anchors, and why (measured in
results/stream_cpu.md): the instance statistics (mean, std) are the anchor window's, not the current window's;
a kept patch's hidden state and cached keys were computed while older patches, now evicted, were still in its
causal context (a sliding-window attention of N patches instead of a window that starts at the current first
patch).
"""

from __future__ import annotations

import contextlib

import numpy as np

from alignts.errors import InputError
from alignts.kernels.patch import norm_patchify, patchify
from alignts.runtime.stream.kv import KVContext, KVEngineState

MARGIN = 1.0  # a new value may leave the anchor window's normalized range by this many stds before a re-anchor
# The window's own instance statistics may move this far from the frozen ones (mean by this many frozen stds, std
# by this fraction) before a re-anchor. The frozen statistics are what a stream between anchors pays for: on a
# tiny LLaMA bundle, the forecast with the frozen statistics but every patch recomputed differed from the batch one
# by 0.9-4.8 (series std 7-13) while the KV path differed from that recompute by <= 0.04 (tests/
# test_stream_internal_kv.py; results/stream_cpu.md measures the trade-off on ETTh1).
STAT_TOL = 0.05


class InternalKVEngine(KVEngineState):
    """Internal stream engine with patch-level KV-cache reuse (see the module docstring)."""

    kind = "kv-internal"

    def __init__(self, f, n_channels: int):
        c = f.cfg
        self.f = f
        self.C = int(n_channels)
        self.L, self.P, self.stride = int(c.context_len), int(c.patch_len), int(c.stride)
        self.N = int(c.n_patches)
        self.H = int(f.horizon)
        self.eps = float(c.eps)
        model = self.model = f._lm
        self.d = int(model.n_embd)
        self.pos_limit = 4 * self.N  # positions per channel before the window is moved down
        variant = f.manifest.variant(f.planned.variant)
        self.kv = KVContext(model, self.C, self.C * (self.N + 2), float(variant.extra.get("adapter_scale", 1.0)),
                            embeddings=True)
        if not self.kv.can_shift:
            self.kv.close()
            raise InputError("this backbone cannot shift its KV cache (no rotary positions)")
        C, N, d = self.C, self.N, self.d
        self.mean = np.zeros(C)
        self.std = np.ones(C)
        self.zlo = np.zeros(C)
        self.zhi = np.zeros(C)
        self.hid = np.zeros((C, N, d), dtype=np.float32)   # hidden states of the window's patches, in order
        self.pos = np.zeros((C, N), dtype=np.int64)        # their positions in the channel's sequence
        self.next_pos = np.zeros(C, dtype=np.int64)
        self.t_last = np.full(C, -1, dtype=np.int64)       # stream index of the window's last point
        self.since = np.zeros(C, dtype=np.int64)           # patches appended since the anchor
        self.anchored = np.zeros(C, dtype=bool)
        self.need_anchor = np.zeros(C, dtype=bool)
        self.n_anchors = 0
        self.n_shifts = 0
        self.patches_fed = 0

    # ------------------------------------------------------------------------------------------------ stream
    def reanchor(self) -> None:
        self.need_anchor[:] = True

    def describe(self) -> str:
        return (f"kv-internal: patch-level KV cache reuse on llama.cpp, {self.N} patch tokens per channel, a new "
                f"patch every {self.stride} points under frozen instance statistics; {self.n_anchors} anchors, "
                f"{self.n_shifts} shifts, {self.patches_fed} patches fed")

    def forecast(self, window: np.ndarray, t_end: int, levels):
        f = self.f
        a = f.prepare(f.scale(f.context(window[None])))  # [1, C, L] float32: what the batch path reads
        # a missing value (filled from both sides by the batch rule) or a window not full yet (left-padded with
        # its first value) changes past patches: recompute
        gaps = np.isnan(window).any(axis=1) | (window.shape[1] < self.L)
        y = np.empty((1, self.C, self.f._head_b.shape[0]))
        reanchored = False
        with self._guard():
            for c in range(self.C):
                x = a[0, c].astype(np.float64)
                try:
                    if gaps[c] or not self._advance(c, x, t_end):
                        self._anchor(c, x, t_end)
                        reanchored = True
                except BaseException:  # the cache may be half updated: the next forecast starts over
                    self.need_anchor[c] = True
                    raise
                y[0, c] = self._head(c, x)
        y = np.asarray(y[..., :f.planned.horizon], dtype=np.float32)
        q = None
        if levels is not None:
            from alignts.runtime.conformal import conformal_quantiles

            q = conformal_quantiles(y, a, f.cfg.conformal, levels, bundle=str(f.bundle_dir))
        return f._result(a, y, y.copy(), q, levels), reanchored

    def _check_plan(self) -> None:
        if self.f._lm is not self.model or not self.model._model:
            raise InputError("the forecaster was re-planned after this stream was made; its KV cache read the "
                             "closed model. Fix: make a new stream (or restore its saved state) after plan().")

    # ------------------------------------------------------------------------------------------------ cache
    def _z(self, c: int, x: np.ndarray) -> np.ndarray:
        """The window under channel c's frozen statistics, float32 (the arithmetic of norm_patchify)."""
        return ((x - self.mean[c]) / self.std[c]).astype(np.float32)

    def _embed(self, patches: np.ndarray) -> np.ndarray:
        f = self.f
        return np.ascontiguousarray(patches @ f._patch_w.T + f._patch_b, dtype=np.float32)

    def _advance(self, c: int, x: np.ndarray, t_end: int) -> bool:
        """Bring channel c's cache to the window ending at t_end without an anchor; False: an anchor is needed."""
        if not self.anchored[c] or self.need_anchor[c]:
            return False
        k = int(t_end - self.t_last[c])
        if k == 0:
            return True
        m, rest = divmod(k, self.stride)
        N = self.N
        if k < 0 or rest or m > N - 2 or self.since[c] + m >= N - 1:
            return False
        mean, std = x.mean(), np.sqrt(x.var() + self.eps)  # the window's own (norm_patchify's formula)
        if abs(mean - self.mean[c]) > STAT_TOL * self.std[c] or abs(std / self.std[c] - 1.0) > STAT_TOL:
            return False
        z = self._z(c, x)
        new = z[-k:]
        if new.min() < self.zlo[c] - MARGIN or new.max() > self.zhi[c] + MARGIN:
            return False
        fresh = patchify(z, self.P, self.stride)[N - 1 - m:]  # the m new real patches + the padded last one
        keep = N - 1 - m
        self.kv.seq_rm(c, int(self.pos[c, 0]), int(self.pos[c, m]))  # the m oldest
        self.kv.seq_rm(c, int(self.pos[c, N - 1]), -1)  # the padded patch
        if self.next_pos[c] + m + 1 > self.pos_limit:
            self._shift(c, m)
        p0 = int(self.pos[c, N - 1])  # the padded token's position is free again
        hid = self.kv.decode_embd(self._embed(fresh), np.arange(p0, p0 + m + 1), c)
        self.hid[c, :keep] = self.hid[c, m:N - 1]
        self.hid[c, keep:] = hid
        self.pos[c, :keep] = self.pos[c, m:N - 1]
        self.pos[c, keep:] = np.arange(p0, p0 + m + 1)
        self.next_pos[c] = p0 + m + 1
        self.t_last[c] = t_end
        self.since[c] += m
        self.patches_fed += m + 1
        return True

    def _shift(self, c: int, m: int) -> None:
        """Move channel c's kept tokens (pos[m:N-1]) down to start at 0 (rotary keys are re-rotated)."""
        first = int(self.pos[c, m])
        self.kv.seq_add(c, first, -1, -first)
        self.pos[c] -= first
        self.next_pos[c] -= first
        self.n_shifts += 1

    def _anchor(self, c: int, x: np.ndarray, t_end: int) -> None:
        """The batch path for channel c: instance statistics of the window, every patch decoded at 0..N-1."""
        patches, mean, std = norm_patchify(x.astype(np.float32)[None], self.P, self.stride, self.eps)
        self.mean[c], self.std[c] = float(mean[0, 0]), float(std[0, 0])
        z = self._z(c, x)
        self.zlo[c], self.zhi[c] = float(z.min()), float(z.max())
        self.kv.seq_rm(c, -1, -1)
        N = self.N
        self.hid[c] = self.kv.decode_embd(self._embed(patches[0]), np.arange(N), c)
        self.pos[c] = np.arange(N)
        self.next_pos[c] = N
        self.t_last[c] = t_end
        self.since[c] = 0
        self.anchored[c] = True
        self.need_anchor[c] = False
        self.n_anchors += 1
        self.patches_fed += N

    def _head(self, c: int, x: np.ndarray) -> np.ndarray:
        """Internal's flatten head on channel c's hidden states (+ the linear skip), de-normalized."""
        f = self.f
        y = self.hid[c].reshape(-1) @ f._head_w.T + f._head_b
        if f._skip is not None:
            y = y + self._z(c, x) @ f._skip[0].T + f._skip[1]
        return y.astype(np.float64) * self.std[c] + self.mean[c]

    # ------------------------------------------------------------------------------------------------ state
    _ARRAYS = ("mean", "std", "zlo", "zhi", "hid", "pos", "next_pos", "t_last", "since", "anchored", "need_anchor")
    _COUNTERS = ("n_anchors", "n_shifts", "patches_fed")

    @contextlib.contextmanager
    def _guard(self):
        with self.model.lock:  # a re-plan closes the weights this stream's context reads: not meanwhile
            self._check_plan()
            yield
