"""Spots as measurements: platforms and their geometry, the footprint operator, simulated platforms.

A spot's count is a noisy measurement of the expression under its footprint. This subpackage holds
everything that relates an HR map to spots, with no knowledge of sections, images or models:

- :class:`SpotGeometry`, :func:`detect_geometry`, :data:`PLATFORMS`: which platform the spots are;
- :class:`Spots`, :class:`Footprints`: the spots in µm and the operator HR map → spot counts;
- :func:`simulate_spots`: a platform's measurement of an HR map (training and benchmarks);
- the likelihood of spot counts: :func:`fit_class_rates` (Poisson mixtures of footprint sums),
  :func:`ratio_field` (local-likelihood fields between spots) and the calibrated predictive
  distribution (:func:`predictive_sd`, :func:`predictive_quantile`, :func:`calibrate_error`).
"""

from ._field import (
    CUTOFF,
    PRIOR_STRENGTH,
    SIGMAS,
    field_deviance,
    fold_kernels,
    gaussian_kernel,
    poisson_deviance,
    ratio_field,
    ratio_prior,
)
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
from ._mixture import fit_class_rates
from ._predictive import (
    FLOOR,
    LEVEL,
    calibrate_error,
    distance_scale,
    interval_coverage,
    predictive_cdf,
    predictive_quantile,
    predictive_sample,
    predictive_sd,
)
from ._simulate import MIN_TISSUE, SIMULATED_PLATFORMS, check_platform_name, platform_grid, simulate_spots

__all__ = [
    "CUTOFF",
    "FLOOR",
    "LEVEL",
    "PRIOR_STRENGTH",
    "SIGMAS",
    "calibrate_error",
    "distance_scale",
    "field_deviance",
    "fold_kernels",
    "fit_class_rates",
    "gaussian_kernel",
    "interval_coverage",
    "poisson_deviance",
    "predictive_cdf",
    "predictive_quantile",
    "predictive_sample",
    "predictive_sd",
    "ratio_field",
    "ratio_prior",
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
