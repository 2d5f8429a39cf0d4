"""The accuracy gate of quantized variants: the forecast error a variant adds on held-out validation windows.

One gate for ``alignts fit`` and ``alignts quantize`` (they used to disagree: fit bounded the relative max abs
diff of the normalized core on random patches at 0.05, quantize the end-to-end one at 0.5, and neither says what
a user loses). A variant is judged by

    rel_mse_change = (MSE(variant) - MSE(reference)) / MSE(reference)

on the same validation windows (at most ``GATE_WINDOWS``, evenly spaced over the split, every channel; targets
that were missing are not scored), in the scaled space the model is trained and scored in (the training
StandardScaler; ``forecast_scaled``). The reference is the bundle's fp32 variant of the same model (onnx-fp32,
else gguf-f32). A variant is kept when ``rel_mse_change <= max_rel_mse_change`` (default
``MAX_REL_MSE_CHANGE`` = 1 %: the same bound the speed targets of issue #13 are stated at; a change smaller
than the sampling noise of a validation MSE, so what passes forecasts as well as fp32) and its forecasts are
finite; a variant that scores better than the reference (a negative change) passes.

The record goes into ``Variant.accuracy`` (see :func:`accuracy_record`); the planner
(``alignts.runtime.budget.rank_variants``) ranks the variants within the gate by the time each took to forecast
the gate's windows (``ms_per_series``), so that it picks the fastest one that keeps the accuracy. Each variant's
max abs diff against torch (fresh random inputs) stays in ``Variant.validation``: it is the export's fidelity
number, not the gate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from alignts.errors import InputError
from alignts.runtime.threads import cpu_label

log = logging.getLogger(__name__)

MAX_REL_MSE_CHANGE = 0.01
GATE_WINDOWS = 128
GATE_BATCH = 8  # windows per forecast call while judging (x C channel series)
CALIBRATION_WINDOWS = 64  # training windows for static int8 calibration (x C channel series)


def check_threshold(value: float) -> float:
    """``value`` as a float if it is a usable gate threshold (finite, >= 0); InputError otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or v < 0:
        raise InputError(f"max relative MSE change {value!r}: expected a finite number >= 0, e.g. 0.01 for 1 %.")
    return v


@dataclass(frozen=True)
class GateWindows:
    """The validation windows a gate scores: ``x [n, C, L]`` float32, ``y [n, C, H]``, ``use [n, C, H]`` (None:
    every target observed)."""

    x: np.ndarray
    y: np.ndarray
    use: np.ndarray | None
    split: str = "val"

    @property
    def n_windows(self) -> int:
        return int(self.x.shape[0])


def gate_windows(splits, context_len: int, horizon: int, max_windows: int = GATE_WINDOWS,
                 split: str = "val") -> GateWindows:
    """At most ``max_windows`` windows of ``split``, evenly spaced (the same windows for fit and quantize)."""
    from alignts.eval.evaluate import split_windows, window_batches

    if max_windows < 1:
        raise InputError(f"gate windows {max_windows}: expected >= 1.")
    n = split_windows(splits, split, context_len, horizon)[0].shape[0]
    index = np.unique(np.linspace(0, n - 1, min(n, max_windows)).round().astype(np.int64))
    _, batches = window_batches(splits, split, context_len, horizon, batch_size=len(index), index=index)
    b = next(iter(batches))
    return GateWindows(x=b.x, y=np.asarray(b.y, dtype=np.float64), use=b.use, split=split)


