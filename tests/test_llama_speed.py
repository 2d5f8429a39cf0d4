"""The llama.cpp path's speed settings: grouped hidden states equal per-series ones, the planner's decode geometry
(larger encoder groups under flash attention), bf16 weights, thread counts that reach llama.cpp (a poll-0
threadpool, fewer threads when the cores are busy), single-threaded BLAS around llama.cpp. Tiny random models
(2 layers, width 64) written by the GGUF writer."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from alignts.runtime import threads as thr
from alignts.runtime.budget import (ENCODER_DECODE_TOKENS, ENCODER_STREAMS_DECODE_TOKENS, FLASH_DECODE_TOKENS,
                                    LLAMA_N_BATCH, SHARED_KV_PROMPTS, embedding_geometry, shared_prompt_kv)

pytest.importorskip("llama_cpp")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.test_gguf_backend import make_model  # noqa: E402

D = 64


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    from alignts.export.gguf_writer import write_gguf

    d = tmp_path_factory.mktemp("speed")
    return {a: write_gguf(make_model(a), d / f"{a}.gguf", dtype="f32") for a in ("bert", "gpt2", "llama")}


def _model(path, **kw):
    from alignts.runtime.backends.gguf import LlamaCppModel

    kw.setdefault("n_threads", 1)
    return LlamaCppModel(path, embeddings=True, **kw)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_grouped_hidden_states_equal_one_series_at_a_time(ggufs, arch):
    N, S = 6, 11
    x = np.random.default_rng(0).standard_normal((S, N, D)).astype(np.float32)
    with _model(ggufs[arch], n_ctx=N, n_batch=N, n_seq_max=1) as one:
        alone = one.hidden_states(x)
    # groups of 4 (the last one 3 series), then all 11 in one decode
    for g in (4, S):
        with _model(ggufs[arch], n_ctx=N, n_batch=g * N, n_seq_max=g) as m:
            got = m.hidden_states(x)
            np.testing.assert_allclose(got, alone, atol=2e-4, rtol=0)
            # a non-contiguous input (read in place only when contiguous) and a second call: the same
            np.testing.assert_allclose(m.hidden_states(np.asfortranarray(x)), got, atol=1e-6, rtol=0)
            assert m.hidden_states(x[:0]).shape == (0, N, D)


def test_geometry_encoder_groups_by_tokens_causal_fills_the_batch():
    # BERT on a stock llama.cpp: about ENCODER_DECODE_TOKENS tokens a decode, never more series than there are
    assert embedding_geometry(22, 56, encoder=True, streams=False) == (7, 154)
    assert embedding_geometry(42, 56, encoder=True, streams=False) == (4, 168)
    assert embedding_geometry(22, 2, encoder=True, streams=False) == (2, 44)
    assert embedding_geometry(500, 8, encoder=True, streams=False) == (1, 500)
    # alignts' build attends per series: ENCODER_STREAMS_DECODE_TOKENS (the default: plans size for it)
    assert embedding_geometry(119, 7, encoder=True) == (4, 476)
    assert embedding_geometry(22, 56, encoder=True) == (22, 484)
    assert embedding_geometry(22, 7, encoder=True) == (7, 154)
    # causal: as many series as fit LLAMA_N_BATCH tokens; a longer series alone
    assert embedding_geometry(22, 56, encoder=False) == (LLAMA_N_BATCH // 22, LLAMA_N_BATCH // 22 * 22)
    assert embedding_geometry(22, 7, encoder=False) == (7, 154)
    assert embedding_geometry(600, 4, encoder=False) == (1, 600)
    for n in (1, 5, 22, 42, 96, 200):
        g, b = embedding_geometry(n, 1000, encoder=True, streams=False)
        assert b == g * n and abs(b - ENCODER_DECODE_TOKENS) <= n
        g, b = embedding_geometry(n, 1000, encoder=True)
        assert b == g * n and abs(b - ENCODER_STREAMS_DECODE_TOKENS) <= n
        g, b = embedding_geometry(n, 1000, encoder=True, flash=True)  # flash attention skips the masked cells
        assert b == g * n and abs(b - FLASH_DECODE_TOKENS) <= n
    assert embedding_geometry(22, 56, encoder=True, flash=True) == (12, 264)
    assert embedding_geometry(22, 7, encoder=True, flash=True) == (7, 154)
    assert embedding_geometry(22, 56, encoder=False, flash=True) == embedding_geometry(22, 56, encoder=False)


def test_the_installed_llama_cpp_is_alignts_build():
    # scripts/setup builds llama-cpp-python with every change of scripts/patch_llama.py; the planners rely on them
    import re
    from pathlib import Path

    from alignts.runtime.backends.gguf import llama_patch_level

    script = (Path(__file__).resolve().parents[1] / "scripts" / "patch_llama.py").read_text()
    assert llama_patch_level() == int(re.search(r"^PATCH_LEVEL = (\d+)", script, re.M).group(1))


_ADVISED_KB = """
import sys
from alignts.runtime.backends.gguf import LlamaCppModel


