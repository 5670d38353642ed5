"""Native-scale self-supervision for a spot-only section: an ensemble of aggregation-consistency fits.

What a Visium-only lab has is one slide's spots and its H&E. :class:`SelfSupervisedEnsemble` fits
``n_models`` :class:`~stdiff.models.AggregationConsistency` models on that slide's own LR map (each
with its own seed and held-out LR pixels), at the native scale: no coarsening, no assumption that
the tissue looks alike across scales. Each member distributes every spot's counts over the tissue HR
pixels of its block by histology, so each member — and their mean — sums exactly to every measured
spot. The standard deviation across members is the model's disagreement about *where* the counts go
inside a spot (epistemic only, not a calibrated posterior: there is no HR truth on the slide to
calibrate it against).

It has the prediction interface of :class:`~stdiff.models.DiffST` (``predict_section``, ``genes``,
``factor``, ``lr_um``, ``config.tile_lr``, ``model_hash``), so :func:`stdiff.tl.superresolve` streams
it chunk by chunk like a trained model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._utils import logger
from ..pp._tiling import Section
from .aggregation_consistency import AggregationConsistency

#: Fewest tissue LR pixels (spots) a section needs to teach itself.
MIN_SPOTS = 16


@dataclass(frozen=True)
class _Geometry:
    """The parts of a config that chunked prediction needs."""

    tile_lr: int
    he_scale: int
    n_samples: int
    solver: str = "aggregation-ensemble"

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python representation (provenance)."""
        return {"tile_lr": self.tile_lr, "he_scale": self.he_scale, "n_models": self.n_samples}


class SelfSupervisedEnsemble:
    """Histology-distributed super-resolution learnt from a section's own spots (no HR truth).

    Parameters
    ----------
    n_models
        Members of the ensemble (different seeds and held-out LR pixels).
    max_time
        Time cap per member in seconds.
    """

    def __init__(self, *, n_models: int = 4, max_time: float = 60.0) -> None:
        if n_models < 2:
            raise ValueError(f"n_models must be ≥ 2 (the spread needs two members), got {n_models}.")
        self.n_models = int(n_models)
        self.max_time = float(max_time)
        self.members: list[AggregationConsistency] = []
        self.genes: list[str] = []
        self.factor = 1
        self.lr_um = 1.0
        self.config = _Geometry(tile_lr=4, he_scale=1, n_samples=self.n_models)
        self.sampling_steps = 0

    def fit(self, section: Section, *, seed: int = 0, device: str = "cpu") -> SelfSupervisedEnsemble:
        """Fit every member on ``section``'s LR map and histology (its HR truth, if any, is never read)."""
        n_spots = int(section.mask_lr.sum())
        if n_spots < MIN_SPOTS:
            raise ValueError(
                f"Section {section.name!r} is too small for self-supervised learning: {n_spots} LR pixels (spots) on "
                f"tissue, at least {MIN_SPOTS} needed to learn where counts go from the histology; pass a trained "
                "model= (stdiff.tl.train on a reference) instead."
            )
        self.genes, self.factor, self.lr_um = list(section.genes), section.factor, section.lr_um
        self.config = _Geometry(tile_lr=4, he_scale=section.he_scale, n_samples=self.n_models)
        self.members = [
            AggregationConsistency().fit([section], seed=seed + k, max_time=self.max_time, device=device)
            for k in range(self.n_models)
        ]
        logger.info("Self-supervised ensemble: %d aggregation-consistency fits on %s.", self.n_models, section.name)
        return self

    def predict_section(self, section: Section, **_: Any) -> dict[str, np.ndarray]:
        """``mean`` and ``std`` ``(G, H, W)`` counts per HR pixel across the members (0 off tissue)."""
        if not self.members:
            raise RuntimeError("Fit the ensemble first (SelfSupervisedEnsemble().fit(section)).")
        preds = np.stack([m.predict(section)["mean"] for m in self.members])
        return {"mean": preds.mean(0).astype(np.float32), "std": preds.std(0, ddof=1).astype(np.float32)}

    def model_hash(self) -> str:
        """SHA-256 (first 16 hex) of the members' weights."""
        h = hashlib.sha256()
        for m in self.members:
            for k, v in sorted(m.net.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr((self.genes, self.factor, self.lr_um, self.n_models)).encode())
        return h.hexdigest()[:16]
