"""Synthetic tissue, part 4: H&E rendering.

A Beer-Lambert stain model (hematoxylin + eosin optical densities) with type-specific nuclei,
cytoplasm, oriented collagen fibres, adipocyte vacuoles, gland lumens, vessels with red blood cells,
stain variation, blur and pixel noise.  Used by :func:`stdiff.datasets.synthetic_tissue`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._synthetic_layout import _D, _T, CELL_TYPES, _Field, _Layout

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

_STAIN_H = np.array([0.650, 0.704, 0.286])
_STAIN_E = np.array([0.216, 0.801, 0.558])


def _fine_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    n = rng.standard_normal(shape, dtype=np.float32)
    if sigma_px > 0.3:
        n = ndimage.gaussian_filter(n, sigma_px, mode="wrap")
        n /= max(float(n.std()), 1e-6)
    return n


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
