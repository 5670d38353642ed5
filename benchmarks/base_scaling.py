"""Would a smooth scaling remove the block edges of square LR maps? A probe on validation data only.

The square path distributes each LR pixel's counts over its block (by a flat map or a histology
abundance) with one factor per block, which leaves a step at every block edge (block index ≈ 1.3 on
synthetic at 20 µm). ``smooth_distribute`` instead multiplies the weights by a mask-aware bilinear
interpolation of the per-block factors, refined until the blocks sum to within 0.1% of their
counts. Both are scored on the benchmark's validation part of the training data (``--validate``'s
split; never the test data), for the flat map and for an aggregation-consistency abundance fitted
on the fit part (3 seeds): per-gene PCC in the benchmark's normalised space and the block index.
Run::

    STDIFF_DATA_DIR=../shared/data python benchmarks/base_scaling.py synthetic her2st merfish \
        > benchmarks/results/validation/base_scaling.txt
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from stdiff.benchmark._data import prepare, preset
from stdiff.benchmark._metrics import block_artefact_index, pcc
from stdiff.benchmark._profiles import dataset_settings
from stdiff.benchmark._splits import validation_split
from stdiff.models import AggregationConsistency
from stdiff.pp import aggregate, fit_normalizer, lr_per_tissue_pixel


def _tent_upsample(values: np.ndarray, weight: np.ndarray, factor: int) -> np.ndarray:
    """Mask-aware bilinear interpolation of per-LR-pixel ``values`` ``(G, h, w)`` to the HR grid.

    Normalised convolution with a tent (bilinear) kernel over the LR pixel centres: LR pixels with
    ``weight`` 0 do not contribute; HR pixels beyond the outermost centres take the nearest ones.
    """
    import torch
    import torch.nn.functional as F

    v = torch.as_tensor(values * weight[None], dtype=torch.float64)[None]
    m = torch.as_tensor(weight, dtype=torch.float64)[None, None]
    h, w = weight.shape
    size = (h * factor, w * factor)
    up_v = F.interpolate(v, size=size, mode="bilinear", align_corners=False)[0]
    up_m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0]
    near = np.repeat(np.repeat(values, factor, -2), factor, -1)
    out = np.where(up_m.numpy() > 1e-9, up_v.numpy() / np.maximum(up_m.numpy(), 1e-12), near)
    return out


def smooth_distribute(
    lr: np.ndarray, weights: np.ndarray, mask: np.ndarray, factor: int, *, iterations: int = 20
) -> np.ndarray:
    """Distribute each LR pixel's counts by ``weights`` with a *smooth* scaling (no block edges).

    ``HR = weights · U(r)``: ``r`` per LR pixel, ``U`` the mask-aware bilinear interpolation of ``r``
    to the HR grid, and ``r`` refined multiplicatively (``r ← r · LR / Σ_block HR``) so that the
    blocks sum close to their counts (not exactly: an exact sum per block needs a step at every
    block edge). ``lr`` ``(G, h, w)``, ``weights`` ``(G, H, W)``, ``mask`` ``(H, W)``.
    """
    f = int(factor)
    m = np.asarray(mask, bool)
    w = np.where(m[None], np.asarray(weights, np.float64), 0.0)
    lr = np.asarray(lr, np.float64)
    tissue = aggregate(m.astype(np.float64), f) > 0
    block_w = aggregate(w, f)
    even = (block_w <= 0) & tissue[None]
    w = np.where(np.repeat(np.repeat(even, f, -2), f, -1) & m[None], 1.0, w)
    block_w = aggregate(w, f)
    r = np.where(block_w > 0, lr / np.maximum(block_w, 1e-300), 0.0)
    live = tissue.astype(np.float64)
    for _ in range(int(iterations)):
        x = w * _tent_upsample(r, live, f)
        sums = aggregate(x, f)
        r = np.where(sums > 0, r * lr / np.maximum(sums, 1e-300), r)
    return (w * _tent_upsample(r, live, f)).astype(np.float32)


def probe(ds: str) -> None:
    spec = preset(ds, dataset_settings("cpu", ds))
    split = prepare(spec, spec.factors[0], tile_lr=4)
    fit, val, _ = validation_split(split.train, tile_lr=4)
    norm = fit_normalizer(split.train)
    rows: dict[str, list] = {}
    for seed in (0, 1, 2):
        ac = AggregationConsistency().fit(fit, seed=seed, max_time=60)
        for s in val:
            truth, m, f = norm.transform(s.hr), s.truth_mask, s.factor
            a = ac._raw_abundance(s)
            flat = np.broadcast_to(s.mask_hr[None].astype(float), a.shape)
            maps = {
                "flat, block factors": lr_per_tissue_pixel(s),
                "flat, smooth factors": smooth_distribute(s.lr, flat, s.mask_hr, f),
                "abundance, block factors": ac.predict(s, blend=0.0)["mean"],
                "abundance, smooth factors": smooth_distribute(s.lr, a, s.mask_hr, f),
            }
            for k, x in maps.items():
                rows.setdefault(k, []).append((np.nanmean(pcc(norm.transform(x), truth, m)),
                                               block_artefact_index(x, f, m)))  # fmt: skip
    print(f"{ds} (validation {[s.name for s in val]}; truth block index "
          f"{block_artefact_index(val[0].hr, val[0].factor, val[0].truth_mask):.2f})")  # fmt: skip
    for k, v in rows.items():
        v = np.array(v)
        print(f"  {k:<28} PCC {v[:, 0].mean():.4f} ± {v[:, 0].std():.4f}   block index {np.nanmean(v[:, 1]):.2f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name in sys.argv[1:] or ["synthetic", "her2st", "merfish"]:
        probe(name)
