"""The memory plan's backend settings reach the backends: onnxruntime session options and llama.cpp parameters
are read back from the created objects (no torch: a tiny ONNX graph built here and the shipped numeric LM)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from alignts.errors import InputError
from alignts.runtime.backends.onnx import IR_VERSION
from alignts.runtime.budget import describe_plan, estimate_peak
from alignts.runtime.forecaster import Forecaster
from alignts.runtime.manifest import Manifest, Variant, file_entries, read_manifest, write_manifest

ort = pytest.importorskip("onnxruntime")

LEAN = {"arena": False, "enable_mem_pattern": False, "disable_prepacking": True}
FAST = {"arena": True, "enable_mem_pattern": True, "disable_prepacking": False}
D = 64


def _options(session) -> dict:
    """What an onnxruntime session was really created with."""
    so = session.get_session_options()
    try:
        prepack = so.get_session_config_entry("session.disable_prepacking") == "1"
    except Exception:  # noqa: BLE001 - onnxruntime raises when the entry was never set
        prepack = False
    return {"arena": so.enable_cpu_mem_arena, "enable_mem_pattern": so.enable_mem_pattern,
            "disable_prepacking": prepack}


def _matmul_onnx(path):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((D, D)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["S", D])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["S", D])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION)
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_session_options_follow_the_settings(tmp_path):
    from alignts.runtime.backends.onnx import OnnxSession

    p = _matmul_onnx(tmp_path / "m.onnx")
    fast = OnnxSession(p)
    assert _options(fast.session) == FAST == fast.settings  # no settings: onnxruntime's fast defaults
    lean = OnnxSession(p, **LEAN)
    assert _options(lean.session) == LEAN == lean.settings
    x = np.ones((3, D), np.float32)
    np.testing.assert_array_equal(fast.run({"x": x})[0], lean.run({"x": x})[0])


def _residual_layer_norm_onnx(path):
    """y = LayerNormalization(x + r): the residual pattern onnxruntime fuses into SkipLayerNormalization."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal(D).astype(np.float32), n) for n in ("gamma", "beta")]
    nodes = [helper.make_node("Add", ["x", "r"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5, D]) for n in ("x", "r", "y")]
    g = helper.make_graph(nodes, "g", io[:2], io[2:], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION)
    path.write_bytes(model.SerializeToString())
    return path


def test_cpu_sessions_leave_skip_layer_norm_unfused(tmp_path):
    """SkipLayerNormalization's CPU kernel is several times slower than Add + LayerNormalization
    (CPU_DISABLED_OPTIMIZERS): CPU sessions keep the two nodes; onnxruntime's defaults fuse them."""
    import onnx

    from alignts.runtime.backends.onnx import session_options

    src = _residual_layer_norm_onnx(tmp_path / "ln.onnx")
    feeds = {n: np.random.default_rng(2).standard_normal((2, 5, D)).astype(np.float32) for n in ("x", "r")}
    ops, outs = {}, {}
    for name, so in (("default", ort.SessionOptions()), ("alignts", session_options(ort, 1, device="cpu"))):
        so.optimized_model_filepath = str(tmp_path / f"{name}.onnx")
        sess = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        outs[name] = sess.run(None, feeds)[0]
        ops[name] = {n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node}
    assert "SkipLayerNormalization" in ops["default"]  # the rewrite exists: the test can tell
    assert "SkipLayerNormalization" not in ops["alignts"] and "LayerNormalization" in ops["alignts"]
    np.testing.assert_allclose(outs["alignts"], outs["default"], atol=1e-5)


class _Probe(Forecaster):
    """A one-session forecaster that opens its backend the way the paradigms do (``**self.onnx_options()``)."""

    paradigm = "internal"

    def _open(self, variant, device, threads, batch_size):
        from alignts.runtime.backends.onnx import OnnxSession

        self.session = OnnxSession(self.bundle_dir / variant.files[0], device=device, threads=threads,
                                   **self.onnx_options())
        return self.session.provider

    def _opened_settings(self):
        return dict(self.session.settings)

    def _forecast(self, x):
        return x[..., -8:]


