"""Per-gene normalisation of counts, reversible so predictions map back to counts."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Normalizer:
    """Per-gene ``log1p`` normalisation of counts per HR pixel.

    A count ``x`` of gene ``g`` (per HR pixel) maps to ``z = log1p(x / size[g]) / scale[g]``:
    ``size`` is the gene's mean count per tissue HR pixel, so ``log1p`` acts on a unit-free
    ratio, and ``scale`` is the 99th percentile of ``log1p(x / size)`` so most of ``z`` lies
    in ``[0, 1]``. LR maps are first divided by ``factor**2`` (counts per HR pixel), so LR and
    HR live on the same scale. :meth:`inverse` maps ``z`` back to counts.

    Parameters
    ----------
    genes
        Gene names, in channel order.
    size
        Per-gene size factor (mean count per HR pixel on tissue).
    scale
        Per-gene scale of the ``log1p`` values.
    """

    genes: list[str]
    size: np.ndarray
    scale: np.ndarray
    eps: float = field(default=1e-6)

    @classmethod
    def fit(cls, counts: np.ndarray, genes: list[str], mask: np.ndarray | None = None) -> Normalizer:
        """Fit on counts per HR pixel of shape ``(G, ...)``; ``mask`` (spatial shape) selects tissue."""
        counts = np.asarray(counts, dtype=np.float64)
        flat = counts.reshape(counts.shape[0], -1)
        if mask is not None:
            flat = flat[:, np.asarray(mask, dtype=bool).reshape(-1)]
        if flat.shape[1] == 0:
            raise ValueError("Cannot fit the normalisation: the tissue mask selects no pixel.")
        size = flat.mean(axis=1)
        positive = size[size > 0]
        floor = positive.min() if positive.size else 1.0
        size = np.where(size > 0, size, floor)
        logs = np.log1p(flat / size[:, None])
        scale = np.quantile(logs, 0.99, axis=1)
        scale = np.where(scale > 1e-3, scale, np.maximum(logs.max(axis=1), 1e-3))
        return cls(genes=list(genes), size=size.astype(np.float64), scale=scale.astype(np.float64))

    def _bc(self, arr: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        shape = [1] * arr.ndim
        shape[axis] = -1
        return self.size.reshape(shape), self.scale.reshape(shape)

    def transform(self, counts: np.ndarray, *, factor: int = 1, axis: int = -3) -> np.ndarray:
        """Counts (per HR pixel, or per LR pixel with ``factor``) → normalised values (float32)."""
        counts = np.asarray(counts, dtype=np.float64) / float(factor) ** 2
        if np.any(counts < 0) or not np.all(np.isfinite(counts)):
            raise ValueError("Counts must be finite and non-negative before normalisation.")
        size, scale = self._bc(counts, axis)
        return (np.log1p(counts / size) / scale).astype(np.float32)

    def inverse(self, values: np.ndarray, *, factor: int = 1, axis: int = -3) -> np.ndarray:
        """Normalised values → counts per HR pixel (or per LR pixel with ``factor``)."""
        values = np.asarray(values, dtype=np.float64)
        size, scale = self._bc(values, axis)
        counts = size * np.expm1(np.clip(values, 0.0, None) * scale)
        return (counts * float(factor) ** 2).astype(np.float32)

    def subset(self, genes: list[str]) -> Normalizer:
        """The normaliser restricted (and reordered) to ``genes``."""
        index = {g: i for i, g in enumerate(self.genes)}
        missing = [g for g in genes if g not in index]
        if missing:
            raise KeyError(f"Genes {missing[:5]} are not in the normaliser (it knows {len(self.genes)} genes).")
        idx = np.array([index[g] for g in genes], dtype=int)
        return Normalizer(genes=list(genes), size=self.size[idx].copy(), scale=self.scale[idx].copy())

    def to_dict(self) -> dict:
        """Plain-Python representation (for checkpoints and attrs)."""
        return {"genes": list(self.genes), "size": self.size.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        """Inverse of :meth:`to_dict`."""
        return cls(genes=list(d["genes"]), size=np.asarray(d["size"], float), scale=np.asarray(d["scale"], float))
