"""What a section measures, for learners fitted by aggregation consistency (no HR truth).

A section measures either square LR pixels (each the sum of its ``factor × factor`` HR block) or
spots (each the sum of the HR map under its footprint, :class:`~stdiff.spots.Footprints`).
:func:`measurements` gives both in one form — the measured values ``(G, m)``, which of them can
enter a loss, and the differentiable operator from an HR map to them — and :func:`distribute_counts`
scales any weight map so every measurement is matched exactly. The blend of a histology-distributed
map with the flat (nearest) one is scored here on held-out measurements: one scale up for LR pixels
(:func:`blend_scores_blocks`), by predicting held-out spots from the others for spots
(:func:`blend_scores_spots`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..pp import Section, aggregate, lr_per_tissue_pixel
from ..spots import Footprints


def distribute(lr: np.ndarray, weights: np.ndarray, mask: np.ndarray, factor: int) -> np.ndarray:
    """Split each LR pixel's counts over its block's ``mask`` pixels in proportion to ``weights``.

    ``lr``: ``(G, h, w)``; ``weights``: ``(G, H, W)`` non-negative; ``mask``: ``(H, W)``. Blocks whose
    weights sum to 0 on the mask are split evenly over their mask pixels (as
    :func:`~stdiff.pp.lr_per_tissue_pixel`). Returns ``(G, H, W)`` float32.
    """
    f = int(factor)
    m = np.asarray(mask, bool)
    w = np.where(m[None], np.asarray(weights, np.float64), 0.0)
    total = aggregate(w, f)
    n = aggregate(m.astype(np.float64), f)
    even = total <= 0
    w = np.where(np.repeat(np.repeat(even, f, -2), f, -1) & m[None], 1.0, w)
    total = np.where(even, n, total)
    ratio = np.where(total > 0, np.asarray(lr, np.float64) / np.maximum(total, 1e-300), 0.0)
    return (w * np.repeat(np.repeat(ratio, f, -2), f, -1)).astype(np.float32)


@dataclass
class Measurements:
    """Measured values ``y`` ``(G, m)``, the ones usable in a loss ``(m,)`` and ``measure``: HR map → ``(G, m)``."""

    y: torch.Tensor
    usable: np.ndarray
    measure: Callable[[torch.Tensor], torch.Tensor]
    tissue_px: np.ndarray


def measurements(section: Section, device) -> Measurements:
    """The measurements of ``section``: its LR pixels, or its spots wholly on the grid."""
    G = len(section.genes)
    if section.spots is None:
        f = section.factor
        usable = section.mask_lr & (aggregate(section.mask_hr.astype(np.int32), f) > 0)

        def measure(a: torch.Tensor) -> torch.Tensor:
            _, H, W = a.shape
            return a.reshape(G, H // f, f, W // f, f).sum(dim=(2, 4)).reshape(G, -1)

        y = torch.as_tensor(section.lr.reshape(G, -1), dtype=torch.float32, device=device)
        tissue = aggregate(section.mask_hr.astype(np.float64), f).ravel()
        return Measurements(y, usable.ravel(), measure, tissue)
    fp = section.footprints()
    A = fp.matrix.tocoo()
    on_tissue = np.asarray(fp.matrix @ section.mask_hr.ravel().astype(np.float64)).ravel()
    usable = fp.inside & (on_tissue > 0)
    At = (
        torch.sparse_coo_tensor(
            torch.as_tensor(np.stack([A.row, A.col]), dtype=torch.long),
            torch.as_tensor(A.data, dtype=torch.float32),
            size=A.shape,
            check_invariants=False,
        )
        .coalesce()
        .to(device)
    )

    def measure_spots(a: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(At, a.reshape(G, -1).T).T

    y = torch.as_tensor(section.spots.counts, dtype=torch.float32, device=device)
    return Measurements(y, usable, measure_spots, on_tissue)


def distribute_counts(section: Section, weights: np.ndarray) -> np.ndarray:
    """``weights`` ``(G, H, W)`` scaled so every LR pixel (or spot footprint) sums to its measured count.

    Off the input mask the result is 0. LR pixels: :func:`distribute`;
    spots: :meth:`~stdiff.spots.Footprints.distribute` (gaps take the interpolated scaling).
    """
    if section.spots is not None:
        return section.footprints().distribute(weights, section.mask_hr)
    return distribute(section.lr, weights, section.mask_hr, section.factor)


def _mean_pcc(preds: dict[float, list[np.ndarray]], truths: list[np.ndarray]) -> dict[float, float]:
    y = np.log1p(np.concatenate(truths, 1))
    scores = {}
    for lam, p in preds.items():
        p = np.log1p(np.concatenate(p, 1))
        r = [np.corrcoef(p[g], y[g])[0, 1] for g in range(len(y)) if p[g].std() > 0 and y[g].std() > 0]
        scores[float(round(lam, 6))] = float(np.mean(r)) if r else -np.inf
    return scores


def blend_scores_blocks(
    sections: Sequence[Section], abundances: Sequence[np.ndarray], held_out: Sequence[np.ndarray], grid: int = 11
) -> dict[float, float]:
    """Nearest-map weight → held-out r, one scale up: 2 × 2-aggregated LR maps re-distributed to the LR grid.

    The abundance summed per LR pixel plays the histology's part one scale up; candidates are scored
    (mean per-gene Pearson r of log1p counts) on the held-out LR pixels only.
    """
    preds, truths = {lam: [] for lam in np.linspace(0, 1, grid)}, []
    for s, a, val in zip(sections, abundances, held_out, strict=True):
        h, w = s.shape_lr
        hh, ww = h // 2 * 2, w // 2 * 2
        val = val.reshape(h, w)
        sel = val[:hh, :ww] & s.mask_lr[:hh, :ww]
        if hh < 2 or ww < 2 or not sel.any():
            continue
        block_a = aggregate(a, s.factor)[:, :hh, :ww]
        mask = s.mask_lr[:hh, :ww]
        lr = s.lr[:, :hh, :ww]
        coarse = aggregate(lr * mask, 2)
        hist = distribute(coarse, block_a, mask, 2)
        n_tissue = aggregate(s.mask_hr.astype(np.float64), s.factor)[None, :hh, :ww]
        even = distribute(coarse, np.broadcast_to(n_tissue, block_a.shape), mask, 2)
        for lam in preds:
            preds[lam].append(((1 - lam) * hist + lam * even)[:, sel])
        truths.append(lr[:, sel])
    return _mean_pcc(preds, truths) if truths else {}


def blend_scores_spots(
    sections: Sequence[Section], abundances: Sequence[np.ndarray], held_out: Sequence[np.ndarray], grid: int = 11
) -> dict[float, float]:
    """Nearest-map weight → held-out r: each held-out spot predicted from the other spots (it is a gap).

    The maps are distributed over the remaining spots only, then measured under the held-out spots'
    footprints and compared with their counts (mean per-gene Pearson r of log1p counts).
    """
    preds, truths = {lam: [] for lam in np.linspace(0, 1, grid)}, []
    for s, a, val in zip(sections, abundances, held_out, strict=True):
        fp = s.footprints()
        if not val.any() or val.all():
            continue
        hist, even = held_out_maps(s, a, ~val)
        measured_hist, measured_even = fp.measure(hist)[:, val], fp.measure(even)[:, val]
        for lam in preds:
            preds[lam].append((1 - lam) * measured_hist + lam * measured_even)
        truths.append(s.spots.counts[:, val])
    return _mean_pcc(preds, truths) if truths else {}


def held_out_maps(section: Section, abundance: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(histology-distributed, flat)`` maps of a spot section from the spots in ``keep`` only."""
    fp = section.footprints()
    sub = Footprints(section.spots.subset(keep), fp.origin, fp.hr_um, fp.shape)
    flat = np.broadcast_to(section.mask_hr[None].astype(np.float64), abundance.shape)
    return sub.distribute(abundance, section.mask_hr), sub.distribute(flat, section.mask_hr)


def nearest_map(section: Section) -> np.ndarray:
    """The flat distribution of the measurements (:func:`stdiff.pp.lr_per_tissue_pixel`)."""
    return lr_per_tissue_pixel(section)


def measured_spots(section: Section):
    """``(spots, footprints)`` of what ``section`` measures: its spots, or its tissue LR pixels as square spots.

    A square LR map (binned transcripts, a gene image) measures every LR pixel's ``factor × factor``
    block: each becomes a square footprint on the HR grid, and its library size is the panel's sum.
    """
    from ..spots import SpotGeometry, Spots

    if section.spots is not None:
        return section.spots, section.footprints()
    ii, jj = np.nonzero(section.mask_lr)
    xy = np.stack([section.origin[0] + (jj + 0.5) * section.lr_um, section.origin[1] + (ii + 0.5) * section.lr_um])
    geometry = SpotGeometry("square", section.lr_um, section.lr_um, "square", "square", len(ii))
    spots = Spots(xy, np.full(len(ii), section.lr_um / 2), np.asarray(section.lr[:, ii, jj], np.float64), geometry)
    return spots, Footprints(spots, section.origin, section.hr_um, section.mask_hr.shape)
