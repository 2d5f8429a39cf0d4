"""The accuracy gate (validation MSE change vs fp32, alignts.export.gate) shared by `fit` and `quantize`, static
int8, the manifest's ``Variant.accuracy``, the planner reading it, and the roofline columns of `alignts bench`."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from alignts.errors import InputError, ManifestError  # noqa: E402
from alignts.export import gate  # noqa: E402
from alignts.runtime.budget import choose, rank_variants  # noqa: E402
from alignts.runtime.manifest import FileEntry, Manifest, Variant, read_manifest, write_manifest  # noqa: E402

DATA = "statsmodels:co2"
L, H = 32, 8
FIXTURES = Path(__file__).parent / "data" / "manifests"


def _fit(out: Path, int8: bool = True, **kw) -> Path:
    import torch

    from alignts.export.fit_internal import FitInternalConfig, fit_internal
    from alignts.export.internal import InternalConfig
    from alignts.export.train import TrainConfig

    torch.set_num_threads(1)
    fit_internal(FitInternalConfig(
        data=DATA, out=str(out), backbone="tiny-gpt2",
        model=InternalConfig(context_len=L, horizon=H, patch_len=8, stride=8, lora_rank=2, lora_alpha=4.0),
        train=TrainConfig(epochs=1, batch_size=16, max_train_windows=16, max_val_windows=8, threads=1),
        int8=int8, gguf=False, **kw), command="test")
    return out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    # a barely trained tiny model: a lenient threshold, so that the real int8 forms are judged and one is kept
    return _fit(tmp_path_factory.mktemp("gate") / "tiny", max_rel_mse_change=10.0)


def _offset_copy(src, dst, *args, offset: float = 3.0, **kw):
    """A "quantizer" that writes a wrong model: its forecast shifted by ``offset`` (a large error)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    out = m.graph.output[0].name
    for n in m.graph.node:
        n.output[:] = [o + "_raw" if o == out else o for o in n.output]
    m.graph.initializer.append(numpy_helper.from_array(np.array(offset, dtype=np.float32), "offset"))
    m.graph.node.append(helper.make_node("Add", [out + "_raw", "offset"], [out]))
    onnx.save(m, str(dst))
    return Path(dst)


def _exact_copy(src, dst, *args, **kw):
    """A "quantizer" that keeps the model exactly (no error at all)."""
    shutil.copyfile(src, dst)
    return Path(dst)


def test_fit_judges_both_int8_forms_and_records_the_gate(fitted):
    m = read_manifest(fitted)
    names = [v.name for v in m.variants]
    assert names == ["onnx-fp32", "onnx-int8"]
    ref, q = m.variant("onnx-fp32"), m.variant("onnx-int8")
    assert ref.accuracy["rel_mse_change"] == 0.0 and ref.accuracy["passed"] is True
    assert ref.accuracy["split"] == "val" and ref.accuracy["n_windows"] >= 1 and ref.accuracy["ms_per_series"] > 0
    acc = q.accuracy
    assert acc["reference"] == "onnx-fp32" and acc["reference_mse"] == pytest.approx(ref.accuracy["mse"])
    assert acc["rel_mse_change"] == pytest.approx((acc["mse"] - acc["reference_mse"]) / acc["reference_mse"])
    assert acc["max_rel_mse_change"] == 10.0 and acc["passed"] is True
    # the fidelity number against torch on fresh random patches is still recorded
    assert 0 < q.validation["max_abs_diff"] < 10 and np.isfinite(q.validation["relative_max_abs_diff"])
    # static and dynamic were both built and judged; the better kept, the other left out with its record
    kept = q.extra["quantization"]
    loser = {"dynamic": "onnx-int8-static", "static-qdq": "onnx-int8"}[kept]
    assert loser in m.training["skipped_variants"]
    lost = m.training["gate_rejected"][loser]
    assert lost["rel_mse_change"] >= acc["rel_mse_change"]
    assert sorted(m.files) == sorted({f for v in m.variants for f in m.reads(v)} | {"io.npz",
                                                                                  "torch_trained.safetensors"})


