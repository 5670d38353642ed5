"""Choosing the default's spread shape on validation data: how the error of the mean grows with distance.

The ``model=None`` default (:class:`stdiff.models.SpotRate`) calibrates a per-gene error of its
rate on held-out spots, which lie about one pitch from the nearest measured spot; HR pixels lie
closer to a measurement. The error's log-sd is ``σ_g · sqrt(floor + (1 − floor) · d / pitch)`` with
``d`` the distance to the nearest measurement centre; ``floor = 1`` is a constant error near the
spots. This script fits the default on the *validation* part of each benchmark's training data (the
``--validate`` split; the test data are never read), recalibrates it for each ``floor`` of a grid
(the fits are shared) and scores its predictive draws against the validation truth in the
benchmark's space: 90% interval coverage and spread-skill, per dataset and seed. Run::

    STDIFF_DATA_DIR=../shared/data python benchmarks/default_spread.py \
        > benchmarks/results/validation/default_spread_spot_rate.txt

(``default_spread.txt`` beside it is the same choice for the aggregation ensemble, made with this
script before it fitted ``SpotRate``.)
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

import numpy as np
import torch

from stdiff.benchmark._data import prepare, preset
from stdiff.benchmark._probabilistic import coverage, spread_skill
from stdiff.benchmark._profiles import dataset_settings
from stdiff.benchmark._run import measured_as
from stdiff.benchmark._splits import validation_split
from stdiff.models import SpotRate
from stdiff.pp import fit_normalizer

FLOORS = (0.25, 0.5, 0.75, 1.0)
DATASETS = (("synthetic", "square"), ("synthetic", "visium"), ("her2st", "square"), ("merfish", "square"))


def validation_sections(name: str, platform: str, seed: int):
    spec = preset(name, dataset_settings("cpu", name)).with_platform(platform)
    split = prepare(spec, spec.factors[0], tile_lr=4)
    fit, val, note = validation_split(split.train, tile_lr=4)
    _, _, val = measured_as(platform, fit, None, val, seed)
    return fit_normalizer(fit), val, note


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    seeds = [int(s) for s in a.seeds.split(",")]
    table: dict[tuple, list] = {}
    for name, platform in DATASETS:
        for seed in seeds:
            norm, val, note = validation_sections(name, platform, seed)
            for s in val:
                ens = SpotRate().fit(replace(s, hr=None, mask_truth=None), seed=seed)
                mean = ens.predict_section(s)["mean"]
                nm, m = norm.subset(s.genes), s.truth_mask
                truth = nm.transform(s.hr)[:, m]
                for floor in FLOORS:
                    ens.calibrate(floor=floor, seed=seed)
                    draws = nm.transform(ens.sample(mean, s, 32, seed=seed), axis=-3)[:, :, m]
                    cov = float(np.mean(coverage(draws, truth, 0.9)))
                    ss = float(np.nanmean(spread_skill(draws, truth)))
                    table.setdefault((name, platform, floor), []).append((cov, ss))
        print(f"{name} ({platform}; validation: {note})", flush=True)
        for floor in FLOORS:
            v = np.array(table[(name, platform, floor)])
            print(f"  floor {floor:.2f}: coverage90 {v[:, 0].mean():.3f} ± {v[:, 0].std():.3f}, "
                  f"spread-skill {v[:, 1].mean():.3f} ± {v[:, 1].std():.3f}", flush=True)  # fmt: skip
    print("mean |coverage90 − 0.90| over datasets:")
    for floor in FLOORS:
        dev = [abs(np.mean([c for c, _ in table[(n, pl, floor)]]) - 0.9) for n, pl in DATASETS]
        print(f"  floor {floor:.2f}: {np.mean(dev):.3f}")


if __name__ == "__main__":
    main()
