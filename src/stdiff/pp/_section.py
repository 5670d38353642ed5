"""The rasterised section (:class:`Section`), paired tiles (:class:`Tiles`) and block aggregation.

All geometry is in micrometres of a coordinate system. A :class:`Section` holds whole-section
rasters on three nested grids that share one origin:

- LR grid: ``lr_um`` per pixel (e.g. 100 µm, a Visium-like spot grid);
- HR grid: ``lr_um / factor`` per pixel; every LR pixel is exactly ``factor × factor`` HR pixels;
- histology grid: ``he_scale`` image pixels per HR pixel (``he_um = lr_um / factor / he_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .._spatial import grid_transform
from ._normalize import Normalizer

if TYPE_CHECKING:  # pragma: no cover
    from ..spots import Footprints, Spots


def aggregate(hr: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``factor × factor`` blocks of the last two axes (HR counts → LR counts)."""
    *lead, H, W = hr.shape
    if H % factor or W % factor:
        raise ValueError(f"HR shape {(H, W)} is not a multiple of factor={factor}.")
    return hr.reshape(*lead, H // factor, factor, W // factor, factor).sum(axis=(-3, -1))


@dataclass
class Section:
    """One tissue section rasterised on aligned LR, HR and histology grids.

    Attributes
    ----------
    genes
        Gene names (channel order of ``lr`` / ``hr``).
    lr
        ``(G, h, w)`` counts per LR pixel.
    hr
        ``(G, h·factor, w·factor)`` counts per HR pixel (the truth), or ``None`` (inference).
    he
        ``(C, h·factor·he_scale, w·factor·he_scale)`` histology image (uint8 for RGB).
    mask_lr, mask_hr
        Tissue masks on the LR and HR grids, derived only from what exists at inference (the LR
        map and the histology); they are the model's input mask.
    origin
        ``(x, y)`` of the grids' top-left corner in ``coordinate_system``.
    lr_um, factor, he_scale
        Grid geometry: LR pixel size (µm), HR pixels per LR pixel (per axis), histology pixels per
        HR pixel (per axis).
    coordinate_system, image_key, source
        Where the section came from: ``source`` is how the expression was read ("points",
        "image" or "spots") and ``lr_from`` whether LR was aggregated from HR or mapped from spots.
    mask_truth
        HR pixels where the truth is measured (for the training loss and for scoring only; never an
        input). ``None`` means ``mask_hr``; see :attr:`truth_mask`.
    spots
        The measured spots (:class:`~stdiff.spots.Spots`: centres, radii and counts in µm) when the
        expression is a spot platform's; then the LR grid is only a tiling of the HR grid at about
        the spot pitch, ``lr`` is the spot-native map (:meth:`footprints`) summed per LR pixel, and
        every map relates to the spots through their footprints. ``None`` for square LR maps.
    """

    genes: list[str]
    lr: np.ndarray
    hr: np.ndarray | None
    he: np.ndarray
    mask_lr: np.ndarray
    mask_hr: np.ndarray
    origin: tuple[float, float]
    lr_um: float
    factor: int
    he_scale: int
    coordinate_system: str
    image_key: str | None = None
    source: str = "image"
    lr_from: str = "aggregate"
    name: str = "section"
    meta: dict[str, Any] = field(default_factory=dict)
    mask_truth: np.ndarray | None = None
    spots: Spots | None = None
    _footprints: Footprints | None = field(default=None, init=False, repr=False, compare=False)

    def footprints(self) -> Footprints:
        """The spots' measurement operator on this section's HR grid (computed once)."""
        if self.spots is None:
            raise ValueError(f"Section {self.name!r} has no spots (its expression is a square LR map).")
        if self._footprints is None:
            from ..spots import Footprints

            H, W = self.mask_hr.shape
            self._footprints = Footprints(self.spots, self.origin, self.hr_um, (H, W))
        return self._footprints

    @property
    def truth_mask(self) -> np.ndarray:
        """HR pixels where the truth is measured (``mask_truth``, or ``mask_hr`` when not set)."""
        return self.mask_hr if self.mask_truth is None else self.mask_truth

    @property
    def hr_um(self) -> float:
        """HR pixel size (µm)."""
        return self.lr_um / self.factor

    @property
    def he_um(self) -> float:
        """Histology pixel size (µm)."""
        return self.hr_um / self.he_scale

    @property
    def shape_lr(self) -> tuple[int, int]:
        """LR grid shape ``(h, w)``."""
        return tuple(self.lr.shape[-2:])  # type: ignore[return-value]

    def hr_transform(self):
        """Spatialdata transformation HR pixel → ``coordinate_system``."""
        return grid_transform(self.origin, self.hr_um)

    def crop_lr(self, rows: slice, cols: slice, *, name: str | None = None) -> Section:
        """A sub-section given by LR pixel slices (e.g. to hold out a region)."""
        r0, r1, _ = rows.indices(self.shape_lr[0])
        c0, c1, _ = cols.indices(self.shape_lr[1])
        f, s = self.factor, self.factor * self.he_scale
        return replace(
            self,
            lr=self.lr[:, r0:r1, c0:c1].copy(),
            hr=None if self.hr is None else self.hr[:, r0 * f : r1 * f, c0 * f : c1 * f].copy(),
            he=self.he[:, r0 * s : r1 * s, c0 * s : c1 * s].copy(),
            mask_lr=self.mask_lr[r0:r1, c0:c1].copy(),
            mask_hr=self.mask_hr[r0 * f : r1 * f, c0 * f : c1 * f].copy(),
            mask_truth=None if self.mask_truth is None else self.mask_truth[r0 * f : r1 * f, c0 * f : c1 * f].copy(),
            origin=(self.origin[0] + c0 * self.lr_um, self.origin[1] + r0 * self.lr_um),
            name=name or f"{self.name}[{r0}:{r1},{c0}:{c1}]",
            meta=dict(self.meta),
            spots=None if self.spots is None else self._spots_near(r0, r1, c0, c1),
        )

    def _spots_near(self, r0: int, r1: int, c0: int, c1: int) -> Spots:
        """The spots that matter to the LR window ``[r0, r1) × [c0, c1)``: within the render's reach of it."""
        from ..spots import spot_margin

        x0, y0 = self.origin[0] + c0 * self.lr_um, self.origin[1] + r0 * self.lr_um
        x1, y1 = self.origin[0] + c1 * self.lr_um, self.origin[1] + r1 * self.lr_um
        return self.spots.within((x0, y0), (x1, y1), spot_margin(self.spots.geometry))

    def coarsen(self, factor: int | None = None) -> Section:
        """Self-supervision: the LR map becomes the truth and its aggregate the input.

        The returned section has ``hr = lr`` (at ``lr_um``), ``lr = aggregate(lr, factor)`` at
        ``lr_um·factor`` and the histology resampled so that ``he_scale`` is kept (the same number of
        image pixels per HR pixel). It assumes the relation between scales is self-similar.
        """
        f = int(factor or self.factor)
        h, w = self.shape_lr
        hh, ww = (h // f) * f, (w // f) * f
        if hh < f or ww < f:
            raise ValueError(
                f"The LR map ({h}×{w} pixels at {self.lr_um} µm) is too small to aggregate by factor={f} for "
                "self-supervised training; pass a trained model= instead."
            )
        lr = self.lr[:, :hh, :ww]
        he = self.he[:, : hh * self.factor * self.he_scale, : ww * self.factor * self.he_scale]
        # Keep he_scale histology pixels per (new) HR pixel = per LR pixel of this section.
        k = self.factor
        c, H, W = he.shape
        he_small = he.reshape(c, H // k, k, W // k, k).mean(axis=(2, 4))
        if self.he.dtype == np.uint8:
            he_small = np.clip(np.rint(he_small), 0, 255).astype(np.uint8)
        mask_hr = self.mask_lr[:hh, :ww].copy()
        # the spot-native LR map (spots summed per LR pixel) becomes a square map one scale up
        return Section(
            genes=list(self.genes),
            lr=aggregate(lr * mask_hr, f),
            hr=(lr * mask_hr).astype(np.float32),
            he=he_small,
            mask_lr=aggregate(mask_hr.astype(np.int32), f) > 0,
            mask_hr=mask_hr,
            origin=self.origin,
            lr_um=self.lr_um * f,
            factor=f,
            he_scale=self.he_scale,
            coordinate_system=self.coordinate_system,
            image_key=self.image_key,
            source=self.source,
            lr_from="aggregate",
            name=f"{self.name}/coarsened×{f}",
            meta=dict(self.meta),
        )


@dataclass
class Tiles:
    """Paired LR / HR / histology tiles cut from one or more :class:`Section` objects.

    Tiles are windows of ``tile_lr × tile_lr`` LR pixels; ``positions[k] = (section, row, col)``
    gives the top-left LR pixel of tile ``k``. Arrays are materialised on access:

    - ``lr``: ``(N, G, t, t)`` counts per LR pixel;
    - ``hr``: ``(N, G, t·f, t·f)`` counts per HR pixel (``None`` without truth);
    - ``he``: ``(N, C, t·f·s, t·f·s)`` histology;
    - ``mask_hr`` / ``mask_lr``: tissue masks.

    ``normalizer`` maps counts to the model's scale and back (:class:`~stdiff.pp.Normalizer`).
    """

    sections: list[Section]
    positions: np.ndarray
    tile_lr: int
    normalizer: Normalizer

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def genes(self) -> list[str]:
        """Gene names."""
        return self.sections[0].genes

    @property
    def factor(self) -> int:
        """HR pixels per LR pixel."""
        return self.sections[0].factor

    def _stack(self, attr: str, scale: int) -> np.ndarray | None:
        if any(getattr(s, attr) is None for s in self.sections):
            return None
        t = self.tile_lr * scale
        out = []
        for si, r, c in self.positions:
            arr = getattr(self.sections[si], attr)
            out.append(arr[..., r * scale : r * scale + t, c * scale : c * scale + t])
        return np.stack(out)

    @property
    def lr(self) -> np.ndarray:
        """``(N, G, t, t)`` LR counts."""
        return self._stack("lr", 1)

    @property
    def hr(self) -> np.ndarray | None:
        """``(N, G, T, T)`` HR counts (``None`` if any section has no truth)."""
        return self._stack("hr", self.factor)

    @property
    def he(self) -> np.ndarray:
        """``(N, C, P, P)`` histology."""
        return self._stack("he", self.factor * self.sections[0].he_scale)

    @property
    def mask_hr(self) -> np.ndarray:
        """``(N, T, T)`` tissue mask on the HR grid."""
        return self._stack("mask_hr", self.factor)

    @property
    def mask_lr(self) -> np.ndarray:
        """``(N, t, t)`` tissue mask on the LR grid."""
        return self._stack("mask_lr", 1)

    def origin(self, k: int) -> tuple[float, float]:
        """``(x, y)`` of tile ``k``'s top-left corner in its coordinate system."""
        si, r, c = self.positions[k]
        s = self.sections[si]
        return (s.origin[0] + c * s.lr_um, s.origin[1] + r * s.lr_um)

    def transform(self, k: int):
        """Spatialdata transformation of tile ``k``'s HR pixels → its coordinate system."""
        return grid_transform(self.origin(k), self.sections[self.positions[k][0]].hr_um)