def data_splits(manifest, data: str | None):
    """The splits a bundle was fitted on: ``data`` (default the manifest's ``training.data``) loaded with the
    bundle's channels, split for its L and H. InputError naming the fix when there is no data to read."""
    from alignts.data.load import load_data
    from alignts.data.splits import make_splits
    from alignts.runtime.configs import runtime_config

    spec = data or (manifest.training or {}).get("data")
    if not spec:
        raise InputError("the accuracy gate scores validation windows of the bundle's data, and the manifest does "
                         "not say which data it was fitted on. Fix: pass --data DATA (the data given to fit).")
    cfg = runtime_config(manifest)
    columns = list(cfg.columns) if getattr(cfg, "columns", None) else None
    d = load_data(str(spec), columns=columns)
    splits = make_splits(d, int(cfg.context_len), int(cfg.horizon))
    sc = getattr(cfg, "scaler", None)
    if sc and not np.allclose(np.asarray(sc["mean"]), splits.mean, rtol=1e-4, atol=1e-6):
        log.warning("the training scaler of %s differs from the one of the bundle's manifest: is it the data the "
                    "bundle was fitted on?", spec)
    return splits


def score_variants(folder: str | os.PathLike, names: Sequence[str], windows: GateWindows,
                   threads: int | None = None, batch_size: int = GATE_BATCH) -> dict[str, dict[str, float]]:
    """MSE of each variant on ``windows`` through the runtime (``forecast_scaled``), and the time it took.

    Returns {name: {"mse", "n_series", "ms_per_series", "finite"}}; ``ms_per_series``: wall time of the
    forecast calls (``batch_size`` windows each, ``threads`` backend threads) over the series scored, a
    same-process, same-windows measure of the variants' relative speed.
    """
    from alignts.runtime import load

    f = load(folder, verify=False)
    x, y, use = windows.x, windows.y, windows.use
    n, C = x.shape[0], x.shape[1]
    out: dict[str, dict[str, float]] = {}
    for name in names:
        f.plan(variant=name, batch_size=min(batch_size, n), threads=threads)
        f.forecast_scaled(x[:1])  # warm-up: first-call allocations out of the timing
        preds, secs = [], 0.0
        for s in range(0, n, batch_size):
            t0 = time.perf_counter()
            preds.append(np.asarray(f.forecast_scaled(x[s:s + batch_size]), dtype=np.float64))
            secs += time.perf_counter() - t0
        pred = np.concatenate(preds)[..., :y.shape[-1]]
        err = (pred - y) ** 2
        finite = bool(np.isfinite(pred).all())
        mse = float(err[use].mean()) if use is not None else float(err.mean())
        out[name] = {"mse": mse if finite else math.inf, "n_series": int(n * C), "finite": finite,
                     "ms_per_series": secs * 1e3 / (n * C)}
        log.info("gate: %s val MSE %.5f (%.3f ms/series)", name, mse, out[name]["ms_per_series"])
    return out


def accuracy_record(score: Mapping[str, Any], reference: str, ref_score: Mapping[str, Any],
                    max_rel_mse_change: float, windows: GateWindows, threads: int | None,
                    batch_size: int = GATE_BATCH) -> dict[str, Any]:
    """The ``Variant.accuracy`` dict of one judged variant."""
    ref = float(ref_score["mse"])
    mse = float(score["mse"])
    rel = (mse - ref) / ref if ref > 0 and math.isfinite(mse) else (0.0 if mse == ref else math.inf)
    passed = bool(score.get("finite", True)) and math.isfinite(rel) and rel <= max_rel_mse_change
    return {"metric": "mse", "split": windows.split, "space": "scaled", "n_windows": windows.n_windows,
            "n_series": int(score["n_series"]), "mse": mse if math.isfinite(mse) else None, "reference": reference,
            "reference_mse": ref, "rel_mse_change": rel if math.isfinite(rel) else None,
            "max_rel_mse_change": float(max_rel_mse_change), "passed": passed,
            "ms_per_series": float(score["ms_per_series"]), "batch_size": int(batch_size),
            "threads": None if threads is None else int(threads), "cpu": cpu_label()}


