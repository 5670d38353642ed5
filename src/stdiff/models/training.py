"""One training loop for every learner of stdiff: AdamW, optional EMA and gradient clipping, early stopping, caps.

Stage A and stage B of :class:`~stdiff.models.DiffST` and the fits of
:class:`~stdiff.models.AggregationConsistency` all train through :class:`TrainingLoop`; they differ only
in what they pass: how a batch is drawn, the loss (an object of :mod:`~stdiff.models.nn.losses`), how
validation scores the weights, and the loop's options.

Training stops at the first of: ``steps`` optimiser steps, ``max_time_s`` seconds, or ``patience``
validations in a row without improvement (every ``val_every`` steps and after the last step). The
weights scored are the EMA of the network's weights when ``ema_decay`` is set, else the network's own;
the best validated weights are kept. Without validation the loop runs to its step or time cap and
keeps the last weights.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._utils import logger

__all__ = ["TrainingLoop"]


@dataclass
class TrainingLoop:
    """How to train a network (see the module docstring for the stopping rule).

    Parameters
    ----------
    steps
        Step cap.
    max_time_s
        Time cap in seconds (``None``: none).
    val_every, patience
        Validate every ``val_every`` steps; stop after ``patience`` validations without improvement.
    learning_rate, weight_decay
        AdamW.
    ema_decay
        Decay of the exponential moving average of the weights (warmed up as ``(1 + step) / (10 + step)``);
        ``None``: no EMA, the network itself is validated and kept.
    clip_grad_norm
        Gradient norm clipping (``None``: none).
    min_improvement, relative
        A validation loss improves on the best when it is lower by more than ``min_improvement``
        (times ``|best|`` when ``relative``).
    device
        Where to train.
    progress, desc
        A tqdm bar and its label.
    to_cpu
        Move the returned network (and the trained one) to the CPU at the end.
    """

    steps: int
    max_time_s: float | None = None
    val_every: int = 25
    patience: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float | None = None
    clip_grad_norm: float | None = None
    min_improvement: float = 1e-6
    relative: bool = True
    device: torch.device | str = "cpu"
    progress: bool = False
    desc: str = "stdiff train"
    to_cpu: bool = True

    def run(
        self,
        net: torch.nn.Module,
        *,
        batch_fn: Callable[[int], Any],
        loss_fn: Callable[[torch.nn.Module, Any, float], torch.Tensor],
        val_fn: Callable[[torch.nn.Module], float] | None,
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        """Train ``net``; return the kept network (the EMA copy, or ``net``) and what happened.

        Parameters
        ----------
        net
            The network (trained in place).
        batch_fn
            ``step -> batch`` (the caller owns the seeded random state).
        loss_fn
            ``(net, batch, progress ∈ [0, 1]) -> scalar loss``.
        val_fn
            ``weights -> validation loss`` (deterministic), or ``None`` for no early stopping.

        Returns
        -------
        ``(net, info)``: ``info`` has ``steps`` (taken), ``best_step``, ``best_val``, ``seconds``,
        ``stopped`` (``"patience"``, ``"steps"`` or ``"time"``), ``history`` (training losses) and
        ``val_history`` (``(step, loss)`` pairs).
        """
        net = net.to(self.device).train()
        ema = copy.deepcopy(net).requires_grad_(False).eval() if self.ema_decay is not None else None
        scored = ema if ema is not None else net
        opt = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        state = _Progress()
        t0 = time.perf_counter()
        bar = tqdm(total=self.steps, desc=self.desc, disable=not self.progress, leave=False)
        step = 0
        while step < self.steps:
            loss = loss_fn(net, batch_fn(step), step / max(self.steps, 1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), self.clip_grad_norm)
            opt.step()
            if ema is not None:
                _ema_update(ema, net, min(self.ema_decay, (1 + step) / (10 + step)))
            step += 1
            state.history.append(float(loss.detach()))
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(state.history[-20:]):.4f}")
            if val_fn is not None and (step % self.val_every == 0 or step == self.steps):
                if self._validate(state, scored, val_fn, step):
                    state.bad = 0
                else:
                    state.bad += 1
                    if state.bad >= self.patience:
                        state.stopped = "patience"
                        break
            if self.max_time_s is not None and time.perf_counter() - t0 > self.max_time_s:
                state.stopped = "time"
                if val_fn is not None and (not state.val_history or state.val_history[-1][0] != step):
                    self._validate(state, scored, val_fn, step)  # the weights kept are always validated ones
                break
        bar.close()
        return self._finish(net, scored, state, step, time.perf_counter() - t0)

    def _validate(self, state: _Progress, scored: torch.nn.Module, val_fn, step: int) -> bool:
        """Score the weights at this step; keep them if they are the best so far (returns whether)."""
        scored.eval()
        with torch.no_grad():
            v = float(val_fn(scored))
        if self.ema_decay is None:  # the network itself was scored: back to training
            scored.train()
        state.val_history.append((step, v))
        margin = self.min_improvement * (abs(state.best_val) if self.relative else 1.0)
        if state.best_state is None or v < state.best_val - margin:
            state.best_val, state.best_step = v, step
            state.best_state = copy.deepcopy(scored.state_dict())
            return True
        return False

    def _finish(self, net, scored, state: _Progress, step: int, seconds: float):
        if state.best_state is not None:
            scored.load_state_dict(state.best_state)
        kept = state.best_state is not None
        what = f"best validation {state.best_val:.4g} at step {state.best_step}" if kept else "no validation"
        logger.info("%s: %d steps in %.1f s (stopped: %s); %s.", self.desc, step, seconds, state.stopped, what)
        info = {
            "steps": step,
            "best_step": state.best_step if kept else step,
            "best_val": state.best_val if kept else None,
            "seconds": seconds,
            "stopped": state.stopped,
            "history": state.history,
            "val_history": state.val_history,
        }
        net.eval()
        if self.to_cpu:
            net.cpu()
            scored = scored.cpu()
        return scored.eval(), info


@dataclass
class _Progress:
    """What the loop tracks while it runs."""

    best_val: float = float("inf")
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad: int = 0
    stopped: str = "steps"

    def __post_init__(self) -> None:
        self.history: list[float] = []
        self.val_history: list[tuple[int, float]] = []


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    for pe, pn in zip(ema.parameters(), net.parameters()):
        pe.lerp_(pn, 1 - decay)
    for be, bn in zip(ema.buffers(), net.buffers()):
        be.copy_(bn)
