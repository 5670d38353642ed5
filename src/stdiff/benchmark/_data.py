"""Benchmark data: any SpatialData (``--input``) or a built-in preset, rasterised, split, genes chosen.

Every dataset is described by one :class:`DataSpec` (sources + rasterisation + gene rule + split);
the built-in datasets ``synthetic``, ``her2st`` and ``merfish`` are just :func:`preset` specs, so
``--input section.zarr`` with the same settings goes through exactly the same code and gives the
same numbers. :func:`prepare` turns a spec into a :class:`~stdiff.benchmark._splits.Split` per
factor: rasterise every source with its whole gene panel, split, choose genes on the *training*
part only, subset.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import logger
from ..pp import Section
from ._splits import Split, SplitSpec, make_split

PRESETS: tuple[str, ...] = ("synthetic", "her2st", "merfish")
GENE_RULES: tuple[str, ...] = ("variance", "hvg", "panel")


@dataclass
class DataSpec:
    """One benchmark dataset: where the sections come from and how to rasterise, split and subset them.

    ``sources`` maps section names to loaders returning a :class:`spatialdata.SpatialData`. Exactly
    one of ``lr_um`` (fixed LR pixel) and ``hr_um`` (fixed HR pixel; ``lr_um = hr_um · factor``) is
    set. ``genes`` is a number (top-N by ``gene_rule``) or a list of names; ``gene_rule`` is
    ``"variance"`` (variance of the normalised training HR bins), ``"hvg"`` (scanpy
    ``highly_variable_genes``, seurat flavour, training tissue pixels as cells, section as batch) or
    ``"panel"`` (the whole panel).
    """

    name: str
    sources: dict[str, Callable[[], Any]]
    split: SplitSpec
    factors: list[int]
    genes: int | list[str] | None = None
    gene_rule: str = "variance"
    lr_um: float | None = None
    hr_um: float | None = None
    he_um: float | None = None
    image_key: str | None = None
    counts_key: str | None = None
    table_key: str | None = None
    coordinate_system: str | None = None
    spots_as: str = "lr"
    gene_symbols: str | None = None
    platform: str = "square"
    info: dict[str, Any] = field(default_factory=dict)

    def with_platform(self, platform: str) -> DataSpec:
        """The spec measured by ``platform``: for spots, the platform's grid (HR pixel, one pitch per LR pixel).

        Only datasets with HR truth can be measured by a simulated platform; spots as HR truth
        (``--spots-as hr``, her2st) are real spots already.
        """
        from ..spots import check_platform_name, platform_grid

        check_platform_name(platform)
        if platform == "square":
            return replace(self, platform="square")
        if self.spots_as == "hr" or self.table_key is not None:
            raise ValueError(f"--platform {platform} needs HR truth (transcripts or a gene image); {self.name!r} "
                             "is measured spots already (use --platform square).")  # fmt: skip
        hr_um, factor = platform_grid(platform)
        return replace(self, platform=platform, lr_um=hr_um * factor, hr_um=None, factors=[factor])

    def lr_um_for(self, factor: int) -> float:
        """LR pixel size (µm) at ``factor``."""
        return float(self.lr_um) if self.lr_um is not None else float(self.hr_um) * int(factor)


def parse_genes(value: str | int | None) -> int | list[str] | None:
    """``--genes``: a number (top-N) or a comma-separated list of names."""
    if value is None or isinstance(value, int):
        return value
    value = str(value).strip()
    if value.isdigit():
        return int(value)
    return [g.strip() for g in value.split(",") if g.strip()]


def _zarr_loader(path: str) -> Callable[[], Any]:
    def load():
        import spatialdata

        return spatialdata.read_zarr(path)

    return load


def section_name(path: str | os.PathLike) -> str:
    """The section name of an ``--input`` path: its file name without ``.zarr``."""
    name = Path(str(path).rstrip("/")).name
    return name[: -len(".zarr")] if name.endswith(".zarr") else name


def input_spec(
    inputs: Sequence[str],
    *,
    split: SplitSpec,
    factors: Sequence[int],
    lr_um: float,
    he_um: float,
    genes: int | list[str] | None,
    gene_rule: str = "variance",
    **reading: Any,
) -> DataSpec:
    """A :class:`DataSpec` for SpatialData zarr stores given on the command line.

    ``reading`` are the rasterisation options of :class:`DataSpec` (``image_key``, ``counts_key``,
    ``table_key``, ``coordinate_system``, ``spots_as``, ``gene_symbols``).
    """
    sources = {}
    for p in inputs:
        n = section_name(p)
        if n in sources:
            raise ValueError(f"Two inputs are named {n!r}; rename one of the .zarr stores.")
        sources[n] = _zarr_loader(str(p))
    if not split.axis:
        split = replace(split, train=tuple(section_name(t) for t in split.train),
                        test=tuple(section_name(t) for t in split.test))  # fmt: skip
    return DataSpec(
        name="input", sources=sources, split=split, factors=[int(f) for f in factors], genes=genes,
        gene_rule=gene_rule, lr_um=float(lr_um), he_um=float(he_um), info={"inputs": [str(p) for p in inputs]},
        **reading,
    )  # fmt: skip


def preset(
    name: str,
    settings: dict[str, Any],
    *,
    factors: Sequence[int] | None = None,
    genes: int | list[str] | None = None,
    train: Sequence[str] | None = None,
    test: Sequence[str] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> DataSpec:
    """The built-in dataset ``name`` as a :class:`DataSpec` (``settings``: the profile's dataset keys)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown dataset {name!r}; use one of {list(PRESETS)} or --input.")
    factors = [int(f) for f in (factors or settings["factors"])]
    genes = genes if genes is not None else int(settings["genes"])
    if name != "her2st" and (train or test):
        raise ValueError("--train/--test name her2st sections or --input stores; synthetic and merfish are split "
                         "by region (use --split).")  # fmt: skip
    if name == "synthetic":
        from ..datasets import synthetic_tissue

        size = float(settings["size_um"])
        n_genes = genes if isinstance(genes, int) else len(genes)
        kw = {"he_um": float(settings["synthetic_he_um"])} if "synthetic_he_um" in settings else {}

        def load():
            return synthetic_tissue(size_um=size, n_genes=int(n_genes), seed=0, **kw)

        return DataSpec(
            name="synthetic", sources={"synthetic": load}, split=SplitSpec(axis="x", fraction=2 / 3),
            factors=factors, genes=None if isinstance(genes, int) else genes, gene_rule="panel", lr_um=100.0,
            he_um=float(settings["he_um"]), image_key="he", counts_key="hr_counts",
            info={"tissue_um": size, "synthetic_seed": 0, "overrides": settings.get("overrides", {})},
        )  # fmt: skip
    if name == "merfish":
        from ..datasets import merfish_mouse_brain_mini

        return DataSpec(
            name="merfish", sources={"merfish": lambda: merfish_mouse_brain_mini(data_dir=data_dir)},
            split=SplitSpec(axis="x", fraction=0.5), factors=factors, genes=genes, gene_rule="variance",
            hr_um=10.0, he_um=float(settings["he_um"]), image_key="dapi", counts_key="transcripts",
            info={"overrides": settings.get("overrides", {})},
        )  # fmt: skip
    from ..datasets import her2st

    train = list(train or ("B4", "C2", "C3", "C4"))
    test = list(test or ("C5",))
    if data_dir is None:
        from .._utils import data_dir as _data_dir

        base = _data_dir()
        if base is not None and (base / "her2st_ST_breast_HE").is_dir():
            data_dir = base / "her2st_ST_breast_HE"
    sources = {n: (lambda n=n: her2st(n, data_dir=data_dir)) for n in dict.fromkeys([*train, *test])}
    return DataSpec(
        name="her2st", sources=sources, split=SplitSpec.parse(train=train, test=test), factors=factors, genes=genes,
        gene_rule="hvg", hr_um=200.0, he_um=float(settings["he_um"]), table_key="table", spots_as="hr",
        info={"overrides": settings.get("overrides", {})},
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# genes
# ----------------------------------------------------------------------------------------------


def subset_genes(section: Section, genes: Sequence[str]) -> Section:
    """The section restricted (and reordered) to ``genes``."""
    idx = [section.genes.index(g) for g in genes]
    spots = None if section.spots is None else section.spots.genes_subset(idx)
    return replace(section, genes=list(genes), lr=section.lr[idx], hr=None if section.hr is None else section.hr[idx],
                   spots=spots)  # fmt: skip


def top_variance_genes(train: Sequence[Section], n: int) -> list[str]:
    """Top-``n`` genes by variance of the normalised training HR bins (``log1p(counts / gene mean)``)."""
    from ..pp import fit_normalizer

    norm = fit_normalizer(list(train))
    z = np.concatenate([norm.transform(s.hr)[:, s.truth_mask] for s in train], axis=1)
    var = z.var(axis=1)
    order = np.argsort(-var, kind="stable")[: int(n)]
    return [train[0].genes[i] for i in sorted(order, key=lambda i: -var[i])]


def hvg_genes(train: Sequence[Section], n: int) -> list[str]:
    """Top-``n`` highly variable genes of the training tissue pixels (scanpy, seurat flavour).

    Pixels are cells, the section is the batch; genes detected in < 10% of the pixels are dropped;
    counts are library-size normalised and log-transformed; ranked by the number of batches a gene is
    variable in, then by normalised dispersion.
    """
    import anndata as ad
    import scanpy as sc

    parts = []
    for s in train:
        x = s.hr[:, s.truth_mask].T.astype(np.float32)
        keep = x.sum(1) > 0
        a = ad.AnnData(x[keep])
        a.var_names = list(s.genes)
        a.obs_names = [f"{s.name}_{i}" for i in range(a.n_obs)]
        a.obs["section"] = s.name
        parts.append(a)
    adata = ad.concat(parts)
    sc.pp.filter_genes(adata, min_cells=int(math.ceil(0.1 * adata.n_obs)))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    n_top = min(int(n), adata.n_vars)
    batch = "section" if len(train) > 1 else None
    sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=n_top, batch_key=batch)
    var = adata.var
    keys = ["highly_variable_nbatches", "dispersions_norm"] if batch else ["dispersions_norm"]
    order = var.sort_values(keys, ascending=False, kind="mergesort").index
    return [g for g in order if var.loc[g, "highly_variable"]][:n_top]


def choose_genes(spec: DataSpec, train: Sequence[Section]) -> tuple[list[str], str]:
    """The benchmark's genes from the training sections only: ``(genes, how)``."""
    panel = list(train[0].genes)
    if isinstance(spec.genes, list):
        missing = [g for g in spec.genes if g not in panel]
        if missing:
            raise ValueError(f"Genes {missing[:5]} are not in every section's panel ({len(panel)} genes).")
        return list(spec.genes), "given on the command line"
    if spec.gene_rule == "panel" or spec.genes is None or int(spec.genes) >= len(panel):
        return panel, "the whole panel"
    if spec.gene_rule == "hvg":
        return hvg_genes(train, int(spec.genes)), (
            f"top {spec.genes} scanpy highly_variable_genes (seurat) of the training tissue pixels, section as batch"
        )
    return top_variance_genes(train, int(spec.genes)), (
        f"top {spec.genes} by variance of log1p(counts / gene mean) over the training tissue bins"
    )


# ----------------------------------------------------------------------------------------------
# rasterise + split
# ----------------------------------------------------------------------------------------------


def load_sections(spec: DataSpec, factor: int, cache: dict[str, Any] | None = None) -> dict[str, Section]:
    """Rasterise every source at ``factor`` with its whole gene panel (genes common to all sections)."""
    from ..pp import rasterize

    lr_um = spec.lr_um_for(factor)
    hr_um = lr_um / factor
    he_scale = max(1, int(round(hr_um / float(spec.he_um))))
    cache = {} if cache is None else cache
    out = {}
    for name, load in spec.sources.items():
        if name not in cache:
            cache[name] = load()
        try:
            out[name] = rasterize(
                cache[name], image_key=spec.image_key, counts_key=spec.counts_key, table_key=spec.table_key,
                coordinate_system=spec.coordinate_system, lr_um=lr_um, factor=int(factor), he_scale=he_scale,
                spots_as=spec.spots_as, gene_symbols=spec.gene_symbols, name=name,
            )  # fmt: skip
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"Cannot rasterise section {name!r}: {e} (command line: --image-key, --counts-key, --table-key, "
                "--coordinate-system, --lr-um, --factor, --he-um)"
            ) from e
        if out[name].hr is None:
            raise ValueError(
                f"Section {name!r} has no HR truth at factor {factor}: benchmarks need references (transcripts, "
                "an HR gene image) or spots rasterised with --spots-as hr."
            )
    common = list(next(iter(out.values())).genes)
    for s in out.values():
        have = set(s.genes)
        common = [g for g in common if g in have]
    return {n: (s if s.genes == common else subset_genes(s, common)) for n, s in out.items()}