def test_static_int8_is_qdq_per_channel_and_close_to_fp32(fitted):
    import onnx
    import onnxruntime as ort

    from alignts.export.onnx_export import quantize_int8_static
    from alignts.runtime.configs import runtime_config

    m = read_manifest(fitted)
    splits = gate.data_splits(m, None)
    batches = gate.calibration_patches(splits, runtime_config(m))
    assert batches and batches[0].dtype == np.float32 and batches[0].shape[1:] == (m.config["n_patches"], 8)
    dst = quantize_int8_static(fitted / "core.onnx", fitted.parent / "static.onnx", [{"patches": b} for b in batches])
    g = onnx.load(str(dst)).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("QuantizeLinear") >= 1 and ops.count("DequantizeLinear") >= 2
    inits = {t.name: t for t in g.initializer}
    weight_scales = [n.input[1] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                     and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert weight_scales and all(len(inits[s].dims) == 1 and inits[s].dims[0] > 1 for s in weight_scales)
    x = batches[0]
    run = (lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"patches": x})[0])
    ref, got = run(fitted / "core.onnx"), run(dst)
    assert np.isfinite(got).all() and np.abs(got - ref).max() < 0.5 * np.abs(ref).max() + 1e-3


def test_gate_rejects_a_large_error_keeps_a_good_one_and_fit_and_quantize_agree(tmp_path, monkeypatch):
    import alignts.export.onnx_export as ox
    from alignts.export.quantize import quantize_bundle

    monkeypatch.setattr(ox, "quantize_int8", _offset_copy)
    monkeypatch.setattr(ox, "quantize_int8_static", _exact_copy)
    b = _fit(tmp_path / "b")  # the default gate: 1 %
    m = read_manifest(b)
    assert [v.name for v in m.variants] == ["onnx-fp32", "onnx-int8"]
    good = m.variant("onnx-int8")
    assert good.extra["quantization"] == "static-qdq" and good.accuracy["rel_mse_change"] == 0.0
    bad_fit = m.training["gate_rejected"]["onnx-int8"]
    assert bad_fit["passed"] is False and bad_fit["rel_mse_change"] > gate.MAX_REL_MSE_CHANGE
    assert "rejected" in m.training["skipped_variants"]["onnx-int8"]

    q, rows = quantize_bundle(b, ["int8"], out=tmp_path / "q", overwrite=True, n_check=2)
    by = {r["variant"]: r for r in rows}
    assert by["onnx-int8"]["kept"] is False and by["onnx-int8-static"]["kept_as"] == "onnx-int8"
    assert by["onnx-int8"]["rel_mse_change"] == pytest.approx(bad_fit["rel_mse_change"], rel=1e-6)
    assert q.variant("onnx-int8").extra["quantization"] == "static-qdq"
    assert not (tmp_path / "q" / "core.int8.onnx").exists()  # the rejected file is gone, the rest sealed
    read_manifest(tmp_path / "q", verify=True)


def test_threshold_is_checked_before_work(tmp_path):
    from alignts.export.fit_internal import FitInternalConfig, check_config

    for bad in (-0.1, float("nan"), "x"):
        with pytest.raises(InputError, match="expected a finite number >= 0"):
            gate.check_threshold(bad)
    with pytest.raises(InputError, match="max relative MSE change"):
        check_config(FitInternalConfig(data=DATA, out=str(tmp_path / "o"), max_rel_mse_change=-1))


def test_accuracy_round_trips_and_old_manifests_load(fitted, tmp_path):
    m = read_manifest(fitted)
    again = Manifest.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m and again.variant("onnx-int8").accuracy == m.variant("onnx-int8").accuracy
    for name in ("internal", "bridging", "injective"):  # format 1.0, written before the gate
        old = Manifest.from_dict(json.loads((FIXTURES / f"{name}.json").read_text()))
        assert old.format_version == "1.0" and all(v.accuracy == {} for v in old.variants)
    d = m.to_dict()
    d["variants"][1]["accuracy"]["passed"] = "yes"
    with pytest.raises(ManifestError, match="accuracy.passed"):
        Manifest.from_dict(d)
    d["variants"][1]["accuracy"].update(passed=True, rel_mse_change=float("nan"))
    with pytest.raises(ManifestError, match="rel_mse_change"):
        Manifest.from_dict(d)


def _planner_manifest(records: dict) -> Manifest:
    files = {n: FileEntry(sha256="0" * 64, size=1000) for n in ("a.onnx", "b.onnx", "c.gguf", "d.gguf")}
    vs = (Variant("onnx-fp32", "onnx", "fp32", ("a.onnx",)), Variant("onnx-int8", "onnx", "int8", ("b.onnx",)),
          Variant("gguf-f32", "gguf", "f32", ("c.gguf",)), Variant("gguf-q4_0", "gguf", "q4_0", ("d.gguf",)))
    vs = tuple(dataclasses.replace(v, accuracy=records.get(v.name, {})) for v in vs)
    return Manifest(paradigm="internal", architecture="bert", files=files, variants=vs,
                    config={"context_len": 32, "horizon": 8, "n_channels": 1, "patch_len": 8, "stride": 8,
                            "n_patches": 5, "d_model": 32, "n_layers": 2, "n_heads_lm": 2})


