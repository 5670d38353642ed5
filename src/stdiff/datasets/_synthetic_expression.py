"""Synthetic tissue, part 3: gene programs, module states, expression rates and transcripts.

The gene panel (cell-type markers and co-expressed modules), per-cell latent module states driven by
visible context and hidden spatial fields, expected transcripts per cell and gene, and the Poisson
sampling of transcripts over the cell footprints.  Used by :func:`stdiff.datasets.synthetic_tissue`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ._synthetic_layout import _D, _T, CELL_TYPES, _Field, _Layout, _sigmoid

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
