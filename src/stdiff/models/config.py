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
        U-Net backbone: channels per level, residual blocks per level, levels with self-attention.
    use_modulation, modulation_kernel, modulation_level, disentangle_weight
        Cross-modal adaptive modulation with the multi-modal disentangling network: on/off, the
        neighbourhood (kernel) of the per-location filters, the U-Net level it acts on, and the weight
        of the disentangling loss.
    use_cross_attention, patch_grid, patch_dim, curriculum
        Dynamic cross-attention: on/off, cell-level patches per side (``patch_grid²`` patches),
        patch feature size, and the curriculum as ``(progress, admitted fraction)`` steps.
    use_gene_graph, gene_dim, graph_layers, graph_threshold, graph_top_k
        Co-expression gene graph: on/off, per-gene feature size, graph-convolution layers, minimum
        co-expression (Pearson r) for an edge, and most neighbours per gene.
    num_train_timesteps, beta_schedule, prediction_type, min_snr_gamma
        Diffusion process (1000 steps; cosine schedule; v-prediction) and the Min-SNR-γ loss weighting
        (``None`` for the plain loss).
    steps, batch_size, learning_rate, weight_decay, ema_decay, min_tissue, augment
        Training: optimiser steps, batch size, AdamW settings, EMA decay, minimum tissue fraction of a
        training tile, random flips/rotations.
    sampler, num_inference_steps, n_samples, mean_estimator
        Default sampler (``"ddim"`` fast deterministic, or ``"ddpm"``), its steps, posterior samples per
        tile, and how the posterior mean is estimated from them (see :meth:`DiffST.predict_section`).
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
    # cross-modal adaptive modulation + disentangling
    use_modulation: bool = True
    modulation_kernel: int = 3
    modulation_level: int = 1
    disentangle_weight: float = 0.01
    # dynamic cross-attention
    use_cross_attention: bool = True
    patch_grid: int = 4
    patch_dim: int = 48
    curriculum: tuple[tuple[float, float], ...] = _CURRICULUM
    # gene graph
    use_gene_graph: bool = True
    gene_dim: int = 4
    graph_layers: int = 2
    graph_threshold: float = 0.2
    graph_top_k: int = 8
    # diffusion
    num_train_timesteps: int = 1000
    beta_schedule: str = "cosine"
    prediction_type: str = "v_prediction"
    min_snr_gamma: float | None = 5.0
    # training
    steps: int = 300
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    ema_decay: float = 0.995
    min_tissue: float = 0.25
    augment: bool = True
    # sampling
    sampler: str = "ddim"
    num_inference_steps: int = 5
    n_samples: int = 2
    mean_estimator: str = "rao_blackwell"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DiffSTConfig:
        """A named preset (``"tiny"``, ``"cpu"``, ``"paper"``), with optional overrides."""
        presets = {
            "tiny": dict(
                tile_lr=4,
                he_scale=2,
                base_channels=8,
                channel_mults=(1, 2),
                attention_levels=(1,),
                num_heads=2,
                patch_grid=4,
                patch_dim=16,
                gene_dim=4,
                graph_layers=1,
                steps=20,
                batch_size=4,
                learning_rate=2e-3,
                ema_decay=0.9,
                num_inference_steps=4,
                n_samples=2,
            ),
            "cpu": {},
            "paper": dict(
                tile_lr=26,
                he_scale=20,
                base_channels=128,
                channel_mults=(1, 1, 2, 2, 4),
                attention_levels=(2, 3, 4),
                num_heads=4,
                modulation_level=2,
                patch_grid=16,
                patch_dim=256,
                gene_dim=16,
                steps=100_000,
                batch_size=4,
                learning_rate=1e-4,
                ema_decay=0.9999,
                num_inference_steps=50,
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
        for k in ("channel_mults", "attention_levels"):
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
