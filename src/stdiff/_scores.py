"""Scores of an ensemble against the truth, shared by the model's calibration and the benchmark.

The fair ensemble CRPS (Ferro 2014), ``mean_i |x_i − y| − Σ_{i,j} |x_i − x_j| / (2 n (n − 1))``, is
unbiased for the CRPS of the distribution the samples come from; one sample gets its absolute error.
"""

from __future__ import annotations

import numpy as np


def as_ensemble(samples: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` ``(n, *truth.shape)`` (or one sample ``truth.shape``) and the truth, as float64."""
    x = np.asarray(samples, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    if x.ndim == y.ndim:
        x = x[None]
    if x.shape[1:] != y.shape:
        raise ValueError(f"Samples {x.shape} do not match the truth {y.shape} (expected (n, *truth.shape)).")
    return x, y


def crps_ensemble(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Fair ensemble CRPS averaged over the last axis (pixels): ``(n, G, P)`` + ``(G, P)`` → ``(G,)``.

    With ``n = 1`` this is the mean absolute error.
    """
    x, y = as_ensemble(samples, truth)
    n = x.shape[0]
    skill = np.abs(x - y[None]).mean(0)
    if n == 1:
        return skill.mean(-1)
    xs = np.sort(x, axis=0)
    # Σ_{i,j} |x_i − x_j| = 2 Σ_i (2i − n − 1) x_(i), i = 1..n
    w = (2 * np.arange(1, n + 1) - n - 1).reshape((n,) + (1,) * (x.ndim - 1))
    pair = 2.0 * (w * xs).sum(0)
    return (skill - pair / (2.0 * n * (n - 1))).mean(-1)