def prepare(spec: DataSpec, factor: int, *, tile_lr: int, cache: dict[str, Any] | None = None) -> Split:
    """Rasterise, split and choose genes (on the training part) for one factor."""
    import torch

    n_threads = torch.get_num_threads()
    sections = load_sections(spec, factor, cache)
    split = make_split(sections, spec.split, tile_lr=tile_lr)
    genes, how = choose_genes(spec, split.train)
    # scanpy's numba layer may reset torch's OpenMP thread count; restore it
    if torch.get_num_threads() != n_threads:
        torch.set_num_threads(n_threads)
    first = split.train[0]
    split.train = [subset_genes(s, genes) for s in split.train]
    split.test = [subset_genes(s, genes) for s in split.test]
    split.info.update(spec.info)
    split.info.update({
        "dataset": spec.name, "factor": int(factor), "lr_um": first.lr_um, "hr_um": first.hr_um,
        "he_um": first.he_um, "he_scale": first.he_scale, "genes": genes, "gene_selection": how,
        "sections": list(sections), "train_sections": [s.name for s in split.train], "platform": spec.platform,
        "test_sections": [s.name for s in split.test],
    })  # fmt: skip
    logger.info("%s ×%d: %d genes, train %s, test %s", spec.name, factor, len(genes),
                split.info["train_sections"], split.info["test_sections"])  # fmt: skip
    return split
