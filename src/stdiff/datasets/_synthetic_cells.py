"""Synthetic tissue, part 2: cell placement.

Cells on jittered hexagonal lattices relaxed by short-range repulsion, with domain-specific spacing
and cell-type mixing; adipocytes and septal cells in fat, gland lumens in tumour nests, vessels with
endothelial linings in the stroma.  Used by :func:`stdiff.datasets.synthetic_tissue`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ._synthetic_layout import _D, _T, CELL_TYPES, _Layout, _sigmoid

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
# Cell-type mixing per domain (stroma composition is further modulated by proximity to tumour).
_MIX = {
    "tumour": {"tumour": 0.86, "T_cell": 0.05, "macrophage": 0.05, "fibroblast": 0.03, "endothelial": 0.01},
    "stroma": {"fibroblast": 0.62, "macrophage": 0.12, "T_cell": 0.14, "B_cell": 0.04, "endothelial": 0.08},
}


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
