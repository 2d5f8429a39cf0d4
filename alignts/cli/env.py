"""`alignts env`: what a bug report needs about this machine and install (optimum-cli `env`).

Versions of alignts, Python and the libraries it runs on (read from package metadata: torch is never
imported), the CPU model and the instruction sets the kernels and llama.cpp use, onnxruntime's providers,
llama.cpp's system info and the ggml CPU backend it loaded, where numba caches the kernels and where alignts
looks for backbones. ``--format json`` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

# distributions reported, in order (None when not installed)
PACKAGES = ("numpy", "numba", "llvmlite", "pandas", "onnxruntime", "onnxruntime-gpu", "llama-cpp-python", "gguf",
            "tokenizers", "tqdm", "torch", "transformers", "optimum-onnx", "onnx", "statsmodels", "scipy",
            "matplotlib", "psutil", "numba-cuda")
# /proc/cpuinfo flags that change which kernels run (numba/LLVM, onnxruntime's MLAS, the ggml CPU variant)
CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8")
# environment variables that change what alignts, numba, onnxruntime or llama.cpp do
ENV_VARS = ("ALIGNTS_BACKBONE_PATH", "ALIGNTS_NUMBA_CACHE", "NUMBA_CACHE_DIR", "NUMBA_NUM_THREADS",
            "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "XDG_CACHE_HOME")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text (default) or json: one object with the same facts")
    p.add_argument("--no-llama", action="store_true",
                   help="do not load llama.cpp (its system info and CPU backend are then not reported)")


def run(args) -> int:
    info = collect(llama=not args.no_llama)
    if args.format == "json":
        print(json.dumps(info, indent=2, default=str))
    else:
        print(to_text(info))
    return 0


# ------------------------------------------------------------------------------------------------- facts

def collect(llama: bool = True) -> dict[str, Any]:
    """Every fact `alignts env` prints, as a JSON-able dict. Nothing in it raises: a part that cannot be
    read says why under its ``error`` key."""
    import alignts

    package_dir = Path(alignts.__file__).resolve().parent
    return {
        "alignts": {"version": alignts.__version__, "package_dir": str(package_dir),
                    "package_writable": os.access(package_dir, os.W_OK)},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "libc": " ".join(platform.libc_ver()).strip() or None},
        "cpu": _cpu(),
        "packages": _versions(PACKAGES),
        "onnxruntime": _onnxruntime(),
        "llama_cpp": _llama_cpp() if llama else {"skipped": "--no-llama"},
        "numba_cache": _numba_cache(),
        "paths": _paths(),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }


def _versions(names) -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu() -> dict[str, Any]:
    from alignts.runtime.threads import cpu_isa, cpu_model_and_flags

    model, flags = cpu_model_and_flags()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    out: dict[str, Any] = {
        "model": model or platform.processor() or None,
        "flags": {f: f in flags for f in CPU_FLAGS} if flags is not None else None,
        "amx": any(f.startswith("amx") for f in flags) if flags is not None else None,
        "isa": cpu_isa(flags),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
    }
    out.update(_memory())
    return out


def _memory() -> dict[str, int | None]:
    """MemTotal and MemAvailable (bytes) from /proc/meminfo; None elsewhere."""
    found: dict[str, int | None] = {"memory_total_bytes": None, "memory_available_bytes": None}
    keys = {"MemTotal": "memory_total_bytes", "MemAvailable": "memory_available_bytes"}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    found[keys[k]] = int(v.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found


def _onnxruntime() -> dict[str, Any]:
    from alignts.runtime.backends.onnx import _ort, ort_distributions

    out: dict[str, Any] = {"distributions": [f"{n} {v}" for n, v in ort_distributions()]}
    try:
        ort = _ort()
        out["version"] = ort.__version__
        out["providers"] = list(ort.get_available_providers())
    except Exception as e:  # noqa: BLE001 - a report, not a run: say what failed
        out["error"] = " ".join(str(e).split())
    return out


def _llama_cpp() -> dict[str, Any]:
    """llama.cpp's system info, GPU offload, and the ggml CPU backend library it loaded (Linux: from the
    process's memory map; a GGML_BACKEND_DL build picks one libggml-cpu-<variant>.so for this CPU)."""
    try:
        from alignts.runtime.backends.gguf import _lib

        L = _lib()
        out: dict[str, Any] = {"system_info": L.llama_print_system_info().decode("utf-8", "replace").strip(" |"),
                               "gpu_offload": bool(L.llama_supports_gpu_offload())}
    except Exception as e:  # noqa: BLE001 - a report, not a run: say what failed
        return {"error": " ".join(str(e).split())}
    out["cpu_backend"] = None
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "libggml-cpu" in line}
        out["cpu_backend"] = ", ".join(sorted(os.path.basename(p) for p in libs)) or "built in (no GGML_BACKEND_DL)"
    except OSError:
        pass
    return out


