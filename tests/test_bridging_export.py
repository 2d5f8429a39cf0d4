"""Bridging export and runtime on a tiny BERT backbone: parity with torch, backbone store and sharing,
sizes, the `alignts fit bridging` verb, and a missing backbone."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from alignts.errors import BackboneNotFoundError, ShapeError  # noqa: E402
from alignts.runtime import backbone_store, load  # noqa: E402
from alignts.runtime.manifest import TORCH_TRAINED_NAME, manifest_sha256, read_manifest  # noqa: E402
from alignts.runtime.paradigms.bridging import bundle_sizes  # noqa: E402

L, H, C = 48, 12, 2


def _x(n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(L)
    base = np.sin(2 * np.pi * t / 12)[None, None] + 0.3 * rng.normal(size=(n, C, L)).cumsum(-1)
    return (scale * base + rng.normal(size=(n, C, 1)) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from alignts.export.backbone_bundle import ensure_backbone_bundle, max_positions, tokenizer_text
    from alignts.export.backbones import load_backbone
    from alignts.export.bridging import BridgingConfig, BridgingModel
    from alignts.export.fit_bridging import choose_prompt_len, export_adapter_bundle
    from alignts.runtime.tokenize import PromptTokenizer

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("bridging")
    backbone = load_backbone("tiny-bert")
    cfg = BridgingConfig(context_len=L, horizon=H, d_model=16, n_heads=4, d_keys=8, n_prototypes=16, d_ff=16,
                         description="synthetic test series.")
    tok = PromptTokenizer(tokenizer_text(backbone).encode())
    x = _x(6, 0)
    cfg = dataclasses.replace(cfg, prompt_len=choose_prompt_len(x, cfg, tok, max_positions(backbone),
                                                                cfg.n_patches))
    torch.manual_seed(0)
    model = BridgingModel(backbone, cfg, tok).eval()
    with torch.no_grad():  # a non-trivial head so the forecast depends on the LM output
        model.head.weight.normal_(0, 0.05)
    bb_path, sha, reused = ensure_backbone_bundle(backbone, root / "backbones")
    assert not reused
    export_adapter_bundle(model, root / "a", backbone_path=bb_path, backbone_sha=sha, backbone=backbone,
                          check_x=x[:2], config_extra={"n_channels": C})
    return SimpleNamespace(root=root, model=model, backbone=backbone, bb_path=bb_path, sha=sha, cfg=cfg)


def test_manifest_points_to_backbone_by_hash(built):
    m = read_manifest(built.root / "a")
    assert m.paradigm == "bridging"
    assert m.backbone["sha256"] == built.sha == manifest_sha256(built.bb_path)
    assert m.backbone["name"] == "bert:tiny-bert"
    bm = read_manifest(built.bb_path)
    assert bm.paradigm == "backbone"
    gguf = {"backbone-f32.gguf", "backbone-bf16.gguf", "backbone-q8_0.gguf", "backbone-q4_0.gguf"}  # with llama.cpp
    assert set(bm.files) - gguf == {"backbone.onnx", "backbone.int8.onnx", "word_embeddings.npy", "tokenizer.json"}
    # the adapter ships no vocabulary-sized matrix: only the adapter graph and the head (what the runtime reads),
    # and the trained torch tensors for the reference (prototypes [K, d], not the [V, K] mapping)
    assert {f for v in m.variants for f in v.files} == {"adapter.onnx", "adapter.int8.onnx", "head.npz"}
    assert set(m.files) == {"adapter.onnx", "adapter.int8.onnx", "head.npz", TORCH_TRAINED_NAME}
    from safetensors import safe_open

    with safe_open(str(built.root / "a" / TORCH_TRAINED_NAME), framework="pt") as fh:
        vocab = built.backbone.word_embeddings.shape[0]
        assert all(vocab not in fh.get_slice(k).get_shape() for k in fh.keys())
    val = m.variants[0].validation
    for k in ("adapter_max_abs_diff", "backbone_max_abs_diff", "pipeline_max_abs_diff"):
        assert 0 <= val[k] <= 1e-4, (k, val[k])


def test_runtime_matches_torch(built):
    f = load(built.root / "a")
    f.plan(batch_size=3)
    for seed, scale in ((1, 1.0), (2, 50.0), (3, 0.01)):
        x = _x(5, seed, scale)
        with torch.no_grad():
            ref = built.model(torch.from_numpy(x)).numpy()
        got = f.forecast_scaled(x)
        assert got.shape == (5, C, H)
        diff = float(np.max(np.abs(ref - got)))
        assert diff <= 1e-4 * max(1.0, scale), (seed, diff)
    # the prompt really enters: another description changes the forecast
    x = _x(2, 4)
    f2 = load(built.root / "a")
    f2.prompt = dataclasses.replace(f2.prompt, description="something else entirely.")
    f2.plan(batch_size=2)
    assert np.max(np.abs(f2.forecast_scaled(x) - f.forecast_scaled(x))) > 1e-6


def test_adapter_export_is_the_adapter(built):
    """The exported adapter (keys folded into the query projection, one product a head for all series) computes
    the trained adapter's function: every head, the query bias, 1 and 5 series."""
    from alignts.export.bridging import AdapterExport

    model, cfg = built.model, built.cfg
    assert float(model.reprogram.query.bias.abs().max()) > 0  # the folded bias row is exercised
    ad = AdapterExport(model).eval()
    assert tuple(ad.scores_w.shape) == (cfg.n_heads, cfg.d_model + 1, cfg.n_prototypes)
    g = torch.Generator().manual_seed(3)
    for S in (1, 5):
        p = 3.0 * torch.randn(S, cfg.n_patches, cfg.patch_len, generator=g)
        with torch.no_grad():
            ref, got = model.adapter(p), ad(p)
        assert got.shape == ref.shape == (S, cfg.n_patches, built.backbone.d_model)
        assert float((got - ref).abs().max()) <= 1e-5 * max(1.0, float(ref.abs().max())), S