def judge(folder: str | os.PathLike, names: Sequence[str], reference: str, windows: GateWindows,
          max_rel_mse_change: float = MAX_REL_MSE_CHANGE, threads: int | None = None) -> dict[str, dict[str, Any]]:
    """Score ``reference`` and ``names`` on ``windows``; returns {name: accuracy record} (the reference's own
    record included, its change 0). ``passed`` in each record is the gate's verdict."""
    thr = check_threshold(max_rel_mse_change)
    todo = [reference] + [n for n in names if n != reference]
    scores = score_variants(folder, todo, windows, threads=threads)
    if not scores[reference]["finite"]:
        raise InputError(f"the reference variant {reference} forecasts non-finite values on the validation "
                         "windows; nothing can be judged against it. Fix: re-fit the bundle.")
    return {n: accuracy_record(scores[n], reference, scores[reference], thr, windows, threads) for n in todo}


def verdict(record: Mapping[str, Any]) -> str:
    """One line for logs and the CLI: ``val MSE 0.512 vs 0.511 (+0.2 %, gate <= 1 %): kept``."""
    rel = record.get("rel_mse_change")
    change = "non-finite" if rel is None else f"{100 * rel:+.2f} %"
    mse = record.get("mse")
    return (f"val MSE {'nan' if mse is None else format(mse, '.4f')} vs {record['reference_mse']:.4f} of "
            f"{record['reference']} ({change}, gate <= {100 * record['max_rel_mse_change']:g} %): "
            + ("passed" if record["passed"] else "rejected"))


def calibration_patches(splits, cfg, n_windows: int = CALIBRATION_WINDOWS,
                        batch_series: int = 32) -> list[np.ndarray]:
    """Normalized patches ``[S, N, P]`` of training windows (evenly spaced, every channel), in batches of
    ``batch_series`` series: what the runtime feeds an Internal core, for static int8 calibration. ``cfg``: the
    bundle's runtime config (context_len, horizon, patch_len, stride, eps)."""
    from alignts.data.splits import window_view
    from alignts.kernels.patch import norm_patchify

    L, H = int(cfg.context_len), int(cfg.horizon)
    view = window_view(np.asarray(splits.train), L, H)
    n = view.shape[0]
    if n < 1:
        raise InputError(f"the training split has no window of L={L} + H={H}; expected at least one for the "
                         "static int8 calibration.")
    idx = np.unique(np.linspace(0, n - 1, min(n, n_windows)).round().astype(np.int64))
    x = np.ascontiguousarray(view[idx][..., :L], dtype=np.float64).reshape(-1, L)  # [S, L]
    patches, _, _ = norm_patchify(x, int(cfg.patch_len), int(cfg.stride), float(cfg.eps))
    patches = np.ascontiguousarray(patches, dtype=np.float32)
    return [patches[s:s + batch_series] for s in range(0, len(patches), batch_series)]


# a staged candidate -> the variant name it competes for (the better by the gate is kept under that name)
ALTERNATIVES = {"onnx-int8-static": "onnx-int8"}


def select(variants: Sequence, records: Mapping[str, Mapping[str, Any]], optional: Iterable[str] = ()):
    """Apply the gate's verdicts: ``(kept variants with their accuracy record, {name: verdict line},
    {staged name: kept name})``.

    A variant named in ``optional`` (the new, quantized ones) that fails the gate is dropped; the others keep
    their place with the failing record (the planner ranks them last). Of two alternatives (``ALTERNATIVES``:
    static vs dynamic int8) the one with the smaller MSE change is kept, under the plain name. Variants without
    a record (their backend is not installed here) are kept as they are.
    """
    optional = set(optional)
    verdicts: dict[str, str] = {}
    kept = []
    for v in variants:
        r = records.get(v.name)
        if r is None:
            kept.append(v)
            continue
        verdicts[v.name] = verdict(r)
        if v.name in optional and not r["passed"]:
            continue
        kept.append(dataclasses.replace(v, accuracy=dict(r)))
    names = {v.name: v.name for v in kept}
    for alt, name in ALTERNATIVES.items():
        a = next((v for v in kept if v.name == alt), None)
        b = next((v for v in kept if v.name == name), None)
        if a is None:
            continue
        if b is None or a.accuracy["rel_mse_change"] < b.accuracy["rel_mse_change"]:
            if b is not None:
                kept.remove(b)
                del names[name]
                verdicts[name] += f"; {alt} is more accurate and is kept as {name}"
            kept[kept.index(a)] = dataclasses.replace(a, name=name)
            names[alt] = name
        else:
            kept.remove(a)
            del names[alt]
            verdicts[alt] += f"; {name} is as accurate or more and is kept"
    return kept, verdicts, names


