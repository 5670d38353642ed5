"""``sd.pl.superresolution``: H&E | LR | HR mean | uncertainty | truth, one row per gene."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import Key
from .._docs import fill_doc
from .._spatial import finest_level, resample_image, result_provenance

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod
    from matplotlib.figure import Figure

    from ..pp import Section


def spread_label(prov: dict) -> str:
    """What the ``_std`` image of a result is, from its provenance."""
    sampler = str(prov.get(Key.prov.SAMPLER, ""))
    if "held-out spots" in sampler:
        return "predictive sd (held-out spots)"
    if sampler.startswith("edm"):
        return "posterior sd (calibrated samples)"
    return "sd"


@fill_doc
def superresolution(
    sdata: sd_mod.SpatialData,
    genes: str | Sequence[str] | None = None,
    *,
    key: str = Key.img.DEFAULT,
    show_truth: bool | None = None,
    log1p: bool = True,
    cmap: str = "magma",
    panel_size: float = 2.6,
    image_um: float | None = None,
    save: str | os.PathLike | None = None,
    dpi: int = 120,
    gene_symbols: str | None = None,
) -> Figure:
    """Plot super-resolution results: one row per gene, panels H&E | LR | HR mean | uncertainty | truth.

    All panels share the extent of the super-resolved grid in its coordinate system (µm); LR, HR and
    truth share one colour scale per gene (counts per HR pixel, ``log1p`` by default), so bright
    means the same in every panel. The measurement panel shows the spots as measured (each spot's
    counts per HR pixel on its footprint, the gaps blank) or the square LR map divided by
    ``factor²``. The spread panel says what its standard deviation is (calibrated posterior samples
    of a trained model, or the predictive sd calibrated on held-out spots of the default); it is
    absent when the result has none.

    Parameters
    ----------
    $sdata_result
    genes
        Gene(s) to show (default: the first four of the result).
    $key
    show_truth
        Add a truth column when the data holds HR truth (transcripts or gene image); default: when available.
    log1p
        Show ``log1p`` of counts.
    cmap
        Colour map of the expression panels.
    panel_size
        Size of one panel in inches.
    image_um
        Pixel size (µm) of the histology panel (default: a quarter of the HR pixel, at least 1 µm).
    save
        Write the figure to this path (e.g. ``.png``, ``.pdf``).
    dpi
        Resolution when saving.
    $result_gene_symbols

    Returns
    -------
    The matplotlib :class:`~matplotlib.figure.Figure`.
    """
    import matplotlib.pyplot as plt

    from ..tl import section_of

    prov = result_provenance(sdata, key)
    if key not in sdata.images:
        raise KeyError(f"No image {key!r} of the result; run sd.tl.superresolve(sdata, key_added={key!r}).")
    genes, label = _genes_to_show(sdata, key, prov[Key.prov.GENES], genes, gene_symbols)
    section = section_of(sdata, key)
    gi = [list(prov[Key.prov.GENES]).index(g) for g in genes]
    std_key = Key.img.std(key)
    maps = {"mean": finest_level(sdata.images[key])[gi]}
    maps["lr"], lr_label = _measured(section, gi)
    if std_key in sdata.images:
        maps["std"] = finest_level(sdata.images[std_key])[gi]
    if (show_truth is None or show_truth) and section.hr is not None:
        maps["truth"] = section.hr[gi]
    he, he_label, extent = _histology(sdata, section, maps["mean"].shape[-2:], image_um)
    columns = [
        ("he", he_label),
        ("lr", lr_label),
        ("mean", f"stdiff mean ({section.hr_um:g} µm)"),
        *([("std", spread_label(prov))] if "std" in maps else []),
        *([("truth", "truth")] if "truth" in maps else []),
    ]
    fig, axes = plt.subplots(
        len(genes),
        len(columns),
        figsize=(panel_size * len(columns), panel_size * len(genes)),
        squeeze=False,
        constrained_layout=True,
    )
    for row, g in enumerate(genes):
        row_maps = {k: v[row] for k, v in maps.items()}
        _draw_row(fig, axes[row], columns, row_maps, he, extent, cmap=cmap, log1p=log1p, titles=row == 0,
                  ylabel=label.get(g, g))  # fmt: skip
    fig.suptitle(f"stdiff super-resolution ({key!r}, ×{section.factor}, {section.coordinate_system!r}, µm)",
                 fontsize=10)  # fmt: skip
    if save is not None:
        fig.savefig(save, dpi=dpi)
    return fig


def _genes_to_show(
    sdata: sd_mod.SpatialData,
    key: str,
    result_genes: list[str],
    genes: str | Sequence[str] | None,
    gene_symbols: str | None,
) -> tuple[list[str], dict[str, str]]:
    """``(genes, label of each)``: the requested ones (by ``gene_symbols`` names too) or the first four."""
    all_genes = list(result_genes)
    label = {g: g for g in all_genes}
    if gene_symbols is not None:
        from ..tl import gene_names

        label = gene_names(sdata, key, gene_symbols)
    by_label = {v: k for k, v in label.items()}
    if genes is None:
        genes = all_genes[:4]
    genes = [genes] if isinstance(genes, str) else list(genes)
    genes = [by_label.get(g, g) for g in genes]
    missing = [g for g in genes if g not in all_genes]
    if missing:
        shown = [label[g] for g in all_genes[:10]]
        raise KeyError(f"Genes {missing} are not in result {key!r} (it has {shown}...).")
    return genes, label


def _measured(section: Section, gi: list[int]) -> tuple[np.ndarray, str]:
    """The measurement as counts per HR pixel (NaN where nothing was measured) and its column title.

    Spots as measured: each spot's counts per HR pixel on its footprint, the gaps blank; a square LR
    map divided by ``factor²`` on the tissue LR pixels.
    """
    f = section.factor
    if section.spots is not None:
        fp = section.footprints()
        density = section.spots.counts[gi] / np.maximum(fp.area_px, 1e-12)[None]
        on_spot = fp.coverage() >= 0.5
        _, owner = fp.nearest()
        g = section.spots.geometry
        lr_label = f"spots ({g.diameter_um:.3g} µm, {g.pitch_um:.3g} µm apart)"
        return np.where(on_spot[None], density[:, owner], np.nan), lr_label
    lr = np.kron(section.lr[gi] / f**2, np.ones((1, f, f), dtype=np.float32))
    lr = np.where(np.kron(section.mask_lr, np.ones((f, f), bool))[None], lr, np.nan)
    return lr, f"LR ({section.lr_um:g} µm)"


def _histology(
    sdata: sd_mod.SpatialData, section: Section, shape_hr: tuple[int, int], image_um: float | None
) -> tuple[np.ndarray, str, tuple[float, float, float, float]]:
    """The histology under the result (``(y, x, 3)`` RGB or ``(y, x)``), its title and the result's extent in µm."""
    H, W = shape_hr
    x0, y0 = section.origin
    extent = (x0, x0 + W * section.hr_um, y0 + H * section.hr_um, y0)
    he_um = image_um or max(section.hr_um / 4, 1.0)
    he = resample_image(
        sdata[section.image_key],
        section.coordinate_system,
        origin=section.origin,
        pixel_um=he_um,
        shape=(int(round(H * section.hr_um / he_um)), int(round(W * section.hr_um / he_um))),
    )
    label = "H&E" if he.shape[0] == 3 else f"image ({section.image_key})"
    return (np.moveaxis(he[:3], 0, -1) if he.shape[0] >= 3 else he[0]), label, extent


