"""The benchmark's stopping rule for training loops written in the benchmark (the model has its own).

:class:`EarlyStopping` implements :class:`~stdiff.benchmark._methods.Budget`: validate every
``eval_every`` steps, stop after ``patience`` checks without improvement, at ``max_steps`` or after
``max_time_s`` seconds, and keep the state of the best check.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from ._base import Budget


class EarlyStopping:
    """Bookkeeping of one training run under a :class:`Budget`.

    Call :meth:`step` after every optimiser step with a zero-argument validation function (or
    ``None`` without validation data) and a function returning the state to keep; it returns
    ``True`` when training must stop. :attr:`best_state` is the state of the best validation check.
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.t0 = time.perf_counter()
        self.steps = 0
        self.best, self.best_step, self.best_state = float("inf"), None, None
        self.bad = 0
        self.stopped = "max_steps"
        self.history: list[tuple[int, float]] = []

    def step(self, validate, state) -> bool:
        """Count one step; validate when due; ``True`` if training must stop now."""
        b = self.budget
        self.steps += 1
        if validate is not None and (self.steps % b.eval_every == 0 or self.steps >= b.max_steps):
            v = float(validate())
            self.history.append((self.steps, v))
            if self.best_state is None or v < self.best - 1e-9:
                self.best, self.best_step, self.bad = v, self.steps, 0
                self.best_state = copy.deepcopy(state())
            else:
                self.bad += 1
                if self.bad >= b.patience:
                    self.stopped = "early_stopping"
                    return True
        if time.perf_counter() - self.t0 > b.max_time_s:
            self.stopped = "time_cap"
            return True
        return self.steps >= b.max_steps

    def info(self, **extra: Any) -> dict[str, Any]:
        """What the run used: ``steps``, ``best_step``, ``seconds``, ``stopped``, ``best_validation_loss``."""
        return {
            "steps": self.steps, "best_step": self.best_step or self.steps, "seconds": time.perf_counter() - self.t0,
            "stopped": self.stopped, "best_validation_loss": None if self.best_state is None else self.best,
            "validation_history": self.history, **extra,
        }  # fmt: skip