# the variant the others are judged against, in order of preference: the bundle's float model
REFERENCE_DTYPES = (("onnx", "fp32"), ("gguf", "f32"), ("gguf", "f16"))


def reference_variant(manifest) -> str:
    """The name of the variant the others are judged against (``REFERENCE_DTYPES``: onnx-fp32, else gguf f32, else
    gguf f16), for quantize and :func:`rejudge` (fit judges against the onnx-fp32 it has just written)."""
    for backend, dtype in REFERENCE_DTYPES:
        for v in manifest.variants:
            if v.backend == backend and v.dtype == dtype:
                return v.name
    raise InputError(f"the bundle has no fp32 variant to judge the others against (it has "
                     f"{[v.name for v in manifest.variants]}). Fix: re-fit the bundle.")


def rejudge(folder: str | os.PathLike, data: str | None = None, max_rel_mse_change: float = MAX_REL_MSE_CHANGE,
            n_windows: int | None = None, threads: int | None = None, manifest=None) -> dict[str, dict[str, Any]]:
    """Judge every variant of an Internal or Bridging bundle whose backend is installed here, now, on this CPU
    (the records are returned, nothing is written). ``manifest``: the bundle's, when the caller has read it."""
    from alignts.runtime.budget import available_backends
    from alignts.runtime.configs import runtime_config
    from alignts.runtime.manifest import read_manifest

    m = manifest if manifest is not None else read_manifest(folder)
    if m.paradigm not in ("internal", "bridging"):
        raise InputError(f"{folder}: the accuracy gate judges Internal and Bridging variants; this bundle is "
                         f"{m.paradigm}. Fix: give an Internal or Bridging bundle.")
    cfg = runtime_config(m)
    windows = gate_windows(data_splits(m, data), int(cfg.context_len), int(cfg.horizon), n_windows or GATE_WINDOWS)
    have = set(available_backends())
    return judge(folder, [v.name for v in m.variants if v.backend in have], reference_variant(m), windows,
                 check_threshold(max_rel_mse_change), threads=threads)


def regate_bundle(folder: str | os.PathLike, data: str | None = None,
                  max_rel_mse_change: float = MAX_REL_MSE_CHANGE, n_windows: int | None = None,
                  threads: int | None = None):
    """:func:`rejudge` a bundle and write the new records into its manifest, in place (under
    :func:`alignts.runtime.manifest.bundle_lock`): the planner's order then follows this CPU and this llama.cpp /
    onnxruntime. No variant is added or dropped; one now over the gate keeps its place with the failing record
    (the planner ranks it last). Returns ``(manifest, {name: (old record or None, new record)})``."""
    from alignts.runtime.manifest import bundle_lock, read_manifest, write_manifest

    with bundle_lock(folder):
        m = read_manifest(folder)
        records = rejudge(folder, data, max_rel_mse_change, n_windows, threads, manifest=m)
        changes = {v.name: (dict(v.accuracy) or None, records[v.name]) for v in m.variants if v.name in records}
        m = dataclasses.replace(m, variants=[dataclasses.replace(v, accuracy=dict(records[v.name]))
                                             if v.name in records else v for v in m.variants])
        write_manifest(folder, m)
    return m, changes
