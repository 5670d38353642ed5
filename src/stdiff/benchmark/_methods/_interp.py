"""Interpolation baselines: bicubic, nearest (block) and mask-aware nearest upsampling of the LR map.

None of them is trained; they work in the context's normalised space. ``nearest`` spreads each LR
pixel over its whole ``factor × factor`` block, so a block that is half tissue is diluted by its
empty half; ``nearest_masked`` (:func:`stdiff.pp.lr_per_tissue_pixel`) divides the LR counts among
the block's tissue pixels only — the honest interpolation baseline.
"""

from __future__ import annotations

import numpy as np

from ...pp import Normalizer, Section
from ._base import Method, Output


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


class Interpolation(Method):
    """Adapter of one interpolation function."""

    FUNCTIONS = {
        "bicubic": (bicubic, "bicubic upsampling of the normalised LR map (Diff-ST's base)"),
        "nearest": (nearest, "nearest (block) upsampling of the normalised LR map (edge blocks diluted)"),
        "nearest_masked": (nearest_masked, "mask-aware nearest: LR counts ÷ tissue HR pixels of the block "
                                           "(stdiff.pp.lr_per_tissue_pixel)"),
    }  # fmt: skip

    def __init__(self, name: str) -> None:
        self.name = name
        self.fn, self.description = self.FUNCTIONS[name]

    def predict(self, section: Section) -> Output:
        return Output(mean=self.fn(section, self.ctx.normalizer), normalizer=self.ctx.normalizer)
