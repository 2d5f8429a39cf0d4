"""Cheap baselines that every accuracy table carries beside the LLM paradigms (numpy only).

- ``last_value``: repeat the last context value (the published "Repeat" row).
- ``seasonal_naive``: repeat the last season (period from the data's frequency, or ``period=``).
- ``dlinear``: DLinear (Zeng et al. 2023) as published: a moving-average decomposition (kernel 25,
  replicate padding) into trend and remainder, one linear map L -> H on each, summed; channel-independent
  and shared across channels. The model is linear in its input, so instead of Adam we fit it in closed form
  by ridge least squares on every train window of every channel; this is the trained optimum up to the
  (small) ridge term.
- ``ridge``: a ridge map L -> H with per-window mean removal (subtract the context mean from context and
  target, add it back to the forecast), also closed form.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from alignts.data.freq import seasonal_period
from alignts.errors import InputError, ShapeError

log = logging.getLogger(__name__)

BASELINES = ("last_value", "seasonal_naive", "dlinear", "ridge")
DLINEAR_KERNEL = 25
# Ridge strength relative to the mean diagonal of the (centered) Gram matrix; scale-free across datasets.
DEFAULT_ALPHA = {"dlinear": 1e-4, "ridge": 1e-3}


def _check_x(x: np.ndarray, L: int, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] != L:
        raise ShapeError(f"{name}.predict expects x [B, C, L={L}]; got shape {x.shape}. "
                         "Fix: pass windows of the context length the baseline was fitted for.")
    return x


def _dtype(x: np.ndarray) -> type:
    """float32 in, float32 out (the evaluation windows are float32); anything else computes in float64."""
    return np.float32 if x.dtype == np.float32 else np.float64


def _affine(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``x [B, C, L] @ weight [L, H] + bias`` as one 2-D GEMM (a stacked matmul makes B*C tiny GEMM calls,
    which is many times slower with a threaded BLAS)."""
    B, C, L = x.shape
    y = np.ascontiguousarray(x).reshape(B * C, L) @ weight
    y += bias
    return y.reshape(B, C, -1)


@dataclass(frozen=True)
class LastValue:
    """Repeat the last observed context value ``H`` times."""

    context_len: int
    horizon: int
    name: str = "last_value"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``x [B, C, L] -> [B, C, H]``."""
        x = _check_x(x, self.context_len, self.name)
        return np.repeat(x[..., -1:], self.horizon, axis=-1)


@dataclass(frozen=True)
class SeasonalNaive:
    """Repeat the last ``period`` context values: ``y[h] = x[L - period + h % period]``."""

    context_len: int
    horizon: int
    period: int
    name: str = "seasonal_naive"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``x [B, C, L] -> [B, C, H]``."""
        x = _check_x(x, self.context_len, self.name)
        idx = self.context_len - self.period + np.arange(self.horizon) % self.period
        return x[..., idx]


@dataclass(frozen=True)
class LinearBaseline:
    """An affine map of the context, ``y = x @ weight + bias`` (DLinear's two maps folded into one)."""

    context_len: int
    horizon: int
    weight: np.ndarray  # [L, H]
    bias: np.ndarray  # [H]
    alpha: float
    name: str = "dlinear"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``x [B, C, L] -> [B, C, H]``."""
        x = _check_x(x, self.context_len, self.name)
        dt = _dtype(x)
        return _affine(x.astype(dt, copy=False), self.weight.astype(dt), self.bias.astype(dt))


@dataclass(frozen=True)
class RidgeBaseline:
    """Ridge map with per-window mean removal: ``y = (x - mean(x)) @ weight + bias + mean(x)``."""

    context_len: int
    horizon: int
    weight: np.ndarray  # [L, H]
    bias: np.ndarray  # [H]
    alpha: float
    name: str = "ridge"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``x [B, C, L] -> [B, C, H]``."""
        x = _check_x(x, self.context_len, self.name)
        dt = _dtype(x)
        xd = x.astype(dt, copy=False)
        m = xd.mean(axis=-1, keepdims=True)  # [B, C, 1]
        return _affine(xd - m, self.weight.astype(dt), self.bias.astype(dt)) + m


Baseline = LastValue | SeasonalNaive | LinearBaseline | RidgeBaseline


def moving_average_matrix(L: int, kernel: int = DLINEAR_KERNEL) -> np.ndarray:
    """``A [L, L]`` with ``trend = x @ A.T``: DLinear's moving average, replicate-padded by (kernel-1)//2
    at both ends, stride 1 (an odd kernel keeps the length)."""
    if kernel < 1 or kernel % 2 == 0:
        raise InputError(f"the moving-average kernel must be odd and >= 1; got {kernel}.")
    pad = (kernel - 1) // 2
    A = np.zeros((L, L))
    for t in range(L):
        src = np.clip(np.arange(t - pad, t + pad + 1), 0, L - 1)
        np.add.at(A[t], src, 1.0 / kernel)
    return A


