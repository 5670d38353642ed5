"""The default call on real spot sections: ``sd.tl.superresolve(her2st(section), genes=<top N by counts>)``.

What a new user gets from the default (``model=None``, no ``lr_um``) on each her2st section, measured as
the spots issue asks:

- ``zero_in_hull``: per gene, the share of HR pixels inside the spots' convex hull that are exactly 0
  (the largest over genes is reported);
- ``std_alive``: the share of tissue HR pixels (mean > 0) with a standard deviation above 0, and
  whether the spread was calibrated (held-out spots' coverage);
- ``block_index``: :func:`stdiff.benchmark._metrics.block_artefact_index` of the mean on a grid at
  the spot pitch (the LR tiling grid of the section), and of the spots' own nearest-spot (Voronoi)
  map for reference;
- ``moran_spearman``: Spearman correlation, over genes, of squidpy's Moran's I on the HR pixels
  (``sd.tl.to_anndata``) with Moran's I on the measured spots (6 nearest neighbours each), and
  ``moran_spearman_pitch`` the same at a matched scale (neighbours within 1.05 pitch for both);
- ``seconds``: wall time of the call.

It also writes the figure of one section (``--figure``). ``--sections visium_mini`` runs the same on
the GiottoData Visium mouse-brain crop. Run::

    STDIFF_DATA_DIR=../shared/data python benchmarks/spot_default.py --out benchmarks/results/spot_default_her2st.json \
        --figure docs/_static/her2st_C5_default_spots.png
    STDIFF_DATA_DIR=../shared/data python benchmarks/spot_default.py --sections visium_mini --genes 10 \
        --out benchmarks/results/spot_default_visium_mini.json --figure docs/_static/visium_mini_default_spots.png
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np


def moran(adata, coords: np.ndarray, radius: float | None = None) -> np.ndarray:
    """Moran's I per gene (squidpy) of ``adata`` at ``coords``: 6 nearest neighbours, or all within ``radius``."""
    import squidpy as sq

    adata = adata.copy()
    adata.obsm["spatial"] = coords
    if radius is None:
        sq.gr.spatial_neighbors(adata, coord_type="generic", n_neighs=6)
    else:
        sq.gr.spatial_neighbors(adata, coord_type="generic", radius=float(radius))
    sq.gr.spatial_autocorr(adata, mode="moran", genes=list(adata.var_names), n_perms=None, n_jobs=1)
    return adata.uns["moranI"].loc[list(adata.var_names), "I"].to_numpy()


def load(name: str):
    """A her2st section by name, or ``"visium_mini"`` (the GiottoData Visium mouse-brain crop)."""
    import stdiff as sd

    return sd.datasets.visium_mouse_brain_mini() if name == "visium_mini" else sd.datasets.her2st(name)


def check_section(name: str, n_genes: int, seed: int, figure: str | None) -> dict:
    import anndata as ad
    from scipy.spatial import Delaunay
    from scipy.stats import spearmanr

    import stdiff as sd
    from stdiff.benchmark._metrics import block_artefact_index

    s = load(name)
    t = s.tables["table"]
    top = list(t.var_names[np.argsort(-np.asarray(t.X.sum(0)).ravel(), kind="stable")[:n_genes]])
    t0 = time.perf_counter()
    sd.tl.superresolve(s, genes=top, seed=seed, progress=False)
    seconds = time.perf_counter() - t0
    el, el_sd = s.images["stdiff"], s.images.get("stdiff_std")
    arr = lambda e: np.asarray((e["scale0"].image if hasattr(e, "children") and len(e.children) else e).values)
    mean = arr(el)
    std = None if el_sd is None else arr(el_sd)
    sec = sd.tl.section_of(s)
    fp = sec.footprints()
    hull = (Delaunay(sec.spots.xy.T).find_simplex(fp.pixel_centres()) >= 0).reshape(sec.mask_hr.shape)
    zero = [float((mean[g][hull] == 0).mean()) for g in range(len(top))]
    _, owner = fp.nearest()
    voronoi = (sec.spots.counts / fp.full_area_px[None])[:, owner] * sec.mask_hr[None]
    prov = s.attrs["stdiff"]["stdiff"]
    alive = None if std is None else float((std[sec.mask_hr[None] & (mean > 0)] > 0).mean())
    hr = sd.tl.to_anndata(s, "stdiff")
    spots = ad.AnnData(np.asarray(t[:, top].X.toarray(), dtype=np.float64), var={"gene": top})
    spots.var_names = top
    hr_i = moran(hr, hr.obsm["spatial"])
    spot_i = moran(spots, np.asarray(t.obsm["spatial"]))
    pitch = 1.05 * sec.spots.geometry.pitch_um
    hr_p, spot_p = moran(hr, hr.obsm["spatial"], pitch), moran(spots, np.asarray(t.obsm["spatial"]), pitch)
    if figure:
        sd.pl.superresolution(s, genes=top[:3], save=figure)
    return {
        "section": name, "genes": top, "seconds": seconds, "hr_um": sec.hr_um, "pitch_um": sec.spots.geometry.pitch_um,
        "platform": sec.spots.geometry.platform, "zero_in_hull_max": max(zero), "zero_in_hull": zero,
        "std_alive": alive, "calibration": prov.get("calibration"),
        "block_index": block_artefact_index(mean, sec.factor, sec.mask_hr),
        "block_index_voronoi": block_artefact_index(voronoi, sec.factor, sec.mask_hr),
        "moran_spearman": float(spearmanr(hr_i, spot_i).statistic),
        "moran_spearman_pitch": float(spearmanr(hr_p, spot_p).statistic),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="B4,C2,C3,C4,C5", help="her2st sections, or visium_mini")
    p.add_argument("--genes", type=int, default=20, help="top genes by total counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", default=None, help="figure of the last section")
    p.add_argument("--out", default="benchmarks/results/spot_default_her2st.json")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = [x for x in a.sections.split(",") if x]
    rows = [check_section(n, a.genes, a.seed, a.figure if n == names[-1] else None) for n in names]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"command": "python benchmarks/spot_default.py", "rows": rows}, indent=1))
    for r in rows:
        cal = r["calibration"] or {}
        print(f"{r['section']}: {r['seconds']:.0f} s, zero in hull ≤ {r['zero_in_hull_max']:.3f}, std alive "
              f"{r['std_alive']}, held-out coverage {cal.get('coverage_held_out')}, block index {r['block_index']:.2f} "
              f"(Voronoi {r['block_index_voronoi']:.2f}), Moran Spearman {r['moran_spearman']:.2f} (6 NN), "
              f"{r['moran_spearman_pitch']:.2f} (within a pitch)")  # fmt: skip


if __name__ == "__main__":
    main()
