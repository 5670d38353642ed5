"""Preprocessing: rasterise SpatialData onto LR / HR / histology grids and cut paired tiles."""

from ._footprints import Footprints, Spots
from ._histology import (
    HistologyFeatures,
    fit_feature_scaler,
    histology_features,
    stain_reference,
    standardize_features,
)
from ._lr_maps import lr_per_tissue_pixel
from ._normalize import Normalizer
from ._rasterize import rasterize
from ._section import Section, Tiles, aggregate
from ._simulate import SIMULATED_PLATFORMS, simulate_platform
from ._spot_geometry import PLATFORMS, SpotGeometry, detect_geometry
from ._tiles import fit_normalizer, make_tiles, tile_positions
from ._units import to_micrometres

__all__ = [
    "PLATFORMS",
    "SIMULATED_PLATFORMS",
    "Footprints",
    "HistologyFeatures",
    "Normalizer",
    "Section",
    "SpotGeometry",
    "Spots",
    "Tiles",
    "aggregate",
    "detect_geometry",
    "fit_feature_scaler",
    "fit_normalizer",
    "histology_features",
    "stain_reference",
    "lr_per_tissue_pixel",
    "make_tiles",
    "rasterize",
    "simulate_platform",
    "standardize_features",
    "tile_positions",
    "to_micrometres",
]
