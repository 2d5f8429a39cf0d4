"""The trade-off report: cost against accuracy for the three paradigms and the cheap baselines on one dataset.

``build_report(bench_result, data, out_dir)`` writes:

- ``report.md``: one table, a row per bundle variant (batch 1) and per baseline: parameters trained, training
  time (the manifest's ``training``), bundle size, peak resident memory (child process), latency p50, MSE/MAE
  on the scaled test split; below it a note per bundle whose model reads fewer context points than L (Injective
  keeps the last values that fit its LM's window: ``Plan.context_used``);
- ``frontier.png``: MSE against latency and against peak memory, with the Pareto frontier (lower-left is
  better);
- ``forecast.png``: one test window (last channel): the context tail, the truth, each model's forecast, and the
  80 % interval (q0.1..q0.9) where the model gives quantiles (Injective; calibrated Internal/Bridging);
- ``report.json``: the table's numbers.

The bench result is what :func:`alignts.bench.bundles.run_bench` returns (run with ``data`` set, so the rows
carry MSE/MAE); plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from alignts.errors import InputError, missing_extra

log = logging.getLogger(__name__)

BAND = (0.1, 0.9)  # the 80 % interval drawn around each forecast


def _plt():
    try:
        import matplotlib
    except ImportError as e:
        raise missing_extra("matplotlib", "bench") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bundle_bytes(bundle: str) -> int:
    from alignts.runtime.manifest import read_manifest

    m = read_manifest(bundle, verify=False)
    return int(sum(e.size for e in m.files.values()))


def _params_trained(paradigm: str, training: Mapping[str, Any]) -> int | None:
    """Parameters fitted for this bundle (Injective without LoRA fits none: the LM is used as shipped)."""
    n = training.get("trainable_params", training.get("n_trainable_params"))
    if n is None and paradigm == "injective" and training.get("trained") is False:
        return 0
    return n


def _training(result: Mapping[str, Any], bundle: str) -> dict[str, Any]:
    """The bench result's training facts of a bundle, completed from its manifest (the bench keeps a few keys;
    Injective's ``trained`` flag is not among them)."""
    from alignts.runtime.manifest import read_manifest

    t = {k: v for k, v in (result["bundles"].get(bundle, {}).get("training") or {}).items() if v is not None}
    full = {k: v for k, v in read_manifest(bundle, verify=False).training.items() if v is not None}
    return {**full, **t}


def _baseline_params(name: str, L: int, H: int) -> int:
    return {"last_value": 0, "seasonal_naive": 0, "dlinear": 2 * (L * H + H), "ridge": L * H + H}.get(name, 0)


def _splits(data: str, L: int, H: int, columns, max_windows: int | None):
    import dataclasses

    from alignts.data.load import load_data
    from alignts.data.splits import make_splits

    d = load_data(data, columns=columns or None)
    s = make_splits(d, L, H)
    if max_windows is not None:
        keep = L + H - 1 + max_windows
        s = dataclasses.replace(s, test=s.test[:keep], test_mask=s.test_mask[:keep])
    return d, s


def _context_used(r: Mapping[str, Any]) -> int:
    """Context points the bundle's model read in the bench (the row's ``context_used``, else planned here)."""
    if r.get("context_used") is not None:
        return int(r["context_used"])
    if r["paradigm"] != "injective":
        return int(r["context_len"])
    import alignts.runtime as rt

    f = rt.load(r["bundle"], verify=False)
    plan = f.plan(context_len=r["context_len"], horizon=r["horizon"], variant=r["variant"], batch_size=1, threads=1)
    close = getattr(f.backend, "close", None)
    if close is not None:
        close()
    return int(plan.context_used)


