"""What :meth:`DiffST.setup <stdiff.models.DiffST.setup>` fits from the training sections before any training.

The count normalisation, the histology-distributed base (fitted on LR maps and H&E only, its blend
with the nearest map chosen once: on validation truth when there is some, else on held-out
measurements), the co-expression gene graph (when the component is on), the scale of the HR − base
residual (stage A's target scale) and the histology feature scaler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..pp import Normalizer, Section, fit_normalizer
from ._diffst_training import carve_validation
from ._windows import Prepared
from .aggregation_consistency import AggregationConsistency
from .config import ComponentsConfig, DiffSTConfig
from .nn.gene_graph import coexpression_graph

if TYPE_CHECKING:  # pragma: no cover
    from torch_geometric.data import Data


@dataclass
class Setup:
    """The fitted pieces of an untrained model, and the base of each training section."""

    normalizer: Normalizer
    graph: Data | None
    residual_scale: float
    feature_stats: dict[str, list[float]] | None
    base_model: AggregationConsistency | None
    bases: list[np.ndarray | None]


def fit_setup(
    sections: Sequence[Section],
    config: DiffSTConfig,
    normalizer: Normalizer | None,
    seed: int,
    base_sections: Sequence[Section] | None,
) -> Setup:
    """Fit normalisation (unless given), base, gene graph, residual scale and feature scaler."""
    for s in sections:
        if s.hr is None:
            raise ValueError(
                f"Section {s.name!r} has no HR truth; train on references with transcripts or HR bins, "
                "or use Section.coarsen() for self-supervised training."
            )
    normalizer = normalizer if normalizer is not None else fit_normalizer(sections)
    base_model = None
    if config.base == "aggregation":
        # the blend with nearest: chosen on the validation truth (given, or carved as train() will) when
        # there is one, else by the base itself on held-out measurements — once either way
        val = list(base_sections) if base_sections is not None else carve_validation(sections, config.tile_lr)[1]
        val = [s for s in val if s.hr is not None]
        # fitted once on the training sections' LR maps and H&E (no HR truth), stored with the model
        with torch.enable_grad():
            base_model = AggregationConsistency(blend=0.0 if val else "auto").fit(
                list(sections) + list(base_sections or []), seed=seed, max_time=config.base_max_time_s, device="cpu"
            )
        if val:
            base_model.choose_blend_on_truth(val, normalizer)
    bases = [None if base_model is None else base_model.predict(s)["mean"] for s in sections]
    prepared = [Prepared(s, normalizer, with_truth=True, base_counts=b) for s, b in zip(sections, bases)]
    graph = section_gene_graph(sections, config.components, normalizer) if config.components.use_gene_graph else None
    resid = np.concatenate([(p.z_hr - p.base)[:, p.mask_truth > 0].ravel() for p in prepared])
    feature_stats = None
    if config.components.use_histology_features:
        from ..pp import fit_feature_scaler, histology_features

        mean, sd = fit_feature_scaler([histology_features(s) for s in sections])
        feature_stats = {"mean": mean.tolist(), "sd": sd.tolist()}
    return Setup(normalizer, graph, float(max(resid.std(), 1e-3)), feature_stats, base_model, bases)


def section_gene_graph(
    sections: Section | Sequence[Section],
    components: ComponentsConfig | None = None,
    normalizer: Normalizer | None = None,
) -> Data:
    """The co-expression gene graph of sections, as :meth:`DiffST.setup <stdiff.models.DiffST.setup>` builds it.

    The correlation is taken in the normalised space, over the HR pixels where the truth is
    measured (at most 200 000, drawn with a fixed seed). A section without HR truth contributes its
    measurements instead, as counts per HR pixel: each spot (its count over its area in HR pixels),
    or each LR pixel on tissue.

    Parameters
    ----------
    sections
        One section or several, with the same genes.
    components
        ``graph_threshold`` and ``graph_top_k`` come from here (default: :class:`ComponentsConfig`'s).
    normalizer
        The normaliser (default: fitted on the sections, :func:`stdiff.pp.fit_normalizer`).

    Returns
    -------
    A :class:`torch_geometric.data.Data` (:func:`~stdiff.models.nn.gene_graph.coexpression_graph`).
    """
    sections = [sections] if isinstance(sections, Section) else list(sections)
    comp = components if components is not None else ComponentsConfig()
    norm = normalizer if normalizer is not None else fit_normalizer(sections)
    genes = list(sections[0].genes)
    norm = norm.subset(genes) if norm.genes != genes else norm
    expr = np.concatenate([_observations(s, norm) for s in sections], axis=1)
    if expr.shape[1] > 200_000:
        idx = np.random.default_rng(0).choice(expr.shape[1], 200_000, replace=False)
        expr = expr[:, idx]
    return coexpression_graph(expr, genes, threshold=comp.graph_threshold, top_k=comp.graph_top_k)


def _observations(section: Section, norm: Normalizer) -> np.ndarray:
    """``(G, n)`` normalised expression: the truth's measured HR pixels, else the spots or the tissue LR pixels."""
    if section.hr is not None:
        return norm.transform(section.hr)[:, section.truth_mask > 0]
    if section.spots is not None:
        area_px = np.pi * (section.spots.radius / section.hr_um) ** 2
        return norm.transform(section.spots.counts / np.maximum(area_px, 1e-6), axis=-2)
    return norm.transform(section.lr, factor=section.factor)[:, section.mask_lr > 0]


def section_platform(sections: Sequence[Section]) -> str:
    """What the sections measure: ``"square"`` or their (common) spot platform."""
    kinds = {"square" if s.spots is None else s.spots.geometry.platform for s in sections}
    if len(kinds) != 1:
        raise ValueError(f"Training sections mix measurement geometries {sorted(kinds)}; simulate one platform.")
    return kinds.pop()