def test_planner_takes_the_fastest_variant_within_the_gate():
    def rec(ms, passed=True):
        return {"ms_per_series": ms, "passed": passed, "rel_mse_change": 0.0 if passed else 0.5}

    both = ("onnx", "gguf")
    m = _planner_manifest({"onnx-fp32": rec(4.0), "onnx-int8": rec(2.0), "gguf-f32": rec(9.0),
                           "gguf-q4_0": rec(1.0, passed=False)})
    assert [v.name for v in rank_variants(m, backends=both)] == ["onnx-int8", "onnx-fp32", "gguf-f32", "gguf-q4_0"]
    assert choose(m, None, backends=both).variant == "onnx-int8"
    m2 = _planner_manifest({"onnx-fp32": rec(4.0), "onnx-int8": rec(5.0)})  # int8 measured slower: fp32 first
    assert [v.name for v in rank_variants(m2, backends=both)][:2] == ["onnx-fp32", "onnx-int8"]
    # variants without a record go after those within the gate
    assert [v.name for v in rank_variants(m2, backends=both)][2:] == ["gguf-f32", "gguf-q4_0"]
    # a bundle written before the gate: the most accurate first, as before
    old = _planner_manifest({})
    assert [v.name for v in rank_variants(old, backends=both)] == ["onnx-fp32", "gguf-f32", "onnx-int8", "gguf-q4_0"]


def test_the_planner_says_when_the_timings_come_from_another_cpu(fitted, caplog):
    """The gate records where it timed the variants; a bundle timed on another CPU is ranked by those timings, and
    planning it warns once with the fix."""
    import logging

    from alignts.runtime import forecaster
    from alignts.runtime.budget import timed_elsewhere
    from alignts.runtime.threads import cpu_label

    m = read_manifest(fitted)
    assert {v.accuracy["cpu"] for v in m.variants} == {cpu_label()} and timed_elsewhere(m) is None

    def rec(ms, cpu):
        return {"ms_per_series": ms, "passed": True, "rel_mse_change": 0.0, "cpu": cpu}

    elsewhere = f"Another CPU than {cpu_label()}"  # never this machine's label (the suite runs on EPYCs too)
    other = _planner_manifest({"onnx-fp32": rec(4.0, elsewhere), "onnx-int8": rec(2.0, elsewhere)})
    assert timed_elsewhere(other) == elsewhere
    assert timed_elsewhere(_planner_manifest({"onnx-fp32": rec(4.0, cpu_label())})) is None
    assert timed_elsewhere(_planner_manifest({"onnx-fp32": {"ms_per_series": 4.0, "passed": True}})) is None
    with caplog.at_level(logging.WARNING, logger="alignts.runtime.forecaster"):
        for _ in range(2):
            forecaster._warn_timed_elsewhere(other, "/bundles/b1")
    warned = [r.getMessage() for r in caplog.records if "timings measured on" in r.getMessage()]
    assert len(warned) == 1 and elsewhere in warned[0] and f"this CPU is {cpu_label()}" in warned[0] and "Fix:" in warned[0]


