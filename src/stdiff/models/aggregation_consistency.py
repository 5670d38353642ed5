"""Aggregation-consistency super-resolution: histology decides where each spot's counts go.

A small per-HR-pixel network on standardised histology features (:func:`stdiff.pp.histology_features`)
predicts a positive abundance ``a_g(p)`` per gene. It is trained from a slide's own measurements only
(iStar / XFuse-style weak supervision): the sum of ``a_g`` under each measurement — the tissue HR
pixels of an LR pixel, or a spot's footprint (:class:`~stdiff.spots.Footprints`, fractional pixel
coverage) — must match its counts (Poisson deviance). At prediction the counts are *distributed*
in proportion to ``a_g``, so the map sums exactly to every measurement:

``HR_g(p) = LR_g(block) · a_g(p) / Σ_{q ∈ block ∩ mask_hr} a_g(q)`` for LR pixels; for spots the
same on each footprint, and between spots ``a_g`` times a smoothly interpolated scaling
(:meth:`~stdiff.spots.Footprints.distribute`), so the gaps are filled from the histology and the
neighbouring spots.

An optional blend with the flat (nearest) map (:func:`stdiff.pp.lr_per_tissue_pixel`) is chosen on
the training slide's held-out measurements (never on HR truth): one scale up for LR pixels, by
predicting held-out spots from the others for spots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .._constants import Checkpoint
from .._utils import logger, resolve_device
from ..pp import (
    Normalizer,
    Section,
    fit_feature_scaler,
    histology_features,
    lr_per_tissue_pixel,
    standardize_features,
)
from ._measurements import blend_scores_blocks, blend_scores_spots, distribute_counts, measurements
from .base import BaseModel
from .nn.abundance import AbundanceNet
from .nn.losses import poisson_deviance
from .training import TrainingLoop

__all__ = ["AggregationConsistency"]

#: Weights of the nearest map tried by :meth:`AggregationConsistency.choose_blend_on_truth`.
BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class _Data:
    x: torch.Tensor  # (1, F, H, W) standardised features
    img: torch.Tensor | None  # (1, C, H·p, W·p) image in [0, 1]
    mask: torch.Tensor  # (H, W) float
    y: torch.Tensor  # (G, m) measured counts (LR pixels or spots)
    train: torch.Tensor  # (m,) bool measurements in the loss
    val: torch.Tensor  # (m,) bool held-out measurements
    measure: Any  # HR map (G, H, W) → (G, m)
    tissue_px: np.ndarray  # (m,) tissue HR pixels under each measurement


@dataclass
class AggregationConsistency(BaseModel):
    """Histology-distributed super-resolution trained by aggregation consistency on LR maps only.

    Parameters
    ----------
    hidden, layers, kernel_size
        Width and depth of the per-pixel network; ``kernel_size=3`` lets the first layer see the
        3 × 3 neighbouring HR pixels.
    image_channels
        ``0`` (default): histology features only; ``> 0``: also a learned aligned patchify of the
        raw image (``Conv2d(k=p, stride=p)`` on the image reduced to ``p ≤ 8`` pixels per HR pixel).
    scales_um, normalize_stains
        Options of :func:`stdiff.pp.histology_features`.
    blend
        ``"auto"``: mix in the mask-aware nearest map with a weight chosen on held-out LR pixels at a
        coarser scale; a number in ``[0, 1]`` fixes that weight; ``0`` is histology only.
    learning_rate, weight_decay
        AdamW settings.
    """

    hidden: int = 64
    layers: int = 2
    kernel_size: int = 1
    image_channels: int = 0
    scales_um: tuple = (None, 100.0)
    normalize_stains: bool = True
    blend: float | str = "auto"
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    genes: list[str] = field(default_factory=list)
    history: list[tuple[int, float, float]] = field(default_factory=list)
    blend_weight: float = 0.0
    blend_scores: dict[float, float] = field(default_factory=dict)
    net: nn.Module | None = None
    _log_base: torch.Tensor | None = None
    _val: list[np.ndarray] = field(default_factory=list)
    _mean: np.ndarray | None = None
    _sd: np.ndarray | None = None

    FORMAT: ClassVar[str] = Checkpoint.AGGREGATION_CONSISTENCY

    # ------------------------------------------------------------------ data
    def _features(self, section: Section) -> np.ndarray:
        return histology_features(section, scales_um=self.scales_um, normalize_stains=self.normalize_stains).values

    def _image(self, section: Section) -> tuple[np.ndarray | None, int]:
        if not self.image_channels:
            return None, 0
        s = section.he_scale
        p = max(d for d in range(1, min(s, 8) + 1) if s % d == 0)
        he = section.he.astype(np.float32) / (255.0 if section.he.dtype == np.uint8 else max(section.he.max(), 1))
        k = s // p
        c, Y, X = he.shape
        return he.reshape(c, Y // k, k, X // k, k).mean(axis=(2, 4)), p

    def _data(self, section: Section, rng: np.random.Generator, val_fraction: float, device, *, held_out=None) -> _Data:
        x = standardize_features(self._features(section), self._mean, self._sd)
        img, _ = self._image(section)
        m = measurements(section, device)
        usable = m.usable
        if held_out is not None:  # measurements no learner of this fit may see (cross-fitting)
            usable = usable & ~np.asarray(held_out, bool)
        val = usable & (rng.random(usable.shape) < val_fraction)
        t = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)
        return _Data(
            x=t(x)[None],
            img=None if img is None else t(img)[None],
            mask=t(section.mask_hr),
            y=m.y,
            train=t(usable & ~val, torch.bool),
            val=t(val, torch.bool),
            measure=m.measure,
            tissue_px=m.tissue_px,
        )

    def _abundance(self, d: _Data) -> tuple[torch.Tensor, torch.Tensor]:
        """``a`` ``(G, H, W)`` (zero off the mask) and what it measures ``(G, m)``."""
        logit = self.net(d.x, d.img)[0] + self._log_base[:, None, None]
        a = torch.exp(logit.clamp(-30.0, 30.0)) * d.mask
        return a, d.measure(a)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        sections: Sequence[Section],
        *,
        max_steps: int = 3000,
        max_time: float = 60.0,
        val_fraction: float = 0.2,
        patience: int = 15,
        eval_every: int = 10,
        seed: int = 0,
        device: str = "cpu",
        held_out: Sequence[np.ndarray | None] | None = None,
    ) -> AggregationConsistency:
        """Train on the measurements (LR pixels or spots) of ``sections`` (no HR truth is read).

        A random ``val_fraction`` of the tissue measurements of each section is held out; training
        stops when their deviance has not improved for ``patience`` evaluations (every
        ``eval_every`` steps), after ``max_steps`` or after ``max_time`` seconds, and keeps the best
        weights. With ``blend="auto"`` the blend weight is then chosen on the held-out measurements.
        ``held_out`` (one boolean array per section over its measurements, or ``None``) are left out
        of everything here, for cross-fitting.
        """
        sections = list(sections)
        self.genes = list(sections[0].genes)
        if any(list(s.genes) != self.genes for s in sections):
            raise ValueError("All sections must share the same genes.")
        dev = resolve_device(device)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        feats = [self._features(s) for s in sections]
        self._mean, self._sd = fit_feature_scaler(feats, masks=[s.mask_hr for s in sections])
        held_out = list(held_out) if held_out is not None else [None] * len(sections)
        data = [self._data(s, rng, val_fraction, dev, held_out=h) for s, h in zip(sections, held_out, strict=True)]
        # Base level: mean counts per measured HR pixel, per gene; loss weight 1 / mean measured count.
        lr_sum = sum(d.y[:, d.train | d.val].sum(1) for d in data)
        n_hr = sum(float(d.tissue_px[(d.train | d.val).cpu().numpy()].sum()) for d in data)
        n_lr = sum(float((d.train | d.val).sum()) for d in data)
        self._log_base = torch.log(lr_sum.clamp_min(1e-3) / max(n_hr, 1.0)).to(dev)
        weight = (n_lr / lr_sum.clamp_min(1e-3)).to(dev)
        image = None
        if self.image_channels:
            image = (sections[0].he.shape[0], self._image(sections[0])[1], int(self.image_channels))
        n_features = data[0].x.shape[1]
        self.net = AbundanceNet(n_features, len(self.genes), self.hidden, self.layers, self.kernel_size, image).to(dev)
        has_val = any(bool(d.val.any()) for d in data)
        last: dict[str, torch.Tensor] = {}

        def loss_on(which: str) -> torch.Tensor:
            parts = []
            for d in data:
                sel = getattr(d, which)
                if sel.any():
                    _, measured = self._abundance(d)
                    parts.append(poisson_deviance(measured[:, sel], d.y[:, sel], weight))
            return torch.stack(parts).mean()

        def train_loss(net, _batch, _progress) -> torch.Tensor:
            last["loss"] = loss_on("train")
            return last["loss"]

        loop = TrainingLoop(
            steps=int(max_steps), max_time_s=max_time, val_every=eval_every, patience=patience,
            learning_rate=self.learning_rate, weight_decay=self.weight_decay, relative=False, device=dev,
            desc="aggregation consistency", to_cpu=False,
        )  # fmt: skip
        val_fn = (lambda net: float(loss_on("val"))) if has_val else (lambda net: float(last["loss"]))
        self.net, info = loop.run(self.net, batch_fn=lambda step: None, loss_fn=train_loss, val_fn=val_fn)
        self.history = [(s, info["history"][s - 1], v) for s, v in info["val_history"]]
        self._val = [d.val.cpu().numpy() for d in data]
        if self.blend == "auto":
            self.blend_weight = self._choose_blend(sections)
        else:
            self.blend_weight = float(self.blend)
        return self

    # ------------------------------------------------------------------ blend chosen on held-out measurements
    def _choose_blend(self, sections: Sequence[Section], grid: int = 11) -> float:
        """Choose the nearest-map weight on the held-out measurements (see :mod:`._measurements`)."""
        abundances = [self._raw_abundance(s) for s in sections]
        spots = [s for s in sections if s.spots is not None]
        if spots and len(spots) != len(sections):
            raise ValueError("Sections must all have spots or all have square LR maps.")
        score = blend_scores_spots if spots else blend_scores_blocks
        scores = score(sections, abundances, self._val, grid)
        if not scores:
            return 0.0
        self.blend_scores = scores
        lam = max(scores, key=lambda k: (scores[k], -k))
        logger.info("aggregation consistency: blend weight of the nearest map %.2f (held-out r %.3f)", lam, scores[lam])
        return lam

    def choose_blend_on_truth(
        self, sections: Sequence[Section], normalizer: Normalizer, grid: Sequence[float] = BLEND_GRID
    ) -> None:
        """Set the blend with the mask-aware nearest map by the HR truth of ``sections`` (validation data).

        ``w·nearest + (1 − w)·histology-distributed`` for each ``w`` of ``grid``, scored by the mean
        squared error in the normalised space on the truth mask (what stage A of
        :class:`~stdiff.models.DiffST` minimises). The scores are kept in :attr:`blend_scores`. Fit
        with ``blend`` set to a number when it is chosen here, so that it is chosen once.
        """
        err = dict.fromkeys(grid, 0.0)
        n = 0
        for s in sections:
            hist = self.predict(s, blend=0.0)["histology"]
            near = lr_per_tissue_pixel(s)
            truth = normalizer.transform(s.hr)[:, s.truth_mask > 0]
            for w in grid:
                z = normalizer.transform(((1 - w) * hist + w * near).astype(np.float32))[:, s.truth_mask > 0]
                err[w] += float(((z - truth) ** 2).sum())
            n += truth.size
        scores = {w: e / max(n, 1) for w, e in err.items()}
        best = min(scores, key=scores.get)
        self.blend_weight = float(best)
        self.blend_scores = scores
        logger.info("Base blend with the nearest map chosen on validation truth: %.2f (MSE %s)", best,
                    ", ".join(f"{w:g}: {v:.4f}" for w, v in scores.items()))  # fmt: skip

    # ------------------------------------------------------------------ persistence
    _OPTIONS = ("hidden", "layers", "kernel_size", "image_channels", "normalize_stains", "blend")

    def state(self) -> dict[str, Any]:
        """The fitted model as tensors and plain Python (what :meth:`from_state` rebuilds)."""
        if self.net is None:
            raise RuntimeError("Call fit() first.")
        image = None
        if self.net.patchify is not None:
            conv = self.net.patchify[0]
            image = [int(conv.in_channels), int(conv.kernel_size[0]), int(conv.out_channels)]
        return {
            "options": {k: getattr(self, k) for k in self._OPTIONS},
            "scales_um": [None if v is None else float(v) for v in self.scales_um],
            "genes": list(self.genes),
            "blend_weight": float(self.blend_weight),
            "feature_mean": torch.as_tensor(self._mean, dtype=torch.float32),
            "feature_sd": torch.as_tensor(self._sd, dtype=torch.float32),
            "log_base": self._log_base.detach().cpu(),
            "n_features": int(len(self._mean)),
            "image": image,
            "net": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AggregationConsistency:
        """Rebuild a fitted model from :meth:`state` (on the CPU)."""
        ac = cls(**state["options"], scales_um=tuple(state["scales_um"]))
        ac.genes = list(state["genes"])
        ac.blend_weight = float(state["blend_weight"])
        ac._mean = state["feature_mean"].numpy()
        ac._sd = state["feature_sd"].numpy()
        ac._log_base = state["log_base"].clone()
        image = tuple(state["image"]) if state["image"] is not None else None
        ac.net = AbundanceNet(int(state["n_features"]), len(ac.genes), ac.hidden, ac.layers, ac.kernel_size, image)
        ac.net.load_state_dict(state["net"])
        ac.net.eval()
        return ac

    # ------------------------------------------------------------------ prediction
    def _raw_abundance(self, section: Section) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("Call fit() first.")
        if list(section.genes) != self.genes:
            raise ValueError("The section's genes differ from the model's genes.")
        dev = next(self.net.parameters()).device
        x = standardize_features(self._features(section), self._mean, self._sd)
        img, _ = self._image(section)
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=dev)
        with torch.no_grad():
            logit = self.net(t(x)[None], None if img is None else t(img)[None])[0] + self._log_base[:, None, None]
            a = torch.exp(logit.clamp(-30.0, 30.0)) * t(section.mask_hr)
        return a.cpu().numpy().astype(np.float64)

    def predict(
        self, section: Section, *, normalizer: Normalizer | None = None, blend: float | None = None
    ) -> dict[str, np.ndarray]:
        """Super-resolve ``section`` from its LR map and histology.

        Returns a dict with ``mean`` ``(G, H, W)`` counts per HR pixel (summing to ``section.lr``
        over every LR pixel with tissue, or to every spot's count under its footprint),
        ``histology`` (the histology-distributed map before the
        blend), ``abundance`` (the regressor's un-normalised ``a_g``) and, with ``normalizer``,
        ``z_mean`` (``normalizer.transform(mean)``).
        """
        lam = self.blend_weight if blend is None else float(blend)
        a = self._raw_abundance(section)
        hist = distribute_counts(section, a)
        mean = hist if lam == 0 else ((1 - lam) * hist + lam * lr_per_tissue_pixel(section)).astype(np.float32)
        out = {"mean": mean, "histology": hist, "abundance": a.astype(np.float32)}
        if normalizer is not None:
            out["z_mean"] = normalizer.transform(mean)
        return out
