"""``sd.tl.to_anndata``: HR maps as an AnnData of pixels (or bins) for scanpy / squidpy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._constants import Key
from .._docs import fill_doc
from .._spatial import affine_to_cs, channel_names, finest_level, resolve_coordinate_system, result_provenance
from ._results import gene_names

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    import spatialdata as sd_mod

#: provenance fields copied to ``adata.uns["stdiff"]``
_UNS_FIELDS = (Key.prov.MODEL_HASH, Key.prov.FACTOR, Key.prov.LR_UM, Key.prov.SAMPLER, Key.prov.SEED)


@fill_doc
def to_anndata(
    sdata: sd_mod.SpatialData,
    key: str = Key.img.DEFAULT,
    *,
    bin_size: int = 1,
    coordinate_system: str | None = None,
    tissue_only: bool = True,
    gene_symbols: str | None = None,
) -> ad.AnnData:
    """HR pixels (or ``bin_size × bin_size`` bins) of a super-resolved image as an AnnData.

    Parameters
    ----------
    $sdata_result
    $key
    bin_size
        Sum ``bin_size × bin_size`` HR pixels into one observation (1: one observation per pixel).
    coordinate_system
        Coordinate system for ``obsm["spatial"]`` (default: the one the result was computed in).
    tissue_only
        Drop bins whose expression is zero for every gene (outside tissue).
    gene_symbols
        A column of the source table's ``var`` (e.g. ``"symbol"`` for a table indexed by Ensembl ids)
        copied to ``var[gene_symbols]``, for scanpy's ``gene_symbols=`` downstream.

    Returns
    -------
    AnnData with ``X`` (bins × genes, counts), ``obs`` (``row``, ``col`` bin indices, ``std_mean`` —
    the mean posterior standard deviation when ``f"{key}_std"`` exists), ``obsm["spatial"]`` (bin
    centres in the coordinate system, µm) and ``uns["stdiff"]`` (provenance), ready for
    ``squidpy.gr.spatial_neighbors(coord_type="grid")`` and ``squidpy.gr.spatial_autocorr``.
    """
    import anndata as ad
    import pandas as pd

    if key not in sdata.images:
        raise KeyError(f"No image {key!r}; images are {list(sdata.images)}. Run sd.tl.superresolve(key_added=...).")
    if int(bin_size) != bin_size or bin_size < 1:
        raise ValueError(f"bin_size must be a positive integer, got {bin_size!r}.")
    bin_size = int(bin_size)
    prov = dict(result_provenance(sdata, key, required=False))
    if coordinate_system is None:
        coordinate_system = prov.get(Key.prov.COORDINATE_SYSTEM)
    cs = resolve_coordinate_system(sdata, coordinate_system, [key])
    genes = channel_names(sdata.images[key])
    blocks = _binned(finest_level(sdata.images[key], np.float32), bin_size)
    G, h, _, w, _ = blocks.shape
    X = blocks.sum(axis=(2, 4)).reshape(G, -1).T
    rows, cols = np.divmod(np.arange(h * w), w)
    A = affine_to_cs(sdata.images[key], cs)
    centres = np.stack([(cols + 0.5) * bin_size, (rows + 0.5) * bin_size, np.ones(h * w)])
    obs = pd.DataFrame({"row": rows, "col": cols})
    std_key = Key.img.std(key)
    if std_key in sdata.images:
        s = _binned(finest_level(sdata.images[std_key], np.float32), bin_size).mean(axis=(2, 4))
        obs["std_mean"] = s.reshape(G, -1).mean(0)
    keep = X.sum(1) > 0 if tissue_only else np.ones(len(X), dtype=bool)
    obs = obs.loc[keep].reset_index(drop=True)
    obs.index = [f"bin_{r}_{c}" for r, c in zip(obs["row"], obs["col"])]
    var = pd.DataFrame(index=genes)
    if gene_symbols is not None:
        names = gene_names(sdata, key, gene_symbols)
        var[gene_symbols] = [names.get(g, g) for g in genes]
    adata = ad.AnnData(X=X[keep], obs=obs, var=var)
    adata.obsm["spatial"] = (A @ centres)[:2].T[keep]
    um = float(prov.get(Key.prov.HR_UM, np.sqrt(abs(np.linalg.det(A[:2, :2]))))) * bin_size
    adata.uns[Key.attrs.STDIFF] = {
        "key": key,
        "bin_size": bin_size,
        "bin_um": um,
        "coordinate_system": cs,
        **{k: v for k, v in prov.items() if k in _UNS_FIELDS},
    }
    return adata


def _binned(arr: np.ndarray, bin_size: int) -> np.ndarray:
    """``(G, H, W)`` as ``(G, h, bin_size, w, bin_size)`` blocks (the edge pixels that fill no bin dropped)."""
    G, H, W = arr.shape
    h, w = H // bin_size, W // bin_size
    return arr[:, : h * bin_size, : w * bin_size].reshape(G, h, bin_size, w, bin_size)
