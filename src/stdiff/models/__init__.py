"""The Diff-ST model: networks, the three named components, EDM noise levels and configuration.

Importing this subpackage imports torch.
"""

from . import edm
from .aggregation_consistency import AggregationConsistency
from .canvas import Canvas
from .config import DiffSTConfig
from .cross_modal_modulation import CrossModalModulation, PlainFusion, disentangling_loss
from .diffst import DiffST, carve_validation, upsample_lr
from .dynamic_cross_attention import DynamicCrossAttention, PatchEncoder, admitted_mask, patch_entropy
from .gene_graph import GeneGraph, GeneGraphHead, coexpression_graph
from .unet import DiffSTUNet, HistologyStem

__all__ = [
    "AggregationConsistency",
    "Canvas",
    "CrossModalModulation",
    "DiffST",
    "DiffSTConfig",
    "DiffSTUNet",
    "DynamicCrossAttention",
    "GeneGraph",
    "GeneGraphHead",
    "HistologyStem",
    "PatchEncoder",
    "PlainFusion",
    "admitted_mask",
    "carve_validation",
    "coexpression_graph",
    "disentangling_loss",
    "edm",
    "patch_entropy",
    "upsample_lr",
]
