"""The two training stages of Diff-ST and what they share: tile batches, losses, validation, canvas passes.

- Stage A (the posterior mean): a regression U-Net predicts ``(z_HR − base) / residual_scale`` from
  the conditioning; ``mean = base + residual_scale · output`` (clamped at 0).
- Stage B (the spread): an EDM denoiser of the per-gene-scaled residual ``r = (z_HR − mean) / σ_g``,
  conditioned on the same maps plus the stage-A mean.

Losses are weighted by the truth mask only (where the truth is measured); inputs never see it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import edm
from ._windows import Prepared, augment_geometry, augment_stain
from .canvas import Canvas
from .config import DiffSTConfig
from .unet import DiffSTUNet


class WindowPool:
    """Training or validation tiles of several prepared sections."""

    def __init__(self, prepared: Sequence[Prepared], tile_lr: int, min_tissue: float, stride: int = 1) -> None:
        from ..pp import tile_positions

        self.prepared = list(prepared)
        self.t = int(tile_lr)
        pools = []
        for i, p in enumerate(self.prepared):
            pos = tile_positions(p.section, self.t, stride, min_tissue=min_tissue)
            pools.extend((i, int(r), int(c)) for r, c in pos)
        self.pool = np.asarray(pools, dtype=int).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.pool)

    def stack(self, picks: np.ndarray, rng: np.random.Generator | None, device) -> dict[str, torch.Tensor]:
        """Tensors of the tiles ``picks`` (rows of the pool), augmented when ``rng`` is given."""
        items = []
        for i, r, c in picks:
            w = self.prepared[i].window(r, c, self.t)
            items.append(augment_geometry(w, rng) if rng is not None else w)
        out = {k: torch.from_numpy(np.stack([it[k] for it in items])).to(device) for k in items[0]}
        out["he"] = out["he"].float() / 255.0
        return out

    def random_batch(self, rng: np.random.Generator, gen: torch.Generator, size: int, cfg: DiffSTConfig, device):
        """A random augmented batch."""
        picks = self.pool[rng.integers(len(self.pool), size=size)]
        b = self.stack(picks, rng if cfg.augment else None, device)
        if cfg.stain_augment:
            b["he"] = augment_stain(b["he"], gen)
        return b

    def fixed_batches(self, max_tiles: int, size: int, device) -> list[dict[str, torch.Tensor]]:
        """Up to ``max_tiles`` evenly spread tiles, without augmentation (validation)."""
        n = len(self.pool)
        idx = np.unique(np.linspace(0, n - 1, min(n, max_tiles)).round().astype(int))
        picks = self.pool[idx]
        return [self.stack(picks[i : i + size], None, device) for i in range(0, len(picks), size)]


def masked_mse(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error weighted by ``weight`` ``(B, 1, H, W)`` (per gene and weighted pixel)."""
    return (((out - target) ** 2) * weight).sum() / (weight.sum().clamp(min=1.0) * out.shape[1])


# ------------------------------------------------------------------ stage A
def stage_a_loss(
    net: DiffSTUNet, b: dict[str, torch.Tensor], residual_scale: float, cfg: DiffSTConfig, progress: float
):
    """Masked MSE of the regressed residual plus the disentangling loss."""
    out, dloss = net(b["cond"], b["mask"], b["he"], fraction=cfg.admitted_fraction(progress))
    target = (b["z_hr"] - b["base"]) / residual_scale
    return masked_mse(out, target, b["mask_truth"]) + cfg.disentangle_weight * dloss


@torch.no_grad()
def stage_a_val(net: DiffSTUNet, batches: list[dict[str, torch.Tensor]], residual_scale: float) -> float:
    """Validation MSE of stage A (no augmentation, all patches admitted)."""
    tot, n = 0.0, 0.0
    for b in batches:
        out, _ = net(b["cond"], b["mask"], b["he"])
        target = (b["z_hr"] - b["base"]) / residual_scale
        w = float(b["mask_truth"].sum())
        tot += float(masked_mse(out, target, b["mask_truth"])) * w
        n += w
    return tot / max(n, 1.0)


#: The eight symmetries of the square as ``(quarter turns, flip)``: rotate, then mirror the columns.
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """``x`` ``(..., H, W)`` turned by ``k`` quarter turns, then mirrored (as training augmentation does)."""
    x = torch.rot90(x, k, dims=(-2, -1))
    return x.flip(-1) if flip else x


