"""Synthetic breast-carcinoma-like tissue with a known high-resolution expression truth.

The simulator builds, in micrometres and fully vectorised:

1. **Tissue domains** from smooth random fields: tumour nests, collagenous stroma, lymphoid
   aggregates, adipose (fat) lobules and empty background at an irregular tissue edge; tumour nests
   contain small glandular lumens and the stroma contains blood vessels.
2. **Cells** placed by jittered-hexagonal sampling relaxed by short-range repulsion, with
   domain-specific spacing and cell-type mixing (tumour nests with immune infiltrate, B-cell follicle
   centres in lymphoid aggregates, endothelial cells lining vessels, septal cells between adipocytes).
3. **Expression** from cell-type programs (markers) plus co-expressed gene modules whose per-cell
   latent state is driven partly by visible context (distance into a nest, proximity to lymphoid
   aggregates or tumour) and partly by *hidden* smooth spatial fields that are not rendered into the
   histology (HER2-amplified subclones, oestrogen-receptor programme, proliferation, interferon...),
   with per-cell log-normal noise.  Transcripts are drawn by Poisson sampling per cell and gene and
   scattered over the cell footprint; binning them gives the high-resolution count maps.
4. **An H&E image** rendered with a Beer-Lambert stain model (hematoxylin + eosin optical densities):
   type-specific nuclei (large pleomorphic vesicular tumour nuclei, small dark round lymphocytes,
   spindle fibroblasts aligned with the collagen fibres, flat endothelial nuclei), cytoplasm, wavy
   collagen fibres, adipocyte vacuoles with thin membranes, red blood cells in vessels, stain
   variation, blur and pixel noise.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from stdiff._utils import logger

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

__all__ = ["synthetic_tissue", "CELL_TYPES", "DOMAINS"]

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
# Gene panel.  (name, {cell type: relative expression level}, {module: log-loading})
# The order is the priority order used when ``n_genes`` is smaller than the panel: the first genes
# cover every cell type and every module, so small panels stay informative.
# ----------------------------------------------------------------------------------------------------
_PANEL: tuple[tuple[str, dict[str, float], dict[str, float]], ...] = (
    ("EPCAM", {"tumour": 12}, {}),
    ("COL1A1", {"fibroblast": 25, "endothelial": 0.6, "adipocyte": 0.6}, {"caf_activation": 0.3}),
    ("PTPRC", {"T_cell": 10, "B_cell": 10, "macrophage": 6}, {}),
    ("MKI67", {"tumour": 0.25, "B_cell": 0.15, "T_cell": 0.1, "macrophage": 0.1}, {"proliferation": 3.2}),
    ("TOP2A", {"tumour": 0.3, "B_cell": 0.2, "T_cell": 0.1, "macrophage": 0.1}, {"proliferation": 3.0}),
    ("ERBB2", {"tumour": 3}, {"her2_amplicon": 2.3}),
    ("GRB7", {"tumour": 1}, {"her2_amplicon": 2.5}),
    ("CD3E", {"T_cell": 9}, {}),
    ("MS4A1", {"B_cell": 12}, {}),
    ("CD68", {"macrophage": 10}, {}),
    ("PECAM1", {"endothelial": 12, "macrophage": 1, "T_cell": 0.4}, {}),
    ("ADIPOQ", {"adipocyte": 15}, {}),
    ("KRT19", {"tumour": 18}, {}),
    ("ISG15", {k: 0.5 for k in CELL_TYPES}, {"interferon": 1.6}),
    ("IFI6", {k: 0.4 for k in CELL_TYPES}, {"interferon": 1.7}),
    ("CA9", {"tumour": 0.3}, {"hypoxia": 2.0}),
    ("VEGFA", {"tumour": 1.0, "macrophage": 1.0, "fibroblast": 0.4}, {"hypoxia": 1.4}),
    ("ESR1", {"tumour": 3}, {"hormone": 1.3}),
    ("PGR", {"tumour": 1.2}, {"hormone": 1.7}),
    ("ACTA2", {"fibroblast": 3, "endothelial": 2.5}, {"caf_activation": 0.8}),
    ("FAP", {"fibroblast": 1}, {"caf_activation": 2.0}),
    ("POSTN", {"fibroblast": 2}, {"caf_activation": 1.8}),
    ("CD8A", {"T_cell": 2.5}, {"cytotoxic": 1.5}),
    ("GZMB", {"T_cell": 1.2}, {"cytotoxic": 1.6}),
    ("CD4", {"T_cell": 2.5, "macrophage": 1.5}, {"cytotoxic": -1.2}),
    ("CD79A", {"B_cell": 10}, {}),
    ("CD163", {"macrophage": 3}, {"m2": 1.1}),
    ("VWF", {"endothelial": 14}, {}),
    ("PLIN1", {"adipocyte": 12}, {}),
    ("KRT8", {"tumour": 15}, {}),
    ("CDH1", {"tumour": 8}, {}),
    ("DCN", {"fibroblast": 10, "adipocyte": 2}, {}),
    ("LUM", {"fibroblast": 10}, {}),
    ("COL3A1", {"fibroblast": 16, "endothelial": 0.5}, {"caf_activation": 0.3}),
    ("CCNB1", {"tumour": 0.3, "B_cell": 0.2, "T_cell": 0.1, "macrophage": 0.1}, {"proliferation": 2.6}),
    ("STAT1", {k: 1.0 for k in CELL_TYPES}, {"interferon": 1.0}),
    ("CXCL10", {"macrophage": 0.5, "tumour": 0.2, "endothelial": 0.2}, {"interferon": 2.0}),
    ("SLC2A1", {"tumour": 0.6}, {"hypoxia": 1.5}),
    ("MMP11", {"fibroblast": 0.5, "tumour": 0.3}, {"caf_activation": 2.2}),
    ("NKG7", {"T_cell": 1.5}, {"cytotoxic": 1.4}),
    ("IL7R", {"T_cell": 3}, {"cytotoxic": -0.9}),
    ("CD19", {"B_cell": 5}, {}),
    ("LYZ", {"macrophage": 14}, {}),
    ("C1QA", {"macrophage": 10}, {}),
    ("MRC1", {"macrophage": 2}, {"m2": 1.3}),
    ("CDH5", {"endothelial": 6}, {}),
    ("FABP4", {"adipocyte": 14, "endothelial": 4}, {}),
    ("GATA3", {"tumour": 5, "T_cell": 1}, {"hormone": 0.5}),
    ("FOXA1", {"tumour": 4}, {"hormone": 0.6}),
    ("KRT18", {"tumour": 12}, {}),
    ("PDGFRA", {"fibroblast": 4}, {}),
    ("MYH11", {"endothelial": 1.2, "fibroblast": 0.3}, {}),
    ("CD3D", {"T_cell": 8}, {}),
    ("CD74", {"B_cell": 8, "macrophage": 8, "endothelial": 1, "tumour": 0.5}, {"interferon": 0.5}),
    ("KDR", {"endothelial": 4}, {}),
    ("CD14", {"macrophage": 5}, {}),
    ("LPL", {"adipocyte": 8, "macrophage": 1}, {}),
    ("CD2", {"T_cell": 5}, {}),
    ("COL1A2", {"fibroblast": 18}, {"caf_activation": 0.3}),
    ("KRT5", {"tumour": 0.5}, {"hormone": -0.8}),
)
_BACKGROUND_LEVEL = 0.05  # relative level of a gene in a cell type that does not express it

_MODULES: tuple[str, ...] = (
    "proliferation",
    "hypoxia",
    "interferon",
    "her2_amplicon",
    "hormone",
    "caf_activation",
    "cytotoxic",
    "m2",
)
_MODULE_DRIVERS: dict[str, str] = {
    "proliferation": "hidden field (cycling state; cycling tumour nuclei are slightly larger/darker)",
    "hypoxia": "distance into tumour nest (visible) + hidden field",
    "interferon": "proximity to lymphoid aggregates (visible) + hidden field",
    "her2_amplicon": "hidden clonal patches within tumour (not visible)",
    "hormone": "hidden smooth field within tumour (not visible)",
    "caf_activation": "fibroblast proximity to tumour (visible) + hidden field",
    "cytotoxic": "hidden CD8/CD4 state of T cells, more CD8 near tumour",
    "m2": "hidden smooth field within macrophages (not visible)",
}

# Total-RNA multiplier per cell type (relative).
_TYPE_SIZE = {
    "tumour": 1.3,
    "fibroblast": 0.9,
    "endothelial": 0.8,
    "T_cell": 0.6,
    "B_cell": 0.7,
    "macrophage": 1.2,
    "adipocyte": 0.8,
}
# Cell radius (µm) used for the cell shapes and the transcript footprint (adipocytes: own size).
_CELL_RADIUS = {
    "tumour": 7.0,
    "fibroblast": 5.0,
    "endothelial": 5.0,
    "T_cell": 4.0,
    "B_cell": 4.0,
    "macrophage": 8.0,
    "adipocyte": 30.0,
}
# Nuclear morphology and stain per type:
# a (semi-major, µm), a_sd, b/a, b/a sd, pleomorphism, hematoxylin, h sd, chromatin texture,
# rim (vesicular chromatin), cytoplasm radius (µm), cytoplasm eosin, cytoplasm hematoxylin.
_MORPH = {
    "tumour": (4.6, 1.1, 0.78, 0.10, 0.08, 1.10, 0.20, 0.30, 0.30, 7.8, 0.46, 0.10),
    "fibroblast": (5.6, 1.0, 0.30, 0.06, 0.03, 1.10, 0.15, 0.15, 0.05, 2.5, 0.40, 0.06),
    "endothelial": (5.0, 0.8, 0.32, 0.06, 0.03, 1.05, 0.15, 0.15, 0.05, 2.5, 0.40, 0.06),
    "T_cell": (2.6, 0.35, 0.90, 0.05, 0.03, 1.55, 0.15, 0.12, 0.10, 3.4, 0.20, 0.10),
    "B_cell": (2.9, 0.40, 0.88, 0.05, 0.04, 1.45, 0.15, 0.15, 0.10, 3.7, 0.20, 0.10),
    "macrophage": (3.8, 0.50, 0.70, 0.08, 0.16, 1.20, 0.15, 0.20, 0.15, 8.0, 0.42, 0.12),
    "adipocyte": (3.6, 0.50, 0.30, 0.05, 0.03, 1.00, 0.10, 0.10, 0.05, 0.0, 0.00, 0.00),
}
# Cell-type mixing per domain (stroma composition is further modulated by proximity to tumour).
_MIX = {
    "tumour": {"tumour": 0.86, "T_cell": 0.05, "macrophage": 0.05, "fibroblast": 0.03, "endothelial": 0.01},
    "stroma": {"fibroblast": 0.62, "macrophage": 0.12, "T_cell": 0.14, "B_cell": 0.04, "endothelial": 0.08},
}

_STAIN_H = np.array([0.650, 0.704, 0.286])
_STAIN_E = np.array([0.216, 0.801, 0.558])


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


def _fine_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    n = rng.standard_normal(shape, dtype=np.float32)
    if sigma_px > 0.3:
        n = ndimage.gaussian_filter(n, sigma_px, mode="wrap")
        n /= max(float(n.std()), 1e-6)
    return n


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


def _hex_points(rng: np.random.Generator, spacing: float, extent, jitter: float = 0.45):
    """Jittered, randomly rotated and shifted hexagonal lattice covering ``extent``."""
    h, w = extent
    diag = np.hypot(h, w)
    dy = spacing * np.sqrt(3) / 2
    rows = np.arange(-diag / 2 / dy - 1, diag / 2 / dy + 2)
    cols = np.arange(-diag / 2 / spacing - 1, diag / 2 / spacing + 2)
    gy, gx = np.meshgrid(rows * dy, cols * spacing, indexing="ij")
    gx = gx + (rows[:, None] % 2) * spacing / 2
    ang = rng.uniform(0, np.pi)
    py = np.sin(ang) * gx.ravel() + np.cos(ang) * gy.ravel() + h / 2 + rng.uniform(0, spacing)
    px = np.cos(ang) * gx.ravel() - np.sin(ang) * gy.ravel() + w / 2 + rng.uniform(0, spacing)
    r = jitter * spacing * np.sqrt(rng.random(py.size))
    t = rng.uniform(0, 2 * np.pi, py.size)
    py = py + r * np.sin(t)
    px = px + r * np.cos(t)
    ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
    return py[ok], px[ok]


def _relax(y, x, dmin, fixed, n_iter: int = 3):
    """Push cells apart where closer than ``dmin`` (pairwise mean); ``fixed`` cells do not move."""
    for _ in range(n_iter):
        tree = cKDTree(np.c_[y, x])
        d, j = tree.query(np.c_[y, x], k=7)
        d, j = d[:, 1:], j[:, 1:]
        valid = np.isfinite(d) & (j < y.size)
        j = np.where(valid, j, 0)
        target = 0.5 * (dmin[:, None] + dmin[j])
        push = np.where(valid & (d < target), (target - d) / 2, 0.0)
        d = np.maximum(d, 1e-6)
        uy = (y[:, None] - y[j]) / d
        ux = (x[:, None] - x[j]) / d
        my = (push * uy).sum(1)
        mx = (push * ux).sum(1)
        my[fixed] = 0
        mx[fixed] = 0
        y = y + my
        x = x + mx
    return y, x


# ----------------------------------------------------------------------------------------------------
# main entry point
# ----------------------------------------------------------------------------------------------------
def synthetic_tissue(
    *,
    size_um: float | tuple[float, float] = 2000.0,
    n_genes: int = 50,
    seed: int = 0,
    he_um: float = 1.0,
    bin_um: float = 5.0,
    depth: float = 150.0,
    transcripts: bool = False,
    coordinate_system: str = "global",
) -> SpatialData:
    """Simulate a breast-carcinoma-like tissue section with H&E and known high-resolution expression.

    Parameters
    ----------
    size_um
        Size of the section in µm, a number (square) or ``(height, width)``.  Rounded to whole
        H&E pixels and HR bins.
    n_genes
        Number of genes.  The first ~60 are a realistic breast tumour/stroma/immune panel (in a
        priority order covering every cell type and module); further genes are ``GENE_###`` with
        random but structured programs.
    seed
        Random seed; the same seed gives identical output.
    he_um
        H&E pixel size in µm (realistic range 0.25–1).  The image has ``round(size / he_um)`` pixels.
    bin_um
        Bin size of the high-resolution truth ``"hr_counts"`` in µm.
    depth
        Mean number of transcripts per cell over all genes (Poisson sampling depth).
    transcripts
        Also return the individual transcripts as a points element ``"transcripts"``; binning them
        on the ``bin_um`` grid gives ``"hr_counts"`` exactly.
    coordinate_system
        Name of the coordinate system (µm) of all elements.

    Returns
    -------
    :class:`spatialdata.SpatialData` with

    - ``"he"``: RGB ``uint8`` H&E image ``(c, y, x)`` with a ``[2, 4]`` scale pyramid (when large
      enough) and transform ``Scale([he_um, he_um])``.
    - ``"hr_counts"``: ``float32`` integer Poisson counts per ``bin_um`` bin ``(c, y, x)``, channels =
      gene names, transform ``Scale([bin_um, bin_um])``.
    - ``"domains"``: labels ``(y, x)`` of tissue domains on the ``bin_um`` grid (codes in
      ``attrs["synthetic"]["domains"]``).
    - ``"cells"``: circles at cell centroids (µm, radius = cell radius) with ``cell_type`` and ``domain``.
    - ``"table"``: cells × genes expected expression rates (transcripts per cell), annotating
      ``"cells"`` (``region="cells"``, ``instance_key="cell_id"``).
    - ``"transcripts"`` (optional): points with ``x``, ``y`` (µm) and categorical ``gene``.

    ``sdata.attrs["synthetic"]`` holds the parameters, gene names, cell types, domains, marker genes
    per type, co-expression modules, within-type latent genes and the drivers of each module.
    """
    t0 = time.perf_counter()
    if np.isscalar(size_um):
        size = (float(size_um), float(size_um))
    else:
        size = (float(size_um[0]), float(size_um[1]))
    if he_um <= 0 or bin_um <= 0 or min(size) <= 0:
        raise ValueError("size_um, he_um and bin_um must be positive.")
    if n_genes < 1:
        raise ValueError("n_genes must be >= 1.")
    n_bins = (max(1, int(round(size[0] / bin_um))), max(1, int(round(size[1] / bin_um))))
    extent = (n_bins[0] * bin_um, n_bins[1] * bin_um)
    n_he = (max(1, int(round(extent[0] / he_um))), max(1, int(round(extent[1] / he_um))))
    if not np.allclose(extent, size):
        logger.info("synthetic_tissue: size rounded to %s µm (whole %g µm bins).", extent, bin_um)

    ss = np.random.SeedSequence(int(seed))
    rng_layout, rng_cells, rng_state, rng_render = (np.random.default_rng(s) for s in ss.spawn(4))

    layout = _Layout(rng_layout, extent)
    cells = _place_cells(rng_cells, layout, extent)
    genes, base, loadings = _gene_programs(n_genes, seed)
    z, cycling = _module_states(rng_state, layout, cells, extent)
    rates = _expression(seed, cells, base, loadings, z, depth)
    t1 = time.perf_counter()

    tx, counts = _sample_transcripts(seed, layout, cells, rates, extent, n_bins, bin_um)
    t2 = time.perf_counter()

    he = _render_he(rng_render, layout, cells, cycling, extent, n_he, he_um)
    t3 = time.perf_counter()

    yb = (np.arange(n_bins[0]) + 0.5) * bin_um
    xb = (np.arange(n_bins[1]) + 0.5) * bin_um
    dom_bins = layout.domains(yb, xb, grid=True)

    markers = {
        t: [
            g
            for gi, g in enumerate(genes)
            if base[ti, gi] >= 4 and base[ti, gi] >= 5 * np.delete(base[:, gi], ti).max()
        ]
        for ti, t in enumerate(CELL_TYPES)
    }
    modules = {m: [g for gi, g in enumerate(genes) if loadings[gi, mi] != 0] for mi, m in enumerate(_MODULES)}
    latent = [g for gi, g in enumerate(genes) if np.any(np.abs(loadings[gi]) >= 0.8)]
    info: dict[str, Any] = {
        "params": {
            "size_um": list(extent),
            "n_genes": int(n_genes),
            "seed": int(seed),
            "he_um": float(he_um),
            "bin_um": float(bin_um),
            "depth": float(depth),
            "transcripts": bool(transcripts),
            "coordinate_system": coordinate_system,
        },
        "genes": list(genes),
        "cell_types": list(CELL_TYPES),
        "domains": list(DOMAINS),
        "markers": markers,
        "modules": modules,
        "module_drivers": dict(_MODULE_DRIVERS),
        "latent_genes": latent,
        "n_cells": int(cells["y"].size),
        "n_transcripts": int(tx[0].size),
        "domain_fractions": {d: float(np.mean(dom_bins == i)) for i, d in enumerate(DOMAINS)},
    }
    sdata = _to_spatialdata(
        he, counts, dom_bins, cells, rates, genes, tx, transcripts, he_um, bin_um, coordinate_system
    )
    sdata.attrs["synthetic"] = info
    logger.info(
        "synthetic_tissue: %d cells, %d genes, %d transcripts, H&E %dx%d px; layout+expression %.2fs, "
        "transcripts %.2fs, H&E %.2fs, total %.2fs",
        cells["y"].size,
        len(genes),
        tx[0].size,
        n_he[0],
        n_he[1],
        t1 - t0,
        t2 - t1,
        t3 - t2,
        time.perf_counter() - t0,
    )
    return sdata


# ----------------------------------------------------------------------------------------------------
# cells
# ----------------------------------------------------------------------------------------------------
def _place_cells(rng: np.random.Generator, layout: _Layout, extent) -> dict[str, np.ndarray]:
    ys, xs, dom, typ = [], [], [], []
    area = extent[0] * extent[1]

    def add(y, x, d, t):
        ys.append(np.asarray(y, float))
        xs.append(np.asarray(x, float))
        dom.append(np.full(len(y), d, np.int8) if np.isscalar(d) else np.asarray(d, np.int8))
        typ.append(np.full(len(y), t, np.int8) if np.isscalar(t) else np.asarray(t, np.int8))

    # --- adipocytes and septal cells ---
    ay, ax = _hex_points(rng, 60.0, extent, jitter=0.5)
    ad = layout.lookup(ay, ax)
    ay, ax = ay[ad == _D["fat"]], ax[ad == _D["fat"]]
    if ay.size:  # adipocytes of varied size: random minimum distances
        ay, ax = _relax(ay, ax, rng.uniform(35.0, 70.0, ay.size), np.zeros(ay.size, bool), n_iter=2)
    if ay.size >= 2:
        tree = cKDTree(np.c_[ay, ax])
        dnn = tree.query(np.c_[ay, ax], k=2)[0][:, 1]
        adip_r = np.clip(0.65 * dnn, 18, 50)
        pairs = tree.query_pairs(80.0, output_type="ndarray")
        pairs = pairs[rng.random(len(pairs)) < 0.22]
        sy = 0.5 * (ay[pairs[:, 0]] + ay[pairs[:, 1]])
        sx = 0.5 * (ax[pairs[:, 0]] + ax[pairs[:, 1]])
        st = rng.choice([_T["fibroblast"], _T["endothelial"], _T["macrophage"]], size=sy.size, p=[0.5, 0.35, 0.15])
        add(sy, sx, _D["fat"], st)
    else:
        adip_r = np.full(ay.size, 30.0)
    n_sept = sum(len(v) for v in ys)

    # --- lumens (tumour glands) and vessels (stroma) ---
    n_lum = rng.poisson(area / 170.0**2)
    lum_y = rng.uniform(0, extent[0], n_lum)
    lum_x = rng.uniform(0, extent[1], n_lum)
    ok = layout.lookup(lum_y, lum_x) == _D["tumour"]
    lum_y, lum_x = lum_y[ok], lum_x[ok]
    lum_r = rng.uniform(5.0, 16.0, lum_y.size)

    n_ves = rng.poisson(area / 140.0**2)
    ves_y = rng.uniform(0, extent[0], n_ves)
    ves_x = rng.uniform(0, extent[1], n_ves)
    vd = layout.lookup(ves_y, ves_x)
    ok = (vd == _D["stroma"]) | ((vd == _D["immune"]) & (rng.random(n_ves) < 0.5))
    ves_y, ves_x = ves_y[ok], ves_x[ok]
    ves_r = np.clip(rng.lognormal(np.log(8.0), 0.45, ves_y.size), 4.0, 28.0)
    if ves_y.size > 1:  # no overlapping vessels
        tree = cKDTree(np.c_[ves_y, ves_x])
        drop = np.zeros(ves_y.size, bool)
        for i, j in tree.query_pairs(60.0):
            if (
                not drop[i]
                and not drop[j]
                and np.hypot(ves_y[i] - ves_y[j], ves_x[i] - ves_x[j]) < ves_r[i] + ves_r[j] + 15
            ):
                drop[j] = True
        ves_y, ves_x, ves_r = ves_y[~drop], ves_x[~drop], ves_r[~drop]

    # --- domain cells from jittered hexagonal lattices ---
    spec = [(_D["tumour"], 11.0, 0.45), (_D["immune"], 7.4, 0.6), (_D["stroma"], 20.0, 0.45)]
    for d, spacing, jit in spec:
        py, px = _hex_points(rng, spacing, extent, jitter=jit)
        pd_ = layout.lookup(py, px)
        keep = pd_ == d
        if d == _D["immune"]:  # fuzzy mantle of lymphocytes around the aggregates
            rho = layout.aggregate_rho(py, px)
            keep |= (pd_ == _D["stroma"]) & (rng.random(py.size) < 0.7 * np.clip((1.45 - rho) / 0.45, 0, 1) ** 2)
        py, px, pd_ = py[keep], px[keep], pd_[keep]
        if d == _D["stroma"]:  # cellularity varies: denser around tumour nests
            near = layout.tumour_score_at(py, px)
            p = np.clip(0.55 + 0.35 * _sigmoid(4 * (near - 0.1)) + 0.15 * rng.standard_normal(py.size), 0.2, 1)
            keep = rng.random(py.size) < p
            py, px, pd_ = py[keep], px[keep], pd_[keep]
        add(py, px, pd_, -1 if d != _D["immune"] else -2)
    y = np.concatenate(ys) if ys else np.zeros(0)
    x = np.concatenate(xs) if xs else np.zeros(0)
    d = np.concatenate(dom) if dom else np.zeros(0, np.int8)
    t = np.concatenate(typ) if typ else np.zeros(0, np.int8)

    # remove cells inside lumens, vessels and adipocytes (except septal cells)
    bad = np.zeros(y.size, bool)
    for cy, cx, cr, pad in ((lum_y, lum_x, lum_r, 2.0), (ves_y, ves_x, ves_r, 3.5)):
        if cy.size and y.size:
            tr = cKDTree(np.c_[cy, cx])
            dd, jj = tr.query(np.c_[y, x], k=1)
            bad |= dd < cr[jj] + pad
    if ay.size and y.size:
        tr = cKDTree(np.c_[ay, ax])
        dd, jj = tr.query(np.c_[y, x], k=1)
        sept = np.arange(y.size) < n_sept
        bad |= (dd < adip_r[jj] - 4.0) & ~sept
    y, x, d, t = y[~bad], x[~bad], d[~bad], t[~bad]

    # endothelial cells lining vessels, oriented tangentially
    ey, ex, eth = [], [], []
    for cy, cx, cr in zip(ves_y, ves_x, ves_r):
        n = max(3, int(round(2 * np.pi * cr / 15.0)))
        ang = rng.uniform(0, 2 * np.pi) + np.arange(n) * 2 * np.pi / n + rng.normal(0, 0.12, n)
        ey.append(cy + (cr + 1.6) * np.sin(ang))
        ex.append(cx + (cr + 1.6) * np.cos(ang))
        eth.append(ang + np.pi / 2)
    if ey:
        ey, ex, eth = np.concatenate(ey), np.concatenate(ex), np.concatenate(eth)
        ok = (ey >= 0) & (ey < extent[0]) & (ex >= 0) & (ex < extent[1])
        ey, ex, eth = ey[ok], ex[ok], eth[ok]
    else:
        ey = ex = eth = np.zeros(0)
    n_body = y.size
    y = np.concatenate([y, ey, ay])
    x = np.concatenate([x, ex, ax])
    d = np.concatenate(
        [
            d,
            layout.lookup(ey, ex).astype(np.int8) if ey.size else np.zeros(0, np.int8),
            np.full(ay.size, _D["fat"], np.int8),
        ]
    )
    t = np.concatenate([t, np.full(ey.size, _T["endothelial"], np.int8), np.full(ay.size, _T["adipocyte"], np.int8)])
    fixed = np.arange(y.size) >= n_body
    t_vessel = np.zeros(y.size, bool)
    t_vessel[n_body : n_body + ey.size] = True

    # relax spacing (adipocytes and vessel linings fixed)
    dmin = np.select(
        [(d == _D["immune"]) | (t == -2), d == _D["tumour"], d == _D["fat"]], [6.0, 10.0, 12.0], default=9.0
    ).astype(float)
    dmin[t == _T["adipocyte"]] = 0.0
    if y.size > 7:
        y, x = _relax(y, x, dmin, fixed, n_iter=3)
    y = np.clip(y, 0, extent[0] - 1e-3)
    x = np.clip(x, 0, extent[1] - 1e-3)

    # --- cell types from domain mixing ---
    rho = layout.aggregate_rho(y, x)
    tum_score = layout.tumour_score_at(y, x)
    free = t == -1
    u = rng.random(y.size)
    for dname in ("tumour", "stroma"):
        sel = free & (d == _D[dname])
        probs = dict(_MIX[dname])
        names = list(probs)
        p = np.tile(np.array([probs[k] for k in names]), (sel.sum(), 1))
        if dname == "stroma":  # immune infiltrate densest at the tumour border
            near = _sigmoid(5 * (tum_score[sel] - 0.2))
            p[:, names.index("T_cell")] += 0.25 * near
            p[:, names.index("macrophage")] += 0.08 * near
            p[:, names.index("B_cell")] += 0.04 * near
        p /= p.sum(1, keepdims=True)
        k = (u[sel, None] > np.cumsum(p, 1)).sum(1)
        k = np.minimum(k, len(names) - 1)
        t[sel] = np.array([_T[n] for n in names])[k]
    sel = (t == -2) | (free & (d == _D["immune"]))
    pb = np.clip(0.85 * (1 - np.clip(rho[sel], 0, 1) ** 2) + 0.05, 0, 1)  # follicle centre: B cells
    p = np.stack([pb, (1 - pb) * 0.88, (1 - pb) * 0.07, (1 - pb) * 0.03, (1 - pb) * 0.02], 1)
    names = ["B_cell", "T_cell", "macrophage", "fibroblast", "endothelial"]
    k = np.minimum((u[sel, None] > np.cumsum(p, 1)).sum(1), len(names) - 1)
    t[sel] = np.array([_T[n] for n in names])[k]
    t[t < 0] = _T["fibroblast"]

    radius = np.array([_CELL_RADIUS[c] for c in CELL_TYPES])[t]
    is_ad = t == _T["adipocyte"]
    radius[is_ad] = adip_r
    theta = np.full(y.size, np.nan)
    theta[t_vessel] = eth
    return {
        "y": y,
        "x": x,
        "domain": d,
        "type": t,
        "radius": radius,
        "theta": theta,
        "rho": rho,
        "lumens": (lum_y, lum_x, lum_r),
        "vessels": (ves_y, ves_x, ves_r),
    }


# ----------------------------------------------------------------------------------------------------
# expression
# ----------------------------------------------------------------------------------------------------
def _gene_programs(n_genes: int, seed: int):
    nt, nm = len(CELL_TYPES), len(_MODULES)
    n_panel = min(n_genes, len(_PANEL))
    genes: list[str] = []
    base = np.full((nt, n_genes), _BACKGROUND_LEVEL)
    load = np.zeros((n_genes, nm))
    for gi, (name, lv, md) in enumerate(_PANEL[:n_panel]):
        genes.append(name)
        for k, v in lv.items():
            base[_T[k], gi] = v
        for k, v in md.items():
            load[gi, _MODULES.index(k)] = v
    if n_genes > n_panel:  # structured random programs for padding genes
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(99,)))
        for gi in range(n_panel, n_genes):
            genes.append(f"GENE_{gi - n_panel + 1:03d}")
            lvl = rng.lognormal(np.log(0.3), 0.8)
            base[:, gi] = lvl * rng.lognormal(0, 0.3, nt)
            if rng.random() < 0.6:
                base[rng.integers(nt), gi] *= rng.uniform(8, 40)
            if rng.random() < 0.35:
                load[gi, rng.integers(nm)] = rng.choice([-1, 1], p=[0.2, 0.8]) * rng.uniform(0.6, 1.8)
    return genes, base, load


def _module_states(rng: np.random.Generator, layout: _Layout, cells, extent):
    """Per-cell latent state of each module (n_cells × n_modules) and the cycling flag."""
    y, x, t = cells["y"], cells["x"], cells["type"]
    n = y.size
    fields = {k: _Field(rng, s, extent) for k, s in [
        ("prolif", 120.0), ("hyp", 150.0), ("ifn", 200.0), ("clone", 140.0),
        ("er", 250.0), ("caf", 200.0), ("cd8", 200.0), ("m2", 200.0),
    ]}  # fmt: skip
    f = {k: fld.points(y, x) if n else np.zeros(0, np.float32) for k, fld in fields.items()}
    is_t = t == _T["tumour"]
    z = np.zeros((n, len(_MODULES)), np.float32)

    # proliferation: binary cycling state, driven by a hidden field (tumour) / follicle centres (B)
    p_cyc = np.full(n, 0.02)
    p_cyc[is_t] = _sigmoid(1.8 * f["prolif"][is_t] - 1.0)
    isb = t == _T["B_cell"]
    p_cyc[isb] = 0.02 + 0.35 * np.clip(1 - cells["rho"][isb] ** 2, 0, 1)
    p_cyc[t == _T["adipocyte"]] = 0.0
    cycling = rng.random(n) < p_cyc
    z[:, 0] = cycling + 0.25 * rng.standard_normal(n)

    # hypoxia: depth into the tumour nest (visible) + hidden field
    nt = ~is_t & (t != _T["adipocyte"])
    depth_in = np.zeros(n)
    if is_t.any() and nt.any():
        depth_in[is_t] = cKDTree(np.c_[y[nt], x[nt]]).query(np.c_[y[is_t], x[is_t]], k=1)[0]
    hyp = 0.9 * np.minimum(depth_in / 50.0, 2.5) + 0.7 * f["hyp"] - 1.0
    z[:, 1] = np.where(is_t, hyp, 0.25 * f["hyp"] - 0.8) + 0.25 * rng.standard_normal(n)

    # interferon: proximity to lymphoid aggregates (visible) + hidden field, all cell types
    prox = np.exp(-np.maximum(cells["rho"] - 1, 0) * 2.0)
    z[:, 2] = 1.4 * prox + 0.8 * f["ifn"] - 0.6 + 0.25 * rng.standard_normal(n)

    # HER2 amplicon: hidden clonal patches of the tumour
    z[:, 3] = np.where(is_t, (f["clone"] > 0.35).astype(np.float32) + 0.15 * rng.standard_normal(n), 0)

    # hormone receptor programme: hidden smooth field of the tumour
    z[:, 4] = np.where(is_t, 0.9 * f["er"] + 0.25 * rng.standard_normal(n), 0)

    # CAF activation: fibroblasts close to tumour + hidden field
    isf = t == _T["fibroblast"]
    d_tum = np.full(n, np.inf)
    if is_t.any() and isf.any():
        d_tum[isf] = cKDTree(np.c_[y[is_t], x[is_t]]).query(np.c_[y[isf], x[isf]], k=1)[0]
    z[:, 5] = np.where(isf, 1.4 * np.exp(-d_tum / 60.0) + 0.6 * f["caf"] - 0.4 + 0.25 * rng.standard_normal(n), 0)

    # cytotoxic (CD8) versus helper (CD4) T cells
    ist = t == _T["T_cell"]
    near_tum = _sigmoid(5 * (layout.tumour_score_at(y, x) - 0.3)) if n else np.zeros(0)
    cd8 = rng.random(n) < _sigmoid(-0.3 + 1.0 * f["cd8"] + 1.2 * near_tum)
    z[:, 6] = np.where(ist, np.where(cd8, 1.0, -1.0) * 0.8 + 0.2 * rng.standard_normal(n), 0)

    # M2 polarisation of macrophages: hidden field
    z[:, 7] = np.where(t == _T["macrophage"], 0.9 * f["m2"] + 0.3 * rng.standard_normal(n), 0)
    return z, cycling


def _expression(seed: int, cells, base, load, z, depth: float) -> np.ndarray:
    """Expected transcripts per cell and gene (float32, cells × genes)."""
    t = cells["type"]
    n, g = t.size, base.shape[1]
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(50,)))
    size = np.array([_TYPE_SIZE[c] for c in CELL_TYPES])[t] * rng.lognormal(0, 0.25, n)
    size[t == _T["adipocyte"]] *= 1.5
    logr = np.log(base[t]) + z @ load.T  # (n, g)
    rates = np.empty((n, g), np.float32)
    for gi in range(g):  # per-gene streams: a gene's noise does not depend on n_genes
        rg = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(51, gi)))
        rates[:, gi] = size * np.exp(logr[:, gi] + 0.3 * rg.standard_normal(n))
    if n:
        rates *= np.float32(depth / max(float(rates.sum(1).mean()), 1e-12))
    return rates


def _sample_transcripts(seed, layout: _Layout, cells, rates, extent, n_bins, bin_um):
    """Poisson counts per cell and gene, scattered over the cell footprint, plus 2 % ambient RNA."""
    y, x, t, r = cells["y"], cells["x"], cells["type"], cells["radius"]
    n, g = rates.shape
    is_ad = t == _T["adipocyte"]
    ty, tx, tg = [], [], []
    total = rates.sum(0)
    for gi in range(g):
        rg = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(60, gi)))
        k = rg.poisson(rates[:, gi])
        idx = np.repeat(np.arange(n), k)
        # transcripts: uniform over the cell disc; adipocytes: thin cytoplasmic rim
        u = rg.random(idx.size)
        u = np.where(is_ad[idx], 0.75 + 0.25 * u, u)
        rad = r[idx] * np.sqrt(u)
        ang = rg.uniform(0, 2 * np.pi, idx.size)
        py = y[idx] + rad * np.sin(ang)
        px = x[idx] + rad * np.cos(ang)
        n_amb = rg.poisson(0.02 * total[gi])
        ay = rg.uniform(0, extent[0], n_amb)
        ax = rg.uniform(0, extent[1], n_amb)
        if n_amb:
            ok = layout.lookup(ay, ax) != _D["background"]
            ay, ax = ay[ok], ax[ok]
        # positions are stored as float32; bin exactly what is stored (in float64, like a user would)
        py = np.concatenate([py, ay]).astype(np.float32)
        px = np.concatenate([px, ax]).astype(np.float32)
        inside = (py >= 0) & (py < extent[0]) & (px >= 0) & (px < extent[1])
        inside &= (np.floor(py.astype(np.float64) / bin_um) < n_bins[0]) & (
            np.floor(px.astype(np.float64) / bin_um) < n_bins[1]
        )
        ty.append(py[inside])
        tx.append(px[inside])
        tg.append(np.full(int(inside.sum()), gi, np.int16))
    ty_a = np.concatenate(ty) if ty else np.zeros(0, np.float32)
    tx_a = np.concatenate(tx) if tx else np.zeros(0, np.float32)
    tg_a = np.concatenate(tg) if tg else np.zeros(0, np.int16)
    iy = np.floor(ty_a.astype(np.float64) / bin_um).astype(np.int64)
    ix = np.floor(tx_a.astype(np.float64) / bin_um).astype(np.int64)
    flat = (tg_a.astype(np.int64) * n_bins[0] + iy) * n_bins[1] + ix
    counts = np.bincount(flat, minlength=g * n_bins[0] * n_bins[1]).astype(np.float32)
    return (ty_a, tx_a, tg_a), counts.reshape(g, n_bins[0], n_bins[1])


# ----------------------------------------------------------------------------------------------------
# H&E rendering
# ----------------------------------------------------------------------------------------------------
def _render_he(rng: np.random.Generator, layout: _Layout, cells, cycling, extent, n_he, he_um) -> np.ndarray:
    H, W = n_he
    yc = ((np.arange(H) + 0.5) * he_um).astype(np.float32)
    xc = ((np.arange(W) + 0.5) * he_um).astype(np.float32)
    dom = layout.domains(yc, xc, grid=True)
    tissue = dom != _D["background"]
    px_um = 1.0 / he_um

    y, x, t = cells["y"], cells["x"], cells["type"]
    n = y.size
    m = np.array([_MORPH[c] for c in CELL_TYPES])[t] if n else np.zeros((0, 12))
    a = np.clip(m[:, 0] + m[:, 1] * rng.standard_normal(n), 0.5 * m[:, 0], 1.8 * m[:, 0])
    ratio = np.clip(m[:, 2] + m[:, 3] * rng.standard_normal(n), 0.15, 1.0)
    big = cycling & (t == _T["tumour"])
    a[big] *= 1.12
    b = a * ratio
    e2 = m[:, 4] * rng.uniform(0.3, 1.5, n)
    e3 = m[:, 4] * rng.uniform(0.0, 1.0, n)
    p2 = rng.uniform(0, 2 * np.pi, n)
    p3 = rng.uniform(0, 2 * np.pi, n)
    hn = np.clip(m[:, 5] + m[:, 6] * rng.standard_normal(n), 0.4, 2.2)
    hn[big] *= 1.15
    tex, rim = m[:, 7], m[:, 8]
    rc, ec, hc = m[:, 9] * rng.uniform(0.85, 1.15, n), m[:, 10], m[:, 11]
    nucleolus = (t == _T["tumour"]) & (rng.random(n) < 0.5)

    # collagen: fibre direction field; fibres = noise filtered along the local direction
    f_dir = _Field(rng, 160.0, extent)
    f_dir2 = _Field(rng, 30.0, extent)
    theta = 0.9 * f_dir.grid(yc, xc) + 0.25 * f_dir2.grid(yc, xc)
    # desmoplastic stroma: close to tumour nests the fibres wrap around them (doubled-angle blend)
    ts = layout._tumour_score(yc, xc, grid=True)
    gy, gx = np.gradient(ts, he_um)
    w_nest = np.clip(np.hypot(gy, gx) * 60.0, 0, 3) * np.exp(-np.abs(ts - 0.4) / 0.5)
    ang_nest = np.arctan2(gy, gx) + np.pi / 2
    theta = 0.5 * np.arctan2(
        np.sin(2 * theta) + w_nest * np.sin(2 * ang_nest), np.cos(2 * theta) + w_nest * np.cos(2 * ang_nest)
    )
    del ts, gy, gx, w_nest, ang_nest

    # nuclei orientation: fibroblasts follow fibres, vessel cells tangential, others random
    th = cells["theta"].copy()
    iy = np.clip((y * px_um).astype(np.int64), 0, H - 1)
    ix = np.clip((x * px_um).astype(np.int64), 0, W - 1)
    free = np.isnan(th)
    th[free] = rng.uniform(0, np.pi, int(free.sum()))
    isfib = (t == _T["fibroblast"]) & free
    th[isfib] = theta[iy[isfib], ix[isfib]] + rng.normal(0, 0.15, int(isfib.sum()))
    # nucleus position: adipocyte nuclei are squeezed to the cell periphery
    ny_, nx_ = y.copy(), x.copy()
    ad = np.flatnonzero(t == _T["adipocyte"])
    ang = rng.uniform(0, 2 * np.pi, ad.size)
    ny_[ad] += (cells["radius"][ad] - 3.0) * np.sin(ang)
    nx_[ad] += (cells["radius"][ad] - 3.0) * np.cos(ang)
    th[ad] = ang + np.pi / 2
    show_ad = rng.random(ad.size) < 0.35  # only a fraction of adipocyte nuclei are in the section plane

    # nearest nucleus for every pixel (Voronoi via the Euclidean distance transform)
    vis = np.ones(n, bool)
    vis[ad[~show_ad]] = False
    seed_img = np.zeros((H, W), np.int32)
    vid = np.flatnonzero(vis)
    siy = np.clip((ny_[vid] * px_um).astype(np.int64), 0, H - 1)
    six = np.clip((nx_[vid] * px_um).astype(np.int64), 0, W - 1)
    seed_img[siy, six] = vid + 1
    e_img = np.zeros((H, W), np.float32)
    h_img = np.zeros((H, W), np.float32)

    # --- extracellular matrix by domain ---
    (fib,) = _oriented_noise(rng, theta, he_um, [(6.0, 0.8)])
    # loose areas and clefts: coarser texture, computed on a ~3 µm grid and upsampled
    f = max(1, int(round(3.0 / he_um)))
    (gaps,) = _oriented_noise(rng, theta[::f, ::f], he_um * f, [(18.0, 3.0)])
    if f > 1:
        gaps = ndimage.zoom(gaps, (H / gaps.shape[0], W / gaps.shape[1]), order=1, grid_mode=True, mode="nearest")
    dense = _Field(rng, 120.0, extent).grid(yc, xc)
    fibres = np.clip(0.5 + 0.35 * fib, 0, 1) ** 1.5
    e_ecm = (0.24 + 0.05 * dense) + (0.34 + 0.08 * dense) * fibres
    e_ecm = e_ecm * np.clip(1.6 + 0.8 * gaps - 0.25 * dense, 0.12, 1)  # loose areas and clefts
    ecm = (dom == _D["stroma"]) | (dom == _D["fat"])  # fat: septa between adipocytes
    e_img[:] = np.where(ecm, e_ecm, 0)
    h_img[:] = np.where(ecm, 0.04, 0)
    imm = dom == _D["immune"]
    e_img[imm] = 0.35 * e_ecm[imm] + 0.08
    h_img[imm] = 0.08
    tum = dom == _D["tumour"]
    e_img[tum] = 0.30
    h_img[tum] = 0.08
    del fib, gaps, fibres, dense, theta

    # --- fat: adipocyte vacuoles with thin membranes ---
    fat_px = np.zeros((H, W), bool)
    memb = np.zeros((H, W), np.float32)
    if ad.size:
        aseed = np.zeros((H, W), np.int32)
        aseed[iy[ad], ix[ad]] = np.arange(ad.size) + 1
        r0 = int(max(0, iy[ad].min() - 60 * px_um))
        r1 = int(min(H, iy[ad].max() + 60 * px_um))
        c0 = int(max(0, ix[ad].min() - 60 * px_um))
        c1 = int(min(W, ix[ad].max() + 60 * px_um))
        sub = aseed[r0:r1, c0:c1]
        ind = ndimage.distance_transform_edt(sub == 0, return_distances=False, return_indices=True)
        lab = sub[ind[0], ind[1]] - 1
        del ind
        cid = ad[lab]
        dd = np.hypot(yc[r0:r1, None] - y[cid], xc[None, c0:c1] - x[cid])
        rad = cells["radius"][cid]
        # packed vacuoles (Voronoi cells) inside the fat domain, rounded cells at its border
        inside = (dd < rad) | ((dom[r0:r1, c0:c1] == _D["fat"]) & (dd < 1.6 * rad))
        edge = np.zeros(lab.shape, bool)
        edge[:-1] |= (lab[:-1] != lab[1:]) | (inside[:-1] != inside[1:])
        edge[:, :-1] |= (lab[:, :-1] != lab[:, 1:]) | (inside[:, :-1] != inside[:, 1:])
        edge[1:] |= inside[1:] != inside[:-1]
        edge[:, 1:] |= inside[:, 1:] != inside[:, :-1]
        edge &= inside
        mm = ndimage.gaussian_filter(edge.astype(np.float32), 0.5 * px_um) * 1.6
        fat_px[r0:r1, c0:c1] = inside
        memb[r0:r1, c0:c1] = np.clip(mm, 0, 1)
        fat_px &= tissue
    e_img = np.where(fat_px, 0.015 + 0.55 * memb, e_img)
    h_img = np.where(fat_px, 0.01 + 0.06 * memb, h_img)
    del memb

    # --- tumour gland lumens ---
    for ly, lx, lr in zip(*cells["lumens"]):
        sl, dd = _patch(yc, xc, ly, lx, lr + 2, he_um)
        w = np.clip((lr - dd) * px_um + 0.5, 0, 1)
        e_img[sl] = e_img[sl] * (1 - w) + w * 0.06
        h_img[sl] = h_img[sl] * (1 - w) + w * 0.01

    if n == 0:
        return _stain(rng, e_img, h_img, tissue, he_um, extent, yc, xc)

    ind = ndimage.distance_transform_edt(seed_img == 0, return_distances=False, return_indices=True)
    lab = seed_img[ind[0], ind[1]] - 1
    del ind, seed_img

    # --- cytoplasm and nuclei (computed only on pixels close to their nearest nucleus) ---
    f32 = np.float32
    tl = t[lab]
    rc32 = rc.astype(f32)
    reach = np.maximum(rc32, (a * (1 + e2 + e3)).astype(f32) + 1.0)  # max. extent of cell drawing
    ny32, nx32 = ny_.astype(f32), nx_.astype(f32)
    dy = yc[:, None] - ny32[lab]
    dx = xc[None, :] - nx32[lab]
    d2 = dy * dy + dx * dx
    near = (d2 < reach[lab] ** 2) & tissue
    pix = np.flatnonzero(near)
    labp, dyp, dxp = lab.ravel()[pix], dy.ravel()[pix], dx.ravel()[pix]
    dp = np.sqrt(d2.ravel()[pix])
    del dy, dx, d2, near
    tp = t[labp]

    cw = np.clip((rc32[labp] - dp) * f32(1.2) + f32(0.5), 0, 1)
    cw[fat_px.ravel()[pix] & (tp != _T["adipocyte"])] *= f32(0.7)
    foam = _fine_noise(rng, (H, W), 0.8 * px_um).ravel()[pix]
    ecy = ec.astype(f32)[labp] * (1 + np.where(tp == _T["macrophage"], f32(0.35), f32(0.12)) * foam)
    # faint cell borders between tumour cells
    bord = np.zeros((H, W), bool)
    bord[:-1] |= lab[:-1] != lab[1:]
    bord[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    bord &= tl == _T["tumour"]
    ecy += f32(0.12) * bord.ravel()[pix]
    del bord, foam, tl

    th32 = th.astype(f32)
    c, s_ = np.cos(th32)[labp], np.sin(th32)[labp]
    al, bl = a.astype(f32)[labp], b.astype(f32)[labp]
    u = (dxp * c + dyp * s_) / al
    v = (-dxp * s_ + dyp * c) / bl
    rr = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    rmax = 1 + e2.astype(f32)[labp] * np.cos(2 * phi + p2.astype(f32)[labp])
    rmax += e3.astype(f32)[labp] * np.cos(3 * phi + p3.astype(f32)[labp])
    del phi, u, v, c, s_
    sc = np.sqrt(al * bl)
    nw = np.clip((rmax - rr) * sc / f32(0.45) + f32(0.5), 0, 1)
    nw[~vis[labp]] = 0
    chrom = _fine_noise(rng, (H, W), 0.45 * px_um).ravel()[pix]
    q = np.clip(rr / rmax, 0, 1)
    rim_p = rim.astype(f32)[labp]
    h_nuc = hn.astype(f32)[labp] * (1 - rim_p + f32(1.6) * rim_p * q * q)
    h_nuc *= np.clip(1 + tex.astype(f32)[labp] * chrom, f32(0.3), f32(2))
    spot = np.where(nucleolus[labp], np.exp(-((rr * sc) ** 2) / f32(0.5)), f32(0))
    h_nuc += f32(0.7) * spot
    e_nuc = f32(0.22) + f32(0.35) * spot
    del chrom, q, rim_p, rr, rmax, spot, sc, al, bl

    ef, hf = e_img.ravel(), h_img.ravel()  # views: update in place
    ep = ef[pix] * (1 - cw) + ecy * cw
    hp = hf[pix] * (1 - cw) + hc.astype(f32)[labp] * cw
    ef[pix] = ep * (1 - nw) + e_nuc * nw
    hf[pix] = hp * (1 - nw) + h_nuc * nw
    del ep, hp, ecy, cw, nw, h_nuc, e_nuc, pix, labp, dyp, dxp, dp, tp, lab

    # --- vessels: wall, lumen with red blood cells ---
    for vy, vx, vr in zip(*cells["vessels"]):
        sl, dd = _patch(yc, xc, vy, vx, vr + 3, he_um)
        lum = np.clip((vr - 0.8 - dd) * px_um + 0.5, 0, 1)
        wall = np.clip(1 - np.abs(dd - vr) / 1.0, 0, 1)
        e_img[sl] = e_img[sl] * (1 - lum) + lum * 0.03 + 0.3 * wall
        h_img[sl] = h_img[sl] * (1 - lum) + lum * 0.005
        k = rng.poisson(0.35 * (vr / 3.5) ** 2)
        if k:
            rr_ = (vr - 3.5) * np.sqrt(rng.random(k))
            aa = rng.uniform(0, 2 * np.pi, k)
            by, bx = vy + rr_ * np.sin(aa), vx + rr_ * np.cos(aa)
            gy_ = yc[sl[0]][:, None, None] - by[None, None, :]
            gx_ = xc[sl[1]][None, :, None] - bx[None, None, :]
            rbc = np.clip((3.5 - np.sqrt(gy_**2 + gx_**2).min(-1)) * px_um + 0.5, 0, 1) * lum
            e_img[sl] += 1.1 * rbc
    return _stain(rng, e_img, h_img, tissue, he_um, extent, yc, xc)


def _oriented_noise(rng, theta, step_um, specs, n_bins: int = 6):
    """White noise filtered by anisotropic Gaussians along the local direction ``theta`` (radians).

    For every ``(sigma_along, sigma_across)`` in ``specs`` (µm) one unit-variance texture is returned.
    The filtering is done in Fourier space for ``n_bins`` orientations and blended linearly.
    """
    from scipy import fft as sfft

    H, W = theta.shape
    F = sfft.rfft2(rng.standard_normal((H, W), dtype=np.float32))
    ky = sfft.fftfreq(H, d=step_um).astype(np.float32)[:, None]
    kx = sfft.rfftfreq(W, d=step_um).astype(np.float32)[None, :]
    width = np.pi / n_bins
    outs = [np.zeros((H, W), np.float32) for _ in specs]
    for k in range(n_bins):
        ang = k * width
        kp = kx * np.cos(ang) + ky * np.sin(ang)
        kq = -kx * np.sin(ang) + ky * np.cos(ang)
        dth = np.abs(((theta - ang + np.pi / 2) % np.pi) - np.pi / 2)
        w = np.clip(1 - dth / width, 0, 1)
        for out, (sa, sc) in zip(outs, specs):
            tf = np.exp(-2 * np.pi**2 * (sa**2 * kp**2 + sc**2 * kq**2)).astype(np.float32)
            out += w * sfft.irfft2(F * tf, s=(H, W))
    for out in outs:
        out /= max(float(out.std()), 1e-6)
    return outs


def _patch(yc, xc, cy, cx, r, he_um):
    r0 = max(0, int((cy - r) / he_um))
    r1 = min(yc.size, int((cy + r) / he_um) + 2)
    c0 = max(0, int((cx - r) / he_um))
    c1 = min(xc.size, int((cx + r) / he_um) + 2)
    sl = (slice(r0, r1), slice(c0, c1))
    dd = np.hypot(yc[r0:r1, None] - cy, xc[None, c0:c1] - cx)
    return sl, dd


def _stain(rng, e_img, h_img, tissue, he_um, extent, yc, xc) -> np.ndarray:
    """Beer-Lambert optical-density mixing, stain variation, blur and noise → RGB uint8 (3, H, W)."""
    px_um = 1.0 / he_um
    # soft tissue edge and stain variation across the slide
    edge = ndimage.gaussian_filter(tissue.astype(np.float32), 1.5 * px_um)
    h_img *= edge * (1 + 0.10 * _Field(rng, 400.0, extent).grid(yc, xc))
    e_img *= edge * (1 + 0.12 * _Field(rng, 400.0, extent).grid(yc, xc))
    sig = 0.35 * px_um
    h_img = ndimage.gaussian_filter(h_img, sig)
    e_img = ndimage.gaussian_filter(e_img, sig)
    hv = _STAIN_H + rng.normal(0, 0.02, 3)
    ev = _STAIN_E + rng.normal(0, 0.02, 3)
    hv, ev = (hv / np.linalg.norm(hv)).astype(np.float32), (ev / np.linalg.norm(ev)).astype(np.float32)
    out = np.empty((3,) + h_img.shape, np.uint8)
    bg = np.array([0.035, 0.045, 0.030], np.float32)
    for ch in range(3):
        od = hv[ch] * h_img + ev[ch] * e_img + bg[ch]
        val = 255.0 * np.exp(-od) + 2.0 * rng.standard_normal(od.shape, dtype=np.float32)
        out[ch] = np.clip(val, 0, 255).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------------------------------
# SpatialData assembly
# ----------------------------------------------------------------------------------------------------
def _to_spatialdata(he, counts, dom_bins, cells, rates, genes, tx, transcripts, he_um, bin_um, cs):
    import anndata as ad
    import geopandas as gpd
    import pandas as pd
    from shapely import points as shp_points
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, Labels2DModel, PointsModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    he_tf = {cs: Scale([he_um, he_um], axes=("y", "x"))}
    bin_tf = {cs: Scale([bin_um, bin_um], axes=("y", "x"))}
    scale_factors = [2, 4] if min(he.shape[1:]) >= 256 else None
    images = {
        "he": Image2DModel.parse(
            he, dims=("c", "y", "x"), c_coords=["r", "g", "b"], transformations=he_tf,
            scale_factors=scale_factors, chunks=(3, 1024, 1024),
        ),
        "hr_counts": Image2DModel.parse(
            counts, dims=("c", "y", "x"), c_coords=list(genes), transformations=bin_tf
        ),
    }  # fmt: skip
    labels = {"domains": Labels2DModel.parse(dom_bins, dims=("y", "x"), transformations=bin_tf)}

    n = cells["y"].size
    ids = np.arange(n)
    ctype = pd.Categorical.from_codes(cells["type"], categories=list(CELL_TYPES))
    cdom = pd.Categorical.from_codes(cells["domain"], categories=list(DOMAINS))
    gdf = gpd.GeoDataFrame(
        {"radius": cells["radius"].astype(float), "cell_type": ctype, "domain": cdom},
        geometry=shp_points(np.c_[cells["x"], cells["y"]]),
        index=pd.Index(ids, name="cell_id"),
    )
    shapes, tables = {}, {}
    if n == 0:  # spatialdata cannot hold empty shapes
        logger.warning("synthetic_tissue: the section holds no cells; 'cells' and 'table' are omitted.")

    obs = pd.DataFrame(
        {
            "cell_type": ctype,
            "domain": cdom,
            "region": pd.Categorical(["cells"] * n, categories=["cells"]),
            "cell_id": ids,
        },
        index=pd.Index(ids.astype(str)),
    )
    adata = ad.AnnData(
        X=rates.astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(list(genes))),
        obsm={"spatial": np.c_[cells["x"], cells["y"]].astype(np.float64)},
    )
    if n:
        shapes["cells"] = ShapesModel.parse(gdf, transformations={cs: Identity()})
        tables["table"] = TableModel.parse(adata, region="cells", region_key="region", instance_key="cell_id")

    points = {}
    if transcripts:
        ty, txx, tg = tx
        df = pd.DataFrame(
            {
                "x": txx,
                "y": ty,
                "gene": pd.Categorical.from_codes(tg.astype(np.int32), categories=list(genes)),
            }
        )
        points["transcripts"] = PointsModel.parse(
            df, coordinates={"x": "x", "y": "y"}, feature_key="gene", transformations={cs: Identity()}
        )
    return SpatialData(images=images, labels=labels, shapes=shapes, points=points, tables=tables)
