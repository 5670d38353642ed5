"""The measured expression on the HR grid, spread over the tissue pixels only (the honest interpolation base)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._section import Section, aggregate

if TYPE_CHECKING:  # pragma: no cover
    from ..spots import Footprints


def lr_per_tissue_pixel(section: Section) -> np.ndarray:
    """The measurements spread evenly over the tissue HR pixels, ``(G, H, W)`` counts per HR pixel.

    Square LR maps: each LR pixel's counts are split evenly over the HR pixels of its
    ``factor × factor`` block that the input mask (:attr:`Section.mask_hr`, built from the LR map and
    the histology only) calls tissue; pixels off tissue get 0. Unlike block (nearest) upsampling of
    counts per HR pixel, a half-tissue block at the tissue edge is not diluted by its empty half.
    Summing the result over each block gives back the LR counts wherever the block has tissue.

    Spots (:attr:`Section.spots`): each spot's counts spread evenly over its footprint's tissue pixels
    and the gaps between spots filled by the normalised convolution of the spots' densities
    (:meth:`~stdiff.spots.Footprints.distribute` of a flat map), so every spot's footprint sums to its
    count and there are no blocks and no holes; tissue beyond the spots' reach takes the nearest
    reached tissue pixel's value.
    """
    if section.spots is not None:
        key = ("stdiff_spot_nearest", section.spots.fingerprint(), section.origin, section.mask_hr.shape,
               int(section.mask_hr.sum()))  # fmt: skip
        out = section.meta.get(key)
        if out is None:
            out = spread_over_spots(section.footprints(), section.mask_hr)
            section.meta[key] = out
        return out
    f = section.factor
    up = np.repeat(np.repeat(lr_density(section), f, axis=-2), f, axis=-1)
    return up * section.mask_hr.astype(np.float32)[None]


def lr_density(section: Section) -> np.ndarray:
    """Each LR pixel's counts per tissue HR pixel of its block, ``(G, h, w)`` (0 where the block has no tissue)."""
    n = aggregate(section.mask_hr.astype(np.float32), section.factor)
    return np.where(n > 0, section.lr / np.maximum(n, 1.0), 0.0).astype(np.float32)


def spread_over_spots(fp: Footprints, mask_hr: np.ndarray) -> np.ndarray:
    """Each spot's counts spread evenly over its footprint's ``mask_hr`` pixels, the gaps interpolated.

    :meth:`~stdiff.spots.Footprints.distribute` of a flat map; ``(G, H, W)`` counts per HR pixel.
    """
    G, n = fp.spots.counts.shape
    flat = np.broadcast_to(mask_hr[None].astype(np.float64), (G, *mask_hr.shape))
    out = fp.distribute(flat, mask_hr)
    if n == 0:
        return out
    # tissue beyond every spot's kernel reach (the mask follows the histology, not the spots) takes
    # the value of the nearest reached tissue pixel, so no tissue pixel of the base is an empty hole
    reached = fp.interpolate(np.ones((1, n)), np.ones((1, n)))[0] > 0
    far = np.asarray(mask_hr, bool) & ~reached
    source = np.asarray(mask_hr, bool) & reached
    if far.any() and source.any():
        from scipy.ndimage import distance_transform_edt

        _, (iy, ix) = distance_transform_edt(~source, return_indices=True)
        out[:, far] = out[:, iy[far], ix[far]]
    return out
