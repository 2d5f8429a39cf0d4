"""Issue 11, defects 4 and 5 (data and input halves): every crafted input gives a correct result or an
AlignTSError subclass that says expected / got / fix; never a silent wrong answer or a raw exception.

The forecast input rule is tested on `EchoForecaster` (the base class's checks around a model that repeats the
last value; no backend), and end to end on an Injective bundle of the embedded numeric LM where llama.cpp is
installed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alignts.data import load_data, load_tsf
from alignts.errors import AlignTSError, DataError, InputError, NonFiniteOutputError, ShapeError
from alignts.runtime.forecaster import Forecaster, Plan
from alignts.runtime.manifest import Manifest

L, H = 8, 3


class EchoForecaster(Forecaster):
    """The base class's input and output checks around a model that repeats the last value H times."""

    def __init__(self, n_channels: int | None = None, scaler: dict | None = None, out=None):
        config = {"context_len": L, "horizon": H, "n_channels": n_channels, "patch_len": L, "stride": L,
                  "n_patches": 2}
        if scaler:
            config["scaler"] = scaler
        super().__init__(".", Manifest(paradigm="internal", architecture="echo", files={}, variants=(),
                                       config=config))
        self._out = out
        self._plan = Plan(variant="echo", backend="none", dtype="f32", device="cpu", provider="echo",
                          context_len=L, horizon=H, batch_size=2, n_channels=n_channels or 0)

    def _open(self, variant, device, threads, batch_size):  # pragma: no cover - never planned
        return "echo"

    def _forecast(self, x):
        if self._out is not None:
            return np.full(x.shape[:2] + (H,), self._out, dtype=np.float32)
        return np.repeat(x[..., -1:], H, axis=-1)


