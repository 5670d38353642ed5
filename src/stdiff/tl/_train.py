"""``sd.tl.train``: fit a Diff-ST model on one or more SpatialData sections."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from .._docs import fill_doc
from .._utils import logger
from ..pp import Section, rasterize

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod

    from ..models import DiffST, DiffSTConfig


def _config(config: DiffSTConfig | str) -> DiffSTConfig:
    """``config`` as a :class:`~stdiff.models.DiffSTConfig`: the preset of that name, or the config itself."""
    from ..models import DiffSTConfig

    if isinstance(config, str):
        return DiffSTConfig.preset(config)
    if not isinstance(config, DiffSTConfig):
        raise TypeError(f"config must be a preset name ('tiny', 'cpu', 'paper') or a DiffSTConfig, not {type(config)}.")
    return config


def sections_for_training(
    data: sd_mod.SpatialData | Section | Sequence[sd_mod.SpatialData | Section],
    genes: Sequence[str] | None,
    *,
    factor: int,
    lr_um: float,
    he_scale: int,
    self_supervised: Literal["auto", True, False] = "auto",
    **rasterize_kwargs: Any,
) -> list[Section]:
    """Rasterise training data; sections without HR truth are coarsened for self-supervision."""
    items = list(data) if isinstance(data, list | tuple) else [data]
    sections = []
    for i, item in enumerate(items):
        if isinstance(item, Section):
            s = item
        else:
            s = rasterize(
                item,
                genes,
                lr_um=lr_um,
                factor=factor,
                he_scale=he_scale,
                name=f"section{i}",
                **rasterize_kwargs,
            )
        needs_coarsen = self_supervised is True or (self_supervised == "auto" and s.hr is None)
        if needs_coarsen:
            base = s
            if s.hr is not None:  # drop the truth: train on the LR map only
                base = replace(s, hr=None)
            logger.info("Section %s has no HR truth: self-supervised training on its LR map.", s.name)
            s = base.coarsen(factor)
        sections.append(s)
    for s in sections[1:]:
        if s.genes != sections[0].genes:
            raise ValueError("All training sections must carry the same genes; pass genes= explicitly.")
    return sections


@fill_doc
def train(
    data: sd_mod.SpatialData | Section | Sequence[sd_mod.SpatialData | Section],
    genes: Sequence[str] | None = None,
    *,
    factor: int | None = None,
    lr_um: float | None = None,
    platform: str = "square",
    n_lattices: int = 4,
    config: DiffSTConfig | str = "cpu",
    steps: int | None = None,
    image_key: str | None = None,
    counts_key: str | None = None,
    table_key: str | None = None,
    coordinate_system: str | None = None,
    spots_as: Literal["lr", "hr"] = "lr",
    layer: str | None = None,
    allow_non_integer: bool = False,
    gene_symbols: str | None = None,
    self_supervised: Literal["auto", True, False] = "auto",
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    validation: sd_mod.SpatialData | Section | Sequence[sd_mod.SpatialData | Section] | None = None,
    max_time_s: float | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> DiffST:
    """Train a Diff-ST super-resolution model on one or more sections.

    Each section is rasterised with :func:`stdiff.pp.rasterize` (HR truth from transcripts, an HR
    gene image, or spots with ``spots_as="hr"``). A section without HR truth (spots only) is used
    self-supervised: its LR map becomes the truth and the LR map aggregated ``factor×`` once more
    becomes the input (see :meth:`stdiff.pp.Section.coarsen`).

    Parameters
    ----------
    data
        A SpatialData, a :class:`~stdiff.pp.Section`, or a list of them (trained on jointly).
    genes
        Gene panel; default all genes of the first section's source.
    factor
        Super-resolution factor (HR pixel = ``lr_um / factor``; default 10).
    lr_um
        LR pixel size in µm (default 100; for a spot platform, its pitch).
    platform
        What the model will be applied to, simulated from the HR truth (train as you apply):
        ``"square"`` (default: gap-free square aggregates of the HR bins), ``"visium"`` (55 µm discs on
        a hexagonal 100 µm lattice; 10 µm HR pixels) or ``"st"`` (100 µm discs, square 200 µm lattice;
        20 µm HR pixels). Spots get the truth under their footprint, the gaps stay unmeasured, and
        each lattice has a random offset and rotation (:func:`stdiff.pp.simulate_platform`). The
        platform is stored with the model; :func:`~stdiff.tl.superresolve` refuses sections of another.
    n_lattices
        Lattices (random offset and rotation) simulated per training section for a spot platform.
    config
        A preset name (``"tiny"``, ``"cpu"``, ``"paper"``) or a :class:`~stdiff.models.DiffSTConfig`.
    steps
        Step cap of the mean network (stage A; default: the config's). Both stages stop early when
        the validation loss stops improving.
    $image_key
    $counts_key
    $table_key
    $coordinate_system
    spots_as
        Whether spots map to the LR grid (a section without truth) or the HR grid (the spots are the
        truth); see :func:`stdiff.pp.rasterize`.
    $layer
    $allow_non_integer
    $gene_symbols
    self_supervised
        ``"auto"``: only for sections without truth; ``True``: always (ignore any truth).
    $device
    $seed
    $progress
    validation
        Sections (rasterised like ``data``) for early stopping, the sampler's step count and the
        spread calibration; default: carved from ``data`` (the last section when there are ≥ 3,
        else the right fifth of each; see :func:`stdiff.models.carve_validation`).
    max_time_s
        Time cap per training stage in seconds (default: the config's).
    checkpoint
        File the trained model is written to (atomically).

    Returns
    -------
    The trained :class:`~stdiff.models.DiffST` (``.save(path)`` / ``DiffST.load(path)``).
    """
    from ..models import DiffST

    cfg = _config(config)
    factor, lr_um = _platform_grid(platform, factor, lr_um)
    reading = dict(
        factor=factor, lr_um=lr_um, he_scale=cfg.he_scale, self_supervised=self_supervised, image_key=image_key,
        counts_key=counts_key, table_key=table_key, coordinate_system=coordinate_system, spots_as=spots_as,
        layer=layer, allow_non_integer=allow_non_integer, gene_symbols=gene_symbols,
    )  # fmt: skip
    sections = sections_for_training(data, genes, **reading)
    val = None if validation is None else sections_for_training(validation, sections[0].genes, **reading)
    if platform != "square":
        sections, val = _simulate_lattices(sections, val, platform, n=n_lattices, seed=seed, tile_lr=cfg.tile_lr)
    model = DiffST.setup(sections, cfg, seed=seed, base_sections=val)
    model.train(
        sections, validation=val, steps=steps, max_time_s=max_time_s, device=device, seed=seed, progress=progress
    )
    if checkpoint is not None:
        model.save(checkpoint)
    return model


def _platform_grid(platform: str, factor: int | None, lr_um: float | None) -> tuple[int, float]:
    """``(factor, lr_um)``: the call's, else the spot platform's grid, else 10 and 100 µm."""
    from ..spots import check_platform_name, platform_grid

    check_platform_name(platform)
    if platform != "square" and factor is None and lr_um is None:
        hr_um, factor = platform_grid(platform)
        lr_um = hr_um * factor
    return (10 if factor is None else factor), (100.0 if lr_um is None else lr_um)


def _simulate_lattices(
    sections: list[Section], val: list[Section] | None, platform: str, *, n: int, seed: int, tile_lr: int
) -> tuple[list[Section], list[Section]]:
    """Training and validation sections measured by ``platform``'s spots on random lattices.

    ``n`` lattices per training section, one per validation section; without validation sections it
    is carved from the training ones first, so no lattice of the validation tissue is trained on.
    """
    from ..models import carve_validation
    from ..pp import simulate_platform

    if val is None:
        sections, val = carve_validation(sections, tile_lr)
    sections = [
        simulate_platform(s, platform, seed=seed * 7919 + 101 * i + k)
        for i, s in enumerate(sections)
        for k in range(int(n))
    ]
    val = [simulate_platform(s, platform, seed=seed * 7919 + 50_000 + i) for i, s in enumerate(val)]
    logger.info("Simulated %r spots: %d training lattices, %d validation sections.", platform, len(sections), len(val))
    return sections, val