@pytest.fixture()
def probe(tmp_path):
    _matmul_onnx(tmp_path / "core.onnx")
    m = Manifest(paradigm="internal", architecture="gpt2", files=file_entries(tmp_path, ["core.onnx"]),
                 variants=(Variant("onnx-fp32", "onnx", "fp32", ("core.onnx",)),),
                 config={"context_len": 32, "horizon": 8, "n_channels": 1, "patch_len": 8, "stride": 8,
                         "n_patches": 5, "d_model": D, "n_layers": 1, "n_heads": 2})
    write_manifest(tmp_path, m)
    return _Probe(tmp_path, read_manifest(tmp_path))


def test_plan_without_budget_keeps_the_fast_defaults(probe):
    plan = probe.plan()
    assert plan.memory_mode == "fast" and dict(plan.settings) == FAST == _options(probe.session.session)
    assert plan.context_used == plan.context_len == 32


def test_tight_budget_opens_the_session_lean(probe):
    m = probe.manifest
    fast = estimate_peak(m, "onnx-fp32", 4, bundle_dir=probe.bundle_dir).total
    lean = estimate_peak(m, "onnx-fp32", 4, mode="lean", bundle_dir=probe.bundle_dir).total
    assert lean < fast
    plan = probe.plan(batch_size=4, budget=(fast + lean) // 2)
    assert plan.memory_mode == "lean" and plan.peak_bytes_estimate == lean
    assert dict(plan.settings) == LEAN == _options(probe.session.session)
    text = describe_plan(probe.memory_choice, settings=plan.settings, mode=plan.memory_mode)
    assert "settings (lean)" in text and "arena=False" in text and "disable_prepacking=True" in text
    # a generous budget: back to the fast settings
    plan = probe.plan(batch_size=4, budget=fast + 1)
    assert plan.memory_mode == "fast" and _options(probe.session.session) == FAST


def test_explicit_settings_override_and_unknown_keys_fail(probe):
    plan = probe.plan(settings={"arena": False})
    assert plan.memory_mode == "custom" and _options(probe.session.session) == {**FAST, "arena": False}
    with pytest.raises(InputError, match="kv_type"):
        probe.plan(settings={"kv_type": "f16"})  # a llama.cpp setting for an onnx variant


# ------------------------------------------------------------------------------------------------ llama.cpp


@pytest.fixture(scope="module")
def numeric_bundle(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective

    return fit_injective(tmp_path_factory.mktemp("inj") / "b", InjectiveFitConfig(samples=3, context_len=48,
                                                                                   horizon=6))


def test_llama_params_follow_the_settings(numeric_bundle):
    from gguf import GGMLQuantizationType as Q

    from alignts.runtime.backends.gguf import LlamaCppModel, default_use_mmap

    m = read_manifest(numeric_bundle)
    path = numeric_bundle / m.variants[0].files[0]
    with LlamaCppModel(path, n_ctx=64, n_batch=32, n_seq_max=2, kv_type="f16", use_mmap=False, n_threads=1) as lm:
        L = lm._L
        assert (lm.context_params.n_ctx, lm.context_params.n_batch, lm.context_params.n_seq_max) == (128, 32, 2)
        assert (L.llama_n_batch(lm._ctx), L.llama_n_seq_max(lm._ctx)) == (32, 2)
        assert L.llama_n_ctx(lm._ctx) >= 128  # llama.cpp rounds the cell count up
        assert lm.context_params.type_k == lm.context_params.type_v == Q.F16
        assert lm.settings == {"n_ctx": 64, "n_seq_max": 2, "n_batch": 32, "kv_type": "f16", "use_mmap": False,
                               "flash_attn": False, "kv_unified": False, "kv_cells": 128}
        assert lm.context_params.flash_attn_type == 0  # off unless asked: exact
        # device="cpu" names no device to offload to: a CUDA build would otherwise keep the weights in pinned
        # host buffers and run large batches on the GPU (results/cuda/README.md, 2026-11-30)
        assert lm.model_params.devices and ctypes.c_void_p.from_address(lm.model_params.devices).value is None
        if hasattr(lm.model_params, "load_mode"):
            assert lm.model_params.load_mode == L.LLAMA_LOAD_MODE_NONE
        else:
            assert lm.model_params.use_mmap is False
    with LlamaCppModel(path, n_ctx=64, n_threads=1) as lm:  # defaults: f32 KV, read where huge pages, else mapped
        assert lm.context_params.type_k == Q.F32 and lm.settings["use_mmap"] is default_use_mmap()
    with LlamaCppModel(path, n_ctx=64, n_threads=1, flash_attn=True) as lm:
        assert lm.context_params.flash_attn_type == 1 and lm.settings["flash_attn"] is True


def test_contexts_of_one_file_share_one_llama_model(numeric_bundle):
    """Two opens of one GGUF with the same load parameters share one llama_model (read into memory, each would
    hold a copy of the weights); their contexts run at once from two threads and give the serial logits; the
    last close frees it, and other load parameters get a model of their own."""
    from concurrent.futures import ThreadPoolExecutor

    from alignts.runtime.backends.gguf import LlamaCppModel, shared_models

    path = numeric_bundle / read_manifest(numeric_bundle).variants[0].files[0]
    ids = (np.arange(37) % 12 + 2).astype(np.int32)  # the numeric LM has 15 tokens
    before = shared_models()
    a = LlamaCppModel(path, n_ctx=64, n_threads=1, use_mmap=False)
    b = LlamaCppModel(path, n_ctx=64, n_threads=1, use_mmap=False)
    c = LlamaCppModel(path, n_ctx=64, n_threads=1, use_mmap=True)
    assert a._model == b._model != c._model and shared_models() == before + 2

    def run(m):
        with m.lock:
            return np.stack([m.prefill(ids[:20], 1)[0]] + [m.step([int(t)])[0] for t in ids[20:]])

    serial = run(a)
    for _ in range(3):
        with ThreadPoolExecutor(2) as ex:
            got = list(ex.map(run, (a, b)))
        np.testing.assert_array_equal(got[0], serial)
        np.testing.assert_array_equal(got[1], serial)
    a.close()
    np.testing.assert_array_equal(run(b), serial)  # b's model outlives a
    assert shared_models() == before + 2
    b.close()
    c.close()
    assert shared_models() == before


def test_injective_plan_passes_kv_type_and_mmap_to_llama_cpp(numeric_bundle, monkeypatch):
    import alignts.runtime as rt
    import alignts.runtime.backends.gguf as gguf_backend
    from gguf import GGMLQuantizationType as Q

    # a llama.cpp without alignts' f16 decode kernels: an f32 cache unless the budget asks for less
    monkeypatch.setattr(gguf_backend, "f16_decode_kernels", lambda: False)
    f = rt.load(numeric_bundle)
    plan = f.plan(variant="gguf-f16", threads=1)
    assert plan.memory_mode == "fast" and plan.settings["kv_type"] == "f32"
    assert f.backend.context_params.type_k == Q.F32 and plan.settings["n_seq_max"] == 3
    m = f.manifest
    fast = estimate_peak(m, "gguf-f16", 1, bundle_dir=numeric_bundle).total
    lean = estimate_peak(m, "gguf-f16", 1, mode="lean", bundle_dir=numeric_bundle).total
    assert lean < fast  # the f16 KV cache is half the f32 one
    plan = f.plan(variant="gguf-f16", threads=1, budget=(fast + lean) // 2)
    assert plan.memory_mode == "lean" and plan.settings["kv_type"] == "f16"
    assert f.backend.context_params.type_k == f.backend.context_params.type_v == Q.F16
    plan = f.plan(variant="gguf-f16", threads=1, settings={"use_mmap": False, "n_ctx": 256})
    assert plan.memory_mode == "custom" and plan.settings["use_mmap"] is False and plan.settings["n_ctx"] == 256
    assert f.backend.n_ctx == 256 and f.prompter.n_ctx == 256
    y = f.forecast_scaled(np.sin(np.arange(60) / 3.0)[None, None])
    assert y.shape == (1, 1, 6) and np.isfinite(y).all()


def test_injective_plan_keeps_an_f16_cache_beside_16_bit_weights(numeric_bundle, monkeypatch):
    """with alignts' f16 decode kernels (patch level 7, x86-64) a generating LM whose weights are no finer than f16
    keeps its KV cache in f16 by default: half the cache's bytes a step and in memory"""
    import alignts.runtime as rt
    import alignts.runtime.backends.gguf as gguf_backend
    from gguf import GGMLQuantizationType as Q

    from alignts.runtime.budget import decode_kv_type

    monkeypatch.setattr(gguf_backend, "f16_decode_kernels", lambda: True)
    assert [decode_kv_type(d) for d in ("f32", "fp32", "f16", "bf16", "q8_0", "q4_0", "none")] == \
        ["f32", "f32", "f16", "f16", "f16", "f16", "f32"]
    m = read_manifest(numeric_bundle)
    with_kernels = estimate_peak(m, "gguf-f16", 1, bundle_dir=numeric_bundle)
    f = rt.load(numeric_bundle)
    plan = f.plan(variant="gguf-f16", threads=1)
    assert plan.memory_mode == "fast" and plan.settings["kv_type"] == "f16"
    assert f.backend.context_params.type_k == f.backend.context_params.type_v == Q.F16
    y = f.forecast_scaled(np.sin(np.arange(60) / 3.0)[None, None])
    assert y.shape == (1, 1, 6) and np.isfinite(y).all()
    monkeypatch.setattr(gguf_backend, "f16_decode_kernels", lambda: False)
    assert decode_kv_type("q8_0") == "f32"
    without = estimate_peak(m, "gguf-f16", 1, bundle_dir=numeric_bundle)
    assert with_kernels.kv_cache * 2 == without.kv_cache and with_kernels.detail["settings"]["kv_type"] == "f16"


def test_injective_shared_cache_holds_one_window_and_the_samples_tokens(numeric_bundle, monkeypatch):
    """when the samples share one KV cache (budget.shared_prompt_kv) it is sized to one window plus every other
    sample's most generated tokens (budget.shared_kv_cells), not a window a sample; the forecast is the same"""
    import alignts.runtime as rt
    import alignts.runtime.paradigms.injective as injective
    from alignts.runtime.budget import shared_kv_cells
    from alignts.runtime.sampler import max_new_tokens

    x = (10 + np.sin(np.arange(60) / 3.0))[None, None]
    f = rt.load(numeric_bundle)
    f.set_sampling(n_samples=8, greedy=False, seed=3)
    f.plan(variant="gguf-q8_0", threads=1, context_len=24, horizon=4)
    s = f.backend.settings
    assert s["kv_unified"] and s["n_seq_max"] == 8
    gen = max_new_tokens(f.prompter.table, 4, f.sampling.max_digits)
    assert s["kv_cells"] == shared_kv_cells(s["n_ctx"], 8, gen) == s["n_ctx"] + 7 * gen < 8 * s["n_ctx"]
    sized = f.forecast_samples(x)
    # the planner's estimate counts the cells the plan opens (llama.cpp pads a cache to 256 cells)
    h = rt.load(numeric_bundle)
    h.plan(variant="gguf-q8_0", threads=1, context_len=24, horizon=4)
    cells, info = h.backend.settings["kv_cells"], h.backend.info
    assert h.backend.settings["kv_unified"] and cells < 3 * h.backend.settings["n_ctx"]
    est = estimate_peak(read_manifest(numeric_bundle), "gguf-q8_0", 1, context_len=24, horizon=4,
                        bundle_dir=numeric_bundle)
    per = 2 if h.backend.settings["kv_type"] == "f16" else 4
    assert est.kv_cache == 2 * info.n_layer * -(-cells // 256) * 256 * info.n_embd * per
    monkeypatch.setattr(injective, "shared_kv_cells", lambda n_ctx, samples, gen: n_ctx * samples)
    g = rt.load(numeric_bundle)
    g.set_sampling(n_samples=8, greedy=False, seed=3)
    g.plan(variant="gguf-q8_0", threads=1, context_len=24, horizon=4)
    assert g.backend.settings["kv_cells"] == 8 * s["n_ctx"]
    assert np.array_equal(sized, g.forecast_samples(x))
    # more digits a value than the cache was sized for: plan again
    f.set_sampling(max_digits=f.sampling.max_digits + 1)
    assert f.backend is None
