"""The LR map on the HR grid, spread over the tissue pixels only (the honest interpolation base)."""

from __future__ import annotations

import numpy as np

from ._section import Section, aggregate


def lr_per_tissue_pixel(section: Section) -> np.ndarray:
    """LR counts divided among the tissue HR pixels of their block, ``(G, H, W)`` counts per HR pixel.

    Each LR pixel's counts are split evenly over the HR pixels of its ``factor × factor`` block that
    the input mask (:attr:`Section.mask_hr`, built from the LR map and the histology only) calls
    tissue; pixels off tissue get 0. Unlike block (nearest) upsampling of counts per HR pixel, a
    half-tissue block at the tissue edge is not diluted by its empty half. Summing the result over
    each block gives back the LR counts wherever the block has tissue (mass is conserved).
    """
    f = section.factor
    mask = section.mask_hr.astype(np.float32)
    n = aggregate(mask, f)
    per = np.where(n > 0, section.lr / np.maximum(n, 1.0), 0.0).astype(np.float32)
    up = np.repeat(np.repeat(per, f, axis=-2), f, axis=-1)
    return up * mask[None]
