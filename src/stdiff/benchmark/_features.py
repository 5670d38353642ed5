"""Histology features on the HR grid for the feature-based baselines (ridge, iStar-like MLP).

:func:`features` uses :func:`stdiff.pp.histology_features` when the installed package has it, and
otherwise a simple fallback (:func:`fallback_features`): per HR pixel, the block mean and standard
deviation of each image channel's optical density, and the block means smoothed with a 100 µm
Gaussian (tissue context). :func:`rotated` gives the section with its image turned by 180°, the
control of the "histology gain" rows.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..pp import Section

CONTEXT_UM: float = 100.0


def fallback_features(section: Section) -> tuple[np.ndarray, list[str]]:
    """Optical-density block statistics (+ their 100 µm smoothing), ``(F, H, W)`` float32 and names."""
    from scipy.ndimage import gaussian_filter

    s = section.he_scale
    he = np.asarray(section.he, dtype=np.float32)
    od = -np.log((he + 1.0) / 256.0)
    c, hh, ww = od.shape
    H, W = hh // s, ww // s
    blocks = od[:, : H * s, : W * s].reshape(c, H, s, W, s)
    mean = blocks.mean(axis=(2, 4))
    sd = blocks.std(axis=(2, 4))
    sigma = CONTEXT_UM / section.hr_um
    ctx = np.stack([gaussian_filter(m, sigma, mode="nearest") for m in mean])
    names = [f"od{i}_mean" for i in range(c)] + [f"od{i}_sd" for i in range(c)] + [f"od{i}_ctx100" for i in range(c)]
    return np.concatenate([mean, sd, ctx]).astype(np.float32), names


def features(section: Section) -> tuple[np.ndarray, list[str]]:
    """Histology features of ``section`` on its HR grid, ``(F, H, W)``, and their names."""
    try:
        from ..pp import histology_features  # type: ignore[attr-defined]
    except ImportError:
        return fallback_features(section)
    out = histology_features(section)
    if hasattr(out, "values") and hasattr(out, "names"):  # HistologyFeatures
        feats, names = out.values, list(out.names)
    elif isinstance(out, tuple):
        feats, names = out[0], list(out[1])
    else:
        feats, names = out, [f"f{i}" for i in range(len(out))]
    return np.nan_to_num(np.asarray(feats, dtype=np.float32)), names


def feature_source() -> str:
    """Which feature function :func:`features` uses."""
    try:
        from ..pp import histology_features  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        return "fallback: optical-density block mean/sd + 100 µm Gaussian context (benchmark/_features.py)"
    return "stdiff.pp.histology_features"


def standardize(values: np.ndarray, mean: np.ndarray, sd: np.ndarray, *, clip: float = 5.0) -> np.ndarray:
    """``(F, H, W)`` features standardised with training statistics, clipped at ±``clip`` sd."""
    return np.clip((values - mean[:, None, None]) / sd[:, None, None], -clip, clip).astype(np.float32)


def rotated(section: Section) -> Section:
    """The section with its histology image rotated by 180° (expression, masks untouched)."""
    return replace(section, he=np.ascontiguousarray(np.rot90(section.he, 2, axes=(-2, -1))))
