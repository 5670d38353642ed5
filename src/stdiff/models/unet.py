"""The conditional denoising U-Net of Diff-ST.

The network sees the noisy HR residual ``x_t`` (G channels), the timestep, the LR map upsampled to
HR size (with the tissue mask) and the histology tile. LR and histology each have their own encoder
pyramid whose features are added to the noisy-HR features at every scale; cross-modal modulation
acts on the two conditioning pyramids at one scale, dynamic cross-attention at the bottleneck, and
the gene-graph head turns the last feature map into one output per gene.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import DiffSTConfig
from .cross_modal_modulation import CrossModalModulation
from .dynamic_cross_attention import DynamicCrossAttention
from .gene_graph import GeneGraphHead


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps ``(B,)`` → ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _groups(c: int) -> int:
    for g in (8, 4, 2, 1):
        if c % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    """Residual block with timestep scale/shift (FiLM)."""

    def __init__(self, cin: int, cout: int, temb: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.temb(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads if channels % heads == 0 else 1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply attention with a residual connection."""
        b, c, h, w = x.shape
        q = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attn(q, q, q, need_weights=False)
        return x + out.transpose(1, 2).view(b, c, h, w)


class HistologyStem(nn.Module):
    """Strided convolutions from the histology tile (``he_scale`` px per HR px) to the HR grid."""

    def __init__(self, in_channels: int, out_channels: int, he_scale: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        n_down = int(math.floor(math.log2(max(he_scale, 1))))
        width = max(8, out_channels // 2)
        for _ in range(n_down):
            layers += [
                nn.Conv2d(c, width, 3, stride=2, padding=1),
                nn.GroupNorm(_groups(width), width),
                nn.SiLU(),
            ]
            c = width
        layers += [nn.Conv2d(c, out_channels, 3, padding=1), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(B, C, P, P)`` → ``(B, out, *size)``."""
        h = self.net(image)
        if h.shape[-2:] != size:
            h = F.interpolate(h, size=size, mode="area" if h.shape[-1] > size[-1] else "bilinear")
        return h


class DiffSTUNet(nn.Module):
    """Conditional U-Net denoiser with the three Diff-ST components (each switchable by the config).

    Parameters
    ----------
    config
        Model sizes and switches.
    n_genes
        Output channels (genes).
    image_channels
        Channels of the histology image (3 for H&E).
    adjacency
        Gene co-expression adjacency (used when ``config.use_gene_graph``).
    """

    def __init__(
        self, config: DiffSTConfig, n_genes: int, image_channels: int = 3, adjacency: np.ndarray | None = None
    ) -> None:
        super().__init__()
        self.config = config
        c0 = config.base_channels
        chans = [c0 * m for m in config.channel_mults]
        self.levels = len(chans)
        temb = 4 * c0
        self.temb = nn.Sequential(nn.Linear(c0, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.x_in = nn.Conv2d(n_genes, chans[0], 3, padding=1)
        self.lr_in = nn.Conv2d(n_genes + 1, chans[0], 3, padding=1)
        self.he_in = HistologyStem(image_channels, chans[0], config.he_scale)
        # conditioning pyramids (own encoders for LR and histology)
        self.lr_down = nn.ModuleList()
        self.he_down = nn.ModuleList()
        self.lr_proj = nn.ModuleList()
        self.he_proj = nn.ModuleList()
        for i, c in enumerate(chans):
            prev = chans[max(i - 1, 0)]
            stride = 1 if i == 0 else 2
            self.lr_down.append(nn.Sequential(nn.Conv2d(prev, c, 3, stride=stride, padding=1), nn.SiLU()))
            self.he_down.append(nn.Sequential(nn.Conv2d(prev, c, 3, stride=stride, padding=1), nn.SiLU()))
            self.lr_proj.append(nn.Conv2d(c, c, 1))
            self.he_proj.append(nn.Conv2d(c, c, 1))
        self.modulation = (
            CrossModalModulation(chans[config.modulation_level], config.modulation_kernel)
            if config.use_modulation
            else None
        )
        # encoder
        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, c in enumerate(chans):
            prev = chans[max(i - 1, 0)]
            blocks = [ResBlock(prev if j == 0 else c, c, temb) for j in range(config.num_res_blocks)]
            self.down_blocks.append(nn.ModuleList(blocks))
            self.down_attn.append(SelfAttention(c, config.num_heads) if i in config.attention_levels else nn.Identity())
            self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < self.levels - 1 else nn.Identity())
        cb = chans[-1]
        self.mid1 = ResBlock(cb, cb, temb)
        self.mid_attn = SelfAttention(cb, config.num_heads)
        self.cross_attention = (
            DynamicCrossAttention(cb, image_channels, config.patch_dim, config.patch_grid, config.num_heads)
            if config.use_cross_attention
            else None
        )
        self.mid2 = ResBlock(cb, cb, temb)
        # decoder
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        for i in reversed(range(self.levels)):
            c = chans[i]
            nxt = chans[min(i + 1, self.levels - 1)]
            self.up_blocks.append(nn.ModuleList([ResBlock(nxt + c, c, temb)]))
            self.up_attn.append(SelfAttention(c, config.num_heads) if i in config.attention_levels else nn.Identity())
        self.out_norm = nn.GroupNorm(_groups(chans[0]), chans[0])
        self.head = GeneGraphHead(
            chans[0],
            n_genes,
            config.gene_dim,
            config.graph_layers,
            adjacency if config.use_gene_graph else None,
        )

    def _pad(self, *tensors: torch.Tensor, image: torch.Tensor | None = None):
        H, W = tensors[0].shape[-2:]
        mult = 2 ** (self.levels - 1)
        ph, pw = (-H) % mult, (-W) % mult
        if not (ph or pw):
            return (*tensors, image)
        out = [F.pad(t, (0, pw, 0, ph), mode="replicate") for t in tensors]
        if image is not None:
            s = self.config.he_scale
            image = F.pad(image, (0, pw * s, 0, ph * s), mode="replicate")
        return (*out, image)

    def encode(
        self, lr_up: torch.Tensor, mask: torch.Tensor, image: torch.Tensor, fraction: float = 1.0
    ) -> dict[str, object]:
        """Conditioning features (LR and histology pyramids, modulation, patch keys/values).

        They do not depend on the noisy sample or the timestep, so a sampler computes them once per
        tile and reuses them at every step.
        """
        H, W = lr_up.shape[-2:]
        lr_up, mask, image = self._pad(lr_up, mask, image=image)
        size = lr_up.shape[-2:]
        lr_f = self.lr_in(torch.cat([lr_up, mask], 1))
        he_f = self.he_in(image - 0.5, size)
        dloss = lr_up.new_zeros(())
        cond = []
        for i in range(self.levels):
            lr_f = self.lr_down[i](lr_f)
            he_f = self.he_down[i](he_f)
            if self.modulation is not None and i == self.config.modulation_level:
                m = F.adaptive_max_pool2d(mask, he_f.shape[-2:])
                he_f, lr_f, dloss = self.modulation(he_f, lr_f, m)
            cond.append(self.lr_proj[i](lr_f) + self.he_proj[i](he_f))
        patches = self.cross_attention.prepare(image, fraction) if self.cross_attention is not None else None
        return {"levels": cond, "patches": patches, "dloss": dloss, "size": (H, W)}

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, object]) -> torch.Tensor:
        """Predict the diffusion target from the noisy sample, the timestep and :meth:`encode`'s output."""
        H, W = x.shape[-2:]
        (x, _) = self._pad(x)
        temb = self.temb(timestep_embedding(t, self.config.base_channels))
        h = self.x_in(x)
        levels = cond["levels"]
        skips = []
        for i in range(self.levels):
            c = levels[i]
            if c.shape[0] != h.shape[0]:  # conditioning shared across repeated samples
                c = c.repeat_interleave(h.shape[0] // c.shape[0], dim=0)
            for j, block in enumerate(self.down_blocks[i]):
                h = block(h, temb)
                if j == 0:
                    h = h + c
            h = self.down_attn[i](h)
            skips.append(h)
            h = self.downsample[i](h)
        h = self.mid1(h, temb)
        h = self.mid_attn(h)
        if self.cross_attention is not None:
            kv, keep = cond["patches"]
            if kv.shape[0] != h.shape[0]:
                r = h.shape[0] // kv.shape[0]
                kv, keep = kv.repeat_interleave(r, dim=0), keep.repeat_interleave(r, dim=0)
            h = self.cross_attention(h, (kv, keep))
        h = self.mid2(h, temb)
        for k, i in enumerate(reversed(range(self.levels))):
            skip = skips[i]
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = torch.cat([h, skip], 1)
            for block in self.up_blocks[k]:
                h = block(h, temb)
            h = self.up_attn[k](h)
        out = self.head(F.silu(self.out_norm(h)))
        return out[..., :H, :W]

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        lr_up: torch.Tensor,
        mask: torch.Tensor,
        image: torch.Tensor,
        fraction: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict the diffusion target; returns ``(output (B, G, H, W), disentangling loss)``.

        Parameters
        ----------
        x
            Noisy sample ``(B, G, H, W)``.
        t
            Timesteps ``(B,)``.
        lr_up
            Normalised LR map upsampled to ``(B, G, H, W)``.
        mask
            Tissue mask ``(B, 1, H, W)``.
        image
            Histology ``(B, C, H·he_scale, W·he_scale)`` in [0, 1].
        fraction
            Fraction of cell-level patches admitted (curriculum; 1 at inference).
        """
        cond = self.encode(lr_up, mask, image, fraction)
        return self.denoise(x, t, cond), cond["dloss"]
