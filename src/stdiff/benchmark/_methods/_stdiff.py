"""stdiff (Diff-ST) and its variants: the model, one-sample output, retrained ablations, knock-outs.

- ``stdiff``: the posterior mean (``z_mean``) scored by PCC/RMSE/SSIM and ``n`` whole-section posterior
  samples (``samples``, drawn on the model's canvas, never blended across tiles) by CRPS, coverage
  and spread-skill;
- ``stdiff_1sample``: the first posterior sample of that run, scored by CRPS only;
- ``stdiff_no_*``: retrained with one component switched off in the configuration (ablations);
- ``stdiff_ko_*``: the trained ``stdiff`` model with one component knocked out at inference
  (``predict_section(knockout=...)``; skipped with a note if the model has no such component).

Training applies the benchmark's budget through the model's own early stopping: ``validation=``
(carved from the training data by the benchmark), ``val_every``/``patience`` from the budget, and
the step and time caps per stage (the mean network, then the residual diffusion network).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ...pp import Section
from ._base import Context, Method, Output, Skip, density_coarsen

ABLATIONS: dict[str, dict[str, bool]] = {
    "stdiff_no_modulation": {"components.use_modulation": False},
    "stdiff_no_cross_attention": {"components.use_cross_attention": False},
    "stdiff_no_gene_graph": {"components.use_gene_graph": False},
    # for a configuration without the component (the `cpu` default has none of the three)
    "stdiff_with_modulation": {"components.use_modulation": True},
    "stdiff_with_cross_attention": {"components.use_cross_attention": True},
    "stdiff_with_gene_graph": {"components.use_gene_graph": True},
}
KNOCKOUTS: dict[str, str] = {
    "stdiff_ko_modulation": "modulation",
    "stdiff_ko_cross_attention": "cross_attention",
    "stdiff_ko_gene_graph": "gene_graph",
}


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
    """The model's ``train_info`` without loss histories, with one ``stopped`` label naming both stages."""
    out = {}
    for k, v in info.items():
        out[k] = {kk: vv for kk, vv in v.items() if kk != "history"} if isinstance(v, dict) else v
    out["stopped"] = ", ".join(f"{k[-1].upper()}: {info[k].get('stopped')}" for k in ("stage_a", "stage_b"))
    out["best_step"] = None  # each stage reports its own, under stage_a / stage_b
    return out


def train_diffst(ctx: Context, config) -> tuple[Any, dict[str, Any]]:
    """Set up and train a Diff-ST model on the context's data with the benchmark's stopping rule."""
    from ...models import DiffST

    train, val, note = training_data(ctx)
    b = ctx.budget
    config = config.replace(training={"val_every": b.eval_every, "patience": b.patience})
    torch.manual_seed(ctx.seed)
    model = DiffST.setup(train, config, seed=ctx.seed, base_sections=val)
    t0, c0 = time.perf_counter(), time.process_time()
    residual_steps = 0 if config.training.residual_steps == 0 else b.max_steps  # stage B gets the same cap, unless off
    model.train(train, steps=b.max_steps, residual_steps=residual_steps, validation=val, max_time_s=b.max_time_s,
                seed=ctx.seed, device=ctx.device, progress=False)  # fmt: skip
    info = _summary(model.train_info)
    info["wall_seconds"], info["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
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
        if self.overrides and all(ctx.config.get(k) == v for k, v in self.overrides.items()):
            what = ", ".join(f"{k}={v}" for k, v in self.overrides.items())
            raise Skip(f"the configuration already has {what}: this variant is stdiff itself")
        cfg = ctx.config.replace(**self.overrides) if self.overrides else ctx.config
        self.n = ctx.n_samples if not self.overrides else ctx.ablation_samples
        parent = ctx.shared.get("stdiff")
        if self.overrides and parent is not None:
            # ablations sample with the steps chosen for stdiff; they only fit their own spread scale
            cfg = cfg.replace(calibration={"step_candidates": (int(parent.model.sampling_steps),)})
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
        return _output(out, self.model)

    def predict_rotated(self, section: Section) -> Output:
        """The rotated-image control with as many samples as the ablations (the mean does not depend on n)."""
        from .._features import rotated

        return _output(self.sample(rotated(section), n=self.ctx.ablation_samples), self.model)


def _output(out: dict[str, Any], model) -> Output:
    """The posterior mean and samples of a ``predict_section`` result, in ``model``'s space."""
    return Output(mean=out["z_mean"], samples=out.get("samples"), normalizer=model.normalizer)


class _Reuse(Method):
    """A variant that reuses the ``stdiff`` model fitted earlier in the same run (nothing to train)."""

    sampler = True

    def fit(self, ctx: Context) -> dict[str, Any]:
        self.ctx = ctx
        if "stdiff" not in ctx.shared:
            raise Skip("needs the stdiff method in the same run")
        self.parent: StDiff = ctx.shared["stdiff"]
        return {"steps": 0, "best_step": None, "seconds": 0.0, "stopped": "reuses the stdiff model"}


class OneSample(_Reuse):
    """The first posterior sample of the ``stdiff`` run (CRPS only; never scored as a mean)."""

    name = "stdiff_1sample"
    description = "one posterior sample of the stdiff run (scored by CRPS only)"

    def predict(self, section: Section) -> Output:
        out = self.parent.cache.get(id(section)) or self.parent.sample(section)
        s = out["samples"][:1]
        return Output(mean=s[0], samples=s, normalizer=self.parent.model.normalizer, point=False)


class KnockOut(_Reuse):
    """The trained ``stdiff`` model with one component knocked out at inference."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.which = KNOCKOUTS[name]
        self.description = f"the stdiff model with its {self.which.replace('_', ' ')} knocked out at inference"

    def fit(self, ctx: Context) -> dict[str, Any]:
        info = super().fit(ctx)
        if not getattr(self.parent.model.config.components, f"use_{self.which}"):
            raise Skip(f"the model has no {self.which.replace('_', ' ')} to knock out")
        return info

    def predict(self, section: Section) -> Output:
        return _output(self.parent.sample(section, knockout=self.which, n=self.ctx.ablation_samples), self.parent.model)
