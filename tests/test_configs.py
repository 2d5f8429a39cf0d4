"""Typed runtime configs (alignts.runtime.configs): round trips, defaults defined once, and manifests written by
the previous version (tests/data/manifests: the manifest.json of tiny bundles fitted at commit e6f3d3e)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from alignts.errors import ManifestError
from alignts.runtime.configs import (BridgingRuntimeConfig, InjectiveRuntimeConfig, InternalRuntimeConfig,
                                     runtime_config)
from alignts.runtime.manifest import Manifest

PREV = Path(__file__).parent / "data" / "manifests"
PATCH = {"context_len": 32, "horizon": 8, "patch_len": 8, "stride": 8, "n_patches": 5}


def _prev(paradigm: str) -> Manifest:
    return Manifest.from_dict(json.loads((PREV / f"{paradigm}.json").read_text()))


@pytest.mark.parametrize("cls, d", [
    (InternalRuntimeConfig, {**PATCH, "n_channels": 2, "columns": ["x", "y"], "linear_skip": True,
                             "scaler": {"mean": [0.0, 1.0], "std": [1.0, 2.0]}, "freq": "h"}),
    (BridgingRuntimeConfig, {**PATCH, "d_llm": 32, "d_ff": 16, "prompt_len": 40, "description": "load.",
                             "dropout": 0.1}),
    (InjectiveRuntimeConfig, {"n_ctx": 256, "samples": 4, "temperature": 0.5, "description": "", "model": "x"}),
])
def test_round_trip(cls, d):
    c = cls.from_dict(d)
    assert c.to_dict().items() >= d.items()  # and the defaults, written out
    assert cls.from_dict(c.to_dict()) == c


def test_unknown_keys_kept_and_defaults_applied():
    c = InternalRuntimeConfig.from_dict({**PATCH, "added_in_a_later_version": [1, 2]})
    assert c.extra == {"added_in_a_later_version": [1, 2]}
    assert (c.eps, c.linear_skip, c.n_channels, c.scaler, c.conformal) == (1e-5, False, None, None, None)
    i = InjectiveRuntimeConfig.from_dict({})
    assert (i.context_len, i.horizon, i.n_ctx, i.samples, i.temperature, i.top_p, i.greedy, i.seed) == \
        (96, 24, 512, 20, 0.9, 0.9, False, 0)


@pytest.mark.parametrize("d, said", [
    ({k: v for k, v in PATCH.items() if k != "horizon"}, "config.horizon is missing"),
    ({**PATCH, "eps": 0}, "config.eps"),
    ({**PATCH, "n_patches": 7}, "config.n_patches"),
    ({**PATCH, "linear_skip": "yes"}, "config.linear_skip"),
])
def test_bad_config_is_a_manifest_error(d, said):
    with pytest.raises(ManifestError, match=said):
        InternalRuntimeConfig.from_dict(d)


def test_cli_defaults_are_the_config_defaults():
    import argparse

    from alignts.cli import fit_injective
    from alignts.export.fit_injective import InjectiveFitConfig

    p = argparse.ArgumentParser()
    fit_injective.add_arguments(p)
    args, d, fit = p.parse_args(["--out", "b"]), InjectiveRuntimeConfig(), InjectiveFitConfig()
    assert (args.samples, args.temperature, args.top_p, args.context, args.horizon) == \
        (d.samples, d.temperature, d.top_p, d.context_len, d.horizon)
    assert (fit.context_len, fit.horizon, fit.samples, fit.temperature, fit.top_p, fit.greedy, fit.seed) == \
        (d.context_len, d.horizon, d.samples, d.temperature, d.top_p, d.greedy, d.seed)


def test_previous_version_manifests_parse():
    i = runtime_config(_prev("internal"))
    assert isinstance(i, InternalRuntimeConfig)
    assert (i.context_len, i.horizon, i.n_channels, i.patch_len, i.stride, i.n_patches, i.d_model, i.eps) == \
        (32, 8, 2, 8, 8, 5, 64, 1e-5)
    assert i.columns == ("x", "y") and len(i.scaler["mean"]) == 2 and i.linear_skip is False
    assert i.extra == {"freq": "h", "split_scheme": "ratio"}

    b = runtime_config(_prev("bridging"))
    assert isinstance(b, BridgingRuntimeConfig)
    assert (b.d_model, b.d_ff, b.n_heads, b.d_keys, b.n_prototypes, b.top_k, b.decimals) == (16, 16, 4, 8, 16, 5, 3)
    assert b.description == "thread test series." and b.d_llm > 0 and b.prompt_len > 0
    assert b.backbone_spec and b.sizes["adapter_bytes"] > 0 and b.extra["dropout"] == 0.1

    j = runtime_config(_prev("injective"))
    assert isinstance(j, InjectiveRuntimeConfig)
    assert (j.context_len, j.horizon, j.samples, j.temperature, j.top_p, j.greedy, j.seed, j.description) == \
        (32, 6, 4, 0.9, 0.9, False, 0, "")
    assert j.n_ctx > 0 and j.n_layer > 0 and j.n_embd > 0 and j.n_channels is None


@pytest.mark.parametrize("paradigm", ["internal", "bridging", "injective"])
def test_previous_config_survives_a_rewrite(paradigm):
    """What the current export writes from a previous manifest's config reads back the same."""
    c = runtime_config(_prev(paradigm))
    assert type(c).from_dict(c.to_dict()) == c


def test_previous_internal_config_loads_and_forecasts(tmp_path, csv):
    """A current tiny Internal bundle re-sealed under the previous version's config (same shapes) loads and
    forecasts."""
    from alignts.export.fit_internal import FitInternalConfig, fit_internal
    from alignts.export.internal import InternalConfig
    from alignts.export.train import TrainConfig
    from alignts.runtime import load
    from alignts.runtime.manifest import read_manifest, write_manifest

    out = tmp_path / "internal"
    fit_internal(FitInternalConfig(
        data=str(csv), out=str(out), backbone="tiny-gpt2",
        model=InternalConfig(context_len=32, horizon=8, patch_len=8, stride=8, lora_rank=2, lora_alpha=4.0),
        train=TrainConfig(epochs=1, batch_size=16, max_train_windows=16, max_val_windows=8, threads=1),
        int8=False, gguf=False), command="test")
    old = dict(_prev("internal").config)
    write_manifest(out, dataclasses.replace(read_manifest(out), config=old))
    f = load(out)
    assert f.cfg == InternalRuntimeConfig.from_dict(old)
    f.plan(batch_size=1)
    x = np.random.default_rng(0).standard_normal((2, 40))
    y = f.forecast(x).mean
    assert y.shape == (1, 2, 8) and np.isfinite(y).all()
