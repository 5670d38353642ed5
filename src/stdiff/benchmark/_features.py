"""Histology features on the HR grid for the feature-based baselines, and the 180°-rotated control.

:func:`features` wraps :func:`stdiff.pp.histology_features` (stain, nuclear, texture and white-space
maps at the HR pixel and at 100 µm); :func:`standardize` applies training statistics;
:func:`rotated` gives the section with its image turned by 180°, the control of the "histology gain"
rows.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..pp import Section


def features(section: Section) -> tuple[np.ndarray, list[str]]:
    """Histology features of ``section`` on its HR grid, ``(F, H, W)`` float32 (NaN → 0), and their names."""
    from ..pp import histology_features

    out = histology_features(section)
    return np.nan_to_num(np.asarray(out.values, dtype=np.float32)), list(out.names)


def feature_source() -> str:
    """Which feature function the baselines use (for the report)."""
    return "stdiff.pp.histology_features (default options)"


def standardize(values: np.ndarray, mean: np.ndarray, sd: np.ndarray, *, clip: float = 5.0) -> np.ndarray:
    """``(F, H, W)`` features standardised with training statistics, clipped at ±``clip`` sd."""
    return np.clip((values - mean[:, None, None]) / sd[:, None, None], -clip, clip).astype(np.float32)


def rotated(section: Section) -> Section:
    """The section with its histology image rotated by 180° (expression, masks untouched).

    ``meta`` is copied so that caches keyed in it (e.g. histology features) stay with their image.
    """
    return replace(section, he=np.ascontiguousarray(np.rot90(section.he, 2, axes=(-2, -1))), meta=dict(section.meta))