def _draw_row(
    fig: Figure,
    axes: Any,
    columns: list[tuple[str, str]],
    maps: dict[str, np.ndarray],
    he: np.ndarray,
    extent: tuple[float, float, float, float],
    *,
    cmap: str,
    log1p: bool,
    titles: bool,
    ylabel: str,
) -> None:
    """One gene's panels (column ``titles`` on the first row); the expression panels share one colour scale."""
    tf = np.log1p if log1p else (lambda a: a)
    shown = {k: tf(maps[k]) for k in ("lr", "mean", "truth") if k in maps}
    finite = np.concatenate([p[np.isfinite(p)].ravel() for p in shown.values()])
    vmax = float(np.quantile(finite, 0.995)) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    for ax, (kind, title) in zip(axes, columns, strict=True):
        if kind == "he":
            ax.imshow(he, extent=extent, cmap=None if he.ndim == 3 else "gray")
        elif kind == "std":  # its own scale
            ims = ax.imshow(tf(maps["std"]), extent=extent, cmap="viridis", vmin=0, interpolation="nearest")
            fig.colorbar(ims, ax=ax, shrink=0.7)
        else:
            im = ax.imshow(shown[kind], extent=extent, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(title, fontsize=9)
        if kind == "he":
            ax.set_ylabel(ylabel, fontsize=10)
    fig.colorbar(
        im,
        ax=[ax for ax, (kind, _) in zip(axes, columns, strict=True) if kind not in ("he", "std")],
        shrink=0.7,
        label=("log1p " if log1p else "") + "counts / HR px",
    )
