"""Metrics against hand-computed values, and their NaN policy."""

from __future__ import annotations

import numpy as np
import pytest

from alignts.errors import InputError, ShapeError
from alignts.eval.metrics import mae, mase, mase_scale, mse, smape


def test_values():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 3.0, 1.0, 4.0])
    assert mse(t, p) == pytest.approx((0 + 1 + 4 + 0) / 4)
    assert mae(t, p) == pytest.approx((0 + 1 + 2 + 0) / 4)
    assert smape(t, p) == pytest.approx(200 / 4 * (0 + 1 / 5 + 2 / 4 + 0))
    assert smape([0.0, 1.0], [0.0, 1.0]) == 0.0  # 0/0 counts as a perfect forecast


def test_mase():
    hist = np.array([1.0, 2.0, 4.0, 7.0])  # |diff| m=1: 1, 2, 3 -> 2
    assert mase_scale(hist, 1) == pytest.approx(2.0)
    assert mase_scale(hist, 2) == pytest.approx((3 + 5) / 2)
    assert mase_scale(hist, 10) == pytest.approx(2.0)  # too short for the period -> m = 1
    assert mase_scale([1.0, np.nan, 3.0, 4.0], 1) == pytest.approx(1.0)  # NaN pairs skipped
    assert mase([8.0, 9.0], [7.0, 7.0], hist, 1) == pytest.approx(1.5 / 2.0)
    with pytest.raises(InputError, match="constant"):
        mase([1.0], [1.0], [3.0, 3.0, 3.0], 1)


def test_nan_policy_and_mask():
    t = np.array([1.0, np.nan, 3.0])
    p = np.array([2.0, 5.0, 3.0])
    with pytest.raises(InputError, match="mask"):
        mse(t, p)
    m = ~np.isnan(t)
    assert mse(t, p, mask=m) == pytest.approx(0.5)
    assert mae(t, p, mask=m) == pytest.approx(0.5)
    with pytest.raises(InputError, match="y_pred"):
        mae([1.0], [np.inf])
    with pytest.raises(ShapeError):
        mse([1.0, 2.0], [1.0])
    with pytest.raises(InputError, match="nothing to score"):
        mse(t, p, mask=np.zeros(3, bool))
