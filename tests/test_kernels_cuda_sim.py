"""The CUDA kernels without a GPU: tests/test_kernels_cuda.py under numba's CUDA simulator (in a subprocess,
since NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported), the lazy import, and the
error `alignts bench kernels --device cuda` gives where CUDA is missing."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from alignts.kernels import cuda_digits, digits

REPO = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.pop("NUMBA_DISABLE_CUDA", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                        if p])
    env.update(extra)
    return env


def test_cuda_kernels_under_simulator():
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                        str(REPO / "tests" / "test_kernels_cuda.py")], cwd=REPO, capture_output=True, text=True,
                       env=_env(NUMBA_ENABLE_CUDASIM="1"), timeout=600)
    tail = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, tail
    assert " passed" in r.stdout and "skipped" not in r.stdout and "failed" not in r.stdout, tail


def test_import_is_lazy_and_available_explains():
    code = ("import sys, alignts.kernels, alignts.kernels.cuda_norm_patch as n, alignts.kernels.cuda_digits as d; "
            "assert 'numba.cuda' not in sys.modules, 'numba.cuda imported eagerly'; "
            "ok, why = n.available(); assert not ok and 'CUDA' in why, why; "
            "assert d.available() == (ok, why)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=_env(NUMBA_DISABLE_CUDA="1"))


def test_bench_cuda_without_cuda_says_why():
    code = "from alignts.cli import main; raise SystemExit(main(['bench', 'kernels', '--device', 'cuda']))"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       env=_env(NUMBA_DISABLE_CUDA="1"))
    assert r.returncode == 2, r.stderr
    assert "alignts bench: error:" in r.stderr and "needs CUDA" in r.stderr and "Fix:" in r.stderr, r.stderr


def test_codec_limits_match_cpu_module():
    assert cuda_digits.MAX_ABS == digits.MAX_ABS and cuda_digits.MAX_DIGITS == digits.MAX_DIGITS
    assert (cuda_digits.MAX_DIGITS + 1) == digits._POW10.size and np.all(digits._POW10 > 0)
