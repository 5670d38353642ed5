"""Dynamic cross-attention over entropy-ranked cell-level histology patches (Diff-ST §2.3).

The histology tile is cut into square patches of a physical size (``config.patch_um``, 20–40 µm:
a few cells), each embedded by an aligned linear patch embedding (``Conv2d(kernel = stride = patch
px)``) and a small MLP ending in a LayerNorm, so every token has unit scale. Patches are ranked by
the Shannon entropy of their grey levels: complex, cell-rich patches rank first, and a curriculum
admits a growing fraction of them during training (all at inference). Queries come from the fused
conditioning features at a fine level of the pyramid (HR/2 by default), each attending mostly to the
patches near it through a learned locality bias ``−d² / (2ℓ²)`` (``d``: distance between the query
and the patch centre in HR pixels; one length ``ℓ`` per head). The attended result is added back
through a learned gate.

Deviation from the paper: queries sit on a feature map rather than being one tissue-level vector per
tile, and attention is local; with patches far smaller than a tile, global uniform attention carries
no position information (see ``docs/model.md``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def patch_entropy(image: torch.Tensor, patch_px: int, *, bins: int = 32) -> torch.Tensor:
    """Shannon entropy (bits) of the grey levels of each ``patch_px`` patch of ``image`` ``(B, C, P, Q)``.

    ``image`` is in [0, 1]; ``P`` and ``Q`` must be multiples of ``patch_px``. Returns
    ``(B, N)`` in row-major patch order (``N = P·Q / patch_px²``).
    """
    b, _, p, q = image.shape
    k = patch_px
    grey = image.mean(dim=1)
    gh, gw = p // k, q // k
    patches = grey.view(b, gh, k, gw, k).permute(0, 1, 3, 2, 4).reshape(b, gh * gw, k * k)
    idx = (patches.clamp(0, 1) * (bins - 1)).round().long()
    hist = torch.zeros(b, gh * gw, bins, device=image.device, dtype=image.dtype)
    hist.scatter_add_(2, idx, torch.ones_like(patches))
    pr = hist / hist.sum(dim=2, keepdim=True)
    return -(pr * torch.log2(pr.clamp(min=1e-12))).sum(dim=2)


def admitted_mask(entropy: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean ``(B, N)``: the ``ceil(fraction · N)`` highest-entropy patches of each tile."""
    n = entropy.shape[1]
    k = max(1, min(n, math.ceil(fraction * n)))
    order = entropy.argsort(dim=1, descending=True)
    mask = torch.zeros_like(entropy, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask


class PatchEncoder(nn.Module):
    """Aligned linear patch embedding + MLP + LayerNorm: ``(B, C, P, Q)`` → ``(B, N, dim)`` unit-scale tokens."""

    def __init__(self, in_channels: int, patch_px: int, patch_dim: int, dim: int) -> None:
        super().__init__()
        self.patch_px = int(patch_px)
        self.embed = nn.Conv2d(in_channels, patch_dim, self.patch_px, stride=self.patch_px)
        self.mlp = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Tokens of the patches in row-major order."""
        return self.norm(self.mlp(self.embed(image - 0.5).flatten(2).transpose(1, 2)))


class DynamicCrossAttention(nn.Module):
    """Feature-map queries attend locally to admitted cell-level patch tokens.

    Parameters
    ----------
    channels
        Channels of the query feature map.
    image_channels
        Channels of the histology image.
    patch_dim
        Width of the linear patch embedding.
    patch_px
        Patch side in histology pixels.
    he_per_query
        Histology pixels per query pixel (``he_scale · 2**level``).
    num_heads
        Attention heads.
    locality
        Initial locality length ``ℓ`` in query pixels.
    """

    def __init__(
        self,
        channels: int,
        image_channels: int,
        patch_dim: int,
        patch_px: int,
        he_per_query: int,
        num_heads: int = 4,
        locality: float = 1.0,
    ) -> None:
        super().__init__()
        self.patch_px = int(patch_px)
        self.he_per_query = int(he_per_query)
        self.heads = num_heads if channels % num_heads == 0 else 1
        self.encoder = PatchEncoder(image_channels, self.patch_px, patch_dim, channels)
        self.norm_q = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)
        # one locality length per head, from ``locality`` to 4·``locality`` query pixels
        init = torch.linspace(math.log(locality), math.log(4 * locality), self.heads)
        self.log_length = nn.Parameter(init)
        self.out = nn.Linear(channels, channels)
        self.gate = nn.Parameter(torch.tensor(0.5))
        self.enabled = True

    def prepare(self, image: torch.Tensor, fraction: float = 1.0) -> dict[str, torch.Tensor]:
        """Tokens, admitted-patch mask and patch centres (in query pixels) of histology tiles ``(B, C, P, Q)``."""
        k = self.patch_px
        b, _, p, q = image.shape
        gh, gw = p // k, q // k
        image = image[..., : gh * k, : gw * k]
        tokens = self.encoder(image)
        keep = admitted_mask(patch_entropy(image, k), fraction)
        yy, xx = torch.meshgrid(
            torch.arange(gh, device=image.device), torch.arange(gw, device=image.device), indexing="ij"
        )
        centres = torch.stack([(yy.reshape(-1) + 0.5), (xx.reshape(-1) + 0.5)], 1).float() * (k / self.he_per_query)
        return {"tokens": tokens, "keep": keep, "centres": centres}

    def forward(self, x: torch.Tensor, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return ``x`` ``(B, C, h, w)`` plus the gated, attended patch information."""
        if not self.enabled:
            return x
        b, c, h, w = x.shape
        tokens, keep, centres = prepared["tokens"], prepared["keep"], prepared["centres"]
        if tokens.shape[0] != b:  # conditioning shared across repeated samples
            r = b // tokens.shape[0]
            tokens, keep = tokens.repeat_interleave(r, 0), keep.repeat_interleave(r, 0)
        nh, dh = self.heads, c // self.heads
        q = self.q(self.norm_q(x.flatten(2).transpose(1, 2))).view(b, h * w, nh, dh).transpose(1, 2)
        k, v = self.kv(tokens).view(b, -1, 2, nh, dh).permute(2, 0, 3, 1, 4)
        yy, xx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
        qc = torch.stack([yy.reshape(-1) + 0.5, xx.reshape(-1) + 0.5], 1).float()
        d2 = torch.cdist(qc, centres.to(x.device)) ** 2  # (h·w, N)
        length = torch.exp(self.log_length).view(1, nh, 1, 1)
        bias = -d2[None, None] / (2 * length**2)
        bias = bias.masked_fill(~keep[:, None, None, :], float("-inf"))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = self.out(attn.transpose(1, 2).reshape(b, h * w, c)).transpose(1, 2).view(b, c, h, w)
        return x + self.gate * out
