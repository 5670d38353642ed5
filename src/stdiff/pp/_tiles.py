"""Cutting tiles: tile positions over a section, paired tiles from sections, the fitted normaliser."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._normalize import Normalizer
from ._rasterize import rasterize
from ._section import Section, Tiles

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod


def tile_positions(
    section: Section,
    tile_lr: int,
    stride_lr: int | None = None,
    *,
    min_tissue: float = 0.05,
    cover: bool = False,
) -> np.ndarray:
    """Top-left LR positions ``(row, col)`` of tiles over a section.

    With ``cover=True`` the last row/column of tiles is shifted so the whole grid is covered
    (for inference); tiles with less than ``min_tissue`` tissue fraction are dropped.
    """
    h, w = section.shape_lr
    stride = int(stride_lr or tile_lr)
    if h < tile_lr or w < tile_lr:
        return np.zeros((0, 2), dtype=int)

    def starts(n: int) -> list[int]:
        s = list(range(0, n - tile_lr + 1, stride))
        if cover and s[-1] != n - tile_lr:
            s.append(n - tile_lr)
        return s

    out = []
    for r in starts(h):
        for c in starts(w):
            frac = section.mask_lr[r : r + tile_lr, c : c + tile_lr].mean()
            if frac >= min_tissue and frac > 0:
                out.append((r, c))
    return np.asarray(out, dtype=int).reshape(-1, 2)


def make_tiles(
    sdata: sd_mod.SpatialData | Section | Sequence[sd_mod.SpatialData | Section],
    genes: Sequence[str] | None = None,
    *,
    tile_lr: int = 8,
    stride_lr: int | None = None,
    min_tissue: float = 0.25,
    normalizer: Normalizer | None = None,
    **rasterize_kwargs: Any,
) -> Tiles:
    """Cut paired LR / HR / histology tiles (in physical units) from one or more sections.

    Parameters
    ----------
    sdata
        A SpatialData (rasterised with :func:`rasterize` and ``rasterize_kwargs``), a
        :class:`Section`, or a list of them (all with the same genes and geometry).
    genes
        Genes to keep (default: all of the source).
    tile_lr
        Tile size in LR pixels (HR tiles are ``tile_lr · factor`` pixels).
    stride_lr
        Step between tiles in LR pixels (default ``tile_lr``: no overlap).
    min_tissue
        Minimum tissue fraction of a tile.
    normalizer
        Normalisation to attach; default: fitted on the tiles' HR truth (or on LR when there is none).
    **rasterize_kwargs
        ``image_key``, ``counts_key``, ``table_key``, ``coordinate_system``, ``lr_um``, ``factor``,
        ``he_scale``, ``spots_as``, ``layer`` for :func:`rasterize`.

    Returns
    -------
    The :class:`Tiles`. Raises ``ValueError`` when no tile has enough tissue.
    """
    items = list(sdata) if isinstance(sdata, list | tuple) else [sdata]
    sections: list[Section] = []
    for i, item in enumerate(items):
        if isinstance(item, Section):
            sections.append(item)
        else:
            sections.append(rasterize(item, genes, name=f"section{i}", **rasterize_kwargs))
    ref = sections[0]
    for s in sections[1:]:
        if s.genes != ref.genes or s.factor != ref.factor or s.he_scale != ref.he_scale or s.lr_um != ref.lr_um:
            raise ValueError("All sections must share genes, lr_um, factor and he_scale.")
    if tile_lr < 1:
        raise ValueError(f"tile_lr must be ≥ 1, got {tile_lr}.")
    positions = []
    for si, s in enumerate(sections):
        pos = tile_positions(s, tile_lr, stride_lr, min_tissue=min_tissue)
        positions.extend((si, r, c) for r, c in pos)
    if not positions:
        sizes = [s.shape_lr for s in sections]
        spots = [int(s.mask_lr.sum()) for s in sections]
        raise ValueError(
            f"No tile of {tile_lr}×{tile_lr} LR pixels ({tile_lr * ref.lr_um:g} µm) with ≥{min_tissue:.0%} tissue: "
            f"the sections have LR grids {sizes} with {spots} tissue pixels (spots), fewer than one tile needs. "
            "Use a smaller tile_lr, a smaller lr_um, or a lower min_tissue."
        )
    if normalizer is None:
        normalizer = fit_normalizer(sections)
    return Tiles(
        sections=sections,
        positions=np.asarray(positions, dtype=int),
        tile_lr=int(tile_lr),
        normalizer=normalizer,
    )


def fit_normalizer(sections: Sequence[Section]) -> Normalizer:
    """Fit a :class:`Normalizer` on the HR truth of the sections (LR per HR pixel if none has truth)."""
    values, masks = [], []
    for s in sections:
        if s.hr is not None:
            values.append(s.hr.reshape(len(s.genes), -1))
            masks.append(s.truth_mask.reshape(-1))
        else:
            values.append((s.lr / s.factor**2).reshape(len(s.genes), -1))
            masks.append(s.mask_lr.reshape(-1))
    return Normalizer.fit(np.concatenate(values, 1), sections[0].genes, np.concatenate(masks))
