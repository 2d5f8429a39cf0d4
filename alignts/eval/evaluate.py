"""Scoring forecasters by the evaluation protocol of DESIGN.md.

- ``evaluate``: every test window (``drop_last=False``) of a split, on the scaled data, all channels,
  channel-independent; MSE and MAE, and with quantiles the coverage of the 80 % interval, WQL and CRPS
  (``forecaster_predict`` turns a planned forecaster into what it scores; ``window_batches`` is its loop
  over windows, shared with the calibration).
- ``baseline_table``: the cheap baselines (last value, seasonal naive, DLinear, ridge) on the same windows.
- ``format_table``: a markdown table, optionally with the published numbers (``PUBLISHED``) beside ours.
- ``holdout_eval``: Monash-style collections: forecast the last ``horizon`` values of each series from the
  history before them; MAE, MASE (per-series seasonal scaling) and sMAPE in the data's own units.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from alignts.data.freq import seasonal_period
from alignts.data.load import load_data
from alignts.data.series import TimeSeriesData, fill_missing
from alignts.data.splits import Splits, make_splits, n_windows, window_view
from alignts.errors import InputError, ShapeError
from alignts.eval.baselines import BASELINES, fit_baseline
from alignts.eval.metrics import QuantileScores, mase_scale
from alignts.runtime.configs import RuntimeConfig
from alignts.runtime.conformal import check_levels, conformal_quantiles

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray], np.ndarray]  # x [B, C, L] float32 -> [B, C, H] (or (point, quantiles))
EVAL_LEVELS = tuple(round(0.1 * i, 1) for i in range(1, 10))  # WQL levels of Chronos / GluonTS; 0.1..0.9 = 80 %

# Published numbers (MSE, MAE) keyed by (dataset, H); H "avg" is the mean over H = 96/192/336/720.
# L is the context length the paper used (None where the paper's table does not say one).
PUBLISHED: dict[tuple[str, int | str], dict[str, dict]] = {
    ("ETTh1", 96): {
        "Time-LLM": {"mse": 0.362, "mae": 0.392, "L": 512},
        "GPT4TS": {"mse": 0.376, "mae": 0.397, "L": 336},
        "PatchTST": {"mse": 0.370, "mae": 0.400, "L": 512},
        "DLinear": {"mse": 0.375, "mae": 0.399, "L": 336},
        "LLM4TS": {"mse": 0.372, "mae": 0.395, "L": None},
        "Repeat": {"mse": 1.294, "mae": 0.713, "L": None},
    },
    ("ETTh1", "avg"): {
        "Time-LLM": {"mse": 0.408, "mae": 0.423, "L": 512},
        "GPT4TS": {"mse": 0.427, "mae": 0.426, "L": 336},
        "PatchTST": {"mse": 0.413, "mae": 0.434, "L": 512},
        "DLinear": {"mse": 0.423, "mae": 0.437, "L": 336},
        "LLM4TS": {"mse": 0.405, "mae": 0.418, "L": None},
    },
    ("ETTm1", 96): {
        "Time-LLM": {"mse": 0.272, "mae": 0.334, "L": 512},
        "GPT4TS": {"mse": 0.292, "mae": 0.346, "L": 512},
        "PatchTST": {"mse": 0.293, "mae": 0.346, "L": 512},
        "DLinear": {"mse": 0.299, "mae": 0.343, "L": 336},
    },
}
# Few-shot 10 % (train_percent=10): MSE averaged over H = 96/192/336/720, LLM4TS paper (Chang et al.), Table 3a;
# the table gives no MAE here. Key: (dataset, "few-shot 10% avg").
FEW_SHOT_10 = {"ETTh1": (0.525, 0.590, 0.691, 0.633), "ETTh2": (0.366, 0.397, 0.605, 0.415),
               "ETTm1": (0.408, 0.464, 0.411, 0.501)}
for _name, _v in FEW_SHOT_10.items():
    PUBLISHED[(_name, "few-shot 10% avg")] = {
        m: {"mse": v, "mae": None, "L": None, "source": "LLM4TS Table 3a, 10% few-shot, avg over H"}
        for m, v in zip(("LLM4TS", "GPT4TS", "DLinear", "PatchTST"), _v)}
# Zero-shot ETTh1 -> ETTh2 (trained on ETTh1, scored on ETTh2's test split, each scaled by its own train split,
# L=512): Time-LLM paper (Jin et al., ICLR 2024) zero-shot table; the averages are its Table 4, the H=96 values
# are its full per-horizon zero-shot table as reproduced in a public repository (see results/zeroshot_etth1_etth2.md).
ZERO_SHOT_H1_H2 = {96: {"Time-LLM": (0.279, 0.337), "LLMTime": (0.510, 0.576), "GPT4TS": (0.335, 0.374),
                        "DLinear": (0.347, 0.400), "PatchTST": (0.304, 0.350)},
                   "avg": {"Time-LLM": (0.353, 0.387), "LLMTime": (0.992, 0.708), "GPT4TS": (0.406, 0.422),
                           "DLinear": (0.493, 0.488), "PatchTST": (0.380, 0.405)}}
for _h, _rows in ZERO_SHOT_H1_H2.items():
    PUBLISHED[("ETTh1->ETTh2", _h)] = {m: {"mse": v[0], "mae": v[1], "L": 512, "source": "Time-LLM zero-shot table"}
                                       for m, v in _rows.items()}
# Our row names -> the published row they correspond to.
PUBLISHED_ALIASES = {"last_value": "Repeat", "dlinear": "DLinear", "bridging": "Time-LLM",
                     "internal": "GPT4TS"}


def _segment(splits: Splits, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "val", "test"):
        raise InputError(f"split must be 'train', 'val' or 'test'; got {split!r}.")
    return getattr(splits, split), getattr(splits, f"{split}_mask")


def split_windows(splits: Splits, split: str, context_len: int, horizon: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Every window of a split: ``view [N, C, L+H]`` (read-only, no copy) and its observed-mask view, or None
    when every value is observed. The first target of a val/test window follows the split's border directly,
    whatever ``context_len`` (<= the splits' own) is."""
    L, H = int(context_len), int(horizon)
    if H < 1:
        raise InputError(f"evaluate needs a horizon >= 1; got {H}. Fix: pass horizon= or build the splits with it.")
    arr, mask = _segment(splits, split)
    if split != "train" and L != splits.context_len:
        # The val/test segments start splits.context_len rows before their border; a shorter context skips
        # the extra rows so that the first target still follows the border directly.
        if L > splits.context_len:
            raise InputError(f"context_len {L} exceeds the {splits.context_len} the splits were made for. "
                             f"Fix: make_splits(data, context_len={L}, ...).")
        arr, mask = arr[splits.context_len - L:], mask[splits.context_len - L:]
    if n_windows(arr.shape[0], L, H) == 0:
        raise InputError(f"the {split} split has {arr.shape[0]} rows, fewer than L + H = {L} + {H} = {L + H}: "
                         "no window to score. Fix: build the splits with this L and H (make_splits(data, L, H)).")
    return window_view(arr, L, H), (None if mask.all() else window_view(mask, L, H))


