"""Fuzz targets for the data side (issue 11, defects 4 and 5): the CSV loader, the Monash .tsf loader and the
inputs of ``Forecaster.forecast``.

Property everywhere: a correct result or an AlignTSError subclass, never another exception. A loaded series has
no inf, a mask of its shape, unique column names and strictly increasing timestamps; a forecast is finite, of
shape [B, C, H] (and for the echo model equals the last float32 value of each series).

Seeds: small synthetic files in the layouts the loaders accept, plus the first 300 lines of ETTh1.csv and a
slice of a Monash .tsf from ../shared/data when it is there (without it the synthetic seeds run alone).
Budget: the ``alignts-fuzz`` profile (tests/fuzz/conftest.py); ALIGNTS_FUZZ_EXAMPLES sets it.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from byte_mutations import mutate
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_input_robust import EchoForecaster

from alignts.data import describe, load_data, load_tsf
from alignts.errors import AlignTSError

FUZZ = settings.get_profile("alignts-fuzz")
DATA = Path(os.environ.get("ALIGNTS_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def _synthetic_csvs() -> list[bytes]:
    ts = pd.date_range("2020-01-01", periods=24, freq="h")
    x = np.round(np.sin(np.arange(24) / 3.0) * 10, 3)
    base = pd.DataFrame({"date": ts.astype(str), "x": x, "y": x * 2 + 1, "label": ["a"] * 24})
    out = [base.to_csv(index=False).encode()]
    out.append(base.to_csv(index=False, sep=";").encode())
    out.append(base.to_csv(index=False, sep="\t").encode())
    out.append(base.drop(columns=["date", "label"]).to_csv(index=False).encode())
    epoch = base.assign(date=(ts.asi8 // 10 ** 9)).drop(columns=["label"])
    out.append(epoch.to_csv(index=False).encode())
    gaps = base.copy()
    gaps.loc[[3, 7], "x"] = np.nan
    out.append(gaps.to_csv(index=False).encode())
    out.append(b'"date","a b","c,d"\n"2020-01-01",1,2\n"2020-01-02",3,4\n"2020-01-03",5,6\n')
    return out


def _real_csvs() -> list[bytes]:
    p = DATA / "ETT" / "ETTh1.csv"
    if not p.is_file():
        return []
    with open(p, "rb") as f:
        return [b"".join(f.readline() for _ in range(300))]


TSF = (b"# a comment\n@relation Test\n@attribute series_name string\n@attribute start_timestamp date\n"
       b"@frequency monthly\n@horizon 2\n@missing true\n@equallength false\n@data\n"
       b"A:2000-01-01 00-00-00:1,2,3,4,5\nB:2000-03-01 00-00-00:10,?,30\nC:2001-01-01 00-00-00:7.5,8.25\n")


def _real_tsfs() -> list[bytes]:
    p = DATA / "monash" / "tourism_yearly_dataset.tsf"
    if not p.is_file():
        return []
    head, n_data = [], 0
    with open(p, "rb") as f:
        for line in f:
            head.append(line)
            n_data += line.startswith(b"T")  # data lines: T1:..., T2:...
            if n_data >= 6:
                break
    return [b"".join(head)]


CSV_SEEDS = _synthetic_csvs() + _real_csvs()
TSF_SEEDS = [TSF] + _real_tsfs()


def _check_loaded(d) -> None:
    """Invariants of a loaded series, and `alignts data describe` on it (a summary or an AlignTSError)."""
    assert d.values.ndim == 2 and d.values.dtype == np.float64
    assert not np.isinf(d.values).any()
    assert d.mask.shape == d.values.shape and (d.mask == ~np.isnan(d.values)).all()
    assert len(set(d.columns)) == len(d.columns) == d.values.shape[1]
    if d.timestamps is not None:
        assert d.timestamps.dtype == np.dtype("datetime64[ns]") and (np.diff(d.timestamps.astype(np.int64)) > 0).all()
    for L, H in ((None, None), (4, 2)):
        try:
            json.dumps(describe(d, context_len=L, horizon=H))
        except AlignTSError:
            pass


def _load(path: Path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' dtype and date-inference warnings are not findings
        try:
            return load_data(path, **kw)
        except AlignTSError:
            return None


def test_seed_corpus_loads(tmp_path):
    """The seeds themselves are valid inputs (so the mutations start from accepted files)."""
    for i, seed in enumerate(CSV_SEEDS):
        p = tmp_path / f"s{i}.csv"
        p.write_bytes(seed)
        _check_loaded(load_data(p))
    for i, seed in enumerate(TSF_SEEDS):
        p = tmp_path / f"s{i}.tsf"
        p.write_bytes(seed)
        _check_loaded(load_data(p))


def test_real_seeds_present():
    if not _real_csvs() or not _real_tsfs():
        pytest.skip(f"real seed files not found under {DATA}; the synthetic seeds ran alone")
    assert len(CSV_SEEDS) > len(_synthetic_csvs()) and len(TSF_SEEDS) == 2


@FUZZ
@given(data=st.data(), seed=st.sampled_from(CSV_SEEDS), pick_columns=st.booleans())
def test_fuzz_csv_loader(tmp_path_factory, data, seed, pick_columns):
    p = tmp_path_factory.mktemp("csv") / "f.csv"
    p.write_bytes(mutate(data, seed))
    columns = None
    if pick_columns:
        header = p.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
        names = [c.strip('"') for c in header.split(",")]
        columns = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    d = _load(p, columns=columns)
    if d is not None:
        _check_loaded(d)


@FUZZ
@given(data=st.data(), seed=st.sampled_from(TSF_SEEDS))
def test_fuzz_tsf_loader(tmp_path_factory, data, seed):
    p = tmp_path_factory.mktemp("tsf") / "f.tsf"
    p.write_bytes(mutate(data, seed))
    try:
        d = load_tsf(p)
    except AlignTSError:
        return
    _check_loaded(d)
    assert d.collection and (d.horizon is None or d.horizon >= 0)


# ------------------------------------------------------------------------------------- forecast inputs

EXTREMES = [np.nan, np.inf, -np.inf, 1e308, -1e308, 1.7976931348623157e308, 1e-300, 5e-324, 3.4e38, 3.5e38,
            1.2e-38, 1e-39, 1e-45, 0.0, -0.0, 1e18, 1e20]
_REAL = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(EXTREMES),
                  st.floats(-10, 10))
_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int8, np.uint64, np.bool_, np.complex128,
           np.complex64, np.dtype("U3"), np.dtype("datetime64[s]")]
_SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12)


@st.composite
def plain_arrays(draw, shapes=_SHAPES):
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    shape = draw(shapes)
    if dtype == np.float64:
        return draw(hnp.arrays(dtype, shape, elements=_REAL))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def masked_arrays(draw):
    a = draw(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=3, max_side=12), elements=_REAL))
    mask = draw(hnp.arrays(np.bool_, a.shape))
    return np.ma.masked_array(a, mask=mask)


_SCALAR = st.one_of(_REAL, st.integers(-(2 ** 70), 2 ** 70), st.text(max_size=3), st.none(),
                    st.complex_numbers(allow_nan=True), st.booleans())
FORECAST_INPUTS = st.one_of(
    plain_arrays(),
    plain_arrays(),
    masked_arrays(),
    st.dictionaries(st.text(max_size=3), plain_arrays(), max_size=3),
    st.lists(st.lists(_REAL, max_size=14), max_size=3),  # [C, L] lists, often ragged
    st.lists(st.lists(st.lists(_SCALAR, max_size=12), max_size=2), max_size=2),  # [B, C, L] of anything
    hnp.arrays(object, hnp.array_shapes(min_dims=1, max_dims=3, max_side=10), elements=_SCALAR),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.lists(_SCALAR, min_size=10, max_size=10),
                    min_size=1).map(pd.DataFrame),
    st.one_of(st.none(), st.text(max_size=5), st.binary(max_size=5), _REAL),
)


@FUZZ
@given(x=FORECAST_INPUTS, n_channels=st.sampled_from([None, 1, 2]))
def test_fuzz_forecast_inputs(x, n_channels):
    f = EchoForecaster(n_channels=n_channels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            y = f.forecast_scaled(x)
        except AlignTSError:
            return
    assert y.ndim == 3 and y.shape[2] == 3 and y.shape[0] >= 1 and y.shape[1] >= 1
    assert np.isfinite(y).all()
    if isinstance(x, np.ndarray) and not isinstance(x, np.ma.MaskedArray) and x.dtype.kind in "biuf":
        a = x.astype(np.float64)
        a = a[None] if a.ndim == 2 else a
        np.testing.assert_array_equal(y, np.repeat(a[..., -1:].astype(np.float32), 3, axis=-1))


@pytest.fixture(scope="module")
def numeric_lm():
    """The embedded numeric LM as an Injective bundle (llama.cpp, greedy, 1 sample), planned once."""
    pytest.importorskip("llama_cpp")
    import tempfile

    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective
    from alignts.runtime import load

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bundle"
        fit_injective(out, InjectiveFitConfig(context_len=8, horizon=2, samples=1, greedy=True))
        f = load(out)
        f.plan(variant="gguf-q8_0")
        yield f


_SCALES = st.sampled_from([1.0, 1e-30, 1e-37, 1e-300, 1e15, 1e30, 1e38, 1e300])


@settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 10))  # a real LM per example
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(8, 11)), elements=_REAL),
       scale=_SCALES)
def test_fuzz_forecast_real_model(numeric_lm, x, scale):
    with np.errstate(all="ignore"):
        x = x * scale
    try:
        y = numeric_lm.forecast_scaled(x)
    except AlignTSError:
        return
    assert y.shape == x.shape[:2] + (2,) and np.isfinite(y).all()
