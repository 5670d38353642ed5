"""The deterministic U-Net baseline: Diff-ST's mean network without its three components, by regression.

stdiff's posterior mean is itself a regression network (stage A) with the full Diff-ST
conditioning, so a U-Net "with the same conditioning" would duplicate stdiff's point metrics. This
baseline is the same network and inputs (LR map per tissue pixel, histology, mask) with the three
named components off — plain fusion instead of cross-modal modulation, no dynamic cross-attention,
no gene graph — trained by regression only (no residual diffusion, no samples, no spread
calibration) under the same budget. It answers: what do the Diff-ST components add to a plain
conditional U-Net?
"""

from __future__ import annotations

from typing import Any

from ...pp import Section
from ._base import Context, Method, Output
from ._stdiff import train_diffst

#: Components off, stage A (regression) only, no spread calibration.
PLAIN: dict[str, Any] = {
    "components": {"use_modulation": False, "use_cross_attention": False, "use_gene_graph": False},
    "training.residual_steps": 0, "calibration.enabled": False,
}  # fmt: skip


class UNetMethod(Method):
    """Adapter of the plain regression U-Net (see the module docstring)."""

    name = "unet"
    description = "deterministic U-Net: Diff-ST's mean network and inputs, components off, regression only"
    learned = True

    def fit(self, ctx: Context) -> dict[str, Any]:
        self.ctx = ctx
        self.model, info = train_diffst(ctx, ctx.config.replace(**PLAIN))
        return info

    def predict(self, section: Section) -> Output:
        out = self.model.predict_section(section, n_samples=0, seed=self.ctx.seed, device=self.ctx.device,
                                         progress=False)  # fmt: skip
        return Output(mean=out["z_mean"], normalizer=self.model.normalizer)
