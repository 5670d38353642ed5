"""stdiff (Diff-ST) and its variants: the model, one-sample output, retrained ablations, knock-outs.

- ``stdiff``: posterior mean (``z_mean``) scored by PCC/RMSE/SSIM and its ``n`` whole-section posterior
  samples (``samples``) by CRPS, coverage and spread-skill;
- ``stdiff_1sample``: the first posterior sample of that run, scored by CRPS only;
- ``stdiff_no_*``: retrained with one component switched off in the configuration (ablations);
- ``stdiff_ko_*``: the trained ``stdiff`` model with one component knocked out at inference
  (``predict_section(knockout=...)``; skipped with a note if the model has no such option).

Training uses the model's own early stopping (``validation=`` sections and ``max_time_s``) when it has
them; otherwise the budget's ``fallback_steps`` (reported as ``stopped: "fixed steps"``).
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import torch

from ..._utils import logger
from ...pp import Section
from ._base import Context, Method, Output, Skip
from ._unet import training_data

ABLATIONS: dict[str, dict[str, bool]] = {
    "stdiff_no_modulation": {"use_modulation": False},
    "stdiff_no_cross_attention": {"use_cross_attention": False},
    "stdiff_no_gene_graph": {"use_gene_graph": False},
}
KNOCKOUTS: dict[str, str] = {
    "stdiff_ko_modulation": "modulation",
    "stdiff_ko_cross_attention": "cross_attention",
    "stdiff_ko_gene_graph": "gene_graph",
}


def _accepts(fn, *names: str) -> bool:
    """Whether ``fn`` takes all the keyword arguments ``names``."""
    params = inspect.signature(fn).parameters
    return all(n in params for n in names)


def train_diffst(ctx: Context, config) -> tuple[Any, dict[str, Any]]:
    """Set up and train a Diff-ST model on the context's data with the benchmark's stopping rule."""
    from ...models import DiffST

    train, val, note = training_data(ctx)
    torch.manual_seed(ctx.seed)
    model = DiffST.setup(train, config, seed=ctx.seed)
    b = ctx.budget
    t0, c0 = time.perf_counter(), time.process_time()
    kw = dict(seed=ctx.seed, device=ctx.device, progress=False)
    if _accepts(model.train, "validation", "max_time_s"):
        model.train(train, steps=b.max_steps, validation=val, max_time_s=b.max_time_s, **kw)
        stopped = None
    else:
        model.train(train, steps=b.fallback_steps, **kw)
        stopped = "fixed steps"
        logger.info("DiffST.train() has no validation=/max_time_s=: trained %d fixed steps.", b.fallback_steps)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    info = dict(getattr(model, "train_info", None) or {})
    info.setdefault("steps", int(getattr(model, "step", len(getattr(model, "history", [])))))
    info.setdefault("best_step", info["steps"])
    info.setdefault("stopped", stopped or "unknown")
    info["seconds"], info["cpu_seconds"] = seconds, cpu
    info["validation"] = note if val else f"{note} (no validation: budget only)"
    return model, info


class StDiff(Method):
    """Adapter of Diff-ST: ``stdiff`` or a retrained ablation (``overrides`` of the configuration)."""

    learned = True
    sampler = True

    def __init__(self, name: str = "stdiff", overrides: dict[str, Any] | None = None) -> None:
        self.name = name
        self.overrides = dict(overrides or {})
        what = ", ".join(f"{k}={v}" for k, v in self.overrides.items())
        self.description = (
            f"Diff-ST retrained with {what} (ablation)" if self.overrides
            else "Diff-ST: posterior mean (point metrics) and whole-section posterior samples (probabilistic)"
        )  # fmt: skip

    def fit(self, ctx: Context) -> dict[str, Any]:
        self.ctx = ctx
        cfg = ctx.config.replace(**self.overrides) if self.overrides else ctx.config
        self.n = ctx.n_samples if not self.overrides else ctx.ablation_samples
        self.model, info = train_diffst(ctx, cfg)
        if not self.overrides:
            ctx.shared["stdiff"] = self
        return info

    def sample(self, section: Section, *, knockout: str | None = None) -> dict[str, Any]:
        """``predict_section`` with samples (and a knock-out if given)."""
        kw = dict(n_samples=self.n, seed=self.ctx.seed, device=self.ctx.device, progress=False, return_samples=True)
        if knockout is not None:
            kw["knockout"] = knockout
        return self.model.predict_section(section, **kw)

    def predict(self, section: Section) -> Output:
        out = self.sample(section)
        self.cache = getattr(self, "cache", {})
        self.cache[id(section)] = out
        return Output(mean=out["z_mean"], samples=out.get("samples"), normalizer=self.model.normalizer)


class OneSample(Method):
    """The first posterior sample of the ``stdiff`` run (CRPS only; never scored as a mean)."""

    name = "stdiff_1sample"
    description = "one posterior sample of the stdiff run (scored by CRPS only)"
    sampler = True

    def fit(self, ctx: Context) -> dict[str, Any]:
        self.ctx = ctx
        if "stdiff" not in ctx.shared:
            raise Skip("needs the stdiff method in the same run")
        self.parent = ctx.shared["stdiff"]
        return {"steps": 0, "best_step": None, "seconds": 0.0, "stopped": "reuses the stdiff model"}

    def predict(self, section: Section) -> Output:
        out = getattr(self.parent, "cache", {}).get(id(section)) or self.parent.sample(section)
        s = out["samples"][:1]
        return Output(mean=s[0], samples=s, normalizer=self.parent.model.normalizer, point=False)


class KnockOut(Method):
    """The trained ``stdiff`` model with one component knocked out at inference."""

    sampler = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.which = KNOCKOUTS[name]
        self.description = f"the stdiff model with its {self.which.replace('_', ' ')} knocked out at inference"

    def fit(self, ctx: Context) -> dict[str, Any]:
        self.ctx = ctx
        if "stdiff" not in ctx.shared:
            raise Skip("needs the stdiff method in the same run")
        self.parent = ctx.shared["stdiff"]
        return {"steps": 0, "best_step": None, "seconds": 0.0, "stopped": "reuses the stdiff model"}

    def predict(self, section: Section) -> Output:
        if not _accepts(self.parent.model.predict_section, "knockout"):
            raise Skip("the model's predict_section() has no knockout= option")
        out = self.parent.sample(section, knockout=self.which)
        return Output(mean=out["z_mean"], samples=out.get("samples"), normalizer=self.parent.model.normalizer)
