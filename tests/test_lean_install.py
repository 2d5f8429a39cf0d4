"""The lean install: what the core needs and what lives in extras, one version source, optional packages that
fail with the install command (never a raw ImportError), and onnxruntime with onnxruntime-gpu refused."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

import alignts
from alignts.errors import BackendUnavailableError

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
CORE = {"numpy", "numba", "pandas", "gguf", "tokenizers", "tqdm"}


def _names(reqs) -> set[str]:
    import re

    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_core_is_lean():
    assert _names(PYPROJECT["project"]["dependencies"]) == CORE
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert _names(extras["cpu"]) == {"onnxruntime"}
    assert "statsmodels" in _names(extras["data"]) and "matplotlib" in _names(extras["plot"])
    assert "psutil" in _names(extras["bench"]) and {"psutil", "pytest", "hypothesis"} <= _names(extras["test"])


def test_one_version_source():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "alignts.__version__"}
    try:
        assert metadata.version("alignts") == alignts.__version__
    except metadata.PackageNotFoundError:
        pass


def test_setuptools_reads_the_license_expression():
    # PEP 639 `license = "Apache-2.0"` needs setuptools >= 77
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    req = PYPROJECT["build-system"]["requires"]
    assert any(r.replace(" ", "").startswith("setuptools>=") and int(r.split(">=")[1].split(".")[0]) >= 77
               for r in req), req


@pytest.fixture
def without(monkeypatch):
    """Make modules unimportable in this process (``sys.modules[name] = None`` raises ImportError)."""
    def hide(*names: str) -> None:
        for name in names:
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, loaded)
            monkeypatch.setitem(sys.modules, name, None)
    return hide


def test_statsmodels_missing_names_the_data_extra(without):
    from alignts.data.load import load_data

    without("statsmodels")
    with pytest.raises(BackendUnavailableError, match=r"statsmodels is not installed.*alignts\[data\]"):
        load_data("statsmodels:co2")


def test_numeric_lm_corpus_names_the_data_extra(without):
    import numpy as np

    from alignts.export import numeric_lm

    without("statsmodels", "scipy")
    with pytest.raises(BackendUnavailableError, match=r"alignts\[data\]"):
        numeric_lm.statsmodels_series()
    with pytest.raises(BackendUnavailableError, match=r"scipy is not installed.*alignts\[data\]"):
        numeric_lm._ar1(np.zeros(4), 0.5)


def test_plot_without_matplotlib_names_the_plot_extra(without):
    import inspect

    from alignts.cli import forecast

    without("matplotlib")
    with pytest.raises(BackendUnavailableError, match=r"matplotlib is not installed.*for --plot.*alignts\[plot\]"):
        forecast._plot(*[None] * len(inspect.signature(forecast._plot).parameters))  # fails before using them


def test_bench_report_without_matplotlib(without):
    from alignts.bench import report

    without("matplotlib")
    with pytest.raises(BackendUnavailableError, match=r"alignts\[bench\]"):
        report._plt()


def test_demo_says_what_to_install(without, tmp_path, capsys):
    from alignts.cli import main

    without("statsmodels")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert "statsmodels ([data])" in err and "pip install 'alignts[cpu,export,data,plot]'" in err
    assert not (tmp_path / "demo").exists()  # refused before doing anything


def test_both_onnxruntimes_refused(monkeypatch):
    from alignts.runtime.backends import onnx

    real = metadata.version

    def version(name):
        if name in onnx.ORT_DISTRIBUTIONS:
            return "1.0"
        return real(name)

    onnx.ort_distributions.cache_clear()
    monkeypatch.setattr(metadata, "version", version)
    try:
        with pytest.raises(BackendUnavailableError) as e:
            onnx._ort()
        msg = str(e.value)
        assert "onnxruntime 1.0 and onnxruntime-gpu 1.0 are installed together" in msg
        assert "pip uninstall -y onnxruntime onnxruntime-gpu" in msg and "alignts[cpu]" in msg
        # every ONNX backend goes through that one function
        from alignts.runtime.backends import onnx_causal

        assert onnx_causal._ort is onnx._ort
        with pytest.raises(BackendUnavailableError, match="installed together"):
            onnx_causal.OrtCausalLM("missing.onnx")
    finally:
        onnx.ort_distributions.cache_clear()


def test_one_onnxruntime_loads():
    pytest.importorskip("onnxruntime")
    from alignts.runtime.backends import onnx

    onnx.ort_distributions.cache_clear()
    assert len(onnx.ort_distributions()) == 1
    assert onnx._ort().get_available_providers()


def test_missing_onnxruntime_names_the_cpu_extra(without, monkeypatch):
    from alignts.runtime.backends import onnx

    monkeypatch.setattr(onnx, "ort_distributions", lambda: ())
    without("onnxruntime")
    with pytest.raises(BackendUnavailableError, match=r"onnxruntime is not installed.*alignts\[cpu\]"):
        onnx._ort()
