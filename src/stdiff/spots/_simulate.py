"""A spot platform's measurement simulated from an HR map: the lattice, the footprint sums, the kept spots.

:func:`simulate_spots` lays the platform's lattice (Visium: 55 µm discs, hexagonal, 100 µm apart;
legacy ST: 100 µm discs, square, 200 µm apart) over an HR grid with a random offset and rotation and
gives each spot the HR map under its footprint (:class:`~stdiff.spots.Footprints`: fractional HR-pixel
coverage). Spots with too little tissue under them are dropped, as real platforms report the spots
under the tissue. :func:`stdiff.pp.simulate_platform` builds the section a real slide of that
platform would give from these spots.
"""

from __future__ import annotations

import numpy as np

from ._footprints import Footprints, Spots
from ._geometry import PLATFORMS, SpotGeometry, platform_lattice

#: Platforms that can be simulated from HR truth (``"square"`` keeps the gap-free square aggregates).
SIMULATED_PLATFORMS: tuple[str, ...] = ("square", "visium", "st")
#: A simulated spot is kept when at least this part of its footprint is tissue.
MIN_TISSUE = 0.25


def check_platform_name(platform: str) -> str:
    """``platform`` if it can be simulated, else a clear error."""
    if platform not in SIMULATED_PLATFORMS:
        raise ValueError(f"platform must be one of {list(SIMULATED_PLATFORMS)}, got {platform!r}.")
    return platform


def platform_grid(platform: str) -> tuple[float, int]:
    """``(hr_um, factor)`` for a simulated spot platform: its default HR pixel and HR pixels per pitch."""
    p = PLATFORMS[check_platform_name(platform)]
    return p.hr_um, int(round(p.pitch_um / p.hr_um))


def simulate_spots(
    hr: np.ndarray,
    tissue: np.ndarray,
    origin: tuple[float, float],
    hr_um: float,
    platform: str,
    *,
    seed: int = 0,
    name: str = "section",
) -> Spots:
    """The spots ``platform`` measures on an HR map ``hr`` ``(G, H, W)`` (counts per HR pixel).

    ``tissue`` ``(H, W)``: where the map is tissue (only tissue is counted, and a spot is kept when at
    least :data:`MIN_TISSUE` of its footprint is tissue). The lattice gets a random offset and
    rotation drawn from ``seed``.
    """
    if check_platform_name(platform) == "square":
        raise ValueError("platform='square' has no spots (gap-free square aggregates).")
    p = PLATFORMS[platform]
    H, W = tissue.shape
    x0, y0 = origin
    bounds = (x0, y0, x0 + W * hr_um, y0 + H * hr_um)
    xy = platform_lattice(platform, bounds, np.random.default_rng(seed), rotate=p.shape == "disc")
    radius = np.full(xy.shape[1], p.radius_um)
    geometry = SpotGeometry.of_platform(platform, xy.shape[1])
    probe = Footprints(Spots(xy, radius, np.zeros((0, xy.shape[1])), geometry), origin, hr_um, (H, W))
    on_tissue = np.asarray(probe.matrix @ tissue.ravel().astype(np.float64)).ravel()
    keep = on_tissue >= MIN_TISSUE * probe.full_area_px
    if keep.sum() < 3:
        raise ValueError(f"Section {name!r} holds fewer than 3 {platform!r} spots on tissue.")
    counts = probe.measure(hr * tissue[None])[:, keep]
    return Spots(xy[:, keep], radius[keep], counts, SpotGeometry.of_platform(platform, int(keep.sum())))