def _csv(tmp_path, text: str, name: str = "s.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _series(n=12, scale=1.0):
    return (np.sin(np.arange(n) / 2.0) + 2.0) * scale


# ------------------------------------------------------------------------------ defect 4: float32 range

@pytest.mark.parametrize("scale", [1e-300, 1e-308, 1e-40])
def test_values_that_underflow_float32_are_refused(scale):
    with pytest.raises(InputError, match=r"below float32's smallest normal.*Fix: rescale") as e:
        EchoForecaster().forecast_scaled(_series(scale=scale)[None])
    assert "(b=0, c=0)" in str(e.value)


def test_small_but_representable_values_and_zeros_forecast():
    y = EchoForecaster().forecast_scaled(np.stack([_series(scale=1e-30), np.zeros(12)]))
    assert y.shape == (1, 2, H) and np.isfinite(y).all()
    np.testing.assert_allclose(y[0, 0], np.float32(_series(scale=1e-30)[-1]), rtol=1e-6)


def test_huge_value_reported_as_written_not_as_inf():
    x = _series()
    x[-2] = 1e308
    with pytest.raises(InputError) as e:
        EchoForecaster().forecast_scaled(x[None])
    msg = str(e.value)
    assert "1e+308" in msg and "t=-2" in msg and "float32" in msg and "Fix" in msg and "inf" not in msg


def test_scaler_that_erases_the_series_is_refused():
    """CSV values near 1e-308 through a training scaler fitted near 1: float32 sees a flat line."""
    f = EchoForecaster(scaler={"mean": [10.0], "std": [3.0]})
    with pytest.raises(InputError, match=r"constant in float32 after the bundle's training scaler.*mean 10"):
        f.scale(_series(scale=1e-308)[None])
    with pytest.raises(InputError, match=r"overflows when the bundle's training scaler"):
        EchoForecaster(scaler={"mean": [0.0], "std": [1e-10]}).scale(_series(scale=1e300)[None])
    flat = np.full((1, 12), 5.0)
    np.testing.assert_array_equal(f.scale(flat), (flat - 10) / 3)  # a really constant series is fine
    np.testing.assert_allclose(f.unscale(f.scale(_series()[None])), _series()[None])


def test_non_finite_forecast_fails_with_the_reason():
    with pytest.raises(NonFiniteOutputError, match=r"NaN/inf.*index \(0, 0, 0\).*spans") as e:
        EchoForecaster(out=np.nan).forecast_scaled(_series()[None])
    assert "re-export" in str(e.value)
    with pytest.raises(NonFiniteOutputError, match="inverse"):
        EchoForecaster(scaler={"mean": [0.0], "std": [1e300]}).unscale(np.full((1, 1, H), 1e10))


# ------------------------------------------------------------------------ defect 4: complex and masked

def test_complex_input_is_refused():
    x = _series().astype(complex) + 1j
    with pytest.raises(InputError, match="complex.*imaginary"):
        EchoForecaster().forecast_scaled(x[None])
    for obj in (list(x), list(x.astype(np.complex64))):  # Python complex, numpy complex scalars
        with pytest.raises(InputError, match="complex"):
            EchoForecaster().forecast_scaled(np.array([obj], dtype=object))
    with pytest.raises(InputError, match="complex"):
        EchoForecaster().forecast_scaled(pd.DataFrame({"a": x}))


def test_masked_entries_are_missing_values():
    x = np.ma.masked_array(_series()[None], mask=np.zeros((1, 12), bool))
    x.mask[0, -3] = True
    x.data[0, -3] = 1e6  # a masked outlier must not reach the model
    with pytest.raises(InputError, match=r"NaN/inf values, e.g. at \(b=0, c=0, t=-3\)"):
        EchoForecaster().forecast_scaled(x)
    x.mask[0, -3] = False
    x.data[0, -3] = 2.0
    x.mask[0, 0] = True  # outside the last L points: not used
    np.testing.assert_allclose(EchoForecaster().forecast_scaled(x)[0, 0], np.float32(_series()[-1]))


# ------------------------------------------------------------- defect 5: empty, dict, ragged, text input

@pytest.mark.parametrize("x,err,pattern", [
    (np.zeros((0, 1, L)), ShapeError, r"at least one series.*\(0, 1, 8\)"),
    (np.zeros((2, 0, L)), ShapeError, r"at least one series"),
    ([], ShapeError, r"expected x as"),
    ({"a": np.ones(L)}, InputError, r"got a dict with keys \['a'\].*np.stack"),
    ([np.ones(L), np.ones(L + 1)], InputError, r"equal lengths"),
    (np.array([["a"] * L]), InputError, r"dtype <U1.*real numbers"),
    (np.array([[None, "x"] * 4], dtype=object), InputError, r"cannot be read as an array of real numbers"),
    ([[10 ** 400] * L], InputError, r"OverflowError"),
    (np.zeros((1, 1, L), dtype="datetime64[s]"), InputError, r"dtype datetime64"),
    (pd.DataFrame({"name": ["x"] * L}), ShapeError, r"at least one series"),
])
def test_bad_forecast_inputs_raise_input_errors(x, err, pattern):
    with pytest.raises(err, match=pattern):
        EchoForecaster().forecast_scaled(x)


def test_forecast_input_forms_that_work():
    f = EchoForecaster(n_channels=2)
    want = np.float32(_series()[-1])
    for x in (np.stack([_series(), _series()]), [list(_series()), list(_series())],
              pd.DataFrame({"a": _series(), "b": _series(), "label": ["x"] * 12}),
              pd.DataFrame({"a": pd.array(_series().astype(int), dtype="Int64"), "b": _series()})):
        y = f.forecast_scaled(x)
        assert y.shape == (1, 2, H) and np.isfinite(y).all()
    np.testing.assert_allclose(f.forecast_scaled(np.stack([_series(), _series()]))[0, 1], want)


# ------------------------------------------------------------------------------- defect 4: CSV dates

@pytest.mark.parametrize("unit,factor", [("s", 1), ("ms", 10 ** 3), ("us", 10 ** 6), ("ns", 10 ** 9)])
def test_integer_epoch_dates_by_magnitude(tmp_path, unit, factor):
    t0 = 1467331200  # 2016-07-01 00:00:00 UTC
    rows = "".join(f"{(t0 + 3600 * i) * factor},{i}\n" for i in range(5))
    d = load_data(_csv(tmp_path, "date,v\n" + rows))
    assert pd.Timestamp(d.timestamps[0]) == pd.Timestamp("2016-07-01") and d.freq == "h", unit


def test_integer_dates_yyyymmdd_and_step_numbers(tmp_path):
    d = load_data(_csv(tmp_path, "date,v\n20160701,1\n20160702,2\n20160703,3\n20160704,4\n"))
    assert pd.Timestamp(d.timestamps[1]) == pd.Timestamp("2016-07-02") and d.freq == "D"
    s = load_data(_csv(tmp_path, "Timestamp,v\n0,1\n1,2\n2,3\n", "steps.csv"))
    assert s.timestamps is None and s.columns == ("v",)  # rows are numbered, as alignts-run numbers them


@pytest.mark.parametrize("dates,pattern", [
    ("1467331200\n1467331200000\n1467331300", r"neither epoch times of one unit.*1467331200000"),
    ("5\n3\n9", r"neither epoch times.*increasing step numbers"),
    ("12345678901\n12345678902\n12345678903", r"neither epoch"),  # between seconds and milliseconds
])
def test_ambiguous_integer_dates_are_refused(tmp_path, dates, pattern):
    rows = "".join(f"{t},{i}\n" for i, t in enumerate(dates.split("\n")))
    with pytest.raises(DataError, match=pattern) as e:
        load_data(_csv(tmp_path, "date,v\n" + rows))
    assert "Fix" in str(e.value)


def test_dates_past_the_nanosecond_range_are_refused(tmp_path):
    with pytest.raises(DataError, match="outside 1677-09-22..2262-04-11"):
        load_data(_csv(tmp_path, "date,v\n2300-01-01,1\n2300-01-02,2\n2300-01-03,3\n"))


def test_mixed_utc_offsets_are_converted(tmp_path):
    d = load_data(_csv(tmp_path, "date,v\n2020-01-01 01:00+01:00,1\n2020-01-01 03:00+02:00,2\n"
                                 "2020-01-01 04:00+02:00,3\n"))
    assert [str(pd.Timestamp(t)) for t in d.timestamps] == ["2020-01-01 00:00:00", "2020-01-01 01:00:00",
                                                           "2020-01-01 02:00:00"]


def test_duplicate_timestamps_are_refused(tmp_path):
    with pytest.raises(DataError) as e:
        load_data(_csv(tmp_path, "date,v\n2020-01-01,1\n2020-01-02,2\n2020-01-02,3\n2020-01-03,4\n"))
    msg = str(e.value)
    assert "repeats timestamps" in msg and "2020-01-02" in msg and "[1, 2]" in msg and "Fix" in msg


def test_duplicate_tsf_series_names_are_refused(tmp_path):
    p = _csv(tmp_path, "@attribute series_name string\n@data\nA:1,2,3\nB:4,5\nA:6,7\n", "d.tsf")
    with pytest.raises(DataError, match=r"d.tsf:5: series name 'A' repeats \(first on line 3\).*Fix"):
        load_tsf(p)


# ------------------------------------------------------------------------- defect 5: CSV/.tsf messages

def test_bare_attribute_line_is_a_data_error(tmp_path):
    p = _csv(tmp_path, "@attribute\n@data\nA:1,2\n", "b.tsf")
    with pytest.raises(DataError, match=r"b.tsf:1: expected '@attribute NAME TYPE'.*Fix"):
        load_tsf(p)


def test_tsf_overflowing_value_names_the_text(tmp_path):
    p = _csv(tmp_path, "@attribute series_name string\n@data\nA:1,1e999,3\n", "o.tsf")
    with pytest.raises(DataError, match=r"'1e999' at position 1.*beyond float64"):
        load_tsf(p)
    q = _csv(tmp_path, "@attribute series_name string\n@horizon ²\n@data\nA:1,2\n", "h.tsf")
    assert load_tsf(q).horizon is None  # a horizon that is not a plain number is ignored


def test_integers_beyond_64_bits_are_numbers(tmp_path):
    p = _csv(tmp_path, "date,a,b\n2020-01-01,18446744073709551616,1\n2020-01-02,-18446744073709551617,2\n"
                       "2020-01-03,3,3\n")
    for cols in (None, ["a"]):
        d = load_data(p, columns=cols)
        assert d.values[:, 0].tolist() == [2.0 ** 64, -(2.0 ** 64), 3.0]
    with pytest.raises(DataError, match=r"holds inf.*beyond float64"):
        load_data(_csv(tmp_path, "a\n1" + "0" * 400 + "\n2\n", "w.csv"))


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_semicolon_tab_and_pipe_separated_csv(tmp_path, sep):
    rows = "".join(f"2020-01-0{i + 1}{sep}{i}.5{sep}{2 * i}\n" for i in range(4))
    d = load_data(_csv(tmp_path, f"date{sep}a{sep}b\n" + rows))
    assert d.columns == ("a", "b") and d.values[:, 0].tolist() == [0.5, 1.5, 2.5, 3.5] and d.freq == "D"


def test_semicolon_csv_with_decimal_commas(tmp_path):
    d = load_data(_csv(tmp_path, "date;a\n2020-01-01;1,5\n2020-01-02;2,5\n2020-01-03;3,5\n"))
    assert d.values[:, 0].tolist() == [1.5, 2.5, 3.5]


def test_no_numeric_columns_says_what_was_found(tmp_path):
    with pytest.raises(DataError) as e:
        load_data(_csv(tmp_path, "date a b\n2020-01-01 x y\n"))
    msg = str(e.value)
    assert "',' as the separator" in msg and "'date a b'" in msg and "Fix" in msg


def test_unreadable_paths_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_tsf(tmp_path)  # a folder
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "absent.tsf")


