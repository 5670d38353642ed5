"""Validation data for a model: carving it, choosing the base's blend and calibrating the sampler.

After training, :func:`calibrate` draws residual samples on the validation sections for each of
``config.step_candidates``, fits a per-gene spread scale (RMSE of the ensemble mean over its rms
spread, with the ``√((n+1)/n)`` finite-ensemble correction) and keeps the step count with the lowest
calibrated CRPS (fair ensemble estimator; within 1 % of the best, the fewest steps). Steps are never
chosen by PCC, which rewards collapsed samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._scores import crps_ensemble
from .._utils import logger, torch_generator
from ..pp import Normalizer, Section, lr_per_tissue_pixel
from . import _stages
from ._windows import Prepared
from .canvas import Canvas
from .config import DiffSTConfig

if TYPE_CHECKING:  # pragma: no cover
    from .aggregation_consistency import AggregationConsistency

BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def carve_validation(sections: Sequence[Section], tile_lr: int) -> tuple[list[Section], list[Section]]:
    """Training data → (fit, validation): the last section when there are ≥ 3, else the right fifth of each.

    A strip is carved only where the section stays at least one tile wide on both sides; sections
    too small for that are kept whole for fitting.
    """
    sections = list(sections)
    if len(sections) >= 3:
        return sections[:-1], sections[-1:]
    fit_part, val_part = [], []
    for s in sections:
        w = s.shape_lr[1]
        cut = min(w - tile_lr, int(round(w * 0.8)))
        if cut >= tile_lr and s.mask_lr[:, cut:].sum() > 0:
            fit_part.append(s.crop_lr(slice(None), slice(0, cut), name=f"{s.name}_fit"))
            val_part.append(s.crop_lr(slice(None), slice(cut, None), name=f"{s.name}_validation"))
        else:
            fit_part.append(s)
    return fit_part, val_part


def calibrate(
    residual_net: torch.nn.Module,
    val_prep: Sequence[Prepared],
    gene_sigma: np.ndarray,
    cfg: DiffSTConfig,
    *,
    device,
    seed: int,
    batch_size: int,
) -> tuple[int, np.ndarray, dict[str, Any]]:
    """Choose the sampler's steps by CRPS and fit the per-gene spread scale on validation sections.

    ``val_prep`` must carry the truth (``z_hr``) and the stage-A mean (``mu``). Returns
    ``(steps, spread_scale (G,), info)``.
    """
    n = max(4, min(cfg.n_samples, 8))
    results = {}
    for k in cfg.step_candidates:
        r_all, e_all = [], []
        for p in val_prep:
            canvas = Canvas.for_section(p.section, cfg.tile_lr)
            r = _stages.stage_b_canvas(
                residual_net, p, canvas, n_samples=n, steps=int(k), cfg=cfg, generator=torch_generator(seed + 7919),
                device=device, batch_size=batch_size,
            ).cpu().numpy()  # fmt: skip
            m = p.mask_truth > 0
            r_all.append(r[:, :, m])
            e_all.append(((p.z_hr - p.mu) / gene_sigma[:, None, None])[:, m])
        r, e = np.concatenate(r_all, -1), np.concatenate(e_all, -1)
        rmse = np.sqrt(((r.mean(0) - e) ** 2).mean(-1))
        spread = np.sqrt(r.var(0, ddof=1).mean(-1) * (n + 1) / n)
        scale = np.clip(rmse / np.maximum(spread, 1e-6), 0.25, 4.0)
        crps = crps_ensemble(r * scale[None, :, None], e) * gene_sigma
        results[int(k)] = {
            "crps": float(crps.mean()),
            "spread_skill_raw": float(np.mean(spread / np.maximum(rmse, 1e-9))),
            "scale": scale,
        }
    best = min(v["crps"] for v in results.values())
    steps = min(k for k, v in results.items() if v["crps"] <= best * 1.01)
    spread_scale = results[steps]["scale"].astype(np.float32)
    info = {
        "n_samples": n,
        "steps": steps,
        "candidates": {k: {"crps": v["crps"], "spread_skill_raw": v["spread_skill_raw"]} for k, v in results.items()},
        "spread_scale_median": float(np.median(spread_scale)),
    }
    logger.info(
        "Calibration on %d validation section(s): %d sampler steps (CRPS %s); median spread scale %.2f.",
        len(val_prep), steps, {k: round(v["crps"], 4) for k, v in results.items()}, np.median(spread_scale),
    )  # fmt: skip
    return steps, spread_scale, info


def choose_base_blend(
    base_model: AggregationConsistency,
    sections: Sequence[Section],
    normalizer: Normalizer,
    grid: Sequence[float] = BLEND_GRID,
) -> None:
    """Set the base's blend with the mask-aware nearest map by the validation sections' HR truth.

    ``w·nearest + (1 − w)·histology-distributed`` for each ``w`` of ``grid``, scored by the mean
    squared error in the normalised space on the truth mask (what stage A minimises); the best
    ``w`` replaces the blend chosen one scale up on the LR maps. Without validation sections that
    have an HR truth nothing changes. The scores are kept in ``base_model.blend_scores``.
    """
    if not sections:
        return
    err = dict.fromkeys(grid, 0.0)
    n = 0
    for s in sections:
        hist = base_model.predict(s, blend=0.0)["histology"]
        near = lr_per_tissue_pixel(s)
        truth = normalizer.transform(s.hr)[:, s.truth_mask > 0]
        for w in grid:
            z = normalizer.transform(((1 - w) * hist + w * near).astype(np.float32))[:, s.truth_mask > 0]
            err[w] += float(((z - truth) ** 2).sum())
        n += truth.size
    scores = {w: e / max(n, 1) for w, e in err.items()}
    best = min(scores, key=scores.get)
    base_model.blend_weight = float(best)
    base_model.blend_scores = scores
    logger.info("Base blend with the nearest map chosen on validation truth: %.2f (MSE %s)", best,
                ", ".join(f"{w:g}: {v:.4f}" for w, v in scores.items()))  # fmt: skip
