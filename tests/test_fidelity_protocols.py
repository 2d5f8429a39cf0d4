"""Few-shot borders (GPT4TS / Time-LLM / LLM4TS data loaders), zero-shot eval splits, and the training device.

The expected few-shot numbers are computed here from the published loaders' formula and the standard ETT
hourly borders (12/4/4 months of 30 days), independently of ``alignts.data.splits``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alignts.data.load import load_data
from alignts.data.splits import make_splits, n_windows, sliding_windows
from alignts.errors import InputError

ETT_ROWS = 17420  # rows of ETTh1.csv / ETTh2.csv
ETT_TRAIN_END = 12 * 30 * 24  # 8640: border2s[0] in Dataset_ETT_hour


def published_train_windows(context_len: int, horizon: int, percent: int) -> int:
    """Dataset_ETT_hour (Time-LLM / GPT4TS / LLM4TS): border2 = (border2 - seq_len) * percent // 100 + seq_len for
    the train set, and ``__len__ = len(data_x) - seq_len - pred_len + 1`` windows (times enc_in when channel
    independent)."""
    border1, border2 = 0, ETT_TRAIN_END
    if percent < 100:
        border2 = (border2 - context_len) * percent // 100 + context_len
    return (border2 - border1) - context_len - horizon + 1


@pytest.fixture(scope="module")
def ett_like(tmp_path_factory):
    """An ETTh1-named hourly CSV of the real file's length and width (7 channels, OT last), seeded."""
    rng = np.random.default_rng(1)
    t = np.arange(ETT_ROWS)
    cols = {"date": pd.date_range("2016-07-01", periods=ETT_ROWS, freq="h")}
    for i, c in enumerate(("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")):
        cols[c] = (i + 1) * np.sin(2 * np.pi * t / 24 + i) + 0.01 * t * (i % 3) + rng.standard_normal(ETT_ROWS)
    p = tmp_path_factory.mktemp("ett") / "ETTh1.csv"
    pd.DataFrame(cols).to_csv(p, index=False)
    return p


@pytest.mark.parametrize("L,H,P", [(336, 96, 10), (512, 96, 10), (336, 192, 5), (336, 720, 20), (512, 336, 10)])
def test_few_shot_window_counts_equal_published_code(ett_like, L, H, P):
    data = load_data(ett_like)
    sp = make_splits(data, L, H, train_percent=P)
    assert sp.scheme == "ett_hour" and sp.train_percent == P
    x, y = sliding_windows(sp.train, L, H)
    assert x.shape[0] == published_train_windows(L, H, P)
    assert x.shape[0] * data.n_channels == published_train_windows(L, H, P) * 7  # channel-independent series


def test_etth1_ten_percent_count(ett_like):
    # (8640 - 336) * 10 // 100 + 336 = 830 + 336 = 1166 rows -> 1166 - 336 - 96 + 1 = 735 windows
    sp = make_splits(load_data(ett_like), 336, 96, train_percent=10)
    assert sp.train.shape[0] == 1166
    assert n_windows(sp.train.shape[0], 336, 96) == 735


def test_few_shot_keeps_scaler_val_and_test(ett_like):
    data = load_data(ett_like)
    full = make_splits(data, 336, 96)
    few = make_splits(data, 336, 96, train_percent=10)
    raw = data.values[:ETT_TRAIN_END]
    np.testing.assert_allclose(few.mean, raw.mean(axis=0), rtol=1e-12)  # fitted on the whole train split
    np.testing.assert_allclose(few.std, raw.std(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(few.val, full.val)
    np.testing.assert_array_equal(few.test, full.test)
    np.testing.assert_array_equal(few.train, full.train[:few.train.shape[0]])
    assert few.borders[1][0] == 1166 and few.borders[1][1:] == full.borders[1][1:]


def test_real_etth1_ten_percent(etth1):
    sp = make_splits(load_data(etth1), 336, 96, train_percent=10)
    assert n_windows(sp.train.shape[0], 336, 96) == published_train_windows(336, 96, 10) == 735


@pytest.mark.parametrize("bad", [0, 101, 10.5, "10", True])
def test_bad_train_percent(ett_like, bad):
    with pytest.raises(InputError, match="train_percent"):
        make_splits(load_data(ett_like), 336, 96, train_percent=bad)


def test_train_percent_too_small_for_a_window(ett_like):
    # (8640 - 336) * 1 // 100 + 336 = 419 rows < L + H = 432
    with pytest.raises(InputError, match="raise --train-percent"):
        make_splits(load_data(ett_like), 336, 96, train_percent=1)
