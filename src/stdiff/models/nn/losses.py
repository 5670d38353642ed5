"""The losses stdiff trains with, as objects: each is called on a batch and can score validation batches.

- :class:`MeanLoss` (stage A): masked MSE of the regressed, scaled residual ``(z_HR − base) / scale``
  plus the disentangling loss.
- :class:`ResidualEDMLoss` (stage B): the EDM loss ``λ(σ)·|D(r + σε; σ) − r|²`` of the per-gene-scaled
  residual ``r = (z_HR − mean) / σ_g``, with the denoiser ``D`` preconditioned in one place
  (:func:`denoise`).
- :func:`poisson_deviance`: aggregation consistency's loss of measured counts.

Losses are weighted by the truth mask only (where the truth is measured); inputs never see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import edm

__all__ = ["MeanLoss", "ResidualEDMLoss", "denoise", "masked_mse", "poisson_deviance", "residual_target"]

Batch = dict[str, torch.Tensor]


def masked_mse(
    out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Squared error (times ``scale`` per tile, when given) weighted by ``weight`` ``(B, 1, H, W)``.

    Averaged per gene and weighted pixel: ``Σ (out − target)²·scale·weight / (Σ weight · G)``.
    """
    err = (out - target) ** 2
    if scale is not None:
        err = err * scale
    return (err * weight).sum() / (weight.sum().clamp(min=1.0) * out.shape[1])


def poisson_deviance(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean Poisson deviance ``2·(y·log(y/μ) − (y − μ))`` per gene, scaled by ``weight`` (e.g. 1/mean).

    ``pred``, ``target``: ``(G, n)``; ``weight``: ``(G,)``. It is 0 exactly when ``pred == target``.
    """
    mu = pred.clamp_min(1e-8)
    ylogy = torch.where(target > 0, target * torch.log(target.clamp_min(1e-8) / mu), torch.zeros_like(target))
    dev = 2.0 * (ylogy - (target - mu))
    return (dev * weight[:, None]).mean()


@dataclass
class MeanLoss:
    """Stage A: masked MSE of ``net``'s output against ``(z_HR − base) / residual_scale``, plus disentangling.

    Parameters
    ----------
    residual_scale
        Scale of the regressed residual.
    disentangle_weight
        Weight of the disentangling loss of cross-modal modulation.
    admitted_fraction
        ``progress ∈ [0, 1] -> fraction`` of the entropy-ranked patches cross-attention admits.
    """

    residual_scale: float
    disentangle_weight: float
    admitted_fraction: Any

    def __call__(self, net: torch.nn.Module, b: Batch, progress: float) -> torch.Tensor:
        """The loss of ``net`` on batch ``b`` at training ``progress`` ∈ [0, 1]."""
        out, dloss = net(b["cond"], b["mask"], b["he"], fraction=self.admitted_fraction(progress))
        target = (b["z_hr"] - b["base"]) / self.residual_scale
        return masked_mse(out, target, b["mask_truth"]) + self.disentangle_weight * dloss

    @torch.no_grad()
    def validate(self, net: torch.nn.Module, batches: list[Batch]) -> float:
        """Validation MSE (no augmentation, all patches admitted), weighted by each batch's truth pixels."""
        tot, n = 0.0, 0.0
        for b in batches:
            out, _ = net(b["cond"], b["mask"], b["he"])
            target = (b["z_hr"] - b["base"]) / self.residual_scale
            w = float(b["mask_truth"].sum())
            tot += float(masked_mse(out, target, b["mask_truth"])) * w
            n += w
        return tot / max(n, 1.0)


def residual_inputs(b: Batch) -> torch.Tensor:
    """Stage B's conditioning: stage A's maps and its mean."""
    return torch.cat([b["cond"], b["mu"]], 1)


def denoise(net: torch.nn.Module, enc: dict, x: torch.Tensor, sigma: torch.Tensor, sigma_data: float = 1.0):
    """EDM-preconditioned denoiser ``D(x; sigma)`` for residual tiles ``x`` ``(B, G, T, T)``."""
    c_skip, c_out, c_in, c_noise = edm.precondition(sigma.view(-1, 1, 1, 1), sigma_data)
    f = net.decode(enc, c_in * x, edm.noise_embedding_input(c_noise.view(-1)))
    return c_skip * x + c_out * f


def residual_target(b: Batch, gene_sigma: torch.Tensor) -> torch.Tensor:
    """``r = (z_HR − mean) / σ_g``, 0 where the truth is not measured."""
    return (b["z_hr"] - b["mu"]) / gene_sigma.view(1, -1, 1, 1) * b["mask_truth"]


@dataclass
class ResidualEDMLoss:
    """Stage B: the EDM loss of the per-gene-scaled residual around the stage-A mean, plus disentangling.

    Parameters
    ----------
    gene_sigma
        ``(G,)`` scale of the residual per gene.
    p_mean, p_std
        Log-normal distribution of the training noise levels.
    disentangle_weight
        Weight of the disentangling loss.
    generator
        Seeded generator of the noise levels and the noise.
    """

    gene_sigma: torch.Tensor
    p_mean: float
    p_std: float
    disentangle_weight: float
    generator: torch.Generator

    #: Noise levels of the (deterministic) validation loss.
    VAL_SIGMAS = (0.1, 0.3, 0.7, 1.5, 4.0)

    def __call__(self, net: torch.nn.Module, b: Batch, progress: float) -> torch.Tensor:
        """The loss of ``net`` on batch ``b`` (one noise level per tile, drawn from :attr:`generator`)."""
        r = residual_target(b, self.gene_sigma)
        gen = self.generator
        sigma = edm.sample_training_sigmas(r.shape[0], p_mean=self.p_mean, p_std=self.p_std, generator=gen)
        sigma = sigma.to(r.device)
        noise = torch.randn(r.shape, generator=gen).to(r.device)
        enc = net.encode(residual_inputs(b), b["mask"], b["he"], 1.0)
        d = denoise(net, enc, r + sigma.view(-1, 1, 1, 1) * noise, sigma)
        w = edm.loss_weight(sigma).view(-1, 1, 1, 1)
        return masked_mse(d, r, b["mask_truth"], scale=w) + self.disentangle_weight * enc["dloss"]

    @torch.no_grad()
    def validate(self, net: torch.nn.Module, batches: list[Batch]) -> float:
        """The EDM loss at fixed noise levels and fixed noise (deterministic)."""
        gen = torch.Generator().manual_seed(1234)
        tot, n = 0.0, 0
        for b in batches:
            r = residual_target(b, self.gene_sigma)
            enc = net.encode(residual_inputs(b), b["mask"], b["he"], 1.0)
            for s in self.VAL_SIGMAS:
                noise = torch.randn(r.shape, generator=gen).to(r.device)
                sigma = torch.full((r.shape[0],), s, device=r.device)
                d = denoise(net, enc, r + s * noise, sigma)
                w = float(edm.loss_weight(torch.tensor(s)))
                tot += float(masked_mse(d, r, b["mask_truth"]) * w)
                n += 1
        return tot / max(n, 1)
