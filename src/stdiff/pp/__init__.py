"""Preprocessing: rasterise SpatialData onto LR / HR / histology grids and cut paired tiles."""

from ._lr_maps import lr_per_tissue_pixel
from ._normalize import Normalizer
from ._rasterize import rasterize
from ._section import Section, Tiles, aggregate
from ._tiles import fit_normalizer, make_tiles, tile_positions
from ._units import to_micrometres

__all__ = [
    "Normalizer",
    "Section",
    "Tiles",
    "aggregate",
    "fit_normalizer",
    "lr_per_tissue_pixel",
    "make_tiles",
    "rasterize",
    "tile_positions",
    "to_micrometres",
]
