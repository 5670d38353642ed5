"""The network of aggregation consistency: a per-HR-pixel log-abundance of every gene from histology.

Used by :class:`~stdiff.models.AggregationConsistency`, which trains it from a slide's own
measurements (the sum of the abundance under each measurement must match its counts).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AbundanceNet"]


class AbundanceNet(nn.Module):
    """Per-pixel MLP (1×1 convs; ``kernel_size=3`` adds 3×3 context) → log-abundance per gene."""

    def __init__(self, n_in: int, n_genes: int, hidden: int, layers: int, kernel_size: int, image: tuple | None):
        super().__init__()
        self.patchify = None
        if image is not None:  # aligned patchify of the raw image: one HR pixel per output, no shift
            channels, p, width = image
            self.patchify = nn.Sequential(nn.Conv2d(channels, width, kernel_size=p, stride=p), nn.GELU())
            n_in += width
        mods: list[nn.Module] = []
        for k in range(layers):
            ks = kernel_size if k == 0 else 1
            mods += [nn.Conv2d(n_in if k == 0 else hidden, hidden, ks, padding=ks // 2), nn.GELU()]
        self.body = nn.Sequential(*mods)
        self.head = nn.Conv2d(hidden if layers else n_in, n_genes, 1)
        nn.init.zeros_(self.head.weight)  # start from an even split: the mask-aware nearest map
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None = None) -> torch.Tensor:
        """Log-abundance ``(B, G, H, W)`` from features ``x`` ``(B, F, H, W)`` (and the raw image)."""
        if self.patchify is not None and img is not None:
            x = torch.cat([x, self.patchify(img)], dim=1)
        return self.head(self.body(x))
