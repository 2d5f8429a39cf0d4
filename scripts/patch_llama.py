"""Patch the llama.cpp sources that llama-cpp-python vendors before scripts/setup builds its wheel.

    python scripts/patch_llama.py SDIST_DIR      (the unpacked llama-cpp-python sdist; idempotent)

Three changes, each refused loudly when the code they anchor to has moved (update this script then):

1. ggml looks for GGML_BACKEND_DL backends in the executable's folder and the working directory only, and
   llama-cpp-python never tells it where its own lib/ folder is (abetlen/llama-cpp-python#2069): also search the
   folder holding libggml itself, so the Python package and alignts-run find the CPU variants installed beside it.
2. native/ggml/: packed GEMMs for ggml's f32 x f32 products (x86-64 with AVX2+FMA or AVX-512), bf16 x f32
   (AVX-512 BF16) and q8_0 x f32 (AVX-512 VNNI); ggml's other CPU variants and architectures keep llamafile's tinyBLAS. Copied next to
   llamafile/sgemm.cpp, alignts_gemm.h included at its end, alignts_mul_mat() called first in
   ggml_compute_forward_mul_mat.
3. ggml's f32 GELU (an f16 table, one value at a time) computed in f32, 16 / 8 values at a time (AVX-512 /
   AVX2+FMA; other CPUs keep the table).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
KERNELS = HERE / "native" / "ggml"  # alignts_gemm.h (the entry point) and the kernels it includes
MARK = "alignts:"  # every insertion carries it, so a second run changes nothing


def insert(path: Path, anchor: str, text: str, *, before: bool = True) -> None:
    src = path.read_text()
    if MARK in src and text.strip() in src:
        return
    if src.count(anchor) != 1:
        sys.exit(f"[patch_llama] cannot patch {path}: the code around {anchor.strip()!r} changed; "
                 f"update scripts/patch_llama.py")
    path.write_text(src.replace(anchor, text + anchor if before else anchor + text))


def main(sdist: Path) -> None:
    ggml = sdist / "vendor" / "llama.cpp" / "ggml" / "src"
    if not ggml.is_dir():
        sys.exit(f"[patch_llama] {ggml} is missing: pass the unpacked llama-cpp-python sdist")

    insert(ggml / "ggml-backend-reg.cpp", "        // default search paths: executable directory, current directory\n",
           "#if !defined(_WIN32)\n"
           "        // alignts: the folder holding libggml, where a relocatable package keeps its backends\n"
           "        {\n"
           "            Dl_info info;\n"
           "            if (dladdr((const void *) &ggml_backend_load_all, &info) && info.dli_fname) {\n"
           "                search_paths.push_back(fs::u8path(info.dli_fname).parent_path());\n"
           "            }\n"
           "        }\n"
           "#endif\n")

    cpu = ggml / "ggml-cpu"
    for header in sorted(KERNELS.glob("*.h")):
        shutil.copyfile(header, cpu / "llamafile" / header.name)
    sgemm = cpu / "llamafile" / "sgemm.cpp"
    src = sgemm.read_text()
    if MARK not in src:
        sgemm.write_text(src + "\n// alignts: packed GEMMs (scripts/patch_llama.py)\n#include \"alignts_gemm.h\"\n")
    insert(cpu / "llamafile" / "sgemm.h", "#ifdef __cplusplus\n}\n#endif",
           "// alignts: true when it computed dst = src0 x src1 (native/ggml/alignts_gemm.h)\n"
           "struct ggml_tensor;\n"
           "bool alignts_mul_mat(const struct ggml_compute_params * params, const struct ggml_tensor * src0,\n"
           "                     const struct ggml_tensor * src1, struct ggml_tensor * dst);\n\n")
    insert(cpu / "ggml-cpu.c",
           "    if (ggml_compute_forward_mul_mat_tiled(params, dst)) {\n        return;\n    }\n",
           "\n#if GGML_USE_LLAMAFILE\n"
           "    // alignts: packed GEMMs (scripts/patch_llama.py)\n"
           "    if (alignts_mul_mat(params, src0, src1, dst)) {\n        return;\n    }\n"
           "#endif\n", before=False)
    ops = cpu / "ops.cpp"
    insert(ops, "// ggml_compute_forward_gelu\n\nstatic void ggml_compute_forward_gelu_f32(",
           "// alignts: the tanh GELU of ggml_gelu_f32 vectorized, x / (1 + exp(-2 sqrt(2/pi) (x + 0.044715 x^3))),\n"
           "// in f32 (ggml's f32 path looks every value up in an f16 table: ~5e-4 relative error, one value at a\n"
           "// time); ggml_v_expf is ggml's own (AVX-512 or AVX2+FMA); other CPUs keep ggml's table\n"
           "static void alignts_vec_gelu_f32(const int n, float * y, const float * x) {\n"
           "#if (defined(__AVX512F__) && defined(__AVX512DQ__)) || (defined(__AVX2__) && defined(__FMA__))\n"
           "    int i = 0;\n"
           "#if defined(__AVX512F__) && defined(__AVX512DQ__)\n"
           "    for (; i + 16 <= n; i += 16) {\n"
           "        const __m512 v = _mm512_loadu_ps(x + i);\n"
           "        const __m512 t = _mm512_mul_ps(v, _mm512_fmadd_ps(_mm512_mul_ps(v, v),\n"
           "            _mm512_set1_ps(-2.0f*SQRT_2_OVER_PI*GELU_COEF_A), _mm512_set1_ps(-2.0f*SQRT_2_OVER_PI)));\n"
           "        _mm512_storeu_ps(y + i, _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), ggml_v_expf(t))));\n"
           "    }\n"
           "#else\n"
           "    for (; i + 8 <= n; i += 8) {\n"
           "        const __m256 v = _mm256_loadu_ps(x + i);\n"
           "        const __m256 t = _mm256_mul_ps(v, _mm256_fmadd_ps(_mm256_mul_ps(v, v),\n"
           "            _mm256_set1_ps(-2.0f*SQRT_2_OVER_PI*GELU_COEF_A), _mm256_set1_ps(-2.0f*SQRT_2_OVER_PI)));\n"
           "        _mm256_storeu_ps(y + i, _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), ggml_v_expf(t))));\n"
           "    }\n"
           "#endif\n"
           "    for (; i < n; ++i) {\n"
           "        y[i] = ggml_gelu_f32(x[i]);\n"
           "    }\n"
           "#else\n"
           "    ggml_vec_gelu_f32(n, y, x);  // other CPUs: ggml's own\n"
           "#endif\n"
           "}\n\n",
           before=True)
    src = ops.read_text()
    body = src[src.index("static void ggml_compute_forward_gelu_f32("):]
    body = body[:body.index("\n}\n")]
    if "alignts_vec_gelu_f32(nc," not in body:
        if body.count("ggml_vec_gelu_f32(nc,") != 1:
            sys.exit(f"[patch_llama] cannot patch {ops}: ggml_compute_forward_gelu_f32 changed; update this script")
        ops.write_text(src.replace(body, body.replace("ggml_vec_gelu_f32(nc,", "alignts_vec_gelu_f32(nc,")))
    print(f"[patch_llama] patched {ggml}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
