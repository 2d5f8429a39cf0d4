"""`alignts bench kernels --quick`: runs at tiny sizes and writes the documented JSON structure."""

import json
import math

from alignts.bench.kernels import FORMAT, TARGETS, to_markdown
from alignts.cli import main

KERNELS = {"norm_patchify", "encode_digits", "decode_digits", "llmtime_scaler", "prompt_stats"}


def test_bench_kernels_quick_json(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    assert main(["bench", "kernels", "--quick", "--repeats", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["format"] == FORMAT and data["version"] == 1 and data["quick"] is True and data["repeats"] == 2
    m = data["machine"]
    for key in ("cpu_count", "numpy", "numba", "python"):
        assert m[key], key
    rows = data["rows"]
    assert {r["kernel"] for r in rows} == KERNELS
    for kernel in KERNELS:  # two sizes of every kernel
        assert len({r["size"] for r in rows if r["kernel"] == kernel}) >= 2, kernel
    for r in rows:
        assert set(r) == {"kernel", "size", "shape", "n_values", "numba_ms", "numpy_ms", "ratio", "target",
                          "repeats"}
        assert r["numba_ms"] > 0 and r["numpy_ms"] > 0 and r["repeats"] == 2
        assert abs(r["ratio"] - r["numpy_ms"] / r["numba_ms"]) <= 1e-2 * r["ratio"]  # ms are rounded to 1 ns
        assert r["n_values"] == math.prod(r["shape"])
    assert to_markdown(data) in printed
    assert str(out) in printed


def test_targets_name_full_size_cases():
    assert set(k for k, _ in TARGETS) <= KERNELS


def test_bench_bad_targets(capsys):
    assert main(["bench", "some/bundle"]) == 2
    assert "not a bundle folder" in capsys.readouterr().err
    assert main(["bench", "kernels", "other"]) == 2
