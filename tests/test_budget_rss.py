"""Accepted memory budgets hold: ``alignts forecast --budget`` just above the planner's estimate, in a fresh child
process with an empty numba cache (the worst case: a first run on a device compiles every kernel), never peaks
above the budget, for every variant of every paradigm's tiny bundle (issue #11, defect 6: Bridging on llama.cpp
did not count the adapter's onnxruntime, nor the CLI its pandas import). And sizes in a manifest never make an
estimate negative (a weight_bytes of -1e12 passed a 1-byte budget)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("llama_cpp")
pytest.importorskip("optimum.exporters.onnx")

from alignts.errors import BudgetExceededError, ManifestError  # noqa: E402
from alignts.runtime.budget import MiB, choose, estimate_peak  # noqa: E402
from alignts.runtime.manifest import read_manifest  # noqa: E402

from tiny_bundles import bridging_bundle, injective_bundle, internal_bundle  # noqa: E402

if not os.path.exists("/proc/self/status"):
    pytest.skip("peak RSS is read from /proc/self/status (VmHWM): Linux only", allow_module_level=True)

DATA = "statsmodels:co2"
# runs the CLI, then reports the child's own high-water mark
CHILD = ("import sys; from alignts.cli import main; from alignts.bench.memory import _peak_rss_bytes; "
         "rc = main(sys.argv[1:]); print('PEAK', rc, _peak_rss_bytes(), file=sys.stderr); sys.exit(rc)")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("rss")
    return {"internal": internal_bundle(root, DATA), "bridging": bridging_bundle(root, DATA),
            "injective": injective_bundle(root)}


@pytest.fixture(scope="module")
def co2_csv(tmp_path_factory):
    """The bundles' column (co2) as a CSV: the CLI reads it with pandas, as a user's file would be."""
    t = np.arange(200)
    p = tmp_path_factory.mktemp("data") / "co2.csv"
    rows = [f"{d},{330 + 5 * np.sin(i / 6) + 0.01 * i:.4f}"
            for i, d in enumerate(np.datetime64("2000-01-01T00") + t.astype("timedelta64[h]"))]
    p.write_text("date,co2\n" + "\n".join(rows) + "\n")
    return p


def forecast_peak(bundle, variant: str, budget: int, data, tmp_path) -> int:
    """Peak RSS of `alignts forecast BUNDLE --variant V --budget B` in a child with an empty numba cache."""
    cache = tmp_path / f"numba-{variant}-{budget}"
    cache.mkdir()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    r = subprocess.run([sys.executable, "-c", CHILD, "forecast", str(bundle), "--data", str(data), "--variant",
                        variant, "--budget", str(budget)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("PEAK "))
    return int(line.split()[2])


CASES = [("internal", "onnx-fp32"), ("internal", "gguf-f32"), ("internal", "gguf-f32-lora"),
         ("bridging", "onnx-fp32"), ("bridging", "gguf-f32"), ("injective", "onnx-fp32"), ("injective", "gguf-f32")]
# the lean onnxruntime settings (a budget only they fit): one more child per ONNX variant, so slow
PLANS = [pytest.param(p, v, "fast", id=f"{p}-{v}") for p, v in CASES] + \
    [pytest.param(p, v, "lean", id=f"{p}-{v}-lean", marks=pytest.mark.slow) for p, v in CASES if v.startswith("onnx")]


@pytest.mark.parametrize("paradigm, variant, mode", PLANS)
def test_peak_rss_stays_within_a_budget_just_above_the_estimate(bundles, co2_csv, tmp_path, paradigm, variant, mode):
    bundle = bundles[paradigm]
    m = read_manifest(bundle, verify=False)
    est = estimate_peak(m, variant, 1, mode=mode, bundle_dir=bundle).total
    budget = est + 4096  # the tightest budget: with mode="lean", one that only the lean settings fit
    c = choose(m, budget, 1, variants=[variant], shrink_batch=False, bundle_dir=bundle)
    assert (c.variant, c.mode, c.estimate.total) == (variant, mode, est)  # the plan the CLI makes
    peak = forecast_peak(bundle, variant, budget, co2_csv, tmp_path)
    print(f"\n{paradigm} {variant} {mode}: budget {budget / MiB:.1f} MiB, estimate {est / MiB:.1f}, "
          f"peak {peak / MiB:.1f}")
    assert peak <= budget, (paradigm, variant, mode, est, peak)


@pytest.mark.parametrize("bad", [-1, -10 ** 12, 1.5, float("nan"), float("inf"), 2 ** 60, "1000", True])
def test_bad_weight_bytes_is_a_manifest_error_never_a_negative_estimate(bundles, bad):
    m = read_manifest(bundles["internal"], verify=False)
    v = dataclasses.replace(m.variant("onnx-fp32"), weight_bytes=bad)
    broken = dataclasses.replace(m, variants=(v,) + m.variants[1:])
    with pytest.raises(ManifestError, match="weight_bytes.*expected a whole number"):
        estimate_peak(broken, "onnx-fp32")
    with pytest.raises(ManifestError):
        choose(broken, 1, variants=["onnx-fp32"])


def test_negative_weight_bytes_in_manifest_json_never_plans(bundles, tmp_path):
    d = json.loads((bundles["internal"] / "manifest.json").read_text())
    d["variants"][0]["weight_bytes"] = -10 ** 12
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ManifestError, match="weight_bytes"):
        choose(read_manifest(tmp_path, verify=False), 1, bundle_dir=tmp_path)


def test_bad_backbone_bytes_and_config_counts_are_manifest_errors(bundles):
    m = read_manifest(bundles["bridging"], verify=False)
    with pytest.raises(ManifestError, match="backbone.weight_bytes"):
        estimate_peak(dataclasses.replace(m, backbone={**m.backbone, "weight_bytes": -5}), "onnx-fp32")
    with pytest.raises(ManifestError, match="config.n_channels"):
        estimate_peak(dataclasses.replace(m, config={**m.config, "n_channels": -3}), "onnx-fp32")


def test_every_estimate_is_positive_and_a_one_byte_budget_is_refused(bundles):
    for b in bundles.values():
        m = read_manifest(b, verify=False)
        for v in m.variants:
            assert estimate_peak(m, v, bundle_dir=b).total > 100 * MiB  # at least the interpreter and a runtime
        with pytest.raises(BudgetExceededError):
            choose(m, 1, bundle_dir=b)


def test_bridging_on_llama_cpp_counts_both_runtimes(bundles):
    m = read_manifest(bundles["bridging"], verify=False)
    gguf = estimate_peak(m, "gguf-f32", bundle_dir=bundles["bridging"])
    onnx = estimate_peak(m, "onnx-fp32", bundle_dir=bundles["bridging"])
    assert gguf.detail["runtimes"] == ("onnx", "gguf") and onnx.detail["runtimes"] == ("onnx",)
    assert gguf.runtime_overhead > onnx.runtime_overhead
