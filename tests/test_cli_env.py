"""`alignts env`: versions, CPU flags, providers and cache paths, as text and as JSON, without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import alignts
from alignts.cli import env as env_cli
from alignts.cli import main


def _json(*argv: str) -> dict:
    code = ("import json, sys; from alignts.cli import main; rc = main(['env', '--format', 'json', *sys.argv[1:]]); "
            "assert rc == 0; assert 'torch' not in sys.modules, 'alignts env imported torch'")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_json_dump():
    info = _json()
    assert info["alignts"]["version"] == alignts.__version__
    assert info["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert info["packages"]["numpy"] == np.__version__
    assert set(env_cli.PACKAGES) <= set(info["packages"]) and "torch" in info["packages"]
    cpu = info["cpu"]
    assert cpu["logical_cores"] >= 1 and 1 <= cpu["usable_cores"] <= cpu["logical_cores"]
    if sys.platform.startswith("linux"):
        assert cpu["model"] and set(cpu["flags"]) == set(env_cli.CPU_FLAGS)
        assert all(isinstance(v, bool) for v in cpu["flags"].values()) and isinstance(cpu["amx"], bool)
        assert cpu["isa"].startswith(("AVX-512", "AVX2", "no AVX2"))
        assert cpu["memory_total_bytes"] > 0
    assert info["numba_cache"]["enabled"] in (True, False) and info["numba_cache"]["where"]
    assert info["paths"]["backbone_store"].endswith("backbones")
    ort = info["onnxruntime"]
    if info["packages"]["onnxruntime"] or info["packages"]["onnxruntime-gpu"]:
        assert "CPUExecutionProvider" in ort["providers"]
    ll = info["llama_cpp"]
    if info["packages"]["llama-cpp-python"]:
        assert "CPU" in ll["system_info"] and ll["cpu_backend"] and isinstance(ll["gpu_offload"], bool)
    else:
        assert "llama-cpp-python" in ll["error"]


def test_no_llama():
    assert _json("--no-llama")["llama_cpp"] == {"skipped": "--no-llama"}


def test_text(capsys):
    assert main(["env", "--no-llama"]) == 0
    out = capsys.readouterr().out
    for key in ("alignts", "python", "cpu flags", "cores", "numpy", "numba", "onnxruntime providers",
                "numba cache", "backbone store", "llama.cpp"):
        assert any(line.startswith(key + " ") for line in out.splitlines()), (key, out)
    assert alignts.__version__ in out


def test_both_onnxruntimes_reported(monkeypatch):
    from alignts.runtime.backends import onnx

    monkeypatch.setattr(onnx, "ort_distributions", lambda: (("onnxruntime", "1.0"), ("onnxruntime-gpu", "1.0")))
    ort = env_cli._onnxruntime()
    assert ort["distributions"] == ["onnxruntime 1.0", "onnxruntime-gpu 1.0"]
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in ort["error"]
    text = env_cli.to_text({**env_cli.collect(llama=False), "onnxruntime": ort})
    assert "onnxruntime providers  unavailable: onnxruntime 1.0 and onnxruntime-gpu 1.0" in text


def test_cpu_isa_names_the_extensions_the_kernels_use():
    """Benchmark headers state the CPU's vector extensions (AVX2-only and AVX-512 EPYCs and AMX Xeons all occur)."""
    from alignts.runtime.threads import cpu_isa, cpu_label

    assert cpu_isa({"avx2", "fma"}) == "AVX2"
    assert cpu_isa({"sse4_2"}) == "no AVX2"
    assert cpu_isa({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}) == "AVX-512 (vnni, bf16)"
    assert cpu_isa({"avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"}) == "AVX-512 (vnni), AMX (int8, bf16)"
    if sys.platform.startswith("linux"):
        assert cpu_label().endswith(f"({cpu_isa()})") and cpu_isa() != "unknown"
