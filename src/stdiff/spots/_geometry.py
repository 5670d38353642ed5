"""Spot platforms and their geometry, detected from the spots themselves.

A spot platform measures discs (or squares) on a lattice: Visium 55 µm discs on a hexagonal 100 µm
lattice, legacy ST 100 µm discs on a 200 µm square (or staggered) lattice, Visium HD contiguous 2, 8 or
16 µm squares. :func:`detect_geometry` reads the pitch (median distance to the nearest spot), the
lattice (neighbour angles) and the platform (pitch and spot size within ±10% of a known platform) from
the spots' centres and radii in µm; :func:`platform_lattice` lays a platform's lattice over a region
with a random offset and rotation (to simulate a platform from HR truth).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: Relative tolerance on pitch and spot size when matching a known platform.
TOLERANCE = 0.10


@dataclass(frozen=True)
class Platform:
    """A spot platform: lattice pitch, spot diameter (µm), lattice kind, spot shape and default HR pixel."""

    name: str
    pitch_um: float
    diameter_um: float
    lattice: str  # "hex" or "square"
    shape: str = "disc"  # "disc" or "square"
    hr_um: float = 10.0

    @property
    def radius_um(self) -> float:
        """Spot radius (µm; half the side for squares)."""
        return self.diameter_um / 2


#: Known platforms (``"square"``, gap-free square aggregates of HR bins, is not a spot platform).
PLATFORMS: dict[str, Platform] = {
    "visium": Platform("visium", 100.0, 55.0, "hex", "disc", 10.0),
    "st": Platform("st", 200.0, 100.0, "square", "disc", 20.0),
    "visium_hd_2": Platform("visium_hd_2", 2.0, 2.0, "square", "square", 2.0),
    "visium_hd_8": Platform("visium_hd_8", 8.0, 8.0, "square", "square", 8.0),
    "visium_hd_16": Platform("visium_hd_16", 16.0, 16.0, "square", "square", 16.0),
}
#: Platforms a model can be trained for (``platform=`` of :func:`stdiff.tl.train` and the benchmark).
TRAIN_PLATFORMS: tuple[str, ...] = ("square", "visium", "st", "visium_hd_8", "visium_hd_16")


def platform(name: str) -> Platform:
    """The :class:`Platform` called ``name`` (a clear error naming the known ones otherwise)."""
    if name not in PLATFORMS:
        raise ValueError(f"Unknown platform {name!r}; use one of {sorted(PLATFORMS)} (or 'square').")
    return PLATFORMS[name]


@dataclass(frozen=True)
class SpotGeometry:
    """The geometry of a set of spots, as detected by :func:`detect_geometry`.

    Attributes
    ----------
    platform
        ``"visium"``, ``"st"``, ``"visium_hd_<bin>"`` or ``"generic"``.
    pitch_um
        Median centre-to-centre distance to the nearest spot (µm).
    diameter_um
        Physical spot diameter (µm; the bin side for squares).
    lattice
        ``"hex"`` (6 neighbours at 60°), ``"square"`` (4 at 90°) or ``"irregular"``.
    shape
        ``"disc"`` or ``"square"``.
    n_spots
        Number of spots.
    """

    platform: str
    pitch_um: float
    diameter_um: float
    lattice: str
    shape: str
    n_spots: int

    @property
    def radius_um(self) -> float:
        """Spot radius (µm)."""
        return self.diameter_um / 2

    @property
    def default_hr_um(self) -> float:
        """The HR pixel stdiff uses by default: 10 µm for Visium, 20 µm for legacy ST, pitch / 10 otherwise."""
        if self.platform in PLATFORMS:
            return PLATFORMS[self.platform].hr_um
        return float(self.pitch_um) / 10.0

    @property
    def has_gaps(self) -> bool:
        """Whether the spots leave unmeasured tissue between them (discs, or squares narrower than the pitch)."""
        return self.shape == "disc" or self.diameter_um < 0.95 * self.pitch_um

    @property
    def reach_um(self) -> float:
        """Distance from a spot centre up to which its neighbourhood counts as measured tissue.

        0.75 pitch: beyond the farthest point of a spot's lattice cell (0.577 pitch for hexagonal,
        0.707 pitch for square lattices), so the cells tile the tissue without holes.
        """
        return 0.75 * float(self.pitch_um)

    def to_dict(self) -> dict:
        """Plain-Python representation (provenance, checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SpotGeometry:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)

    @classmethod
    def of_platform(cls, name: str, n_spots: int = 0) -> SpotGeometry:
        """The nominal geometry of a known platform."""
        p = platform(name)
        return cls(p.name, p.pitch_um, p.diameter_um, p.lattice, p.shape, int(n_spots))


#: spots whose nearest neighbour is looked up for the median pitch (an even sample of larger sets)
PITCH_SAMPLE = 20_000


