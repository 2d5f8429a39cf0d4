"""`alignts bench BUNDLE...`, the trade-off report, `alignts quantize`, and memory budgets checked against the
peak RSS of a child process, on a tiny Internal bundle fitted here with INTERNAL's pipeline."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from alignts.bench.bundles import COLUMNS, BenchConfig, bench_bundle  # noqa: E402
from alignts.cli.bench import add_bundle_arguments, run_bundles  # noqa: E402
from alignts.errors import BudgetExceededError, InputError  # noqa: E402
from alignts.runtime.budget import choose, estimate_peak, parse_budget, rank_variants  # noqa: E402
from alignts.runtime.manifest import read_manifest  # noqa: E402

DATA = "statsmodels:co2"
L, H = 32, 8


def _have_gguf() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    import torch

    from alignts.export.fit_internal import FitInternalConfig, fit_internal
    from alignts.export.internal import InternalConfig
    from alignts.export.train import TrainConfig

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench") / "tiny"
    fit_internal(FitInternalConfig(
        data=DATA, out=str(out), backbone="tiny-gpt2",
        model=InternalConfig(context_len=L, horizon=H, patch_len=8, stride=8, lora_rank=2, lora_alpha=4.0),
        train=TrainConfig(epochs=1, batch_size=16, max_train_windows=16, max_val_windows=8, threads=1),
        int8=True, gguf=_have_gguf(), gguf_dtypes=("f32",),
        max_rel_mse_change=1.0), command="test")  # a barely trained model: a lenient gate (tested elsewhere)
    return out


def _args(argv):
    p = argparse.ArgumentParser()
    p.add_argument("target", nargs="+")  # as alignts/cli/bench.py defines them
    p.add_argument("--json", default=None)
    p.add_argument("--repeats", type=int, default=5)
    add_bundle_arguments(p)
    return p.parse_args(argv)


def test_bench_writes_json_csv_markdown_with_every_column(tiny_bundle, tmp_path, capsys):
    args = _args([str(tiny_bundle), "--batch-sizes", "1,2", "--variants", "onnx-fp32,onnx-int8", "--repeats", "3",
                  "--warmup", "1", "--data", DATA, "--max-windows", "10", "--json", str(tmp_path / "b.json"),
                  "--csv", str(tmp_path / "b.csv"), "--md", str(tmp_path / "b.md"), "--report", str(tmp_path / "rep")])
    assert run_bundles(args) == 0
    res = json.loads((tmp_path / "b.json").read_text())
    assert {"machine", "versions", "bundles", "rows", "config"} <= set(res)
    assert len(res["bundles"][str(tiny_bundle)]["manifest_sha256"]) == 64
    rows = res["rows"]
    assert [(r["variant"], r["batch_size"]) for r in rows] == [("onnx-fp32", 1), ("onnx-fp32", 2),
                                                               ("onnx-int8", 1), ("onnx-int8", 2)]
    for r in rows:
        assert set(COLUMNS) <= set(r)
        for k in ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput_series_s", "cold_start_s",
                  "peak_rss_bytes", "est_peak_bytes", "mse", "mae"):
            assert r[k] is not None and r[k] > 0, k
        assert r["latency_p50_ms"] <= r["latency_p90_ms"] <= r["latency_p99_ms"]
        assert r["n_windows"] == 10
    with open(tmp_path / "b.csv") as fh:
        table = list(csv.reader(fh))
    assert table[0] == list(COLUMNS) and len(table) == 5
    md = (tmp_path / "b.md").read_text()
    assert md.count("| tiny |") == 4 and "p99 ms" in md and "peak MiB" in md
    # the report: one table with bundles and baselines, two plots
    rep = tmp_path / "rep"
    text = (rep / "report.md").read_text()
    for word in ("tiny:onnx-fp32", "last_value", "dlinear", "params trained", "peak MiB"):
        assert word in text
    for png in ("frontier.png", "forecast.png"):
        assert (rep / png).read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in capsys.readouterr().out


def test_torch_reference_gives_a_speedup_column(tiny_bundle):
    import torch

    from alignts.export.backbones import load_backbone
    from alignts.export.internal import InternalConfig, build_model

    model = build_model(load_backbone("tiny-gpt2"), InternalConfig(context_len=L, horizon=H, patch_len=8, stride=8,
                                                                   lora_rank=2, lora_alpha=4.0))
    model.core.fuse_lora()
    model.eval()

    def forward(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    rows = bench_bundle(tiny_bundle, BenchConfig(batch_sizes=(1,), variants=("onnx-fp32",), repeats=3, warmup=1,
                                                 child=False), torch_forward=forward)
    assert rows[0]["torch_p50_ms"] > 0
    assert rows[0]["speedup_vs_torch"] == pytest.approx(rows[0]["torch_p50_ms"] / rows[0]["latency_p50_ms"])


def test_round_robin_rotates_the_order_and_idles_before_each_call():
    """every call once a round, `repeats` rounds, each round starting one call later; the settle gap is idle time
    before each timed call, outside the timings"""
    import time

    from alignts.bench.bundles import _round_robin

    order: list[int] = []
    calls = [lambda i=i: order.append(i) for i in range(3)]
    t = _round_robin(calls, repeats=4, warmup=1, settle=0.0)
    assert t.shape == (3, 4) and (t >= 0).all()
    assert order[:3] == [0, 1, 2]  # the warm-up round
    assert order[3:] == [0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2]
    slow = [lambda: time.sleep(0.002)]
    s = time.perf_counter()
    t = _round_robin(slow, repeats=3, warmup=0, settle=0.02)
    assert time.perf_counter() - s >= 3 * 0.022
    assert t.max() < 0.02  # the gap is not in the timing


def test_rows_of_one_batch_share_the_torch_timing(tiny_bundle):
    """torch is timed once a round beside every variant and batch size: one p50 per batch size for every row"""
    import torch

    from alignts.export.reference import load_torch

    module = load_torch(tiny_bundle)

    def forward(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    rows = bench_bundle(tiny_bundle, BenchConfig(batch_sizes=(1, 2), variants=("onnx-fp32", "onnx-int8"), repeats=3,
                                                 warmup=1, child=False, settle=0.0), torch_forward=forward)
    assert [(r["variant"], r["batch_size"]) for r in rows] == [("onnx-fp32", 1), ("onnx-fp32", 2),
                                                               ("onnx-int8", 1), ("onnx-int8", 2)]
    for b in (1, 2):
        assert len({r["torch_p50_ms"] for r in rows if r["batch_size"] == b}) == 1
    assert all(r["torch_max_abs_diff"] < 1e-3 for r in rows if r["variant"] == "onnx-fp32")
    with pytest.raises(InputError, match="settle"):
        BenchConfig(settle=-1).check()


def test_bench_rejects_a_folder_that_is_not_a_bundle(tmp_path):
    with pytest.raises(InputError, match="not a bundle"):
        run_bundles(_args([str(tmp_path)]))
    with pytest.raises(InputError, match="batch"):
        BenchConfig(batch_sizes=(0,)).check()


def test_three_budgets_measured_in_a_child(tiny_bundle):
    """generous and tight: the planner's choice runs under the budget (peak RSS of a fresh process);
    impossible: refused from the manifest alone, naming the smallest budget that works."""
    from alignts.bench.memory import measure_peak

    m = read_manifest(tiny_bundle)
    onnx = ("onnx",)
    generous = parse_budget("2GB")
    c = choose(m, generous, batch_size=8, backends=onnx, lean_settings=False, bundle_dir=tiny_bundle)
    # the planner's first: the fastest variant within the accuracy gate
    assert (c.variant, c.batch_size) == (rank_variants(m, backends=onnx)[0].name, 8)
    r = measure_peak(tiny_bundle, c.variant, c.batch_size)
    assert r["peak_rss_bytes"] <= generous

    # tight: what the int8 variant needs at batch 64; fp32 needs more, so the planner drops to int8
    tight = estimate_peak(m, "onnx-int8", 64, bundle_dir=tiny_bundle).total
    assert estimate_peak(m, "onnx-fp32", 64, bundle_dir=tiny_bundle).total > tight
    c = choose(m, tight, batch_size=64, backends=onnx, lean_settings=False, bundle_dir=tiny_bundle)
    assert (c.variant, c.batch_size) == ("onnx-int8", 64)
    r = measure_peak(tiny_bundle, c.variant, c.batch_size)
    assert r["peak_rss_bytes"] <= tight, (r["peak_rss_bytes"], tight)

    with pytest.raises(BudgetExceededError) as e:
        choose(m, parse_budget("64MB"), batch_size=8, backends=onnx, bundle_dir=tiny_bundle)
    assert e.value.min_budget_bytes > 64_000_000
    assert str(e.value.min_budget_bytes) in str(e.value)


def test_quantize_adds_validated_variants(tiny_bundle, tmp_path, capsys):
    from alignts.cli import main
    from alignts.export.quantize import quantize_bundle
    import alignts.runtime as rt

    out = tmp_path / "q"
    dtypes = ["int8"] + (["q8_0", "q4_0"] if _have_gguf() else [])
    m, rows = quantize_bundle(tiny_bundle, dtypes, out=out, overwrite=True, n_check=4, max_rel_mse_change=1.0)
    names = [v.name for v in m.variants]
    assert "onnx-int8" in names
    assert {r["variant"] for r in rows} >= {"onnx-int8", "onnx-int8-static"}  # both int8 forms judged, one kept
    for r in rows:
        if not r["kept"]:
            continue
        v = m.variant(r["kept_as"])
        assert v.validation["reference"].startswith(("onnx-fp32", "gguf-f32"))
        assert np.isfinite(v.validation["max_abs_diff"]) and v.validation["relative_max_abs_diff"] < 1.0
        assert v.weight_bytes > 0
    read_manifest(out)  # every new file hashed into the manifest
    if _have_gguf():
        q8, q4 = m.variant("gguf-q8_0"), m.variant("gguf-q4_0")
        assert q4.weight_bytes < q8.weight_bytes < m.variant("gguf-f32").weight_bytes
        f = rt.load(out)
        f.plan(variant="gguf-q4_0", batch_size=2)
        assert f.forecast_scaled(np.random.default_rng(0).standard_normal((2, 1, L)).cumsum(-1)).shape == (2, 1, H)
    # the CLI: nothing left to add -> says so; a bad dtype -> exit code 2 with the fix
    assert main(["quantize", str(out), "--to", "int8"]) == 0
    assert "nothing to add" in capsys.readouterr().out
    assert main(["quantize", str(out), "--to", "int3"]) == 2
    assert "expected some of" in capsys.readouterr().err


def test_plan_uses_the_planner_and_refuses_before_loading(tiny_bundle, monkeypatch):
    import alignts.runtime as rt
    from alignts.runtime.forecaster import Forecaster

    f = rt.load(tiny_bundle)
    opened = []
    monkeypatch.setattr(type(f), "_open", lambda self, *a, **k: opened.append(a) or "cpu")
    with pytest.raises(BudgetExceededError) as e:
        f.plan(budget=parse_budget("10MB"))
    assert e.value.min_budget_bytes > 10_000_000 and "--budget" in str(e.value)
    assert not opened  # nothing was loaded
    plan = Forecaster.plan(f, budget=parse_budget("2GB"))
    assert plan.variant == rank_variants(read_manifest(tiny_bundle))[0].name and len(opened) == 1
