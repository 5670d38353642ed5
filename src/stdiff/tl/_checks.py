"""The checks :func:`~stdiff.tl.superresolve` makes on its arguments before reading or computing anything.

Each names the argument, the value passed and the fix; what needs the data (genes present, spots,
image, coordinate systems) is checked when the section is opened, still before any fit or prediction.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["check_gene_list", "check_options", "positive_int", "positive_number"]


def positive_int(value: Any, name: str, *, minimum: int = 1, fix: str = "") -> int | None:
    """``value`` as an ``int`` ≥ ``minimum`` (``None`` passes), else a ``ValueError`` naming ``name``."""
    if value is None:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, numbers.Real) and np.isfinite(value) and float(value).is_integer():
        ok = True
    if not ok or int(value) < minimum:
        raise ValueError(f"{name} must be a whole number ≥ {minimum}, got {value!r}.{' ' + fix if fix else ''}")
    return int(value)


def positive_number(value: Any, name: str, *, fix: str = "") -> float | None:
    """``value`` as a finite ``float`` > 0 (``None`` passes), else a ``ValueError`` naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of µm, got {value!r}.{' ' + fix if fix else ''}")
    return float(value)


def check_gene_list(genes: Any) -> list[str] | None:
    """``genes=`` as a list of unique names (``None`` passes: all genes), refusing a bare string or an empty list."""
    if genes is None:
        return None
    if isinstance(genes, str | bytes):
        raise TypeError(f"genes must be a list of gene names, got the string {genes!r}; pass genes=[{genes!r}].")
    if not hasattr(genes, "__iter__"):
        raise TypeError(f"genes must be a list of gene names, got {type(genes).__name__}.")
    genes = [str(g) for g in genes]
    if not genes:
        raise ValueError("genes=[] names no gene: pass the genes to super-resolve, or omit genes= for all of them.")
    seen: set[str] = set()
    dup = sorted({g for g in genes if g in seen or seen.add(g)})
    if dup:
        raise ValueError(f"genes names {dup[:10]} more than once; pass each gene once.")
    return genes


def check_options(
    *,
    chunk_lr: Any,
    n_samples: Any,
    num_inference_steps: Any,
    train_steps: Any,
    factor: Any,
    lr_um: Any,
    hr_um: Any,
    self_supervised: Any,
    scale_factors: Any,
    seed: Any,
) -> None:
    """The numbers and choices of a :func:`~stdiff.tl.superresolve` call, each checked on its own."""
    positive_int(chunk_lr, "chunk_lr", fix="It is the chunk side in LR pixels; omit it to size chunks by memory.")
    n = positive_int(n_samples, "n_samples", minimum=0, fix="Omit it for the model's default.")
    if n == 1:
        raise ValueError(
            "n_samples=1: the standard deviation is taken over the samples and needs at least 2 (default: the "
            "model's). Pass n_samples=0 for the mean only (no std image), or n_samples ≥ 2."
        )
    positive_int(num_inference_steps, "num_inference_steps", fix="Omit it for the steps chosen at training.")
    positive_int(train_steps, "train_steps", fix="Omit it for the config's.")
    positive_int(factor, "factor", fix="It is the number of HR pixels per LR pixel side.")
    positive_number(lr_um, "lr_um", fix="Spots need none: omit it.")
    positive_number(hr_um, "hr_um", fix="It is the output pixel, e.g. hr_um=10.")
    if self_supervised not in ("auto", "likelihood", "aggregation", "coarsen"):
        raise ValueError(
            f"self_supervised must be 'auto', 'likelihood', 'aggregation' or 'coarsen', got {self_supervised!r}."
        )
    if scale_factors is not None:
        if isinstance(scale_factors, str) or not hasattr(scale_factors, "__iter__"):
            raise ValueError(f"scale_factors must be a list of whole numbers ≥ 2 (e.g. [2, 2]), got {scale_factors!r}.")
        for s in scale_factors:
            positive_int(s, "each of scale_factors", minimum=2, fix="e.g. scale_factors=[2, 2], or [] for no pyramid.")
    positive_int(seed, "seed", minimum=0)