def window_gram(series: np.ndarray, K: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Sums over every length-``K`` window ``w`` of a 1-D ``series [T]``: ``(n, sum w [K], sum w^T w [K, K])``.

    Uses the shift structure of sliding windows (``G[i+1, j+1] = G[i, j] - a_i a_j + a_{N+i} a_{N+j}``), so it
    costs O(T K + K^2) instead of O(T K^2) for the explicit window matrix.
    """
    a = np.asarray(series, dtype=np.float64)
    n = a.size - K + 1
    if n < 1:
        raise InputError(f"a series of {a.size} rows holds no window of {K} rows. Fix: use more data.")
    c = np.concatenate([[0.0], np.cumsum(a)])
    s = c[n:n + K] - c[:K]  # s[j] = sum_t a[t + j]
    # First row G[0, d] = sum_{t<n} a[t] a[t+d] for all d at once by FFT cross-correlation (K separate dot
    # products are slow with a threaded BLAS on a busy machine); size >= T so nothing wraps around.
    size = 1 << int(np.ceil(np.log2(a.size)))
    row0 = np.fft.irfft(np.conj(np.fft.rfft(a[:n], size)) * np.fft.rfft(a, size), size)[:K]
    G = np.empty((K, K))
    for d in range(K):
        m = K - d
        first = row0[d]
        # G[i, i+d] = G[0, d] + sum_{k<i} (a[n+k] a[n+k+d] - a[k] a[k+d])
        delta = a[n:n + m - 1] * a[n + d:n + d + m - 1] - a[:m - 1] * a[d:d + m - 1]
        diag = np.empty(m)
        diag[0] = first
        np.cumsum(delta, out=diag[1:])
        diag[1:] += first
        idx = np.arange(m)
        G[idx, idx + d] = diag
        G[idx + d, idx] = diag
    return n, s, G


def _gram(train: np.ndarray, L: int, H: int, demean: bool):
    """Sums over every train window of every channel: (n, sum_x [L], sum_y [H], X^T X [L, L], X^T Y [L, H])."""
    K = L + H
    n_all, s_all, g_all = 0, np.zeros(K), np.zeros((K, K))
    for c in range(train.shape[1]):
        n, s, G = window_gram(train[:, c], K)
        n_all, s_all, g_all = n_all + n, s_all + s, g_all + G
    if demean:
        # Mean removal is linear in the window: w' = w @ Q, x' = x - mean(x), y' = y - mean(x).
        Q = np.eye(K)
        Q[:L, :L] -= 1.0 / L
        Q[:L, L:] = -1.0 / L
        s_all, g_all = s_all @ Q, Q.T @ g_all @ Q
    return n_all, s_all[:L], s_all[L:], g_all[:L, :L], g_all[:L, L:]


def _ridge_solve(n: int, sx, sy, xx, xy, basis: np.ndarray, alpha: float):
    """Ridge with an unpenalized bias on features ``F = X @ basis``; returns the map on X and the bias."""
    mx, my = sx / n, sy / n
    cxx = xx / n - np.outer(mx, mx)  # [L, L] covariance of X
    cxy = xy / n - np.outer(mx, my)  # [L, H]
    cff = basis.T @ cxx @ basis  # [F, F]
    cfy = basis.T @ cxy  # [F, H]
    lam = alpha * max(float(np.trace(cff)) / cff.shape[0], 1e-12)
    w = np.linalg.solve(cff + lam * np.eye(cff.shape[0]), cfy)  # [F, H]
    weight = basis @ w  # [L, H]
    bias = my - mx @ weight
    return weight, bias


def fit_baseline(name: str, train_arr: np.ndarray, L: int, H: int, period: int | None = None,
                 freq: str | None = None, alpha: float | None = None) -> Baseline:
    """Fit one of ``BASELINES`` on a scaled train segment ``[T, C]`` for context ``L`` and horizon ``H``.

    ``period`` (seasonal naive) defaults to the one of ``freq`` (``alignts.data.freq.seasonal_period``).
    ``alpha`` is the ridge strength relative to the mean feature variance (``DEFAULT_ALPHA``).
    """
    if name not in BASELINES:
        raise InputError(f"unknown baseline {name!r}; expected one of {BASELINES}.")
    train_arr = np.asarray(train_arr)
    if train_arr.ndim != 2:
        raise ShapeError(f"train_arr must be [T, C]; got {train_arr.shape}. Fix: use arr[:, None] for one series.")
    if name == "last_value":
        return LastValue(L, H)
    if name == "seasonal_naive":
        m = int(period) if period is not None else seasonal_period(freq)
        if not 1 <= m <= L:
            raise InputError(f"seasonal naive needs 1 <= period <= context length; got period {m}, L={L}. "
                             "Fix: use a longer context or pass a smaller period.")
        return SeasonalNaive(L, H, m)
    if not np.isfinite(train_arr).all():
        raise InputError(f"{name}: the train segment holds NaN/inf. Fix: build it with make_splits (fills gaps).")
    a = DEFAULT_ALPHA[name] if alpha is None else float(alpha)
    if name == "dlinear":
        A = moving_average_matrix(L)
        basis = np.concatenate([(np.eye(L) - A).T, A.T], axis=1)  # [L, 2L]: remainder and trend features
        weight, bias = _ridge_solve(*_gram(train_arr, L, H, demean=False), basis, a)
        return LinearBaseline(L, H, weight, bias, a)
    weight, bias = _ridge_solve(*_gram(train_arr, L, H, demean=True), np.eye(L), a)
    return RidgeBaseline(L, H, weight, bias, a)
