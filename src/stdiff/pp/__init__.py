"""Preprocessing: rasterise SpatialData onto LR / HR / histology grids and cut paired tiles."""

from ._footprints import RENDER_CUTOFF, RENDER_SIGMA, Footprints, Spots, spot_margin
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
from ._simulate import SIMULATED_PLATFORMS, check_platform_name, platform_grid, simulate_platform
from ._spot_geometry import PLATFORMS, SpotGeometry, detect_geometry, nearest_pitch
from ._stain import STAIN_REFERENCE_KEY
from ._tiles import fit_normalizer, make_tiles, tile_positions
from ._units import micrometre_systems, to_micrometres

__all__ = [
    "PLATFORMS",
    "RENDER_CUTOFF",
    "RENDER_SIGMA",
    "SIMULATED_PLATFORMS",
    "STAIN_REFERENCE_KEY",
    "Footprints",
    "HistologyFeatures",
    "InputGrid",
    "Normalizer",
    "Section",
    "SpotGeometry",
    "Spots",
    "Tiles",
    "aggregate",
    "check_platform_name",
    "detect_geometry",
    "fit_feature_scaler",
    "fit_normalizer",
    "histology_features",
    "image_um",
    "lr_density",
    "lr_per_tissue_pixel",
    "make_tiles",
    "micrometre_systems",
    "nearest_pitch",
    "open_input",
    "platform_grid",
    "rasterize",
    "simulate_platform",
    "spot_margin",
    "stain_reference",
    "standardize_features",
    "tile_positions",
    "to_micrometres",
]
