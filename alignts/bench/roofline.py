"""This machine's ceilings, measured in the bench run, and where each bench row stands against them.

:func:`measure_ceilings` times, with the bench's thread count, once per ``alignts bench`` run (nothing cached:
another day, another load, another machine):

- ``sgemm_gflops``: a large float32 matrix product, 2*M*N*K flops per product, the faster of numpy's BLAS
  (``numpy_sgemm_gflops``; threads set with threadpoolctl when it is installed, else the BLAS default, recorded in
  ``blas_threads``) and onnxruntime's MatMul (``ort_sgemm_gflops``, MLAS: numpy's OpenBLAS may pick an AVX2
  kernel on a CPU it does not know, where MLAS uses AVX-512, so numpy alone can sit below what a model reaches);
- ``int8_gops``: onnxruntime ``MatMulInteger`` (uint8 x int8 -> int32, the kernel family onnxruntime's int8
  MatMuls use), same count, ops per second;
- ``bf16_gflops``: a large bfloat16 matrix product in torch (oneDNN: AMX tiles on a CPU with AMX-BF16, AVX-512
  BF16 dot products on one without), when torch is installed (None otherwise: bf16 rows are then set against the
  sgemm ceiling). The bf16 GGUF variants' products run on AMX tiles where the CPU has them
  (native/ggml/alignts_gemm_amx.h), several times the sgemm rate, so the sgemm ceiling would not bound them;
- ``copy_gbs``: a streaming copy of a 256 MiB float32 array (numpy, one thread), bytes read + written per second.

Each is the best of a few timed runs (the ceiling, not the mean). :func:`model_flops` counts one forecast call's
floating-point work from the bundle's config (the shapes the memory planner reads, ``runtime.budget``): per
token and layer ``2 * (4 d^2 + 2 d d_ff)`` for the weight matrices and ``4 T d`` for the attention products,
plus the patch embedding and the head (Internal) or the reprogramming attention and the head (Bridging), over
``batch * channels`` series; norms, softmax and activations (a few % of it) are left out, so the achieved rate is a
slight under-estimate. :func:`roofline_fields` turns a row's p50 into achieved GFLOP/s and its fraction of the
ceiling of its arithmetic: the int8 ceiling for int8 / q8_0 / q4_0 weights (integer dot products), the bf16 one
for bf16 weights (when measured), the sgemm one otherwise; for generation (Injective), bytes/s of weights read
(each decode step reads every weight once and yields one token per live sample) against the copy bandwidth.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import numpy as np

log = logging.getLogger(__name__)

INT_DTYPES = ("int8", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
SGEMM_N = 2048
INT8_N = 1024
COPY_BYTES = 256 << 20


def _best(fn, repeats: int) -> float:
    fn()  # warm-up (packing, page faults)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _sgemm(n: int, threads: int | None, repeats: int) -> tuple[float, int | None]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the BLAS default thread count
        return 2.0 * n ** 3 / _best(lambda: np.matmul(a, b, out=c), repeats) / 1e9, None
    with threadpool_limits(limits=threads, user_api="blas"):
        return 2.0 * n ** 3 / _best(lambda: np.matmul(a, b, out=c), repeats) / 1e9, threads


def _ort_gemm(n: int, threads: int | None, repeats: int, int8: bool) -> float:
    """onnxruntime on one [n, n] x [n, n] product: MatMulInteger (uint8 x int8 -> int32) or a float32 MatMul."""
    import onnx
    from onnx import TensorProto, helper

    from alignts.runtime.backends.onnx import IR_VERSION, _ort

    ort = _ort()
    rng = np.random.default_rng(0)
    if int8:
        w = rng.integers(-127, 128, (n, n), dtype=np.int8)
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
        op, a_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
    else:
        w = rng.standard_normal((n, n), dtype=np.float32)
        a = rng.standard_normal((n, n), dtype=np.float32)
        op, a_type, y_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "w"], ["y"])], "gemm", [helper.make_tensor_value_info("a", a_type, [n, n])],
        [helper.make_tensor_value_info("y", y_type, [n, n])], [onnx.numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return 2.0 * n ** 3 / _best(lambda: sess.run(None, {"a": a}), repeats) / 1e9


def _torch_bf16(n: int, threads: int | None, repeats: int) -> float | None:
    """torch's bfloat16 [n, n] x [n, n] product, GFLOP/s; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(torch.bfloat16)
        b = torch.randn(n, n, generator=g).to(torch.bfloat16)
        c = torch.empty(n, n, dtype=torch.bfloat16)
        with torch.inference_mode():
            return 2.0 * n ** 3 / _best(lambda: torch.matmul(a, b, out=c), repeats) / 1e9
    finally:
        torch.set_num_threads(before)


