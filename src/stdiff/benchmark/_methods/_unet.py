"""The deterministic U-Net: Diff-ST's network and conditioning, trained by regression on the residual."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ...pp import Section
from ._base import Context, Method, Output, Skip, density_coarsen
from ._tiles import fit_loop, stitch


class RegressionUNet:
    """:class:`~stdiff.models.DiffSTUNet` trained by regression on the residual (x = 0, t = 0).

    Gene graph, residual scale and normalisation are those of a Diff-ST model set up on the same
    training data (``ref``), so only the objective differs from Diff-ST.
    """

    def __init__(self, ref: Any) -> None:
        from ...models.unet import DiffSTUNet

        self.genes = list(ref.genes)
        self.config = ref.config
        self.normalizer = ref.normalizer
        self.residual_scale = ref.residual_scale
        self.net = DiffSTUNet(ref.config, len(self.genes), ref.image_channels, ref.graph.adjacency())
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.history: list[float] = []
        self.validation: list[tuple[int, float]] = []

    def _forward(self, net: nn.Module, b: dict[str, torch.Tensor], fraction: float):
        x = torch.zeros_like(b["base"])
        t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        he = b["he"] if b["he"].is_floating_point() else b["he"].float() / 255.0
        return net(x, t, b["lr_up"], b["mask"].float(), he, fraction)

    def train(self, sections, validation, *, budget, seed: int, device) -> dict[str, Any]:
        """MSE on ``(z_hr − bicubic) / residual_scale`` (Diff-ST's tiles, optimiser and EMA)."""
        cfg = self.config

        def loss_fn(net, b, step, total):
            target = (b["z_hr"] - b["base"]) / self.residual_scale
            out, dloss = self._forward(net, b, cfg.admitted_fraction(step / max(total, 1)))
            weight = b["mask_truth"].float() + 0.05
            loss = (((out - target) ** 2) * weight).sum() / (weight.sum() * out.shape[1])
            return loss, cfg.disentangle_weight * dloss

        return fit_loop(self, sections, validation, budget=budget, seed=(seed, 2), device=device, loss_fn=loss_fn)

    def predict(self, section: Section, *, device="cpu"):
        """Normalised HR map ``(G, H, W)``: bicubic + the regressed residual (clamped at 0)."""
        net = self.ema.to(device).eval()

        def fn(b):
            out, _ = self._forward(net, b, 1.0)
            return (b["base"] + out * self.residual_scale).clamp(min=0)

        out = stitch(section, self.normalizer, self.config.tile_lr, fn, device=device)
        net.cpu()
        return out


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


class UNetMethod(Method):
    """Adapter of :class:`RegressionUNet` (same network, inputs and budget as stdiff; no diffusion)."""

    name = "unet"
    description = "deterministic U-Net: Diff-ST's network and conditioning, regression on the residual"
    learned = True

    def fit(self, ctx: Context) -> dict[str, Any]:
        from ...models import DiffST

        self.ctx = ctx
        train, val, note = training_data(ctx)
        torch.manual_seed(ctx.seed)
        ref = DiffST.setup(train, ctx.config, seed=ctx.seed)
        self.model = RegressionUNet(ref)
        info = self.model.train(train, val, budget=ctx.budget, seed=ctx.seed, device=ctx.device)
        info["validation"] = note if val else f"{note} (no validation: budget only)"
        return info

    def predict(self, section: Section) -> Output:
        z = self.model.predict(section, device=self.ctx.device)
        return Output(mean=z, normalizer=self.model.normalizer)
