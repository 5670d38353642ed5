"""Spots as measurements: the footprint operator that maps an HR map to spot counts, and its uses.

A spot's count is the sum of the HR map under its footprint (iStar, XFuse). :class:`Footprints`
holds that operator on an HR grid as a sparse ``(n_spots, H·W)`` matrix whose entries are the
*fraction of each HR pixel the spot covers* (exact disc–square intersection areas, not a binary
mask), so a disc's weights sum to its area in HR pixels. Everything that relates HR maps to spots
uses it:

- :meth:`Footprints.measure` (HR map → spot counts) and :meth:`Footprints.spread` (the adjoint);
- :meth:`Footprints.render`: normalised convolution of the spots' counts per unit area with a
  pitch-sized Gaussian, counts per HR pixel, no blocks and no holes between spots;
- :meth:`Footprints.distribute`: any non-negative weight map scaled so that every spot's footprint
  sums exactly to its measured count; pixels outside every spot take a smoothly interpolated scaling.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ._geometry import SpotGeometry

#: Gaussian of the normalised convolution, in units of the pitch (σ) and its cut-off (in σ).
RENDER_SIGMA = 0.5
RENDER_CUTOFF = 3.0


def spot_margin(geometry: SpotGeometry) -> float:
    """How far (µm) beyond a window the spots still shape its maps: the normalised convolution's reach."""
    return RENDER_CUTOFF * RENDER_SIGMA * float(geometry.pitch_um) + float(geometry.radius_um)


def density_at(spots: Spots, points: np.ndarray) -> np.ndarray:
    """Counts per µm² at ``points`` ``(m, 2)`` (x, y µm): the normalised convolution of the spots' densities.

    The same kernel as :meth:`Footprints.render`, evaluated at arbitrary points (e.g. LR pixel
    centres, for an LR-sized summary of a whole slide). ``(G, m)``; 0 out of the kernel's reach.
    """
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    G, n = spots.counts.shape
    if n == 0:
        return np.zeros((G, len(points)))
    sigma = RENDER_SIGMA * spots.geometry.pitch_um
    dist = cKDTree(points).sparse_distance_matrix(cKDTree(spots.xy.T), RENDER_CUTOFF * sigma, output_type="coo_matrix")
    K = sp.csr_matrix((np.exp(-(dist.data**2) / (2 * sigma**2)), (dist.row, dist.col)), shape=(len(points), n))
    area = np.pi * spots.radius**2 if spots.geometry.shape == "disc" else 4 * spots.radius**2
    num = np.asarray(K @ spots.counts.T).T
    den = np.asarray(K @ area)[None]
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


@dataclass
class Spots:
    """Measured spots in µm: centres ``xy`` ``(2, n)``, physical radii ``(n,)`` and counts ``(G, n)``.

    ``totals`` ``(n,)``: each spot's count over every gene its table holds (its library size), when
    known; ``None`` means the sum of ``counts``.
    """

    xy: np.ndarray
    radius: np.ndarray
    counts: np.ndarray
    geometry: SpotGeometry
    ids: np.ndarray | None = None
    totals: np.ndarray | None = None

    def library_size(self) -> np.ndarray:
        """``(n,)`` each spot's total count (:attr:`totals`, else the sum of :attr:`counts`)."""
        if self.totals is not None:
            return np.asarray(self.totals, np.float64)
        return np.asarray(self.counts, np.float64).sum(0)

    def __len__(self) -> int:
        return int(self.xy.shape[1])

    def subset(self, keep: np.ndarray) -> Spots:
        """The spots selected by a boolean mask or an index array."""
        return replace(
            self,
            xy=self.xy[:, keep],
            radius=self.radius[keep],
            counts=self.counts[:, keep],
            ids=None if self.ids is None else self.ids[keep],
            totals=None if self.totals is None else self.totals[keep],
        )

    def genes_subset(self, idx) -> Spots:
        """The spots with counts of the genes at positions ``idx``."""
        return replace(self, counts=self.counts[idx])

    def fingerprint(self) -> str:
        """Cheap identity of the spots (positions, radii and counts), for caches keyed on a section."""
        import hashlib

        h = hashlib.blake2b(digest_size=12)
        for a in (self.xy, self.radius, self.counts):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return h.hexdigest()

    def within(self, origin: tuple[float, float], far: tuple[float, float], margin: float) -> Spots:
        """The spots whose centre lies within ``margin`` µm of the rectangle ``origin``–``far``."""
        x0, y0 = origin
        x1, y1 = far
        x, y = self.xy
        keep = (x >= x0 - margin) & (x <= x1 + margin) & (y >= y0 - margin) & (y <= y1 + margin)
        return self.subset(keep)


