"""A spot platform simulated from HR truth: train as you apply, score as the platform measures.

:func:`simulate_platform` lays the platform's lattice (Visium: 55 µm discs, hexagonal, 100 µm apart;
legacy ST: 100 µm discs, square, 200 µm apart) over a section with HR truth, with a random offset and
rotation, and gives each spot the truth under its footprint (:class:`~stdiff.pp.Footprints`:
fractional HR-pixel coverage, so the counts are what the disc holds, up to the uniformity of counts
inside one HR pixel). The gaps between spots are left unmeasured. The result is the section as
``rasterize`` reads a real section of that platform (spots, spot-native maps, mask from the spots'
reach and the histology), with the truth kept on every tissue HR pixel, gaps included.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ._footprints import Footprints, Spots
from ._read_histology import spot_tissue_mask
from ._read_spots import spot_native_lr
from ._section import Section, aggregate
from ._spot_geometry import PLATFORMS, SpotGeometry, platform_lattice

#: Platforms that can be simulated from HR truth (``"square"`` keeps the gap-free square aggregates).
SIMULATED_PLATFORMS: tuple[str, ...] = ("square", "visium", "st")
#: A simulated spot is kept when at least this part of its footprint is tissue (as real platforms
#: report the spots under the tissue).
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


def simulate_platform(section: Section, platform: str, *, seed: int = 0) -> Section:
    """``section`` (with HR truth) as ``platform`` would measure it (see the module docstring).

    ``platform="square"`` returns the section unchanged (LR = gap-free square aggregates). The
    section's LR grid must be at least the platform's pitch (within 10%); its HR grid is kept.
    """
    check_platform_name(platform)
    if platform == "square":
        return section
    if section.hr is None:
        raise ValueError(f"Section {section.name!r} has no HR truth to simulate {platform!r} spots from.")
    p = PLATFORMS[platform]
    if section.lr_um < 0.9 * p.pitch_um:
        raise ValueError(
            f"Section {section.name!r} has LR pixels of {section.lr_um:g} µm, finer than the {platform!r} pitch "
            f"({p.pitch_um:g} µm); rasterise it with lr_um ≥ {p.pitch_um:g} (e.g. hr_um={p.hr_um:g}, "
            f"factor={int(round(p.pitch_um / p.hr_um))})."
        )
    rng = np.random.default_rng(seed)
    H, W = section.mask_hr.shape
    x0, y0 = section.origin
    bounds = (x0, y0, x0 + W * section.hr_um, y0 + H * section.hr_um)
    xy = platform_lattice(platform, bounds, rng, rotate=p.shape == "disc")
    radius = np.full(xy.shape[1], p.radius_um)
    geometry = SpotGeometry.of_platform(platform, xy.shape[1])
    probe = Footprints(Spots(xy, radius, np.zeros((0, xy.shape[1])), geometry), section.origin, section.hr_um, (H, W))
    tissue = np.asarray(probe.matrix @ section.truth_mask.ravel().astype(np.float64)).ravel()
    keep = tissue >= MIN_TISSUE * probe.full_area_px
    if keep.sum() < 3:
        raise ValueError(f"Section {section.name!r} holds fewer than 3 {platform!r} spots on tissue.")
    counts = probe.measure(section.hr * section.truth_mask[None])[:, keep]
    spots = Spots(xy[:, keep], radius[keep], counts, SpotGeometry.of_platform(platform, int(keep.sum())))
    fp = Footprints(spots, section.origin, section.hr_um, (H, W))
    mask_hr = spot_tissue_mask(fp, section.he, section.he_scale)
    out = replace(
        section,
        lr=spot_native_lr(fp, mask_hr, section.factor),
        mask_lr=aggregate(mask_hr.astype(np.int32), section.factor) > 0,
        mask_hr=mask_hr,
        mask_truth=section.truth_mask & fp.reach(),
        spots=spots,
        lr_from="spots",
        name=f"{section.name}@{platform}",
        meta={k: v for k, v in section.meta.items() if not isinstance(k, tuple)},
    )
    out._footprints = fp
    return out
