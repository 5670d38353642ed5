"""iStar-like baseline: :class:`stdiff.models.AggregationConsistency` under the benchmark's budget.

A per-HR-pixel network on standardised histology features (:func:`stdiff.pp.histology_features`)
predicts a positive abundance per gene, trained only so that its sums over each LR pixel match the
LR map (aggregation consistency, Poisson deviance); at prediction each LR pixel's counts are
distributed over its tissue pixels in proportion to the abundance (optionally blended with the
mask-aware nearest map, the weight chosen on held-out LR pixels). It never reads HR truth.
Reference track: fitted on the training sections' LR maps. Self-supervised track: fitted on the test
section's own LR map (what iStar does). Early stopping: a random 20% of the LR pixels held out
(from the training data), the budget's ``eval_every``/``patience``/time cap.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...pp import Section
from ._base import Context, Method, Output

#: Full-batch steps of the per-pixel network are cheap: this many per budget step.
STEPS_PER_BUDGET_STEP: int = 4


class IStar(Method):
    """Adapter of :class:`~stdiff.models.AggregationConsistency` (see the module docstring)."""

    name = "istar"
    description = (
        "iStar-like (stdiff.models.AggregationConsistency): histology features → per-pixel abundance trained by "
        "aggregation consistency on the spots; LR counts distributed by it"
    )
    learned = True

    def fit(self, ctx: Context) -> dict[str, Any]:
        from ...models import AggregationConsistency

        self.ctx = ctx
        b = ctx.budget
        max_steps = STEPS_PER_BUDGET_STEP * b.max_steps
        self.model = AggregationConsistency()
        t0 = time.perf_counter()
        self.model.fit(ctx.train, max_steps=max_steps, max_time=b.max_time_s, val_fraction=0.2,
                       patience=b.patience, eval_every=b.eval_every, seed=ctx.seed, device=ctx.device)  # fmt: skip
        seconds = time.perf_counter() - t0
        hist = self.model.history
        steps = int(hist[-1][0]) if hist else 0
        best_step = int(hist[int(np.argmin([h[2] for h in hist]))][0]) if hist else None
        stopped = "max_steps" if steps >= max_steps else ("time_cap" if seconds > b.max_time_s else "early_stopping")
        return {
            "steps": steps, "best_step": best_step, "seconds": seconds, "stopped": stopped,
            "blend_weight": float(self.model.blend_weight),
            "validation": "20% of the training LR pixels held out (" + ("test" if ctx.self_supervised else "training")
            + " sections' LR maps)",
        }  # fmt: skip

    def predict(self, section: Section) -> Output:
        out = self.model.predict(section, normalizer=self.ctx.normalizer)
        return Output(mean=out["z_mean"] * section.mask_hr[None], normalizer=self.ctx.normalizer)
