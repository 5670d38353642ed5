"""The conditional U-Net of Diff-ST, used as the stage-A regression network and the stage-B denoiser.

The conditioning maps (normalised LR per tissue pixel, its bicubic upsampling, the input mask,
optional histology feature channels and, for stage B, the stage-A mean) and the histology tile each
have an encoder pyramid. At every level the two streams are fused by cross-modal modulation
(:mod:`~stdiff.models.nn.cross_modal_modulation`); dynamic cross-attention
(:mod:`~stdiff.models.nn.dynamic_cross_attention`) lets one level of the fused map attend to
cell-level patches. The fused maps are added to the U-Net's features at every scale; the gene-graph
head (:mod:`~stdiff.models.nn.gene_graph`) turns the last feature map into one output per gene. The
conditioning does not depend on the noisy sample, so a sampler encodes each tile once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DiffSTConfig, NetworkConfig
from .cross_modal_modulation import CrossModalModulation, PlainFusion
from .dynamic_cross_attention import DynamicCrossAttention
from .gene_graph import GeneGraphHead

if TYPE_CHECKING:  # pragma: no cover
    from torch_geometric.data import Data


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


def _factors(n: int) -> list[int]:
    """Split ``n`` into factors ≤ 4 where possible (largest first), e.g. 32 → [4, 4, 2], 5 → [5]."""
    out = []
    for p in (4, 3, 2):
        while n % p == 0 and n > 1:
            out.append(p)
            n //= p
    if n > 1:
        out.append(n)
    return sorted(out, reverse=True)


class PixelNorm(nn.Module):
    """LayerNorm over the channels of each pixel (keeps the stem strictly local, unlike GroupNorm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(B, C, H, W)`` per pixel."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class HistologyStem(nn.Module):
    """Aligned patchify from the histology tile (``he_scale`` px per HR px) to the HR grid.

    Every stage is a ``Conv2d(kernel = stride = k)`` without padding, so HR pixel ``(i, j)`` is
    computed from exactly the histology pixels ``[i·s, (i+1)·s) × [j·s, (j+1)·s)`` — no half-pixel
    offset (stride-2 3×3 convolutions with padding 1 shift by up to half an HR pixel).
    """

    def __init__(self, in_channels: int, out_channels: int, he_scale: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        width = max(8, out_channels // 2)
        for k in _factors(max(int(he_scale), 1)):
            layers += [nn.Conv2d(c, width, k, stride=k), PixelNorm(width), nn.SiLU()]
            c = width
        layers += [nn.Conv2d(c, out_channels, 1), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, H·s, W·s)`` → ``(B, out, H, W)``."""
        return self.net(image - 0.5)


class DiffSTUNet(nn.Module):
    """Conditional U-Net with the three Diff-ST components (each switchable by the config).

    Parameters
    ----------
    config
        Geometry and component switches (:class:`~stdiff.models.DiffSTConfig`).
    n_genes
        Output channels (genes).
    cond_channels
        Channels of the conditioning maps on the HR grid.
    image_channels
        Channels of the histology image (3 for H&E).
    graph
        The gene co-expression graph (:func:`~stdiff.models.nn.gene_graph.coexpression_graph`; used
        when ``config.components.use_gene_graph``).
    sample_channels
        Channels of the noisy sample (stage B: the genes); 0 for a regression network (stage A).
    patch_px
        Cell-level patch side in histology pixels (dynamic cross-attention).
    network
        The network's sizes (default ``config.mean``; stage B passes ``config.residual``).
    """

    def __init__(
        self,
        config: DiffSTConfig,
        n_genes: int,
        *,
        cond_channels: int,
        image_channels: int = 3,
        graph: Data | None = None,
        sample_channels: int = 0,
        patch_px: int | None = None,
        network: NetworkConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        net = self.network = network if network is not None else config.mean
        comp = config.components
        c0 = net.base_channels
        chans = [c0 * m for m in net.channel_mults]
        self.levels = len(chans)
        self.sample_channels = int(sample_channels)
        temb = 4 * c0
        self.temb = nn.Sequential(nn.Linear(c0, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.x_in = nn.Conv2d(sample_channels, chans[0], 3, padding=1) if sample_channels else None
        self.cond_in = nn.Conv2d(cond_channels, chans[0], 3, padding=1)
        self.he_in = HistologyStem(image_channels, chans[0], config.he_scale)
        self.cond_down = nn.ModuleList()
        self.he_down = nn.ModuleList()
        self.fusion = nn.ModuleList()
        fusion_cls = CrossModalModulation if comp.use_modulation else PlainFusion
        for i, c in enumerate(chans):
            prev = chans[max(i - 1, 0)]
            stride = 1 if i == 0 else 2
            self.cond_down.append(nn.Sequential(nn.Conv2d(prev, c, 3, stride=stride, padding=1), nn.SiLU()))
            self.he_down.append(nn.Sequential(nn.Conv2d(prev, c, 3, stride=stride, padding=1), nn.SiLU()))
            self.fusion.append(fusion_cls(c, comp.modulation_kernel))
        level = min(comp.cross_attention_level, self.levels - 1)
        self.cross_attention_level = level
        self.cross_attention = (
            DynamicCrossAttention(
                chans[level], image_channels, comp.patch_dim, int(patch_px or config.he_scale),
                config.he_scale * 2**level, net.num_heads,
            )
            if comp.use_cross_attention
            else None
        )  # fmt: skip
        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, c in enumerate(chans):
            prev = chans[max(i - 1, 0)]
            blocks = [ResBlock(prev if j == 0 else c, c, temb) for j in range(net.num_res_blocks)]
            self.down_blocks.append(nn.ModuleList(blocks))
            self.down_attn.append(SelfAttention(c, net.num_heads) if i in net.attention_levels else nn.Identity())
            self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < self.levels - 1 else nn.Identity())
        cb = chans[-1]
        self.mid1 = ResBlock(cb, cb, temb)
        self.mid_attn = SelfAttention(cb, net.num_heads)
        self.mid2 = ResBlock(cb, cb, temb)
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        for i in reversed(range(self.levels)):
            c = chans[i]
            nxt = chans[min(i + 1, self.levels - 1)]
            self.up_blocks.append(nn.ModuleList([ResBlock(nxt + c, c, temb)]))
            self.up_attn.append(SelfAttention(c, net.num_heads) if i in net.attention_levels else nn.Identity())
        self.out_norm = nn.GroupNorm(_groups(chans[0]), chans[0])
        if comp.use_gene_graph and graph is None:
            raise ValueError("config.components.use_gene_graph is on but no gene graph was given.")
        self.head = GeneGraphHead(
            chans[0], n_genes, net.gene_dim, comp.graph_layers, graph if comp.use_gene_graph else None,
            conv=comp.graph_conv, sparse_from=comp.graph_sparse_from,
        )  # fmt: skip

    # ------------------------------------------------------------------ knock-outs
    def set_knockout(self, component: str | None) -> None:
        """Switch one component off at inference (``"modulation"``, ``"cross_attention"``, ``"gene_graph"``).

        ``None`` switches every component back on. The modulation gates are zeroed, the cross-attention
        output is dropped, and the gene graph loses its edges; weights are unchanged.
        """
        valid = {None, "modulation", "cross_attention", "gene_graph"}
        if component not in valid:
            raise ValueError(f"Unknown component {component!r}; use one of {sorted(v for v in valid if v)}.")
        for fusion in self.fusion:
            fusion.enabled = component != "modulation"
        if self.cross_attention is not None:
            self.cross_attention.enabled = component != "cross_attention"
        self.head.enabled = component != "gene_graph"

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
        self, cond: torch.Tensor, mask: torch.Tensor, image: torch.Tensor, fraction: float = 1.0
    ) -> dict[str, object]:
        """Conditioning features of ``cond`` ``(B, cond_channels, H, W)``, ``mask`` and ``image`` in [0, 1].

        Returns the fused map of every level and the disentangling loss.
        """
        H, W = cond.shape[-2:]
        cond, mask, image = self._pad(cond, mask, image=image)
        s_f = self.cond_in(cond)
        h_f = self.he_in(image)
        dloss = cond.new_zeros(())
        levels = []
        for i in range(self.levels):
            s_f = self.cond_down[i](s_f)
            h_f = self.he_down[i](h_f)
            m = F.adaptive_max_pool2d(mask, s_f.shape[-2:])
            fused, h_f, s_f, dl = self.fusion[i](h_f, s_f, m)
            dloss = dloss + dl
            if self.cross_attention is not None and i == self.cross_attention_level:
                fused = self.cross_attention(fused, self.cross_attention.prepare(image, fraction))
            levels.append(fused)
        return {"levels": levels, "dloss": dloss, "size": (H, W)}

    def decode(self, cond: dict[str, object], x: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """Output ``(B, G, H, W)`` from :meth:`encode`'s features (+ the noisy sample and its noise level)."""
        H, W = cond["size"]
        levels = cond["levels"]
        b = levels[0].shape[0] if x is None else x.shape[0]
        c0 = self.network.base_channels
        if noise is None:
            noise = levels[0].new_zeros(b)
        temb = self.temb(timestep_embedding(noise, c0))
        if x is not None:
            (x, _) = self._pad(x)
            h = self.x_in(x)
        else:
            h = levels[0].new_zeros(b, levels[0].shape[1], *levels[0].shape[-2:])
        skips = []
        for i in range(self.levels):
            c = levels[i]
            if c.shape[0] != b:  # conditioning shared across repeated samples
                c = c.repeat_interleave(b // c.shape[0], dim=0)
            for j, block in enumerate(self.down_blocks[i]):
                h = block(h, temb)
                if j == 0:
                    h = h + c
            h = self.down_attn[i](h)
            skips.append(h)
            h = self.downsample[i](h)
        h = self.mid1(h, temb)
        h = self.mid_attn(h)
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
        cond: torch.Tensor,
        mask: torch.Tensor,
        image: torch.Tensor,
        x: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        fraction: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and decode in one call; returns ``(output (B, G, H, W), disentangling loss)``."""
        enc = self.encode(cond, mask, image, fraction)
        return self.decode(enc, x, noise), enc["dloss"]
