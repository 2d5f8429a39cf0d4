"""Issue 12: one forecast contract for every paradigm (raw units, quantiles, ragged lists, NaN, DataFrames).

The same tests run a stub forecaster (the base class around a tiny deterministic model; no backend, runs
everywhere) and each paradigm's tiny bundle (tests/tiny_bundles.py; skipped without torch, optimum and
llama-cpp-python) through ``forecast`` / ``forecast_df`` and compare against the model-units path
``unscale(forecast_scaled(scale(x)))``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from alignts.errors import AlignTSError, InputError, ShapeError
from alignts.runtime.forecaster import Forecaster, Plan
from alignts.runtime.manifest import Manifest
from alignts.runtime.result import Forecast

LEVELS = (0.1, 0.5, 0.9)
PARADIGMS = ("stub", "internal", "bridging", "injective")
SCALER = {"mean": [50.0, -3.0], "std": [10.0, 0.5]}  # raw units far from the model's


class StubForecaster(Forecaster):
    """The base class around a model that continues the last value with the context's mean slope."""

    def __init__(self, L: int = 16, H: int = 4):
        super().__init__(".", Manifest(paradigm="internal", architecture="stub", files={}, variants=(),
                                       config={"context_len": L, "horizon": H, "n_channels": 2, "scaler": SCALER,
                                               "patch_len": L, "stride": L, "n_patches": 2}))
        self._plan = Plan(variant="stub", backend="none", dtype="f32", device="cpu", provider="stub",
                          context_len=L, horizon=H, batch_size=2, n_channels=2)

    def _open(self, variant, device, threads, batch_size):  # pragma: no cover - planned in __init__
        return "stub"

    def _forecast(self, x):
        slope = (x[..., -1:] - x[..., :1]) / x.shape[-1]
        return x[..., -1:] + slope * np.arange(1, self.horizon + 1, dtype=np.float32)


def _conformal(H: int) -> dict:
    """A hand-made calibration (what `alignts calibrate` stores), widening with the horizon step."""
    levels = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
    z = [-1.6, -1.3, -0.7, 0.05, 0.7, 1.3, 1.6]
    return {"method": "split-conformal", "split": "val", "n_windows": 8, "n_series": 16,
            "normalized_by": "instance_std", "levels": levels,
            "residual_quantiles": [[v * (1 + 0.1 * h) for h in range(H)] for v in z]}


def _with_config(f: Forecaster, **changes) -> Forecaster:
    """``f`` with manifest config keys set (None removes one)."""
    cfg = {k: v for k, v in {**f.manifest.config, **changes}.items() if v is not None}
    f.manifest = dataclasses.replace(f.manifest, config=cfg)
    return f


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, csv):
    """Tiny bundles fitted on the 2-channel hourly CSV, built on first use."""
    root = tmp_path_factory.mktemp("contract")
    built: dict = {}

    def get(paradigm: str):
        if paradigm not in built:
            for mod in ("torch", "onnxruntime", "llama_cpp", "optimum.exporters.onnx"):
                pytest.importorskip(mod)
            from tiny_bundles import bridging_bundle, injective_bundle, internal_bundle

            built[paradigm] = {"internal": lambda: internal_bundle(root, str(csv)),
                               "bridging": lambda: bridging_bundle(root, str(csv)),
                               "injective": lambda: injective_bundle(root)}[paradigm]()
        return built[paradigm]

    return get


@pytest.fixture(params=PARADIGMS)
def forecaster(request, bundles) -> Forecaster:
    """A planned forecaster that gives quantiles (Internal/Bridging: a hand-made calibration)."""
    if request.param == "stub":
        return _with_config(StubForecaster(), conformal=_conformal(4))
    import alignts.runtime as rt

    f = rt.load(bundles(request.param))
    f.plan(variant="onnx-fp32", batch_size=2)
    if request.param != "injective":  # by hand even where the fit calibrated: known residuals
        _with_config(f, conformal=_conformal(f.horizon))
    return f