def undo_dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """The inverse of :func:`dihedral`."""
    x = x.flip(-1) if flip else x
    return torch.rot90(x, -k, dims=(-2, -1))


def stage_a_tiles(net: DiffSTUNet, cond, mask, he, *, symmetries: int = 1) -> torch.Tensor:
    """Stage A's output for tiles, averaged over the first ``symmetries`` of :data:`DIHEDRAL`.

    With 8, every tile is predicted in all eight orientations (the ones training augmentation
    shows the network) and the outputs, turned back, are averaged: test-time augmentation.
    """
    acc = None
    for k, flip in DIHEDRAL[:symmetries]:
        out, _ = net(dihedral(cond, k, flip), dihedral(mask, k, flip), dihedral(he, k, flip))
        out = undo_dihedral(out, k, flip)
        acc = out if acc is None else acc + out
    return acc / symmetries


@torch.no_grad()
def stage_a_canvas(
    net: DiffSTUNet,
    prep: Prepared,
    canvas: Canvas,
    residual_scale: float,
    device,
    batch_size: int,
    *,
    symmetries: int = 1,
) -> np.ndarray:
    """The stage-A mean of a whole prepared section, ``(G, H, W)`` normalised, 0 off the input mask.

    ``symmetries`` > 1 averages the network's output over that many orientations of every tile
    (:func:`stage_a_tiles`).
    """
    net = net.to(device).eval()

    def fn(idx):
        ws = [prep.window(*canvas.positions[k], canvas.t) for k in idx]
        cond = torch.from_numpy(np.stack([w["cond"] for w in ws])).to(device)
        mask = torch.from_numpy(np.stack([w["mask"] for w in ws])).to(device)
        he = torch.from_numpy(np.stack([w["he"] for w in ws])).to(device).float() / 255.0
        base = torch.from_numpy(np.stack([w["base"] for w in ws])).to(device)
        return base + stage_a_tiles(net, cond, mask, he, symmetries=symmetries) * residual_scale

    G = prep.base.shape[0]
    mu = canvas.blend(fn, (), G, batch_size).clamp(min=0).cpu().numpy()
    return mu * prep.mask_hr[None]