@pytest.mark.gguf
def test_gguf_variant_matches_torch(built):
    pytest.importorskip("llama_cpp")
    m = read_manifest(built.root / "a")
    names = [v.name for v in m.variants]
    assert names[0] == "onnx-fp32" and "gguf-f32" in names, read_manifest(built.bb_path).config["gguf_skipped"]
    v = m.variant("gguf-f32")
    assert v.validation["pipeline_max_abs_diff"] <= v.validation["tolerance"]
    assert read_manifest(built.bb_path).variant("gguf-f32").validation["relative_max_abs_diff"] <= 5e-3
    f = load(built.root / "a")
    f.plan(batch_size=3, variant="gguf-f32")
    x = _x(3, 11)
    with torch.no_grad():
        ref = built.model(torch.from_numpy(x)).numpy()
    assert float(np.max(np.abs(f.forecast_scaled(x) - ref))) <= 1e-3


def test_runtime_without_torch(built):
    x = _x(2, 7)
    with torch.no_grad():
        ref = built.model(torch.from_numpy(x)).numpy()
    code = ("import sys, json, numpy as np; import alignts.runtime as rt; "
            f"f = rt.load({str(built.root / 'a')!r}); f.plan(batch_size=2); "
            f"y = f.forecast_scaled(np.array(json.loads(sys.argv[1]), dtype=np.float32)); "
            "assert 'torch' not in sys.modules; print(json.dumps(y.tolist()))")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(x.tolist())], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    got = np.array(json.loads(r.stdout.strip().splitlines()[-1]))
    assert np.max(np.abs(got - ref)) <= 1e-4