def _raw(f: Forecaster, B: int, T: int, seed: int = 0) -> np.ndarray:
    """[B, C, T] random walks in raw units around the training scaler's mean."""
    rng = np.random.default_rng(seed)
    C = f.n_channels or 2
    sc = f.manifest.config.get("scaler") or {"mean": [20.0] * C, "std": [2.0] * C}
    walk = rng.standard_normal((B, C, T)).cumsum(-1) * 0.3
    return np.asarray(sc["mean"])[:, None] + np.asarray(sc["std"])[:, None] * walk


def _point(f: Forecaster, fc: Forecast) -> np.ndarray:
    """What ``forecast_scaled`` returns, in raw units: Injective's point forecast is the sample median."""
    return fc.median if f.paradigm == "injective" else fc.mean


def test_raw_units_equal_the_scaled_path_and_quantiles_are_monotone(forecaster):
    f = forecaster
    x = _raw(f, 3, f.context_len + 5)  # longer than L: the last L points; B=3 in chunks of 2
    fc = f.forecast(x, quantiles=LEVELS)
    ref = f.unscale(f.forecast_scaled(f.scale(x)))
    B, C, H = 3, x.shape[1], f.planned.horizon
    assert isinstance(fc, Forecast) and fc.plan == f.planned
    assert fc.mean.shape == fc.median.shape == (B, C, H) and fc.quantiles.shape == (B, C, H, 3)
    np.testing.assert_allclose(_point(f, fc), ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())
    assert fc.quantile_levels == LEVELS
    assert fc.quantile_method == ("samples" if f.paradigm == "injective" else "conformal")
    assert np.isfinite(fc.quantiles).all() and (np.diff(fc.quantiles, axis=-1) >= 0).all()
    np.testing.assert_array_equal(fc.quantile(0.9), fc.quantiles[..., 2])
    if f.paradigm == "injective":  # the sample median is the 0.5 quantile of the same samples: one run
        np.testing.assert_allclose(fc.quantile(0.5), fc.median)
    else:
        from alignts.runtime.conformal import conformal_quantiles

        np.testing.assert_array_equal(fc.mean, fc.median)
        # computed in the model's units around its point forecast, then unscaled like it
        a = f.prepare(f.scale(x))
        q = conformal_quantiles(f.forecast_scaled(a), a, f.manifest.config["conformal"], LEVELS)
        np.testing.assert_allclose(fc.quantiles, np.moveaxis(f.unscale(np.moveaxis(q, -1, 0)), 0, -1), rtol=1e-6)
        assert (fc.quantile(0.1) < fc.mean).all() and (fc.mean < fc.quantile(0.9)).all()
    with pytest.raises(InputError, match="0.25"):
        fc.quantile(0.25)
    plain = f.forecast(x)
    assert plain.quantiles is None and plain.quantile_method == "none" and plain.quantile_levels == ()
    np.testing.assert_array_equal(_point(f, plain), _point(f, fc))


