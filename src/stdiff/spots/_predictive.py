"""The predictive distribution of counts around a fitted rate, calibrated on held-out spots.

A count under a footprint (or in an HR pixel) with fitted rate ``μ`` is Poisson around ``μ · ε``,
where ``ε`` is a mean-one log-normal error of the rate with log-variance ``s²``: the part of the
expression the fit cannot know (a spot's own capture, structure between measurements). Its mean is
``μ`` and its variance ``μ + μ² (e^{s²} − 1)``; its quantiles are those of the negative binomial with
the same two moments (size ``1 / (e^{s²} − 1)``), exact for a Gamma error and close to the log-normal
one. The error grows with the distance ``d`` to the nearest measurement:
``s = σ_g · sqrt(floor + (1 − floor) · d / pitch)``, and ``σ_g`` is chosen per gene so that the
central interval of held-out spots (each about a pitch from the nearest measured one, predicted by
a fit that did not see it) holds the nominal share of their counts (:func:`calibrate_error`).
"""

from __future__ import annotations

import numpy as np

#: Nominal level of the calibrated central interval.
LEVEL = 0.9
#: Relative log-variance of the rate's error at a measurement centre (see the module). Kept on validation
#: data: on the synthetic Visium split, the 90% interval's coverage of the truth is 0.945 at 0.25 and
#: 0.949-0.955 at 0.5-1 (benchmarks/default_spread.py, benchmarks/results/validation/default_spread_spot_rate.txt).
FLOOR = 0.25
#: σ tried by :func:`calibrate_error` before bisection.
SIGMA_GRID: tuple[float, ...] = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def distance_scale(distance: np.ndarray, pitch: float, floor: float = FLOOR) -> np.ndarray:
    """``sqrt(floor + (1 − floor) · d / pitch)``: how the rate's error grows away from a measurement."""
    return np.sqrt(floor + (1.0 - floor) * np.asarray(distance, np.float64) / float(pitch))


def _size(s2: np.ndarray) -> np.ndarray:
    """Negative-binomial size ``1 / (e^{s²} − 1)`` (``inf``: Poisson)."""
    em1 = np.expm1(np.asarray(s2, np.float64))
    return np.where(em1 > 1e-12, 1.0 / np.maximum(em1, 1e-12), np.inf)


def predictive_sd(mean: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """``sqrt(μ + μ² (e^{s²} − 1))``: the predictive sd of a count with rate ``μ`` and log-error variance ``s²``."""
    mu = np.asarray(mean, np.float64)
    return np.sqrt(np.maximum(mu + mu * mu * np.expm1(s2), 0.0))


def predictive_quantile(q: float, mean: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """The ``q`` quantile of the predictive count distribution (negative binomial; Poisson where ``s² = 0``)."""
    from scipy import stats

    mu = np.maximum(np.asarray(mean, np.float64), 0.0)
    k = np.broadcast_to(_size(s2), mu.shape)
    out = np.zeros(mu.shape)
    nb = np.isfinite(k) & (mu > 0)
    out[nb] = stats.nbinom.ppf(q, k[nb], k[nb] / (k[nb] + mu[nb]))
    po = ~np.isfinite(k) & (mu > 0)
    out[po] = stats.poisson.ppf(q, mu[po])
    return out


def predictive_sample(rng: np.random.Generator, mean: np.ndarray, s2: np.ndarray, n: int) -> np.ndarray:
    """``n`` draws ``(n, *mean.shape)`` of counts: Poisson around ``μ`` times a mean-one Gamma error."""
    mu = np.maximum(np.asarray(mean, np.float64), 0.0)
    k = np.broadcast_to(_size(s2), mu.shape)
    finite = np.isfinite(k)
    shape = np.where(finite, k, 1.0)
    err = np.where(finite[None], rng.gamma(shape[None].repeat(n, 0), 1.0 / shape[None]), 1.0)
    return rng.poisson(mu[None] * err).astype(np.float32)


def predictive_cdf(k: np.ndarray, mean: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """``P(count ≤ k)`` of the predictive distribution (negative binomial; Poisson where ``s² = 0``); 0 for ``k < 0``."""
    from scipy import special

    k = np.asarray(k, np.float64)
    mu = np.maximum(np.asarray(mean, np.float64), 1e-300)
    size = np.broadcast_to(_size(s2), np.broadcast_shapes(mu.shape, k.shape))
    kk = np.maximum(k, 0.0)
    finite = np.isfinite(size)
    sz = np.where(finite, size, 1.0)
    nb = special.betainc(sz, kk + 1.0, sz / (sz + mu))
    po = special.gammaincc(kk + 1.0, mu)
    return np.where(k < 0, 0.0, np.where(finite, nb, po))


def interval_coverage(pred: np.ndarray, y: np.ndarray, s2: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """Per gene, the share of ``y`` ``(G, m)`` inside the central ``level`` predictive interval.

    ``y`` is inside ``[q_a, q_{1−a}]`` exactly when ``F(y) ≥ a`` and ``F(y − 1) < 1 − a`` (``F`` the
    predictive CDF), which needs two CDF evaluations and no quantile search.
    """
    a = (1.0 - level) / 2.0
    y = np.asarray(y, np.float64)
    inside = (predictive_cdf(y, pred, s2) >= a) & (predictive_cdf(y - 1.0, pred, s2) < 1.0 - a)
    return inside.mean(-1)


def calibrate_error(
    pred: np.ndarray,
    y: np.ndarray,
    scale: np.ndarray,
    *,
    level: float = LEVEL,
    max_spots: int = 1500,
    max_values: int = 300_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene ``σ_g`` so that the central ``level`` interval holds ``level`` of the held-out counts.

    ``pred``, ``y``: ``(G, m)`` held-out predictions and counts; ``scale`` ``(m,)``: each one's
    :func:`distance_scale`. The smallest ``σ`` of :data:`SIGMA_GRID` that reaches ``level``, refined by
    bisection (where none does, the one of highest coverage), for all genes at once, on at most
    ``max_spots`` spots and ``max_values`` gene × spot values (a seeded subset of the spots, so the
    cost does not grow with the panel). Returns ``(σ (G,), achieved coverage (G,))``.
    """
    pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)
    scale = np.asarray(scale, np.float64)
    m = int(min(max_spots, max(200, max_values // max(y.shape[0], 1))))
    if y.shape[1] > m:
        keep = np.sort(np.random.default_rng(seed).choice(y.shape[1], m, replace=False))
        pred, y, scale = pred[:, keep], y[:, keep], scale[keep]
    G = y.shape[0]

    def cover(sigma: np.ndarray) -> np.ndarray:
        return interval_coverage(pred, y, (sigma[:, None] * scale[None]) ** 2, level)

    # coverage rises with σ, then falls (a very wide error piles the mass at 0): bracket the first
    # crossing on a coarse grid, then bisect inside it
    grid = np.asarray(SIGMA_GRID)
    covs = np.stack([cover(np.full(G, g)) for g in grid])  # (len(grid), G)
    reached = covs >= level
    first = np.where(reached.any(0), reached.argmax(0), covs.argmax(0))
    hi = grid[first]
    lo = np.where(first > 0, grid[np.maximum(first - 1, 0)], 0.0)
    bisect = reached.any(0) & (first > 0)
    for _ in range(6):
        mid = 0.5 * (lo + hi)
        ok = cover(mid) >= level
        hi = np.where(bisect & ok, mid, hi)
        lo = np.where(bisect & ~ok, mid, lo)
    return hi, cover(hi)
