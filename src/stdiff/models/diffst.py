"""The Diff-ST model: a regression mean (stage A) with calibrated residual diffusion samples (stage B).

Following CorrDiff (Mardani et al. 2023), the posterior mean is not estimated from diffusion samples:

- **Stage A** is a regression network with the full Diff-ST conditioning (LR map per tissue pixel,
  histology, cross-modal modulation, dynamic cross-attention, gene graph). Its output is the mean
  written to the ``stdiff`` image.
- **Stage B** is an EDM diffusion model (:mod:`~stdiff.models.edm`) of the per-gene-scaled residual
  ``(z_HR − mean) / σ_g`` around it; its samples, drawn on the whole-section canvas
  (:mod:`~stdiff.models.canvas`), give the ``stdiff_std`` map and quantiles.
- After training, the sampler's step count is chosen among ``config.step_candidates`` by CRPS on
  validation data carved from the training data, and a per-gene spread scale is fitted there
  (split calibration). Both are stored with the model.

Both stages train until their validation loss stops improving (:mod:`~stdiff.models._fit`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils import logger, resolve_device
from ..pp import Normalizer, Section, Tiles
from ._calibration import carve_validation
from ._checkpoint import model_from_state, model_state, read_checkpoint, write_checkpoint
from ._prediction import predict_whole_section
from ._setup import fit_setup, section_platform
from ._training import train_stages
from ._windows import Prepared, base_cache_key, base_digest, prepare_section, upsample_lr
from .aggregation_consistency import AggregationConsistency
from .config import DiffSTConfig
from .gene_graph import GeneGraph
from .unet import DiffSTUNet

__all__ = ["DiffST", "carve_validation", "upsample_lr"]

FORMAT = "stdiff-diffst-3"


def patch_px(config: DiffSTConfig, hr_um: float) -> int:
    """Cell-level patch side in histology pixels for ``config.patch_um`` at this geometry."""
    he_um = hr_um / config.he_scale
    return max(1, int(round(config.patch_um / he_um)))


class DiffST:
    """Histology-conditioned super-resolution of spatial transcriptomics: regression mean + residual diffusion.

    Build it with :meth:`setup` from training sections (fits the normalisation, the co-expression
    graph and the residual scale), then :meth:`train`; or :meth:`load` a saved one.

    Parameters
    ----------
    genes
        Gene panel (output channels), in order.
    config
        Model configuration (:class:`~stdiff.models.DiffSTConfig`).
    factor
        Super-resolution factor (HR pixels per LR pixel, per axis).
    lr_um
        LR pixel size in µm the model was trained at.
    normalizer
        Count normalisation.
    graph
        Co-expression gene graph.
    image_channels
        Channels of the histology image (3 for H&E).
    residual_scale
        Standard deviation of the HR − base residual on the training tissue (stage A's target scale).
    feature_stats
        Mean and sd of the histology feature channels on the training data (when they are used).
    platform
        What the model's input measures: ``"square"`` (gap-free square aggregates) or the spot
        platform it was trained for (``"visium"``, ``"st"``), whose spots it conditions on (two more
        conditioning maps: coverage by spots and distance to the nearest spot).
    seed
        Seed of the initial weights.
    """

    def __init__(
        self,
        genes: Sequence[str],
        *,
        config: DiffSTConfig,
        factor: int,
        lr_um: float,
        normalizer: Normalizer,
        graph: GeneGraph,
        image_channels: int = 3,
        residual_scale: float = 1.0,
        feature_stats: dict[str, list[float]] | None = None,
        base_model: AggregationConsistency | None = None,
        platform: str = "square",
        seed: int = 0,
    ) -> None:
        self.genes = list(genes)
        self.config = config
        self.factor = int(factor)
        self.lr_um = float(lr_um)
        self.normalizer = normalizer
        self.graph = graph
        self.image_channels = int(image_channels)
        self.residual_scale = float(residual_scale)
        self.feature_stats = feature_stats
        if (config.base == "aggregation") != (base_model is not None):
            raise ValueError(
                "config.base='aggregation' needs a fitted base_model (and 'nearest' none); use DiffST.setup."
            )
        self.base_model = base_model
        self.platform = str(platform)
        G = len(self.genes)
        n_feat = len(feature_stats["mean"]) if feature_stats else 0
        cond = 2 * G + 1 + n_feat + (2 if self.platform != "square" else 0)
        adj = graph.adjacency()
        px = patch_px(config, self.lr_um / self.factor)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # repeatable initial weights
            self.mean_net = DiffSTUNet(
                config, G, cond_channels=cond, image_channels=self.image_channels, adjacency=adj, patch_px=px
            )
            stage_b = config.replace(base_channels=config.residual_base_channels, gene_dim=config.residual_gene_dim)
            self.residual_net = DiffSTUNet(
                stage_b, G, cond_channels=cond + G, image_channels=self.image_channels, adjacency=adj,
                sample_channels=G, patch_px=px,
            )  # fmt: skip
        self.gene_sigma = np.ones(G, np.float32)
        self.spread_scale = np.ones(G, np.float32)
        self.sampling_steps = int(config.num_inference_steps)
        self.train_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def setup(
        cls,
        data: Tiles | Section | Sequence[Section],
        config: DiffSTConfig | str = "cpu",
        *,
        seed: int = 0,
        base_sections: Sequence[Section] | None = None,
    ) -> DiffST:
        """Create an untrained model fitted to the training sections' genes, scale and co-expression.

        With ``config.base == "aggregation"`` the base model (:class:`AggregationConsistency`) is
        fitted here on the LR maps and H&E of ``data`` and of ``base_sections`` (the validation
        sections), and its blend with the nearest map is chosen on the validation sections' HR truth
        (``base_sections``, or carved from ``data`` as :meth:`train` carves them).
        """
        sections = _as_sections(data)
        platform = section_platform(sections)
        config = DiffSTConfig.preset(config) if isinstance(config, str) else config
        fitted = fit_setup(sections, config, data.normalizer if isinstance(data, Tiles) else None, seed, base_sections)
        normalizer, graph, residual_scale = fitted.normalizer, fitted.graph, fitted.residual_scale
        feature_stats, base_model, bases = fitted.feature_stats, fitted.base_model, fitted.bases
        model = cls(
            sections[0].genes, config=config, factor=sections[0].factor, lr_um=sections[0].lr_um,
            normalizer=normalizer, graph=graph, image_channels=sections[0].he.shape[0],
            residual_scale=residual_scale, feature_stats=feature_stats, base_model=base_model, platform=platform,
            seed=seed,
        )  # fmt: skip
        for s, b in zip(sections, bases):  # cached where training will look for it: computed once
            if b is not None:
                s.meta[base_cache_key(model._base_digest(), s)] = b
        logger.info(
            "Diff-ST set up: %d genes, %d graph edges, residual scale %.3g, %d + %d parameters.",
            len(model.genes), graph.edge_index.shape[1], residual_scale,
            *(sum(p.numel() for p in n.parameters()) for n in (model.mean_net, model.residual_net)),
        )  # fmt: skip
        return model

    def num_parameters(self) -> int:
        """Parameters of both networks."""
        return sum(p.numel() for n in (self.mean_net, self.residual_net) for p in n.parameters())

    def _base_digest(self) -> str:
        """Digest of the fitted histology-distributed base ('' without one), computed once."""
        if getattr(self, "_digest", None) is None:
            self._digest = base_digest(self.base_model)
        return self._digest

    def prepare(self, section: Section, *, with_truth: bool) -> Prepared:
        """The section in the model's space (conditioning maps, histology, optional truth).

        A square-trained model sees spots summed per LR pixel (the gap-free map it learnt from); a
        spot-trained model needs the spots.
        """
        if self.platform == "square" and section.spots is not None:
            section = replace(section, spots=None)
        elif self.platform != "square" and section.spots is None:
            raise ValueError(
                f"The model was trained for {self.platform!r} spots; section {section.name!r} has none "
                "(a square LR map)."
            )
        return prepare_section(
            section, self.normalizer, with_truth=with_truth, feature_stats=self.feature_stats,
            base_model=self.base_model, base_key=self._base_digest(),
        )  # fmt: skip

    # ------------------------------------------------------------------ training
    def _check_sections(self, sections: Sequence[Section]) -> None:
        for s in sections:
            if s.factor != self.factor:
                raise ValueError(f"Section {s.name!r} has factor={s.factor}, the model was built for {self.factor}.")
            if s.he_scale != self.config.he_scale:
                raise ValueError(
                    f"Section {s.name!r} has he_scale={s.he_scale}; the model expects {self.config.he_scale}."
                )
            if s.he.shape[0] != self.image_channels:
                raise ValueError(
                    f"Section {s.name!r} has a {s.he.shape[0]}-channel image; the model expects {self.image_channels}."
                )
            missing = [g for g in s.genes if g not in self.genes]
            if missing:
                raise KeyError(f"Genes {missing[:5]} are not in the model's panel ({len(self.genes)} genes).")

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
    ) -> DiffST:
        """Train stage A, then stage B, then choose the sampler's steps and calibrate the spread.

        Parameters
        ----------
        data
            Training sections (with HR truth), or :class:`~stdiff.pp.Tiles` from them.
        validation
            Sections for early stopping and calibration; default: carved from ``data``
            (:func:`carve_validation`: the last section when there are ≥ 3, else the right fifth).
        steps, residual_steps
            Step caps of stage A and stage B (default ``config.steps`` / ``config.residual_steps``).
        max_time_s
            Time cap per stage in seconds (default ``config.max_time_s``).
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
        sections = _as_sections(data)
        self._check_sections(sections)
        cfg = self.config
        if validation is None:
            sections, val_sections = carve_validation(sections, cfg.tile_lr)
        else:
            val_sections = [validation] if isinstance(validation, Section) else list(validation)
            self._check_sections(val_sections)
        train_stages(
            self, sections, val_sections, steps=steps, residual_steps=residual_steps, max_time_s=max_time_s,
            device=resolve_device(device), seed=seed, progress=progress, batch_size=batch_size,
        )  # fmt: skip
        return self

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict_section(
        self,
        section: Section,
        *,
        n_samples: int | None = None,
        num_inference_steps: int | None = None,
        seed: int = 0,
        device: str | torch.device = "auto",
        batch_size: int = 16,
        progress: bool = True,
        return_samples: bool = False,
        knockout: str | None = None,
    ) -> dict[str, Any]:
        """Super-resolve a whole section: the stage-A mean and calibrated stage-B samples around it.

        Parameters
        ----------
        section
            Rasterised section carrying the model's gene panel in order.
        n_samples
            Posterior samples (default ``config.n_samples``; 0: the mean only).
        num_inference_steps
            Sampler steps (default: the count chosen on validation data at training).
        seed
            Seed of the sampler's noise.
        device
            ``"auto"``, ``"cpu"`` or ``"cuda"``.
        batch_size
            Tiles per network call.
        progress
            Show a progress bar over the sampler's steps.
        return_samples
            Also return the normalised samples.
        knockout
            Switch one component off at inference (``"modulation"``, ``"cross_attention"``,
            ``"gene_graph"``) to measure what it contributes.

        Returns
        -------
        A dict of ``(G, H, W)`` arrays on the section's HR grid, 0 off tissue: ``mean`` (counts per HR
        pixel; stage A mapped back to counts), ``std`` (counts, from the samples), ``q05``, ``q95`` (a
        central 90% prediction interval: mean ± Student-t quantile × sample sd × √(1 + 1/n) in the
        normalised space, mapped to counts),
        ``z_mean`` (the mean in the normalised space), ``z_std``; with ``return_samples`` also
        ``samples`` ``(n, G, H, W)`` (normalised, whole-section canvas samples).
        """
        self._check_sections([section])
        if section.genes != self.genes:
            raise ValueError(
                "The section must carry the model's whole gene panel in its order (rasterize with "
                "genes=model.genes); select genes from the result instead."
            )
        return predict_whole_section(
            self, section, n_samples=n_samples, num_inference_steps=num_inference_steps, seed=seed,
            device=resolve_device(device), batch_size=batch_size, progress=progress,
            return_samples=return_samples, knockout=knockout,
        )  # fmt: skip

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (tensors and plain Python only)."""
        return model_state(self, FORMAT)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` atomically (temporary file + rename)."""
        path = write_checkpoint(self.state(), path)
        logger.info("Saved Diff-ST model to %s.", path)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        genes: Sequence[str] | None = None,
        config: DiffSTConfig | None = None,
    ) -> DiffST:
        """Load a model saved with :meth:`save` (``weights_only=True``).

        Parameters
        ----------
        path
            Checkpoint file.
        genes
            If given, must be contained in the model's panel (raises ``KeyError`` naming the missing ones).
        config
            If given, must equal the saved config (raises ``ValueError`` listing the differences).
        """
        return model_from_state(cls, read_checkpoint(path, expected_format=FORMAT), genes=genes, config=config)

    def model_hash(self) -> str:
        """SHA-256 (first 16 hex) of both networks' weights, the calibration and the model's metadata."""
        h = hashlib.sha256()
        for net in (self.mean_net, self.residual_net):
            for k, v in sorted(net.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
        h.update(self.spread_scale.tobytes())
        h.update(self._base_digest().encode())
        h.update(repr((self.genes, self.factor, self.lr_um, self.config.to_dict(), self.sampling_steps)).encode())
        if self.platform != "square":
            h.update(self.platform.encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"DiffST(genes={len(self.genes)}, factor={self.factor}, lr_um={self.lr_um:g}, platform={self.platform!r}, "
            f"trained={bool(self.train_info)}, modulation={self.config.use_modulation}, "
            f"cross_attention={self.config.use_cross_attention}, gene_graph={self.config.use_gene_graph})"
        )


def _as_sections(data: Tiles | Section | Sequence[Section]) -> list[Section]:
    if isinstance(data, Tiles):
        return list(data.sections)
    if isinstance(data, Section):
        return [data]
    sections = list(data)
    if not sections or not all(isinstance(s, Section) for s in sections):
        raise TypeError("data must be Tiles, a Section or a list of Sections (see stdiff.pp.rasterize).")
    return sections
