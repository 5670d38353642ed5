"""The ``model=None`` default of :func:`stdiff.tl.superresolve`, exactly as it runs there.

:class:`~stdiff.models.SelfSupervisedEnsemble` with its defaults, fitted on each test section's own
measurements and histology (self-supervised track only): the mean of cross-fitted
aggregation-consistency fits, and samples of its predictive distribution (counting noise around a
log-normal error of the mean whose per-gene sd is calibrated on held-out spots), scored like any
sampler.
"""

from __future__ import annotations

import time
from typing import Any

from ...pp import Section
from ._base import Context, Method, Output, Skip

#: Draws of the predictive distribution scored per section (enough for empirical quantile intervals).
N_DRAWS = 32


class Default(Method):
    """Adapter of the ``model=None`` default (see the module docstring)."""

    name = "default"
    description = (
        "superresolve(model=None) default (SpotRate): the expression rate fitted to the section's own spots by the "
        "likelihood of their footprint sums; predictive spread calibrated on held-out spots"
    )
    learned = True
    sampler = True

    def fit(self, ctx: Context) -> dict[str, Any]:
        from ...models import SelfSupervisedEnsemble, SpotRate, default_learner

        if not ctx.self_supervised:
            raise Skip("the model=None default learns from the test section itself (self-supervised track only)")
        self.ctx = ctx
        self.models = {}
        t0 = time.perf_counter()
        for s in ctx.train:
            try:
                learner = SpotRate if default_learner(s) == "likelihood" else SelfSupervisedEnsemble
                self.models[s.name] = learner().fit(s, seed=ctx.seed)
            except ValueError as e:  # too few spots to learn from
                raise Skip(str(e)) from e
        cal = [m.calibration for m in self.models.values()]
        return {
            "steps": 0, "best_step": None, "seconds": time.perf_counter() - t0,
            "stopped": "fixed work budget" if all(isinstance(m, SpotRate) for m in self.models.values())
            else "per-member early stopping",
            "calibration": cal,
            "validation": "cross-fitted: each fold of the test section's own measurements is predicted by fits that "
            "did not see it",
        }  # fmt: skip

    def predict(self, section: Section) -> Output:
        ens = self.models[section.name]
        mean = ens.predict_section(section)["mean"]
        norm = self.ctx.normalizer.subset(section.genes)
        m = section.mask_hr[None]
        draws = ens.sample(mean, section, N_DRAWS, seed=self.ctx.seed)
        samples = None if draws is None else norm.transform(draws, axis=-3) * m[None]
        return Output(mean=norm.transform(mean) * m, samples=samples, normalizer=self.ctx.normalizer)
