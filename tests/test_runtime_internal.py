"""Runtime side of the Internal paradigm, torch-free: a bundle whose ONNX core is a linear map built with
onnx.helper (no torch, seconds), checked against a numpy reference of the whole forecast path, plus every
bad-input and bad-bundle error the runtime promises."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from alignts.errors import (ArtifactError, BackendUnavailableError, BudgetExceededError, InputError,  # noqa: E402
                            ManifestError, NotPlannedError, ShapeError)
from alignts.export.bundle import finish_bundle, variant_record  # noqa: E402
from alignts.runtime import load  # noqa: E402

L, H, P, STRIDE, C = 32, 8, 8, 4, 3
N = (L - P) // STRIDE + 2


def _linear_core(path: Path, w: np.ndarray, b: np.ndarray) -> None:
    """patches [S, N, P] -> reshape [S, N*P] -> @ w [N*P, H] + b -> forecast [S, H]."""
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("Reshape", ["patches", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["mm"]),
         helper.make_node("Add", ["mm", "b"], ["forecast"])],
        "core",
        [helper.make_tensor_value_info("patches", TensorProto.FLOAT, ["S", N, P])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["S", H])],
        [numpy_helper.from_array(np.array([-1, N * P], dtype=np.int64), "shape"),
         numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(b.astype(np.float32), "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _reference(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy: RevIN -> replication pad -> patches -> linear -> de-normalize.  x [B, C, L] -> [B, C, H]."""
    mean = x.mean(-1, keepdims=True)
    std = np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    z = (x - mean) / std
    z = np.concatenate([z, np.repeat(z[..., -1:], STRIDE, -1)], -1)
    idx = np.arange(N)[:, None] * STRIDE + np.arange(P)[None]
    patches = z[..., idx]  # [B, C, N, P]
    y = patches.reshape(*x.shape[:2], N * P) @ w + b
    return y * std + mean


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (N * P, H))
    b = rng.normal(0, 0.1, H)
    out = tmp_path_factory.mktemp("rt") / "bundle"
    out.mkdir()
    _linear_core(out / "core.onnx", w, b)
    v = variant_record(out, "onnx-fp32", "onnx", "fp32", ["core.onnx"], ["patches"], ["forecast"],
                       {"patches": {0: "S"}, "forecast": {0: "S"}}, {"max_abs_diff": 0.0})
    cfg = dict(context_len=L, horizon=H, n_channels=C, patch_len=P, stride=STRIDE, n_patches=N, d_model=4,
               eps=1e-5, columns=["a", "b", "c"], freq="h", scaler={"mean": [1.0, 2.0, 3.0], "std": [2.0, 1.0, 0.5]})
    finish_bundle(out, "internal", "gpt2", [v], config=cfg)
    return out, w, b


def _series(b=2, length=L, seed=1):
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return (np.sin(t / 3.0)[None, None] * rng.uniform(0.5, 2, (b, C, 1)) + rng.normal(0, 0.1, (b, C, length))
            + rng.uniform(-5, 5, (b, C, 1))).astype(np.float32)


def test_forecast_matches_numpy_reference(bundle):
    out, w, b = bundle
    f = load(out)
    plan = f.plan(batch_size=3)
    assert plan.variant == "onnx-fp32" and plan.provider == "CPUExecutionProvider"
    x = _series(5)
    y = f.forecast_scaled(x)  # 5 windows in chunks of 3
    assert y.shape == (5, C, H) and y.dtype == np.float32
    np.testing.assert_allclose(y, _reference(x.astype(np.float64), w, b), atol=1e-4, rtol=1e-4)


def test_input_forms_and_horizon(bundle):
    out, w, b = bundle
    f = load(out)
    f.plan(horizon=5)
    x = _series(1, length=L + 10)
    ref = _reference(x[..., -L:].astype(np.float64), w, b)[..., :5]
    np.testing.assert_allclose(f.forecast_scaled(x), ref, atol=1e-4, rtol=1e-4)  # longer: last L points
    np.testing.assert_allclose(f.forecast_scaled(x[0]), ref, atol=1e-4, rtol=1e-4)  # [C, T]
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(x[0].T, columns=["a", "b", "c"])
    np.testing.assert_allclose(f.forecast_scaled(df), ref, atol=1e-4, rtol=1e-4)


