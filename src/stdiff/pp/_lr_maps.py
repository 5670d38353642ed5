"""The measured expression on the HR grid, spread over the tissue pixels only (the honest interpolation base)."""

from __future__ import annotations

import numpy as np

from ._section import Section, aggregate


def lr_per_tissue_pixel(section: Section) -> np.ndarray:
    """The measurements spread evenly over the tissue HR pixels, ``(G, H, W)`` counts per HR pixel.

    Square LR maps: each LR pixel's counts are split evenly over the HR pixels of its
    ``factor × factor`` block that the input mask (:attr:`Section.mask_hr`, built from the LR map and
    the histology only) calls tissue; pixels off tissue get 0. Unlike block (nearest) upsampling of
    counts per HR pixel, a half-tissue block at the tissue edge is not diluted by its empty half.
    Summing the result over each block gives back the LR counts wherever the block has tissue.

    Spots (:attr:`Section.spots`): each spot's counts spread evenly over its footprint's tissue pixels
    and the gaps between spots filled by the normalised convolution of the spots' densities
    (:meth:`~stdiff.pp.Footprints.distribute` of a flat map), so every spot's footprint sums to its
    count and there are no blocks and no holes.
    """
    if section.spots is not None:
        key = ("stdiff_spot_nearest", tuple(section.genes), section.mask_hr.shape, int(section.mask_hr.sum()))
        out = section.meta.get(key)
        if out is None:
            G = len(section.genes)
            flat = np.broadcast_to(section.mask_hr[None].astype(np.float64), (G, *section.mask_hr.shape))
            out = section.footprints().distribute(flat, section.mask_hr)
            section.meta[key] = out
        return out
    f = section.factor
    mask = section.mask_hr.astype(np.float32)
    n = aggregate(mask, f)
    per = np.where(n > 0, section.lr / np.maximum(n, 1.0), 0.0).astype(np.float32)
    up = np.repeat(np.repeat(per, f, axis=-2), f, axis=-1)
    return up * mask[None]


def _tent_upsample(values: np.ndarray, weight: np.ndarray, factor: int) -> np.ndarray:
    """Mask-aware bilinear interpolation of per-LR-pixel ``values`` ``(G, h, w)`` to the HR grid.

    Normalised convolution with a tent (bilinear) kernel over the LR pixel centres: LR pixels with
    ``weight`` 0 do not contribute; HR pixels beyond the outermost centres take the nearest ones.
    """
    import torch
    import torch.nn.functional as F

    v = torch.as_tensor(values * weight[None], dtype=torch.float64)[None]
    m = torch.as_tensor(weight, dtype=torch.float64)[None, None]
    h, w = weight.shape
    size = (h * factor, w * factor)
    up_v = F.interpolate(v, size=size, mode="bilinear", align_corners=False)[0]
    up_m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0]
    near = np.repeat(np.repeat(values, factor, -2), factor, -1)
    out = np.where(up_m.numpy() > 1e-9, up_v.numpy() / np.maximum(up_m.numpy(), 1e-12), near)
    return out


def smooth_distribute(
    lr: np.ndarray, weights: np.ndarray, mask: np.ndarray, factor: int, *, iterations: int = 20
) -> np.ndarray:
    """Distribute each LR pixel's counts by ``weights`` with a *smooth* scaling (no block edges).

    ``HR = weights · U(r)``: ``r`` per LR pixel, ``U`` the mask-aware bilinear interpolation of ``r``
    to the HR grid, and ``r`` refined multiplicatively (``r ← r · LR / Σ_block HR``) so that the
    blocks sum close to their counts (not exactly: an exact sum per block needs a step at every
    block edge). ``lr`` ``(G, h, w)``, ``weights`` ``(G, H, W)``, ``mask`` ``(H, W)``.
    """
    f = int(factor)
    m = np.asarray(mask, bool)
    w = np.where(m[None], np.asarray(weights, np.float64), 0.0)
    lr = np.asarray(lr, np.float64)
    tissue = aggregate(m.astype(np.float64), f) > 0
    block_w = aggregate(w, f)
    even = (block_w <= 0) & tissue[None]
    w = np.where(np.repeat(np.repeat(even, f, -2), f, -1) & m[None], 1.0, w)
    block_w = aggregate(w, f)
    r = np.where(block_w > 0, lr / np.maximum(block_w, 1e-300), 0.0)
    live = tissue.astype(np.float64)
    for _ in range(int(iterations)):
        x = w * _tent_upsample(r, live, f)
        sums = aggregate(x, f)
        r = np.where(sums > 0, r * lr / np.maximum(sums, 1e-300), r)
    return (w * _tent_upsample(r, live, f)).astype(np.float32)
