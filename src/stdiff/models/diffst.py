"""The Diff-ST model: a regression mean (stage A) with calibrated residual diffusion samples (stage B).

Following CorrDiff (Mardani et al. 2023), the posterior mean is not estimated from diffusion samples:

- **Stage A** is a regression network with the full Diff-ST conditioning (LR map per tissue pixel,
  histology, cross-modal modulation, dynamic cross-attention, gene graph). Its output is the mean
  written to the ``stdiff`` image.
- **Stage B** is an EDM diffusion model (:mod:`~stdiff.models.nn.edm`) of the per-gene-scaled residual
  ``(z_HR − mean) / σ_g`` around it; its samples, drawn on the whole-section canvas
  (:mod:`~stdiff.models.canvas`), give the ``stdiff_std`` map and quantiles.
- After training, the sampler's step count is chosen among ``config.calibration.step_candidates`` by CRPS on
  validation data carved from the training data, and a per-gene spread scale is fitted there
  (split calibration). Both are stored with the model.

Both stages train until their validation loss stops improving (:class:`~stdiff.models.training.TrainingLoop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._constants import Checkpoint, Key
from .._utils import logger, plain
from ..pp import Normalizer, Section, Tiles
from ._diffst_prediction import DiffSTPrediction
from ._diffst_training import DiffSTTraining
from ._setup import fit_setup, section_platform
from ._windows import Prepared, as_sections, base_cache_key, prepare_section
from .aggregation_consistency import AggregationConsistency
from .base import BaseModel
from .config import DiffSTConfig
from .nn.gene_graph import gene_graph_from_dict, gene_graph_to_dict
from .nn.unet import DiffSTUNet

if TYPE_CHECKING:  # pragma: no cover
    from torch_geometric.data import Data

__all__ = ["DiffST"]


def patch_px(config: DiffSTConfig, hr_um: float) -> int:
    """Cell-level patch side in histology pixels for ``config.components.patch_um`` at this geometry."""
    he_um = hr_um / config.he_scale
    return max(1, int(round(config.components.patch_um / he_um)))


class DiffST(DiffSTTraining, DiffSTPrediction, BaseModel):
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
        Co-expression gene graph, a :class:`torch_geometric.data.Data` with the gene names in
        ``genes`` (``None`` when ``config.components.use_gene_graph`` is off); built once by
        :meth:`setup`, saved with the model, recorded in the provenance of its results
        (:func:`stdiff.tl.gene_graph` reads it back).
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

    FORMAT = Checkpoint.DIFFST

    def __init__(
        self,
        genes: Sequence[str],
        *,
        config: DiffSTConfig,
        factor: int,
        lr_um: float,
        normalizer: Normalizer,
        graph: Data | None,
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
        px = patch_px(config, self.lr_um / self.factor)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # repeatable initial weights
            self.mean_net = DiffSTUNet(
                config, G, cond_channels=cond, image_channels=self.image_channels, graph=graph, patch_px=px
            )
            self.residual_net = DiffSTUNet(
                config, G, cond_channels=cond + G, image_channels=self.image_channels, graph=graph,
                sample_channels=G, patch_px=px, network=config.residual,
            )  # fmt: skip
        self.gene_sigma = np.ones(G, np.float32)
        self.spread_scale = np.ones(G, np.float32)
        self.sampling_steps = int(config.sampler.num_inference_steps)
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
        sections = as_sections(data)
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
            len(model.genes), 0 if graph is None else graph.num_edges, residual_scale,
            *(sum(p.numel() for p in n.parameters()) for n in (model.mean_net, model.residual_net)),
        )  # fmt: skip
        return model

    def num_parameters(self) -> int:
        """Parameters of both networks."""
        return sum(p.numel() for n in (self.mean_net, self.residual_net) for p in n.parameters())

    def _base_digest(self) -> str:
        """Hash of the fitted histology-distributed base ('' without one), computed once."""
        if getattr(self, "_digest", None) is None:
            self._digest = "" if self.base_model is None else self.base_model.model_hash()
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

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (tensors and plain Python only)."""
        info = {k: v for k, v in self.train_info.items() if k not in ("stage_a", "stage_b")}
        for k in ("stage_a", "stage_b"):
            if k in self.train_info:
                info[k] = {kk: vv for kk, vv in self.train_info[k].items() if kk != "history"}
        return {
            "genes": list(self.genes),
            "config": self.config.to_dict(),
            "factor": self.factor,
            "lr_um": self.lr_um,
            "platform": self.platform,
            "normalizer": self.normalizer.to_dict(),
            "graph": None if self.graph is None else gene_graph_to_dict(self.graph),
            "image_channels": self.image_channels,
            "residual_scale": self.residual_scale,
            "feature_stats": self.feature_stats,
            "base_model": None if self.base_model is None else self.base_model.state(),
            "gene_sigma": self.gene_sigma.tolist(),
            "spread_scale": self.spread_scale.tolist(),
            "sampling_steps": self.sampling_steps,
            "mean_net": self.mean_net.state_dict(),
            "residual_net": self.residual_net.state_dict(),
            Checkpoint.TRAIN_INFO: plain(info),
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], *, genes: Sequence[str] | None = None, config: DiffSTConfig | None = None
    ) -> DiffST:
        """Rebuild a model from :meth:`state`; a requested gene panel and config are checked against it.

        Parameters
        ----------
        state
            What :meth:`state` returned (or :meth:`load` read).
        genes
            If given, must be contained in the model's panel (raises ``KeyError`` naming the missing ones).
        config
            If given, must equal the saved config (raises ``ValueError`` listing the differences).
        """
        saved_cfg = DiffSTConfig.from_dict(state["config"])
        if config is not None and config != saved_cfg:
            diff = {k: (v, saved_cfg.to_dict()[k]) for k, v in config.to_dict().items() if saved_cfg.to_dict()[k] != v}
            raise ValueError(f"Config differs from the checkpoint's (given, saved): {diff}.")
        if genes is not None:
            missing = [g for g in genes if g not in state["genes"]]
            if missing:
                raise KeyError(
                    f"Genes {missing[:10]} are not in the model's panel of {len(state['genes'])} genes "
                    f"(e.g. {state['genes'][:5]}); retrain with them or drop them from genes=."
                )
        base, graph = state.get("base_model"), state.get("graph")
        model = cls(
            state["genes"], config=saved_cfg, factor=state["factor"], lr_um=state["lr_um"],
            normalizer=Normalizer.from_dict(state["normalizer"]),
            graph=None if graph is None else gene_graph_from_dict(graph), image_channels=state["image_channels"],
            residual_scale=state["residual_scale"], feature_stats=state.get("feature_stats"),
            base_model=None if base is None else AggregationConsistency.from_state(base), platform=state["platform"],
        )  # fmt: skip
        model.mean_net.load_state_dict(state["mean_net"])
        model.residual_net.load_state_dict(state["residual_net"])
        model.gene_sigma = np.asarray(state["gene_sigma"], np.float32)
        model.spread_scale = np.asarray(state["spread_scale"], np.float32)
        model.sampling_steps = int(state["sampling_steps"])
        model.train_info = dict(state.get(Checkpoint.TRAIN_INFO) or {})
        model.mean_net.eval()
        model.residual_net.eval()
        return model

    def provenance(self, *, num_inference_steps: int | None = None) -> dict[str, Any]:
        """Class and hash, how the mean is made, the sampler (with ``num_inference_steps``, or the calibrated).

        A model with the gene graph records it too (:func:`~stdiff.models.nn.gene_graph.gene_graph_to_dict`).
        """
        prov = {
            **super().provenance(),
            Key.prov.MEAN: "stage A regression (posterior mean in the normalised space, mapped to counts)",
            Key.prov.SAMPLER: f"edm-{self.config.sampler.solver}, whole-section canvas, per-gene calibrated spread",
            Key.prov.NUM_INFERENCE_STEPS: int(num_inference_steps or self.sampling_steps),
        }
        if self.graph is not None:
            prov[Key.prov.GENE_GRAPH] = gene_graph_to_dict(self.graph)
        return prov

    def __repr__(self) -> str:
        comp = self.config.components
        return (
            f"DiffST(genes={len(self.genes)}, factor={self.factor}, lr_um={self.lr_um:g}, platform={self.platform!r}, "
            f"trained={bool(self.train_info)}, modulation={comp.use_modulation}, "
            f"cross_attention={comp.use_cross_attention}, gene_graph={comp.use_gene_graph})"
        )
