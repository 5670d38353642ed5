"""The measurement model figure of docs/model.md: Visium spots over the 10 µm HR grid.

A synthetic section (known 10 µm truth) measured by a simulated Visium lattice
(:func:`stdiff.pp.simulate_platform`: 55 µm discs, hexagonal, 100 µm apart, random offset and
rotation), shown as: the HR grid with each pixel's footprint coverage and the disc outlines | the
truth | what the spots measure (each spot's counts per HR pixel on its footprint; the gaps are
unmeasured) | the spot-native map every model starts from (each spot's counts on its footprint, the
gaps by normalised convolution; :func:`stdiff.pp.lr_per_tissue_pixel`) | the ``model=None`` default
of :func:`stdiff.tl.superresolve` (histology places the counts, in the spots and between them). Run::

    python benchmarks/make_spot_figure.py --out docs/_static/spot_measurement.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Circle

import stdiff as sd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/_static/spot_measurement.png")
    p.add_argument("--gene", default="COL1A1")
    a = p.parse_args()
    s = sd.datasets.synthetic_tissue(size_um=1000, n_genes=12, seed=3)
    sec = sd.pp.rasterize(s, counts_key="hr_counts", lr_um=100, factor=10, he_scale=1)
    sim = sd.pp.simulate_platform(sec, "visium", seed=1)
    fp = sim.footprints()
    g = sim.genes.index(a.gene)
    H, W = sim.mask_hr.shape
    x0, y0 = sim.origin
    ext = (x0, x0 + W * sim.hr_um, y0 + H * sim.hr_um, y0)
    measured = np.where(fp.coverage() >= 0.5, (sim.spots.counts[g] / fp.full_area_px)[fp.nearest()[1]], np.nan)
    base = sd.pp.lr_per_tissue_pixel(sim)[g]
    from dataclasses import replace

    from stdiff.models import SelfSupervisedEnsemble

    spots_only = replace(sim, hr=None, mask_truth=None)
    default = SelfSupervisedEnsemble().fit(spots_only, seed=0).predict_section(spots_only)["mean"][g]
    truth = sim.hr[g] * sim.truth_mask
    vmax = float(np.quantile(np.log1p(truth[sim.truth_mask]), 0.995))
    fig, ax = plt.subplots(1, 5, figsize=(18.5, 4.2), constrained_layout=True)
    zoom = (x0 + 250, x0 + 550, y0 + 550, y0 + 250)
    ax[0].imshow(fp.coverage(), extent=ext, cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    for (cx, cy), r in zip(sim.spots.xy.T, sim.spots.radius):
        ax[0].add_patch(Circle((cx, cy), r, fill=False, color="tab:red", lw=1.2))
    for v in np.arange(x0, x0 + W * sim.hr_um + 1e-9, sim.hr_um):
        ax[0].axvline(v, color="tab:blue", lw=0.3, alpha=0.5)
    for v in np.arange(y0, y0 + H * sim.hr_um + 1e-9, sim.hr_um):
        ax[0].axhline(v, color="tab:blue", lw=0.3, alpha=0.5)
    ax[0].set_xlim(zoom[0], zoom[1])
    ax[0].set_ylim(zoom[2], zoom[3])
    ax[0].set_title("10 µm HR grid: covered part of each pixel\n(55 µm discs, 100 µm hexagonal lattice)", fontsize=9)
    for k, (img, title) in enumerate(
        [(truth, f"truth, {a.gene} (10 µm)"), (measured, "what the spots measure\n(gaps unmeasured)"),
         (base, "spot-native map: spots on their footprints,\ngaps by normalised convolution"),
         (default, "superresolve(model=None):\nhistology places the counts")], start=1,
    ):  # fmt: skip
        ax[k].imshow(np.log1p(img), extent=ext, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax[k].set_title(title, fontsize=9)
    for axis in ax:
        axis.set_xticks([])
        axis.set_yticks([])
    fig.savefig(a.out, dpi=110)
    print(f"Wrote {a.out}: {len(sim.spots)} spots, coverage of tissue {fp.coverage()[sim.mask_hr].mean():.2f}.")


if __name__ == "__main__":
    main()