def test_lifecycle_and_bad_inputs(bundle):
    out, _, _ = bundle
    f = load(out)
    with pytest.raises(NotPlannedError, match="plan"):
        f.forecast_scaled(_series())
    with pytest.raises(ShapeError, match="exactly L=32"):
        f.plan(context_len=16)
    with pytest.raises(ShapeError, match="horizon"):
        f.plan(horizon=H + 1)
    with pytest.raises(ArtifactError, match="no variant 'gguf-f32'"):
        f.plan(variant="gguf-f32")
    with pytest.raises(BudgetExceededError, match="raise the budget"):
        f.plan(budget=10)
    f.plan()
    with pytest.raises(ShapeError, match="expected 3 channels"):
        f.forecast_scaled(_series()[:, :2])
    with pytest.raises(ShapeError, match="at least L=32"):
        f.forecast_scaled(_series(length=L - 1))
    x = _series()
    x[1, 2, -3] = np.nan
    x[0, 0, -1] = np.inf
    with pytest.raises(InputError, match=r"2 NaN/inf.*\(b=0, c=0, t=-1\).*\(b=1, c=2, t=-3\).*Fix"):
        f.forecast_scaled(x)


def test_cuda_without_provider_raises(bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        load(bundle[0]).plan(device="cuda")


def test_tampered_and_missing_files(bundle, tmp_path):
    import shutil

    src = bundle[0]
    bad = tmp_path / "tampered"
    shutil.copytree(src, bad)
    data = bytearray((bad / "core.onnx").read_bytes())
    data[-5] ^= 0xFF
    (bad / "core.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load(bad)
    f = load(bad, verify=False)
    with pytest.raises(ArtifactError, match="sha256"):  # plan still checks the files of its variant
        f.plan()
    gone = tmp_path / "missing"
    shutil.copytree(src, gone)
    (gone / "core.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing 'core.onnx'"):
        load(gone)
    with pytest.raises(ManifestError, match="no manifest.json"):
        load(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        load(tmp_path / "nowhere")


def test_runtime_runs_without_torch(bundle):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import alignts.runtime as rt
        f = rt.load({str(bundle[0])!r})
        f.plan()
        y = f.forecast_scaled(np.random.default_rng(0).normal(size=(2, {C}, {L})).astype(np.float32))
        assert y.shape == (2, {C}, {H}), y.shape
        bad = [m for m in ("torch", "transformers", "peft") if m in sys.modules]
        assert not bad, bad
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_cli_forecast_inspect_eval(bundle, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    from alignts.cli import main

    out, w, b = bundle
    n = 400
    t = pd.date_range("2021-01-01", periods=n, freq="h")
    rng = np.random.default_rng(3)
    vals = np.sin(np.arange(n)[:, None] / 4.0 + np.arange(C)) * 2 + rng.normal(0, 0.1, (n, C)) + 10
    pd.DataFrame(vals, columns=["a", "b", "c"]).assign(date=t)[["date", "a", "b", "c"]].to_csv(
        tmp_path / "d.csv", index=False)
    assert main(["forecast", str(out), "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "f.csv"),
                 "--plot", str(tmp_path / "f.png")]) == 0
    long = pd.read_csv(tmp_path / "f.csv", parse_dates=["timestamp"])  # timestamp, target, mean (no calibration)
    assert list(long.columns) == ["timestamp", "target", "mean"]
    fc = long.pivot(index="timestamp", columns="target", values="mean")[["a", "b", "c"]]
    assert fc.shape == (H, C) and fc.index[0] == t[-1] + pd.Timedelta("1h")
    # the CLI scales with the bundle's stored scaler and inverts it
    mean, std = np.array([1.0, 2.0, 3.0]), np.array([2.0, 1.0, 0.5])
    x = ((vals[-L:] - mean) / std).T[None]
    ref = _reference(x, w, b)[0] * std[:, None] + mean[:, None]
    np.testing.assert_allclose(fc.to_numpy().T, ref, atol=1e-3, rtol=1e-4)
    assert (tmp_path / "f.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "paradigm internal" in text and "core.onnx" in text and "onnx-fp32" in text
    assert main(["eval", str(out), "--data", str(tmp_path / "d.csv"), "--json", str(tmp_path / "e.json")]) == 0
    text = capsys.readouterr().out
    assert "| internal |" in text and "| dlinear |" in text and "| last_value |" in text
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["rows"]["internal"]["n_windows"] > 0 and np.isfinite(res["rows"]["internal"]["mse"])
    # wrong columns: a clear error, exit code 2
    pd.DataFrame(vals[:, :2], columns=["a", "b"]).assign(date=t).to_csv(tmp_path / "two.csv", index=False)
    assert main(["forecast", str(out), "--data", str(tmp_path / "two.csv")]) == 2
