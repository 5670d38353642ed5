"""Assemble a spot-based section of a dataset loader (image + circles + linked table) as a SpatialData."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def spots_sdata(
    he: Any,
    counts: np.ndarray,
    genes: pd.Index,
    spot_ids: np.ndarray,
    centres_um: np.ndarray,
    radius_um: float,
    obs: dict[str, Any],
    attrs: dict[str, Any],
    coordinate_system: str = "global",
):
    """Image ``"he"`` (an element in µm), circles ``"spots"`` and table ``"table"`` (:func:`stdiff.io.from_spots`)."""
    from ..io import from_spots

    return from_spots(
        counts, centres_um, he, genes=list(genes), spot_ids=list(spot_ids), units="um", spot_diameter_um=2 * radius_um,
        obs=obs, attrs=attrs, coordinate_system=coordinate_system,
    )  # fmt: skip