def test_lean_plan_reaches_adapter_and_backbone_sessions(built):
    """Within a budget only the lean settings fit, both onnxruntime sessions are created lean; no budget: fast."""
    from alignts.runtime.budget import estimate_peak

    def opts(sess):
        so = sess.session.get_session_options()
        return (so.enable_cpu_mem_arena, so.enable_mem_pattern,
                so.get_session_config_entry("session.disable_prepacking") if not so.enable_cpu_mem_arena else None)

    a = built.root / "a"
    f = load(a)
    plan = f.plan(batch_size=2)
    assert plan.memory_mode == "fast" and opts(f._adapter) == opts(f.backbone._session) == (True, True, None)
    m = f.manifest
    fast = estimate_peak(m, "onnx-fp32", 2, bundle_dir=a).total
    lean = estimate_peak(m, "onnx-fp32", 2, mode="lean", bundle_dir=a).total
    plan = f.plan(batch_size=2, budget=(fast + lean) // 2)
    assert plan.memory_mode == "lean"
    assert dict(plan.settings) == {"arena": False, "enable_mem_pattern": False, "disable_prepacking": True}
    assert opts(f._adapter) == opts(f.backbone._session) == (False, False, "1")
    x = _x(2, 3)
    with torch.no_grad():
        ref = built.model(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(f.forecast_scaled(x) - ref)) <= 1e-4
    # the fast-planned forecaster kept its own backbone: the lean one is another cache entry
    g = load(a)
    g.plan(batch_size=2)
    assert g.backbone is not f.backbone and opts(g.backbone._session) == (True, True, None)
    backbone_store.clear_cache()


def test_backbone_store_reuses_same_backbone(built):
    from alignts.export.backbone_bundle import ensure_backbone_bundle

    path, sha, reused = ensure_backbone_bundle(built.backbone, built.root / "backbones")
    assert reused and path == built.bb_path and sha == built.sha
    assert len([p for p in (built.root / "backbones").iterdir() if not p.name.startswith(".")]) == 1


def test_fit_cli_and_two_bundles_share_one_backbone(built, tmp_path, capsys):
    from alignts.cli import main

    rng = np.random.default_rng(0)
    t = np.arange(600)
    csv = tmp_path / "syn.csv"
    with open(csv, "w") as fh:
        fh.write("date,a,b\n")
        for i in range(600):
            ts = np.datetime64("2020-01-01T00", "h") + i
            fh.write(f"{ts},{np.sin(2 * np.pi * t[i] / 12) + 0.1 * rng.normal():.5f},"
                     f"{np.cos(2 * np.pi * t[i] / 24) + 0.01 * t[i]:.5f}\n")
    out = built.root / "b"
    rc = main(["fit", "bridging", "--data", str(csv), "--out", str(out), "--backbone", "tiny-bert",
               "--backbone-dir", str(built.root / "backbones"), "--context", str(L), "--horizon", str(H),
               "--d-model", "16", "--heads", "4", "--d-keys", "8", "--prototypes", "16", "--d-ff", "16",
               "--epochs", "1", "--batch-size", "32", "--max-train-windows", "64", "--max-val-windows", "32",
               "--threads", "2"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "(reused)" in text and "pipeline" in text
    mb = read_manifest(out)
    assert mb.backbone["sha256"] == built.sha
    assert mb.training["epochs_run"] == 1 and mb.config["n_channels"] == C
    assert mb.variants[0].validation["pipeline_max_abs_diff"] <= 1e-4

    backbone_store.clear_cache()
    opened = backbone_store.cache_info()["opened"]
    fa, fb = load(built.root / "a"), load(out)
    # the same backbone variant for both (each bundle's planner ranks its own gate-passing variants by speed)
    fa.plan(batch_size=2, variant="onnx-fp32")
    fb.plan(batch_size=2, variant="onnx-fp32")
    assert fa.backbone is fb.backbone
    assert backbone_store.cache_info()["opened"] == opened + 1
    x = _x(2, 9)
    assert fa.forecast_scaled(x).shape == fb.forecast_scaled(x).shape == (2, C, H)
    assert not np.allclose(fa.forecast_scaled(x), fb.forecast_scaled(x))


@pytest.fixture(scope="module")
def skipped(built):
    """Adapters with the linear skip (random head and skip weights) over the same backbone, and its twin."""
    from alignts.export.backbone_bundle import tokenizer_text
    from alignts.export.bridging import BridgingModel
    from alignts.export.fit_bridging import export_adapter_bundle
    from alignts.runtime.tokenize import PromptTokenizer

    tok = PromptTokenizer(tokenizer_text(built.backbone).encode())
    models = {}
    for name, ablate in (("skip", "none"), ("skip-twin", "identity")):
        cfg = dataclasses.replace(built.cfg, linear_skip=True, ablate_lm=ablate)
        torch.manual_seed(1)
        model = BridgingModel(built.backbone, cfg, tok).eval()
        assert not model.head.weight.any() and not model.skip.weight.requires_grad  # head at 0, skip frozen
        with torch.no_grad():  # both paths non-trivial
            model.head.weight.normal_(0, 0.05)
            model.skip.weight.normal_(0, 0.05)
            model.skip.bias.normal_(0, 0.1)
        export_adapter_bundle(model, built.root / name, backbone_path=None if ablate != "none" else built.bb_path,
                              backbone_sha="" if ablate != "none" else built.sha, backbone=built.backbone,
                              check_x=_x(2, 0), config_extra={"n_channels": C})
        models[name] = model
    return models


@pytest.mark.parametrize("name", ["skip", "skip-twin"])
def test_linear_skip_runtime_matches_torch(built, skipped, name):
    from alignts.export.reference import load_torch

    model = skipped[name]
    m = read_manifest(built.root / name)
    assert m.config["linear_skip"] is True
    with np.load(built.root / name / "head.npz") as h:
        assert h["skip_w"].shape == (H, L) and h["skip_b"].shape == (H,)
    f = load(built.root / name)
    f.plan(batch_size=3)
    rebuilt = load_torch(built.root / name)  # the torch reference carries the skip too
    for seed, scale in ((1, 1.0), (2, 50.0)):
        x = _x(3, seed, scale)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
            again = rebuilt(torch.from_numpy(x)).numpy()
            no_skip = ref - (model.skip(model.normalize(torch.from_numpy(x).reshape(-1, L))[0]).numpy()
                             * model.normalize(torch.from_numpy(x).reshape(-1, L))[2].numpy()).reshape(ref.shape)
        assert np.max(np.abs(ref - no_skip)) > 1e-2 * scale  # the skip moves the forecast
        assert float(np.max(np.abs(f.forecast_scaled(x) - ref))) <= 1e-4 * max(1.0, scale), (name, seed)
        assert float(np.max(np.abs(again - ref))) <= 1e-5 * max(1.0, scale)
    if name == "skip" and "gguf-f32" in [v.name for v in m.variants]:
        g = load(built.root / name)
        g.plan(batch_size=3, variant="gguf-f32")
        x = _x(3, 11)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert float(np.max(np.abs(g.forecast_scaled(x) - ref))) <= 1e-3


def test_fit_cli_linear_skip(csv, tmp_path, capsys):
    """`fit bridging --linear-skip` fits the ridge before training, records it, and ships skip_w / skip_b."""
    from alignts.cli import main

    out = tmp_path / "twin"
    rc = main(["fit", "bridging", "--data", str(csv), "--out", str(out), "--backbone", "tiny-bert",
               "--ablate-lm", "identity", "--linear-skip", "--context", str(L), "--horizon", str(H),
               "--d-model", "16", "--heads", "4", "--d-keys", "8", "--prototypes", "16", "--d-ff", "16",
               "--epochs", "1", "--batch-size", "32", "--max-train-windows", "64", "--threads", "2"])
    assert rc == 0, capsys.readouterr().out
    m = read_manifest(out)
    t = m.training
    assert m.config["linear_skip"] is True and t["linear_skip"]["ridge"] > 0 and t["linear_skip"]["n_rows"] > 0
    # the untrained model is the ridge (head at 0): its validation MSE is where training starts
    assert abs(t["start_val_mse"] - t["linear_skip"]["val_mse"]) <= 1e-3 * t["linear_skip"]["val_mse"]
    assert t["best_val_mse"] <= t["start_val_mse"]
    with np.load(out / "head.npz") as h:
        assert np.abs(h["skip_w"]).max() > 0
    capsys.readouterr()
    rc = main(["fit", "bridging", "--data", str(csv), "--out", str(tmp_path / "bad"), "--backbone", "tiny-bert",
               "--ablate-lm", "identity", "--linear-skip", "--context", str(L), "--horizon", str(H),
               "--d-ff", "16", "--patch-len", "8", "--stride", "16", "--epochs", "1"])
    assert rc == 2 and "--stride <= --patch-len" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_bundle_sizes(built):
    s = bundle_sizes(built.root / "a")
    assert s["backbone_found"]
    assert s["adapter_bytes"] == sum(s["adapter_files"].values()) + (built.root / "a" / "manifest.json").stat().st_size
    assert s["backbone_bytes"] > s["adapter_files"]["adapter.onnx"]
    recorded = read_manifest(built.root / "a").config["sizes"]
    assert recorded["backbone_bytes"] == s["backbone_bytes"]
    assert abs(recorded["adapter_to_backbone"] - recorded["adapter_bytes"] / recorded["backbone_bytes"]) < 1e-12
    d = load(built.root / "a").describe()
    assert d["sizes"]["backbone_bytes"] == s["backbone_bytes"] and d["backbone"]["sha256"] == built.sha


def test_missing_backbone_names_it_and_where_looked(built, tmp_path, monkeypatch):
    monkeypatch.delenv(backbone_store.ENV_VAR, raising=False)
    monkeypatch.setattr(backbone_store, "USER_STORE", tmp_path / "user-store")
    lonely = tmp_path / "elsewhere" / "a"
    shutil.copytree(built.root / "a", lonely)
    with pytest.raises(BackboneNotFoundError) as e:
        load(lonely)
    msg = str(e.value)
    assert built.sha in msg and "bert:tiny-bert" in msg
    assert str(tmp_path / "elsewhere" / "backbones") in msg and "user-store" in msg
    # found once the store is named
    from alignts.runtime.paradigms.bridging import BridgingForecaster

    g = BridgingForecaster(lonely, read_manifest(lonely), backbone_dirs=[built.root / "backbones"])
    assert g.backbone_path == built.bb_path
    # a backbone folder with another hash is refused
    with pytest.raises(BackboneNotFoundError, match="holds another backbone"):
        backbone_store.open_backbone(built.bb_path, "0" * 64)


def test_variants_on_a_quantized_backbone_run_the_int8_adapter(built):
    """The variants on a quantized backbone run adapter.int8.onnx (dynamic int8, weights per tensor), the fp32 ones
    adapter.onnx; the int8 adapter's embeddings stay close to the fp32 one's, and its error vs torch is recorded."""
    import onnx

    from alignts.runtime.backends.onnx import OnnxSession

    a = built.root / "a"
    m = read_manifest(a)
    bm = read_manifest(built.bb_path)
    for v in m.variants:
        q = bm.variant(v.name).dtype not in ("fp32", "f32")
        want = "adapter.int8.onnx" if q else "adapter.onnx"
        assert v.extra["adapter_file"] == want and v.files[0] == want
        assert np.isfinite(v.validation["adapter_max_abs_diff"])
        f = load(a)
        f.plan(variant=v.name, batch_size=1)
        assert Path(f._adapter.path).name == want
    ops = {n.op_type for n in onnx.load(str(a / "adapter.int8.onnx")).graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger"}
    patches = np.random.default_rng(5).standard_normal((3, built.cfg.n_patches, built.cfg.patch_len)).astype(np.float32)
    fp, q8 = (OnnxSession(a / name).run({"patches": patches})[0] for name in ("adapter.onnx", "adapter.int8.onnx"))
    assert float(np.abs(q8 - fp).max()) <= 0.05 * float(np.abs(fp).max())


def test_onnx_backbone_runs_its_last_layer_on_the_read_rows(built):
    """A BERT backbone's ONNX graphs take ``output_rows``: the last layer's attention reads every token, its output
    projection, residual, LayerNorms and FFN run on those rows only (the cut alignts' llama.cpp makes), so Bridging's
    N patch states cost no prompt token's projection or FFN. The values are torch's, and the full graph's tail."""
    import onnx

    from alignts.runtime.backbone_store import ROWS_INPUT, open_backbone

    bm = read_manifest(built.bb_path)
    for name, f in (("onnx-fp32", "backbone.onnx"), ("onnx-int8", "backbone.int8.onnx")):
        assert bm.variant(name).inputs == ("inputs_embeds", ROWS_INPUT)
        g = onnx.load(str(built.bb_path / f)).graph
        assert sum(n.op_type == "MultiHeadAttention" for n in g.node) == built.backbone.n_layers  # fused as before
        shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in g.value_info}
        gelus = [shapes.get(n.output[0], [None, None])[1] for n in g.node if n.op_type == "Gelu"]
        assert gelus == ["tokens"] * (built.backbone.n_layers - 1) + ["rows"]  # the last FFN is the rows' only
        if name == "onnx-fp32":  # and so are the output projection's, up's and down's products
            assert sum(n.op_type == "MatMul" and shapes.get(n.output[0], [None, None])[1] == "rows"
                       for n in g.node) == 3
    e = np.random.default_rng(4).standard_normal((5, 30, built.backbone.d_model)).astype(np.float32)
    with torch.no_grad():
        ref = built.backbone.forward_embeds(torch.from_numpy(e)).numpy()
    for name, tol in (("onnx-fp32", 1e-5), ("onnx-int8", None)):
        b = open_backbone(built.bb_path, built.sha, name)
        assert b.last_rows_only
        full = b.hidden(e)
        for k in (30, 9, 1):
            tail = b.hidden(e, last=k)
            assert tail.shape == (5, k, e.shape[2])
            if tol is not None:
                np.testing.assert_allclose(tail, ref[:, 30 - k:], atol=tol)
                np.testing.assert_allclose(tail, full[:, 30 - k:], atol=tol)
            else:  # dynamic int8 scales each activation over the rows it holds: close, not equal
                assert float(np.abs(tail - full[:, 30 - k:]).max()) <= 0.05 * float(np.abs(full).max())
        for bad in (0, 31):
            with pytest.raises(ShapeError, match="last"):
                b.hidden(e, last=bad)


def test_flop_count_leaves_out_the_prompts_last_layer_where_the_backbone_does(built):
    """alignts bench's roofline: a Bridging forecaster whose backbone runs its last layer after the attention (output
    projection, FFN) on the N patch tokens only (a BERT's ONNX graph with output_rows; llama.cpp from patch level
    20) has the prompt tokens' left out of its FLOP count."""
    from alignts.bench.bundles import tail_rows
    from alignts.bench.roofline import model_flops
    from alignts.runtime.budget import _shape

    a = built.root / "a"
    m = read_manifest(a)
    sh = _shape(m, 3, None, None, None, a)
    full, tail = model_flops(m, 3, bundle_dir=a), model_flops(m, 3, bundle_dir=a, last_rows_only=True)
    assert sh.series == 3 * C and sh.tokens == built.cfg.prompt_len + built.cfg.n_patches
    d, ff = sh.width, sh.d_ff
    assert full - tail == pytest.approx(sh.series * built.cfg.prompt_len * 2.0 * (d * d + 2 * d * ff))

    def planned(variant: str):
        f = load(a)
        f.plan(variant=variant, batch_size=1)
        return f

    assert tail_rows(planned("onnx-fp32"))
    assert not tail_rows(SimpleNamespace())  # no backbone: Internal, Injective
    if "gguf-f32" in [v.name for v in m.variants] and importlib.util.find_spec("llama_cpp"):
        from alignts.runtime.backends.gguf import llama_patch_level

        assert tail_rows(planned("gguf-f32")) == (llama_patch_level() >= 20)  # change 20
