"""The closed-form linear skip shared by Internal and Bridging (``--linear-skip``).

A frozen ``Linear(L -> H)`` on the RevIN-normalized context, added to the model's normalized forecast, fitted
here before training by ridge regression; the model's head starts at 0, so the untrained model forecasts as
this ridge and the LM (or adapter) learns the residual. The runtimes add it from ``skip_w`` / ``skip_b``.
"""

from __future__ import annotations

import logging

import numpy as np

from alignts.errors import InputError

log = logging.getLogger(__name__)

RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def fit_linear_skip(skip, cfg, train_xy, val_xy, ridges=RIDGES) -> dict:
    """Fit ``skip`` (an ``nn.Linear(L, H)``) in closed form on RevIN-normalized windows; returns what was fitted.

    cfg: the model's config (``context_len``, ``horizon``, ``eps``). Ridge regression of the normalized target
    on the normalized context over every training window and channel, minimizing ``mean squared error +
    ridge * |W|^2`` (the intercept unpenalized); the ridge strength with the lowest validation MSE
    (de-normalized, the units training is scored in) is kept.
    """
    import torch

    if skip is None:
        raise InputError("fit_linear_skip: the model was built without linear_skip=True.")

    def normalized(xy):
        x = np.asarray(xy[0], dtype=np.float64).reshape(-1, cfg.context_len)
        y = np.asarray(xy[1], dtype=np.float64).reshape(-1, cfg.horizon)
        mean = x.mean(-1, keepdims=True)
        std = np.sqrt(x.var(-1, keepdims=True) + cfg.eps)
        return (x - mean) / std, (y - mean) / std, mean, std

    xt, yt, _, _ = normalized(train_xy)
    xv, yv, mv, sv = normalized(val_xy)
    mx, my = xt.mean(0), yt.mean(0)
    xc, yc = xt - mx, yt - my
    evals, evecs = np.linalg.eigh(xc.T @ xc)
    proj = evecs.T @ (xc.T @ yc)  # [L, H] in the eigenbasis
    best = None
    for lam in ridges:
        w = evecs @ (proj / (evals + lam * len(xt))[:, None])  # [L, H]
        b = my - mx @ w
        mse = float(np.mean(((xv @ w + b - yv) * sv) ** 2))  # in the data's (scaled) units, as training
        if best is None or mse < best[0]:
            best = (mse, lam, w, b)
    mse, lam, w, b = best
    with torch.no_grad():
        skip.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))
        skip.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    train_mse = float(np.mean((xt @ w + b - yt) ** 2))
    log.info("linear skip: ridge %g, normalized train mse %.4f, val mse %.4f (%d windows x channels)", lam,
             train_mse, mse, len(xt))
    return {"ridge": lam, "normalized_train_mse": train_mse, "val_mse": mse, "n_rows": len(xt)}
