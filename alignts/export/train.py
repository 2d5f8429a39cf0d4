"""The generic training loop shared by the paradigms (Internal, Bridging; Injective LoRA).

AdamW over the parameters that require grad, a cosine learning-rate schedule per step, early stopping on
validation MSE keeping the best weights, a fixed seed, and two CPU budget knobs: a random subsample of the
training windows per epoch and a wall-clock budget.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignts.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (all serialized into the manifest's ``training``).

    epochs:            maximum number of epochs.
    batch_size:        windows per step (each window holds C channel series).
    lr:                peak AdamW learning rate (cosine decay to 0 over the planned steps).
    weight_decay:      AdamW weight decay.
    patience:          epochs without a better validation MSE before stopping.
    max_train_windows: CPU budget knob: a fresh random subsample of this many training windows per epoch
                       (None = all).
    max_val_windows:   a fixed random subsample of validation windows (None = all).
    seed:              seeds torch and numpy (same seed, same run).
    time_budget_s:     stop training when the next step would pass this wall time (None = no limit); the
                       best state so far is kept and a final validation is still run.
    threads:           torch intra-op threads (None = leave torch's default).
    device:            where training runs: ``"cpu"``, ``"cuda"`` (raises when torch sees no CUDA GPU) or
                       ``"auto"`` (cuda when available); the model comes back on the CPU for the export.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 3
    max_train_windows: int | None = None
    max_val_windows: int | None = None
    seed: int = 0
    time_budget_s: float | None = None
    threads: int | None = None
    device: str = "cpu"


DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a ``TrainConfig.device``; InputError when cuda is asked for but absent."""
    import torch

    if device not in DEVICES:
        raise InputError(f"device {device!r}: expected one of {DEVICES}. Fix: --device cpu, cuda or auto.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        built = torch.version.cuda
        why = (f"this torch {torch.__version__} is built without CUDA" if built is None
               else f"this torch {torch.__version__} (CUDA {built}) sees no CUDA GPU")
        raise InputError(f"--device cuda: {why}. Fix: --device cpu (or auto), or install a CUDA build of torch "
                         "on a machine with an NVIDIA GPU.")
    return device


@dataclass(frozen=True)
class TrainResult:
    """best_val_mse: the validation MSE of the kept weights (the starting weights count: start_val_mse);
    history: one dict per epoch."""

    best_val_mse: float
    epochs_run: int
    wall_s: float
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    stopped_by: str = "epochs"  # "epochs" | "early_stopping" | "time_budget"
    start_val_mse: float = float("nan")
    device: str = "cpu"  # where it trained (TrainConfig.device resolved)


def _as_tensor(a):
    import torch

    if isinstance(a, torch.Tensor):
        return a.float()
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _check_xy(name: str, xy) -> tuple:
    if not isinstance(xy, (tuple, list)) or len(xy) != 2:
        raise InputError(f"{name}: expected a pair (x [N, C, L], y [N, C, H]), got {type(xy).__name__}")
    x, y = _as_tensor(xy[0]), _as_tensor(xy[1])
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2] or x.shape[0] == 0:
        raise InputError(f"{name}: expected x [N, C, L] and y [N, C, H] with the same N, C > 0; got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}. Fix: build them with sliding_windows().")
    return x, y


