"""``sd.pl.superresolution``: H&E | LR | HR mean | uncertainty | truth, one row per gene."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._spatial import image_levels, resample_image

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod
    from matplotlib.figure import Figure


def _array(element) -> np.ndarray:
    level = image_levels(element)[0]
    data = level.data
    return np.asarray(data.compute() if hasattr(data, "compute") else data)


def spread_label(prov: dict) -> str:
    """What the ``_std`` image of a result is, from its provenance."""
    sampler = str(prov.get("sampler", ""))
    if "held-out spots" in sampler:
        return "predictive sd (held-out spots)"
    if sampler.startswith("edm"):
        return "posterior sd (calibrated samples)"
    return "sd"


def superresolution(
    sdata: sd_mod.SpatialData,
    genes: str | Sequence[str] | None = None,
    *,
    key: str = "stdiff",
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
    sdata
        SpatialData after :func:`stdiff.tl.superresolve`.
    genes
        Gene(s) to show (default: the first four of the result).
    key
        ``key_added`` used in :func:`~stdiff.tl.superresolve`.
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
    gene_symbols
        A column of the source table's ``var`` that ``genes`` are given in and that names the rows
        (e.g. ``"symbol"`` when the result's channels are Ensembl ids; scanpy's convention).

    Returns
    -------
    The matplotlib :class:`~matplotlib.figure.Figure`.
    """
    import matplotlib.pyplot as plt

    from ..tl import section_of

    prov = (sdata.attrs or {}).get("stdiff", {}).get(key)
    if key not in sdata.images or prov is None:
        raise KeyError(f"No super-resolution result {key!r}; run sd.tl.superresolve(sdata, key_added={key!r}).")
    all_genes = list(prov["genes"])
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
    section = section_of(sdata, key)
    gi = [all_genes.index(g) for g in genes]
    mean = _array(sdata.images[key])[gi]
    std_key = f"{key}_std"
    std = _array(sdata.images[std_key])[gi] if std_key in sdata.images else None
    truth = section.hr[gi] if section.hr is not None else None
    if show_truth is None:
        show_truth = truth is not None
    f = section.factor
    if section.spots is not None:  # the spots as measured: counts per HR pixel on each footprint
        fp = section.footprints()
        density = section.spots.counts[gi] / np.maximum(fp.area_px, 1e-12)[None]
        on_spot = fp.coverage() >= 0.5
        _, owner = fp.nearest()
        lr = np.where(on_spot[None], density[:, owner], np.nan)
        g = section.spots.geometry
        lr_label = f"spots ({g.diameter_um:.3g} µm, {g.pitch_um:.3g} µm apart)"
    else:
        lr = np.kron(section.lr[gi] / f**2, np.ones((1, f, f), dtype=np.float32))
        lr = np.where(np.kron(section.mask_lr, np.ones((f, f), bool))[None], lr, np.nan)
        lr_label = f"LR ({section.lr_um:g} µm)"
    H, W = mean.shape[-2:]
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
    he_rgb = np.moveaxis(he[:3], 0, -1) if he.shape[0] >= 3 else he[0]

    img_label = "H&E" if he.shape[0] == 3 else f"image ({section.image_key})"
    sd_label = spread_label(prov)
    columns = [img_label, lr_label, f"stdiff mean ({section.hr_um:g} µm)"] + ([sd_label] if std is not None else [])
    if show_truth and truth is not None:
        columns.append("truth")
    tf = np.log1p if log1p else (lambda a: a)
    fig, axes = plt.subplots(
        len(genes),
        len(columns),
        figsize=(panel_size * len(columns), panel_size * len(genes)),
        squeeze=False,
        constrained_layout=True,
    )
    for row, g in enumerate(genes):
        panels = [tf(lr[row]), tf(mean[row])]
        if "truth" in columns:
            panels.append(tf(truth[row]))
        finite = np.concatenate([p[np.isfinite(p)].ravel() for p in panels])
        vmax = float(np.quantile(finite, 0.995)) if finite.size else 1.0
        vmax = vmax if vmax > 0 else 1.0
        for col, name in enumerate(columns):
            ax = axes[row, col]
            if col == 0:
                ax.imshow(he_rgb, extent=extent, cmap=None if he_rgb.ndim == 3 else "gray")
            elif name == lr_label:
                im = ax.imshow(panels[0], extent=extent, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            elif name.startswith("stdiff"):
                im = ax.imshow(panels[1], extent=extent, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            elif name == "truth":
                im = ax.imshow(panels[2], extent=extent, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            else:
                s = tf(std[row]) if log1p else std[row]
                ims = ax.imshow(s, extent=extent, cmap="viridis", vmin=0, interpolation="nearest")
                fig.colorbar(ims, ax=ax, shrink=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(label.get(g, g), fontsize=10)
        fig.colorbar(
            im,
            ax=[axes[row, c] for c in range(1, len(columns)) if columns[c] != sd_label],
            shrink=0.7,
            label=("log1p " if log1p else "") + "counts / HR px",
        )
    fig.suptitle(f"stdiff super-resolution ({key!r}, ×{f}, {section.coordinate_system!r}, µm)", fontsize=10)
    if save is not None:
        fig.savefig(save, dpi=dpi)
    return fig
