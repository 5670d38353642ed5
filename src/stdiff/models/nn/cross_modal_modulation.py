"""Cross-modal adaptive modulation with a multi-modal disentangling network (Diff-ST §2.2).

At every level of the conditioning pyramid, the spot-expression features ``s`` and the histology
features ``h`` (same grid) are fused by this module:

1. **Disentangling.** One shared ``common`` projection is applied to both modalities (after a
   per-modality normalisation) and each has its own ``distinct`` projection.
2. **Modulation, both directions.** From one modality's common and distinct parts the module predicts
   a per-location, per-channel scale and shift (FiLM) for the other modality's features:
   histology → expression and expression → histology. A learned gate (initialised at 1) scales the
   modulation; zeroing it leaves the streams unmodulated (the inference-time knock-out).
3. **Fusion.** The two modulated streams are concatenated and projected; the fused map is what the
   U-Net receives at that level, and the modulated streams continue down the pyramid.

The disentangling objective cannot be minimised by a collapse (a bounded ``pull + exp(−push)`` loss
is minimised by a constant common branch): an InfoNCE loss makes
the common parts of the two modalities at the *same location* more similar than at other locations,
an orthogonality term keeps common and distinct parts apart (squared cosine), and a variance floor
keeps every common channel's standard deviation across locations at least 1 (VICReg-style).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(c: int) -> nn.GroupNorm:
    for g in (8, 4, 2, 1):
        if c % g == 0:
            return nn.GroupNorm(g, c)
    return nn.GroupNorm(1, c)


def disentangling_loss(
    common_h: torch.Tensor,
    common_s: torch.Tensor,
    distinct_h: torch.Tensor,
    distinct_s: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    max_locations: int = 256,
    temperature: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """InfoNCE between the modalities' common parts + orthogonality + a variance floor.

    Parameters
    ----------
    common_h, common_s, distinct_h, distinct_s
        ``(B, C, H, W)`` parts of the histology (``h``) and expression (``s``) features.
    mask
        ``(B, 1, H, W)`` tissue; only tissue locations are used (all when ``None``).
    max_locations
        Locations sampled for the contrastive term.
    temperature
        InfoNCE temperature.
    generator
        For the location sample (a fixed sample when ``None``).
    """
    c = common_h.shape[1]

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 2, 3, 1).reshape(-1, c)

    ch, cs, dh, ds = flat(common_h), flat(common_s), flat(distinct_h), flat(distinct_s)
    if mask is not None:
        keep = mask.reshape(-1) > 0
        if int(keep.sum()) >= 2:
            ch, cs, dh, ds = ch[keep], cs[keep], dh[keep], ds[keep]
    n = ch.shape[0]
    if n < 2:
        return common_h.new_zeros(())
    if n > max_locations:
        if generator is None:
            idx = torch.linspace(0, n - 1, max_locations, device=ch.device).long()
        else:
            idx = torch.randperm(n, generator=generator)[:max_locations].to(ch.device)
        ch, cs, dh, ds = ch[idx], cs[idx], dh[idx], ds[idx]
    zh, zs = F.normalize(ch, dim=1), F.normalize(cs, dim=1)
    logits = zh @ zs.T / temperature
    target = torch.arange(zh.shape[0], device=zh.device)
    nce = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    orth = (F.cosine_similarity(ch, dh, dim=1) ** 2).mean() + (F.cosine_similarity(cs, ds, dim=1) ** 2).mean()
    floor = F.relu(1.0 - ch.std(0)).mean() + F.relu(1.0 - cs.std(0)).mean()
    return nce + orth + floor


class CrossModalModulation(nn.Module):
    """Disentangle, modulate each modality by the other, and fuse (one pyramid level).

    Parameters
    ----------
    channels
        Feature channels of both modalities.
    kernel_size
        Neighbourhood of the convolutions predicting the modulation (the histology region next to
        each location).
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.norm_h, self.norm_s = _norm(channels), _norm(channels)
        self.common = nn.Conv2d(channels, channels, 1)
        self.distinct_h = nn.Conv2d(channels, channels, 1)
        self.distinct_s = nn.Conv2d(channels, channels, 1)
        self.film_h_to_s = nn.Conv2d(2 * channels, 2 * channels, kernel_size, padding=pad)
        self.film_s_to_h = nn.Conv2d(2 * channels, 2 * channels, kernel_size, padding=pad)
        for conv in (self.film_h_to_s, self.film_s_to_h):
            nn.init.normal_(conv.weight, std=0.02)
            nn.init.zeros_(conv.bias)
        self.gate = nn.Parameter(torch.ones(()))
        self.fuse = nn.Conv2d(2 * channels, channels, 1)
        self.enabled = True  # False: gates zeroed (inference-time knock-out)

    def forward(
        self, h: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(fused, modulated h, modulated s, disentangling loss)``."""
        nh, ns = self.norm_h(h), self.norm_s(s)
        ch, cs = self.common(nh), self.common(ns)
        dh, ds = self.distinct_h(nh), self.distinct_s(ns)
        loss = disentangling_loss(ch, cs, dh, ds, mask) if self.training else h.new_zeros(())
        gamma_s, beta_s = self.film_h_to_s(torch.cat([ch, dh], 1)).chunk(2, dim=1)
        gamma_h, beta_h = self.film_s_to_h(torch.cat([cs, ds], 1)).chunk(2, dim=1)
        g = self.gate if self.enabled else torch.zeros_like(self.gate)
        s_out = s * (1 + g * torch.tanh(gamma_s)) + g * beta_s  # histology → expression
        h_out = h * (1 + g * torch.tanh(gamma_h)) + g * beta_h  # expression → histology
        return self.fuse(torch.cat([s_out, h_out], 1)), h_out, s_out, loss


class PlainFusion(nn.Module):
    """The ablation of :class:`CrossModalModulation`: concatenate the two streams and project."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.fuse = nn.Conv2d(2 * channels, channels, 1)
        self.enabled = True

    def forward(
        self, h: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(fused, h, s, 0)``."""
        return self.fuse(torch.cat([s, h], 1)), h, s, h.new_zeros(())