def evaluate_mse(model, x, y, batch_size: int = 64, device: str = "cpu") -> float:
    """Mean squared error of ``model(x)`` against ``y`` (no grad, eval mode; batches moved to ``device``)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            pred = model(x[i:i + batch_size].to(device))
            total += float(((pred - y[i:i + batch_size].to(device)) ** 2).sum())
            count += pred.numel()
    return total / max(count, 1)


def train(model, train_xy, val_xy, cfg: TrainConfig = TrainConfig()) -> TrainResult:
    """Fit ``model`` (``forward(x [B, C, L] float32) -> [B, C, H]``) in place; returns a TrainResult.

    train_xy, val_xy: ``(x [N, C, L], y [N, C, H])`` numpy arrays or tensors (scaled data).
    Only parameters with ``requires_grad`` are optimized. At the end the model holds the weights with the
    best validation MSE and is in eval mode.
    """
    import torch
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    xtr, ytr = _check_xy("train_xy", train_xy)
    xva, yva = _check_xy("val_xy", val_xy)
    if cfg.max_val_windows is not None and xva.shape[0] > cfg.max_val_windows:
        idx = np.sort(rng.choice(xva.shape[0], cfg.max_val_windows, replace=False))
        xva, yva = xva[idx], yva[idx]
    model.to(device)  # the windows stay on the CPU; each batch moves
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("the model has no parameter with requires_grad=True; nothing to train.")
    n_per_epoch = xtr.shape[0] if cfg.max_train_windows is None else min(xtr.shape[0], cfg.max_train_windows)
    steps_per_epoch = math.ceil(n_per_epoch / cfg.batch_size)
    total_steps = max(1, steps_per_epoch * cfg.epochs)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps)
                                                                                  / total_steps)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]

    def snapshot():
        sd = dict(model.named_parameters())
        return {n: sd[n].detach().clone() for n in trainable}

    # The starting weights are a candidate too: training never returns a model worse on validation than
    # the one it was given (a zero head forecasts the context mean; a fitted linear skip forecasts as ridge).
    tv = time.perf_counter()
    best = start_val = evaluate_mse(model, xva, yva, cfg.batch_size, device)
    val_cost_s = time.perf_counter() - tv  # reserved from the time budget before each validation
    best_state = snapshot()
    log.info("start: val mse %.4f", start_val)
    history: list[dict[str, Any]] = []
    bad_epochs, epochs_run, stopped_by = 0, 0, "epochs"
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(xtr.shape[0])[:n_per_epoch]
        sum_loss, n_seen, out_of_time = 0.0, 0, False
        bar = tqdm(range(0, n_per_epoch, cfg.batch_size), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   leave=False, mininterval=2.0)
        for i in bar:
            if cfg.time_budget_s is not None:
                spent = time.perf_counter() - t0
                step_s = spent / max(1, epoch * steps_per_epoch + i // cfg.batch_size)
                reserve = val_cost_s
                if n_seen > 0 and spent + step_s + reserve > cfg.time_budget_s:
                    out_of_time = True
                    break
            idx = torch.from_numpy(order[i:i + cfg.batch_size])
            xb, yb = xtr[idx].to(device), ytr[idx].to(device)
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sum_loss += loss.item() * xb.shape[0]
            n_seen += xb.shape[0]
            bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.close()
        tv = time.perf_counter()
        val = evaluate_mse(model, xva, yva, cfg.batch_size, device)
        val_cost_s = time.perf_counter() - tv
        epochs_run += 1
        history.append(dict(epoch=epoch + 1, train_mse=sum_loss / max(n_seen, 1), val_mse=val,
                            n_train_windows=n_seen, wall_s=time.perf_counter() - t0))
        log.info("epoch %d: train mse %.4f, val mse %.4f (%d windows, %.0f s)", epoch + 1,
                 history[-1]["train_mse"], val, n_seen, history[-1]["wall_s"])
        if val < best:
            best, best_state, bad_epochs = val, snapshot(), 0
        else:
            bad_epochs += 1
        if out_of_time:
            stopped_by = "time_budget"
            break
        if bad_epochs >= cfg.patience:
            stopped_by = "early_stopping"
            break
    with torch.no_grad():
        sd = dict(model.named_parameters())
        for n, v in best_state.items():
            sd[n].copy_(v)
    model.to("cpu")  # export and the reference run on the CPU
    model.eval()
    return TrainResult(best_val_mse=float(best), epochs_run=epochs_run, wall_s=time.perf_counter() - t0,
                       history=tuple(history), stopped_by=stopped_by, start_val_mse=float(start_val),
                       device=device)
