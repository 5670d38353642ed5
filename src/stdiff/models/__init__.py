"""The Diff-ST model in three layers: networks and losses, one training loop, and the user-facing models.

1. :mod:`stdiff.models.nn`: pure networks and losses (the U-Net, the three Diff-ST components, EDM,
   the loss objects, aggregation consistency's network).
2. :mod:`stdiff.models.training`: the one training loop every learner uses.
3. The models users train, save and apply, on one :class:`BaseModel`: :class:`DiffST`,
   :class:`AggregationConsistency`, :class:`SelfSupervisedEnsemble`, :class:`SpotRate`; configured by :class:`DiffSTConfig`.

Importing this subpackage imports torch.
"""

from . import nn, training
from ._diffst_training import carve_validation
from ._setup import section_gene_graph
from ._windows import upsample_lr
from .aggregation_consistency import AggregationConsistency
from .base import BaseModel
from .canvas import Canvas
from .config import (
    GRAPH_CONVS,
    CalibrationConfig,
    ComponentsConfig,
    DiffSTConfig,
    NetworkConfig,
    SamplerConfig,
    TrainingConfig,
)
from .diffst import DiffST
from .nn import *  # noqa: F403 (layer 1 by name: the networks, components and losses)
from .self_supervised import SelfSupervisedEnsemble
from .spot_rate import SpotRate, default_learner

__all__ = [
    "GRAPH_CONVS",
    "AggregationConsistency",
    "BaseModel",
    "CalibrationConfig",
    "Canvas",
    "ComponentsConfig",
    "DiffST",
    "DiffSTConfig",
    "NetworkConfig",
    "SamplerConfig",
    "SelfSupervisedEnsemble",
    "SpotRate",
    "TrainingConfig",
    "carve_validation",
    "default_learner",
    "nn",
    "section_gene_graph",
    "training",
    "upsample_lr",
    *nn.__all__,
]
