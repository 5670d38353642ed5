"""Probabilistic metrics of posterior samples: CRPS, interval coverage, spread-skill, reliability.

All functions take an ensemble ``samples`` of shape ``(n, G, P)`` (``n`` samples, ``G`` genes, ``P``
tissue pixels) and the truth ``(G, P)``, in the benchmark's normalised space, and return per-gene
values. Samples are scored as they come from the model: whole-section samples, never averaged with
other samples (blending independent tiles would shrink the spread).

- **CRPS** (:func:`crps_ensemble`): the *fair* ensemble estimator (Ferro 2014),
  ``mean_i |x_i − y| − Σ_{i,j} |x_i − x_j| / (2 n (n − 1))``, unbiased for the CRPS of the
  distribution the samples come from. A point forecast (``n = 1``) gets its absolute error, so
  deterministic methods sit in the same column with CRPS = MAE.
- **Coverage** (:func:`coverage`) of the central 50% and 90% prediction intervals. With at least
  :data:`MIN_EMPIRICAL` samples the interval is given by the empirical quantiles of the samples
  (Weibull plotting positions, so that a new draw falls inside with the nominal probability);
  with fewer it is the Gaussian prediction interval ``mean ± t_{n−1, q} · sd · √(1 + 1/n)`` (``sd``
  with ``ddof = 1``), which is exact for a Gaussian ensemble of any size ``n ≥ 2``.
- **Spread-skill** (:func:`spread_skill`): ``rms(sd) · √((n + 1) / n) / RMSE(ensemble mean)`` with
  ``sd`` of ``ddof = 1``; 1 for a calibrated ensemble, < 1 over-confident, > 1 under-confident.
  (The issue's wording "RMSE / rms sd" is the reciprocal; we report spread over skill, as the model
  review does, so that the ideal is 1 and over-confidence is below 1.)
- **Reliability** (:func:`reliability`): pixels pooled over genes, binned by predicted sd
  (quantile bins); per bin the calibrated spread ``rms(sd)·√((n+1)/n)`` against the RMSE of the
  ensemble mean. A calibrated ensemble lies on the diagonal.
"""

from __future__ import annotations

import math

import numpy as np

from .._scores import as_ensemble, crps_ensemble

#: Smallest ensemble whose intervals are taken from empirical quantiles (below: Gaussian intervals).
MIN_EMPIRICAL: int = 20
#: Nominal central-interval levels reported as ``coverage50`` / ``coverage90``.
LEVELS: tuple[float, ...] = (0.5, 0.9)
PROB_METRICS: tuple[str, ...] = ("crps", "coverage50", "coverage90", "spread_skill")