def _disc_cdf(x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Area of the disc of radius ``r`` at the origin inside ``{X ≤ x, Y ≤ y}`` (exact)."""

    def prim(t):  # ∫ sqrt(r² − t²) dt
        t = np.clip(t, -r, r)
        return 0.5 * (t * np.sqrt(np.maximum(r * r - t * t, 0.0)) + r * r * np.arcsin(t / r))

    x = np.clip(x, -r, r)
    ya = np.clip(y, -r, r)
    t0 = np.sqrt(np.maximum(r * r - ya * ya, 0.0))
    sign = np.sign(ya)
    lower = prim(np.minimum(x, -t0)) - prim(-r)  # where the chord is shorter than |y|
    middle = np.clip(x, -t0, t0) + t0  # where y cuts the chord
    upper = prim(np.maximum(x, t0)) - prim(t0)
    return (prim(x) - prim(-r)) + sign * lower + ya * middle + sign * upper


def footprint_weights(
    xy: np.ndarray,
    radius: np.ndarray,
    origin: tuple[float, float],
    pixel_um: float,
    shape: tuple[int, int],
    *,
    kind: str = "disc",
):
    """Sparse ``(n, H·W)`` matrix: the fraction of each pixel covered by each spot (exact areas).

    ``kind="disc"``: discs of ``radius``; ``"square"``: axis-aligned squares of side ``2·radius``.
    """
    import scipy.sparse as sp

    H, W = shape
    n = xy.shape[1]
    radius = np.broadcast_to(np.asarray(radius, dtype=np.float64), (n,))
    rows, cols, vals = [], [], []
    # spots of (about) the same size share one pixel window; loop over window sizes, vectorised inside
    span = np.ceil(2 * radius / pixel_um).astype(int) + 2
    for k in np.unique(span):
        idx = np.nonzero(span == k)[0]
        cx = (xy[0, idx] - origin[0]) / pixel_um
        cy = (xy[1, idx] - origin[1]) / pixel_um
        r = radius[idx] / pixel_um
        j0 = np.floor(cx - r).astype(int)
        i0 = np.floor(cy - r).astype(int)
        dj, di = np.meshgrid(np.arange(k), np.arange(k))
        jj = j0[:, None, None] + dj[None]
        ii = i0[:, None, None] + di[None]
        xa, ya = jj - cx[:, None, None], ii - cy[:, None, None]
        rr = r[:, None, None]
        if kind == "square":
            ox = np.clip(np.minimum(xa + 1, rr) - np.maximum(xa, -rr), 0, None)
            oy = np.clip(np.minimum(ya + 1, rr) - np.maximum(ya, -rr), 0, None)
            area = ox * oy
        else:
            area = (
                _disc_cdf(xa + 1, ya + 1, rr) - _disc_cdf(xa, ya + 1, rr) - _disc_cdf(xa + 1, ya, rr)
                + _disc_cdf(xa, ya, rr)
            )  # fmt: skip
        ok = (area > 1e-12) & (jj >= 0) & (jj < W) & (ii >= 0) & (ii < H)
        spot = np.broadcast_to(idx[:, None, None], area.shape)
        rows.append(spot[ok])
        cols.append((ii * W + jj)[ok])
        vals.append(np.clip(area[ok], 0.0, 1.0))
    if not rows:
        return sp.csr_matrix((n, H * W))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, H * W))


@dataclass
class Footprints:
    """The measurement operator of ``spots`` on the HR grid ``origin``, ``hr_um``, ``shape`` (see module).

    Attributes
    ----------
    matrix
        CSR ``(n, H·W)``: fraction of each HR pixel inside each spot.
    area_px
        ``(n,)`` each spot's area inside the grid, in HR pixels (row sums).
    full_area_px
        ``(n,)`` each spot's whole area in HR pixels; ``area_px / full_area_px`` is the part of the
        spot on the grid (spots cut by the grid's edge are only partly measured here).
    """

    spots: Spots
    origin: tuple[float, float]
    hr_um: float
    shape: tuple[int, int]
    matrix: object = field(init=False, repr=False)
    area_px: np.ndarray = field(init=False, repr=False)
    full_area_px: np.ndarray = field(init=False, repr=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        g = self.spots.geometry
        self.matrix = footprint_weights(
            self.spots.xy, self.spots.radius, self.origin, self.hr_um, self.shape, kind=g.shape
        )
        self.area_px = np.asarray(self.matrix.sum(axis=1)).ravel()
        r = self.spots.radius / self.hr_um
        self.full_area_px = 4 * r**2 if g.shape == "square" else np.pi * r**2

    # ------------------------------------------------------------------ geometry on the grid
    @property
    def inside(self) -> np.ndarray:
        """``(n,)`` spots wholly on the grid (their count is measured here in full)."""
        return self.area_px >= (1 - 1e-6) * self.full_area_px

    @property
    def fraction(self) -> np.ndarray:
        """``(n,)`` part of each spot's area on the grid."""
        return np.where(self.full_area_px > 0, self.area_px / np.maximum(self.full_area_px, 1e-12), 0.0)

    def coverage(self) -> np.ndarray:
        """``(H, W)`` fraction of each HR pixel inside a spot (0 in the gaps)."""
        if "coverage" not in self._cache:
            cov = np.asarray(self.matrix.sum(axis=0)).ravel().reshape(self.shape)
            self._cache["coverage"] = np.clip(cov, 0.0, 1.0).astype(np.float32)
        return self._cache["coverage"]

    def pixel_centres(self) -> np.ndarray:
        """``(H·W, 2)`` HR pixel centres (x, y) in µm."""
        H, W = self.shape
        jj, ii = np.meshgrid(np.arange(W), np.arange(H))
        return np.stack(
            [self.origin[0] + (jj.ravel() + 0.5) * self.hr_um, self.origin[1] + (ii.ravel() + 0.5) * self.hr_um], 1
        )

    def nearest(self) -> tuple[np.ndarray, np.ndarray]:
        """``(distance (H, W) µm, index (H, W))`` of the nearest spot centre to every HR pixel centre."""
        if "nearest" not in self._cache:
            from scipy.spatial import cKDTree

            if len(self.spots) == 0:
                inf = np.full(self.shape, np.inf, np.float32)
                self._cache["nearest"] = (inf, np.full(self.shape, -1))
            else:
                d, i = cKDTree(self.spots.xy.T).query(self.pixel_centres(), k=1)
                self._cache["nearest"] = (d.reshape(self.shape).astype(np.float32), i.reshape(self.shape))
        return self._cache["nearest"]

    def reach(self) -> np.ndarray:
        """``(H, W)`` HR pixels within :attr:`SpotGeometry.reach_um` of a spot centre (measured tissue)."""
        d, _ = self.nearest()
        return d <= self.spots.geometry.reach_um

    def support(self) -> np.ndarray:
        """``(H, W)`` HR pixels touched by a spot."""
        return np.asarray(self.matrix.getnnz(axis=0) > 0).reshape(self.shape)

    # ------------------------------------------------------------------ the operator
    def measure(self, hr: np.ndarray) -> np.ndarray:
        """Spot counts ``(G, n)`` of an HR map ``(G, H, W)`` (counts per HR pixel): the sum under each footprint."""
        G = hr.shape[0]
        return np.asarray(self.matrix @ np.asarray(hr, np.float64).reshape(G, -1).T).T

    def spread(self, values: np.ndarray) -> np.ndarray:
        """The adjoint: ``(G, n)`` per-spot values → ``(G, H, W)``, each pixel weighted by its coverage."""
        G = values.shape[0]
        return np.asarray(self.matrix.T @ np.asarray(values, np.float64).T).T.reshape(G, *self.shape)

    def _kernel(self):
        """Sparse ``(H·W, n)`` Gaussian weights of the normalised convolution (σ = 0.5 pitch, cut at 3σ)."""
        if "kernel" not in self._cache:
            import scipy.sparse as sp
            from scipy.spatial import cKDTree

            H, W = self.shape
            sigma = RENDER_SIGMA * self.spots.geometry.pitch_um
            if len(self.spots) == 0:
                self._cache["kernel"] = sp.csr_matrix((H * W, 0))
            else:
                tree = cKDTree(self.spots.xy.T)
                pix = cKDTree(self.pixel_centres())
                dist = pix.sparse_distance_matrix(tree, RENDER_CUTOFF * sigma, output_type="coo_matrix")
                w = np.exp(-(dist.data**2) / (2 * sigma**2))
                self._cache["kernel"] = sp.csr_matrix((w, (dist.row, dist.col)), shape=(H * W, len(self.spots)))
        return self._cache["kernel"]

    def interpolate(self, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        """Normalised convolution ``(K·numerator) / (K·denominator)`` on the HR grid, ``(G, H, W)``.

        ``numerator``, ``denominator``: ``(G, n)`` per spot (e.g. counts and footprint areas, which
        gives counts per HR pixel). Spots cut by the grid's edge enter with their measured part;
        pixels with no spot within the kernel's reach get 0.
        """
        K = self._kernel()
        G = numerator.shape[0]
        num = np.asarray(K @ np.asarray(numerator, np.float64).T).T
        den = np.asarray(K @ np.asarray(denominator, np.float64).T).T
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        return out.reshape(G, *self.shape)

    def render(self) -> np.ndarray:
        """Spot counts per unit area, normalised-convolved onto the HR grid: counts per HR pixel ``(G, H, W)``."""
        if "render" not in self._cache:
            frac = self.fraction
            counts = self.spots.counts * frac[None]
            area = np.broadcast_to(self.area_px[None], counts.shape)
            self._cache["render"] = self.interpolate(counts, area).astype(np.float32)
        return self._cache["render"]

    def distribute(self, weights: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Scale a non-negative map so every spot's footprint sums exactly to its measured count.

        ``weights`` ``(G, H, W)`` (e.g. a histology abundance, or 1 on tissue) is multiplied by a
        scaling interpolated smoothly between spots (the normalised convolution of the spots'
        counts over their weight sums), then, on each spot's footprint, by the factor that makes the
        footprint sum equal the spot's count (tapered to 1 across the gap around it, so no edge
        appears). A spot cut by the grid's edge only informs the interpolation (with the part of its
        count on the grid, counts assumed uniform over the spot); its pixels are not forced to a sum.
        A spot whose footprint has no weight gets its count spread evenly over its footprint.
        ``mask`` (H, W) zeroes pixels off tissue first. Returns ``(G, H, W)`` float32 counts per HR pixel.
        """
        w = np.asarray(weights, np.float64)
        if mask is not None:
            w = w * np.asarray(mask, bool)[None]
        target = self.spots.counts * self.fraction[None]
        scale = self.interpolate(target, self.measure(w))
        return self.conserve(w * scale).astype(np.float32)

    def conserve(self, hr: np.ndarray) -> np.ndarray:
        """Rescale ``hr`` ``(G, H, W)`` on each spot's footprint so it sums to the spot's count.

        The factor is applied on the pixels each spot touches and tapered to 1 over the gap around
        them (a raised cosine ending halfway to the next spot's footprint); pixels touched by no spot,
        or only by spots cut by the grid's edge, keep their values. Exact for non-overlapping
        footprints (discs with gaps).
        """
        x = np.array(hr, dtype=np.float64, copy=True)
        G = x.shape[0]
        target = self.spots.counts
        m = self.measure(x)
        whole = self.inside[None]
        factor = np.where(whole & (m > 0), target / np.where(m > 0, m, 1.0), 1.0)
        owner, taper = self._owner_taper()
        flat = x.reshape(G, -1)
        sel = owner >= 0
        f = factor[:, owner[sel]]
        flat[:, sel] *= 1.0 + (f - 1.0) * taper[sel][None]
        # whole spots whose footprint holds no weight: their count spread evenly over the footprint
        empty = whole & (m <= 0) & (target > 0)
        if empty.any():
            A = self.matrix
            for g, s in zip(*np.nonzero(empty)):
                cols = A.indices[A.indptr[s] : A.indptr[s + 1]]
                flat[g, cols] = target[g, s] / self.area_px[s]
        return x

    def _owner_taper(self) -> tuple[np.ndarray, np.ndarray]:
        """Per HR pixel: the spot whose correction applies (−1: none) and its weight (1 on the footprint)."""
        if "owner" not in self._cache:
            H, W = self.shape
            owner = np.full(H * W, -1, dtype=np.int64)
            taper = np.zeros(H * W, dtype=np.float64)
            if len(self.spots):
                A = self.matrix.tocsc()
                touched = np.diff(A.indptr) > 0
                # the spot covering most of each touched pixel
                best = np.asarray(A.argmax(axis=0)).ravel()
                owner[touched] = best[touched]
                taper[touched] = 1.0
                d, near = self.nearest()
                d, near = d.ravel(), near.ravel()
                g = self.spots.geometry
                r_sup = self.spots.radius[near] + self.hr_um * np.sqrt(0.5)
                ring = np.maximum(0.5 * (g.pitch_um - 2 * r_sup), 0.0)
                t = np.where(ring > 0, (d - r_sup) / np.maximum(ring, 1e-9), np.inf)
                in_ring = ~touched & (t >= 0) & (t < 1)
                owner[in_ring] = near[in_ring]
                taper[in_ring] = 0.5 * (1 + np.cos(np.pi * t[in_ring]))
            self._cache["owner"] = (owner, taper)
        return self._cache["owner"]