def _numba_cache() -> dict[str, Any]:
    from alignts.kernels import numba_cache

    return {"enabled": numba_cache.CACHE, "where": numba_cache.describe(), "dir": numba_cache.CACHE_DIR}


def _paths() -> dict[str, Any]:
    from alignts.runtime import backbone_store

    store = backbone_store.USER_STORE.expanduser()
    extra = [d for d in os.environ.get(backbone_store.ENV_VAR, "").split(os.pathsep) if d]
    return {"backbone_store": str(store), "backbone_store_exists": store.is_dir(),
            backbone_store.ENV_VAR: extra}


# -------------------------------------------------------------------------------------------------- text

def to_text(info: dict[str, Any]) -> str:
    """The report as aligned ``key: value`` lines, one section per part."""
    a, py, pl, cpu = info["alignts"], info["python"], info["platform"], info["cpu"]
    flags = cpu["flags"]
    rows: list[tuple[str, str]] = [
        ("alignts", f"{a['version']} ({a['package_dir']}{'' if a['package_writable'] else ', read-only'})"),
        ("python", f"{py['version']} {py['implementation']} ({py['executable']})"),
        ("platform", f"{pl['system']} {pl['release']} {pl['machine']}" + (f", {pl['libc']}" if pl["libc"] else "")),
        ("cpu", f"{cpu['model']} ({cpu['isa']})"),
        ("cpu flags", "unknown" if flags is None else
         " ".join(f"{f}={'yes' if on else 'no'}" for f, on in flags.items())),
        ("cores", f"{cpu['usable_cores']} usable of {cpu['logical_cores']}"),
        ("memory", _mem_text(cpu)),
    ]
    for name, version in info["packages"].items():
        rows.append((name, version or "-"))
    ort = info["onnxruntime"]
    rows.append(("onnxruntime providers", ", ".join(ort["providers"]) if "providers" in ort else
                 f"unavailable: {ort.get('error')}"))
    ll = info["llama_cpp"]
    if "skipped" in ll:
        rows.append(("llama.cpp", f"not loaded ({ll['skipped']})"))
    elif "error" in ll:
        rows.append(("llama.cpp", f"unavailable: {ll['error']}"))
    else:
        rows += [("llama.cpp system", ll["system_info"]), ("llama.cpp cpu backend", str(ll["cpu_backend"])),
                 ("llama.cpp gpu offload", "yes" if ll["gpu_offload"] else "no")]
    rows.append(("numba cache", info["numba_cache"]["where"]))
    p = info["paths"]
    rows.append(("backbone store", p["backbone_store"] + ("" if p["backbone_store_exists"] else " (absent)")))
    for k, v in info["env"].items():
        rows.append((f"${k}", v))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _mem_text(cpu: dict[str, Any]) -> str:
    total, avail = cpu.get("memory_total_bytes"), cpu.get("memory_available_bytes")
    if total is None:
        return "unknown"
    gib = 1 << 30
    return f"{total / gib:.1f} GiB" + (f" ({avail / gib:.1f} GiB available)" if avail is not None else "")
