"""Datasets as :class:`spatialdata.SpatialData`: real sections and a synthetic tissue with known truth."""

from ._her2st import HER2ST_SECTIONS, her2st
from ._merfish import merfish_mouse_brain_mini
from ._space_ranger import hex_spots, synthetic_visium_outs
from ._synthetic import synthetic_tissue
from ._visium import visium_mouse_brain_mini

__all__ = [
    "HER2ST_SECTIONS",
    "her2st",
    "hex_spots",
    "merfish_mouse_brain_mini",
    "synthetic_tissue",
    "synthetic_visium_outs",
    "visium_mouse_brain_mini",
]
