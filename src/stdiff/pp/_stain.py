"""Stain separation and stain statistics of histology images.

Colour deconvolution of RGB H&E into haematoxylin / eosin / residual optical densities, Otsu
thresholds, and :func:`stain_reference`, the slide-wide statistics that
:func:`~stdiff.pp.histology_features` normalises by.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["STAIN_REFERENCE_KEY", "stain_reference"]

# Ruifrok & Johnston (2001) stain vectors (rows: haematoxylin, eosin, residual/DAB), as in skimage.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True))
_BACKGROUND_OD = 0.15  # summed RGB optical density below which a pixel is glass/white space
#: ``section.meta`` key of a slide-wide :func:`stain_reference` (set on chunks of one slide)
STAIN_REFERENCE_KEY = "stain_reference"


def _otsu(values: np.ndarray, *, max_n: int = 1_000_000) -> float:
    from skimage.filters import threshold_otsu

    values = values[np.isfinite(values)]
    if values.size > max_n:
        values = values[:: int(np.ceil(values.size / max_n))]
    if values.size == 0 or values.min() == values.max():
        return float("inf")
    return float(threshold_otsu(values))


def _rgb_to_hed(he: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rgb 0–255 float32, tissue mask, non-negative H/E/residual optical densities)``."""
    rgb = he.astype(np.float32)
    if he.dtype != np.uint8:
        rgb = rgb / max(float(np.nanmax(rgb)), 1e-6) * 255.0
    od = -np.log10((rgb + 1.0) / 256.0)  # (3, Y, X) optical density per RGB channel
    tissue = od.sum(0) > _BACKGROUND_OD
    hed = np.tensordot(_HED_FROM_RGB.T.astype(np.float32), od, axes=1)  # (3, Y, X): H, E, residual
    return rgb, tissue, np.maximum(hed, 0.0)


def _channel_scale(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32)
    if np.issubdtype(img.dtype, np.integer):
        x = x / float(np.iinfo(img.dtype).max)
    return x


def stain_reference(images: Sequence[np.ndarray], *, max_pixels: int = 2_000_000, seed: int = 0) -> dict[str, Any]:
    """The section-wide statistics that :func:`histology_features` normalises by, from image pieces.

    For H&E: the 99th percentiles of haematoxylin and eosin optical density on tissue and the Otsu
    threshold of the normalised haematoxylin (nuclei); for other images the Otsu threshold of
    channel 0. Pooled over ``images`` (e.g. windows read across one slide, each ``(C, Y, X)``) from at
    most ``max_pixels`` random pixels. Put the result in ``section.meta["stain_reference"]`` of every
    window of that slide so that all windows are normalised alike (what :func:`stdiff.tl.superresolve`
    does when it works chunk by chunk).
    """
    images = [np.asarray(im) for im in images if np.asarray(im).size]
    if not images:
        return {}
    rng = np.random.default_rng(seed)
    per = max(1, max_pixels // len(images))
    if images[0].shape[0] != 3:
        vals = [_channel_scale(im[:1]).ravel() for im in images]
        vals = [v[rng.choice(v.size, per, replace=False)] if v.size > per else v for v in vals]
        return {"otsu": _otsu(np.concatenate(vals))}
    pools = []
    for im in images:
        _, tissue, hed = _rgb_to_hed(im)
        v = hed[:2, tissue]
        pools.append(v[:, rng.choice(v.shape[1], per, replace=False)] if v.shape[1] > per else v)
    v = np.concatenate(pools, axis=1)
    if v.shape[1] == 0:
        return {}
    ref = np.maximum(np.percentile(v, 99, axis=1), 1e-3)
    return {"od99": [float(ref[0]), float(ref[1])], "otsu": _otsu(v[0] / ref[0])}