def report_rows(result: Mapping[str, Any], data: str, max_windows: int | None = None) -> list[dict[str, Any]]:
    """The report's table rows: bundle variants at their smallest batch size, then the baselines per (L, H).

    A bundle row's ``context_used`` is the context points its model read (< L for an Injective LM whose window
    holds fewer values next to the H it writes)."""
    from alignts.eval.baselines import BASELINES, fit_baseline
    from alignts.eval.evaluate import evaluate

    rows: list[dict[str, Any]] = []
    shapes: dict[tuple[int, int], Any] = {}
    seen = set()
    for r in sorted(result["rows"], key=lambda r: r["batch_size"]):
        key = (r["bundle"], r["variant"])
        if key in seen:
            continue
        seen.add(key)
        t = _training(result, r["bundle"])
        ablated = t.get("ablate_lm") not in (None, "none")  # the LM-removed twin (fit --ablate-lm) is marked
        rows.append({"model": f"{Path(r['bundle']).name}:{r['variant']}",
                     "kind": f"{r['paradigm']}, LM removed ({t['ablate_lm']})" if ablated else r["paradigm"],
                     "params_trained": _params_trained(r["paradigm"], t),
                     "train_s": t.get("train_wall_s", t.get("wall_s")), "bundle_bytes": _bundle_bytes(r["bundle"]),
                     "peak_rss_bytes": r.get("peak_rss_bytes"), "latency_ms": r.get("latency_p50_ms"),
                     "batch_size": r["batch_size"], "mse": r.get("mse"), "mae": r.get("mae"),
                     "n_windows": r.get("n_windows"), "L": r["context_len"], "H": r["horizon"],
                     "context_used": _context_used(r), "bundle": r["bundle"], "variant": r["variant"]})
        shapes.setdefault((r["context_len"], r["horizon"]), r["bundle"])
    for (L, H), b in shapes.items():
        from alignts.runtime.configs import runtime_config
        from alignts.runtime.manifest import read_manifest

        cols = runtime_config(read_manifest(b, verify=False)).columns
        d, s = _splits(data, L, H, cols, max_windows)
        for name in BASELINES:
            t0 = time.perf_counter()
            try:
                model = fit_baseline(name, s.train, L, H, freq=s.freq)
            except InputError as e:
                log.warning("baseline %s skipped: %s", name, e)
                continue
            fit_s = time.perf_counter() - t0
            ev = evaluate(model.predict, s, L, H, progress=False)
            x = np.ascontiguousarray(s.test[:L].T[None], dtype=np.float32)  # [1, C, L]
            lat = []
            for _ in range(20):
                t1 = time.perf_counter()
                model.predict(x)
                lat.append(time.perf_counter() - t1)
            rows.append({"model": f"{name} (L={L}, H={H})", "kind": "baseline",
                         "params_trained": _baseline_params(name, L, H), "train_s": fit_s, "bundle_bytes": None,
                         "peak_rss_bytes": None, "latency_ms": float(np.median(lat)) * 1e3, "batch_size": 1,
                         "mse": ev["mse"], "mae": ev["mae"], "n_windows": ev["n_windows"], "L": L, "H": H,
                         "context_used": L, "bundle": None, "variant": name})
    return rows


def context_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per bundle whose model read fewer context points than L, e.g. "Injective used the last 12 of
    336 values"."""
    out, seen = [], set()
    for r in rows:
        used = r.get("context_used")
        if r.get("bundle") is None or used is None or used >= r["L"] or (r["bundle"], used) in seen:
            continue
        seen.add((r["bundle"], used))
        out.append(f"{r['kind'].capitalize()} ({Path(r['bundle']).name}) used the last {used} of {r['L']} values: "
                   f"its LM's token window holds that many context values next to the {r['H']} it writes "
                   "(LLMTime's truncation); the baselines and other models read all "
                   f"{r['L']}.")
    return out


