"""iStar-like baseline: histology features → MLP per HR pixel, trained by aggregation consistency on spots.

The MLP maps each HR pixel's standardised histology features to non-negative counts relative to the
gene's mean (softplus). It never sees HR truth and never sees the LR map at prediction time: it is
trained so that its counts averaged over each LR pixel's block match the measured LR map (MSE in the
normalised space). Reference track: trained on the training sections' LR maps, early-stopped on the
validation part's LR maps. Self-supervised track: trained on the test section's own LR map (what
iStar does), early-stopped on a random 20% of its LR pixels held out. Prediction: the MLP's map alone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...pp import Section
from .._features import features, standardize
from ._base import Context, Method, Output
from ._interp import lr_z
from ._stopping import EarlyStopping


class _Slide:
    """One section as tensors: features ``(P, F)`` of tissue pixels, their LR block, LR targets."""

    def __init__(self, section: Section, mu, sd, normalizer, keep_lr: np.ndarray | None = None):
        f = section.factor
        feats = standardize(features(section)[0], mu, sd)
        H, W = feats.shape[-2:]
        mask = section.mask_hr
        rows, cols = np.nonzero(mask)
        self.x = torch.from_numpy(feats[:, rows, cols].T.copy())
        w_lr = section.shape_lr[1]
        self.block = torch.from_numpy((rows // f) * w_lr + cols // f).long()
        self.n_blocks = section.shape_lr[0] * w_lr
        lr_mask = section.mask_lr.copy() if keep_lr is None else (section.mask_lr & keep_lr)
        self.lr_mask = torch.from_numpy(lr_mask.reshape(-1))
        self.z_lr = torch.from_numpy(lr_z(section, normalizer).reshape(len(section.genes), -1).T.copy())
        self.f2 = float(f * f)


class IStarMLP(nn.Module):
    """Per-pixel MLP: features → softplus relative counts per gene."""

    def __init__(self, n_features: int, n_genes: int, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, n_genes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.net(x))


class IStar(Method):
    """Adapter of the iStar-like MLP (see the module docstring)."""

    name = "istar"
    description = "iStar-like: histology features → MLP per HR pixel, trained by aggregation consistency on spots"
    learned = True

    def _loss(self, net: nn.Module, slide: _Slide, scale: torch.Tensor, lr_mask: torch.Tensor) -> torch.Tensor:
        rel = net(slide.x)
        sums = torch.zeros(slide.n_blocks, rel.shape[1]).index_add_(0, slide.block, rel)
        z = torch.log1p(sums / slide.f2) / scale
        d = (z - slide.z_lr)[lr_mask]
        return (d**2).mean()

    def fit(self, ctx: Context) -> dict[str, Any]:
        self.ctx = ctx
        torch.manual_seed(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        feats = [features(s)[0][:, s.mask_hr] for s in ctx.train]
        allf = np.concatenate(feats, axis=1)
        self.mu, self.sd = allf.mean(1), np.maximum(allf.std(1), 1e-6)
        norm = ctx.normalizer
        self.scale = torch.as_tensor(norm.scale, dtype=torch.float32)
        if ctx.self_supervised:
            held = [rng.random(s.shape_lr) < 0.2 for s in ctx.train]
            fit = [_Slide(s, self.mu, self.sd, norm, ~h) for s, h in zip(ctx.train, held)]
            val = [_Slide(s, self.mu, self.sd, norm, h) for s, h in zip(ctx.train, held)]
            note = "20% of the test LR pixels held out"
        else:
            fit = [_Slide(s, self.mu, self.sd, norm) for s in ctx.train]
            val = [_Slide(s, self.mu, self.sd, norm) for s in ctx.validation or []]
            note = ctx.validation_note if val else "no validation: budget only"
        self.net = IStarMLP(allf.shape[0], len(ctx.genes))
        opt = torch.optim.Adam(self.net.parameters(), lr=3e-3)
        # the MLP is cheap: several of its steps per budget step, so that the budget means similar effort
        b = ctx.budget
        stop = EarlyStopping(replace(b, max_steps=4 * b.max_steps))

        def validate():
            with torch.no_grad():
                return float(np.mean([float(self._loss(self.net, s, self.scale, s.lr_mask)) for s in val]))

        while True:
            slide = fit[stop.steps % len(fit)]
            loss = self._loss(self.net, slide, self.scale, slide.lr_mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if stop.step(validate if val else None, self.net.state_dict):
                break
        if stop.best_state is not None:
            self.net.load_state_dict(stop.best_state)
        self.net.eval()
        return stop.info(validation=note)

    def predict(self, section: Section) -> Output:
        feats = standardize(features(section)[0], self.mu, self.sd)
        G, (H, W) = len(section.genes), feats.shape[-2:]
        with torch.no_grad():
            rel = self.net(torch.from_numpy(feats.reshape(feats.shape[0], -1).T.copy()))
            z = (torch.log1p(rel) / self.scale).T.reshape(G, H, W).numpy()
        return Output(mean=(z * section.mask_hr[None]).astype(np.float32), normalizer=self.ctx.normalizer)
