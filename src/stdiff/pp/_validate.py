"""Checks on what the sources hold: gene names and raw counts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_genes(genes: Sequence[str] | None, available: Sequence[str], what: str) -> list[str]:
    """The requested genes (all of ``available`` when ``None``), checked to exist and be unique."""
    available = [str(g) for g in available]
    if genes is None:
        return available
    genes = [str(g) for g in genes]
    if len(set(genes)) != len(genes):
        raise ValueError("genes= contains duplicates.")
    have = set(available)
    missing = [g for g in genes if g not in have]
    if missing:
        raise KeyError(
            f"Genes {missing[:10]} are not in {what} ({len(available)} genes, e.g. {available[:5]}). "
            "Check the spelling or pass genes= from that list."
        )
    return genes


def check_counts(values: np.ndarray, what: str) -> None:
    """Raise when ``values`` hold NaN / infinite or negative counts."""
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} contains NaN or infinite counts; fill or drop them before tiling.")
    if values.size and values.min() < 0:
        raise ValueError(
            f"{what} contains negative counts (min {values.min():g}); stdiff expects raw counts "
            "(use a raw layer= or undo scaling/centering)."
        )
