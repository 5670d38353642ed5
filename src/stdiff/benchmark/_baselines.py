"""Baselines of the benchmark: interpolation, histology-only regression and a deterministic U-Net.

All of them return predictions in the normalised space ``z`` of the benchmark's
:class:`~stdiff.pp.Normalizer` (fitted once on the training sections), on the section's HR grid.

- :func:`bicubic` / :func:`nearest`: upsampling of the normalised LR map (``bicubic`` is exactly
  the starting point of Diff-ST, :func:`stdiff.models.upsample_lr`).
- :class:`HistologyRegressor`: an iStar-like model. A small CNN maps the histology to counts per
  HR pixel (softplus) and never sees the LR map; it is trained only against LR: the predicted counts
  summed over each LR pixel's ``factor × factor`` block must match the measured LR counts (MSE in
  the normalised space).
- :class:`RegressionUNet`: :class:`~stdiff.models.DiffSTUNet` with the same conditioning as Diff-ST
  (LR map, mask, histology, modulation, cross-attention, gene graph) trained with MSE on the residual
  ``z_hr − bicubic`` with the noisy input and timestep fixed at 0 — regression, no diffusion.

The trained baselines use the model configuration's tiles, batch size, optimiser, learning rate,
EMA and number of steps, so their budgets match Diff-ST's.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.config import DiffSTConfig
from ..models.diffst import DiffST, _augment, _hann, _pad_section, _Prepared, upsample_lr
from ..models.unet import DiffSTUNet
from ..pp._normalize import Normalizer
from ..pp._tiling import Section, tile_positions

# ----------------------------------------------------------------------------------------------
# interpolation
# ----------------------------------------------------------------------------------------------


def lr_z(section: Section, normalizer: Normalizer) -> np.ndarray:
    """The section's LR map in the normalised space (per HR pixel), ``(G, h, w)``."""
    return normalizer.subset(section.genes).transform(section.lr, factor=section.factor)


def bicubic(section: Section, normalizer: Normalizer) -> np.ndarray:
    """Bicubic upsampling of the normalised LR map (clamped at 0), ``(G, H, W)``."""
    return upsample_lr(lr_z(section, normalizer), section.factor).numpy()


def nearest(section: Section, normalizer: Normalizer) -> np.ndarray:
    """Nearest-neighbour (block) upsampling of the normalised LR map, ``(G, H, W)``."""
    f = section.factor
    z = lr_z(section, normalizer)
    return np.repeat(np.repeat(z, f, axis=-2), f, axis=-1)


# ----------------------------------------------------------------------------------------------
# shared tile machinery
# ----------------------------------------------------------------------------------------------


class _Windows:
    """Training windows of several sections: LR/HR in ``z``, bicubic base, histology, masks."""

    def __init__(self, sections: Sequence[Section], normalizer: Normalizer, tile_lr: int, min_tissue: float):
        self.prepared = [_Prepared(s, normalizer, with_truth=True) for s in sections]
        self.t = int(tile_lr)
        pools = []
        for i, p in enumerate(self.prepared):
            pos = tile_positions(p.section, self.t, 1, min_tissue=min_tissue)
            pools.extend((i, r, c) for r, c in pos)
        if not pools:
            raise ValueError(
                f"No training tile of {tile_lr}×{tile_lr} LR pixels with ≥{min_tissue:.0%} tissue in the training "
                "sections; use a smaller tile_lr."
            )
        self.pools = np.asarray(pools)

    def window(self, i: int, r: int, c: int) -> dict[str, np.ndarray]:
        p, t = self.prepared[i], self.t
        w = p.window(r, c, t)
        w["z_lr"] = p.z_lr[:, r : r + t, c : c + t]
        w["mask_lr"] = p.section.mask_lr[None, r : r + t, c : c + t].astype(np.float32)
        return w

    def batch(self, rng: np.random.Generator, size: int, augment: bool, device) -> dict[str, torch.Tensor]:
        picks = self.pools[rng.integers(len(self.pools), size=size)]
        items = []
        for i, r, c in picks:
            w = self.window(i, r, c)
            items.append(_augment(w, rng) if augment else w)
        return {k: torch.from_numpy(np.stack([it[k] for it in items])).to(device) for k in items[0]}


