"""stdiff (Diff-ST) and its variants: the model, one-sample output, retrained ablations, knock-outs.

- ``stdiff``: the posterior mean (``z_mean``) scored by PCC/RMSE/SSIM and ``n`` whole-section posterior
  samples (``samples``, drawn on the model's canvas, never blended across tiles) by CRPS, coverage
  and spread-skill;
- ``stdiff_1sample``: the first posterior sample of that run, scored by CRPS only;
- ``stdiff_no_*``: retrained with one component switched off in the configuration (ablations);
- ``stdiff_ko_*``: the trained ``stdiff`` model with one component knocked out at inference
  (``predict_section(knockout=...)``; skipped with a note if the model has no such option).

Training applies the benchmark's budget through the model's own early stopping: ``validation=``
(carved from the training data by the benchmark), ``val_every``/``patience`` from the budget, and
the step and time caps per stage (the mean network, then the residual diffusion network). A model
without those options is trained for the budget's ``fallback_steps`` ("fixed steps").
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import torch

from ..._utils import logger
from ...pp import Section
from ._base import Context, Method, Output, Skip, density_coarsen

ABLATIONS: dict[str, dict[str, bool]] = {
    "stdiff_no_modulation": {"use_modulation": False},
    "stdiff_no_cross_attention": {"use_cross_attention": False},
    "stdiff_no_gene_graph": {"use_gene_graph": False},
    # for a configuration without the component (the `cpu` default has none of the three)
    "stdiff_with_modulation": {"use_modulation": True},
    "stdiff_with_cross_attention": {"use_cross_attention": True},
    "stdiff_with_gene_graph": {"use_gene_graph": True},
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


def training_data(ctx: Context) -> tuple[list[Section], list[Section] | None, str]:
    """Reference track: the context's data. Self-supervised: the coarsened test LR map (and its validation)."""
    if not ctx.self_supervised:
        return ctx.train, ctx.validation, ctx.validation_note
    from .._splits import validation_split

    t = ctx.config.tile_lr
    coarse = []
    for s in ctx.train:
        h, w = s.shape_lr
        if h // s.factor < t or w // s.factor < t:
            raise Skip(
                f"the test LR map of {s.name} ({h}×{w} px) coarsened ×{s.factor} is smaller than one {t}×{t} tile"
            )
        coarse.append(density_coarsen(s))
    fit, val, note = validation_split(coarse, tile_lr=t)
    return fit, val, f"coarsened test LR map; {note}"


def _summary(info: dict[str, Any]) -> dict[str, Any]:
    """The model's ``train_info`` without loss histories, with one ``stopped`` label."""
    out = {}
    for k, v in info.items():
        out[k] = {kk: vv for kk, vv in v.items() if kk != "history"} if isinstance(v, dict) else v
    stages = [(k, info[k]) for k in ("stage_a", "stage_b") if isinstance(info.get(k), dict)]
    if stages and "stopped" not in out:
        out["stopped"] = ", ".join(f"{k[-1].upper()}: {v.get('stopped')}" for k, v in stages)
    return out