def _cell(v, fmt: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return format(v, fmt)


def rows_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ["model", "paradigm", "params trained", "train s", "bundle MB", "peak MiB", "latency ms (b=1)", "MSE",
            "MAE", "windows"]
    out = ["| " + " | ".join(head) + " |", "|---|---|" + "--:|" * (len(head) - 2)]
    for r in rows:
        out.append("| " + " | ".join([
            r["model"], r["kind"], _cell(r["params_trained"], ","), _cell(r["train_s"], ".1f"),
            _cell(None if r["bundle_bytes"] is None else r["bundle_bytes"] / 1e6, ".2f"),
            _cell(None if r["peak_rss_bytes"] is None else r["peak_rss_bytes"] / 2 ** 20, ".0f"),
            _cell(r["latency_ms"], ".3f"), _cell(r["mse"], ".3f"), _cell(r["mae"], ".3f"),
            _cell(r["n_windows"], "d")]) + " |")
    return "\n".join(out)


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    front, best = [], math.inf
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def frontier_plot(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """MSE vs latency and MSE vs peak memory, Pareto frontier drawn; returns the PNG path."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"internal": "tab:blue", "bridging": "tab:orange", "injective": "tab:green", "baseline": "tab:gray"}
    for ax, key, label, scale in ((axes[0], "latency_ms", "latency p50, batch 1 (ms, log)", 1.0),
                                  (axes[1], "peak_rss_bytes", "peak resident memory (MiB)", 2 ** 20)):
        pts = []
        for r in rows:
            if r.get(key) is None or r.get("mse") is None:
                continue
            x, y = r[key] / scale, r["mse"]
            pts.append((x, y))
            ax.scatter([x], [y], color=colors.get(r["kind"], "k"), zorder=3)
            ax.annotate(r["model"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if pts:
            fx, fy = zip(*_pareto(pts))
            ax.step(fx, fy, where="post", color="k", lw=0.8, alpha=0.6, label="Pareto frontier")
        if key == "latency_ms":
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("MSE (scaled test split)")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in colors.items()]
    axes[0].legend(handles=handles, fontsize=8)
    fig.suptitle("cost vs accuracy (lower-left is better)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def forecast_plot(rows: Sequence[Mapping[str, Any]], data: str, path: str | os.PathLike,
                  max_windows: int | None = None) -> Path:
    """One test window, last channel: context tail, truth, each bundle's forecast, 80 % interval when a model
    gives quantiles (Injective from its samples, a calibrated Internal/Bridging bundle from its conformal
    calibration); the baselines dashed."""
    import alignts.runtime as rt
    from alignts.eval.baselines import fit_baseline
    from alignts.eval.evaluate import forecaster_predict, quantile_method

    plt = _plt()
    bundles = [r for r in rows if r["bundle"]]
    if not bundles:
        raise InputError("the report needs at least one bundle row to plot a forecast.")
    L0, H0 = bundles[0]["L"], bundles[0]["H"]
    from alignts.runtime.configs import runtime_config
    from alignts.runtime.manifest import read_manifest

    cols = runtime_config(read_manifest(bundles[0]["bundle"], verify=False)).columns
    d, s = _splits(data, L0, H0, cols, None)
    c = s.test.shape[1] - 1
    start = max(0, min(s.test.shape[0] - L0 - H0, (s.test.shape[0] - L0 - H0) // 2))
    if max_windows is not None:
        start = min(start, max_windows - 1)
    ctx = s.test[start:start + L0].T[None].astype(np.float32)  # [1, C, L]
    truth = s.test[start + L0:start + L0 + H0, c]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    tail = min(L0, 3 * H0)
    t_ctx = np.arange(-tail, 0)
    ax.plot(t_ctx, ctx[0, c, -tail:], color="k", lw=1, label="context")
    ax.plot(np.arange(H0), truth, color="k", lw=1.5, ls=":", label="truth")
    for r in bundles:
        if (r["L"], r["H"]) != (L0, H0):
            continue
        f = rt.load(r["bundle"], verify=False)
        f.plan(variant=r["variant"], batch_size=1)
        if quantile_method(f) == "none":
            y = f.forecast_scaled(ctx)[0, c]
        else:
            p, q = forecaster_predict(f, BAND)(ctx)
            y = p[0, c]
            ax.fill_between(np.arange(H0), q[0, c, :, 0], q[0, c, :, 1], alpha=0.2, label=f"{r['model']} 80%")
        ax.plot(np.arange(len(y)), y, lw=1.2, label=r["model"])
    for name in ("last_value", "dlinear"):
        try:
            model = fit_baseline(name, s.train, L0, H0, freq=s.freq)
        except InputError:
            continue
        ax.plot(np.arange(H0), model.predict(ctx)[0, c], lw=1, ls="--", label=name)
    ax.axvline(0, color="gray", lw=0.5)
    ax.set_title(f"{d.name}, channel {d.columns[c] if d.columns else c}, test window {start} (scaled)")
    ax.set_xlabel("steps from forecast start")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_report(result: Mapping[str, Any], data: str, out_dir: str | os.PathLike,
                 max_windows: int | None = None) -> list[Path]:
    """Write report.md, report.json, frontier.png and forecast.png to ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = report_rows(result, data, max_windows)
    md = [f"# alignts trade-off report: {data}", "",
          f"machine: {result.get('machine', {}).get('cpu', '?')}, {result.get('machine', {}).get('cores', '?')} "
          "cores. MSE/MAE on the scaled test split "
          + (f"(first {max_windows} windows only)" if max_windows else "(every window)")
          + "; latency = p50 of one forecast call at batch 1; peak memory measured in a child process.", "",
          rows_markdown(rows), ""]
    notes = context_notes(rows)
    if notes:
        md += [f"- {n}" for n in notes] + [""]
    md += ["![frontier](frontier.png)", "", "![forecast](forecast.png)", ""]
    paths = [out / "report.md", out / "report.json"]
    paths[0].write_text("\n".join(md))
    paths[1].write_text(json.dumps({"data": data, "max_windows": max_windows, "rows": rows,
                                    "machine": result.get("machine"), "versions": result.get("versions")},
                                   indent=2, default=str) + "\n")
    paths.append(frontier_plot(rows, out / "frontier.png"))
    paths.append(forecast_plot(rows, data, out / "forecast.png", max_windows))
    return paths