def stitch(
    section: Section,
    normalizer: Normalizer,
    tile_lr: int,
    fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Predict a whole section with half-overlapping tiles blended by a Hann window (like Diff-ST).

    ``fn`` maps a batch of windows (``lr_up``, ``base``, ``mask``, ``he`` as tensors, ``he`` in
    [0, 1]) to normalised HR tiles ``(B, G, T, T)``. Returns ``(G, H, W)`` (0 off tissue).
    """
    t = int(tile_lr)
    h, w = section.shape_lr
    ph, pw = max(0, t - h), max(0, t - w)
    sec = _pad_section(section, ph, pw) if (ph or pw) else section
    prep = _Prepared(sec, normalizer, with_truth=False)
    pos = tile_positions(sec, t, max(1, t // 2), min_tissue=0.0, cover=True)
    f = sec.factor
    T = t * f
    win = np.outer(_hann(T), _hann(T)).astype(np.float32)
    G = len(sec.genes)
    H, W = sec.shape_lr[0] * f, sec.shape_lr[1] * f
    acc = np.zeros((G, H, W), np.float32)
    acc_w = np.zeros((H, W), np.float32)
    for b0 in range(0, len(pos), batch_size):
        chunk = pos[b0 : b0 + batch_size]
        ws = [prep.window(r, c, t) for r, c in chunk]
        batch = {k: torch.from_numpy(np.stack([x[k] for x in ws])).to(device) for k in ("lr_up", "base", "mask")}
        batch["he"] = torch.from_numpy(np.stack([x["he"] for x in ws])).to(device).float() / 255.0
        with torch.no_grad():
            z = fn(batch).float().cpu().numpy()
        for k, (r, c) in enumerate(chunk):
            acc[:, r * f : r * f + T, c * f : c * f + T] += z[k] * win
            acc_w[r * f : r * f + T, c * f : c * f + T] += win
    out = acc / np.maximum(acc_w, 1e-8) * sec.mask_hr.astype(np.float32)
    return out[:, : h * f, : w * f]


def _ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pn in zip(ema.parameters(), net.parameters()):
            pe.lerp_(pn, 1 - decay)
        for be, bn in zip(ema.buffers(), net.buffers()):
            be.copy_(bn)


def _fit(model, sections: Sequence[Section], *, steps: int, seed: tuple[int, int], device, loss_fn):
    """Shared training loop of the baselines: Diff-ST's tile sampler, AdamW, clipping and EMA.

    ``loss_fn(net, batch, step, total)`` returns ``(loss, extra)``; ``loss + extra`` is minimised and
    ``loss`` is logged in ``model.history``. Sets ``train_s`` / ``train_cpu_s`` and returns ``model``.
    """
    cfg = model.config
    data = _Windows(sections, model.normalizer, cfg.tile_lr, cfg.min_tissue)
    rng = np.random.default_rng(list(seed))
    net, ema = model.net.to(device).train(), model.ema.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    total = int(steps)
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(total):
        b = data.batch(rng, cfg.batch_size, cfg.augment, device)
        loss, extra = loss_fn(net, b, step, total)
        opt.zero_grad(set_to_none=True)
        (loss + extra).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        _ema_update(ema, net, min(cfg.ema_decay, (1 + step) / (10 + step)))
        model.history.append(float(loss.detach()))
    model.train_s = time.perf_counter() - t0
    model.train_cpu_s = time.process_time() - c0
    model.net.cpu().eval()
    model.ema.cpu().eval()
    return model


# ----------------------------------------------------------------------------------------------
# histology-only regression (iStar-like)
# ----------------------------------------------------------------------------------------------


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if c % 8 == 0 else 1, c)


class HistologyNet(nn.Module):
    """Histology ``(B, C, T·s, T·s)`` → non-negative counts per HR pixel relative to the gene's mean.

    Strided convolutions bring the image to the HR grid (``s`` = histology pixels per HR pixel), then
    3×3 convolutions mix a small neighbourhood and a 1×1 head gives one softplus output per gene.
    """

    def __init__(self, image_channels: int, n_genes: int, he_scale: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = image_channels
        for _ in range(int(math.floor(math.log2(max(he_scale, 1))))):
            layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), _gn(width), nn.SiLU()]
            c = width
        self.stem = nn.Sequential(*layers)
        self.body = nn.Sequential(
            nn.Conv2d(c, 2 * width, 3, padding=1), _gn(2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), _gn(2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), _gn(2 * width), nn.SiLU(),
        )  # fmt: skip
        self.head = nn.Conv2d(2 * width, n_genes, 1)

    def forward(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Relative counts ``x / size_g`` per HR pixel, ``(B, G, *size)``."""
        h = self.stem(image - 0.5)
        if h.shape[-2:] != tuple(size):
            h = F.interpolate(h, size=size, mode="area" if h.shape[-1] > size[-1] else "bilinear")
        return F.softplus(self.head(self.body(h)))


class HistologyRegressor:
    """iStar-like histology-only regression trained against LR only (see the module docstring)."""

    name = "histology"

    def __init__(self, genes: Sequence[str], normalizer: Normalizer, config: DiffSTConfig, image_channels: int):
        self.genes = list(genes)
        self.normalizer = normalizer.subset(self.genes)
        self.config = config
        self.net = HistologyNet(image_channels, len(self.genes), config.he_scale)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.history: list[float] = []
        self.train_s = 0.0
        self.train_cpu_s = 0.0

    def _z(self, rel: torch.Tensor) -> torch.Tensor:
        scale = torch.as_tensor(self.normalizer.scale, dtype=rel.dtype, device=rel.device)[None, :, None, None]
        return torch.log1p(rel) / scale

    def train(self, sections: Sequence[Section], *, steps: int, seed: int = 0, device="cpu") -> HistologyRegressor:
        """Fit so that the predicted counts aggregated over each LR pixel match the LR map."""
        f = sections[0].factor

        def loss_fn(net, b, step, total):
            T = b["mask"].shape[-1]
            rel = net(b["he"].float() / 255.0, (T, T)) * b["mask"]
            # counts relative to the gene mean, summed over each LR pixel, per HR pixel of it
            z_pred = self._z(F.avg_pool2d(rel, f))
            m = b["mask_lr"]
            return (((z_pred - b["z_lr"]) ** 2) * m).sum() / (m.sum().clamp(min=1) * z_pred.shape[1]), 0.0

        return _fit(self, sections, steps=steps, seed=(seed, 1), device=device, loss_fn=loss_fn)

    def predict(self, section: Section, *, device="cpu") -> np.ndarray:
        """Normalised HR map ``(G, H, W)`` from the histology alone."""
        net = self.ema.to(device).eval()

        def fn(b):
            T = b["mask"].shape[-1]
            return self._z(net(b["he"], (T, T)))

        out = stitch(section, self.normalizer, self.config.tile_lr, fn, device=device)
        net.cpu()
        return out


# ----------------------------------------------------------------------------------------------
# deterministic U-Net (same conditioning as Diff-ST, regression)
# ----------------------------------------------------------------------------------------------


class RegressionUNet:
    """:class:`~stdiff.models.DiffSTUNet` trained by regression on the residual (x = 0, t = 0).

    The gene graph, the residual scale and the normalisation are those of a Diff-ST model set up on
    the same training data (``model`` from :meth:`stdiff.models.DiffST.setup`), so only the training
    objective differs.
    """

    name = "unet"

    def __init__(self, model: DiffST) -> None:
        self.genes = list(model.genes)
        self.config = model.config
        self.normalizer = model.normalizer
        self.residual_scale = model.residual_scale
        self.net = DiffSTUNet(model.config, len(self.genes), model.image_channels, model.graph.adjacency())
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.history: list[float] = []
        self.train_s = 0.0
        self.train_cpu_s = 0.0

    def _forward(self, net: nn.Module, b: dict[str, torch.Tensor], fraction: float):
        x = torch.zeros_like(b["base"])
        t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        he = b["he"] if b["he"].is_floating_point() else b["he"].float() / 255.0
        return net(x, t, b["lr_up"], b["mask"].float(), he, fraction)

    def train(self, sections: Sequence[Section], *, steps: int, seed: int = 0, device="cpu") -> RegressionUNet:
        """MSE on ``(z_hr − bicubic) / residual_scale`` with Diff-ST's tile sampler, weights and optimiser."""
        cfg = self.config

        def loss_fn(net, b, step, total):
            target = (b["z_hr"] - b["base"]) / self.residual_scale
            out, dloss = self._forward(net, b, cfg.admitted_fraction(step / max(total, 1)))
            weight = b["mask_truth"].float() + 0.05
            loss = (((out - target) ** 2) * weight).sum() / (weight.sum() * out.shape[1])
            return loss, cfg.disentangle_weight * dloss

        return _fit(self, sections, steps=steps, seed=(seed, 2), device=device, loss_fn=loss_fn)

    def predict(self, section: Section, *, device="cpu") -> np.ndarray:
        """Normalised HR map ``(G, H, W)``: bicubic + the regressed residual (clamped at 0)."""
        net = self.ema.to(device).eval()

        def fn(b):
            out, _ = self._forward(net, b, 1.0)
            return (b["base"] + out * self.residual_scale).clamp(min=0)

        out = stitch(section, self.normalizer, self.config.tile_lr, fn, device=device)
        net.cpu()
        return out