def train_diffst(ctx: Context, config) -> tuple[Any, dict[str, Any]]:
    """Set up and train a Diff-ST model on the context's data with the benchmark's stopping rule."""
    from ...models import DiffST

    train, val, note = training_data(ctx)
    b = ctx.budget
    if hasattr(config, "val_every") and hasattr(config, "patience"):
        config = config.replace(val_every=b.eval_every, patience=b.patience)
    torch.manual_seed(ctx.seed)
    model = DiffST.setup(train, config, seed=ctx.seed, base_sections=val)
    t0, c0 = time.perf_counter(), time.process_time()
    kw = dict(seed=ctx.seed, device=ctx.device, progress=False)
    if _accepts(model.train, "validation", "max_time_s"):
        extra = {}
        if _accepts(model.train, "residual_steps"):  # stage B gets the same cap, unless switched off (0)
            extra["residual_steps"] = 0 if getattr(config, "residual_steps", 1) == 0 else b.max_steps
        model.train(train, steps=b.max_steps, validation=val, max_time_s=b.max_time_s, **extra, **kw)
        stopped = None
    else:
        model.train(train, steps=b.fallback_steps, **kw)
        stopped = "fixed steps"
        logger.info("DiffST.train() has no validation=/max_time_s=: trained %d fixed steps.", b.fallback_steps)
    info = _summary(dict(getattr(model, "train_info", None) or {}))
    info.setdefault("steps", int(getattr(model, "step", len(getattr(model, "history", [])))))
    info.setdefault("best_step", None)
    info.setdefault("stopped", stopped or "unknown")
    info["wall_seconds"], info["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
    info.setdefault("seconds", info["wall_seconds"])
    info["validation"] = note if val else f"{note} (no validation set: the model carves its own or uses the budget)"
    return model, info


class StDiff(Method):
    """Adapter of Diff-ST: ``stdiff`` or a retrained ablation (``overrides`` of the configuration)."""

    learned = True
    sampler = True
    gain = True

    def __init__(self, name: str = "stdiff", overrides: dict[str, Any] | None = None) -> None:
        self.name = name
        self.overrides = dict(overrides or {})
        self.gain = not self.overrides  # ablations: compared with stdiff, no histology-gain row of their own
        what = ", ".join(f"{k}={v}" for k, v in self.overrides.items())
        self.description = (
            f"Diff-ST retrained with {what} (ablation)" if self.overrides
            else "Diff-ST: posterior mean (point metrics) and whole-section posterior samples (probabilistic)"
        )  # fmt: skip
        self.cache: dict[int, dict[str, Any]] = {}

    def fit(self, ctx: Context) -> dict[str, Any]:
        self.ctx = ctx
        if self.overrides and all(getattr(ctx.config, k, None) == v for k, v in self.overrides.items()):
            what = ", ".join(f"{k}={v}" for k, v in self.overrides.items())
            raise Skip(f"the configuration already has {what}: this variant is stdiff itself")
        cfg = ctx.config.replace(**self.overrides) if self.overrides else ctx.config
        self.n = ctx.n_samples if not self.overrides else ctx.ablation_samples
        parent = ctx.shared.get("stdiff")
        if self.overrides and parent is not None and hasattr(cfg, "step_candidates"):
            # ablations sample with the steps chosen for stdiff; they only fit their own spread scale
            cfg = cfg.replace(step_candidates=(int(parent.model.sampling_steps),))
        self.model, info = train_diffst(ctx, cfg)
        if not self.overrides:
            ctx.shared["stdiff"] = self
        return info

    def sample(self, section: Section, *, knockout: str | None = None, n: int | None = None) -> dict[str, Any]:
        """``predict_section`` with ``n`` samples (default the method's; and a knock-out if given)."""
        kw = dict(n_samples=n or self.n, seed=self.ctx.seed, device=self.ctx.device, progress=False,
                  return_samples=True)  # fmt: skip
        if knockout is not None:
            kw["knockout"] = knockout
        return self.model.predict_section(section, **kw)

    def predict(self, section: Section) -> Output:
        out = self.sample(section)
        self.cache[id(section)] = out
        return Output(mean=out["z_mean"], samples=out.get("samples"), normalizer=self.model.normalizer)

    def predict_rotated(self, section: Section) -> Output:
        """The rotated-image control with as many samples as the ablations (the mean does not depend on n)."""
        from .._features import rotated

        out = self.sample(rotated(section), n=self.ctx.ablation_samples)
        return Output(mean=out["z_mean"], samples=out.get("samples"), normalizer=self.model.normalizer)


def _stdiff_of(ctx: Context):
    """The ``stdiff`` method fitted earlier in the same run (one-sample scoring and knock-outs reuse it)."""
    if "stdiff" not in ctx.shared:
        raise Skip("needs the stdiff method in the same run")
    return ctx.shared["stdiff"]


class OneSample(Method):
    """The first posterior sample of the ``stdiff`` run (CRPS only; never scored as a mean)."""

    name = "stdiff_1sample"
    description = "one posterior sample of the stdiff run (scored by CRPS only)"
    sampler = True

    def fit(self, ctx: Context) -> dict[str, Any]:
        self.ctx = ctx
        self.parent = _stdiff_of(ctx)
        return {"steps": 0, "best_step": None, "seconds": 0.0, "stopped": "reuses the stdiff model"}

    def predict(self, section: Section) -> Output:
        out = self.parent.cache.get(id(section)) or self.parent.sample(section)
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
        self.parent = _stdiff_of(ctx)
        if getattr(self.parent.model.config, f"use_{self.which}", True) is False:
            raise Skip(f"the model has no {self.which.replace('_', ' ')} to knock out")
        return {"steps": 0, "best_step": None, "seconds": 0.0, "stopped": "reuses the stdiff model"}

    def predict(self, section: Section) -> Output:
        if not _accepts(self.parent.model.predict_section, "knockout"):
            raise Skip("the model's predict_section() has no knockout= option")
        out = self.parent.sample(section, knockout=self.which, n=self.ctx.ablation_samples)
        return Output(mean=out["z_mean"], samples=out.get("samples"), normalizer=self.parent.model.normalizer)
