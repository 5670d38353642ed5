"""Preprocessing: rasterise SpatialData onto LR / HR / histology grids, histology features, paired tiles.

Spots, their geometry and footprints live in :mod:`stdiff.spots`.
"""

from ._histology import (
    HistologyFeatures,
    fit_feature_scaler,
    histology_features,
    stain_reference,
    standardize_features,
)
from ._input import InputGrid, open_input
from ._lr_maps import lr_density, lr_per_tissue_pixel
from ._normalize import Normalizer
from ._rasterize import image_um, rasterize
from ._section import Section, Tiles, aggregate
from ._simulate import simulate_platform
from ._stain import STAIN_REFERENCE_KEY
from ._tiles import fit_normalizer, make_tiles, tile_positions
from ._units import micrometre_systems, to_micrometres

__all__ = [
    "STAIN_REFERENCE_KEY",
    "HistologyFeatures",
    "InputGrid",
    "Normalizer",
    "Section",
    "Tiles",
    "aggregate",
    "fit_feature_scaler",
    "fit_normalizer",
    "histology_features",
    "image_um",
    "lr_density",
    "lr_per_tissue_pixel",
    "make_tiles",
    "micrometre_systems",
    "open_input",
    "rasterize",
    "simulate_platform",
    "stain_reference",
    "standardize_features",
    "tile_positions",
    "to_micrometres",
]
