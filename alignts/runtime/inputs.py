"""Input and output checks of the forecast contract (torch-free): what ``Forecaster.prepare`` refuses and why.

The models compute in float32: a context must be real, finite, within float32's range and not underflow it;
the training scaler must not overflow or flatten a series; every forecast must be finite.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from alignts.errors import InputError, NonFiniteOutputError, ShapeError

_F32 = np.finfo(np.float32)
_FIX_RESCALE = ("Fix: rescale the series (e.g. multiply or divide by a power of 10, or subtract its mean) and "
                "undo that on the forecast.")


def as_float_array(x: Any) -> np.ndarray:
    """``x`` as a float64 ndarray, without losing information silently: masked entries (numpy masked
    arrays) become NaN; complex, text, date, object and mapping inputs raise InputError."""
    if isinstance(x, Mapping):
        raise InputError(f"expected an array [B, C, L], [C, L] or a DataFrame; got a {type(x).__name__} with "
                         f"keys {list(x)[:5]}. Fix: stack the series, e.g. np.stack([d[k] for k in keys])[None].")
    if hasattr(x, "select_dtypes") and hasattr(x, "columns"):  # pandas.DataFrame: rows = time
        num = x.select_dtypes("number")
        if any(getattr(dt, "kind", "") == "c" for dt in num.dtypes):
            raise InputError("the DataFrame has complex columns; expected real numbers. Fix: pass the real "
                             "part (or the magnitude) explicitly.")
        return num.to_numpy(dtype=np.float64, na_value=np.nan).T[None]
    mask = np.ma.getmask(x) if isinstance(x, np.ma.MaskedArray) else np.ma.nomask
    try:
        a = np.asarray(np.ma.getdata(x))
        if a.dtype.kind == "c" or (a.dtype.kind == "O" and any(isinstance(v, (complex, np.complexfloating))
                                                                for v in a.flat)):
            raise InputError(f"x is complex (dtype {a.dtype}); expected real numbers (the imaginary part would "
                             "be dropped). Fix: pass the real part (or the magnitude) explicitly.")
        if a.dtype.kind not in "biufO":
            raise InputError(f"x has dtype {a.dtype} (kind {a.dtype.kind!r}); expected real numbers. "
                             "Fix: convert the values to float first.")
        a = a.astype(np.float64)
    except InputError:
        raise
    except (TypeError, ValueError, OverflowError) as e:  # ragged lists, text in object arrays, ints past float64
        raise InputError(f"x cannot be read as an array of real numbers ({type(e).__name__}: {e}); expected "
                         "[B, C, L] numbers with equal lengths. Fix: pad or cut the series to one length "
                         "(or forecast them one by one) and pass numbers, NaN for missing.") from None
    if mask is not np.ma.nomask:
        a = np.where(np.broadcast_to(mask, a.shape), np.nan, a)
    return a


def as_series(v: Any, i: int) -> np.ndarray:
    """Element ``i`` of a list of series: ``[C, T_i]`` (or ``[T_i]``: one channel) -> float64 ``[C, T_i]``."""
    a = as_float_array(v)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ShapeError(f"series {i} has shape {a.shape}; expected [C, T] or [T] (a list holds one series per "
                         "element). Fix: pass a list of [C, T_i] arrays, or one [B, C, T] array.")
    return a


def check_float32_range(a: np.ndarray) -> None:
    """The float32 part of :meth:`Forecaster.prepare`'s rule on finite ``a [B, C, L]`` (float64)."""
    big = np.abs(a) > _F32.max
    if big.any():
        b, c, t = np.argwhere(big)[0]
        raise InputError(f"the context holds {float(a[b, c, t])!r} at (b={b}, c={c}, t={t - a.shape[2]}) "
                         f"({int(big.sum())} value(s) outside float32's range); expected |x| <= {_F32.max:.3g} "
                         f"(the models compute in float32). {_FIX_RESCALE}")
    mag = np.abs(a).max(axis=2)  # [B, C]
    tiny = (mag > 0) & (mag < _F32.tiny)
    if tiny.any():
        b, c = np.argwhere(tiny)[0]
        raise InputError(f"series (b={b}, c={c}) has magnitude max|x| = {float(mag[b, c])!r}, below float32's "
                         f"smallest normal number {_F32.tiny:.3g} ({int(tiny.sum())} series in all): the models "
                         "compute in float32, where these values underflow to 0 and the forecast would be meaningless. "
                         f"{_FIX_RESCALE}")


def check_scaled(raw: np.ndarray, scaled: np.ndarray, scaler: Mapping[str, Any]) -> None:
    """Refuse what the training scaler destroys in ``raw [..., C, T]`` -> ``scaled``: finite values that
    overflow, and series that float32 can represent but that are constant in float32 after scaling."""
    lost = np.isfinite(raw) & ~np.isfinite(scaled)
    if lost.any():
        pos = tuple(int(i) for i in np.argwhere(lost)[0])
        raise InputError(f"value {float(raw[pos])!r} at index {pos} overflows when the bundle's training scaler is "
                         f"applied ({int(lost.sum())} value(s)); expected values near the training data's scale. "
                         f"{_FIX_RESCALE}")
    if raw.ndim == 0 or raw.shape[-1] < 2:
        return
    import warnings

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series: their checks are NaN (False)
        span = np.nanmax(raw, axis=-1) - np.nanmin(raw, axis=-1)
        mag = np.nanmax(np.abs(raw), axis=-1)
        s32 = scaled.astype(np.float32)
        span32 = np.nanmax(s32, axis=-1) - np.nanmin(s32, axis=-1)
        erased = (span > _F32.eps * mag) & (span32 == 0)
    if erased.any():
        pos = tuple(int(i) for i in np.argwhere(erased)[0])
        c = pos[-1] if pos else 0
        mean, std = (np.asarray(scaler[k], dtype=np.float64).reshape(-1) for k in ("mean", "std"))
        m, sd = mean[min(c, mean.size - 1)], std[min(c, std.size - 1)]
        raise InputError(f"series at index {pos} varies (range {float(span[pos])!r}, magnitude "
                         f"{float(mag[pos])!r}) but is constant in float32 after the bundle's training scaler (mean "
                         f"{m:.4g}, std {sd:.4g}): the models would see a flat line. Expected values near the training "
                         f"data's scale. {_FIX_RESCALE}")


def check_finite_forecast(y: np.ndarray, context: np.ndarray | None = None, where: str = "") -> None:
    """NonFiniteOutputError when the forecast ``y [B, C, H]`` holds NaN/inf, naming where and the input's range."""
    y = np.asarray(y)
    bad = ~np.isfinite(y)
    if not bad.any():
        return
    pos = tuple(int(i) for i in np.argwhere(bad)[0])
    span = ""
    if context is not None and context.ndim == y.ndim and context.size:
        row = context[pos[:-1]]
        span = f" The input series there spans [{float(row.min()):.4g}, {float(row.max()):.4g}]."
    raise NonFiniteOutputError(
        f"the forecast {where + ' ' if where else ''}has {int(bad.sum())} NaN/inf value(s) of {y.size}, e.g. "
        f"{float(y[pos])} at index {pos}; expected finite numbers.{span} Fix: if the input is extreme (|x| beyond "
        "about 1e19 overflows float32 statistics), rescale it; otherwise the bundle is broken (NaN/inf weights or "
        "normalization settings): check it with `alignts inspect` and re-export it.")
