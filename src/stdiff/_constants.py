"""One home for the keys stdiff writes and reads: checkpoint fields and format tags (output keys: see below)."""

from __future__ import annotations


class Checkpoint:
    """Keys of a saved model's state and the format tag of each model class."""

    FORMAT = "format"
    TRAIN_INFO = "train_info"
    DIFFST = "stdiff-diffst-3"
    AGGREGATION_CONSISTENCY = "stdiff-aggregation-consistency-1"
    SELF_SUPERVISED_ENSEMBLE = "stdiff-self-supervised-ensemble-1"
