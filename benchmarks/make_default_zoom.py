"""A zoom on one spot neighbourhood of the default's map (mean and sd), with 10% of the spots hidden.

``sd.tl.superresolve(her2st("C5") without 10% of its spots, genes=<top 10 by counts>)`` with every
default; the figure shows the whole section (H&E, mean, sd of one gene) and a 7-pitch crop around the
section's median spot position with every spot drawn (cyan: measured, red: hidden from the call) and
its measured count written in it. What to look for: no disc is a hole or a flat plateau, a zero-count
spot among expressing neighbours is not a certain zero, the sd does not repeat the lattice. Run::

    STDIFF_DATA_DIR=../shared/data python benchmarks/make_default_zoom.py --out docs/_static/her2st_C5_default_zoom.png
"""

from __future__ import annotations

import argparse
import logging

import numpy as np


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import stdiff as sd
    from stdiff._spatial import finest_level
    from stdiff.benchmark._holdout import hide, section_spots

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--section", default="C5")
    p.add_argument("--gene", type=int, default=0, help="index of the gene shown among the top 10 by counts")
    p.add_argument("--hide", type=float, default=0.1)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sdata = sd.datasets.her2st(a.section)
    table = sdata.tables["table"]
    genes = list(table.var_names[np.argsort(-np.asarray(table.X.sum(0)).ravel(), kind="stable")[:10]])
    spots = section_spots(sdata, genes, "table")
    hidden = np.random.default_rng(1).random(len(spots)) < a.hide
    sub = hide(sdata, "table", ~hidden)
    sd.tl.superresolve(sub, genes, progress=False)
    prov = sub.attrs["stdiff"]["stdiff"]
    mean, std = finest_level(sub.images["stdiff"])[a.gene], finest_level(sub.images["stdiff_std"])[a.gene]
    section = sd.tl.section_of(sub)
    hr, (ox, oy) = prov["hr_um"], prov["origin"]
    H, W = mean.shape
    extent = [ox, ox + W * hr, oy + H * hr, oy]
    he = section.he.transpose(1, 2, 0)
    pitch = float(spots.geometry.pitch_um)
    cx, cy = np.median(spots.xy, axis=1)
    half = 3.5 * pitch
    fig, ax = plt.subplots(2, 3, figsize=(15, 10))
    vmax = float(np.log1p(mean).max())
    for row in ax:
        row[0].imshow(he, extent=extent)
        row[1].imshow(np.log1p(mean), cmap="magma", extent=extent, vmin=0, vmax=vmax)
        row[2].imshow(np.log1p(std), cmap="viridis", extent=extent)
    for a_, title in zip(ax[0], ("H&E", f"{genes[a.gene]}: mean (log1p counts / HR pixel)", "predictive sd (log1p)"),
                         strict=True):  # fmt: skip
        a_.set_title(title)
    counts = spots.counts[a.gene]
    for a_ in ax[1]:
        a_.set_xlim(cx - half, cx + half)
        a_.set_ylim(cy + half, cy - half)
        for k in np.nonzero((np.abs(spots.xy[0] - cx) < half + pitch) & (np.abs(spots.xy[1] - cy) < half + pitch))[0]:
            a_.add_patch(plt.Circle(spots.xy[:, k], spots.radius[k], fill=False, lw=1.2,
                                    color="red" if hidden[k] else "cyan"))  # fmt: skip
            a_.text(*spots.xy[:, k], str(int(counts[k])), color="white", fontsize=8, ha="center", va="center")
    ax[1, 0].set_title(f"crop: {int(hidden.sum())} of {len(spots)} spots hidden (red), counts written in")
    fig.suptitle(f"her2st {a.section}, the model=None default at {hr:g} µm (held-out r {prov['calibration']['held_out_pcc']:.3f}"
                 f", 6 nearest spots {prov['calibration']['nearest6_pcc']:.3f})")  # fmt: skip
    fig.savefig(a.out, dpi=80, bbox_inches="tight")


if __name__ == "__main__":
    main()