def test_ragged_list_and_long_frame_equal_the_array_call(forecaster):
    f = forecaster
    L = f.context_len
    lengths = (L + 7, L, max(2, L - 5))
    full = _raw(f, 3, L + 7, seed=1)
    series = [full[b, :, -n:] for b, n in enumerate(lengths)]  # [C, T_i]
    padded = np.stack([np.concatenate([np.repeat(s[:, :1], max(0, L - s.shape[1]), 1), s[:, -L:]], 1)
                       for s in series])  # the documented rule: last L points, short ones left-padded
    ref = f.forecast(padded, quantiles=LEVELS)
    got = f.forecast(series, quantiles=LEVELS)
    for a, b in ((got.mean, ref.mean), (got.median, ref.median), (got.quantiles, ref.quantiles)):
        np.testing.assert_allclose(a, b, rtol=1e-12)

    targets = ["x", "y"][:series[0].shape[0]]
    starts = pd.to_datetime(["2024-01-01", "2024-03-01", "2024-05-01"])
    long = pd.concat([pd.DataFrame({"item_id": f"s{b}", "timestamp": pd.date_range(starts[b], periods=n, freq="h"),
                                    **{t: series[b][c] for c, t in enumerate(targets)}})
                      for b, n in enumerate(lengths)], ignore_index=True)
    long = long.sample(frac=1.0, random_state=0)  # rows in any order: sorted by timestamp per item
    long = long.sort_values("item_id", kind="stable")
    df = f.forecast_df(long, target=targets)
    H, C = f.planned.horizon, len(targets)
    assert list(df.columns) == ["item_id", "timestamp"] + (["target"] if C > 1 else []) + ["mean", "0.1", "0.5",
                                                                                            "0.9"]
    assert len(df) == 3 * C * H
    for b, n in enumerate(lengths):
        for c, t in enumerate(targets):
            rows = df[(df["item_id"] == f"s{b}") & ((df["target"] == t) if C > 1 else True)]
            np.testing.assert_allclose(rows["mean"], ref.mean[b, c], rtol=1e-12)
            np.testing.assert_allclose(rows[["0.1", "0.5", "0.9"]].to_numpy(), ref.quantiles[b, c], rtol=1e-12)
            last = starts[b] + pd.Timedelta(hours=n - 1)
            assert list(rows["timestamp"]) == list(pd.date_range(last, periods=H + 1, freq="h")[1:])

    wide = pd.DataFrame(series[0].T, columns=targets, index=pd.date_range("2024-01-01", periods=lengths[0], freq="h"))
    w = f.forecast_df(wide, quantiles=None)
    assert list(w.columns) == ["timestamp"] + (["target"] if C > 1 else []) + ["mean"]
    np.testing.assert_allclose(w["mean"], ref.mean[0].reshape(-1), rtol=1e-6)  # batch 1, not 2: float32 sums


