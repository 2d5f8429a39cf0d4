"""Constrained sampling: every sample parses to exactly H values; seeding, greedy, top-p; torch-free."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from alignts.errors import InputError
from alignts.kernels.digits import CodecTable, decode_digits
from alignts.runtime.sampler import ConstrainedSampler, SamplerConfig, max_new_tokens

from test_injective_utils import RandomLogits

NUMERIC = CodecTable(digit_ids=tuple(range(1, 11)), value_sep=(14,), minus_id=12, end_ids=(0,))
# merged-digit layout with a digit separator and a two-token value separator
SPACED = CodecTable(digit_ids=tuple(range(10, 20)), value_sep=(4, 6), digit_sep=(3,), minus_id=5, end_ids=(0,))


@pytest.mark.parametrize("keep_finished", [False, True])
@pytest.mark.parametrize("table", [NUMERIC, SPACED], ids=["split", "spaced"])
def test_every_sample_parses_to_exactly_h_values_random_logits(table, keep_finished):
    rng = np.random.default_rng(0)
    for i in range(100):
        H = int(rng.integers(1, 12))
        cfg = SamplerConfig(n_samples=int(rng.integers(1, 6)), temperature=float(rng.uniform(0.3, 2.0)),
                            top_p=float(rng.uniform(0.2, 1.0)), max_digits=int(rng.integers(1, 6)), seed=i,
                            keep_finished=keep_finished)
        s = ConstrainedSampler(table, 40, cfg)
        backend = RandomLogits(40, seed=i)
        ids, lengths = s.generate(backend, [0, 1, 2], H)
        values, n_parsed = decode_digits(ids, lengths, table, 2, H)
        assert (n_parsed == H).all(), ids
        assert lengths.max() <= max_new_tokens(table, H, cfg.max_digits)
        assert (np.abs(values) < 10 ** cfg.max_digits / 100 + 1).all()  # max_digits caps every value
        assert set(ids[ids >= 0].tolist()) <= set(table.digit_ids + table.value_sep + table.digit_sep
                                                  + (table.minus_id,))


def test_seeded_and_greedy():
    s = ConstrainedSampler(NUMERIC, 15, SamplerConfig(n_samples=4, seed=3))
    a = s.sample_values(RandomLogits(15, seed=1), [0], 6, 2, np.random.default_rng(7))
    b = s.sample_values(RandomLogits(15, seed=1), [0], 6, 2, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)

    class Fixed(RandomLogits):  # the same logits at every step: greedy writes the argmax each time
        def prefill(self, prompt_ids, n_parallel=1):
            return np.tile(self.row, (n_parallel, 1))

        def step(self, tokens, seq_ids=None):
            return np.tile(self.row, (len(tokens), 1))

    f = Fixed(15)
    f.row = np.zeros(15, dtype=np.float32)
    f.row[4] = 5.0   # digit 3
    f.row[14] = 4.0  # separator, second best
    g = ConstrainedSampler(NUMERIC, 15, SamplerConfig(n_samples=2, greedy=True, max_digits=3))
    v = g.sample_values(f, [0], 3, 0)
    np.testing.assert_array_equal(v, np.full((2, 3), 333.5))  # 3 digits, then the separator is forced


def test_top_p_keeps_only_the_nucleus():
    s = ConstrainedSampler(NUMERIC, 15, SamplerConfig(n_samples=64, top_p=0.5, temperature=1.0))
    logits = np.full((64, 15), -10.0)
    logits[:, 1 + 7] = 3.0  # digit 7 holds most of the mass
    logits[:, 1 + 2] = 2.0
    digits_only = np.tile(s._mask[1], (64, 1))  # after a minus: digits only
    got = s._cand[s._choose(logits, digits_only, np.random.default_rng(0))]
    assert set(got.tolist()) == {8}
    s2 = ConstrainedSampler(NUMERIC, 15, SamplerConfig(n_samples=64, top_p=1.0, temperature=1.0))
    got2 = s2._cand[s2._choose(logits, digits_only, np.random.default_rng(0))]
    assert {3, 8} <= set(got2.tolist()) and set(got2.tolist()) <= set(range(1, 11))


def test_bad_options():
    with pytest.raises(InputError, match="temperature"):
        SamplerConfig(temperature=0.0)
    with pytest.raises(InputError, match="top_p"):
        SamplerConfig(top_p=1.5)
    with pytest.raises(InputError, match="token id"):
        ConstrainedSampler(NUMERIC, 10, SamplerConfig())
    shared = CodecTable(digit_ids=tuple(range(10, 20)), value_sep=(3, 4), digit_sep=(3,), minus_id=5)
    with pytest.raises(InputError, match="share"):
        ConstrainedSampler(shared, 40, SamplerConfig())


def test_runtime_modules_do_not_import_torch():
    code = ("import sys; import alignts.runtime.paradigms.injective, alignts.runtime.sampler, "
            "alignts.runtime.codec_table, alignts.runtime.backends.onnx_causal, alignts.bench.injective; "
            "bad = [m for m in ('torch', 'transformers', 'peft', 'optimum') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
