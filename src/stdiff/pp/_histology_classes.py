"""Soft histology classes: tissue pixels grouped by what their histology features look like.

:class:`HistologyClasses` clusters standardised histology features (:func:`histology_features`) of a
section's tissue pixels with k-means (seeded, on at most ``max_pixels`` of them) and assigns every
pixel softly: ``ψ_k(x) ∝ exp(−‖φ(x) − m_k‖² / 2τ)``, with ``τ`` the median squared distance of a pixel
to its nearest centre. The classes are unsupervised (no expression is read), so they can be fitted
once on a whole section and shared by every cross-fitted learner without leaking held-out counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Classes by default.
N_CLASSES = 16


@dataclass
class HistologyClasses:
    """k-means centres ``(K, F)`` of standardised features and the softness ``τ`` (see the module)."""

    centres: np.ndarray
    tau: float

    @classmethod
    def fit(
        cls, features: np.ndarray, mask: np.ndarray, *, n_classes: int = N_CLASSES, seed: int = 0,
        max_pixels: int = 10000,
    ) -> HistologyClasses:  # fmt: skip
        """Cluster the ``mask`` pixels of ``features`` ``(F, H, W)`` (standardised) into ``n_classes`` classes."""
        from scipy.cluster.vq import kmeans2

        x = np.asarray(features, np.float64)[:, np.asarray(mask, bool)].T
        if len(x) == 0:
            raise ValueError("No tissue pixel to learn histology classes from.")
        rng = np.random.default_rng(seed)
        if len(x) > max_pixels:
            x = x[np.sort(rng.choice(len(x), max_pixels, replace=False))]
        k = int(min(n_classes, len(np.unique(x.round(6), axis=0))))
        centres, _ = kmeans2(x, k, seed=int(seed), minit="++")
        d2 = _sq_distances(x, centres)
        tau = float(np.median(d2.min(1)))
        return cls(centres=centres, tau=max(tau, 1e-6))

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return int(self.centres.shape[0])

    def soft(self, features: np.ndarray) -> np.ndarray:
        """Soft memberships ``(P, K)`` (rows sum to 1) of pixel features ``(P, F)``."""
        z = -_sq_distances(np.asarray(features, np.float64), self.centres) / (2.0 * self.tau)
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def state(self) -> dict:
        """Plain Python (checkpoints)."""
        return {"centres": self.centres.tolist(), "tau": float(self.tau)}

    @classmethod
    def from_state(cls, state: dict) -> HistologyClasses:
        """Rebuild from :meth:`state`."""
        return cls(centres=np.asarray(state["centres"], np.float64), tau=float(state["tau"]))


def _sq_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(P, K)`` squared Euclidean distances (no ``(P, K, F)`` temporary)."""
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None]
    return np.maximum(d2, 0.0)
