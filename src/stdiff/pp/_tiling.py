"""Compatibility re-exports: rasterising and tiling now live in one module per job.

- :mod:`._section`: :class:`Section`, :class:`Tiles`, :func:`aggregate`;
- :mod:`._rasterize`: :func:`rasterize` (with the readers ``_read_points``, ``_read_image``,
  ``_read_spots``, the histology in ``_read_histology`` and the grid in ``_grid``);
- :mod:`._tiles`: :func:`tile_positions`, :func:`make_tiles`, :func:`fit_normalizer`.
"""

from ._rasterize import Source, rasterize
from ._section import Section, Tiles, aggregate
from ._tiles import fit_normalizer, make_tiles, tile_positions

__all__ = ["Section", "Source", "Tiles", "aggregate", "fit_normalizer", "make_tiles", "rasterize", "tile_positions"]
