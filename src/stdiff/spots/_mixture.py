"""Spot counts as mixtures: how much each histology class holds, fitted by the Poisson likelihood of the sums.

A spot holds ``Ψ_sk`` of histology class ``k`` (the class's area under its footprint). If class ``k``
expresses gene ``g`` at ``W_gk`` counts per unit area, the spot's expected count is the footprint sum
``e_s Σ_k Ψ_sk W_gk`` (``e_s`` a known exposure). :func:`fit_class_rates` finds ``W ≥ 0`` by maximising
the Poisson likelihood of the counts (the EM / multiplicative updates of Poisson mixtures, as
XFuse's sum model and KL-NMF with fixed factors), with a Gamma prior that pulls every class towards
the gene's overall rate, so a class seen under few spots keeps a sensible rate. The updates are plain
array operations over all genes at once (no per-gene loop, no HR-sized array) and deterministic.
"""

from __future__ import annotations

import numpy as np

#: Fixed number of multiplicative updates (a work budget, not a wall-clock one).
ITERATIONS = 200
#: Strength of the prior, in spot-equivalents of exposure per class.
PRIOR_SPOTS = 2.0


def fit_class_rates(
    design: np.ndarray,
    counts: np.ndarray,
    exposure: np.ndarray | None = None,
    *,
    iterations: int = ITERATIONS,
    prior_spots: float = PRIOR_SPOTS,
) -> np.ndarray:
    """``W`` ``(G, K)``, counts per unit of class ``k`` for each gene, by the Poisson likelihood of the spots.

    Parameters
    ----------
    design
        ``(n, K)`` non-negative class amounts under each spot's footprint.
    counts
        ``(G, n)`` measured counts.
    exposure
        ``(n,)`` known multiplier of every spot's expectation (default 1).
    iterations, prior_spots
        Multiplicative updates, and the prior's weight (the exposure of ``prior_spots`` average spots
        per class) towards each gene's overall rate ``Σ_s y_gs / Σ_s e_s Σ_k Ψ_sk``.
    """
    y = np.asarray(counts, np.float64)
    B = np.asarray(design, np.float64)
    if exposure is not None:
        B = B * np.asarray(exposure, np.float64)[:, None]
    n, K = B.shape
    colsum = B.sum(0)  # (K,)
    overall = y.sum(1) / max(float(colsum.sum()), 1e-300)  # (G,)
    alpha = prior_spots * colsum.sum() / max(n * K, 1)
    W = np.repeat(overall[:, None], K, axis=1)
    prior = alpha * overall[:, None]
    for _ in range(int(iterations)):
        mu = W @ B.T  # (G, n)
        ratio = np.where(mu > 0, y / np.where(mu > 0, mu, 1.0), 0.0)
        W = (W * (ratio @ B) + prior) / (colsum[None] + alpha)
    return W
