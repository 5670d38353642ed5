"""Names stdiff writes and reads back: one home for every key.

:func:`stdiff.tl.superresolve` writes two image elements and a provenance record; the other tools
(:func:`stdiff.tl.section_of`, :func:`stdiff.tl.to_anndata`, :func:`stdiff.pl.superresolution`, the
command line) read them back by these names (:class:`Key`), so a key is changed here or nowhere. A
saved model's fields and format tags are :class:`Checkpoint`.
"""

from __future__ import annotations

import re

__all__ = ["Checkpoint", "Key"]


class Key:
    """Keys of stdiff's results, grouped by where they live."""

    class img:
        """Image elements of a result (``sdata.images``)."""

        #: default ``key_added``: the posterior mean image
        DEFAULT = "stdiff"
        #: suffix of the standard deviation image next to the mean image ``key``
        STD_SUFFIX = "_std"

        @classmethod
        def std(cls, key: str) -> str:
            """Name of the standard deviation image of the result ``key``."""
            return f"{key}{cls.STD_SUFFIX}"

        @staticmethod
        def quantile(key: str, q: float) -> str:
            """Name of the ``q`` quantile image of the result ``key`` (``0.05`` → ``f"{key}_q05"``)."""
            return f"{key}_{Key.pred.quantile(q)}"

    class attrs:
        """Entries of ``sdata.attrs``, of each result element's ``attrs`` and of ``AnnData.uns``."""

        #: the provenance: ``sdata.attrs[STDIFF][key]``, ``element.attrs[STDIFF]``, ``adata.uns[STDIFF]``
        STDIFF = "stdiff"
        #: on an element's provenance: ``"mean"``, ``"std"`` or a quantile's name (``"q05"``, :meth:`Key.pred.quantile`)
        KIND = "kind"
        #: on ``sdata.attrs[STDIFF][key]``: wall time of the call in seconds
        SECONDS = "seconds"

    class prov:
        """Fields of a result's provenance (``sdata.attrs["stdiff"][key]``), in the order they are written."""

        MODEL = "model"
        MODEL_HASH = "model_hash"
        TRAINED_HERE = "trained_here"
        CONFIG = "config"
        GENES = "genes"
        FACTOR = "factor"
        LR_UM = "lr_um"
        HR_UM = "hr_um"
        SPOTS = "spots"
        ORIGIN = "origin"
        COORDINATE_SYSTEM = "coordinate_system"
        IMAGE_KEY = "image_key"
        SOURCE = "source"
        SOURCE_KEY = "source_key"
        LAYER = "layer"
        ALLOW_NON_INTEGER = "allow_non_integer"
        GENE_SYMBOLS = "gene_symbols"
        MEAN = "mean"
        SAMPLER = "sampler"
        CALIBRATION = "calibration"
        NUM_INFERENCE_STEPS = "num_inference_steps"
        #: the model's co-expression gene graph (genes, edge_index, edge_weight), when it has one
        GENE_GRAPH = "gene_graph"
        N_SAMPLES = "n_samples"
        SEED = "seed"
        CONSERVE_COUNTS = "conserve_counts"
        UNITS = "units"
        STDIFF_VERSION = "stdiff_version"
        #: the image elements the call wrote (the mean, and the std and quantile images when there are some)
        IMAGES = "images"
        #: the quantile levels the call asked for (``quantiles=``)
        QUANTILES = "quantiles"
        #: key of the histology scale inside the ``CONFIG`` record
        HE_SCALE = "he_scale"

    class pred:
        """Entries of the dict a model's ``predict_section`` returns."""

        MEAN = "mean"
        STD = "std"
        #: 5% and 95% prediction bounds
        Q05 = "q05"
        Q95 = "q95"

        @staticmethod
        def quantile(q: float) -> str:
            """Name of the ``q`` quantile (``0.05`` → ``"q05"``, ``0.975`` → ``"q97.5"``)."""
            p = round(float(q) * 100, 6)
            return f"q{int(p):02d}" if p == int(p) else f"q{p:g}"

        @staticmethod
        def is_quantile(name: object) -> bool:
            """Whether ``name`` is a quantile's name as :meth:`quantile` writes it (``"q05"``, ``"q97.5"``)."""
            return isinstance(name, str) and re.fullmatch(r"q\d+(\.\d+)?", name) is not None


class Checkpoint:
    """Keys of a saved model's state and the format tag of each model class."""

    FORMAT = "format"
    TRAIN_INFO = "train_info"
    DIFFST = "stdiff-diffst-3"
    AGGREGATION_CONSISTENCY = "stdiff-aggregation-consistency-1"
    SELF_SUPERVISED_ENSEMBLE = "stdiff-self-supervised-ensemble-1"
    SPOT_RATE = "stdiff-spot-rate-1"
