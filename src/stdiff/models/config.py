"""Model configuration, nested by concept: each stage's network, the components, training, sampler, calibration.

:class:`DiffSTConfig` holds the tiling geometry and the base at its top level, and one frozen
dataclass per concept: :class:`NetworkConfig` for stage A (``mean``) and stage B (``residual``),
:class:`ComponentsConfig`, :class:`TrainingConfig`, :class:`SamplerConfig` and
:class:`CalibrationConfig`. Change fields with :meth:`DiffSTConfig.replace` or the overrides of
:meth:`DiffSTConfig.preset`: a top-level field by name, a nested one by its dotted path
(``**{"training.steps": 50}``) or a group by a dict (``training={"steps": 50}``). What each default
gave in the benchmarks is in :doc:`/benchmarks` and :doc:`/model`.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

__all__ = [
    "GRAPH_CONVS",
    "CalibrationConfig",
    "ComponentsConfig",
    "DiffSTConfig",
    "NetworkConfig",
    "SamplerConfig",
    "TrainingConfig",
]

#: The torch-geometric graph convolutions ``components.graph_conv`` can name.
GRAPH_CONVS = ("gcn", "sage", "gat")

_CURRICULUM = ((0.0, 0.1), (0.2, 0.3), (0.3, 0.5), (0.4, 0.7), (0.5, 0.9), (0.6, 1.0))


@dataclass(frozen=True)
class NetworkConfig:
    """The U-Net of one stage.

    Attributes
    ----------
    base_channels, channel_mults, num_res_blocks
        Channels of the first level, their multiples per level, residual blocks per level.
    attention_levels, num_heads
        Levels with self-attention and the heads of every attention (self- and cross-attention).
    gene_dim
        Per-gene feature size of the output head (the gene graph's node features).
    """

    base_channels: int = 24
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)
    num_heads: int = 4
    gene_dim: int = 16


@dataclass(frozen=True)
class ComponentsConfig:
    """The three Diff-ST components and the hand-made histology features, each switchable.

    Attributes
    ----------
    use_modulation, modulation_kernel, disentangle_weight
        Cross-modal adaptive modulation with the disentangling network as the fusion of the
        expression and histology streams at every level (off: concatenate and project), the
        neighbourhood of the convolutions predicting the modulation, the disentangling loss's weight.
    use_cross_attention, cross_attention_level, patch_um, patch_dim, curriculum
        Dynamic cross-attention: on/off, the pyramid level of the queries (1: HR/2), the physical
        side of a cell-level patch in µm, the patch embedding width, and the curriculum as
        ``(progress, admitted fraction)`` steps.
    use_gene_graph, graph_layers, graph_threshold, graph_top_k
        Co-expression gene graph (off: the same per-gene head with genes independent): graph
        convolution layers, minimum co-expression (Pearson r) for an edge, most neighbours per gene.
        On, it needs torch-geometric (``pip install 'stdiff[graph]'``).
    graph_conv, graph_sparse_from
        The torch-geometric convolution of every graph layer: ``"gcn"`` (``DenseGCNConv`` /
        ``GCNConv``), ``"sage"`` (GraphSAGE) or ``"gat"`` (GAT, one head); and the panel size from
        which PyG's message-passing layer over ``edge_index`` replaces its dense layer over the
        ``(G, G)`` adjacency (2000: where the sparse GCN layer became the faster on a CPU,
        ``benchmarks/graph_speed.py``).
    use_histology_features
        The hand-made histology features (stain optical densities, nuclei, texture at cell and
        tissue scale; :func:`stdiff.pp.histology_features`) as conditioning channels.
    """

    use_modulation: bool = False
    modulation_kernel: int = 3
    disentangle_weight: float = 0.01
    use_cross_attention: bool = False
    cross_attention_level: int = 1
    patch_um: float = 30.0
    patch_dim: int = 48
    curriculum: tuple[tuple[float, float], ...] = _CURRICULUM
    use_gene_graph: bool = False
    graph_layers: int = 2
    graph_threshold: float = 0.2
    graph_top_k: int = 8
    graph_conv: str = "gcn"
    graph_sparse_from: int = 2000
    use_histology_features: bool = True

    def __post_init__(self) -> None:
        if self.graph_conv not in GRAPH_CONVS:
            raise ValueError(f"components.graph_conv must be one of {list(GRAPH_CONVS)}, got {self.graph_conv!r}.")

    def admitted_fraction(self, progress: float) -> float:
        """Fraction of cell-level patches admitted at training ``progress`` ∈ [0, 1] (curriculum)."""
        frac = self.curriculum[0][1]
        for start, value in self.curriculum:
            if progress >= start:
                frac = value
        return float(frac)


@dataclass(frozen=True)
class TrainingConfig:
    """How both stages train (:class:`~stdiff.models.training.TrainingLoop`).

    Attributes
    ----------
    steps, residual_steps, max_time_s
        Step caps of stage A and stage B; time cap per stage in seconds.
    val_every, patience
        Validate every ``val_every`` steps; stop after ``patience`` validations without improvement.
    batch_size, learning_rate, weight_decay, ema_decay
        Tiles per batch, AdamW, EMA decay of the weights.
    min_tissue, augment, stain_augment
        Minimum tissue fraction of a training tile; random flips and rotations; stain augmentation.
    p_mean, p_std
        Log-normal distribution of stage B's training noise levels (EDM).
    """

    steps: int = 600
    residual_steps: int = 400
    max_time_s: float = 300.0
    val_every: int = 25
    patience: int = 6
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    ema_decay: float = 0.99
    min_tissue: float = 0.25
    augment: bool = True
    stain_augment: bool = True
    p_mean: float = -1.2
    p_std: float = 1.2


@dataclass(frozen=True)
class SamplerConfig:
    """Stage B's EDM sampler.

    Attributes
    ----------
    sigma_min, sigma_max, rho
        The Karras noise schedule.
    solver
        ``"heun"`` or ``"euler"``.
    num_inference_steps
        Steps until calibration chooses among :attr:`CalibrationConfig.step_candidates`.
    n_samples
        Posterior samples per section.
    """

    sigma_min: float = 0.002
    sigma_max: float = 10.0
    rho: float = 7.0
    solver: str = "heun"
    num_inference_steps: int = 8
    n_samples: int = 8


@dataclass(frozen=True)
class CalibrationConfig:
    """Split calibration on the validation data after training.

    Attributes
    ----------
    enabled
        Choose the sampler's steps and fit a per-gene spread scale on the validation data.
    step_candidates
        The step counts compared by CRPS.
    """

    enabled: bool = True
    step_candidates: tuple[int, ...] = (4, 8)


@dataclass(frozen=True)
class DiffSTConfig:
    """Geometry, base and the nested configuration of the Diff-ST model.

    Use :meth:`preset` for ``"tiny"`` (tests; trains in seconds on a CPU), ``"cpu"`` (the default;
    minutes on 2 cores) and ``"paper"`` (the paper's scale, for GPUs).

    Attributes
    ----------
    tile_lr
        Tile size in LR pixels; HR tiles are ``tile_lr · factor`` pixels.
    he_scale
        Histology pixels per HR pixel (20 in the paper: 10 µm HR, 0.5 µm H&E).
    base, base_max_time_s
        What stage A corrects: ``"nearest"``, the LR map spread evenly over the tissue pixels of each
        block (:func:`stdiff.pp.lr_per_tissue_pixel`), or ``"aggregation"``, each block's counts
        distributed by histology (:class:`~stdiff.models.AggregationConsistency`, fitted once on the
        training sections' LR maps and H&E, stored with the model); the time cap of that fit.
    test_time_symmetries
        Stage A's mean averaged over this many orientations of every tile (1, 2, 4 or 8).
    mean, residual
        The networks of stage A (the mean) and stage B (the residual denoiser, usually narrower: its
        head runs at every sampler step for every sample).
    components, training, sampler, calibration
        See :class:`ComponentsConfig`, :class:`TrainingConfig`, :class:`SamplerConfig`,
        :class:`CalibrationConfig`.
    """

    tile_lr: int = 4
    he_scale: int = 4
    base: str = "aggregation"
    base_max_time_s: float = 60.0
    test_time_symmetries: int = 8
    mean: NetworkConfig = field(default_factory=NetworkConfig)
    residual: NetworkConfig = field(default_factory=lambda: NetworkConfig(base_channels=16, gene_dim=4))
    components: ComponentsConfig = field(default_factory=ComponentsConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def __post_init__(self) -> None:
        if self.base not in ("nearest", "aggregation"):
            raise ValueError(f"config.base must be 'nearest' or 'aggregation', got {self.base!r}.")
        if self.test_time_symmetries not in (1, 2, 4, 8):
            raise ValueError(f"config.test_time_symmetries must be 1, 2, 4 or 8, got {self.test_time_symmetries!r}.")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DiffSTConfig:
        """A named preset (``"tiny"``, ``"cpu"``, ``"paper"``), with overrides as in :meth:`replace`."""
        if name not in _PRESETS:
            raise ValueError(f"Unknown preset {name!r}; use one of {sorted(_PRESETS)}.")
        return cls().replace(**_PRESETS[name]).replace(**overrides)

    def replace(self, **changes: Any) -> DiffSTConfig:
        """A copy with fields changed: ``tile_lr=8``, ``**{"training.steps": 50}`` or ``training={"steps": 50}``."""
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            group, _, leaf = key.partition(".")
            if leaf:
                nested.setdefault(group, {})[leaf] = value
            elif isinstance(value, dict) and _is_group(group):
                nested.setdefault(group, {}).update(value)
            else:
                top[key] = value
        names = {f.name for f in fields(self)}
        unknown = sorted({*top, *nested} - names)
        if unknown:
            raise ValueError(f"Unknown config fields {unknown}; the fields are {sorted(names)}.")
        for group, values in nested.items():
            if not _is_group(group):
                raise ValueError(f"config.{group} has no fields; set it as {group}=value.")
            sub = top.get(group, getattr(self, group))
            known = [f.name for f in fields(sub)]
            bad = sorted(set(values) - set(known))
            if bad:
                raise ValueError(f"Unknown fields {bad} of config.{group}; its fields are {known}.")
            top[group] = replace(sub, **values)
        return replace(self, **top)

    @classmethod
    def paths(cls) -> list[str]:
        """Every field a change can name: top-level fields, and the groups' fields as dotted paths."""
        default = cls()
        return [
            f"{f.name}.{sub.name}" if _is_group(f.name) else f.name
            for f in fields(cls)
            for sub in (fields(getattr(default, f.name)) if _is_group(f.name) else [f])
        ]

    def get(self, path: str) -> Any:
        """A field by name or dotted path (``"components.use_gene_graph"``)."""
        value: Any = self
        for part in path.split("."):
            value = getattr(value, part)
        return value

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python representation (JSON-able), nested like the config."""
        return _lists(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffSTConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        groups = {f.name for f in fields(cls) if _is_group(f.name)}
        top = {k: v for k, v in d.items() if k not in groups}
        return cls().replace(**top, **{g: _tuples(v) for g, v in d.items() if g in groups})


#: The nested groups: the fields whose default is a config of their own.
_GROUPS = frozenset(f.name for f in fields(DiffSTConfig) if f.default_factory is not MISSING)


def _is_group(name: str) -> bool:
    """Whether ``name`` is a group of :class:`DiffSTConfig` (a field holding a nested config)."""
    return name in _GROUPS


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_lists(v) for v in obj]
    return obj


def _tuples(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _tuples(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return tuple(_tuples(v) for v in obj)
    return obj


_TINY_NET = {"channel_mults": (1, 2), "attention_levels": (1,), "num_heads": 2}
_PAPER_NET = {"channel_mults": (1, 1, 2, 2, 4), "attention_levels": (2, 3, 4), "num_heads": 4}
_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "tiny": {
        "tile_lr": 4,
        "he_scale": 2,
        "test_time_symmetries": 1,
        "mean": {"base_channels": 8, "gene_dim": 4, **_TINY_NET},
        "residual": {"base_channels": 8, "gene_dim": 4, **_TINY_NET},
        "components": {"use_modulation": True, "use_cross_attention": True, "use_gene_graph": True,
                       "patch_dim": 16, "graph_layers": 1},  # fmt: skip
        "training": {"steps": 20, "residual_steps": 10, "max_time_s": 60.0, "val_every": 5, "patience": 3,
                     "batch_size": 4, "learning_rate": 2e-3, "ema_decay": 0.9},  # fmt: skip
        "sampler": {"num_inference_steps": 4, "n_samples": 4},
        "calibration": {"step_candidates": (2, 4)},
    },
    "paper": {
        "tile_lr": 26,
        "he_scale": 20,
        "mean": {"base_channels": 128, "gene_dim": 32, **_PAPER_NET},
        "residual": {"base_channels": 64, "gene_dim": 8, **_PAPER_NET},
        "components": {"use_modulation": True, "use_cross_attention": True, "use_gene_graph": True,
                       "graph_conv": "gcn", "cross_attention_level": 2, "patch_dim": 256},  # fmt: skip
        "training": {"steps": 100_000, "residual_steps": 50_000, "max_time_s": 24 * 3600.0, "val_every": 500,
                     "patience": 10, "batch_size": 4, "learning_rate": 1e-4, "ema_decay": 0.9999},  # fmt: skip
        "sampler": {"num_inference_steps": 32, "n_samples": 8},
        "calibration": {"step_candidates": (16, 32, 64)},
    },
}
