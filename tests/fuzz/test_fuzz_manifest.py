"""Fuzz target for the manifest reader and the bundle seal (issue 11, defects 2, 4 and 5): structure-aware
mutations of real manifests.

Property: ``read_manifest`` (sha256 verification on) and ``alignts.runtime.load`` return or raise an AlignTSError
subclass, never another exception, never longer than TIMEOUT_S; for the Internal seed a manifest that loads is
also planned and forecast on (both variants), with the same property, and a forecast that comes back is finite.

Seeds: the manifests of real bundles built here: the torch-free Internal bundle of tests/seal_bundle.py
(ONNX with external data + GGUF + io.npz) and the embedded numeric LM bundle (Injective, alignts/assets); a long
run (ALIGNTS_FUZZ_EXAMPLES > 1000) with torch installed adds the fitted tiny bundles of tests/tiny_bundles.py
(Internal with LoRA, Bridging with its backbone bundle, Injective ONNX + GGUF). Mutations (1-3 per input): a
value anywhere in the tree replaced by a hostile one (wrong types, NaN/inf, negative and huge numbers, paths
that leave the bundle, deep nesting), keys deleted, known keys added with hostile values, file names renamed,
and text-level edits of the JSON (tests/fuzz/byte_mutations.py: flips, truncation, 100k-digit numbers, ...).

Budget: the ``alignts-fuzz`` profile (tests/fuzz/conftest.py; ALIGNTS_FUZZ_EXAMPLES). ALIGNTS_FUZZ_REPORT=path
appends the counts as JSON lines; ALIGNTS_FUZZ_KEEP_GOING=1 counts non-AlignTS exceptions instead of failing at
the first.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from byte_mutations import mutate as mutate_text
from findings import site
from hypothesis import given, settings
from hypothesis import strategies as st
from seal_bundle import build_bundle

from alignts.errors import AlignTSError
from alignts.runtime import load
from alignts.runtime.manifest import MANIFEST_NAME, read_manifest

FUZZ = settings.get_profile("alignts-fuzz")
TIMEOUT_S = 30
KEEP_GOING = os.environ.get("ALIGNTS_FUZZ_KEEP_GOING") == "1"  # count findings instead of stopping at the first
ASSETS = Path(__file__).resolve().parents[2] / "alignts" / "assets" / "numeric_lm"
NEST = "@@NEST@@"
HOSTILE = [None, True, False, 0, -1, 1, 2, 513, 2 ** 31, 2 ** 63, 10 ** 30, -(10 ** 30), 0.5, -0.0, 1e-300, 1e308,
           -1e308, float("nan"), float("inf"), float("-inf"), "", "x", "f16", "gguf", "onnx", "../io.npz",
           "/etc/passwd", "io.npz", "core.onnx", "a" * 10_000, [], {}, [1, "a"], {"a": 1}, [float("nan")], NEST]
# the keys the runtime reads, by section (a literal list: the harness also runs against older alignts)
KNOWN_KEYS = {
    "config": ["context_len", "horizon", "n_channels", "patch_len", "stride", "n_patches", "d_model", "d_llm",
               "d_ff", "d_keys", "n_heads", "n_prototypes", "prompt_len", "top_k", "decimals", "eps", "n_ctx",
               "samples", "temperature", "top_p", "seed", "n_embd", "n_layer", "n_layers", "n_head", "n_heads_lm",
               "d_ff_lm", "n_vocab", "max_positions", "greedy", "prefix_bos", "linear_skip", "description",
               "columns", "table", "tokenizer", "scaler"],
    "normalization": ["eps", "affine", "kind"],
    "codec": ["precision", "max_digits", "alpha", "beta", "basic", "prefix_bos", "value_sep", "digit_sep",
              "tokenizer", "kind", "table"],
    "lora": ["rank", "alpha", "scale", "fused", "targets", "base_sha256"],
    "backbone": ["sha256", "name", "architecture", "path", "bytes", "weight_bytes", "n_layers"],
    "extra": ["adapter_scale", "lora_scale", "lora_alpha", "lora_rank", "n_ctx", "n_batch", "n_seq_max",
              "n_ctx_train", "kv_type", "architecture", "backbone_variant"],
}
SECTION_KEYS = [(section, key) for section, keys in KNOWN_KEYS.items() for key in keys] + [
    ("extra", "io_file"), ("extra", "lm_file"), ("extra", "adapter_file"), ("extra", "head_file"),
    ("extra", "lora_file"), ("backbone", "sha256")]


def _seed_dirs(root: Path) -> dict[str, Path]:
    seeds = {"internal_onnx_gguf": build_bundle(root / "internal_onnx_gguf")}
    shutil.copytree(ASSETS, root / "numeric_lm")
    seeds["numeric_lm"] = root / "numeric_lm"
    if FUZZ.max_examples > 1000:
        try:
            import torch  # noqa: F401
            import tiny_bundles
        except ImportError:
            return seeds
        data = _synthetic_csv(root / "s.csv")
        seeds["tiny_internal"] = tiny_bundles.internal_bundle(root / "t", str(data))
        seeds["tiny_bridging"] = tiny_bundles.bridging_bundle(root / "t", str(data))
        seeds["tiny_injective"] = tiny_bundles.injective_bundle(root / "t")
    return seeds


def _synthetic_csv(path: Path) -> Path:
    import pandas as pd

    i = np.arange(400)
    pd.DataFrame({"date": pd.date_range("2022-01-01", periods=400, freq="h"), "x": np.sin(i / 4),
                  "y": np.cos(i / 6)}).to_csv(path, index=False)
    return path


STATS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


@pytest.fixture(scope="module")
def seeds():
    with tempfile.TemporaryDirectory(prefix="fuzz-manifest-") as d:
        dirs = _seed_dirs(Path(d))
        yield {name: (p, json.loads((p / MANIFEST_NAME).read_text())) for name, p in dirs.items()}
    path = os.environ.get("ALIGNTS_FUZZ_REPORT")
    for target, counts in STATS.items():
        line = json.dumps({"target": target, "seeds": sorted(dirs), **dict(counts)})
        print(line)
        if path:
            with open(path, "a") as f:
                f.write(line + "\n")
    STATS.clear()


# ------------------------------------------------------------------------------------------------ mutations

def _nodes(d, prefix=()):
    """Every (path, value) in the JSON tree."""
    yield prefix, d
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _nodes(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _nodes(v, prefix + (i,))


def _parent(d, path):
    for k in path[:-1]:
        d = d[k]
    return d


def _replace(data, d) -> None:
    paths = [p for p, _ in _nodes(d) if p]
    path = data.draw(st.sampled_from(paths))
    _parent(d, path)[path[-1]] = copy.deepcopy(data.draw(st.sampled_from(HOSTILE), label="hostile"))


def _delete(data, d) -> None:
    paths = [p for p, _ in _nodes(d) if p]
    path = data.draw(st.sampled_from(paths))
    del _parent(d, path)[path[-1]]


def _add_known(data, d) -> None:
    section, key = data.draw(st.sampled_from(SECTION_KEYS))
    value = copy.deepcopy(data.draw(st.sampled_from(HOSTILE)))
    if section == "extra":
        variants = d.get("variants") if isinstance(d.get("variants"), list) else []
        variants = [v for v in variants if isinstance(v, dict)]
        if variants:
            v = data.draw(st.sampled_from(variants))
            if isinstance(v.get("extra"), dict):
                v["extra"][key] = value
    elif isinstance(d.get(section), dict):
        d[section][key] = value


def _rename_file(data, d) -> None:
    files = d.get("files")
    if isinstance(files, dict) and files:
        old = data.draw(st.sampled_from(sorted(files)))
        new = data.draw(st.sampled_from(["../" + old, "/tmp/" + old, old + "/", "./" + old, "sub/" + old, "",
                                         old.upper(), "manifest.json", "a\\b"]))
        files[new] = files.pop(old)


def _duplicate_variant(data, d) -> None:
    if isinstance(d.get("variants"), list) and d["variants"]:
        d["variants"].append(copy.deepcopy(d["variants"][0]))


OPS = [_replace, _replace, _replace, _delete, _add_known, _add_known, _rename_file, _duplicate_variant]


def mutate(data, seed: dict) -> bytes:
    d = copy.deepcopy(seed)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        data.draw(st.sampled_from(OPS), label="op")(data, d)
    text = json.dumps(d)
    depth = data.draw(st.sampled_from([1, 40, 5000]), label="nest depth")
    text = text.replace(json.dumps(NEST), "[" * depth + "1" + "]" * depth)
    if data.draw(st.booleans(), label="text edits"):
        return mutate_text(data, text.encode(), max_edits=3)
    return text.encode()


# ---------------------------------------------------------------------------------------------------- runs

class _Hang(Exception):
    pass


def _on_alarm(signum, frame):  # noqa: ARG001
    raise _Hang(f"no answer within {TIMEOUT_S} s")


def _run(folder: Path, forecast: bool) -> str:
    read_manifest(folder)
    f = load(folder)
    if not forecast:
        return "loaded"
    for v in f.manifest.variants:
        f.plan(variant=v.name)
        y = f.forecast_scaled(np.sin(np.arange(2 * f.context_len, dtype=np.float32) / 3)[None, None].repeat(
            f.n_channels or 1, axis=1))
        assert np.isfinite(y).all(), f"non-finite forecast from variant {v.name}"
    return "forecast"


@given(data=st.data())
@FUZZ
def test_manifest_reader_raises_only_alignts_errors(seeds, data):
    name = data.draw(st.sampled_from(sorted(seeds)), label="seed")
    folder, seed = seeds[name]
    (folder / MANIFEST_NAME).write_bytes(mutate(data, seed))
    stats = STATS["manifest"]
    stats["inputs"] += 1
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(TIMEOUT_S)
    try:
        outcome = _run(folder, forecast=name == "internal_onnx_gguf")
    except AlignTSError as e:
        outcome = type(e).__name__
    except Exception as e:
        stats["non_alignts_exceptions"] += 1
        stats[f"raw {site(e)}"] += 1
        if not KEEP_GOING:
            raise AssertionError(f"{type(e).__name__} from a mutated {name} manifest: {e}") from e
        outcome = "raw"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        (folder / MANIFEST_NAME).write_text(json.dumps(seed))
    stats[outcome] += 1