def _copy(n_bytes: int, repeats: int) -> float:
    src = np.ones(n_bytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    return 2.0 * src.nbytes / _best(lambda: np.copyto(dst, src), repeats) / 1e9


def measure_ceilings(threads: int | None = None, repeats: int = 5, quick: bool = False) -> dict[str, Any]:
    """{"sgemm_gflops", "numpy_sgemm_gflops", "ort_sgemm_gflops", "int8_gops", "bf16_gflops", "copy_gbs",
    "threads", "blas_threads", "sizes", "seconds"} measured now
    (``quick``: small sizes, for tests: the numbers are then far below the real ceilings)."""
    t0 = time.perf_counter()
    n, n8, nb = (256, 256, 8 << 20) if quick else (SGEMM_N, INT8_N, COPY_BYTES)
    sgemm, blas_threads = _sgemm(n, threads, repeats)
    ort_sgemm = _ort_gemm(n, threads, repeats, int8=False)
    out = {"sgemm_gflops": max(sgemm, ort_sgemm), "numpy_sgemm_gflops": sgemm, "ort_sgemm_gflops": ort_sgemm,
           "int8_gops": _ort_gemm(n8, threads, repeats, int8=True), "bf16_gflops": _torch_bf16(n, threads, repeats),
           "copy_gbs": _copy(nb, repeats),
           "threads": threads, "blas_threads": blas_threads,
           "sizes": {"sgemm_n": n, "int8_n": n8, "copy_bytes": nb}}
    out["seconds"] = time.perf_counter() - t0
    log.info("ceilings (%s threads): sgemm %.0f GFLOP/s, int8 %.0f GOP/s, bf16 %s GFLOP/s, copy %.1f GB/s", threads,
             out["sgemm_gflops"], out["int8_gops"], "n/a" if out["bf16_gflops"] is None else
             f"{out['bf16_gflops']:.0f}", out["copy_gbs"])
    return out


def model_flops(manifest, batch_size: int, bundle_dir=None, last_rows_only: bool = False) -> float | None:
    """Floating-point operations of one forecast call on ``batch_size`` windows (see the module docstring);
    None for Injective (generation is counted in bytes) and backbone bundles. ``last_rows_only``
    (Bridging whose backbone's ``LoadedBackbone.last_rows_only``: a BERT's ONNX graph with ``output_rows``, or
    llama.cpp from patch level 20): the backbone's last layer after its attention (output projection, FFN) runs on
    the N patch tokens only, not the prompt's."""
    from alignts.runtime.budget import _shape
    from alignts.runtime.configs import BridgingRuntimeConfig, InternalRuntimeConfig, runtime_config

    cfg = runtime_config(manifest)
    if not isinstance(cfg, (InternalRuntimeConfig, BridgingRuntimeConfig)):
        return None
    sh = _shape(manifest, int(batch_size), None, None, None, bundle_dir)
    S, T, d, ff = sh.series, sh.tokens, sh.width, sh.d_ff
    per_token_layer = 2.0 * (4 * d * d + 2 * d * ff) + 4.0 * T * d
    lm = S * T * sh.layers * per_token_layer
    N, P, H = cfg.n_patches, cfg.patch_len, cfg.horizon
    if isinstance(cfg, InternalRuntimeConfig):
        io = S * (2.0 * N * P * d + 2.0 * N * d * H)
    else:
        dm, hk = cfg.d_model, cfg.n_heads * cfg.d_keys
        # as exported (alignts.export.bridging.AdapterExport): patch embedding (Conv1d, kernel 3), the scores over
        # the prototypes with the query projection folded in (width d_model + 1 a head), the values, the output
        # projection to the LM width; then the head over the last N hidden states' first d_ff features
        adapter = N * (2.0 * 3 * P * dm + 2.0 * (dm + 1) * cfg.n_heads * cfg.n_prototypes
                       + 2.0 * hk * cfg.n_prototypes + 2.0 * hk * d)
        io = S * (adapter + 2.0 * N * cfg.d_ff * H)
        if last_rows_only:
            lm -= S * (T - N) * 2.0 * (d * d + 2 * d * ff)
    if cfg.linear_skip:
        io += S * 2.0 * cfg.context_len * H
    return float(lm + io)


def ceiling_key(dtype: str | None, ceilings: Mapping[str, Any]) -> str:
    """The ceiling a row of this weight dtype is set against (module docstring)."""
    if dtype in INT_DTYPES:
        return "int8_gops"
    if dtype == "bf16" and ceilings.get("bf16_gflops"):
        return "bf16_gflops"
    return "sgemm_gflops"


def roofline_fields(row: Mapping[str, Any], ceilings: Mapping[str, Any] | None, flops: float | None,
                    n_parallel: int | None = None) -> dict[str, Any]:
    """The roofline columns of one bench row: ``gflops`` (achieved), ``ceiling`` (which one), ``ceiling_value``,
    ``roofline_fraction``; generation rows: ``weight_gbs`` (bytes/s of weights read) against ``copy_gbs``."""
    out: dict[str, Any] = {"gflop_per_call": None, "gflops": None, "weight_gbs": None, "ceiling": None,
                           "ceiling_value": None, "roofline_fraction": None}
    if not ceilings:
        return out
    if row.get("gen_tokens_s"):
        steps = float(row["gen_tokens_s"]) / max(1, int(n_parallel or 1))
        gbs = float(row["weight_bytes"]) * steps / 1e9
        out.update(weight_gbs=gbs, ceiling="copy_gbs", ceiling_value=ceilings["copy_gbs"],
                   roofline_fraction=gbs / ceilings["copy_gbs"])
        return out
    p50 = row.get("latency_p50_ms")
    if flops is None or not p50:
        return out
    key = ceiling_key(row.get("dtype"), ceilings)
    rate = flops / (float(p50) / 1e3) / 1e9
    out.update(gflop_per_call=flops / 1e9, gflops=rate, ceiling=key, ceiling_value=ceilings[key],
               roofline_fraction=rate / ceilings[key])
    return out
