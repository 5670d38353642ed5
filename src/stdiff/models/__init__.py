"""The Diff-ST model: network, components, noise schedulers and configuration.

Importing this subpackage imports torch.
"""

from .aggregation_consistency import AggregationConsistency
from .config import DiffSTConfig
from .cross_modal_modulation import AdaptiveModulation, CrossModalModulation, DisentanglingNetwork
from .diffst import DiffST, upsample_lr
from .dynamic_cross_attention import DynamicCrossAttention, PatchEncoder, admitted_mask, patch_entropy
from .gene_graph import GeneGraph, GeneGraphHead, coexpression_graph
from .scheduler import DDIMScheduler, DDPMScheduler, make_scheduler
from .unet import DiffSTUNet

__all__ = [
    "AggregationConsistency",
    "AdaptiveModulation",
    "CrossModalModulation",
    "DDIMScheduler",
    "DDPMScheduler",
    "DiffST",
    "DiffSTConfig",
    "DiffSTUNet",
    "DisentanglingNetwork",
    "DynamicCrossAttention",
    "GeneGraph",
    "GeneGraphHead",
    "PatchEncoder",
    "admitted_mask",
    "coexpression_graph",
    "make_scheduler",
    "patch_entropy",
    "upsample_lr",
]
