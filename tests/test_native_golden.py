"""Python and C kernels cannot drift: golden vectors regenerated now equal the committed ones, and the C
library (built with CMake) matches vectors freshly written by the Python kernels."""

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "native" / "golden"
KERNELS = ("norm", "patch", "scaler", "digits", "sampler", "stream")


def _golden_module():
    spec = importlib.util.spec_from_file_location("alignts_golden_script", REPO / "scripts" / "golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("golden")
    _golden_module().write_all(out)
    return out


def test_committed_golden_is_current(fresh):
    for kernel in KERNELS:
        committed = (GOLDEN / f"{kernel}.txt").read_text()
        assert (fresh / f"{kernel}.txt").read_text() == committed, (
            f"native/golden/{kernel}.txt differs from what the Python kernels give now. "
            "Fix: run `python scripts/golden.py` (and check the C kernels with `bash scripts/native test`)")


def test_golden_header_and_version(fresh):
    mod = _golden_module()
    for kernel in KERNELS:
        first = (fresh / f"{kernel}.txt").read_text().splitlines()[0]
        assert first == f"alignts-golden {mod.GOLDEN_VERSION} {kernel}"


@pytest.mark.skipif(shutil.which("cmake") is None or (shutil.which("cc") or shutil.which("gcc")) is None,
                    reason="cmake or a C compiler is not installed")
def test_c_kernels_match_fresh_golden(fresh):
    env = dict(os.environ)
    build = Path(env.setdefault("ALIGNTS_NATIVE_BUILD", str(REPO / "build" / "native")))
    subprocess.run(["bash", str(REPO / "scripts" / "native"), "build"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    exe = build / "alignts_golden_test"
    for kernel in KERNELS:
        ok = subprocess.run([str(exe), kernel, str(fresh)], capture_output=True, text=True)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        flipped = subprocess.run([str(exe), kernel, str(fresh), "--flip"], capture_output=True, text=True)
        assert flipped.returncode == 0 and "caught" in flipped.stdout, flipped.stdout + flipped.stderr
    api = subprocess.run([str(build / "alignts_api_test")], capture_output=True, text=True)
    assert api.returncode == 0, api.stdout + api.stderr