def advised_kb():  # kB of the mappings advised MADV_HUGEPAGE (VmFlags hg)
    total = size = 0
    with open("/proc/self/smaps") as f:
        for line in f:
            if line.startswith("Size:"):
                size = int(line.split()[1])
            elif line.startswith("VmFlags:") and "hg" in line.split()[1:]:
                total += size
    return total


before = advised_kb()
with LlamaCppModel(sys.argv[1], n_ctx=128, n_seq_max=32, n_threads=1, embeddings=True) as m:
    print(advised_kb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_large_ggml_buffers_ask_for_huge_pages(ggufs, monkeypatch):
    """patch change 21: a ggml buffer of 2 MiB and more (here a 4 MiB KV cache: 4096 cells of 1 KB) is whole 2 MiB
    pages advised MADV_HUGEPAGE; with ALIGNTS_HUGE_PAGES=0 none is, and the runtime maps GGUF files again. Each
    count in a fresh process: in this one, glibc hands back memory that earlier tests' models had advised."""
    import os
    import subprocess

    from alignts.runtime.backends import gguf as G

    def advised_kb(**env) -> int:
        run = subprocess.run([sys.executable, "-c", _ADVISED_KB, str(ggufs["gpt2"])], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        return int(run.stdout.split()[-1])

    monkeypatch.delenv("ALIGNTS_HUGE_PAGES", raising=False)
    assert advised_kb() >= 4096
    assert G.default_use_mmap() is not G.huge_pages()
    assert advised_kb(ALIGNTS_HUGE_PAGES="0") == 0
    monkeypatch.setenv("ALIGNTS_HUGE_PAGES", "0")
    assert G.huge_pages() is False and G.default_use_mmap() is True


def test_huge_pages_follow_the_kernel_s_mode(tmp_path, monkeypatch):
    """the runtime reads a GGUF into memory only where THP is always or madvise (else 4 KB pages: slower than the
    mapped file, results/speed_llama.md section 28)"""
    from alignts.runtime.backends import gguf as G

    monkeypatch.delenv("ALIGNTS_HUGE_PAGES", raising=False)
    mode = tmp_path / "enabled"
    monkeypatch.setattr(G, "THP_ENABLED", mode)
    for text, huge in [("always [madvise] never\n", True), ("[always] madvise never\n", True),
                       ("always madvise [never]\n", False)]:
        mode.write_text(text)
        assert G.huge_pages() is (huge and G.llama_patch_level() >= 21)
    mode.unlink()  # no THP in the kernel
    assert G.huge_pages() is False


def test_shared_prompt_kv_while_generated_tokens_are_few_beside_the_prompt():
    # LLMTime's defaults (96 values, 24 forecast, 20 samples): ~300 prompt tokens, ~100 generated a sample
    assert shared_prompt_kv(20, 300, 116)
    assert not shared_prompt_kv(20, 48, 461)  # a long horizon: the samples' own cells dominate
    assert shared_prompt_kv(20, 100, 100 * SHARED_KV_PROMPTS // 20)
    assert not shared_prompt_kv(20, 100, 100 * SHARED_KV_PROMPTS // 20 + 1)
    assert not shared_prompt_kv(1, 300, 10)  # one sample: nothing to share
    assert not shared_prompt_kv(4, 0, 10)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_shared_kv_is_for_generation_only(ggufs, arch):
    # an encoder has no KV cache, one sequence has nobody to share with: the flag is dropped, and said so
    with _model(ggufs[arch], n_ctx=8, n_seq_max=1, kv_unified=True) as m:
        assert not m.kv_unified and m.settings["kv_unified"] is False
    with _model(ggufs[arch], n_ctx=8, n_seq_max=4, kv_unified=True) as m:
        assert m.kv_unified is (arch == "gpt2") and m.context_params.kv_unified is m.kv_unified


class _DecodeCounter:
    """The llama.cpp module with llama_decode counted (LlamaCppModel._L)."""

    def __init__(self, lib):
        self._lib, self.calls = lib, 0

    def __getattr__(self, name):
        return getattr(self._lib, name)

    def llama_decode(self, ctx, batch):
        self.calls += 1
        return self._lib.llama_decode(ctx, batch)


def test_encoder_groups_follow_the_rule_and_flash_attention_stays_close(ggufs):
    """An encoder opened with room for every series still decodes them in the rule's groups: ~480 tokens on
    alignts' llama.cpp (streams), ~256 with flash attention; flash attention (K/V cast to f16 by llama.cpp) stays
    close to the exact path."""
    N, S = 30, 40
    x = np.random.default_rng(2).standard_normal((S, N, D)).astype(np.float32)
    got = {}
    for flash, decodes in ((False, 3), (True, 5)):  # round(480 / 30) = 16 series a decode, round(256 / 30) = 9
        with _model(ggufs["bert"], n_ctx=N, n_batch=S * N, n_seq_max=S, flash_attn=flash) as m:
            m._L = spy = _DecodeCounter(m._L)
            got[flash] = m.hidden_states(x)
            assert spy.calls == decodes and m.settings["flash_attn"] is flash
    scale = float(np.abs(got[False]).max())
    assert 0 < float(np.abs(got[True] - got[False]).max()) < 2e-2 * scale


def test_bf16_gguf_loads_and_stays_close(ggufs, tmp_path):
    import gguf

    from alignts.export.gguf_writer import write_gguf
    from alignts.export.quantize import requantize_gguf

    path = write_gguf(make_model("bert"), tmp_path / "bert.bf16.gguf", dtype="bf16")
    again = tmp_path / "re.bf16.gguf"
    assert requantize_gguf(ggufs["bert"], again, "bf16").get("bf16", 0) > 0
    for p in (path, again):
        types = {t.name: gguf.GGMLQuantizationType(int(t.tensor_type)).name for t in gguf.GGUFReader(str(p)).tensors}
        assert types["blk.0.attn_q.weight"] == "BF16" and types["blk.0.attn_q.bias"] == "F32"
        assert types["position_embd.weight"] == "F32"
    x = np.random.default_rng(3).standard_normal((3, 9, D)).astype(np.float32)
    with _model(ggufs["bert"], n_ctx=9, n_batch=27, n_seq_max=3) as m:
        ref = m.hidden_states(x)
    for p in (path, again):
        with _model(p, n_ctx=9, n_batch=27, n_seq_max=3) as m:
            got = m.hidden_states(x)
        rel = float(np.abs(got - ref).max()) / float(np.abs(ref).max())
        assert 0 < rel < 3e-2, rel


_BF16_HIDDEN = """
import sys, numpy as np
from alignts.runtime.backends.gguf import LlamaCppModel
x = np.load(sys.argv[2])
n_batch = int(sys.argv[4]) if len(sys.argv) > 4 else x.shape[0] * x.shape[1]  # tokens a decode
with LlamaCppModel(sys.argv[1], embeddings=True, n_threads=2, n_ctx=x.shape[1], n_batch=n_batch,
                   n_seq_max=x.shape[0]) as m:
    np.save(sys.argv[3], m.hidden_states(x))
"""


@pytest.mark.skipif(not {"amx_bf16", "amx_tile"} <= (thr.cpu_model_and_flags()[1] or set()),
                    reason="no AMX-BF16 on this CPU: bf16 products run on the AVX-512 BF16 tiles "
                           "(test_bf16_gguf_loads_and_stays_close, ctest gemm_bf16_avx512bf16)")
@pytest.mark.parametrize("T", [9, 60])
def test_bf16_amx_tiles_equal_the_avx512_path_inside_llama_cpp(tmp_path, T):
    """A bf16 GGUF's products on AMX tiles (native/ggml/alignts_gemm_amx.h) against the same products on the
    vdpbf16ps tiles (ALIGNTS_AMX=0): the same bf16-rounded operands, f32 sums in another order. Width 64 and an
    FFN of 128: two and four 32-row tile blocks, which 2 threads split; the rows past full blocks are ctest's.
    5 series of 9 tokens (45: the packed tokens, a block and 13) and of 60 (300: the paired weights of change 12,
    nine blocks and 12)."""
    import os
    import subprocess
    import sys

    from alignts.export.gguf_writer import write_gguf
    from alignts.runtime.backends.gguf import llama_patch_level

    if llama_patch_level() < 10:
        pytest.skip("this llama.cpp has no AMX tiles (scripts/patch_llama.py change 10); build it with "
                    "`bash scripts/setup`")
    path = write_gguf(make_model("bert"), tmp_path / "bert.bf16.gguf", dtype="bf16")
    if T >= 60 and llama_patch_level() < 12:
        pytest.skip("this llama.cpp has no paired weights (scripts/patch_llama.py change 12); build it with "
                    "`bash scripts/setup`")
    x = np.random.default_rng(4).standard_normal((5, T, D)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = {}
    for amx in ("1", "0"):
        env = dict(os.environ, ALIGNTS_AMX=amx)
        subprocess.run([sys.executable, "-c", _BF16_HIDDEN, str(path), str(tmp_path / "x.npy"),
                        str(tmp_path / f"h{amx}.npy")], env=env, check=True, timeout=300)
        out[amx] = np.load(tmp_path / f"h{amx}.npy")
    scale = float(np.abs(out["0"]).max())
    diff = float(np.abs(out["1"] - out["0"]).max())
    # a sum that differs in its last bit can round the next product's input to the neighbouring bf16 (2^-8
    # relative): measured 3.1e-4 of 4.0; bf16 against f32 weights is 3e-2 (test_bf16_gguf_loads_and_stays_close)
    assert np.isfinite(out["1"]).all() and diff < 2e-3 * scale, (diff, scale)
    # equal outputs would mean the tiles never ran
    assert diff > 0
    if T >= 60:
        # one series a decode (60 tokens: the packed tokens) gives the 300-token decode's values bit for bit: the
        # paired weights change where the operands sit, not the sums
        subprocess.run([sys.executable, "-c", _BF16_HIDDEN, str(path), str(tmp_path / "x.npy"),
                        str(tmp_path / "h_one.npy"), str(T)], env=dict(os.environ, ALIGNTS_AMX="1"), check=True,
                       timeout=300)
        np.testing.assert_array_equal(np.load(tmp_path / "h_one.npy"), out["1"])


_THREADS_HIDDEN = """
import sys, numpy as np
from alignts.runtime.backends.gguf import LlamaCppModel
x = np.load(sys.argv[2])
for t in (1, 2, 3):
    with LlamaCppModel(sys.argv[1], embeddings=True, n_threads=t, n_ctx=x.shape[1], n_batch=x.shape[0] * x.shape[1],
                       n_seq_max=x.shape[0]) as m:
        np.save(sys.argv[3] + f"_{t}.npy", m.hidden_states(x))
"""


@pytest.mark.parametrize("dtype", ["f32", "q8_0", "bf16"])
def test_products_shared_between_threads_sum_as_one_thread(tmp_path, dtype):
    """With 2 and more threads alignts' products hand out jobs from ggml's shared counter (native/ggml/
    alignts_gemm.h for_each_job: parts of the weight rows x groups of packed token blocks, taken as threads
    finish). Every output is still one tile's k-ordered sum, so 1, 2 and 3 threads give the same hidden states bit
    for bit. 5 series of 45 tokens (225: 7 blocks of 32 and a partial one, under the paired path's 256; f32 on
    AVX-512: 4 of 48 and a partial one), a 2-layer BERT of width 64 (f32: 8 row tiles of 8; q8_0: 13 of 5; bf16:
    2 AMX blocks of 32, or 6 tiles of 12 without AMX). A bf16
    model on an AMX CPU runs once more with ALIGNTS_AMX=0 (the vdpbf16ps tiles)."""
    import os
    import subprocess
    import sys

    from alignts.export.gguf_writer import write_gguf
    from alignts.runtime.backends.gguf import llama_patch_level

    if llama_patch_level() < 14:
        pytest.skip("this llama.cpp splits products statically (shared jobs: scripts/patch_llama.py change 14); build "
                    "it with `bash scripts/setup`")
    path = write_gguf(make_model("bert"), tmp_path / f"bert.{dtype}.gguf", dtype=dtype)
    x = np.random.default_rng(6).standard_normal((5, 45, D)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    amx = {"amx_bf16", "amx_tile"} <= (thr.cpu_model_and_flags()[1] or set())
    for env in ["1"] + (["0"] if dtype == "bf16" and amx else []):
        out = str(tmp_path / f"h{env}")
        subprocess.run([sys.executable, "-c", _THREADS_HIDDEN, str(path), str(tmp_path / "x.npy"), out],
                       env=dict(os.environ, ALIGNTS_AMX=env), check=True, timeout=300)
        one = np.load(out + "_1.npy")
        assert np.isfinite(one).all() and float(np.abs(one).max()) > 0
        for t in (2, 3):
            np.testing.assert_array_equal(np.load(out + f"_{t}.npy"), one, err_msg=f"{t} threads, ALIGNTS_AMX={env}")


_PANELS_HIDDEN = """
import logging, sys, numpy as np
logs = []
handler = logging.Handler()
handler.emit = lambda record: logs.append(record.getMessage())
logging.getLogger("alignts.runtime.backends.gguf.llama_cpp").addHandler(handler)
logging.getLogger("alignts.runtime.backends.gguf.llama_cpp").setLevel(logging.DEBUG)
from alignts.runtime.backends.gguf import LlamaCppModel
x = np.load(sys.argv[2])
with LlamaCppModel(sys.argv[1], embeddings=True, n_threads=int(sys.argv[4]), n_ctx=x.shape[1],
                   n_batch=x.shape[0] * x.shape[1], n_seq_max=x.shape[0]) as m:
    np.save(sys.argv[3], m.hidden_states(x))
print(any("CPU_REPACK model buffer" in line for line in logs))
# the fused nodes that ran (ggml-cpu.c alignts_fused_nodes, change 17), from the CPU variant ggml loaded
import ctypes
libs = {line.split()[-1] for line in open("/proc/self/maps") if "libggml-cpu" in line}
lib = ctypes.CDLL(libs.pop()) if len(libs) == 1 else None
fused = getattr(lib, "alignts_fused_nodes", None)
if fused is not None:
    fused.restype = ctypes.c_longlong
print([int(fused(k)) for k in range(5)] if fused is not None else None)
"""


@pytest.mark.parametrize("arch,dtype", [("bert", "f32"), ("gpt2", "f32"), ("bert", "q8_0")])
def test_panels_and_fused_nodes_equal_ggml_s_own_nodes_inside_llama_cpp(tmp_path, arch, dtype):
    """scripts/patch_llama.py changes 16, 17 and 18. f32 weights repacked into 16-row panels when llama.cpp loads them
    (native/ggml/alignts_panels_f32.h, ggml's CPU_REPACK buffer type), each product's bias add (and the GELU after
    an FFN's) fused into its stores, each LayerNorm's NORM, MUL and ADD nodes run as one and each attention's KQ
    product, softmax and KQV product run as one (ggml_cpu_try_fuse_ops), against the weights in place
    (ALIGNTS_F32_PANELS=0: alignts_sgemm_f32.h's packed tokens) and ggml's own nodes (GGML_CPU_DISABLE_FUSION=1).
    Both f32 tiles take each output as one k-ordered chain of fused multiply-adds, and the fused nodes make the
    same roundings as the separate ones, so where the packed tile runs (blocks of more than DOT_MAX tokens: 5 series
    of 45) the hidden states are equal bit for bit, on 1 thread and on 2 and 3 (jobs shared, from both ends of one
    list: change 18). The log says whether the
    CPU_REPACK buffer held the weights: with the panels for f32 weights, never without, never for q8_0 ones. The
    CPU backend's counters (alignts_fused_nodes) say which fusions ran: attention and LayerNorms in every case with
    fusions on (BERT's attention reading V in place, without its transposed copy; GPT-2's reading its KV cache), the
    bias adds and GELUs with the panels only, none with fusions off."""
    import os
    import subprocess
    import sys

    from alignts.export.gguf_writer import write_gguf
    from alignts.runtime.backends.gguf import llama_patch_level

    if llama_patch_level() < 16:
        pytest.skip("this llama.cpp keeps f32 weights in place and runs every node (panels and fused nodes: "
                    "scripts/patch_llama.py change 16); build it with `bash scripts/setup`")
    path = write_gguf(make_model(arch), tmp_path / f"{arch}.{dtype}.gguf", dtype=dtype)
    x = np.random.default_rng(8).standard_normal((5, 45, D)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out, repacked, fused = {}, {}, {}
    for panels in ("1", "0"):
        for unfused in ("0", "1"):  # GGML_CPU_DISABLE_FUSION=1: the bias adds and LayerNorms as ggml's own nodes
            # 3 threads with everything on: two take the panels' and attention's jobs from the front, one from the back
            for t in ("1", "2", "3") if (panels, unfused) == ("1", "0") else ("1", "2"):
                f = str(tmp_path / f"h{panels}{unfused}_{t}.npy")
                run = subprocess.run([sys.executable, "-c", _PANELS_HIDDEN, str(path), str(tmp_path / "x.npy"), f, t],
                                     env=dict(os.environ, ALIGNTS_F32_PANELS=panels, GGML_CPU_DISABLE_FUSION=unfused),
                                     check=True, timeout=300, capture_output=True, text=True)
                lines = run.stdout.strip().splitlines()
                repacked[panels, unfused, t] = lines[-2] == "True"
                # [attention, bias add + GELU, bias add, LayerNorm, attention reading V in place]
                fused[panels, unfused, t] = eval(lines[-1])
                out[panels, unfused, t] = np.load(f)
    cpu_has_kernels = {"avx2", "fma"} <= (thr.cpu_model_and_flags()[1] or set())
    assert repacked == {(p, u, t): p == "1" and dtype == "f32" and cpu_has_kernels for p, u, t in repacked}
    # each fusion ran where it applies, and never with GGML_CPU_DISABLE_FUSION=1 (the counters are read through
    # /proc/self/maps: Linux, where alignts' build runs)
    if llama_patch_level() >= 17 and None not in fused.values():
        for (p, u, t), counts in fused.items():
            panels_on = p == "1" and dtype == "f32" and cpu_has_kernels
            on = u == "0"
            # a BERT's attention (no KV cache) reads V in place (its transposed copy not made); GPT-2's reads its cache
            expect = [on and cpu_has_kernels and arch != "bert", on and panels_on, on and panels_on, on,
                      on and cpu_has_kernels and arch == "bert"]
            assert [c > 0 for c in counts] == expect, ((p, u, t), counts)
    ref = out["0", "1", "1"]  # ggml's nodes, the weights in place, 1 thread
    assert np.isfinite(ref).all() and float(np.abs(ref).max()) > 0
    for (p, u, t), h in out.items():
        np.testing.assert_array_equal(h, ref, err_msg=f"ALIGNTS_F32_PANELS={p}, GGML_CPU_DISABLE_FUSION={u}, {t} "
                                                      "threads")


@pytest.mark.parametrize("T", [5, 16, 37])
def test_row_kernels_on_rows_that_end_mid_vector(tmp_path, T):
    """The element-wise rows alignts' llama.cpp computes its own way (scripts/patch_llama.py changes 3, 5, 11:
    layer norm, softmax, GELU, V's transposed copy) at lengths that are not whole vectors: width 72 (4 x 16 + 8),
    heads of 18, an FFN of 144, and 5 / 16 / 37 tokens a series (a softmax row shorter than a vector, exactly one,
    two and 5). An f32 BERT against transformers, 1 and 2 threads, 3 series per decode (one attention stream each)
    and one series a decode."""
    from alignts.export.gguf_writer import write_gguf
    from tests.test_gguf_backend import TOL_F32, _randomize, torch_hidden

    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=72, num_attention_heads=4, intermediate_size=144,
                                  vocab_size=320, max_position_embeddings=64)
    model = _randomize(transformers.BertModel(cfg, add_pooling_layer=False), seed=5)
    path = write_gguf(model, tmp_path / "bert72.gguf", dtype="f32")
    x = np.random.default_rng(T).standard_normal((3, T, 72)).astype(np.float32)
    ref = torch_hidden(model, x)
    for threads in (1, 2):
        for seqs in (3, 1):
            with _model(path, n_threads=threads, n_ctx=T, n_batch=3 * T, n_seq_max=seqs) as m:
                got = m.hidden_states(x)
            diff = float(np.abs(got - ref).max())
            assert got.shape == ref.shape and diff <= TOL_F32, (threads, seqs, diff)


def test_planner_carries_the_geometry_and_counts_its_memory():
    from tests.test_budget_planner import _manifest

    from alignts.runtime.budget import estimate_peak

    bert = estimate_peak(_manifest("bert"), "gguf-f32", batch_size=8)  # 8 x 7 series of 42 tokens
    assert (bert.detail["settings"]["n_seq_max"], bert.detail["settings"]["n_batch"]) == (11, 462)  # ~480 tokens
    small = estimate_peak(_manifest("bert"), "gguf-f32", batch_size=2)
    big = estimate_peak(_manifest("bert"), "gguf-f32", batch_size=64)
    # the compute graph is one group's at any batch size with a group's series: only numpy's inputs and outputs grow
    assert small.detail["settings"] == big.detail["settings"]
    numpy_io = (64 - 2) * 7 * 42 * 384 * 4 * 2
    assert big.activations - small.activations < 2 * numpy_io
    gpt = estimate_peak(_manifest("gpt2"), "gguf-f32", batch_size=8)
    assert (gpt.detail["settings"]["n_seq_max"], gpt.detail["settings"]["n_batch"]) == (12, 504)


def test_threads_reach_llama_cpp_with_a_sleeping_threadpool(ggufs, monkeypatch):
    import llama_cpp.llama_cpp as L

    x = np.random.default_rng(1).standard_normal((3, 5, D)).astype(np.float32)
    with _model(ggufs["bert"], n_ctx=5, n_batch=15, n_seq_max=3, n_threads=2, adapt_threads=False) as m:
        assert m._threadpool, "expected a ggml threadpool (poll 0) attached to the context"
        y2 = m.hidden_states(x)
        assert (L.llama_n_threads(m._ctx), L.llama_n_threads_batch(m._ctx), m.threads_used) == (2, 2, 2)
    with _model(ggufs["bert"], n_ctx=5, n_batch=15, n_seq_max=3, n_threads=2, adapt_threads=True) as m:
        monkeypatch.setattr(thr, "runnable_others", lambda: 5)  # every core busy: one thread
        y1 = m.hidden_states(x)
        assert (L.llama_n_threads_batch(m._ctx), m.threads_used) == (1, 1)
        monkeypatch.setattr(thr, "runnable_others", lambda: 0)  # idle again: back to n_threads (when cores allow)
        m.hidden_states(x)
        assert m.threads_used == min(2, thr.physical_cores()) == L.llama_n_threads_batch(m._ctx)
    np.testing.assert_allclose(y1, y2, atol=1e-5, rtol=0)
    with _model(ggufs["bert"], n_ctx=5, n_batch=5, n_seq_max=1) as m:  # explicit count, no adaptation
        assert not m.adapt_threads and m.n_threads == 1 and not m._threadpool


def test_thread_counts(monkeypatch):
    assert thr.physical_cores() >= 1
    monkeypatch.setattr(thr, "physical_cores", lambda: 4)
    monkeypatch.setattr(thr, "runnable_others", lambda: 3)
    assert thr.idle_cores(4) == 1 and thr.idle_cores(1) == 1
    monkeypatch.setattr(thr, "runnable_others", lambda: 1)
    assert thr.idle_cores(4) == 3 and thr.idle_cores(2) == 2
    monkeypatch.setattr(thr, "runnable_others", lambda: None)
    assert thr.idle_cores(3) == 3
    # small calls stay on one thread, big ones take the cores
    assert thr.plan_threads(5, 2e5) == 1
    assert thr.plan_threads(88, 24 * 384 * 384 * 6) == 4
    assert thr.plan_threads(88, 24 * 384 * 384 * 6, cores=2) == 2


def test_single_blas_overlapping_blocks_restore_the_setting():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("numpy has no BLAS threadpoolctl can see")
    a, b = thr.single_blas(), thr.single_blas()
    a.__enter__()
    b.__enter__()
    assert set(blas_threads()) == {1}
    a.__exit__(None, None, None)  # the first out leaves the limit on for the other block
    assert set(blas_threads()) == {1}
    b.__exit__(None, None, None)
    assert blas_threads() == before
