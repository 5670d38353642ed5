"""How a Diff-ST model is trained: stage A, the out-of-sample residual scale, stage B, calibration.

:meth:`DiffST.train <stdiff.models.DiffST.train>` checks its inputs and calls :func:`train_stages`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._utils import logger, torch_generator
from ..pp import Section
from . import _stages
from ._calibration import calibrate
from ._fit import fit
from .canvas import Canvas, padded_for_tiles

if TYPE_CHECKING:  # pragma: no cover
    from .diffst import DiffST


def train_stages(
    model: DiffST,
    sections: Sequence[Section],
    val_sections: Sequence[Section],
    *,
    steps: int | None,
    residual_steps: int | None,
    max_time_s: float | None,
    device: torch.device,
    seed: int,
    progress: bool,
    batch_size: int,
) -> None:
    """Train ``model``'s two networks in place, then choose its sampler steps and spread scale.

    Stage A (the mean) early-stops on ``val_sections``; the per-gene residual scale is measured on
    its out-of-sample predictions there; stage B learns the scaled residual; :func:`calibrate` then
    fits the spread on the validation sections. Sets ``model.train_info``.
    """
    cfg = model.config
    dev = device
    cap = cfg.max_time_s if max_time_s is None else max_time_s
    if not val_sections:
        logger.warning(
            "No validation data (none given, and the training sections are too small to carve one from): both "
            "stages train to their step/time caps without early stopping, and the spread of the samples is not "
            "calibrated — it comes from in-sample residuals, which understate the error. Pass validation= "
            "sections, or train on larger sections."
        )
    train_prep = [model.prepare(s, with_truth=True) for s in sections]
    val_prep = [model.prepare(padded_for_tiles(s, cfg.tile_lr), with_truth=True) for s in val_sections]
    pool = _stages.WindowPool(train_prep, cfg.tile_lr, cfg.min_tissue)
    if len(pool) == 0:
        raise ValueError(
            f"No training tile of {cfg.tile_lr}×{cfg.tile_lr} LR pixels with ≥{cfg.min_tissue:.0%} tissue; use a "
            "config with a smaller tile_lr or min_tissue, or larger sections."
        )
    val_pool = _stages.WindowPool(val_prep, cfg.tile_lr, 0.05, stride=max(1, cfg.tile_lr // 2))
    val_batches = val_pool.fixed_batches(64, cfg.batch_size, dev) if len(val_pool) else []
    rng = np.random.default_rng([seed, 0])
    gen = torch_generator(seed * 1_000_003 + 1)
    common = dict(
        max_time_s=cap, val_every=cfg.val_every, patience=cfg.patience, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, ema_decay=cfg.ema_decay, device=dev, progress=progress,
    )  # fmt: skip

    # --- stage A: the mean
    def batch(step):
        return pool.random_batch(rng, gen, cfg.batch_size, cfg, dev)

    model.mean_net, info_a = fit(
        model.mean_net,
        batch_fn=batch,
        loss_fn=lambda net, b, p: _stages.stage_a_loss(net, b, model.residual_scale, cfg, p),
        val_fn=(lambda ema: _stages.stage_a_val(ema, val_batches, model.residual_scale)) if val_batches else None,
        steps=int(cfg.steps if steps is None else steps), desc="stdiff stage A (mean)", **common,
    )  # fmt: skip

    # --- out-of-sample residual scale per gene, then stage B on the residual around the mean
    for p in [*train_prep, *val_prep]:
        p.mu = _stages.stage_a_canvas(
            model.mean_net, p, Canvas.for_section(padded_for_tiles(p.section, cfg.tile_lr), cfg.tile_lr),
            model.residual_scale, dev, batch_size, symmetries=cfg.test_time_symmetries,
        )  # fmt: skip
    ref = val_prep if val_prep else train_prep
    res = np.concatenate([(p.z_hr - p.mu)[:, p.mask_truth > 0] for p in ref], axis=1)
    model.gene_sigma = np.maximum(res.std(axis=1), 1e-3).astype(np.float32)
    sig = torch.from_numpy(model.gene_sigma).to(dev)
    val_batches = val_pool.fixed_batches(64, cfg.batch_size, dev) if len(val_pool) else []
    model.residual_net, info_b = fit(
        model.residual_net,
        batch_fn=batch,
        loss_fn=lambda net, b, p: _stages.stage_b_loss(net, b, sig, cfg, gen),
        val_fn=(lambda ema: _stages.stage_b_val(ema, val_batches, sig)) if val_batches else None,
        steps=int(cfg.residual_steps if residual_steps is None else residual_steps),
        desc="stdiff stage B (residual diffusion)", **common,
    )  # fmt: skip
    model.train_info = {
        "stage_a": {k: v for k, v in info_a.items()},
        "stage_b": {k: v for k, v in info_b.items()},
        "train_sections": [s.name for s in sections],
        "validation_sections": [s.name for s in val_sections],
        "seed": int(seed),
    }
    if val_prep and cfg.calibrate:
        model.sampling_steps, model.spread_scale, model.train_info["calibration"] = calibrate(
            model.residual_net, val_prep, model.gene_sigma, cfg, device=dev, seed=seed, batch_size=batch_size
        )
    elif not val_sections:
        model.train_info["calibration"] = {"skipped": "no validation data: the spread is not calibrated"}
    model.train_info["steps"] = info_a["steps"] + info_b["steps"]
    model.train_info["seconds"] = info_a["seconds"] + info_b["seconds"]
