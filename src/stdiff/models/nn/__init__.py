"""Layer 1 of the models: pure networks and losses (no data handling, no training, no files).

- :mod:`.unet`: the conditional U-Net both stages use (:class:`DiffSTUNet`, :class:`HistologyStem`);
- the three Diff-ST components, one module each: :mod:`.cross_modal_modulation`,
  :mod:`.dynamic_cross_attention`, :mod:`.gene_graph`;
- :mod:`.edm`: EDM preconditioning, noise levels and the sampler (the scheduler, apart from the network);
- :mod:`.losses`: the training losses as objects;
- :mod:`.abundance`: aggregation consistency's per-pixel network.
"""

from . import edm, losses
from .abundance import AbundanceNet
from .cross_modal_modulation import CrossModalModulation, PlainFusion, disentangling_loss
from .dynamic_cross_attention import DynamicCrossAttention, PatchEncoder, admitted_mask, patch_entropy
from .gene_graph import (
    GeneGraphHead,
    coexpression_graph,
    gene_graph_data,
    gene_graph_edges,
    gene_graph_from_dict,
    gene_graph_to_dict,
)
from .losses import MeanLoss, ResidualEDMLoss
from .unet import DiffSTUNet, HistologyStem

__all__ = [
    "AbundanceNet",
    "CrossModalModulation",
    "DiffSTUNet",
    "DynamicCrossAttention",
    "GeneGraphHead",
    "HistologyStem",
    "MeanLoss",
    "PatchEncoder",
    "PlainFusion",
    "ResidualEDMLoss",
    "admitted_mask",
    "coexpression_graph",
    "disentangling_loss",
    "edm",
    "gene_graph_data",
    "gene_graph_edges",
    "gene_graph_from_dict",
    "gene_graph_to_dict",
    "losses",
    "patch_entropy",
]
