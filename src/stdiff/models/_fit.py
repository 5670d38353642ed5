"""One training loop for every network of stdiff: AdamW, EMA, early stopping on validation data, a time cap.

Training stops at the first of: ``steps`` optimiser steps, ``max_time_s`` seconds, or ``patience``
validations in a row without improvement of the validation loss (evaluated with the EMA weights
every ``val_every`` steps). The EMA weights of the best validation are kept. Without validation
data the loop runs to the step or time cap and keeps the final EMA weights.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._utils import logger


def fit(
    net: torch.nn.Module,
    *,
    batch_fn: Callable[[int], dict[str, torch.Tensor]],
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor], float], torch.Tensor],
    val_fn: Callable[[torch.nn.Module], float] | None,
    steps: int,
    max_time_s: float | None,
    val_every: int,
    patience: int,
    learning_rate: float,
    weight_decay: float,
    ema_decay: float,
    device: torch.device,
    progress: bool = True,
    desc: str = "stdiff train",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train ``net``; return its EMA copy (best validation weights) and what happened.

    Parameters
    ----------
    net
        The network (trained in place).
    batch_fn
        ``step -> batch`` of tensors on ``device`` (the caller owns the seeded random state).
    loss_fn
        ``(net, batch, progress ∈ [0, 1]) -> scalar loss``.
    val_fn
        ``ema -> validation loss`` (deterministic), or ``None`` for no early stopping.
    steps, max_time_s, val_every, patience
        Caps and the early-stopping rule.
    learning_rate, weight_decay, ema_decay
        AdamW and the EMA of the weights.
    device
        Where to train.
    progress
        Show a tqdm bar.
    desc
        The bar's label.

    Returns
    -------
    ``(ema, info)``: ``info`` has ``steps`` (taken), ``best_step``, ``best_val``, ``seconds``,
    ``stopped`` (``"patience"``, ``"steps"`` or ``"time"``), ``history`` (training losses) and
    ``val_history`` (``(step, loss)`` pairs).
    """
    net = net.to(device).train()
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    opt = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    history: list[float] = []
    val_history: list[tuple[int, float]] = []
    best_val, best_step, best_state, bad = float("inf"), 0, None, 0
    stopped = "steps"
    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    step = 0

    def validate() -> bool:
        """Score the EMA weights at this step; keep them if they are the best so far (returns whether)."""
        nonlocal best_val, best_step, best_state
        v = float(val_fn(ema))
        val_history.append((step, v))
        if best_state is None or v < best_val - 1e-6 * abs(best_val):
            best_val, best_step, best_state = v, step, copy.deepcopy(ema.state_dict())
            return True
        return False

    while step < steps:
        batch = batch_fn(step)
        loss = loss_fn(net, batch, step / max(steps, 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), net.parameters()):
                pe.lerp_(pn, 1 - decay)
            for be, bn in zip(ema.buffers(), net.buffers()):
                be.copy_(bn)
        step += 1
        history.append(float(loss.detach()))
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(history[-20:]):.4f}")
        if val_fn is not None and (step % val_every == 0 or step == steps):
            if validate():
                bad = 0
            else:
                bad += 1
                if bad >= patience:
                    stopped = "patience"
                    break
        if max_time_s is not None and time.perf_counter() - t0 > max_time_s:
            stopped = "time"
            if val_fn is not None and (not val_history or val_history[-1][0] != step):
                validate()  # the weights kept are always validated ones
            break
    bar.close()
    if best_state is not None:
        ema.load_state_dict(best_state)
    seconds = time.perf_counter() - t0
    kept = f"best validation {best_val:.4g} at step {best_step}" if best_state is not None else "no validation"
    logger.info("%s: %d steps in %.1f s (stopped: %s); %s.", desc, step, seconds, stopped, kept)
    info = {
        "steps": step,
        "best_step": best_step if best_state is not None else step,
        "best_val": best_val if best_state is not None else None,
        "seconds": seconds,
        "stopped": stopped,
        "history": history,
        "val_history": val_history,
    }
    net.cpu().eval()
    return ema.cpu().eval(), info
