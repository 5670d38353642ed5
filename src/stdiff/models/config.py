"""Model configuration and presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

_CURRICULUM = ((0.0, 0.1), (0.2, 0.3), (0.3, 0.5), (0.4, 0.7), (0.5, 0.9), (0.6, 1.0))


@dataclass(frozen=True)
class DiffSTConfig:
    """Sizes and switches of the Diff-ST model, its tiling geometry, training and sampling.

    Use :meth:`preset` for ``"tiny"`` (tests; trains in seconds on a CPU), ``"cpu"`` (the demo;
    minutes on 2 cores) and ``"paper"`` (the paper's scale, for GPUs).

    Attributes
    ----------
    tile_lr
        Tile size in LR pixels; HR tiles are ``tile_lr · factor`` pixels.
    he_scale
        Histology pixels per HR pixel (20 in the paper: 10 µm HR, 0.5 µm H&E).
    base_channels, channel_mults, num_res_blocks, attention_levels, num_heads
        U-Net backbone of the stage-A mean network: channels per level, residual blocks per level,
        levels with self-attention.
    residual_base_channels, residual_gene_dim
        Base channels and per-gene feature size of the stage-B residual denoiser (same layout,
        usually narrower: its gene-graph head, at HR resolution and evaluated at every sampler step
        for every sample, is most of the sampling time when it is as wide as stage A's).
    use_modulation, modulation_kernel, disentangle_weight
        Cross-modal adaptive modulation with the disentangling network as the fusion of the
        expression and histology streams at every level: on/off (off: concatenate and project), the
        neighbourhood of the convolutions predicting the modulation, and the weight of the
        disentangling loss. Off by default (``"cpu"``): retrained without it, no dataset lost PCC
        (3 seeds, :doc:`/model`), and it trains faster without; on in ``"tiny"`` and ``"paper"``.
    use_cross_attention, cross_attention_level, patch_um, patch_dim, curriculum
        Dynamic cross-attention: on/off, the pyramid level of the queries (1: HR/2), the physical
        side of a cell-level patch in µm, the patch embedding width, and the curriculum as
        ``(progress, admitted fraction)`` steps. Off by default (``"cpu"``): knocked out at
        inference or retrained without, it changed no dataset's PCC by more than 0.001 (3 seeds,
        :doc:`/model`); on in ``"tiny"`` (so the tests exercise it) and ``"paper"`` (the paper's
        architecture).
    use_gene_graph, gene_dim, graph_layers, graph_threshold, graph_top_k
        Co-expression gene graph: on/off (off: the same per-gene head with genes independent),
        per-gene feature size, graph-convolution layers, minimum co-expression (Pearson r) for an
        edge, and most neighbours per gene. Off by default (``"cpu"``): retrained without it, no
        dataset lost PCC (3 seeds, :doc:`/model`); on in ``"tiny"`` and ``"paper"``.
    base, base_max_time_s
        What stage A corrects: ``"nearest"``, the LR map spread evenly over the tissue pixels of each
        block (:func:`stdiff.pp.lr_per_tissue_pixel`), or ``"aggregation"``, each block's counts
        distributed by histology (:class:`~stdiff.models.AggregationConsistency`, fitted once on the
        training sections' LR maps and H&E, stored with the model; mass is conserved either way);
        and the time cap of that fit in seconds.
    use_histology_features
        Feed the hand-made histology features (stain optical densities, nuclei, texture at cell and
        tissue scale; :func:`stdiff.pp.histology_features`) as conditioning channels.
    test_time_symmetries
        Stage A's mean averaged over this many orientations of every tile (1: none; 8, the default:
        all rotations by 90° and their mirror images, which training augmentation shows the
        network). Chosen on validation data (3 seeds: synthetic +0.002 PCC, her2st +0.000); it
        costs 8 stage-A passes at inference.
    sigma_min, sigma_max, rho, p_mean, p_std, solver, num_inference_steps, step_candidates, n_samples
        Stage B (EDM): sampling schedule, log-normal training noise levels, the ODE solver
        (``"heun"`` or ``"euler"``), its steps, the candidate step counts compared by CRPS on the
        validation data after training, and posterior samples per section.
    calibrate
        Fit a per-gene spread scale on the validation data (stored with the model).
    steps, residual_steps, max_time_s, val_every, patience
        Training caps of stage A and stage B (optimiser steps; seconds per stage) and early stopping:
        validate every ``val_every`` steps, stop after ``patience`` validations without improvement,
        keep the best weights.
    batch_size, learning_rate, weight_decay, ema_decay, min_tissue, augment, stain_augment
        AdamW settings, EMA decay, minimum tissue fraction of a training tile, random flips/rotations,
        and stain augmentation (optical-density jitter per stain channel, brightness, contrast).
    """

    # geometry
    tile_lr: int = 4
    he_scale: int = 4
    # backbone
    base_channels: int = 24
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)
    num_heads: int = 4
    residual_base_channels: int = 16
    residual_gene_dim: int = 4
    # cross-modal adaptive modulation + disentangling (the fusion at every level)
    use_modulation: bool = False
    modulation_kernel: int = 3
    disentangle_weight: float = 0.01
    # dynamic cross-attention
    use_cross_attention: bool = False
    cross_attention_level: int = 1
    patch_um: float = 30.0
    patch_dim: int = 48
    curriculum: tuple[tuple[float, float], ...] = _CURRICULUM
    # gene graph
    use_gene_graph: bool = False
    gene_dim: int = 16
    graph_layers: int = 2
    graph_threshold: float = 0.2
    graph_top_k: int = 8
    # histology feature channels (stdiff.pp.histology_features), next to the learned CNN
    use_histology_features: bool = True
    # the base stage A corrects: "nearest" (LR per tissue pixel) or "aggregation" (LR counts
    # distributed by histology within each block by an AggregationConsistency model fitted once on
    # the training sections' LR maps and stored with the model; base_max_time_s caps that fit)
    base: str = "aggregation"
    base_max_time_s: float = 60.0
    # stage A at inference: average over this many orientations of every tile (1, 2, 4 or 8)
    test_time_symmetries: int = 8
    # stage B: EDM residual diffusion
    sigma_min: float = 0.002
    sigma_max: float = 10.0
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2
    solver: str = "heun"
    num_inference_steps: int = 8
    step_candidates: tuple[int, ...] = (4, 8)
    n_samples: int = 8
    calibrate: bool = True
    # training (both stages): early stopping on validation windows, with a step and time cap
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
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.base not in ("nearest", "aggregation"):
            raise ValueError(f"config.base must be 'nearest' or 'aggregation', got {self.base!r}.")
        if self.test_time_symmetries not in (1, 2, 4, 8):
            raise ValueError(f"config.test_time_symmetries must be 1, 2, 4 or 8, got {self.test_time_symmetries!r}.")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DiffSTConfig:
        """A named preset (``"tiny"``, ``"cpu"``, ``"paper"``), with optional overrides."""
        presets = {
            "tiny": dict(
                tile_lr=4,
                he_scale=2,
                use_modulation=True,
                use_cross_attention=True,
                use_gene_graph=True,
                base_channels=8,
                residual_base_channels=8,
                channel_mults=(1, 2),
                attention_levels=(1,),
                num_heads=2,
                patch_dim=16,
                gene_dim=4,
                graph_layers=1,
                steps=20,
                residual_steps=10,
                max_time_s=60.0,
                val_every=5,
                patience=3,
                batch_size=4,
                learning_rate=2e-3,
                ema_decay=0.9,
                num_inference_steps=4,
                step_candidates=(2, 4),
                test_time_symmetries=1,
                n_samples=4,
            ),
            "cpu": {},
            "paper": dict(
                tile_lr=26,
                he_scale=20,
                use_modulation=True,
                use_cross_attention=True,
                use_gene_graph=True,
                base_channels=128,
                residual_base_channels=64,
                channel_mults=(1, 1, 2, 2, 4),
                attention_levels=(2, 3, 4),
                num_heads=4,
                cross_attention_level=2,
                patch_dim=256,
                gene_dim=32,
                residual_gene_dim=8,
                steps=100_000,
                residual_steps=50_000,
                max_time_s=24 * 3600.0,
                val_every=500,
                patience=10,
                batch_size=4,
                learning_rate=1e-4,
                ema_decay=0.9999,
                num_inference_steps=32,
                step_candidates=(16, 32, 64),
                n_samples=8,
            ),
        }
        if name not in presets:
            raise ValueError(f"Unknown preset {name!r}; use one of {sorted(presets)}.")
        return replace(cls(), **{**presets[name], **overrides})

    def replace(self, **changes: Any) -> DiffSTConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python representation (JSON-able)."""
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_levels"] = list(self.attention_levels)
        d["step_candidates"] = list(self.step_candidates)
        d["curriculum"] = [list(c) for c in self.curriculum]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffSTConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"Unknown config fields {sorted(unknown)}; this checkpoint is from another version.")
        d = dict(d)
        # checkpoints from before residual_gene_dim existed built stage B with stage A's gene_dim
        d.setdefault("residual_gene_dim", d.get("gene_dim", cls.gene_dim))
        # checkpoints from before test-time symmetries predicted their mean in one orientation
        d.setdefault("test_time_symmetries", 1)
        for k in ("channel_mults", "attention_levels", "step_candidates"):
            if k in d:
                d[k] = tuple(d[k])
        if "curriculum" in d:
            d["curriculum"] = tuple(tuple(c) for c in d["curriculum"])
        return cls(**d)

    def admitted_fraction(self, progress: float) -> float:
        """Fraction of cell-level patches admitted at training ``progress`` ∈ [0, 1] (curriculum)."""
        frac = self.curriculum[0][1]
        for start, value in self.curriculum:
            if progress >= start:
                frac = value
        return float(frac)