def nearest_pitch(xy: np.ndarray) -> float:
    """Median distance from each spot centre (``(2, n)`` µm) to its nearest neighbour.

    Over :data:`PITCH_SAMPLE` evenly spread spots at most (each still matched against all spots), so a
    bin table of millions of rows takes a second, not minutes.
    """
    from scipy.spatial import cKDTree

    if xy.shape[1] < 2:
        return float("nan")
    step = max(1, xy.shape[1] // PITCH_SAMPLE)
    d, _ = cKDTree(xy.T).query(xy.T[::step], k=2)
    return float(np.median(d[:, 1]))


def lattice_kind(xy: np.ndarray, pitch: float) -> str:
    """``"hex"``, ``"square"`` or ``"irregular"`` from the angles between neighbours within 1.15 pitch."""
    from scipy.spatial import cKDTree

    n = xy.shape[1]
    if n < 5 or not np.isfinite(pitch) or pitch <= 0:
        return "irregular"
    tree = cKDTree(xy.T)
    pairs = tree.query_pairs(1.15 * pitch, output_type="ndarray")
    if len(pairs) == 0:
        return "irregular"
    d = xy[:, pairs[:, 1]] - xy[:, pairs[:, 0]]
    angle = np.arctan2(d[1], d[0])
    # folded angles: a hexagonal lattice repeats every 60°, a square one every 90°
    hex_r = np.abs(np.mean(np.exp(6j * angle)))
    sq_r = np.abs(np.mean(np.exp(4j * angle)))
    counts = np.bincount(pairs.ravel(), minlength=n)
    interior = np.median(counts[counts >= np.quantile(counts, 0.5)])
    if hex_r > 0.8 and interior >= 5:
        return "hex"
    if sq_r > 0.8 and interior <= 4.5:
        return "square"
    return "irregular"


def detect_geometry(xy: np.ndarray, radius: np.ndarray | float, *, shape: str = "disc") -> SpotGeometry:
    """The platform, pitch and lattice of spots with centres ``xy`` ``(2, n)`` and radii (µm).

    The platform is Visium when the pitch is 100 µm and the spot diameter 55–65 µm (Space Ranger
    draws 65 µm spots; the physical spot of 55 µm is kept), legacy ST when the pitch is 200 µm and the
    diameter 100 µm, Visium HD when contiguous squares of 2, 8 or 16 µm, each within ±10%; otherwise
    ``"generic"`` with the measured pitch and the given diameter.
    """
    xy = np.asarray(xy, dtype=np.float64)
    r = float(np.median(np.broadcast_to(np.asarray(radius, dtype=np.float64), (xy.shape[1],)))) if xy.size else 0.0
    pitch = nearest_pitch(xy)
    lattice = lattice_kind(xy, pitch)
    n = int(xy.shape[1])
    diameter = 2.0 * r

    def near(value: float, target: float, tol: float = TOLERANCE) -> bool:
        return bool(np.isfinite(value)) and abs(value - target) <= tol * target

    if shape == "square":
        for name in ("visium_hd_2", "visium_hd_8", "visium_hd_16"):
            p = PLATFORMS[name]
            if near(diameter, p.diameter_um) and near(pitch, p.pitch_um):
                return SpotGeometry(name, pitch, p.diameter_um, lattice, "square", n)
        return SpotGeometry("generic", pitch, diameter, lattice, "square", n)
    if near(pitch, 100.0) and (near(diameter, 55.0) or near(diameter, 65.0)):
        return SpotGeometry("visium", pitch, 55.0, lattice, "disc", n)
    if near(pitch, 200.0) and near(diameter, 100.0, 0.2):
        return SpotGeometry("st", pitch, diameter, lattice, "disc", n)
    return SpotGeometry("generic", pitch, diameter, lattice, shape, n)


def platform_lattice(
    name: str,
    bounds: tuple[float, float, float, float],
    rng: np.random.Generator,
    *,
    rotate: bool = True,
) -> np.ndarray:
    """Spot centres ``(2, n)`` of platform ``name``'s lattice over ``bounds`` (x0, y0, x1, y1), in µm.

    The lattice gets a uniformly random offset (one lattice cell) and, with ``rotate``, a uniformly
    random rotation about the centre of ``bounds``, so a simulation never aligns spots with the HR grid.
    Only centres whose whole spot lies inside ``bounds`` are kept.
    """
    p = platform(name)
    x0, y0, x1, y1 = (float(v) for v in bounds)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = 0.5 * np.hypot(x1 - x0, y1 - y0) + p.pitch_um
    if p.lattice == "hex":
        row_step, col_step, shift = p.pitch_um * np.sqrt(3) / 2, p.pitch_um, p.pitch_um / 2
    else:
        row_step, col_step, shift = p.pitch_um, p.pitch_um, 0.0
    rows = np.arange(-half, half + row_step, row_step)
    cols = np.arange(-half, half + col_step, col_step)
    rr, cc = np.meshgrid(np.arange(len(rows)), np.arange(len(cols)), indexing="ij")
    x = cols[cc] + shift * (rr % 2)
    y = rows[rr]
    x = x + rng.uniform(0, col_step)
    y = y + rng.uniform(0, row_step * (2 if shift else 1))
    theta = rng.uniform(0, 2 * np.pi) if rotate else 0.0
    c, s = np.cos(theta), np.sin(theta)
    px, py = cx + c * x.ravel() - s * y.ravel(), cy + s * x.ravel() + c * y.ravel()
    r = p.radius_um
    keep = (px - r >= x0) & (px + r <= x1) & (py - r >= y0) & (py + r <= y1)
    return np.stack([px[keep], py[keep]])
