"""alignts-run (native/runner, a CLI over libalignts): the C runner on llama.cpp against the Python runtime on the
same tiny bundles.

The runner is built with CMake into a temporary folder (skipped when cmake, a C compiler or llama-cpp-python is
missing). Bundles come from the real fit functions: Internal (tiny backbone, 1 epoch, GGUF f32) and Injective (a
random tiny GPT-2 with the numeric LM's vocabulary, GGUF f32). Comparisons:
- Injective, greedy: the printed forecast equals `alignts forecast` and the Python runtime exactly, for several
  context/horizon pairs (one where the prompt is cut to fit n_ctx), and so do the prompt token ids;
- Internal, GGUF: within 1e-4 of the Python runtime's gguf-f32 variant (and of `alignts forecast`);
- Bridging (tiny-bert backbone bundle, gguf-f32): within 1e-4 of the Python runtime, and the prompt ids (the C
  statistics text + tokenizer) equal Python's;
- malformed manifest, missing file, sha256/size mismatch, bad CSV: exit 1 with a clear message, no crash;
- valgrind: no invalid access and no leak (definite, indirect, possible) on the success and error paths.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pd = pytest.importorskip("pandas")

ROOT = Path(__file__).resolve().parents[1]
RUNNER_SRC = ROOT / "native" / "runner"
L_INT, H_INT = 48, 12
L_INJ, H_INJ = 40, 8


def _cc() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    if not shutil.which("cmake") or not _cc():
        pytest.skip("cmake or a C compiler is missing")
    build = tmp_path_factory.mktemp("runner-build")
    cfg = subprocess.run(["cmake", "-S", str(RUNNER_SRC), "-B", str(build), "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                          f"-DALIGNTS_PYTHON={sys.executable}"], capture_output=True, text=True)
    if cfg.returncode != 0 and "llama.cpp not found" in cfg.stderr:
        pytest.skip("llama.cpp headers/library not found by CMake: " + cfg.stderr[-300:])
    assert cfg.returncode == 0, cfg.stdout[-2000:] + cfg.stderr[-2000:]
    b = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    exe = build / "alignts-run"
    assert exe.is_file()
    return exe


def run(exe: Path, *args, valgrind: bool = False, env=None) -> subprocess.CompletedProcess:
    cmd = [str(exe), *map(str, args)]
    if valgrind:
        cmd = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
               "--errors-for-leak-kinds=definite,indirect,possible", "--error-exitcode=99", *cmd]
    # no LD_LIBRARY_PATH: the binary finds libllama through its RPATH
    e = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env or e)


def parse(out: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(out))



def _fit_internal(csv: Path, out: Path, backbone: str, linear_skip: bool = False) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    pytest.importorskip("onnxruntime")
    from alignts.export.fit_internal import FitInternalConfig, fit_internal
    from alignts.export.internal import InternalConfig
    from alignts.export.train import TrainConfig

    m = fit_internal(FitInternalConfig(
        data=str(csv), out=str(out), backbone=backbone, int8=False, gguf_dtypes=("f32",),
        model=InternalConfig(context_len=L_INT, horizon=H_INT, patch_len=16, stride=8, head_init="default",
                             linear_skip=linear_skip),
        train=TrainConfig(epochs=1, batch_size=16, max_train_windows=32, max_val_windows=16, threads=2)))
    if not any(v.backend == "gguf" for v in m.variants):
        pytest.skip(f"fit_internal wrote no GGUF variant: {m.training.get('skipped_variants')}")
    return out


@pytest.fixture(scope="module")
def internal_bundle(csv, tmp_path_factory) -> Path:
    return _fit_internal(csv, tmp_path_factory.mktemp("internal") / "bundle", "tiny-gpt2")


@pytest.fixture(scope="module")
def injective_bundle(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_injective_utils import tiny_numeric_gpt2

    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective

    base = tmp_path_factory.mktemp("injective")
    hf = tiny_numeric_gpt2(base / "hf", seed=0)
    out = base / "bundle"
    fit_injective(out, InjectiveFitConfig(model=str(hf), backends=("gguf",), context_len=L_INJ, horizon=H_INJ,
                                          samples=3, greedy=True))
    return out


def _python_forecast(bundle: Path, csv: Path, variant: str | None = None, context: int | None = None,
                     horizon: int | None = None) -> np.ndarray:
    """What `alignts forecast` computes (alignts/cli/forecast.py), as [C, H]."""
    from alignts.data.load import load_data
    from alignts.runtime import load

    f = load(bundle)
    f.plan(context_len=context, horizon=horizon, variant=variant)
    data = load_data(csv, columns=f.manifest.config.get("columns") or None)
    hist = data.values[-f.context_len:].T
    scale = getattr(f, "scale", lambda v: v)
    unscale = getattr(f, "unscale", lambda v: v)
    return unscale(f.forecast_scaled(scale(hist)[None])[0].astype(np.float64))


def _cli_forecast(bundle: Path, csv: Path, capsys, *extra) -> pd.DataFrame:
    """`alignts forecast`'s point forecast, one column per channel: Injective's sample median (its "0.5"
    column), else the mean."""
    from alignts.cli import main

    median = json.loads((bundle / "manifest.json").read_text())["paradigm"] == "injective"
    capsys.readouterr()
    assert main(["forecast", str(bundle), "--data", str(csv), "--quantiles", "0.5" if median else "none",
                 *extra]) == 0
    long = parse(capsys.readouterr().out)
    return long.pivot(index="timestamp", columns="target", values="0.5" if median else "mean")


# ---------------------------------------------------------------------------------------------- Injective

def test_injective_greedy_equals_alignts_forecast(runner, injective_bundle, csv, capsys):
    r = run(runner, injective_bundle, "--data", csv)
    assert r.returncode == 0, r.stderr
    got = parse(r.stdout)
    want = _cli_forecast(injective_bundle, csv, capsys)
    assert list(got.columns) == ["step", "x", "y"]
    assert got["step"].tolist() == list(range(400, 400 + H_INJ))
    np.testing.assert_array_equal(got[["x", "y"]].to_numpy(), want[["x", "y"]].to_numpy())
    # --greedy on a greedy bundle changes nothing; --column picks one series
    r2 = run(runner, injective_bundle, "--data", csv, "--greedy", "--column", "y")
    assert r2.returncode == 0, r2.stderr
    np.testing.assert_array_equal(parse(r2.stdout)["y"].to_numpy(), want["y"].to_numpy())
    # a numeric column named like a date is the date column, not a series (as alignts.data.load)
    stamped = csv.parent / "stamped.csv"
    pd.read_csv(csv).drop(columns=["date"]).assign(Timestamp=np.arange(400)).to_csv(stamped, index=False)
    r3 = run(runner, injective_bundle, "--data", stamped, "--horizon", 2)
    assert r3.returncode == 0, r3.stderr
    got3 = parse(r3.stdout)
    assert list(got3.columns) == ["step", "x", "y"]
    np.testing.assert_array_equal(got3[["x", "y"]].to_numpy(),
                                  _cli_forecast(injective_bundle, stamped, capsys, "--horizon", "2")[["x", "y"]].to_numpy())


@pytest.mark.parametrize("context,horizon", [(20, 5), (150, 6)])  # 150 values do not fit n_ctx=256: cut
def test_injective_prompt_and_forecast_match_runtime(runner, injective_bundle, csv, context, horizon):
    from alignts.data.load import load_data
    from alignts.runtime import load

    r = run(runner, injective_bundle, "--data", csv, "--context", context, "--horizon", horizon, "--dump-prompt")
    assert r.returncode == 0, r.stderr
    want = _python_forecast(injective_bundle, csv, context=context, horizon=horizon)
    np.testing.assert_array_equal(parse(r.stdout)[["x", "y"]].to_numpy().T, want)
    f = load(injective_bundle)
    f.plan(context_len=context, horizon=horizon)
    x = load_data(csv).values[-context:].T.astype(np.float32).astype(np.float64)
    prompts, _, _ = f.prompter.prompts(x, horizon, n_values=f.context_used)  # the same LLMTime truncation
    assert (f.context_used < context) == (context == 150)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("prompt ")]
    assert [ln.split(":")[0] for ln in lines] == ["prompt x", "prompt y"]
    for line, p in zip(lines, prompts):
        assert [int(t) for t in line.split(":")[1].split()] == p.tolist()
    if context == 150:
        assert len(prompts[0]) < 150 * 4  # the cut really happened


def test_injective_sampling_is_seeded(runner, injective_bundle, csv, tmp_path):
    sampled = tmp_path / "sampled"
    shutil.copytree(injective_bundle, sampled)
    m = json.loads((sampled / "manifest.json").read_text())
    m["config"]["greedy"] = False
    m["config"]["samples"] = 5
    (sampled / "manifest.json").write_text(json.dumps(m))
    a = run(runner, sampled, "--data", csv, "--seed", 7)
    b = run(runner, sampled, "--data", csv, "--seed", 7)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout
    v = parse(a.stdout)[["x", "y"]].to_numpy()
    assert v.shape == (H_INJ, 2) and np.isfinite(v).all()


def test_injective_kv_type_follows_the_plan(runner, csv, tmp_path):
    """alignts-run keeps a decode's KV cache in f16 beside q8_0 weights exactly when the Python plan does
    (budget.decode_kv_type: x86-64 with alignts' f16 decode kernels), and a variant's kv_type overrides it"""
    import re

    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective
    from alignts.runtime import load
    from alignts.runtime.budget import decode_kv_type

    bundle = tmp_path / "numeric"
    fit_injective(bundle, InjectiveFitConfig(model=None, context_len=L_INJ, horizon=H_INJ, samples=2, greedy=True))
    pinned = tmp_path / "pinned"
    shutil.copytree(bundle, pinned)
    m = json.loads((pinned / "manifest.json").read_text())
    for v in m["variants"]:
        v.setdefault("extra", {})["kv_type"] = "f32"
    (pinned / "manifest.json").write_text(json.dumps(m))

    def kv_bytes(b: Path) -> int:
        r = run(runner, b, "--data", csv, "--variant", "gguf-q8_0", "--stats")
        assert r.returncode == 0, r.stderr
        return int(json.loads(re.search(r"\{.*forecast_ms.*\}", r.stderr).group(0))["kv_bytes"])

    want = decode_kv_type("q8_0")
    assert load(bundle).plan(variant="gguf-q8_0").settings["kv_type"] == want
    assert kv_bytes(pinned) == kv_bytes(bundle) * (2 if want == "f16" else 1)


# ---------------------------------------------------------------------------------------------- Internal

def test_internal_linear_skip_within_1e4_of_python(runner, csv, tmp_path):
    """The skip path (skip_w/skip_b in io.npz) is applied by alignts-run as by the Python runtime."""
    bundle = _fit_internal(csv, tmp_path / "skip", "tiny-gpt2", linear_skip=True)
    r = run(runner, bundle, "--data", csv)
    assert r.returncode == 0, r.stderr
    want = _python_forecast(bundle, csv, variant="gguf-f32")
    d = float(np.abs(parse(r.stdout)[["x", "y"]].to_numpy().T - want).max())
    assert d < 1e-4, d


def test_internal_gguf_within_1e4_of_python(runner, internal_bundle, csv, capsys):
    r = run(runner, internal_bundle, "--data", csv)
    assert r.returncode == 0, r.stderr
    got = parse(r.stdout)
    assert list(got.columns) == ["step", "x", "y"] and len(got) == H_INT
    want = _python_forecast(internal_bundle, csv, variant="gguf-f32")
    d = float(np.abs(got[["x", "y"]].to_numpy().T - want).max())
    assert d < 1e-4, d
    cli = _cli_forecast(internal_bundle, csv, capsys, "--variant", "gguf-f32")
    assert float(np.abs(got[["x", "y"]].to_numpy() - cli[["x", "y"]].to_numpy()).max()) < 1e-4
    names = [v["name"] for v in json.loads((internal_bundle / "manifest.json").read_text())["variants"]]
    if "gguf-f32-lora" in names:  # base GGUF + LoRA adapter applied by llama.cpp
        r3 = run(runner, internal_bundle, "--data", csv, "--variant", "gguf-f32-lora")
        assert r3.returncode == 0, r3.stderr
        want3 = _python_forecast(internal_bundle, csv, variant="gguf-f32-lora")
        assert float(np.abs(parse(r3.stdout)[["x", "y"]].to_numpy().T - want3).max()) < 1e-4
    # a shorter horizon is a prefix; --column maps renamed CSV columns onto the channels
    renamed = csv.parent / "renamed.csv"
    pd.read_csv(csv).rename(columns={"x": "a", "y": "b"}).to_csv(renamed, index=False)
    r2 = run(runner, internal_bundle, "--data", renamed, "--horizon", 5, "--column", "a", "--column", "b")
    assert r2.returncode == 0, r2.stderr
    np.testing.assert_array_equal(parse(r2.stdout)[["a", "b"]].to_numpy(), got[["x", "y"]].to_numpy()[:5])


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["tiny-llama", "tiny-bert"])
def test_internal_other_backbones(runner, csv, tmp_path, backbone):
    bundle = _fit_internal(csv, tmp_path / "bundle", backbone)
    r = run(runner, bundle, "--data", csv)
    assert r.returncode == 0, r.stderr
    want = _python_forecast(bundle, csv, variant="gguf-f32")
    assert float(np.abs(parse(r.stdout)[["x", "y"]].to_numpy().T - want).max()) < 1e-4


def test_internal_flash_attention_variant_within_1e4_of_python(runner, csv, tmp_path, monkeypatch):
    """A bundle quantized before session 9 records flash attention on a BERT encoder's reduced-precision variants
    (FLASH_ATTN_DTYPES was bf16 / q8_0 / q4_0; now empty): both runtimes still open llama.cpp with it and decode the
    same groups, so they agree as gguf-f32 does."""
    import alignts.export.quantize as quantize
    from alignts.runtime import load

    bundle = _fit_internal(csv, tmp_path / "bert", "tiny-bert")
    monkeypatch.setattr(quantize, "FLASH_ATTN_DTYPES", ("bf16",))  # the older record
    m, _ = quantize.quantize_bundle(bundle, ["bf16"], n_check=2, max_rel_mse_change=10.0)
    assert m.variant("gguf-bf16").extra["flash_attn"] is True and not m.variant("gguf-f32").extra.get("flash_attn")
    f = load(bundle)
    f.plan(variant="gguf-bf16")
    assert f._lm.settings["flash_attn"] is True
    r = run(runner, bundle, "--data", csv, "--variant", "gguf-bf16")
    assert r.returncode == 0, r.stderr
    got = parse(r.stdout)[["x", "y"]].to_numpy().T
    assert float(np.abs(got - _python_forecast(bundle, csv, variant="gguf-bf16")).max()) < 1e-4
    exact = _python_forecast(bundle, csv, variant="gguf-f32")
    assert 0 < float(np.abs(got - exact).max()) < 0.05 * float(np.abs(exact).max())


# ---------------------------------------------------------------------------------------------- Bridging

@pytest.fixture(scope="module")
def bridging_bundle(csv, tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from alignts.export.bridging import BridgingConfig
    from alignts.export.fit_bridging import FitBridgingOptions, fit_bridging
    from alignts.export.train import TrainConfig

    out = tmp_path_factory.mktemp("bridging") / "bundle"
    cfg = BridgingConfig(context_len=L_INT, horizon=H_INT, patch_len=16, stride=8, d_model=16, n_heads=4, d_keys=8,
                         n_prototypes=16, d_ff=16, description="runner test series.")
    fit_bridging(FitBridgingOptions(data=str(csv), out=str(out), backbone="tiny-bert", n_check=2), cfg,
                 TrainConfig(epochs=1, batch_size=16, max_train_windows=32, max_val_windows=16, threads=2),
                 progress=False)
    if "gguf-f32" not in [v["name"] for v in json.loads((out / "manifest.json").read_text())["variants"]]:
        pytest.skip("fit_bridging wrote no gguf-f32 variant")
    return out


def test_bridging_within_1e4_of_python_and_same_prompt(runner, bridging_bundle, csv):
    from alignts.data.load import load_data
    from alignts.runtime import load
    from alignts.runtime.prompt import prompt_ids

    r = run(runner, bridging_bundle, "--data", csv, "--dump-prompt")
    assert r.returncode == 0, r.stderr
    got = parse(r.stdout)
    assert list(got.columns) == ["step", "x", "y"] and len(got) == H_INT
    want = _python_forecast(bridging_bundle, csv, variant="gguf-f32")
    d = float(np.abs(got[["x", "y"]].to_numpy().T - want).max())
    assert d < 1e-4 * max(1.0, float(np.abs(want).max())), d
    # the prompt: libalignts' statistics text and tokenizer give the ids of the Python runtime's (channel x)
    f = load(bridging_bundle)
    f.plan(variant="gguf-f32")
    x = load_data(csv).values[-L_INT:].T[None]
    a = f.prepare(f.scale(x))[0]  # float32, scaled [C, L]
    want_ids = prompt_ids(a, f.prompt, f.backbone.tokenizer, f.cfg.prompt_len)
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("prompt x:"))
    assert [int(t) for t in line.split(":")[1].split()] == want_ids[0].tolist()
    # a missing backbone is refused with where it looked
    lonely = _copy(bridging_bundle, runner.parent, "lonely")
    m = json.loads((lonely / "manifest.json").read_text())
    m["backbone"]["path"] = "nowhere"
    (lonely / "manifest.json").write_text(json.dumps(m))
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env.update(HOME=str(runner.parent), ALIGNTS_BACKBONE_PATH="")
    _expect_error(run(runner, lonely, "--data", csv, env=env), "no backbone bundle with that hash", "Looked in")


def test_bridging_linear_skip_within_1e4_of_python(runner, bridging_bundle, csv, tmp_path):
    """The skip path (config.linear_skip, skip_w/skip_b in head.npz) is applied by alignts-run as by Python."""
    import torch

    from alignts.data.load import load_data
    from alignts.export.backbone_bundle import ensure_backbone_bundle, tokenizer_text
    from alignts.export.backbones import load_backbone
    from alignts.export.bridging import BridgingConfig, BridgingModel
    from alignts.export.fit_bridging import export_adapter_bundle
    from alignts.runtime import load
    from alignts.runtime.tokenize import PromptTokenizer

    f = load(bridging_bundle)
    backbone = load_backbone("tiny-bert", seed=0)
    bb_path, sha, _ = ensure_backbone_bundle(backbone, bridging_bundle.parent / "backbones")
    assert sha == f.backbone_sha256  # the fixture's backbone, reused
    cfg = f.manifest.config
    bcfg = BridgingConfig(context_len=L_INT, horizon=H_INT, patch_len=16, stride=8, d_model=16, n_heads=4,
                          d_keys=8, n_prototypes=16, d_ff=16, description=cfg["description"],
                          prompt_len=cfg["prompt_len"], linear_skip=True)
    torch.manual_seed(3)
    model = BridgingModel(backbone, bcfg, PromptTokenizer(tokenizer_text(backbone).encode())).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.05)
        model.skip.weight.normal_(0, 0.05)
        model.skip.bias.normal_(0, 0.1)
    data = load_data(csv)
    out = tmp_path / "skip"
    export_adapter_bundle(model, out, backbone_path=bb_path, backbone_sha=sha, backbone=backbone,
                          check_x=data.values[-L_INT:].T[None].astype(np.float32),
                          config_extra={"n_channels": 2, "columns": list(data.columns)})
    r = run(runner, out, "--data", csv)
    assert r.returncode == 0, r.stderr
    want = _python_forecast(out, csv, variant="gguf-f32")
    d = float(np.abs(parse(r.stdout)[["x", "y"]].to_numpy().T - want).max())
    assert d < 1e-4 * max(1.0, float(np.abs(want).max())), d


# ---------------------------------------------------------------------------------------------- errors

def _expect_error(r: subprocess.CompletedProcess, *phrases: str, code: int = 1) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)  # a crash would be a negative code (signal)
    assert r.stdout == ""
    assert "alignts-run: error:" in r.stderr
    for p in phrases:
        assert p in r.stderr, r.stderr


def _copy(bundle: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(bundle, dst)
    return dst


def test_errors_manifest_and_files(runner, internal_bundle, csv, tmp_path):
    b = _copy(internal_bundle, tmp_path, "broken-json")
    text = (b / "manifest.json").read_text()
    (b / "manifest.json").write_text(text[: len(text) // 2])
    _expect_error(run(runner, b, "--data", csv), "not valid JSON", "re-export")

    b = _copy(internal_bundle, tmp_path, "no-files")
    m = json.loads(text)
    del m["files"]
    (b / "manifest.json").write_text(json.dumps(m))
    _expect_error(run(runner, b, "--data", csv), "'files'", "malformed manifest")

    b = _copy(internal_bundle, tmp_path, "bad-sha-text")
    m = json.loads(text)
    m["files"]["io.npz"]["sha256"] = "xyz"
    (b / "manifest.json").write_text(json.dumps(m))
    _expect_error(run(runner, b, "--data", csv), "64 lowercase hex")

    b = _copy(internal_bundle, tmp_path, "not-a-bundle")
    m = json.loads(text)
    m["format"] = "something-else"
    (b / "manifest.json").write_text(json.dumps(m))
    _expect_error(run(runner, b, "--data", csv), "not an alignts bundle")

    b = _copy(internal_bundle, tmp_path, "missing")
    (b / "io.npz").unlink()
    _expect_error(run(runner, b, "--data", csv), "is missing 'io.npz'")

    b = _copy(internal_bundle, tmp_path, "tampered")
    gguf = b / json.loads(text)["variants"][1]["extra"]["lm_file"]  # the file gguf-f32 reads
    assert json.loads(text)["variants"][1]["name"] == "gguf-f32"
    raw = bytearray(gguf.read_bytes())
    raw[-1] ^= 0xFF  # same size, other bytes
    gguf.write_bytes(bytes(raw))
    _expect_error(run(runner, b, "--data", csv), "sha256", "does not match")

    b = _copy(internal_bundle, tmp_path, "truncated")
    (b / "io.npz").write_bytes((b / "io.npz").read_bytes()[:-10])
    _expect_error(run(runner, b, "--data", csv), "size", "truncated")

    _expect_error(run(runner, tmp_path / "nowhere", "--data", csv), "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_error(run(runner, empty, "--data", csv), "no manifest.json")

    # Python's json writes Infinity/NaN for non-finite floats: the reader accepts them
    b = _copy(internal_bundle, tmp_path, "infinity")
    (b / "manifest.json").write_text(text.replace('"training": {', '"training": {"inf": Infinity, "nan": NaN, ', 1))
    assert run(runner, b, "--data", csv).returncode == 0


def test_errors_data_and_usage(runner, internal_bundle, injective_bundle, csv, tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("date,x,y\n2022-01-01,1,2\n2022-01-02,3\n")
    _expect_error(run(runner, injective_bundle, "--data", ragged), "line 3 has 2 fields", "header has 3")
    words = tmp_path / "words.csv"
    words.write_text("x\n" + "1.5\n" * 50 + "abc\n")
    _expect_error(run(runner, injective_bundle, "--data", words, "--column", "x"), "not numeric", "abc")
    short = tmp_path / "short.csv"
    pd.read_csv(csv).head(20).to_csv(short, index=False)
    _expect_error(run(runner, internal_bundle, "--data", short), f"at least L={L_INT}")
    _expect_error(run(runner, injective_bundle, "--data", csv, "--column", "nope"), "column 'nope' is not in")
    _expect_error(run(runner, injective_bundle, "--data", tmp_path / "none.csv"), "cannot open")
    _expect_error(run(runner, internal_bundle, "--data", csv, "--context", 10), "exactly L=48")
    _expect_error(run(runner, internal_bundle, "--data", csv, "--horizon", 99), "expected 1..12")
    _expect_error(run(runner, internal_bundle, "--data", csv, "--variant", "onnx-fp32"), "GGUF variants only")
    _expect_error(run(runner, internal_bundle, "--data", csv, "--bogus"), "unknown option", code=2)
    _expect_error(run(runner, internal_bundle), "--data CSV is required", code=2)
    _expect_error(run(runner, internal_bundle, "--data", csv, "--context", "x"), "expected an integer", code=2)


# ------------------------------------------------------------ the sealed bundle and llama.cpp's limits (issue 11)

def _rehash(bundle: Path, *names: str, **config) -> None:
    """Record the new sha256/size of ``names`` (crafted files must pass the seal to reach llama.cpp) and set
    config keys."""
    from alignts.runtime.manifest import file_entries

    m = json.loads((bundle / "manifest.json").read_text())
    m["files"].update({n: {"sha256": e.sha256, "size": e.size} for n, e in file_entries(bundle, names).items()})
    m["config"].update(config)
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_symlinks_in_a_bundle_are_refused(runner, internal_bundle, csv, tmp_path):
    """A link whose target has the right bytes still leaves the bundle: refused for a file, a folder on the way
    and manifest.json (alignts-run used to follow them)."""
    b = _copy(internal_bundle, tmp_path, "link-file")
    shutil.move(b / "io.npz", tmp_path / "io-elsewhere.npz")
    os.symlink(tmp_path / "io-elsewhere.npz", b / "io.npz")
    _expect_error(run(runner, b, "--data", csv), "symbolic link", "cp -rL")

    b = _copy(internal_bundle, tmp_path, "link-folder")
    (tmp_path / "real").mkdir()
    shutil.move(b / "io.npz", tmp_path / "real" / "io.npz")
    os.symlink(tmp_path / "real", b / "sub")
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["sub/io.npz"] = m["files"].pop("io.npz")
    for v in m["variants"]:
        v["files"] = ["sub/io.npz" if f == "io.npz" else f for f in v["files"]]
        if "io_file" in v.get("extra", {}):
            v["extra"]["io_file"] = "sub/io.npz"
    (b / "manifest.json").write_text(json.dumps(m))
    _expect_error(run(runner, b, "--data", csv), "symbolic link")

    b = _copy(internal_bundle, tmp_path, "link-manifest")
    shutil.move(b / "manifest.json", tmp_path / "elsewhere.json")
    os.symlink(tmp_path / "elsewhere.json", b / "manifest.json")
    _expect_error(run(runner, b, "--data", csv), "manifest.json is a symbolic link")


@pytest.mark.parametrize("name", ["./io.npz", "sub//io.npz", "sub\\io.npz", "sub/"])
def test_names_must_be_plain_relative_paths(runner, internal_bundle, csv, tmp_path, name):
    b = _copy(internal_bundle, tmp_path, "names")
    m = json.loads((b / "manifest.json").read_text())
    m["files"][name] = m["files"]["io.npz"]
    (b / "manifest.json").write_text(json.dumps(m))
    _expect_error(run(runner, b, "--data", csv), "not a plain relative name")


def test_n_ctx_past_the_model_is_refused(runner, injective_bundle, csv, tmp_path):
    """A manifest n_ctx of 1e9 made alignts-run try to allocate ~32 GB; now it and anything past the model's
    context_length (or this machine's memory) is refused before llama.cpp allocates, here and in Python."""
    from alignts.errors import AlignTSError, ManifestError
    from alignts.runtime import load

    for n_ctx, python_error, phrase in ((10 ** 9, ManifestError, "config.n_ctx is 1000000000"),
                                        (1 << 20, AlignTSError, "n_ctx=1048576 exceeds the model's trained context")):
        b = _copy(injective_bundle, tmp_path, f"n_ctx-{n_ctx}")
        _rehash(b, n_ctx=n_ctx)
        _expect_error(run(runner, b, "--data", csv), f"n_ctx={n_ctx} tokens asked; expected 1..", "context_length")
        with pytest.raises(python_error, match=phrase):
            load(b).plan()


@pytest.mark.parametrize("case", ["block_count_513", "duplicate_tokens", "quantized_bias", "alignment_16"])
def test_gguf_llama_cpp_aborts_on_is_refused(runner, injective_bundle, csv, tmp_path, case):
    """Files llama.cpp aborts on (SIGABRT, exit 134: block_count past LLAMA_MAX_LAYERS, a repeated token, a quantized
    vector, data aligned below 32) are refused with exit 1, and by the Python runtime with ArtifactError."""
    from dataclasses import replace

    from gguf_craft import STR, U32, from_file

    from alignts.errors import ArtifactError
    from alignts.runtime import load

    b = _copy(injective_bundle, tmp_path, case)
    name = json.loads((b / "manifest.json").read_text())["variants"][-1]["files"][0]
    assert name.endswith(".gguf")
    g = from_file(b / name)
    if case == "block_count_513":
        g.set("gpt2.block_count", U32, 513)
    elif case == "duplicate_tokens":
        tokens = list(g.get("tokenizer.ggml.tokens")[1])
        g.set("tokenizer.ggml.tokens", 9, (STR, tokens[:-1] + tokens[:1]))
    elif case == "quantized_bias":
        i = next(i for i, t in enumerate(g.tensors) if t[0] == "output_norm.bias")
        t = g.tensors[i]
        g.tensors[i] = (t[0], t[1], 8, b"\0" * (t[1][0] // 32 * 34))  # Q8_0 blocks
    else:
        g = replace(g, alignment=16).set("general.alignment", U32, 16)
    g.write(b / name)
    _rehash(b, name)
    r = run(runner, b, "--data", csv)
    _expect_error(r, {"block_count_513": "block_count", "duplicate_tokens": "tokenizer.ggml.tokens",
                      "quantized_bias": "output_norm.bias", "alignment_16": "general.alignment"}[case])
    with pytest.raises(ArtifactError):
        load(b).plan(variant=json.loads((b / "manifest.json").read_text())["variants"][-1]["name"])


# ---------------------------------------------------------------------------------------------- memory

def _skip_if_valgrind_cannot_run_llama(r: subprocess.CompletedProcess) -> None:
    """Skip when valgrind stopped at an instruction it cannot emulate inside llama.cpp's own libraries.

    scripts/setup builds llama.cpp portably (GGML_CPU_ALL_VARIANTS: ggml picks its CPU backend from cpuid, and
    valgrind reports a CPU without AVX-512, so the AVX2 variant loads). A llama.cpp built for its machine
    (ALIGNTS_LLAMA_CMAKE_ARGS=-DGGML_NATIVE=ON, or a plain `pip install llama-cpp-python`) on an AVX-512 CPU dies
    with SIGILL in ggml_cpu_init before alignts-run does anything: nothing to check then. An unhandled
    instruction anywhere else fails the test."""
    lines = r.stderr.splitlines()
    for i, line in enumerate(lines):
        if "unhandled instruction bytes" in line or "Unrecognised instruction" in line:
            frame = next((ln for ln in lines[i + 1:i + 8] if " at 0x" in ln), "")
            if "libggml" in frame:
                where = frame.split(": ", 1)[-1].strip()
                pytest.skip(f"valgrind cannot emulate an instruction of the llama.cpp in use ({line.strip()}) at "
                            f"{where}: that llama.cpp was built for this CPU's instruction set (-march=native; "
                            f"AVX-512 is beyond valgrind). Fix: bash scripts/setup without ALIGNTS_LLAMA_CMAKE_ARGS "
                            f"(the portable build, whose AVX2 backend runs under valgrind).")
            return


def test_valgrind_clean(runner, internal_bundle, injective_bundle, csv, tmp_path):
    if not shutil.which("valgrind"):
        pytest.skip("valgrind is not installed")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("x,y\n1,2\n3\n")
    cases = [((internal_bundle, "--data", csv, "--threads", 1), 0),
             ((injective_bundle, "--data", csv, "--threads", 1, "--horizon", 3), 0),
             ((injective_bundle, "--data", ragged), 1)]
    for args, code in cases:
        r = run(runner, *args, valgrind=True)
        _skip_if_valgrind_cannot_run_llama(r)
        assert r.returncode == code, r.stderr[-3000:]
        assert "ERROR SUMMARY: 0 errors" in r.stderr, r.stderr[-3000:]
        assert "definitely lost: 0 bytes" in r.stderr or "All heap blocks were freed" in r.stderr, r.stderr[-3000:]
