"""The spot hold-out track's baselines: HR maps made from the measured spots only, on the default's grid.

Each function takes the :class:`~stdiff.pp.Section` of a section with some spots hidden (its spots
are the measured ones) and returns ``(G, H, W)`` counts per HR pixel on its tissue mask, so every
method is scored the same way: its map measured under each hidden spot's footprint.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..pp import Section

#: Neighbours of the ``nearest6`` baseline and of the TESLA-style one.
K_NEAREST = 6


def _densities(section: Section) -> tuple[np.ndarray, np.ndarray]:
    """Measured spots' counts per HR pixel of their area ``(G, n)`` and the HR pixel centres ``(H·W, 2)``."""
    fp = section.footprints()
    return section.spots.counts / np.maximum(fp.full_area_px, 1e-12)[None], fp.pixel_centres()


def nearest_spot(section: Section) -> np.ndarray:
    """Every pixel takes its nearest measured spot's density (Voronoi)."""
    dens, _ = _densities(section)
    _, idx = section.footprints().nearest()
    return dens[:, idx] * section.mask_hr[None]


def nearest6(section: Section) -> np.ndarray:
    """Every pixel takes the mean density of its 6 nearest measured spots."""
    from scipy.spatial import cKDTree

    dens, pts = _densities(section)
    k = min(K_NEAREST, dens.shape[1])
    _, idx = cKDTree(section.spots.xy.T).query(pts, k=k)
    idx = np.asarray(idx).reshape(len(pts), k)
    out = np.stack([dens[g][idx].mean(1) for g in range(len(dens))])
    return out.reshape(-1, *section.mask_hr.shape) * section.mask_hr[None]


def kernel(section: Section) -> np.ndarray:
    """Normalised convolution of the spots' densities with a Gaussian of half the pitch (:meth:`Footprints.render`)."""
    return section.footprints().render() * section.mask_hr[None]


def tesla_like(section: Section) -> np.ndarray:
    """TESLA-style (Hu et al. 2023): a weighted mean of spot densities over neighbours in position and H&E colour.

    Each pixel's weights are ``exp(−d² / 2 pitch²) · exp(−‖c − c_s‖² / 2 σ_c²)`` over the spots within two
    pitches, with ``c`` the mean RGB of the pixel, ``c_s`` that under the spot's footprint and ``σ_c``
    half the spots' colour sd (what TESLA's superpixel imputation does, without its tissue segmentation).
    """
    from scipy.spatial import cKDTree

    dens, pts = _densities(section)
    fp = section.footprints()
    s = section.he_scale
    c, Hh, Ww = section.he.shape
    rgb = section.he.astype(np.float64).reshape(c, Hh // s, s, Ww // s, s).mean(axis=(2, 4)).reshape(c, -1)
    spot_rgb = np.asarray(fp.matrix @ rgb.T) / np.maximum(np.asarray(fp.matrix.sum(1)), 1e-12)
    sigma_c = max(0.5 * float(np.linalg.norm(spot_rgb.std(0))), 1e-6)
    pitch = float(section.spots.geometry.pitch_um)
    pairs = cKDTree(pts).sparse_distance_matrix(cKDTree(section.spots.xy.T), 2 * pitch, output_type="coo_matrix")
    colour = ((rgb.T[pairs.row] - spot_rgb[pairs.col]) ** 2).sum(1)
    w = np.exp(-(pairs.data**2) / (2 * pitch**2) - colour / (2 * sigma_c**2))
    import scipy.sparse as sp

    Wm = sp.csr_matrix((w, (pairs.row, pairs.col)), shape=(len(pts), dens.shape[1]))
    num, den = np.asarray(Wm @ dens.T).T, np.asarray(Wm.sum(1)).ravel()[None]
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return out.reshape(-1, *section.mask_hr.shape) * section.mask_hr[None]


def istar_like(section: Section, seed: int = 0) -> np.ndarray:
    """iStar-like (:class:`~stdiff.models.AggregationConsistency`): histology abundance distributing the spots' counts."""
    from ..models import AggregationConsistency

    model = AggregationConsistency().fit([section], seed=seed, max_time=600.0)
    return model.predict(section)["mean"]


def default_without_histology(section: Section, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """The default (:class:`~stdiff.models.SpotRate`) with one histology class: its fields of the spots only."""
    from ..models import SpotRate

    out = SpotRate(n_classes=1).fit(section, seed=seed).predict_section(section)
    return out["mean"], out["std"]


#: Baselines by name: each ``(section, seed) → map`` (or ``(map, std)``).
BASELINES: dict[str, Callable] = {
    "nearest_spot": lambda s, seed: nearest_spot(s),
    "nearest6": lambda s, seed: nearest6(s),
    "kernel": lambda s, seed: kernel(s),
    "tesla_like": lambda s, seed: tesla_like(s),
    "istar_like": istar_like,
    "default_no_histology": default_without_histology,
}
