"""Dynamic cross-attention over entropy-ranked cell-level histology patches (Diff-ST §2.3).

The histology tile is cut into ``n × n`` cell-level patches. Each patch is ranked by the Shannon
entropy of its grey levels (on a 16 × 16 resized copy, as in the paper): complex, cell-rich patches
rank first. A curriculum admits a growing fraction of the most complex patches during training
(all at inference). Tissue-level features of the whole tile (queries) attend to the admitted
patches' features (keys/values); the result is added back to the tissue-level feature map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patch_entropy(image: torch.Tensor, grid: int, *, size: int = 16, bins: int = 32) -> torch.Tensor:
    """Shannon entropy (bits) of each of the ``grid²`` patches of ``image`` ``(B, C, P, P)`` in [0, 1].

    Each patch is resized to ``size × size`` and converted to grey levels before the histogram.
    Returns ``(B, grid²)`` in row-major patch order.
    """
    b = image.shape[0]
    grey = image.mean(dim=1, keepdim=True)
    small = F.interpolate(grey, size=(grid * size, grid * size), mode="area")
    patches = small.view(b, grid, size, grid, size).permute(0, 1, 3, 2, 4).reshape(b, grid * grid, size * size)
    idx = (patches.clamp(0, 1) * (bins - 1)).round().long()
    hist = torch.zeros(b, grid * grid, bins, device=image.device, dtype=image.dtype)
    hist.scatter_add_(2, idx, torch.ones_like(patches))
    p = hist / hist.sum(dim=2, keepdim=True)
    return -(p * torch.log2(p.clamp(min=1e-12))).sum(dim=2)


def admitted_mask(entropy: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean ``(B, N)``: the ``ceil(fraction · N)`` highest-entropy patches of each tile."""
    n = entropy.shape[1]
    k = max(1, min(n, int(torch.ceil(torch.tensor(fraction * n)).item())))
    order = entropy.argsort(dim=1, descending=True)
    mask = torch.zeros_like(entropy, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask


class PatchEncoder(nn.Module):
    """A small CNN embedding each cell-level patch into a vector, plus a learned position embedding."""

    def __init__(self, in_channels: int, dim: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, dim // 2, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.pos = nn.Parameter(torch.zeros(1, grid * grid, dim))
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, P, P)`` → ``(B, grid², dim)``."""
        b, c, p, _ = image.shape
        g = self.grid
        side = max(8, p // g)
        resized = F.interpolate(image, size=(g * side, g * side), mode="area") if p != g * side else image
        patches = resized.view(b, c, g, side, g, side).permute(0, 2, 4, 1, 3, 5).reshape(b * g * g, c, side, side)
        feats = self.net(patches).view(b, g * g, -1)
        return feats + self.pos


class DynamicCrossAttention(nn.Module):
    """Tissue-level features attend to admitted cell-level patch features.

    Parameters
    ----------
    channels
        Channels of the tissue-level feature map (queries).
    image_channels
        Channels of the histology image.
    patch_dim
        Patch feature size.
    grid
        Patches per side.
    num_heads
        Attention heads.
    """

    def __init__(self, channels: int, image_channels: int, patch_dim: int, grid: int, num_heads: int = 4) -> None:
        super().__init__()
        self.grid = grid
        self.encoder = PatchEncoder(image_channels, patch_dim, grid)
        self.norm_q = nn.GroupNorm(1, channels)
        self.kv = nn.Linear(patch_dim, channels)
        heads = num_heads if channels % num_heads == 0 else 1
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def prepare(self, image: torch.Tensor, fraction: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of the patches and the admitted-patch mask (independent of the denoising step)."""
        entropy = patch_entropy(image, self.grid)
        keep = admitted_mask(entropy, fraction)
        return self.kv(self.encoder(image)), keep

    def forward(self, tissue: torch.Tensor, prepared: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Return ``tissue`` plus the attended patch information (same shape)."""
        b, c, h, w = tissue.shape
        kv, keep = prepared
        q = self.norm_q(tissue).flatten(2).transpose(1, 2)
        attended, _ = self.attn(q, kv, kv, key_padding_mask=~keep, need_weights=False)
        return tissue + self.out(attended).transpose(1, 2).view(b, c, h, w)
