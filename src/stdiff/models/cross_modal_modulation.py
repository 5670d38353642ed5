"""Cross-modal adaptive modulation with a multi-modal disentangling network (Diff-ST §2.2).

Histology features ``h`` and LR-ST features ``s`` (same spatial grid) are each split by the *same*
``common`` and ``distinct`` convolutions into a shared and a modality-specific part. A
disentangling loss pulls the shared parts of the two modalities together and pushes their specific
parts apart. Then each modality is modulated by the other: from one modality's features the module
predicts, at every location, a normalised ``k × k`` filter (one per channel group) that re-weights
the other modality's local neighbourhood — histology → ST and ST → histology.

Deviation from the paper/successor code: the successor divides the shared-part MSE by the
specific-part MSE, which is unbounded when the specific parts collapse; here the loss is
``mse(common_h, common_s) + exp(-mse(distinct_h, distinct_s))``, which has the same minimisers but
is bounded. The blend of original and modulated features is a learned gate initialised at 0.1
(the successor code's fixed 0.9 / 0.1 blend).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DisentanglingNetwork(nn.Module):
    """Shared (``common``) and modality-specific (``distinct``) projections applied to both modalities."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.common = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(1, channels), nn.SiLU())
        self.distinct = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(1, channels), nn.SiLU())

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return ``(common_h, distinct_h, common_s, distinct_s)``."""
        return self.common(h), self.distinct(h), self.common(s), self.distinct(s)

    @staticmethod
    def loss(common_h, distinct_h, common_s, distinct_s, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pull shared parts together, push specific parts apart (bounded form)."""
        if mask is None:
            pull = F.mse_loss(common_h, common_s)
            push = F.mse_loss(distinct_h, distinct_s)
        else:
            m = mask.to(common_h.dtype)
            denom = m.sum().clamp(min=1.0) * common_h.shape[1]
            pull = (((common_h - common_s) ** 2) * m).sum() / denom
            push = (((distinct_h - distinct_s) ** 2) * m).sum() / denom
        return pull + torch.exp(-push)


class AdaptiveModulation(nn.Module):
    """Per-location ``k × k`` filters predicted from ``source`` modulate ``target``'s neighbourhood."""

    def __init__(self, channels: int, kernel_size: int = 3, groups: int = 4) -> None:
        super().__init__()
        if channels % groups:
            groups = 1
        self.k, self.groups = kernel_size, groups
        self.filter_net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, groups * kernel_size * kernel_size, 1),
        )
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Modulated ``target`` (same shape)."""
        b, c, h, w = target.shape
        k, g = self.k, self.groups
        filters = self.filter_net(source).view(b, g, k * k, h, w).softmax(dim=2)
        patches = F.unfold(target, k, padding=k // 2).view(b, g, c // g, k * k, h, w)
        out = (patches * filters.unsqueeze(2)).sum(dim=3).view(b, c, h, w)
        return self.proj(out)


class CrossModalModulation(nn.Module):
    """Disentangle histology and ST features, then modulate each by the other (both directions).

    Parameters
    ----------
    channels
        Feature channels of both modalities.
    kernel_size
        Neighbourhood of the per-location modulation filters.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.disentangle = DisentanglingNetwork(channels)
        self.h_to_s = AdaptiveModulation(channels, kernel_size)
        self.s_to_h = AdaptiveModulation(channels, kernel_size)
        self.gate_s = nn.Parameter(torch.tensor(0.1))
        self.gate_h = nn.Parameter(torch.tensor(0.1))
        self.fuse_h = nn.Conv2d(2 * channels, channels, 1)
        self.fuse_s = nn.Conv2d(2 * channels, channels, 1)

    def forward(
        self, h: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return modulated ``(h, s)`` and the disentangling loss."""
        ch, dh, cs, ds = self.disentangle(h, s)
        loss = self.disentangle.loss(ch, dh, cs, ds, mask)
        h_feat = self.fuse_h(torch.cat([ch, dh], 1))
        s_feat = self.fuse_s(torch.cat([cs, ds], 1))
        s_out = s + self.gate_s * self.h_to_s(h_feat, s_feat)  # histology → ST
        h_out = h + self.gate_h * self.s_to_h(s_feat, h_feat)  # ST → histology
        return h_out, s_out, loss
