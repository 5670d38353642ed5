"""How a Diff-ST model is trained: stage A, the out-of-sample residual scale, stage B, then calibration.

:class:`DiffSTTraining` holds the training methods of :class:`~stdiff.models.DiffST`; both stages run
through the one :class:`~stdiff.models.training.TrainingLoop` with their loss objects
(:mod:`~stdiff.models.nn.losses`).

After training, :meth:`DiffSTTraining._calibrate` draws residual samples on the validation sections
for each of ``config.calibration.step_candidates``, fits a per-gene spread scale (RMSE of the ensemble mean over
its rms spread, with the ``√((n+1)/n)`` finite-ensemble correction) and keeps the step count with the
lowest calibrated CRPS (fair ensemble estimator; within 1 % of the best, the fewest steps). Steps are
never chosen by PCC, which rewards collapsed samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._scores import crps_ensemble
from .._utils import logger, resolve_device, torch_generator
from ..pp import Section, Tiles
from ._windows import Prepared, WindowPool, as_sections
from .canvas import Canvas, padded_for_tiles
from .nn.losses import MeanLoss, ResidualEDMLoss
from .training import TrainingLoop

__all__ = ["DiffSTTraining", "carve_validation"]

NO_VALIDATION = (
    "No validation data (none given, and the training sections are too small to carve one from): both "
    "stages train to their step/time caps without early stopping, and the spread of the samples is not "
    "calibrated — it comes from in-sample residuals, which understate the error. Pass validation= "
    "sections, or train on larger sections."
)


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


class DiffSTTraining:
    """The training methods of :class:`~stdiff.models.DiffST` (they set its networks and calibration)."""

    def train(
        self,
        data: Tiles | Section | Sequence[Section],
        *,
        validation: Section | Sequence[Section] | None = None,
        steps: int | None = None,
        residual_steps: int | None = None,
        max_time_s: float | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        progress: bool = True,
        batch_size: int = 16,
    ):
        """Train stage A, then stage B, then choose the sampler's steps and calibrate the spread.

        Parameters
        ----------
        data
            Training sections (with HR truth), or :class:`~stdiff.pp.Tiles` from them.
        validation
            Sections for early stopping and calibration; default: carved from ``data``
            (:func:`carve_validation`: the last section when there are ≥ 3, else the right fifth).
        steps, residual_steps
            Step caps of stage A and stage B (default ``config.training.steps`` / ``config.training.residual_steps``).
        max_time_s
            Time cap per stage in seconds (default ``config.training.max_time_s``).
        device
            ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        seed
            Seed for tile sampling, augmentation and noise (CPU runs are repeatable).
        progress
            Show tqdm progress bars.
        batch_size
            Tiles per batch when predicting whole sections (calibration).

        Returns
        -------
        ``self``, trained; :attr:`train_info` records steps, times, stopping reasons and the calibration.
        """
        sections = as_sections(data)
        self._check_sections(sections)
        cfg = self.config
        if validation is None:
            sections, val_sections = carve_validation(sections, cfg.tile_lr)
        else:
            val_sections = [validation] if isinstance(validation, Section) else list(validation)
            self._check_sections(val_sections)
        if not val_sections:
            logger.warning(NO_VALIDATION)
        dev = resolve_device(device)
        train_prep = [self.prepare(s, with_truth=True) for s in sections]
        val_prep = [self.prepare(padded_for_tiles(s, cfg.tile_lr), with_truth=True) for s in val_sections]
        pool = WindowPool(train_prep, cfg.tile_lr, cfg.training.min_tissue)
        if len(pool) == 0:
            raise ValueError(
                f"No training tile of {cfg.tile_lr}×{cfg.tile_lr} LR pixels with ≥{cfg.training.min_tissue:.0%} "
                "tissue; use a config with a smaller tile_lr or training.min_tissue, or larger sections."
            )
        val_pool = WindowPool(val_prep, cfg.tile_lr, 0.05, stride=max(1, cfg.tile_lr // 2))
        rng = np.random.default_rng([seed, 0])
        gen = torch_generator(seed * 1_000_003 + 1)

        def batch(step: int):
            return pool.random_batch(rng, gen, cfg.training.batch_size, cfg, dev)

        tr, comp = cfg.training, cfg.components
        run = dict(batch=batch, val_pool=val_pool, device=dev, progress=progress,
                   max_time_s=tr.max_time_s if max_time_s is None else max_time_s)  # fmt: skip
        mean_loss = MeanLoss(self.residual_scale, comp.disentangle_weight, comp.admitted_fraction)
        self.mean_net, info_a = self._train_stage(
            self.mean_net, mean_loss, tr.steps if steps is None else steps, "stdiff stage A (mean)", **run
        )
        self._fit_residual_scale([*train_prep, *val_prep], val_prep or train_prep, device=dev, batch_size=batch_size)
        sig = torch.from_numpy(self.gene_sigma).to(dev)
        residual_loss = ResidualEDMLoss(sig, tr.p_mean, tr.p_std, comp.disentangle_weight, gen)
        self.residual_net, info_b = self._train_stage(
            self.residual_net, residual_loss, tr.residual_steps if residual_steps is None else residual_steps,
            "stdiff stage B (residual diffusion)", **run,
        )  # fmt: skip
        self.train_info = {
            "stage_a": dict(info_a),
            "stage_b": dict(info_b),
            "train_sections": [s.name for s in sections],
            "validation_sections": [s.name for s in val_sections],
            "seed": int(seed),
        }
        if val_prep and cfg.calibration.enabled:
            self.train_info["calibration"] = self._calibrate(val_prep, device=dev, seed=seed, batch_size=batch_size)
        elif not val_sections:
            self.train_info["calibration"] = {"skipped": "no validation data: the spread is not calibrated"}
        self.train_info["steps"] = info_a["steps"] + info_b["steps"]
        self.train_info["seconds"] = info_a["seconds"] + info_b["seconds"]
        return self

    def _train_stage(self, net, loss, steps: int, desc: str, *, batch, val_pool: WindowPool, max_time_s, device,
                     progress) -> tuple[torch.nn.Module, dict[str, Any]]:  # fmt: skip
        """Train one stage's network with its loss; validation batches are cut now (stage B's carry the mean)."""
        tr = self.config.training
        val_batches = val_pool.fixed_batches(64, tr.batch_size, device) if len(val_pool) else []
        loop = TrainingLoop(
            steps=int(steps), max_time_s=max_time_s, val_every=tr.val_every, patience=tr.patience,
            learning_rate=tr.learning_rate, weight_decay=tr.weight_decay, ema_decay=tr.ema_decay, clip_grad_norm=1.0,
            device=device, progress=progress, desc=desc,
        )  # fmt: skip
        val_fn = (lambda n: loss.validate(n, val_batches)) if val_batches else None
        return loop.run(net, batch_fn=batch, loss_fn=loss, val_fn=val_fn)

    def _fit_residual_scale(self, prepared: list[Prepared], reference: list[Prepared], *, device, batch_size) -> None:
        """Attach stage A's out-of-sample mean to every prepared section; set :attr:`gene_sigma` on ``reference``."""
        t = self.config.tile_lr
        for p in prepared:
            p.mu = self._mean_on_canvas(p, Canvas.for_section(padded_for_tiles(p.section, t), t), device, batch_size)
        res = np.concatenate([(p.z_hr - p.mu)[:, p.mask_truth > 0] for p in reference], axis=1)
        self.gene_sigma = np.maximum(res.std(axis=1), 1e-3).astype(np.float32)

    def _calibrate(self, val_prep: Sequence[Prepared], *, device, seed: int, batch_size: int) -> dict[str, Any]:
        """Choose the sampler's steps by CRPS and fit the per-gene spread scale on validation sections.

        ``val_prep`` must carry the truth (``z_hr``) and the stage-A mean (``mu``). Sets
        :attr:`sampling_steps` and :attr:`spread_scale`; returns what was measured.
        """
        cfg = self.config
        n = max(4, min(cfg.sampler.n_samples, 8))
        results = {int(k): self._score_steps(val_prep, int(k), n, device, seed, batch_size)
                   for k in cfg.calibration.step_candidates}  # fmt: skip
        best = min(v["crps"] for v in results.values())
        steps = min(k for k, v in results.items() if v["crps"] <= best * 1.01)
        self.sampling_steps = steps
        self.spread_scale = results[steps]["scale"].astype(np.float32)
        logger.info(
            "Calibration on %d validation section(s): %d sampler steps (CRPS %s); median spread scale %.2f.",
            len(val_prep), steps, {k: round(v["crps"], 4) for k, v in results.items()}, np.median(self.spread_scale),
        )  # fmt: skip
        return {
            "n_samples": n,
            "steps": steps,
            "candidates": {k: {key: v[key] for key in ("crps", "spread_skill_raw")} for k, v in results.items()},
            "spread_scale_median": float(np.median(self.spread_scale)),
        }

    def _score_steps(self, val_prep, steps: int, n: int, device, seed: int, batch_size: int) -> dict[str, Any]:
        """Spread scale and calibrated CRPS of ``n`` samples drawn with ``steps`` sampler steps."""
        r_all, e_all = [], []
        for p in val_prep:
            canvas = Canvas.for_section(p.section, self.config.tile_lr)
            r = self._residual_samples(p, canvas, n_samples=n, steps=steps, generator=torch_generator(seed + 7919),
                                       device=device, batch_size=batch_size).cpu().numpy()  # fmt: skip
            m = p.mask_truth > 0
            r_all.append(r[:, :, m])
            e_all.append(((p.z_hr - p.mu) / self.gene_sigma[:, None, None])[:, m])
        r, e = np.concatenate(r_all, -1), np.concatenate(e_all, -1)
        rmse = np.sqrt(((r.mean(0) - e) ** 2).mean(-1))
        spread = np.sqrt(r.var(0, ddof=1).mean(-1) * (n + 1) / n)
        scale = np.clip(rmse / np.maximum(spread, 1e-6), 0.25, 4.0)
        crps = crps_ensemble(r * scale[None, :, None], e) * self.gene_sigma
        return {"crps": float(crps.mean()), "spread_skill_raw": float(np.mean(spread / np.maximum(rmse, 1e-9))),
                "scale": scale}  # fmt: skip
