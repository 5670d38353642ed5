"""The nested LR / HR grid over a section and what a source puts on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Grid:
    """An LR grid of ``shape_lr`` pixels of ``lr_um`` µm from ``origin``; HR pixels are ``lr_um / factor``."""

    origin: tuple[float, float]
    lr_um: float
    factor: int
    shape_lr: tuple[int, int]

    @property
    def hr_um(self) -> float:
        """HR pixel size (µm)."""
        return self.lr_um / self.factor

    @property
    def shape_hr(self) -> tuple[int, int]:
        """HR grid shape ``(H, W)``."""
        return (self.shape_lr[0] * self.factor, self.shape_lr[1] * self.factor)

    @classmethod
    def covering(cls, origin: tuple[float, float], far: np.ndarray, lr_um: float, factor: int) -> Grid:
        """The smallest grid from ``origin`` whose LR pixels cover the point ``far`` = (x, y)."""
        h = max(1, int(np.ceil((far[1] - origin[1]) / lr_um - 1e-9)))
        w = max(1, int(np.ceil((far[0] - origin[0]) / lr_um - 1e-9)))
        return cls((float(origin[0]), float(origin[1])), float(lr_um), int(factor), (h, w))

    def crop(self, rows: slice, cols: slice) -> Grid:
        """The sub-grid of LR rows / columns ``rows``, ``cols`` (non-negative, step 1)."""
        return Grid(
            (self.origin[0] + cols.start * self.lr_um, self.origin[1] + rows.start * self.lr_um),
            self.lr_um,
            self.factor,
            (rows.stop - rows.start, cols.stop - cols.start),
        )


@dataclass
class Raster:
    """A source's expression on a :class:`Grid`.

    Attributes
    ----------
    lr
        ``(G, h, w)`` counts per LR pixel.
    hr
        ``(G, H, W)`` counts per HR pixel (the truth), or ``None``.
    mask_lr
        LR pixels with expression (tissue as the LR map sees it).
    mask_truth
        HR pixels where the truth is measured, when the source defines them (spots on the HR grid).
    dense
        Whether the truth is measured everywhere (transcripts, gene images): then it counts where the
        histology shows tissue or the truth has counts.
    lr_from
        ``"aggregate"`` (LR summed from HR pixels) or ``"spots"`` (spots as measurements).
    spots
        The :class:`~stdiff.spots.Spots` when they stay measurements (then ``lr`` is an LR-sized summary).
    """

    lr: np.ndarray
    hr: np.ndarray | None
    mask_lr: np.ndarray
    mask_truth: np.ndarray | None = None
    dense: bool = False
    lr_from: str = "aggregate"
    spots: Any = None
