"""Synthetic breast-carcinoma-like tissue with a known high-resolution expression truth.

The simulator builds, in micrometres and fully vectorised:

1. **Tissue domains** from smooth random fields: tumour nests, collagenous stroma, lymphoid
   aggregates, adipose (fat) lobules and empty background at an irregular tissue edge; tumour nests
   contain small glandular lumens and the stroma contains blood vessels.
2. **Cells** placed by jittered-hexagonal sampling relaxed by short-range repulsion, with
   domain-specific spacing and cell-type mixing (tumour nests with immune infiltrate, B-cell follicle
   centres in lymphoid aggregates, endothelial cells lining vessels, septal cells between adipocytes).
3. **Expression** from cell-type programs (markers) plus co-expressed gene modules whose per-cell
   latent state is driven partly by visible context (distance into a nest, proximity to lymphoid
   aggregates or tumour) and partly by *hidden* smooth spatial fields that are not rendered into the
   histology (HER2-amplified subclones, oestrogen-receptor programme, proliferation, interferon...),
   with per-cell log-normal noise.  Transcripts are drawn by Poisson sampling per cell and gene and
   scattered over the cell footprint; binning them gives the high-resolution count maps.
4. **An H&E image** rendered with a Beer-Lambert stain model (hematoxylin + eosin optical densities):
   type-specific nuclei (large pleomorphic vesicular tumour nuclei, small dark round lymphocytes,
   spindle fibroblasts aligned with the collagen fibres, flat endothelial nuclei), cytoplasm, wavy
   collagen fibres, adipocyte vacuoles with thin membranes, red blood cells in vessels, stain
   variation, blur and pixel noise.

The steps live in ``_synthetic_layout`` (1: vocabulary, random fields, domains), ``_synthetic_cells``
(2: cell placement), ``_synthetic_expression`` (3: expression and transcripts) and ``_synthetic_he``
(4: H&E rendering); this module holds the entry point and the SpatialData assembly.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from stdiff._utils import logger

from ._synthetic_cells import _place_cells
from ._synthetic_expression import (
    _MODULE_DRIVERS,
    _MODULES,
    _expression,
    _gene_programs,
    _module_states,
    _sample_transcripts,
)
from ._synthetic_he import _render_he
from ._synthetic_layout import CELL_TYPES, DOMAINS, _Layout

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

__all__ = ["synthetic_tissue", "CELL_TYPES", "DOMAINS"]


# ----------------------------------------------------------------------------------------------------
# main entry point
# ----------------------------------------------------------------------------------------------------
def synthetic_tissue(
    *,
    size_um: float | tuple[float, float] = 2000.0,
    n_genes: int = 50,
    seed: int = 0,
    he_um: float = 1.0,
    bin_um: float = 5.0,
    depth: float = 150.0,
    transcripts: bool = False,
    coordinate_system: str = "global",
) -> SpatialData:
    """Simulate a breast-carcinoma-like tissue section with H&E and known high-resolution expression.

    Parameters
    ----------
    size_um
        Size of the section in µm, a number (square) or ``(height, width)``.  Rounded to whole
        H&E pixels and HR bins.
    n_genes
        Number of genes.  The first ~60 are a realistic breast tumour/stroma/immune panel (in a
        priority order covering every cell type and module); further genes are ``GENE_###`` with
        random but structured programs.
    seed
        Random seed; the same seed gives identical output.
    he_um
        H&E pixel size in µm (realistic range 0.25–1).  The image has ``round(size / he_um)`` pixels.
    bin_um
        Bin size of the high-resolution truth ``"hr_counts"`` in µm.
    depth
        Mean number of transcripts per cell over all genes (Poisson sampling depth).
    transcripts
        Also return the individual transcripts as a points element ``"transcripts"``; binning them
        on the ``bin_um`` grid gives ``"hr_counts"`` exactly.
    coordinate_system
        Name of the coordinate system (µm) of all elements.

    Returns
    -------
    :class:`spatialdata.SpatialData` with

    - ``"he"``: RGB ``uint8`` H&E image ``(c, y, x)`` with a ``[2, 4]`` scale pyramid (when large
      enough) and transform ``Scale([he_um, he_um])``.
    - ``"hr_counts"``: ``float32`` integer Poisson counts per ``bin_um`` bin ``(c, y, x)``, channels =
      gene names, transform ``Scale([bin_um, bin_um])``.
    - ``"domains"``: labels ``(y, x)`` of tissue domains on the ``bin_um`` grid (codes in
      ``attrs["synthetic"]["domains"]``).
    - ``"cells"``: circles at cell centroids (µm, radius = cell radius) with ``cell_type`` and ``domain``.
    - ``"table"``: cells × genes expected expression rates (transcripts per cell), annotating
      ``"cells"`` (``region="cells"``, ``instance_key="cell_id"``).
    - ``"transcripts"`` (optional): points with ``x``, ``y`` (µm) and categorical ``gene``.

    ``sdata.attrs["synthetic"]`` holds the parameters, gene names, cell types, domains, marker genes
    per type, co-expression modules, within-type latent genes and the drivers of each module.
    """
    t0 = time.perf_counter()
    if np.isscalar(size_um):
        size = (float(size_um), float(size_um))
    else:
        size = (float(size_um[0]), float(size_um[1]))
    if he_um <= 0 or bin_um <= 0 or min(size) <= 0:
        raise ValueError("size_um, he_um and bin_um must be positive.")
    if n_genes < 1:
        raise ValueError("n_genes must be >= 1.")
    n_bins = (max(1, int(round(size[0] / bin_um))), max(1, int(round(size[1] / bin_um))))
    extent = (n_bins[0] * bin_um, n_bins[1] * bin_um)
    n_he = (max(1, int(round(extent[0] / he_um))), max(1, int(round(extent[1] / he_um))))
    if not np.allclose(extent, size):
        logger.info("synthetic_tissue: size rounded to %s µm (whole %g µm bins).", extent, bin_um)

    ss = np.random.SeedSequence(int(seed))
    rng_layout, rng_cells, rng_state, rng_render = (np.random.default_rng(s) for s in ss.spawn(4))

    layout = _Layout(rng_layout, extent)
    cells = _place_cells(rng_cells, layout, extent)
    genes, base, loadings = _gene_programs(n_genes, seed)
    z, cycling = _module_states(rng_state, layout, cells, extent)
    rates = _expression(seed, cells, base, loadings, z, depth)
    t1 = time.perf_counter()

    tx, counts = _sample_transcripts(seed, layout, cells, rates, extent, n_bins, bin_um)
    t2 = time.perf_counter()

    he = _render_he(rng_render, layout, cells, cycling, extent, n_he, he_um)
    t3 = time.perf_counter()

    yb = (np.arange(n_bins[0]) + 0.5) * bin_um
    xb = (np.arange(n_bins[1]) + 0.5) * bin_um
    dom_bins = layout.domains(yb, xb, grid=True)

    markers = {
        t: [
            g
            for gi, g in enumerate(genes)
            if base[ti, gi] >= 4 and base[ti, gi] >= 5 * np.delete(base[:, gi], ti).max()
        ]
        for ti, t in enumerate(CELL_TYPES)
    }
    modules = {m: [g for gi, g in enumerate(genes) if loadings[gi, mi] != 0] for mi, m in enumerate(_MODULES)}
    latent = [g for gi, g in enumerate(genes) if np.any(np.abs(loadings[gi]) >= 0.8)]
    info: dict[str, Any] = {
        "params": {
            "size_um": list(extent),
            "n_genes": int(n_genes),
            "seed": int(seed),
            "he_um": float(he_um),
            "bin_um": float(bin_um),
            "depth": float(depth),
            "transcripts": bool(transcripts),
            "coordinate_system": coordinate_system,
        },
        "genes": list(genes),
        "cell_types": list(CELL_TYPES),
        "domains": list(DOMAINS),
        "markers": markers,
        "modules": modules,
        "module_drivers": dict(_MODULE_DRIVERS),
        "latent_genes": latent,
        "n_cells": int(cells["y"].size),
        "n_transcripts": int(tx[0].size),
        "domain_fractions": {d: float(np.mean(dom_bins == i)) for i, d in enumerate(DOMAINS)},
    }
    sdata = _to_spatialdata(
        he, counts, dom_bins, cells, rates, genes, tx, transcripts, he_um, bin_um, coordinate_system
    )
    sdata.attrs["synthetic"] = info
    logger.info(
        "synthetic_tissue: %d cells, %d genes, %d transcripts, H&E %dx%d px; layout+expression %.2fs, "
        "transcripts %.2fs, H&E %.2fs, total %.2fs",
        cells["y"].size,
        len(genes),
        tx[0].size,
        n_he[0],
        n_he[1],
        t1 - t0,
        t2 - t1,
        t3 - t2,
        time.perf_counter() - t0,
    )
    return sdata


# ----------------------------------------------------------------------------------------------------
# SpatialData assembly
# ----------------------------------------------------------------------------------------------------
def _to_spatialdata(he, counts, dom_bins, cells, rates, genes, tx, transcripts, he_um, bin_um, cs):
    import anndata as ad
    import geopandas as gpd
    import pandas as pd
    from shapely import points as shp_points
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, Labels2DModel, PointsModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    he_tf = {cs: Scale([he_um, he_um], axes=("y", "x"))}
    bin_tf = {cs: Scale([bin_um, bin_um], axes=("y", "x"))}
    scale_factors = [2, 4] if min(he.shape[1:]) >= 256 else None
    images = {
        "he": Image2DModel.parse(
            he, dims=("c", "y", "x"), c_coords=["r", "g", "b"], transformations=he_tf,
            scale_factors=scale_factors, chunks=(3, 1024, 1024),
        ),
        "hr_counts": Image2DModel.parse(
            counts, dims=("c", "y", "x"), c_coords=list(genes), transformations=bin_tf
        ),
    }  # fmt: skip
    labels = {"domains": Labels2DModel.parse(dom_bins, dims=("y", "x"), transformations=bin_tf)}

    n = cells["y"].size
    ids = np.arange(n)
    ctype = pd.Categorical.from_codes(cells["type"], categories=list(CELL_TYPES))
    cdom = pd.Categorical.from_codes(cells["domain"], categories=list(DOMAINS))
    gdf = gpd.GeoDataFrame(
        {"radius": cells["radius"].astype(float), "cell_type": ctype, "domain": cdom},
        geometry=shp_points(np.c_[cells["x"], cells["y"]]),
        index=pd.Index(ids, name="cell_id"),
    )
    shapes, tables = {}, {}
    if n == 0:  # spatialdata cannot hold empty shapes
        logger.warning("synthetic_tissue: the section holds no cells; 'cells' and 'table' are omitted.")

    obs = pd.DataFrame(
        {
            "cell_type": ctype,
            "domain": cdom,
            "region": pd.Categorical(["cells"] * n, categories=["cells"]),
            "cell_id": ids,
        },
        index=pd.Index(ids.astype(str)),
    )
    adata = ad.AnnData(
        X=rates.astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(list(genes))),
        obsm={"spatial": np.c_[cells["x"], cells["y"]].astype(np.float64)},
    )
    if n:
        shapes["cells"] = ShapesModel.parse(gdf, transformations={cs: Identity()})
        tables["table"] = TableModel.parse(adata, region="cells", region_key="region", instance_key="cell_id")

    points = {}
    if transcripts:
        ty, txx, tg = tx
        df = pd.DataFrame(
            {
                "x": txx,
                "y": ty,
                "gene": pd.Categorical.from_codes(tg.astype(np.int32), categories=list(genes)),
            }
        )
        points["transcripts"] = PointsModel.parse(
            df, coordinates={"x": "x", "y": "y"}, feature_key="gene", transformations={cs: Identity()}
        )
    return SpatialData(images=images, labels=labels, shapes=shapes, points=points, tables=tables)
