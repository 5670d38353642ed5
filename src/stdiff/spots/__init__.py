"""Spots as measurements: platforms and their geometry, the footprint operator, simulated platforms.

A spot's count is a noisy measurement of the expression under its footprint. This subpackage holds
everything that relates an HR map to spots, with no knowledge of sections, images or models:

- :class:`SpotGeometry`, :func:`detect_geometry`, :data:`PLATFORMS`: which platform the spots are;
- :class:`Spots`, :class:`Footprints`: the spots in µm and the operator HR map → spot counts;
- :func:`simulate_spots`: a platform's measurement of an HR map (training and benchmarks).
"""

from ._footprints import RENDER_CUTOFF, RENDER_SIGMA, Footprints, Spots, density_at, footprint_weights, spot_margin
from ._geometry import (
    PLATFORMS,
    TOLERANCE,
    TRAIN_PLATFORMS,
    Platform,
    SpotGeometry,
    detect_geometry,
    nearest_pitch,
    platform,
    platform_lattice,
)
from ._simulate import MIN_TISSUE, SIMULATED_PLATFORMS, check_platform_name, platform_grid, simulate_spots

__all__ = [
    "MIN_TISSUE",
    "PLATFORMS",
    "RENDER_CUTOFF",
    "RENDER_SIGMA",
    "SIMULATED_PLATFORMS",
    "TOLERANCE",
    "TRAIN_PLATFORMS",
    "Footprints",
    "Platform",
    "SpotGeometry",
    "Spots",
    "check_platform_name",
    "density_at",
    "detect_geometry",
    "footprint_weights",
    "nearest_pitch",
    "platform",
    "platform_grid",
    "platform_lattice",
    "simulate_spots",
    "spot_margin",
]
