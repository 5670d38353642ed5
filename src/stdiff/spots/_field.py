"""Smooth fields of spot measurements by local likelihood: the spatial part of the expression rate.

A spot's count ``y_s`` is Poisson around ``r(c_s) · μ_s``: an expected count ``μ_s`` (from what is
known of the spot: its histology, its total counts) times a smooth multiplicative field ``r``. The
local Poisson likelihood of ``r`` at a point ``x``, with each spot weighted by a Gaussian kernel of
its distance to ``x`` and a Gamma prior centred on the section's overall ratio, is maximised by a
ratio of kernel sums (Tibshirani & Hastie 1987; Loader 1999)::

    r(x) = (Σ_s K(x, c_s) y_s + a · r̄) / (Σ_s K(x, c_s) μ_s + a)

:func:`ratio_field` evaluates it; the prior (``a``, a tenth of a typical spot's expected count) keeps
the field finite and close to ``r̄`` far from every spot, so a gap is never a hole. The kernel's
width is chosen per gene by the held-out Poisson deviance of left-out spots
(:func:`field_deviance`), on cross-fitting folds of the measured spots only.
"""

from __future__ import annotations

import numpy as np

#: Kernel widths tried, in units of the spot pitch.
SIGMAS: tuple[float, ...] = (0.35, 0.5, 0.75, 1.0, 1.5, 2.5)
#: The Gaussian is cut at this many σ.
CUTOFF = 3.0
#: Strength of the prior, in units of a typical spot's expected count (a tenth of a neighbour).
PRIOR_STRENGTH = 0.1


def gaussian_kernel(query: np.ndarray, centres: np.ndarray, sigma: float, cutoff: float = CUTOFF):
    """Sparse ``(q, n)`` weights ``exp(−d² / 2σ²)`` between ``query`` ``(q, 2)`` and ``centres`` ``(n, 2)`` (µm).

    Pairs farther apart than ``cutoff · σ`` are 0.
    """
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    query, centres = np.asarray(query, np.float64), np.asarray(centres, np.float64)
    if len(query) == 0 or len(centres) == 0:
        return sp.csr_matrix((len(query), len(centres)))
    d = cKDTree(query).sparse_distance_matrix(cKDTree(centres), cutoff * sigma, output_type="coo_matrix")
    w = np.exp(-(d.data**2) / (2.0 * sigma**2))
    return sp.csr_matrix((w, (d.row, d.col)), shape=(len(query), len(centres)))


def ratio_prior(counts: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(r̄, a)`` ``(G, 1)`` each: the overall ratio of ``counts`` to ``expected`` and the prior's weight."""
    counts, expected = np.asarray(counts, np.float64), np.asarray(expected, np.float64)
    rbar = counts.sum(1, keepdims=True) / np.maximum(expected.sum(1, keepdims=True), 1e-300)
    a = PRIOR_STRENGTH * np.median(np.maximum(expected, 1e-12), axis=1, keepdims=True)
    return rbar, a


def ratio_field(kernel, counts: np.ndarray, expected: np.ndarray, prior=None) -> np.ndarray:
    """The local-likelihood field ``(G, q)`` at the kernel's query points (see the module).

    ``kernel``: sparse ``(q, n)``; ``counts``, ``expected``: ``(G, n)`` at the spots; ``prior``:
    ``(r̄, a)`` of :func:`ratio_prior` (default: from ``counts`` and ``expected``).
    """
    counts, expected = np.asarray(counts, np.float64), np.asarray(expected, np.float64)
    rbar, a = ratio_prior(counts, expected) if prior is None else prior
    num = np.asarray(kernel @ counts.T).T + a * rbar
    den = np.asarray(kernel @ expected.T).T + a
    return num / den


def poisson_deviance(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise Poisson deviance ``2 (y log(y/μ) − (y − μ))`` (0 where ``pred == y``)."""
    mu = np.maximum(np.asarray(pred, np.float64), 1e-12)
    y = np.asarray(y, np.float64)
    ylogy = np.where(y > 0, y * np.log(np.maximum(y, 1e-12) / mu), 0.0)
    return 2.0 * (ylogy - (y - mu))


def fold_kernels(xy: np.ndarray, fold: np.ndarray, pitch: float, sigmas: tuple[float, ...] = SIGMAS) -> dict:
    """``{(fold, i): kernel}`` from each fold's spots to the other folds' spots, for every width ``sigmas[i]``."""
    out = {}
    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        for i, s in enumerate(sigmas):
            out[(k, i)] = gaussian_kernel(xy[te], xy[tr], s * pitch)
    return out


def field_deviance(
    xy: np.ndarray,
    counts: np.ndarray,
    expected: list[np.ndarray],
    fold: np.ndarray,
    pitch: float,
    sigmas: tuple[float, ...] = SIGMAS,
    kernels: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out deviance ``(S, G)`` of the field for each kernel width, and the held-out predictions.

    ``expected[k]`` ``(G, n)`` are the expected counts of every spot under the fit that did not see
    fold ``k``; for each fold, the field of the other spots predicts its spots
    (``r(c_s) · expected_s``). Returns the summed deviance per width and gene and the predictions
    ``(S, G, n)`` (each spot predicted by the fit that held it out). ``kernels``: :func:`fold_kernels`
    (computed here when not given).
    """
    counts = np.asarray(counts, np.float64)
    kernels = fold_kernels(xy, fold, pitch, sigmas) if kernels is None else kernels
    G, n = counts.shape
    dev = np.zeros((len(sigmas), G))
    pred = np.zeros((len(sigmas), G, n))
    for j, k in enumerate(np.unique(fold)):
        tr, te = fold != k, fold == k
        mu = expected[j]
        prior = ratio_prior(counts[:, tr], mu[:, tr])
        for i in range(len(sigmas)):
            r = ratio_field(kernels[(k, i)], counts[:, tr], mu[:, tr], prior)
            pred[i][:, te] = r * mu[:, te]
            dev[i] += poisson_deviance(pred[i][:, te], counts[:, te]).sum(1)
    return dev, pred
