"""Interpolation baselines: of the LR map (bicubic, nearest, mask-aware nearest) and of the spots.

None of them is trained; they work in the context's normalised space. ``nearest`` spreads each LR
pixel over its whole ``factor × factor`` block, so a block that is half tissue is diluted by its
empty half; ``nearest_masked`` (:func:`stdiff.pp.lr_per_tissue_pixel`) divides the LR counts among
the block's tissue pixels only — the honest interpolation baseline (for spots: each spot's counts
on its footprint, the gaps from the normalised convolution). The spot-aware baselines read the
spots themselves (counts per unit area of each spot), for sections measured by spots only:
``nearest_spot`` (Voronoi: the nearest spot's density), ``linear_spots`` (linear interpolation of
the densities over the spots' Delaunay triangles, nearest outside them) and ``normconv`` (normalised
convolution with a Gaussian of half the pitch, :meth:`stdiff.spots.Footprints.render`).
"""

from __future__ import annotations

import numpy as np

from ...pp import Normalizer, Section
from ._base import Method, Output, Skip


def lr_z(section: Section, normalizer: Normalizer) -> np.ndarray:
    """The section's LR map in the normalised space (per HR pixel), ``(G, h, w)``."""
    return normalizer.subset(section.genes).transform(section.lr, factor=section.factor)


def bicubic(section: Section, normalizer: Normalizer) -> np.ndarray:
    """Bicubic upsampling of the normalised LR map (clamped at 0), ``(G, H, W)`` (Diff-ST's base)."""
    from ...models import upsample_lr

    return upsample_lr(lr_z(section, normalizer), section.factor).numpy()


def nearest(section: Section, normalizer: Normalizer) -> np.ndarray:
    """Nearest-neighbour (block) upsampling of the normalised LR map, ``(G, H, W)``."""
    f = section.factor
    z = lr_z(section, normalizer)
    return np.repeat(np.repeat(z, f, axis=-2), f, axis=-1)


def nearest_masked(section: Section, normalizer: Normalizer) -> np.ndarray:
    """Mask-aware nearest: LR counts ÷ tissue HR pixels of the block, normalised, ``(G, H, W)``."""
    from ...pp import lr_per_tissue_pixel

    counts = lr_per_tissue_pixel(section)
    return normalizer.subset(section.genes).transform(counts) * section.mask_hr[None]


def _spots(section: Section):
    if section.spots is None:
        raise Skip("a spot-aware baseline needs spots (--platform visium|st, or a spot section)")
    return section.footprints()


def _z(section: Section, normalizer: Normalizer, counts: np.ndarray) -> np.ndarray:
    return normalizer.subset(section.genes).transform(counts) * section.mask_hr[None]


def _densities(section: Section) -> tuple[np.ndarray, np.ndarray]:
    """Spot centres ``(n, 2)`` and counts per HR pixel ``(G, n)`` (each spot's count over its area)."""
    fp = _spots(section)
    px = fp.full_area_px
    return section.spots.xy.T, section.spots.counts / np.maximum(px, 1e-12)[None]


def nearest_spot(section: Section, normalizer: Normalizer) -> np.ndarray:
    """Voronoi: every HR pixel takes the density (counts per HR pixel) of its nearest spot."""
    fp = _spots(section)
    _, dens = _densities(section)
    _, owner = fp.nearest()
    return _z(section, normalizer, dens[:, owner])


def linear_spots(section: Section, normalizer: Normalizer) -> np.ndarray:
    """Linear interpolation of the spots' densities over their Delaunay triangles (nearest spot outside them)."""
    from scipy.interpolate import LinearNDInterpolator

    fp = _spots(section)
    xy, dens = _densities(section)
    _, owner = fp.nearest()
    pts = fp.pixel_centres()
    out = np.asarray(LinearNDInterpolator(xy, dens.T)(pts)).T.reshape(dens.shape[0], *fp.shape)
    out = np.where(np.isfinite(out), out, dens[:, owner])
    return _z(section, normalizer, np.clip(out, 0, None))


def normconv(section: Section, normalizer: Normalizer) -> np.ndarray:
    """Normalised convolution of the spots' densities (a Gaussian of half the pitch)."""
    return _z(section, normalizer, _spots(section).render())


class Interpolation(Method):
    """Adapter of one interpolation function."""

    FUNCTIONS = {
        "bicubic": (bicubic, "bicubic upsampling of the normalised LR map (Diff-ST's base)"),
        "nearest": (nearest, "nearest (block) upsampling of the normalised LR map (edge blocks diluted)"),
        "nearest_masked": (nearest_masked, "mask-aware nearest: LR counts ÷ tissue HR pixels of the block; for "
                                           "spots, each spot on its footprint, gaps by normalised convolution "
                                           "(stdiff.pp.lr_per_tissue_pixel)"),
        "nearest_spot": (nearest_spot, "nearest spot (Voronoi): each HR pixel takes its nearest spot's density"),
        "linear_spots": (linear_spots, "linear interpolation of spot densities (Delaunay triangles)"),
        "normconv": (normconv, "normalised convolution of spot densities (Gaussian, σ = pitch / 2)"),
    }  # fmt: skip

    def __init__(self, name: str) -> None:
        self.name = name
        self.fn, self.description = self.FUNCTIONS[name]

    def predict(self, section: Section) -> Output:
        return Output(mean=self.fn(section, self.ctx.normalizer), normalizer=self.ctx.normalizer)
