"""The memory planner on hand-written manifests with fake files of known size (no model is ever loaded)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignts.errors import BudgetExceededError, InputError
from alignts.runtime.budget import (RUNTIME_OVERHEAD, Choice, choose, describe_plan, estimate_peak, parse_budget,
                                    rank_variants)
from alignts.runtime.manifest import FileEntry, Manifest, Variant, read_manifest, write_manifest

MB = 1_000_000
SIZES = {"core.onnx": 90 * MB, "core.int8.onnx": 23 * MB, "lm.f32.gguf": 88 * MB, "lm.f16.gguf": 44 * MB,
         "lm.q8_0.gguf": 24 * MB, "lm.q4_0.gguf": 13 * MB}


def _manifest(arch: str = "bert", n_channels: int = 7) -> Manifest:
    files = {n: FileEntry(sha256="0" * 64, size=s) for n, s in SIZES.items()}
    variants = (
        Variant("onnx-fp32", "onnx", "fp32", ("core.onnx",), weight_bytes=SIZES["core.onnx"],
                validation={"max_abs_diff": 1e-6}),
        Variant("onnx-int8", "onnx", "int8", ("core.int8.onnx",), weight_bytes=SIZES["core.int8.onnx"],
                validation={"max_abs_diff": 0.2}),
        Variant("gguf-f32", "gguf", "f32", ("lm.f32.gguf",), validation={"max_abs_diff": 2e-5}),
        Variant("gguf-q4_0", "gguf", "q4_0", ("lm.q4_0.gguf",), validation={"max_abs_diff": 0.05}),
        Variant("gguf-q8_0", "gguf", "q8_0", ("lm.q8_0.gguf",), validation={"max_abs_diff": 0.01}),
        Variant("gguf-f16", "gguf", "f16", ("lm.f16.gguf",), validation={"max_abs_diff": 1e-4}),
    )
    return Manifest(paradigm="internal", architecture=arch, files=files, variants=variants,
                    config={"context_len": 336, "horizon": 96, "n_channels": n_channels, "patch_len": 16,
                            "stride": 8, "n_patches": 42, "d_model": 384, "n_layers": 6, "n_heads": 12},
                    training={"n_layers": 6})


ONNX = ("onnx",)
BOTH = ("onnx", "gguf")


@pytest.mark.parametrize("text, expected", [
    ("300MB", 300 * MB), ("300 mb", 300 * MB), ("1.5GiB", int(1.5 * 2 ** 30)), ("512MiB", 512 * 2 ** 20),
    ("2g", 2 * 10 ** 9), ("1e9", 10 ** 9), ("4096", 4096), (123456, 123456), ("64k", 64_000), (None, None),
])
def test_parse_budget(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("junk", ["", "lots", "12 parsecs", "-5MB", "0", "MB", "1.5.2GB", float("nan"), True])
def test_parse_budget_rejects_junk(junk):
    with pytest.raises(InputError, match="expected"):
        parse_budget(junk)


def test_weights_come_from_the_files_and_grow_with_batch():
    m = _manifest()
    fp32 = estimate_peak(m, "onnx-fp32", batch_size=1)
    int8 = estimate_peak(m, "onnx-int8", batch_size=1)
    assert fp32.weights >= SIZES["core.onnx"] and int8.weights >= SIZES["core.int8.onnx"]
    assert fp32.weights > int8.weights
    assert fp32.runtime_overhead == RUNTIME_OVERHEAD["onnx"]
    assert fp32.total == fp32.weights + fp32.activations + fp32.kv_cache + fp32.runtime_overhead
    big = estimate_peak(m, "onnx-fp32", batch_size=32)
    assert big.activations > 10 * fp32.activations and big.weights == fp32.weights
    # gguf variants without weight_bytes: the manifest's file sizes
    assert estimate_peak(m, "gguf-f32").weights >= SIZES["lm.f32.gguf"]


def test_kv_cache_only_for_causal_gguf():
    assert estimate_peak(_manifest("bert"), "gguf-f32", batch_size=4).kv_cache == 0
    gpt = _manifest("gpt2")
    f32 = estimate_peak(gpt, "gguf-f32", batch_size=4)
    lean = estimate_peak(gpt, "gguf-f32", batch_size=4, mode="lean")
    # the cache holds one decode's series: 512 // 42 = 12 of the 4 x 7, 504 tokens padded to 512 cells;
    # 2 (K, V) x 6 layers x 512 cells x 384 x 4 bytes
    assert f32.detail["settings"]["n_seq_max"] == 12 and f32.detail["settings"]["n_batch"] == 12 * 42
    assert f32.kv_cache == 2 * 6 * 512 * 384 * 4
    assert lean.kv_cache == f32.kv_cache // 2 and lean.detail["settings"]["kv_type"] == "f16"


def test_rank_follows_accuracy_order():
    names = [v.name for v in rank_variants(_manifest())]
    assert names == ["onnx-fp32", "gguf-f32", "gguf-f16", "gguf-q8_0", "onnx-int8", "gguf-q4_0"]


def test_three_budgets_generous_tight_impossible():
    m = _manifest()
    generous = choose(m, parse_budget("2GB"), batch_size=8, backends=ONNX)
    assert (generous.variant, generous.batch_size) == ("onnx-fp32", 8)
    assert generous.settings["arena"] is True
    fp32_need = estimate_peak(m, "onnx-fp32", 1, mode="lean").total
    int8_need = estimate_peak(m, "onnx-int8", 1).total
    assert int8_need < fp32_need
    tight = choose(m, (int8_need + fp32_need) // 2, batch_size=1, backends=ONNX)
    assert tight.variant == "onnx-int8" and tight.estimate.total <= (int8_need + fp32_need) // 2
    with pytest.raises(BudgetExceededError) as e:
        choose(m, parse_budget("100MB"), batch_size=8, backends=ONNX)
    need = e.value.min_budget_bytes
    assert need > 100 * MB
    assert str(need) in str(e.value) and "Fix" in str(e.value)
    # the smallest workable budget really is workable
    assert choose(m, need, batch_size=8, backends=ONNX).estimate.total <= need


def test_lean_settings_before_a_worse_variant_and_batch_shrinks_last():
    m = _manifest()
    fast = estimate_peak(m, "onnx-fp32", 8).total
    lean = estimate_peak(m, "onnx-fp32", 8, mode="lean").total
    assert lean < fast
    c = choose(m, lean, batch_size=8, backends=ONNX)
    assert (c.variant, c.batch_size, c.settings["arena"], c.settings["disable_prepacking"]) == \
        ("onnx-fp32", 8, False, True)
    # a budget only the int8 variant fits at batch 64 keeps the batch and drops to int8
    int8_64 = estimate_peak(m, "onnx-int8", 64, mode="lean").total
    assert estimate_peak(m, "onnx-fp32", 64, mode="lean").total > int8_64
    c = choose(m, int8_64, batch_size=64, backends=ONNX)
    assert c.batch_size == 64 and c.variant == "onnx-int8"
    # below every variant at batch 64: the batch shrinks
    c = choose(m, int8_64 - 1, batch_size=64, backends=ONNX)
    assert c.batch_size < 64
    assert "asked 64" in describe_plan(c)


def test_gguf_chain_f32_f16_q8_q4():
    m = _manifest("gpt2")
    got = []
    for name in ("gguf-f32", "gguf-f16", "gguf-q8_0", "gguf-q4_0"):
        need = estimate_peak(m, name, 1).total
        got.append(choose(m, need, batch_size=1, backends=("gguf",), lean_settings=False).variant)
    assert got == ["gguf-f32", "gguf-f16", "gguf-q8_0", "gguf-q4_0"]


def test_describe_plan_mentions_every_part():
    c = choose(_manifest(), parse_budget("1GB"), batch_size=2, backends=BOTH)
    text = describe_plan(c)
    for word in ("weights", "activations", "KV cache", "runtime", "budget", "headroom", c.variant):
        assert word in text
    assert isinstance(c, Choice)


def test_no_budget_takes_the_most_accurate():
    assert choose(_manifest(), None, batch_size=16, backends=BOTH).variant == "onnx-fp32"


def test_unknown_backend_set_is_a_clear_error():
    with pytest.raises(InputError, match="install the backend"):
        choose(_manifest(), None, backends=())


@settings(max_examples=60, deadline=None)
@given(budget=st.integers(1, 3 * 10 ** 9), batch=st.integers(1, 64))
def test_choice_always_fits_or_names_a_larger_minimum(budget, batch):
    m = _manifest()
    try:
        c = choose(m, budget, batch_size=batch, backends=BOTH)
    except BudgetExceededError as e:
        assert e.min_budget_bytes > budget
        choose(m, e.min_budget_bytes, batch_size=batch, backends=BOTH)  # and it is enough
    else:
        assert c.estimate.total <= budget and 1 <= c.batch_size <= batch


def test_budget_check_happens_before_loading(tmp_path):
    """The manifest lists files that do not exist: choose() still answers (it never opens them)."""
    write_manifest(tmp_path, _manifest())
    m = read_manifest(tmp_path, verify=False)
    with pytest.raises(BudgetExceededError):
        choose(m, parse_budget("10MB"), backends=BOTH, bundle_dir=tmp_path)


def test_planner_is_torch_free():
    code = ("import sys; import alignts.runtime.budget as b; b.choose; "
            "assert not [m for m in ('torch', 'transformers', 'peft') if m in sys.modules], sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True)