# ------------------------------------------------------------------- end to end on the numeric LM

@pytest.fixture(scope="module")
def injective_bundle(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective

    out = tmp_path_factory.mktemp("inj") / "bundle"
    fit_injective(out, InjectiveFitConfig(context_len=L, horizon=2, samples=1, greedy=True))
    return out


def test_cli_refuses_csv_values_near_1e_308(injective_bundle, tmp_path, capsys):
    from alignts.cli import main

    ts = pd.date_range("2020-01-01", periods=12, freq="h")
    p = tmp_path / "tiny.csv"
    pd.DataFrame({"date": ts, "x": _series(scale=1e-308)}).to_csv(p, index=False)
    assert main(["forecast", str(injective_bundle), "--data", str(p), "--variant", "gguf-q8_0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "below float32's smallest normal" in err[0]
    ok = tmp_path / "ok.csv"
    pd.DataFrame({"date": ts, "x": _series(scale=1e-30)}).to_csv(ok, index=False)
    assert main(["forecast", str(injective_bundle), "--data", str(ok), "--variant", "gguf-q8_0"]) == 0
    out = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))["mean"].to_numpy()
    assert np.isfinite(out).all() and 1e-31 < np.abs(out).max() < 1e-29  # the forecast keeps the data's scale


def test_real_model_refuses_or_forecasts_finite(injective_bundle):
    from alignts.runtime import load

    f = load(injective_bundle)
    f.plan(variant="gguf-q8_0")
    for x in (_series(scale=3e38), _series(scale=1e-37), -_series(), np.zeros(12)):
        try:
            y = f.forecast_scaled(x[None])
        except AlignTSError:
            continue
        assert np.isfinite(y).all()