@dataclass(frozen=True)
class WindowBatch:
    """Windows ``index[start:start+B]`` of a split: what a forecaster gets and what it is scored on."""

    start: int
    x: np.ndarray  # [B, C, L] float32 context (scaled, gaps filled)
    y: np.ndarray  # [B, C, H] float64 targets
    use: np.ndarray | None  # [B, C, H] targets to score: observed, with an observed context; None = all
    dropped: int  # (window, channel) pairs whose context was entirely missing


def window_batches(splits: Splits, split: str, context_len: int, horizon: int, batch_size: int = 256,
                   index: np.ndarray | None = None, progress: bool = False) -> tuple[int, Iterator[WindowBatch]]:
    """(number of windows, an iterator of :class:`WindowBatch`) over the windows of a split (``index``: only
    these windows, in this order)."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1; got {batch_size}.")
    L = int(context_len)
    view, mview = split_windows(splits, split, L, horizon)
    idx = None if index is None else np.asarray(index)
    n = view.shape[0] if idx is None else len(idx)

    def gen():
        for s in tqdm(range(0, n, batch_size), desc=f"{split} windows", unit="batch", disable=not progress,
                      leave=False):
            rows = slice(s, s + batch_size) if index is None else idx[s:s + batch_size]
            w = view[rows]
            x = np.ascontiguousarray(w[..., :L], dtype=np.float32)
            if mview is None:
                yield WindowBatch(s, x, w[..., L:], None, 0)
                continue
            m = mview[rows]
            ok_ctx = m[..., :L].any(axis=-1)  # [B, C]
            yield WindowBatch(s, x, w[..., L:], m[..., L:] & ok_ctx[..., None], int((~ok_ctx).sum()))

    return n, gen()


def evaluate(predict: Predict, splits: Splits, context_len: int | None = None, horizon: int | None = None,
             batch_size: int = 256, progress: bool = True, split: str = "test",
             levels: Sequence[float] | None = None) -> dict:
    """Score ``predict`` on every window of a split (default the test split) of the scaled data.

    ``predict`` gets ``x [B, C, L]`` float32 (scaled, gaps filled) and returns ``[B, C, H]``; every channel
    of every window is scored (channel-independent). Targets that were missing are not scored, nor are
    (window, channel) pairs whose context was entirely missing (counted in ``n_dropped``).

    With ``levels`` (ascending, e.g. ``EVAL_LEVELS``), ``predict`` returns ``(point [B, C, H], quantiles
    [B, C, H, Q])`` (:func:`forecaster_predict` makes one) and the result adds ``wql``, ``crps`` and
    ``coverage`` of the interval between the lowest and highest level (``interval``; 0.1..0.9 is the 80 %
    interval).

    Returns ``dict(mse, mae, n_windows, n_dropped, n_scored, seconds, context_len, horizon, split)``;
    ``seconds`` is the wall time of the whole loop (predict calls included).
    """
    L = int(context_len if context_len is not None else splits.context_len)
    H = int(horizon if horizon is not None else splits.horizon)
    n, batches = window_batches(splits, split, L, H, batch_size, progress=progress)
    qs = QuantileScores(levels) if levels is not None else None
    sq, ab, count, dropped = 0.0, 0.0, 0, 0
    t0 = time.perf_counter()
    for b in batches:
        out = predict(b.x)
        p, q = out if qs is not None else (out, None)
        p = np.asarray(p)
        if p.shape != b.y.shape:
            raise ShapeError(f"the forecaster returned shape {p.shape} for x {b.x.shape}; expected {b.y.shape} "
                             "([B, C, H]). Fix: return one forecast of H steps per channel.")
        err = p.astype(np.float64, copy=False) - b.y
        e = err if b.use is None else err[b.use]
        if not np.isfinite(e).all():
            raise InputError(f"the forecaster returned NaN/inf for windows {b.start}..{b.start + len(b.x) - 1}. "
                             "Fix: check the model's output.")
        sq += float(np.sum(e * e))
        ab += float(np.sum(np.abs(e)))
        count += e.size
        dropped += b.dropped
        if qs is not None and e.size:
            qs.add(b.y, q, b.use)
    seconds = time.perf_counter() - t0
    if dropped:
        log.info("%s: %d (window, channel) pairs with an all-missing context were not scored", split, dropped)
    if count == 0:
        raise InputError(f"no observed target in the {split} split to score. Fix: check the data's missing values.")
    r = {"mse": sq / count, "mae": ab / count, "n_windows": n, "n_dropped": dropped, "n_scored": count,
         "seconds": seconds, "context_len": L, "horizon": H, "split": split}
    if qs is not None:
        r.update(wql=qs.wql, crps=qs.crps, coverage=qs.coverage,
                 interval=[float(qs.levels[0]), float(qs.levels[-1])], levels=qs.levels.tolist())
    return r


def bundle_splits(config: RuntimeConfig, data_spec: str, context_len: int, horizon: int, train_percent: int = 100):
    """(data, splits, same_scaler) for scoring a bundle on ``data_spec``: the bundle's columns, splits for its L
    and H scaled by this data's train split (the protocol; the train segment cut to ``train_percent``, the
    few-shot share the bundle was fitted on); ``same_scaler`` says whether that matches the bundle's training
    scaler (False: the bundle was fitted on other data)."""
    data = load_data(data_spec, columns=list(config.columns) if config.columns else None)
    splits = make_splits(data, context_len, horizon, train_percent=train_percent)
    sc = config.scaler
    same = not sc or bool(np.allclose(sc["mean"], splits.mean) and np.allclose(sc["std"], splits.std))
    return data, splits, same


def quantile_method(f) -> str:
    """How a planned forecaster gives quantiles: ``samples`` (Injective), ``conformal`` (a calibrated
    Internal/Bridging bundle) or ``none``."""
    method = getattr(f, "quantile_method", None)  # a runtime Forecaster says; duck-typed predictors do not
    if isinstance(method, str):
        return method
    if hasattr(f, "forecast_quantiles"):
        return "samples"
    return "conformal" if f.cfg.conformal else "none"


def forecaster_predict(f, levels: Sequence[float] | None = None) -> Predict:
    """``predict`` for :func:`evaluate` from a planned forecaster, on scaled windows.

    Without ``levels``: the point forecast ``[B, C, H]``. With ``levels``: ``(point, quantiles [B, C, H, Q])``,
    from the samples (Injective: the point is the sample median, LLMTime's) or from the bundle's conformal
    calibration (:func:`alignts.runtime.conformal.conformal_quantiles`; InputError when it has none).
    """
    if levels is None:
        return f.forecast_scaled
    lv = tuple(float(v) for v in check_levels(levels))
    if quantile_method(f) == "samples":
        def predict(x):
            q = f.forecast_quantiles(x, tuple(sorted(set(lv) | {0.5})))
            return q[0.5], np.stack([q[v] for v in lv], axis=-1)
    else:
        conformal = f.cfg.conformal

        def predict(x):
            p = f.forecast_scaled(x)
            return p, conformal_quantiles(p, x, conformal, lv, bundle=str(f.bundle_dir))
    return predict


def baseline_table(splits: Splits, L: int | None = None, H: int | None = None, period: int | None = None,
                   names: Sequence[str] = BASELINES, batch_size: int = 1024, progress: bool = False,
                   train: np.ndarray | None = None) -> dict:
    """Fit each baseline on the train split and score it like ``evaluate``: ``{name: {mse, mae, n_windows,
    seconds}}`` (seconds = fit + scoring). Seasonal naive is skipped, with a warning, when no period is
    known or it exceeds ``L``. ``train [T, C]``: fit on this segment instead of ``splits.train`` (zero-shot:
    the source data's train split, scaled by its own scaler)."""
    L = int(L if L is not None else splits.context_len)
    H = int(H if H is not None else splits.horizon)
    fit_on = splits.train if train is None else train
    rows: dict[str, dict] = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            model = fit_baseline(name, fit_on, L, H, period=period, freq=splits.freq)
        except InputError as e:
            if name == "seasonal_naive":
                log.warning("seasonal_naive skipped: %s", e)
                continue
            raise
        r = evaluate(model.predict, splits, L, H, batch_size=batch_size, progress=progress)
        rows[name] = {"mse": r["mse"], "mae": r["mae"], "n_windows": r["n_windows"],
                      "seconds": time.perf_counter() - t0}
        if name == "seasonal_naive":
            rows[name]["period"] = model.period
    return rows


def same_data(spec_a: str, spec_b: str) -> bool:
    """Whether two data specs name the same source (the same file, or the same ``statsmodels:NAME``)."""
    from pathlib import Path

    a, b = str(spec_a), str(spec_b)
    if a == b:
        return True
    if a.startswith("statsmodels:") or b.startswith("statsmodels:"):
        return False
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def baseline_train(training: Mapping, data_spec: str, splits: Splits,
                   columns=None) -> tuple[np.ndarray, str | None, str]:
    """The segment the baselines are fitted on for a bundle scored on ``data_spec``: ``(train [T, C], source,
    note)``; ``source`` is the source dataset's name for zero-shot transfer, else None.

    The same data as the bundle's training (``training["data"]``): ``splits.train`` cut to the bundle's
    ``train_percent`` (make the splits with it). Other data (zero-shot transfer): the source data's train
    split, cut the same way and scaled by the source's own scaler, so the baselines see what the bundle saw.
    When the source cannot be loaded here, ``splits.train`` is used and the note says so.
    """
    source = training.get("data")
    pct = int(training.get("train_percent") or 100)
    if not source or same_data(str(source), data_spec):
        return splits.train, None, f"fitted on {pct}% of this data's training windows"
    try:
        src = make_splits(load_data(str(source), columns=list(columns) if columns else None),
                          splits.context_len, splits.horizon, train_percent=pct)
    except Exception as e:  # a bundle fitted elsewhere: say what the baselines were fitted on instead
        log.warning("baselines: the bundle's source data %s could not be loaded (%s); fitting them on %s", source,
                    e, data_spec)
        return splits.train, None, f"fitted on this data (the bundle's source {source} is not readable here: {e})"
    return src.train, src.name, f"fitted on {pct}% of the source data's ({src.name}) training windows (zero-shot)"


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(rows: Mapping[str, Mapping], published: tuple[str, int | str] | None = None,
                 digits: int = 3) -> str:
    """A markdown table of ``{name: {mse, mae, n_windows, ...}}``.

    Rows scored with quantiles (``evaluate(..., levels=...)``) fill the columns coverage of their interval,
    WQL and CRPS, present when any row has them. With ``published=(dataset, H)`` (a key of ``PUBLISHED``), a
    ``published`` column shows the paper's MSE/MAE beside our rows that correspond to one
    (``PUBLISHED_ALIASES`` or the same name), and the other published systems follow as rows of their own.
    """
    pub = {}
    if published is not None:
        if published not in PUBLISHED:
            raise InputError(f"no published numbers for {published}; known: {sorted(PUBLISHED, key=str)}.")
        pub = dict(PUBLISHED[published])
    interval = next((r["interval"] for r in rows.values() if r.get("interval")), None)
    qcols = ([f"cov {round(100 * (interval[1] - interval[0]))}%", "WQL", "CRPS"] if interval else [])
    head = ["model", "MSE", "MAE"] + qcols + ["windows", "seconds"] + (["published MSE/MAE"] if published else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for name, r in rows.items():
        cells = [name, _fmt(r.get("mse"), digits), _fmt(r.get("mae"), digits)]
        if qcols:
            cells += [_fmt(r.get(k), digits) for k in ("coverage", "wql", "crps")]
        cells += [_fmt(r.get("n_windows")), _fmt(r.get("seconds"), 2)]
        if published:
            ref = PUBLISHED_ALIASES.get(name, name)
            p = pub.pop(ref, None)
            cells.append(f"{_pub(p)} ({ref})" if p else "")
        lines.append("| " + " | ".join(cells) + " |")
    for ref, p in pub.items():
        tag = f"{ref} (published{', L=' + str(p['L']) if p.get('L') else ''})"
        lines.append("| " + " | ".join([tag] + [""] * (len(head) - 2) + [_pub(p)]) + " |")
    return "\n".join(lines)


def _pub(p: Mapping) -> str:
    """``mse/mae`` of a published row (``mse/-`` where the paper gives no MAE)."""
    return f"{p['mse']:.3f}/" + (f"{p['mae']:.3f}" if p.get("mae") is not None else "-")


# ------------------------------------------------------------------------------------ holdout (Monash)

HistoryPredict = Callable[[list], object]  # list of [T_i] float64 histories -> [B, H] (array or list)


def holdout_eval(predict: HistoryPredict, data: TimeSeriesData, horizon: int | None = None,
                 context_len: int | None = None, period: int | None = None, batch_size: int = 64,
                 progress: bool = True, max_series: int | None = None, first_series: int = 0) -> dict:
    """Forecast the last ``horizon`` values of every series of a collection from the history before them.

    ``predict`` gets a list of 1-D float64 histories in the data's own units (leading padding removed,
    gaps filled by the missing-value policy, at most ``context_len`` long when given) and returns
    ``[B, H]``. ``horizon`` defaults to the dataset's own (Monash ``@horizon``); ``period`` (for MASE) to
    the seasonal period of its frequency. MASE uses each series' whole history for its scale (Monash
    convention); series whose target holds missing values, that are not longer than ``horizon``, or whose
    scale is 0 are left out of the respective metric and counted. ``first_series`` / ``max_series``: score the
    series from index ``first_series`` on, at most ``max_series`` of them (a held-out slice for validation).

    Returns ``dict(mae, mase, smape, n_series, n_skipped, n_mase_undefined, seconds, horizon, period)``;
    metrics are means over series.
    """
    H = int(horizon if horizon is not None else (data.horizon or 0))
    if H < 1:
        raise InputError(f"{data.name} has no forecast horizon of its own; pass horizon= (got {horizon}).")
    m = int(period) if period is not None else (seasonal_period(data.freq) if data.freq else 1)
    histories, targets, scales = [], [], []
    skipped = 0
    for i in range(first_series, data.n_channels):
        s = data.series(i)
        if s.size <= H or np.isnan(s[-H:]).any():
            skipped += 1
            continue
        hist = fill_missing(s[:-H])
        scales.append(mase_scale(s[:-H], m))
        histories.append(hist[-context_len:] if context_len else hist)
        targets.append(s[-H:])
        if max_series is not None and len(histories) >= max_series:
            break
    if not histories:
        raise InputError(f"no series of {data.name} is longer than the horizon {H} with an observed target. "
                         "Fix: use a smaller horizon.")
    if skipped:
        log.warning("%s: %d series skipped (not longer than H=%d, or missing target values)", data.name, skipped, H)
    preds = []
    t0 = time.perf_counter()
    for s in tqdm(range(0, len(histories), batch_size), desc=f"holdout {data.name}", unit="batch",
                  disable=not progress, leave=False):
        batch = histories[s:s + batch_size]
        p = np.asarray(predict(batch), dtype=np.float64)
        if p.shape != (len(batch), H):
            raise ShapeError(f"the forecaster returned shape {p.shape} for {len(batch)} histories; expected "
                             f"({len(batch)}, {H}). Fix: return H values per series.")
        preds.append(p)
    seconds = time.perf_counter() - t0
    pred = np.concatenate(preds)  # [S, H]
    true = np.stack(targets)  # [S, H]
    if not np.isfinite(pred).all():
        raise InputError("the forecaster returned NaN/inf. Fix: check the model's output.")
    abs_err = np.abs(pred - true).mean(axis=1)  # [S]
    den = np.abs(pred) + np.abs(true)
    smape_s = 200 * np.divide(np.abs(pred - true), den, out=np.zeros_like(den), where=den > 0).mean(axis=1)
    sc = np.asarray(scales)
    ok = np.isfinite(sc) & (sc > 0)
    return {"mae": float(abs_err.mean()), "mase": float((abs_err[ok] / sc[ok]).mean()) if ok.any() else float("nan"),
            "smape": float(smape_s.mean()), "n_series": len(histories), "n_skipped": skipped,
            "n_mase_undefined": int((~ok).sum()), "seconds": seconds, "horizon": H, "period": m}


def _last_value_histories(H: int) -> HistoryPredict:
    return lambda hs: np.stack([np.repeat(h[-1], H) for h in hs])


def _seasonal_naive_histories(H: int, m: int) -> HistoryPredict:
    def f(hs):
        out = []
        for h in hs:
            k = m if h.size >= m else 1
            out.append(h[h.size - k + np.arange(H) % k])
        return np.stack(out)
    return f


def holdout_baseline_table(data: TimeSeriesData, horizon: int | None = None, period: int | None = None) -> dict:
    """``holdout_eval`` of last value and seasonal naive (falls back to last value for series shorter than
    a period): ``{name: result}``."""
    H = int(horizon if horizon is not None else (data.horizon or 0))
    m = int(period) if period is not None else (seasonal_period(data.freq) if data.freq else 1)
    return {
        "last_value": holdout_eval(_last_value_histories(H), data, H, period=m, progress=False),
        "seasonal_naive": holdout_eval(_seasonal_naive_histories(H, m), data, H, period=m, progress=False),
    }