def test_nan_inputs_equal_the_manually_filled_call(forecaster):
    f = forecaster
    L = f.context_len
    x = _raw(f, 2, L + 4, seed=2)
    holed = x.copy()
    holed[0, 0, -L + 3:-L + 6] = np.nan  # interior: linear
    holed[1, -1, :6] = np.nan  # leading: back-filled
    holed[1, 0, -2:] = np.nan  # trailing: forward-filled
    filled = holed.copy()
    t = np.arange(x.shape[-1])
    for b, c in np.ndindex(*x.shape[:2]):
        miss = np.isnan(filled[b, c])
        filled[b, c, miss] = np.interp(t[miss], t[~miss], filled[b, c, ~miss])
    got, ref = f.forecast(holed, quantiles=LEVELS), f.forecast(filled, quantiles=LEVELS)
    np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-12)
    np.testing.assert_allclose(got.quantiles, ref.quantiles, rtol=1e-12)
    masked = np.ma.masked_invalid(holed)  # masked entries are missing values too
    np.testing.assert_allclose(f.forecast(masked).mean, ref.mean, rtol=1e-12)
    holed[1, 0] = np.nan
    with pytest.raises(InputError, match="no observed value"):
        f.forecast(holed)
    scaled = f.scale(filled)
    scaled[0, 0, -2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        f.forecast_scaled(scaled)  # the model-units path still refuses gaps


def test_uncalibrated_bundle_raises_the_documented_error(forecaster):
    f = forecaster
    if f.paradigm == "injective":
        pytest.skip("Injective's quantiles come from its samples: nothing to calibrate")
    _with_config(f, conformal=None)
    assert f.quantile_method == "none"
    x = _raw(f, 1, f.context_len)
    with pytest.raises(InputError, match="no calibration.*alignts calibrate"):
        f.forecast(x, quantiles=LEVELS)
    with pytest.raises(InputError, match="alignts calibrate"):
        f.forecast_df(pd.DataFrame(x[0].T))  # default quantiles (0.1, 0.5, 0.9)
    assert f.forecast(x).quantiles is None
    assert list(f.forecast_df(pd.DataFrame(x[0].T, columns=["x", "y"]), quantiles=None).columns) == [
        "timestamp", "target", "mean"]


def test_stub_input_errors():
    f = StubForecaster()
    with pytest.raises(InputError, match="outside the calibrated range"):
        _with_config(StubForecaster(), conformal=_conformal(4)).forecast(_raw(f, 1, 16), quantiles=(0.01, 0.5))
    with pytest.raises(InputError, match="ascending"):
        _with_config(StubForecaster(), conformal=_conformal(4)).forecast(_raw(f, 1, 16), quantiles=(0.9, 0.1))
    with pytest.raises(AlignTSError, match="channels"):
        f.forecast([np.ones((2, 20)), np.ones((3, 20))])
    for bad in (np.ones((1, 3, 20)), [np.ones((3, 20))], np.ones(20), [], np.ones((0, 2, 20))):
        with pytest.raises(ShapeError):  # before the scaler would broadcast it
            f.forecast(bad)
    with pytest.raises(InputError, match="no observed value"):
        f.forecast(np.ones((1, 2, 0)))
    with pytest.raises(InputError, match="repeat"):
        f.forecast_df(pd.DataFrame({"id": ["a"] * 3, "timestamp": ["2024-01-01"] * 3, "x": 1.0, "y": 2.0}),
                      target=["x", "y"], quantiles=None)
    with pytest.raises(InputError, match="target"):
        f.forecast_df(pd.DataFrame({"id": ["a"] * 3, "x": [1.0, 2, 3]}), quantiles=None)


# ------------------------------------------------------------------------------------------------ CLI


def _cli(capsys, argv):
    from alignts.cli import main

    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_cli_forecast_formats(bundles, csv, capsys, tmp_path, fmt):
    b = str(bundles("injective"))  # quantiles from samples: no calibration needed
    out = _cli(capsys, ["forecast", b, "--data", str(csv), "--format", fmt, "--quantiles", "0.1,0.5,0.9"])
    if fmt == "csv":
        from io import StringIO

        df = pd.read_csv(StringIO(out.out))
    elif fmt == "json":
        df = pd.DataFrame(json.loads(out.out))
    else:
        df = pd.DataFrame([json.loads(line) for line in out.out.splitlines()])
    assert list(df.columns) == ["timestamp", "target", "mean", "0.1", "0.5", "0.9"]
    assert set(df["target"]) == {"x", "y"} and len(df) == 2 * 6
    assert (df["0.1"] <= df["0.9"]).all()
    assert pd.to_datetime(df["timestamp"]).min() == pd.Timestamp("2022-01-01") + pd.Timedelta(hours=400)

    path = tmp_path / f"f.{fmt}"
    _cli(capsys, ["forecast", b, "--data", str(csv), "--out", str(path), "--format", fmt, "--quantiles", "none"])
    text = path.read_text()
    assert "mean" in text and "0.9" not in text


def test_cli_forecast_note_without_calibration_and_other_verbs(bundles, csv, capsys):
    from alignts.runtime.manifest import read_manifest

    b = str(bundles("internal"))
    calibrated = bool(read_manifest(b, verify=False).config.get("conformal"))
    out = _cli(capsys, ["forecast", b, "--data", str(csv), "--format", "jsonl"])
    cols = list(json.loads(out.out.splitlines()[0]))
    if calibrated:
        assert cols == ["timestamp", "target", "mean", "0.1", "0.5", "0.9"]
    else:
        assert cols == ["timestamp", "target", "mean"] and "no calibration" in out.err

    out = _cli(capsys, ["inspect", b, "--format", "json", "--no-verify"])
    assert json.loads(out.out)[0]["variant"] == "onnx-fp32"
    out = _cli(capsys, ["data", "describe", str(csv), "--format", "csv"])
    assert out.out.splitlines()[0].startswith("name,") and len(out.out.splitlines()) == 2
    out = _cli(capsys, ["eval", b, "--data", str(csv), "--max-windows", "4", "--no-baselines", "--format", "jsonl"])
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert rows[0]["model"] == "internal" and "mse" in rows[0] and "L=" in out.err