def test_gate_verb_times_the_variants_again_in_place(fitted, tmp_path, capsys):
    """`alignts gate` re-judges and re-times every variant here and writes the records into the manifest: records
    from another CPU (here: a made-up one, the first variant timed as the slowest) are replaced, the order follows this
    machine, nothing is added or dropped, and the bundle stays sealed."""
    from alignts.cli import main
    from alignts.runtime.budget import timed_elsewhere
    from alignts.runtime.threads import cpu_label

    b = tmp_path / "b"
    shutil.copytree(fitted, b)
    m = read_manifest(b)
    elsewhere = "Other CPU (AVX2)"
    write_manifest(b, dataclasses.replace(m, variants=[
        dataclasses.replace(v, accuracy={**v.accuracy, "cpu": elsewhere,
                                         "ms_per_series": 1e6 if v is m.variants[0] else v.accuracy["ms_per_series"]})
        for v in m.variants]))
    assert timed_elsewhere(read_manifest(b)) == elsewhere
    assert main(["gate", str(b), "--data", DATA, "--gate-windows", "8", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    after = read_manifest(b)  # verifies every file's sha256
    assert [v.name for v in after.variants] == [v.name for v in m.variants]
    assert {v.accuracy["cpu"] for v in after.variants} == {cpu_label()} and timed_elsewhere(after) is None
    assert all(v.accuracy["ms_per_series"] < 1e6 and v.accuracy["n_windows"] <= 8 for v in after.variants)
    assert "1000000.00" in out and f"judged on {cpu_label()}" in out
    order = [v.name for v in rank_variants(after)]
    assert f"planner order here: {' > '.join(order)}" in out
    with pytest.raises(InputError, match="fp32 variant"):
        gate.reference_variant(dataclasses.replace(after, variants=[v for v in after.variants
                                                                     if v.dtype not in ("fp32", "f32")]))


def test_inspect_shows_the_gate_and_the_planner_order(fitted, capsys):
    from alignts.cli import main
    from alignts.runtime.threads import cpu_label

    assert main(["inspect", str(fitted)]) == 0
    out = capsys.readouterr().out
    assert "gate: val MSE +0.00 %, within the gate" in out and f"ms/series on {cpu_label()}" in out
    order = [v.name for v in rank_variants(read_manifest(fitted), backends=("onnx", "gguf"))]
    assert f"planner order here: {' > '.join(order)} (the fastest within the accuracy gate first)" in out
    assert "the order may differ here" not in out


def test_bench_rows_carry_the_roofline(fitted):
    from alignts.bench.bundles import BenchConfig, run_bench, to_markdown
    from alignts.bench.roofline import model_flops

    cfg = BenchConfig(batch_sizes=(1, 4), repeats=2, warmup=1, child=False, torch=False, threads=1,
                      quick_ceilings=True)
    result = run_bench([fitted], cfg)
    c = result["ceilings"]
    assert c["sgemm_gflops"] > 0 and c["int8_gops"] > 0 and c["copy_gbs"] > 0 and c["threads"] == 1
    assert c["sgemm_gflops"] == max(c["numpy_sgemm_gflops"], c["ort_sgemm_gflops"])
    assert c["bf16_gflops"] > 0  # torch is installed with the test extras
    m = read_manifest(fitted)
    f1, f4 = model_flops(m, 1), model_flops(m, 4)
    assert f4 == pytest.approx(4 * f1)
    # at least two flops per weight of the LM's matrices per token of every series
    d, n_layers, tokens = m.config["d_model"], m.training["n_layers"], m.config["n_patches"]
    assert f1 >= 2 * n_layers * (4 * d * d + 8 * d * d) * tokens
    for r in result["rows"]:
        assert r["gflops"] == pytest.approx(r["gflop_per_call"] / (r["latency_p50_ms"] / 1e3))
        assert r["ceiling"] == {"int8": "int8_gops", "bf16": "bf16_gflops" if c["bf16_gflops"] else "sgemm_gflops"
                                }.get(r["dtype"], "sgemm_gflops")
        assert r["roofline_fraction"] == pytest.approx(r["gflops"] / c[r["ceiling"]]) and r["roofline_fraction"] > 0
        assert r["val_mse_change"] == m.variant(r["variant"]).accuracy["rel_mse_change"]
    md = to_markdown(result)
    assert "ceilings measured in this run" in md and "of ceiling" in md


def test_quantize_needs_the_data(tmp_path, fitted):
    from alignts.export.quantize import quantize_bundle

    b = tmp_path / "nodata"
    shutil.copytree(fitted, b)
    m = read_manifest(b)
    write_manifest(b, dataclasses.replace(m, training={k: v for k, v in m.training.items() if k != "data"}))
    with pytest.raises(InputError, match="--data"):
        quantize_bundle(b, ["int8"], overwrite=True)


def test_speed_report_checks_the_targets(fitted):
    """alignts bench speed's report (alignts/bench/speed.py) on a tiny bench run: the tables and the targets
    computed from the numbers (no timing asserted: the verdicts follow whatever was measured)."""
    from alignts.bench import speed
    from alignts.bench.bundles import BenchConfig, run_bench

    runs = [run_bench([fitted], BenchConfig(batch_sizes=(1, 8), repeats=2, warmup=1, child=False, torch=True,
                                            threads=t, quick_ceilings=True)) for t in (1, 2)]
    m = read_manifest(fitted)
    result = {"command": "alignts bench speed ...", "machine": runs[0]["machine"], "versions": runs[0]["versions"],
              "seconds": 1.0, "runs": runs, "quantize_rows": [],
              "gates": {str(fitted): {v.name: dict(v.accuracy) for v in m.variants}}}
    targets = speed.check_targets(result)
    rows = {(r["variant"], r["batch_size"], r["threads"]): r for run in runs for r in run["rows"]}
    best = [t for t in targets if "best variant within 1 %" in t[0]]
    assert len(best) == 4  # b=1 and 8 at 1 and 2 threads
    for what, ok, numbers in best:
        name, got = numbers.split()
        b, t = (1 if "b=1," in what else 8), (1 if "1 thread)" in what else 2)
        assert float(got[:-1]) == pytest.approx(rows[(name, b, t)]["speedup_vs_torch"], abs=0.006)
        assert ok == (rows[(name, b, t)]["speedup_vs_torch"] >= speed.TARGET_SPEEDUP)
    cost = [t for t in targets if "batch-8 cost" in t[0]]
    assert len(cost) == 2 * len(m.variants)
    for what, ok, numbers in cost:
        assert ok == (float(numbers[:-1]) <= 8.0 + 0.005)
    md = speed.to_markdown(result)
    assert "## Ceilings" in md and "## Targets of issue #13" in md and "torch eager" in md
    for v in m.variants:
        assert f"| {v.name} |" in md


def test_bridging_fit_judges_the_quantized_backbone_variants(tmp_path):
    """The backbone bundle carries onnx-int8 (and gguf bf16 / q8_0 / q4_0 beside gguf-f32); each adapter judges them on
    its own validation windows with the same gate: kept ones carry the record, the others are recorded out."""
    from tiny_bundles import bridging_bundle

    from alignts.runtime.budget import available_backends

    b = bridging_bundle(tmp_path, DATA)
    m = read_manifest(b)
    bb = read_manifest(b / m.backbone["path"]).variants
    bb_names = [v.name for v in bb]
    assert bb_names[:1] == ["onnx-fp32"] and "onnx-int8" in bb_names
    if "gguf" in available_backends():
        assert {"gguf-f32", "gguf-bf16", "gguf-q8_0", "gguf-q4_0"} <= set(bb_names)
        # tiny-bert is an encoder: its GGUF forms all run with exact attention (FLASH_ATTN_DTYPES is empty)
        assert not [v.name for v in bb if v.extra.get("flash_attn")]
    kept = [v.name for v in m.variants]
    rejected = m.training.get("gate_rejected", {})
    assert set(kept) | set(rejected) == set(bb_names) and not set(kept) & set(rejected)
    for v in m.variants:
        assert v.accuracy["reference"] == "onnx-fp32" and v.extra["backbone_variant"] == v.name
        if v.dtype in ("int8", "bf16", "q8_0", "q4_0"):
            assert v.accuracy["passed"] is True and v.validation["tolerance"] is None
            assert np.isfinite(v.validation["pipeline_max_abs_diff"])
    for r in rejected.values():
        assert r["passed"] is False and r["rel_mse_change"] > r["max_rel_mse_change"]


def test_requantizing_a_gated_bundle_keeps_it_sealed(fitted, tmp_path, monkeypatch):
    """--overwrite rebuilds both int8 forms; when the form kept at fit loses now, its file is gone and unlisted."""
    import alignts.export.onnx_export as ox
    from alignts.export.quantize import quantize_bundle

    was = read_manifest(fitted).variant("onnx-int8")
    monkeypatch.setattr(ox, "quantize_int8" if was.extra["quantization"] == "dynamic" else "quantize_int8_static",
                        _offset_copy)  # the form kept at fit now loses
    m, rows = quantize_bundle(fitted, ["int8"], out=tmp_path / "re", overwrite=True, n_check=2,
                              max_rel_mse_change=10.0)
    assert sorted(r["variant"] for r in rows) == ["onnx-int8", "onnx-int8-static"]
    assert [r["kept"] for r in rows].count(True) == 1
    assert m.variant("onnx-int8").files != was.files and not (tmp_path / "re" / was.files[0]).exists()
    read_manifest(tmp_path / "re", verify=True)
    listed = set(m.files)
    assert listed == {f for v in m.variants for f in m.reads(v)} | {"io.npz", "torch_trained.safetensors"}
    assert {p.name for p in (tmp_path / "re").iterdir()} == listed | {"manifest.json"}
