"""The width of the normalised convolution between spots, chosen on validation data.

The spot-native map (each spot's counts on its footprint, the gaps by the normalised convolution of
the spots' densities; :func:`stdiff.pp.lr_per_tissue_pixel`) and the normalised convolution alone
(:meth:`stdiff.spots.Footprints.render`) for Gaussians of 0.3–0.75 pitch, scored (mean per-gene PCC in
the benchmark's space) on the validation part of the synthetic training region measured by simulated
Visium lattices (3 lattices). Run::

    python benchmarks/render_sigma.py > benchmarks/results/validation/render_sigma.txt
"""

from __future__ import annotations

import numpy as np
import torch

import stdiff.spots._footprints as footprints
from stdiff.benchmark._data import prepare, preset
from stdiff.benchmark._metrics import pcc
from stdiff.benchmark._profiles import dataset_settings
from stdiff.benchmark._run import measured_as
from stdiff.benchmark._splits import validation_split
from stdiff.pp import fit_normalizer, lr_per_tissue_pixel


def main() -> None:
    torch.set_num_threads(1)
    spec = preset("synthetic", dataset_settings("cpu", "synthetic")).with_platform("visium")
    split = prepare(spec, spec.factors[0], tile_lr=4)
    fit, val, note = validation_split(split.train, tile_lr=4)
    norm = fit_normalizer(split.train)
    print(f"synthetic, Visium; validation: {note}")
    for sigma in (0.3, 0.4, 0.5, 0.6, 0.75):
        footprints.RENDER_SIGMA = sigma
        rows = []
        for seed in (0, 1, 2):
            _, v, _ = measured_as("visium", fit, val, [], seed)
            s = v[0]
            truth = norm.transform(s.hr)
            native = pcc(norm.transform(lr_per_tissue_pixel(s)), truth, s.truth_mask)
            conv = pcc(norm.transform(s.footprints().render()) * s.mask_hr[None], truth, s.truth_mask)
            rows.append((np.nanmean(native), np.nanmean(conv)))
        native, conv = np.mean(rows, 0)
        print(f"  σ = {sigma:.2f} pitch: spot-native map {native:.4f}, normalised convolution alone {conv:.4f}")


if __name__ == "__main__":
    main()