# ------------------------------------------------------------------ stage B
def _stage_b_inputs(b: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([b["cond"], b["mu"]], 1)


def denoise(net: DiffSTUNet, enc: dict, x: torch.Tensor, sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    """EDM-preconditioned denoiser ``D(x; sigma)`` for residual tiles ``x`` ``(B, G, T, T)``."""
    c_skip, c_out, c_in, c_noise = edm.precondition(sigma.view(-1, 1, 1, 1), sigma_data)
    f = net.decode(enc, c_in * x, edm.noise_embedding_input(c_noise.view(-1)))
    return c_skip * x + c_out * f


def residual_target(b: dict[str, torch.Tensor], gene_sigma: torch.Tensor) -> torch.Tensor:
    """``r = (z_HR − mean) / σ_g``, 0 where the truth is not measured."""
    return (b["z_hr"] - b["mu"]) / gene_sigma.view(1, -1, 1, 1) * b["mask_truth"]


def stage_b_loss(
    net: DiffSTUNet, b: dict[str, torch.Tensor], gene_sigma: torch.Tensor, cfg: DiffSTConfig, gen: torch.Generator
) -> torch.Tensor:
    """EDM loss ``λ(σ)·|D(r + σε; σ) − r|²`` on the truth mask, plus the disentangling loss."""
    r = residual_target(b, gene_sigma)
    sigma = edm.sample_training_sigmas(r.shape[0], p_mean=cfg.p_mean, p_std=cfg.p_std, generator=gen).to(r.device)
    noise = torch.randn(r.shape, generator=gen).to(r.device)
    enc = net.encode(_stage_b_inputs(b), b["mask"], b["he"], 1.0)
    d = denoise(net, enc, r + sigma.view(-1, 1, 1, 1) * noise, sigma)
    w = edm.loss_weight(sigma).view(-1, 1, 1, 1)
    per = (((d - r) ** 2) * w * b["mask_truth"]).sum() / (b["mask_truth"].sum().clamp(min=1.0) * r.shape[1])
    return per + cfg.disentangle_weight * enc["dloss"]


@torch.no_grad()
def stage_b_val(net: DiffSTUNet, batches: list[dict[str, torch.Tensor]], gene_sigma: torch.Tensor) -> float:
    """Validation EDM loss at fixed noise levels and fixed noise (deterministic)."""
    gen = torch.Generator().manual_seed(1234)
    tot, n = 0.0, 0
    for b in batches:
        r = residual_target(b, gene_sigma)
        enc = net.encode(_stage_b_inputs(b), b["mask"], b["he"], 1.0)
        for s in (0.1, 0.3, 0.7, 1.5, 4.0):
            noise = torch.randn(r.shape, generator=gen).to(r.device)
            sigma = torch.full((r.shape[0],), s, device=r.device)
            d = denoise(net, enc, r + s * noise, sigma)
            w = float(edm.loss_weight(torch.tensor(s)))
            tot += float(
                ((((d - r) ** 2) * b["mask_truth"]).sum() / (b["mask_truth"].sum().clamp(min=1.0) * r.shape[1])) * w
            )
            n += 1
    return tot / max(n, 1)


@torch.no_grad()
def stage_b_canvas(
    net: DiffSTUNet,
    prep: Prepared,
    canvas: Canvas,
    *,
    n_samples: int,
    steps: int,
    cfg: DiffSTConfig,
    generator: torch.Generator,
    device,
    batch_size: int,
    progress=None,
) -> torch.Tensor:
    """``n_samples`` whole-section residual samples ``(n, G, H, W)`` (unit scale), sampled on the canvas."""
    net = net.to(device).eval()
    encs = []
    for idx in canvas.batches(batch_size):
        ws = [prep.window(*canvas.positions[k], canvas.t) for k in idx]
        b = {key: torch.from_numpy(np.stack([w[key] for w in ws])).to(device) for key in ("cond", "mu", "mask", "he")}
        b["he"] = b["he"].float() / 255.0
        encs.append((idx, net.encode(_stage_b_inputs(b), b["mask"], b["he"], 1.0)))
    G = prep.base.shape[0]

    def d_canvas(x: torch.Tensor, sigma: float) -> torch.Tensor:
        acc = torch.zeros_like(x)
        win = torch.from_numpy(canvas.window).to(x.device)
        for idx, enc in encs:
            tiles = canvas.extract(x, idx)  # (len, n, G, T, T)
            flat = tiles.reshape(-1, *tiles.shape[2:])
            s = torch.full((flat.shape[0],), sigma, device=x.device)
            d = denoise(net, enc, flat, s).view(tiles.shape)
            for j, k in enumerate(idx):
                rs, cs = canvas.slices(int(k))
                acc[..., rs, cs] += d[j] * win
        return acc / torch.from_numpy(canvas.weight).to(x.device)

    return edm.sample(
        d_canvas, (n_samples, G, canvas.H, canvas.W), steps=steps, generator=generator, solver=cfg.solver,
        sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, rho=cfg.rho, device=device, callback=progress,
    )  # fmt: skip


# ------------------------------------------------------------------ predictive summary
def predictive_summary(
    mu: np.ndarray, residuals: np.ndarray, mask: np.ndarray, normalizer, return_samples: bool = False
) -> dict[str, np.ndarray]:
    """Samples ``mu + residuals`` (normalised, ``(n, G, H, W)``) → their sd and a central 90% interval.

    ``z_std`` and ``std`` (counts) are the samples' standard deviations; ``q05`` / ``q95`` (counts)
    bound a central 90% prediction interval from few samples: mean ± Student-t quantile × sample sd ×
    √(1 + 1/n) in the normalised space (empirical 5% / 95% quantiles of n = 8 samples cover ≈ 70% for
    a calibrated ensemble), mapped back to counts (the map is monotone, so quantiles map to quantiles).
    With ``return_samples`` also ``samples`` (normalised, clipped at 0, 0 off tissue).
    """
    from scipy.stats import t as student_t

    n = residuals.shape[0]
    z = np.clip(mu[None] + residuals, 0, None) * mask
    counts = normalizer.inverse(z, axis=-3)
    out = {
        "z_std": z.std(0, ddof=1) if n > 1 else np.zeros_like(mu),
        "std": (counts.std(0, ddof=1) if n > 1 else np.zeros_like(mu)) * mask,
    }
    half = student_t.ppf(0.95, df=max(n - 1, 1)) * np.sqrt(1 + 1 / n) * out["z_std"]
    for key, sgn in (("q05", -1.0), ("q95", 1.0)):
        out[key] = normalizer.inverse(np.clip(mu + sgn * half, 0, None), axis=-3) * mask
    if return_samples:
        out["samples"] = z
    return out
