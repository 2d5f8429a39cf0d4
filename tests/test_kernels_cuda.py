"""CUDA kernels (alignts/kernels/cuda_*.py) against their NumPy twins, on a GPU or numba's CUDA simulator.

Without a usable CUDA device these tests skip; tests/test_kernels_cuda_sim.py runs this module again in a
subprocess with NUMBA_ENABLE_CUDASIM=1 (the variable must be set before numba.cuda is first imported), so CI
covers the kernels without a GPU. On a GPU machine: ``python -m pytest tests/test_kernels_cuda.py``.
Shapes stay small: the simulator runs every CUDA thread as a Python thread.
"""

import json

import numpy as np
import pytest

from alignts.bench import kernels as bench
from alignts.errors import InputError, ShapeError
from alignts.kernels import cuda_digits, cuda_norm_patch, digits, patch

OK, WHY = cuda_norm_patch.available()
pytestmark = pytest.mark.skipif(not OK, reason="no CUDA device (test_kernels_cuda_sim.py runs this module under "
                                "the simulator); " + WHY.split("(")[0].strip())


@pytest.mark.parametrize("shape,dtype,p,s", [((1, 16), np.float32, 16, 8),     # S=1, one patch
                                             ((1, 37), np.float32, 16, 8),     # L not a multiple of stride
                                             ((2, 70), np.float32, 16, 8),     # L > threads per block (sim)
                                             ((2, 1, 21), np.float64, 8, 5)])  # leading shape, float64
def test_norm_patchify_matches_numpy(shape, dtype, p, s):
    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape) * 4 + 2).astype(dtype)
    out, mean, std = cuda_norm_patch.norm_patchify_cuda(x, p, s)
    ref = patch.norm_patchify_ref(x, p, s)
    assert out.shape == ref[0].shape and out.dtype == ref[0].dtype
    assert mean.shape == ref[1].shape == std.shape and mean.dtype == np.float64
    tol = bench.CUDA_TOL[np.dtype(dtype)]
    np.testing.assert_allclose(out, ref[0], rtol=tol, atol=tol)
    np.testing.assert_allclose(mean, ref[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std, ref[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fill_nan", [True, False])
def test_norm_patchify_nan(fill_nan):
    x = np.random.default_rng(1).normal(size=(2, 30)).astype(np.float32)
    x[0, ::4] = np.nan
    x[1, -1] = np.nan  # the replication pad repeats it
    out, mean, std = cuda_norm_patch.norm_patchify_cuda(x, 16, 8, fill_nan=fill_nan)
    ref = patch.norm_patchify_ref(x, 16, 8, fill_nan=fill_nan)
    np.testing.assert_allclose(out, ref[0], rtol=1e-6, atol=1e-6)  # NaN positions must agree too
    np.testing.assert_allclose(std, ref[2], rtol=1e-12)


def test_norm_patchify_errors_match_cpu():
    x = np.zeros((2, 3, 20), dtype=np.float32)
    x[..., 0] = 1.0
    bad = x.copy()
    bad[1, 2, 7] = np.inf
    for arr, kind in ((bad, InputError), (x[..., :10], ShapeError)):
        with pytest.raises(kind) as cpu:
            patch.norm_patchify(arr)
        with pytest.raises(kind) as gpu:
            cuda_norm_patch.norm_patchify_cuda(arr)
        assert str(gpu.value) == str(cpu.value)
    empty = x.copy()
    empty[1, 0] = np.nan
    with pytest.raises(InputError, match=r"series 3 \(index \(1, 0\)\) is all NaN"):
        cuda_norm_patch.norm_patchify_cuda(empty)


def test_norm_patchify_device_in_device_out():
    from numba import cuda

    x = np.random.default_rng(2).normal(size=(2, 24)).astype(np.float32)
    out, mean, std = cuda_norm_patch.norm_patchify_cuda(cuda.to_device(x), 16, 8, to_host=False)
    ref = patch.norm_patchify(x, 16, 8)
    np.testing.assert_allclose(out.copy_to_host(), ref[0], rtol=1e-6, atol=1e-6)
    assert mean.copy_to_host().shape == (2, 1)


TABLES = [digits.CodecTable(digit_ids=tuple(range(10, 20)), value_sep=(1, 2), digit_sep=(1,), minus_id=3),
          digits.CodecTable(digit_ids=tuple(range(10)), value_sep=(11,), minus_id=12),
          digits.TEXT_TABLE]


@pytest.mark.parametrize("shape", [(1, 1), (2, 70), (9,), (2, 1, 3)])
def test_encode_digits_equal_to_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    z = rng.normal(size=shape) * 10.0 ** rng.uniform(-4, 4, size=shape)
    z.reshape(-1)[0] = 0.0
    if z.size > 2:
        z.reshape(-1)[1] = -0.0004  # "-0" at precision 3
    if len(shape) == 1:
        z = z.astype(np.float32)
    for table in TABLES:
        ids, lengths = cuda_digits.encode_digits_cuda(z, table, 3)
        rids, rlengths = digits.encode_digits_ref(z, table, 3)
        assert ids.dtype == rids.dtype == np.int64 and lengths.dtype == np.int64
        np.testing.assert_array_equal(ids, rids)
        np.testing.assert_array_equal(lengths, rlengths)


def test_encode_digits_errors_match_cpu():
    table = TABLES[0]
    z = np.ones((2, 6))
    for val in (np.nan, -np.inf, 2e15):
        zb = z.copy()
        zb[1, 4] = val
        with pytest.raises(InputError) as cpu:
            digits.encode_digits(zb, table, 3)
        with pytest.raises(InputError) as gpu:
            cuda_digits.encode_digits_cuda(zb, table, 3)
        assert str(gpu.value) == str(cpu.value)


@pytest.mark.slow  # ~15 s under the simulator; scripts/device_check_kernels.py runs it on a GPU
def test_edge_checks_all_ok():
    rows = bench.cuda_edge_checks()
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad
    assert len(rows) > 20


def test_bench_kernels_cuda_quick_json(tmp_path, capsys):
    from alignts.cli import main

    out = tmp_path / "cuda.json"
    assert main(["bench", "kernels", "--device", "cuda", "--quick", "--repeats", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["format"] == bench.CUDA_FORMAT and data["version"] == 1 and data["all_ok"] is True
    assert {r["kernel"] for r in data["rows"]} == {"norm_patchify", "encode_digits"}
    for r in data["rows"]:
        assert r["ok"] and r["cpu_ms"] > 0 and r["cuda_ms"] > 0 and r["kernel_ms"] > 0 and r["copy_mb"] >= 0
    assert bench.cuda_to_markdown(data) in capsys.readouterr().out
