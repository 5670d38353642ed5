"""Synthetic tissue, part 1: vocabulary, smooth random fields and the tissue layout.

The cell types and tissue domains of the simulator (:data:`CELL_TYPES`, :data:`DOMAINS`), the
unit-variance Gaussian random fields every other part draws from (:class:`_Field`), and the domain
geometry (:class:`_Layout`): background, stroma, tumour nests, lymphoid aggregates and fat lobules.
Used by :func:`stdiff.datasets.synthetic_tissue`.
"""

from __future__ import annotations

import numpy as np

CELL_TYPES: tuple[str, ...] = (
    "tumour",
    "fibroblast",
    "endothelial",
    "T_cell",
    "B_cell",
    "macrophage",
    "adipocyte",
)
DOMAINS: tuple[str, ...] = ("background", "stroma", "tumour", "immune", "fat")
_T = {name: i for i, name in enumerate(CELL_TYPES)}
_D = {name: i for i, name in enumerate(DOMAINS)}


# ----------------------------------------------------------------------------------------------------
# smooth random fields
# ----------------------------------------------------------------------------------------------------
class _Field:
    """Unit-variance Gaussian random field (Gaussian-smoothed white noise on a node lattice).

    It can be evaluated on any grid or at any points with the same values, so that domains, cell
    placement and rendering at different resolutions agree.
    """

    def __init__(self, rng: np.random.Generator, sigma: float, extent: tuple[float, float]):
        self.sigma = float(sigma)
        step = self.sigma / 2.0
        pad = 3.0 * self.sigma
        self.ny = np.arange(-pad, extent[0] + pad + step, step, dtype=np.float64)
        self.nx = np.arange(-pad, extent[1] + pad + step, step, dtype=np.float64)
        self.noise = rng.standard_normal((self.ny.size, self.nx.size)).astype(np.float32)

    def _w(self, coords: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        z = (np.asarray(coords, np.float32)[:, None] - nodes.astype(np.float32)[None, :]) / np.float32(self.sigma)
        w = np.exp(np.float32(-0.5) * z * z)
        w /= np.sqrt((w * w).sum(1, keepdims=True))
        return w

    def grid(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return (self._w(ys, self.ny) @ self.noise) @ self._w(xs, self.nx).T

    def points(self, y: np.ndarray, x: np.ndarray, chunk: int = 20000) -> np.ndarray:
        out = np.empty(len(y), np.float32)
        for s in range(0, len(y), chunk):
            wy = self._w(y[s : s + chunk], self.ny)
            wx = self._w(x[s : s + chunk], self.nx)
            out[s : s + chunk] = ((wy @ self.noise) * wx).sum(1)
        return out


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------------------------------
# tissue layout
# ----------------------------------------------------------------------------------------------------
class _Layout:
    """Domain geometry: background, stroma, tumour nests, lymphoid aggregates and fat."""

    def __init__(self, rng: np.random.Generator, extent: tuple[float, float]):
        self.extent = extent
        self.f_tissue = _Field(rng, 250.0, extent)
        self.f_edge = _Field(rng, 50.0, extent)
        self.f_fat = _Field(rng, 170.0, extent)
        self.f_tum_small = _Field(rng, 60.0, extent)
        self.f_tum_big = _Field(rng, 280.0, extent)
        self.f_agg = _Field(rng, 300.0, extent)
        area = extent[0] * extent[1]
        n_agg = rng.poisson(area / 650.0**2)
        # aggregate centres: rejection sampling, preferring stroma close to tumour nests
        cy = rng.uniform(0, extent[0], 40 * n_agg + 40)
        cx = rng.uniform(0, extent[1], 40 * n_agg + 40)
        tum = self._tumour_score(cy, cx)
        ok = (tum < 0.35) & (tum > -0.6) & (self._fat(cy, cx) == 0) & self._tissue(cy, cx)
        ok &= rng.random(cy.size) < _sigmoid(1.5 * self.f_agg.points(cy, cx))
        cy, cx = cy[ok], cx[ok]
        keep: list[int] = []
        for i in range(cy.size):  # small loop: keep aggregates apart
            if len(keep) >= n_agg:
                break
            if all((cy[i] - cy[j]) ** 2 + (cx[i] - cx[j]) ** 2 > 300.0**2 for j in keep):
                keep.append(i)
        k = len(keep)
        self.agg_y = cy[keep]
        self.agg_x = cx[keep]
        self.agg_r = rng.uniform(55.0, 125.0, k)
        self.agg_shape = np.stack(
            [
                rng.uniform(0, 0.12, k),
                rng.uniform(0, 2 * np.pi, k),
                rng.uniform(0, 0.08, k),
                rng.uniform(0, 2 * np.pi, k),
            ],
            axis=1,
        )

    # --- pointwise pieces -------------------------------------------------------------------------
    def _tumour_score(self, y, x, grid: bool = False):
        f = (lambda fld: fld.grid(y, x)) if grid else (lambda fld: fld.points(y, x))
        return (f(self.f_tum_small) + 0.55 * f(self.f_tum_big)) / np.float32(np.sqrt(1.3025))

    def _edge_distance(self, y, x, grid: bool = False):
        if grid:
            dy = np.minimum(y, self.extent[0] - y)[:, None]
            dx = np.minimum(x, self.extent[1] - x)[None, :]
        else:
            dy = np.minimum(y, self.extent[0] - y)
            dx = np.minimum(x, self.extent[1] - x)
        return np.minimum(dy, dx).astype(np.float32)

    def _tissue(self, y, x, grid: bool = False):
        if grid:
            f = self.f_tissue.grid(y, x) + 0.6 * self.f_edge.grid(y, x)
        else:
            f = self.f_tissue.points(y, x) + 0.6 * self.f_edge.points(y, x)
        # irregular tissue edge; its width scales with the section (thin for small test sections)
        width = float(np.clip(0.04 * min(self.extent), 10.0, 90.0))
        return f - 4.0 * np.exp(-self._edge_distance(y, x, grid) / width) > -2.5

    def _fat(self, y, x, grid: bool = False):
        f = self.f_fat.grid(y, x) if grid else self.f_fat.points(y, x)
        return (f > 1.1).astype(np.uint8)

    def aggregate_rho(self, y, x, grid: bool = False) -> np.ndarray:
        """Normalised radial distance to the nearest lymphoid aggregate (< 1 inside)."""
        if grid:
            shape = (len(y), len(x))
        else:
            shape = (len(y),)
        rho = np.full(shape, np.inf, np.float32)
        for k in range(self.agg_y.size):
            a2, p2, a3, p3 = self.agg_shape[k]
            r = self.agg_r[k]
            if grid:
                sy = np.flatnonzero(np.abs(y - self.agg_y[k]) < 1.6 * r)
                sx = np.flatnonzero(np.abs(x - self.agg_x[k]) < 1.6 * r)
                if sy.size == 0 or sx.size == 0:
                    continue
                dy = (y[sy] - self.agg_y[k])[:, None]
                dx = (x[sx] - self.agg_x[k])[None, :]
            else:
                dy = y - self.agg_y[k]
                dx = x - self.agg_x[k]
            phi = np.arctan2(dy, dx)
            rr = np.sqrt(dy**2 + dx**2) / (r * (1 + a2 * np.cos(2 * phi + p2) + a3 * np.cos(3 * phi + p3)))
            if grid:
                sub = rho[np.ix_(sy, sx)]
                rho[np.ix_(sy, sx)] = np.minimum(sub, rr)
            else:
                rho = np.minimum(rho, rr)
        return rho

    _RASTER_UM = 2.0

    def _rasters(self):
        if not hasattr(self, "_dom_raster"):
            r = self._RASTER_UM
            ys = (np.arange(int(np.ceil(self.extent[0] / r))) + 0.5) * r
            xs = (np.arange(int(np.ceil(self.extent[1] / r))) + 0.5) * r
            self._dom_raster = self.domains(ys, xs, grid=True)
            self._ts_raster = self._tumour_score(ys, xs, grid=True)
        return self._dom_raster, self._ts_raster

    def _raster_index(self, y, x):
        dom = self._rasters()[0]
        iy = np.clip((np.asarray(y) / self._RASTER_UM).astype(np.int64), 0, dom.shape[0] - 1)
        ix = np.clip((np.asarray(x) / self._RASTER_UM).astype(np.int64), 0, dom.shape[1] - 1)
        return iy, ix

    def lookup(self, y, x) -> np.ndarray:
        """Domain codes at points, from a cached 2 µm raster (fast)."""
        iy, ix = self._raster_index(y, x)
        return self._rasters()[0][iy, ix]

    def tumour_score_at(self, y, x) -> np.ndarray:
        """Smooth tumour score at points, from a cached 2 µm raster (> 0.4 inside nests)."""
        iy, ix = self._raster_index(y, x)
        return self._rasters()[1][iy, ix]

    def domains(self, y, x, grid: bool = False) -> np.ndarray:
        lab = np.full((len(y), len(x)) if grid else (len(y),), _D["stroma"], np.uint8)
        lab[self._fat(y, x, grid).astype(bool)] = _D["fat"]
        lab[self._tumour_score(y, x, grid) > 0.4] = _D["tumour"]
        lab[self.aggregate_rho(y, x, grid) < 1.0] = _D["immune"]
        lab[~self._tissue(y, x, grid)] = _D["background"]
        return lab