def crps_gaussian(mu: np.ndarray, sigma: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Closed-form CRPS of a Gaussian ``N(mu, sigma²)`` at ``y`` (elementwise)."""
    from scipy.stats import norm

    mu, sigma, y = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (mu, sigma, y)))
    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))


def interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Central ``level`` prediction interval of an ensemble ``(n, ...)``: ``(lower, upper, method)``.

    ``method`` is ``"empirical"`` (sample quantiles, ``n ≥`` :data:`MIN_EMPIRICAL`) or ``"gaussian-t"``
    (``mean ± t_{n−1} · sd · √(1 + 1/n)``).
    """
    from scipy.stats import t as student_t

    x = np.asarray(samples, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        raise ValueError("An interval needs at least 2 samples.")
    a = (1.0 - float(level)) / 2.0
    if n >= MIN_EMPIRICAL:
        # Weibull plotting positions (rank p·(n+1)): a new draw from the same distribution falls between
        # them with probability 1 − 2a exactly (the default linear positions under-cover by ~2/(n+1))
        lo, hi = np.quantile(x, [a, 1.0 - a], axis=0, method="weibull")
        return lo, hi, "empirical"
    mean, sd = x.mean(0), x.std(0, ddof=1)
    half = student_t.ppf(1.0 - a, df=n - 1) * sd * math.sqrt(1.0 + 1.0 / n)
    return mean - half, mean + half, "gaussian-t"


def coverage(samples: np.ndarray, truth: np.ndarray, level: float) -> np.ndarray:
    """Share of pixels whose truth lies in the central ``level`` interval, per gene (``(G,)``)."""
    x, y = as_ensemble(samples, truth)
    if x.shape[0] < 2:
        return np.full(y.shape[:-1], np.nan)
    lo, hi, _ = interval(x, level)
    return ((y >= lo) & (y <= hi)).mean(-1)


def spread_skill(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``rms(sd) · √((n+1)/n) / RMSE(ensemble mean)`` per gene (``(G,)``; NaN for ``n < 2``)."""
    x, y = as_ensemble(samples, truth)
    n = x.shape[0]
    if n < 2:
        return np.full(y.shape[:-1], np.nan)
    spread = np.sqrt(x.var(0, ddof=1).mean(-1) * (n + 1) / n)
    skill = np.sqrt(((x.mean(0) - y) ** 2).mean(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(skill > 0, spread / skill, np.nan)


def reliability(samples: np.ndarray, truth: np.ndarray, *, bins: int = 10) -> dict[str, list[float]]:
    """Binned spread against binned error, all genes and pixels pooled (quantile bins of the sd).

    Returns ``{"spread": [...], "rmse": [...], "count": [...]}`` per bin; spread is
    ``rms(sd)·√((n+1)/n)`` and rmse that of the ensemble mean, so a calibrated ensemble gives equal values.
    """
    x, y = as_ensemble(samples, truth)
    n = x.shape[0]
    if n < 2:
        return {"spread": [], "rmse": [], "count": []}
    var = x.var(0, ddof=1).ravel() * (n + 1) / n
    err2 = ((x.mean(0) - y) ** 2).ravel()
    edges = np.unique(np.quantile(var, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, var, side="right") - 1, 0, max(len(edges) - 2, 0))
    out: dict[str, list[float]] = {"spread": [], "rmse": [], "count": []}
    for b in range(max(len(edges) - 1, 1)):
        sel = idx == b
        if sel.any():
            out["spread"].append(float(np.sqrt(var[sel].mean())))
            out["rmse"].append(float(np.sqrt(err2[sel].mean())))
            out["count"].append(int(sel.sum()))
    return out


def evaluate_samples(
    samples: list[np.ndarray] | None,
    means: list[np.ndarray],
    truths: list[np.ndarray],
    masks: list[np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, list[float]] | None, str]:
    """Per-gene probabilistic metrics over the tissue pixels of all test sections.

    ``samples``: per section ``(n, G, H, W)``, or ``None`` for a deterministic method, whose CRPS is
    the MAE of ``means`` and whose coverage/spread-skill are NaN. Returns ``(per-metric (G,) arrays,
    reliability or None, interval method)``.
    """
    truth = np.concatenate([t[:, m] for t, m in zip(truths, masks)], axis=1)
    if samples is None:
        mean = np.concatenate([p[:, m] for p, m in zip(means, masks)], axis=1)
        nan = np.full(truth.shape[0], np.nan)
        return {"crps": crps_ensemble(mean, truth), "coverage50": nan, "coverage90": nan, "spread_skill": nan}, None, ""
    ens = np.concatenate([s[:, :, m] for s, m in zip(samples, masks)], axis=2)
    n = ens.shape[0]
    vals = {
        "crps": crps_ensemble(ens, truth),
        "coverage50": coverage(ens, truth, 0.5),
        "coverage90": coverage(ens, truth, 0.9),
        "spread_skill": spread_skill(ens, truth),
    }
    how = "" if n < 2 else ("empirical quantiles" if n >= MIN_EMPIRICAL else "Gaussian-t (mean ± t·sd·√(1+1/n))")
    return vals, reliability(ens, truth), how
