"""The Diff-ST model in three layers: networks and losses, one training loop, and the user-facing models.

Importing this subpackage imports torch.
"""

from . import edm, losses, training
from ._diffst_training import carve_validation
from ._windows import upsample_lr
from .aggregation_consistency import AggregationConsistency
from .base import BaseModel
from .canvas import Canvas
from .config import DiffSTConfig
from .cross_modal_modulation import CrossModalModulation, PlainFusion, disentangling_loss
from .diffst import DiffST
from .dynamic_cross_attention import DynamicCrossAttention, PatchEncoder, admitted_mask, patch_entropy
from .gene_graph import GeneGraph, GeneGraphHead, coexpression_graph
from .self_supervised import SelfSupervisedEnsemble
from .unet import DiffSTUNet, HistologyStem

__all__ = [
    "AggregationConsistency",
    "BaseModel",
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
    "SelfSupervisedEnsemble",
    "admitted_mask",
    "carve_validation",
    "coexpression_graph",
    "disentangling_loss",
    "edm",
    "losses",
    "patch_entropy",
    "training",
    "upsample_lr",
]
