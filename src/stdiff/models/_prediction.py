"""How a trained Diff-ST model super-resolves a whole section: the mean, then samples around it.

Stage A gives the mean on the section's tile canvas; stage B draws calibrated samples around it.

:meth:`DiffST.predict_section <stdiff.models.DiffST.predict_section>` checks its input and calls
:func:`predict_whole_section`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._utils import torch_generator
from ..pp import Section
from . import _stages
from .canvas import Canvas, padded_for_tiles

if TYPE_CHECKING:  # pragma: no cover
    from .diffst import DiffST


def predict_whole_section(
    model: DiffST,
    section: Section,
    *,
    n_samples: int | None,
    num_inference_steps: int | None,
    seed: int,
    device: torch.device,
    batch_size: int,
    progress: bool,
    return_samples: bool,
    knockout: str | None,
) -> dict[str, Any]:
    """The outputs of :meth:`DiffST.predict_section <stdiff.models.DiffST.predict_section>` (same arguments)."""
    from tqdm.auto import tqdm

    cfg = model.config
    n = int(cfg.n_samples if n_samples is None else n_samples)
    steps = int(num_inference_steps or model.sampling_steps)
    h, w = section.shape_lr
    sec = padded_for_tiles(section, cfg.tile_lr)
    canvas = Canvas.for_section(sec, cfg.tile_lr)
    prep = model.prepare(sec, with_truth=False)
    for net in (model.mean_net, model.residual_net):
        net.set_knockout(knockout)
    try:
        mu = _stages.stage_a_canvas(
            model.mean_net, prep, canvas, model.residual_scale, device, batch_size,
            symmetries=cfg.test_time_symmetries,
        )  # fmt: skip
        m = sec.mask_hr.astype(np.float32)
        result: dict[str, Any] = {"z_mean": mu, "mean": model.normalizer.inverse(mu, axis=-3) * m}
        if n > 0:
            prep.mu = mu
            bar = tqdm(total=steps, desc="stdiff sample", disable=not progress, leave=False)
            r = _stages.stage_b_canvas(
                model.residual_net, prep, canvas, n_samples=n, steps=steps, cfg=cfg,
                generator=torch_generator(seed), device=device, batch_size=batch_size,
                progress=lambda i: bar.update(1),
            ).cpu().numpy()  # fmt: skip
            bar.close()
            scale = (model.gene_sigma * model.spread_scale)[None, :, None, None]
            result.update(_stages.predictive_summary(mu, r * scale, m, model.normalizer, return_samples))
        else:
            result["std"] = np.zeros_like(mu)
            result["z_std"] = np.zeros_like(mu)
    finally:
        for net in (model.mean_net, model.residual_net):
            net.set_knockout(None)
    for key in list(result):
        result[key] = np.ascontiguousarray(result[key][..., : h * model.factor, : w * model.factor])
    return result
