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


def non_integer_example(values) -> float | None:
    """A value of ``values`` (numpy or dask) that is not a whole number, or ``None`` when all are."""
    bad = abs(values - np.floor(values + 0.5)) > 1e-4
    if hasattr(bad, "compute"):  # dask: one pass for the flag, a second only to show an example
        if not bool(bad.any().compute()):
            return None
        import dask.array as da

        return float(da.nanmax(da.where(bad, values, np.nan)).compute())
    if not bad.any():
        return None
    return float(np.asarray(values)[bad].flat[0])


def check_integer(values, what: str, *, allow_non_integer: bool, fix: str) -> None:
    """Raise when ``values`` (expected raw counts) are not whole numbers, unless ``allow_non_integer``."""
    if allow_non_integer:
        return
    example = non_integer_example(values)
    if example is not None:
        raise ValueError(
            f"{what} holds non-integer values (e.g. {example:.4g}) where raw counts are expected: it looks "
            f"normalised or log-transformed. {fix} If the values are counts on purpose (e.g. ambient-corrected "
            "or imputed), pass allow_non_integer=True."
        )


def check_expression(lr: np.ndarray, mask_lr: np.ndarray, what: str, *, min_counts: float) -> None:
    """Raise when the LR map holds no expression at all, or no LR pixel reaches ``min_counts``."""
    total = float(lr.sum())
    if total <= 0:
        raise ValueError(
            f"No expression: {what} has only zero counts on the section for the requested genes. Check genes= "
            "(genes expressed in this section), layer= (a layer of raw counts, not an empty one) and that the "
            "expression lies under the image."
        )
    if not mask_lr.any():
        raise ValueError(
            f"No tissue: no LR pixel of {what} reaches min_counts={min_counts:g} (the section has {total:g} "
            "counts in all); lower min_counts= or pick genes= that are expressed."
        )
