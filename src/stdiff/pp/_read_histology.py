"""The histology image on a grid, the tissue masks derived from it, and whether it is fine enough."""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING

import numpy as np

from .._spatial import affine_to_cs, resample_image
from .._utils import logger
from ._grid import Grid, Raster
from ._section import aggregate

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod


def read_histology(
    sdata: sd_mod.SpatialData,
    image_key: str,
    cs: str,
    grid: Grid,
    he_scale: int,
    *,
    value_range: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The histology resampled to ``he_scale`` pixels per HR pixel of ``grid``, as ``uint8``.

    Only the part of the image under the grid is read, from the coarsest pyramid level that is still
    finer than the target (so a small grid reads little of a large lazily loaded image). Non-``uint8``
    images (fluorescence) are rescaled per channel from ``value_range`` (low, high), by default their
    1st–99.5th percentiles over the grid, to 0–255.
    """
    H, W = grid.shape_hr
    he = resample_image(
        sdata[image_key], cs, origin=grid.origin, pixel_um=grid.hr_um / he_scale, shape=(H * he_scale, W * he_scale)
    )
    if he.dtype != np.uint8:
        if value_range is None:
            value_range = (
                np.percentile(he, 1, axis=(1, 2), keepdims=True),
                np.percentile(he, 99.5, axis=(1, 2), keepdims=True),
            )
        lo_q, hi_q = value_range
        he = np.clip((he - lo_q) / np.maximum(hi_q - lo_q, 1e-12) * 255, 0, 255).astype(np.uint8)
    return he


def he_tissue(he: np.ndarray, he_scale: int) -> np.ndarray | None:
    """Tissue on the HR grid from an RGB image (optical density), ``None`` for non-RGB images."""
    if he.shape[0] != 3:
        return None
    c, H, W = he.shape
    od = -np.log((he.astype(np.float32) + 1.0) / 256.0).sum(0)
    small = od.reshape(H // he_scale, he_scale, W // he_scale, he_scale).mean(axis=(1, 3))
    return small > 0.15


def spot_tissue_mask(fp, he: np.ndarray, he_scale: int) -> np.ndarray:
    """The input mask of a spot section: the tissue the histology shows, wherever the spots are.

    A gap between spots, a position with no spot (held out, filtered, under a fold) and the tissue
    beyond the outermost spots are tissue like any other, predicted from the histology and the
    neighbouring spots. Tissue is where the optical density (smoothed over an HR pixel) exceeds a
    threshold set between the background and the tissue: halfway from the median density of the
    pixels over 1.5 pitches from every spot (where at least 5% are) to the 1st percentile under the
    spots, never under 0.15. Every spot's footprint is kept where the histology finds no tissue in
    it (its counts come from somewhere). Without an RGB histology, or when it finds tissue on under
    5% of the spots' reach (faint or no staining), the mask is the spots' reach.
    """
    reach = fp.reach()
    od = he_density(he, he_scale)
    if od is None:
        return reach
    mask = od > _tissue_threshold(fp, od)
    if (reach & mask).sum() < 0.05 * max(int(reach.sum()), 1):
        logger.warning("The histology shows tissue on under 5% of the spots' reach; the histology mask is ignored.")
        return reach
    A = fp.matrix
    on_tissue = np.asarray(A @ mask.ravel().astype(np.float64)).ravel()
    bare = np.nonzero((on_tissue <= 0) & (fp.area_px > 0))[0]
    if len(bare):
        mask.ravel()[A[bare].indices] = True
    return mask


def he_density(he: np.ndarray, he_scale: int) -> np.ndarray | None:
    """Optical density of an RGB image per HR pixel, smoothed over one pixel (``None`` for non-RGB images)."""
    from scipy import ndimage

    if he.shape[0] != 3:
        return None
    _, H, W = he.shape
    od = -np.log((he.astype(np.float32) + 1.0) / 256.0).sum(0)
    small = od.reshape(H // he_scale, he_scale, W // he_scale, he_scale).mean(axis=(1, 3))
    return ndimage.gaussian_filter(small, 1.0)


def _tissue_threshold(fp, od: np.ndarray, floor: float = 0.15) -> float:
    """The density between background (far from every spot) and the tissue under the spots (see above)."""
    covered = fp.coverage() > 0.5
    d, _ = fp.nearest()
    far = d > 1.5 * float(fp.spots.geometry.pitch_um)
    if not covered.any() or far.mean() < 0.05:
        return floor
    background, tissue = float(np.median(od[far])), float(np.percentile(od[covered], 1))
    return max(floor, 0.5 * (background + tissue)) if tissue > background else floor


def tissue_masks(raster: Raster, he: np.ndarray, factor: int, he_scale: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The input mask on the HR grid and where the truth is measured.

    The input mask uses only what exists at inference: the LR tissue pixels refined by the
    histology's tissue (an LR pixel keeps its whole block when the histology finds no tissue in it,
    e.g. faint staining). The truth mask (for the loss and scoring only) is the source's own, or for
    dense sources the LR tissue where the histology shows tissue or the truth has counts.
    """
    mask_hr = np.kron(raster.mask_lr, np.ones((factor, factor), dtype=bool))
    tissue = he_tissue(he, he_scale)
    mask_truth = raster.mask_truth
    if raster.dense and raster.hr is not None:
        mask_truth = mask_hr & (tissue | (raster.hr.sum(0) > 0)) if tissue is not None else mask_hr.copy()
    if tissue is not None:
        refined = mask_hr & tissue
        empty = np.kron(aggregate(refined.astype(np.int32), factor) == 0, np.ones((factor, factor), dtype=bool))
        mask_hr = refined | (mask_hr & empty)
    return mask_hr, mask_truth


#: sections already warned about a coarse histology: ``{sdata: {(image_key, cs, hr_um)}}`` (once per section)
_COARSE_WARNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_histology_resolution(sdata: sd_mod.SpatialData, image_key: str, cs: str, hr_um: float) -> None:
    """Warn, once per section, image and HR pixel, when the histology is coarser than half the HR pixel.

    The warning names the ``hr_um`` that would suit the image (twice its pixel, rounded up).
    """
    A = affine_to_cs(sdata[image_key], cs)
    um = float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))  # the image's finest pixel in µm
    if um <= hr_um / 2:
        return
    key = (image_key, cs, round(float(hr_um), 9))
    try:
        seen = _COARSE_WARNED.setdefault(sdata, set())
    except TypeError:  # pragma: no cover - an object that cannot be weakly referenced: warn every time
        seen = set()
    if key in seen:
        return
    seen.add(key)
    suit = math.ceil(2 * um) if 2 * um >= 2 else math.ceil(20 * um) / 10
    logger.warning(
        "The histology %r has %.3g µm pixels, coarser than half the HR pixel (%.3g µm): it cannot show structure "
        "inside an HR pixel, so the histology will add little. Use a full-resolution image, or hr_um=%g (twice the "
        "histology's pixel) for maps the histology can inform.",
        image_key, um, hr_um, suit,
    )  # fmt: skip
