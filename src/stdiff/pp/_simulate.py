"""A spot platform simulated from HR truth: train as you apply, score as the platform measures.

:func:`simulate_platform` lays the platform's lattice (Visium: 55 µm discs, hexagonal, 100 µm apart;
legacy ST: 100 µm discs, square, 200 µm apart) over a section with HR truth, with a random offset and
rotation, and gives each spot the truth under its footprint (:class:`~stdiff.spots.Footprints`:
fractional HR-pixel coverage, so the counts are what the disc holds, up to the uniformity of counts
inside one HR pixel). The gaps between spots are left unmeasured. The result is the section as
``rasterize`` reads a real section of that platform (spots, spot-native maps, mask from the spots'
reach and the histology), with the truth kept on every tissue HR pixel, gaps included.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..spots import PLATFORMS, Footprints, check_platform_name, simulate_spots
from ._read_histology import spot_tissue_mask
from ._read_spots import spot_native_lr
from ._section import Section, aggregate


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
    H, W = section.mask_hr.shape
    spots = simulate_spots(section.hr, section.truth_mask, section.origin, section.hr_um, platform, seed=seed,
                           name=section.name)  # fmt: skip
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
