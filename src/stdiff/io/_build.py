"""``sd.io.from_spots``: a spot section built by hand, in the SpatialData layout stdiff reads.

The layout: an image (the histology) with a transformation from its pixels to a coordinate system in
µm; the spots as circles in µm (``radius`` = half the physical spot diameter); a table of counts
annotating them (``region``, ``region_key="region"``, ``instance_key="spot_id"``) with the centres in
``obsm["spatial"]``. :func:`from_spots` builds it from counts, spot positions and an image in any of
the usual forms, and works out the image's scale from what the user has: a pixel size (one, or one
per axis), a full affine, or the spot array's alignment table (array coordinates ↔ pixels, fitted
with the platform's pitch; its residual is reported).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._utils import logger
from ._checks import (
    align_positions,
    check_counts_matrix,
    check_gene_names,
    check_inside_image,
    check_positions,
    check_scale,
    frame_counts,
    has_ids,
    scale_hint,
)
from ._scale import (
    SPOT_DIAMETER_UM,
    bounds_um,
    image_array,
    image_element,
    is_element,
    own_element,
    pixel_scale,
    platform_diameter,
)

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    from spatialdata import SpatialData


def _counts(counts: Any, genes: Sequence[str] | None, spot_ids: Sequence[str] | None):
    """``(X (n, G), genes, spot ids, obs frame, var frame, whether the ids are the user's)``, checked.

    From an AnnData, a DataFrame or a matrix (numpy or scipy sparse) with ``genes=``.
    """
    import anndata as ad

    if isinstance(counts, ad.AnnData):
        X, genes, ids, obs, var = counts.X, list(counts.var_names), list(counts.obs_names), counts.obs, counts.var
        obs, var, real_ids = obs.copy(), var.copy(), True
    elif isinstance(counts, pd.DataFrame):
        X, genes, ids = frame_counts(counts), [str(c) for c in counts.columns], [str(i) for i in counts.index]
        obs, var, real_ids = None, None, has_ids(counts.index)
    elif isinstance(counts, pd.Series):
        raise ValueError("counts is a Series (one gene?): pass a spots × genes frame, e.g. counts.to_frame().")
    elif counts is None:
        raise ValueError("counts is None: pass the spots × genes counts (an AnnData, a DataFrame or a matrix).")
    else:
        X = check_counts_matrix(counts)
        if genes is None:
            raise ValueError("counts is a matrix: pass genes= (one name per column).")
        if isinstance(genes, str):
            raise ValueError(f"genes= must be a list of names, got the string {genes!r}.")
        if X.shape[1] != len(genes):
            raise ValueError(f"counts has {X.shape[1]} columns but genes= has {len(genes)} names.")
        real_ids = spot_ids is not None
        ids = [str(i) for i in spot_ids] if spot_ids is not None else [f"spot{i}" for i in range(X.shape[0])]
        if len(ids) != X.shape[0]:
            raise ValueError(f"counts has {X.shape[0]} rows (spots) but spot_ids= has {len(ids)} ids.")
        obs = var = None
    X = check_counts_matrix(X)
    check_gene_names(genes)
    return X, [str(g) for g in genes], ids, obs, var, real_ids


def _positions(positions: Any, n: int, ids: list[str], real_ids: bool) -> np.ndarray:
    """``(n, 2)`` x, y from an array or a frame with ``x`` and ``y`` columns (paired by spot id when both have ids)."""
    if positions is None:
        raise ValueError("positions is None: pass the spots' centres, (n, 2) x, y or a frame with columns x and y.")
    if isinstance(positions, pd.DataFrame):
        cols = [c for c in ("x", "y") if c in positions.columns]
        if len(cols) != 2:
            raise KeyError(f"positions needs columns 'x' and 'y'; it has {list(positions.columns)}.")
        if real_ids and has_ids(positions.index):
            positions = align_positions(positions, ids)
        bad = [c for c in ("x", "y") if not pd.api.types.is_numeric_dtype(positions[c])]
        if bad:
            raise ValueError(f"positions column(s) {bad} are not numbers ({positions[bad[0]].dtype}).")
        xy = positions[["x", "y"]].to_numpy(float)
    else:
        try:
            xy = np.asarray(positions, dtype=float)
        except (TypeError, ValueError):
            raise ValueError("positions must be numbers: (n, 2) x, y per spot.") from None
    if xy.shape != (n, 2):
        hint = " (transposed? pass positions.T)" if xy.shape == (2, n) else ""
        raise ValueError(
            f"positions must be ({n}, 2): x, y for each of the {n} spots of counts, in their order; got {xy.shape}"
            f"{hint}."
        )
    return xy


def from_spots(
    counts: ad.AnnData | pd.DataFrame | Any,
    positions: np.ndarray | pd.DataFrame,
    image: np.ndarray | str | os.PathLike | Any,
    *,
    genes: Sequence[str] | None = None,
    spot_ids: Sequence[str] | None = None,
    units: str = "px",
    um_per_px: float | tuple[float, float] | None = None,
    affine: np.ndarray | None = None,
    alignment: pd.DataFrame | None = None,
    array_columns: Sequence[str] = ("x", "y"),
    pixel_columns: Sequence[str] = ("pixel_x", "pixel_y"),
    platform: str | None = None,
    spot_diameter_um: float | None = None,
    image_key: str = "he",
    shapes_key: str = "spots",
    table_key: str = "table",
    coordinate_system: str = "global",
    obs: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
) -> SpatialData:
    """Build the SpatialData of a spot section (histology, spots, counts) in a µm coordinate system.

    Parameters
    ----------
    counts
        Spot × gene counts: an AnnData (its ``var`` is kept, e.g. a ``"symbol"`` column for
        ``gene_symbols=``), a DataFrame (spots as rows, genes as columns) or a matrix with ``genes=``.
    positions
        Spot centres ``(n, 2)`` as x, y (or a frame with ``x``, ``y``), in the counts' order: image pixels
        (``units="px"``, the default) or µm (``units="um"``).
    image
        The histology: an array ``(H, W, 3)`` or ``(3, H, W)`` (numpy or dask; the order is detected; 4
        channels drop alpha; 2-D is one stain channel), a file path, or a spatialdata image element
        whose transformation to ``coordinate_system`` already maps its pixels to µm. The image is never
        loaded whole: an array is wrapped (not copied), a TIFF or zarr file stays on disk and is read
        window by window when the section is super-resolved (a PNG or JPEG file is decoded once).
    genes, spot_ids
        Gene names and spot ids when ``counts`` is a matrix.
    units
        ``"px"`` or ``"um"``: the units of ``positions``.
    um_per_px, affine, alignment
        The image's scale, one of: µm per pixel (a number, or ``(x, y)`` when the axes differ); a
        ``(2, 3)`` / ``(3, 3)`` affine from image pixels to µm; or an alignment table of the spot array
        (columns ``array_columns`` and ``pixel_columns``, e.g. the ST pipeline's spot detector output),
        fitted with the platform's array step (its residual is logged and stored). Without any of them
        and with ``units="px"``, the scale comes from the spots' pitch (needs ``platform=``).
    platform
        ``"visium"`` or ``"st"``: the default spot diameter and the array step of ``alignment``;
        detected from the pitch in µm when not given.
    spot_diameter_um
        The physical spot diameter (default: the platform's: 55 µm Visium, 100 µm legacy ST).
    image_key, shapes_key, table_key, coordinate_system
        Element and coordinate system names.
    obs, attrs
        Extra ``obs`` columns of the table and ``SpatialData.attrs``.

    Returns
    -------
    The SpatialData :func:`stdiff.tl.superresolve` reads: image ``image_key`` (with a scale pyramid),
    circles ``shapes_key`` in µm, table ``table_key`` annotating them; ``attrs["stdiff_section"]``
    records how the scale was found.
    """
    if platform is not None and platform not in SPOT_DIAMETER_UM:
        raise ValueError(f"platform must be 'visium' or 'st' (or None: told by the pitch), got {platform!r}.")
    X, genes, ids, obs0, var0, real_ids = _counts(counts, genes, spot_ids)
    n = X.shape[0]
    xy = _positions(positions, n, ids, real_ids)
    if units not in ("px", "um"):
        raise ValueError(f"units must be 'px' or 'um', got {units!r}.")
    if image is None:
        raise ValueError("image is None: pass the histology (an array, a file path or a spatialdata image element).")
    check_positions(xy, ids, "µm" if units == "um" else "px")
    declared = platform is not None
    element = chw = None
    if is_element(image):  # a spatialdata image element
        element, px_to_um = own_element(image, coordinate_system)
        how: dict[str, Any] = {"scale": f"the image element's transformation to {coordinate_system!r}"}
    else:
        chw = image_array(image)  # read and checked before the scale is worked out
        px_to_um, how, platform = pixel_scale(
            xy, units, platform, um_per_px=um_per_px, affine=affine, alignment=alignment, array_columns=array_columns,
            pixel_columns=pixel_columns,
        )  # fmt: skip
    centres = xy if units == "um" else (px_to_um[:2, :2] @ xy.T + px_to_um[:2, 2:3]).T
    hint = scale_hint(units, how)
    if spot_diameter_um is None:
        spot_diameter_um, platform = platform_diameter(centres, platform, hint)
    fitted = "alignment" in str(how.get("scale"))
    pitch = check_scale(centres, platform, declared, spot_diameter_um, hint, fitted=fitted)
    if element is None:
        element = image_element(chw, px_to_um, coordinate_system)
    check_inside_image(centres, ids, bounds_um(element, coordinate_system), pitch)
    how.update(units=units, platform=platform, spot_diameter_um=float(spot_diameter_um))
    sdata = assemble(
        element, X, genes, ids, centres, spot_diameter_um / 2, obs0=obs0, var=var0, obs=obs or {},
        attrs={**(attrs or {}), "stdiff_section": how}, image_key=image_key, shapes_key=shapes_key,
        table_key=table_key, coordinate_system=coordinate_system,
    )  # fmt: skip
    logger.info("Built a spot section: %d spots, %d genes, spots of %g µm (%s).", n, len(genes), spot_diameter_um,
                how["scale"])  # fmt: skip
    return sdata


def assemble(
    he: Any,
    counts: Any,
    genes: Sequence[str],
    spot_ids: Sequence[str],
    centres_um: np.ndarray,
    radius_um: float,
    *,
    obs0: pd.DataFrame | None = None,
    var: pd.DataFrame | None = None,
    obs: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
    image_key: str = "he",
    shapes_key: str = "spots",
    table_key: str = "table",
    coordinate_system: str = "global",
) -> SpatialData:
    """Image ``image_key``, circles ``shapes_key`` (µm) and table ``table_key`` (CSR counts) linked to them."""
    import anndata as ad
    import geopandas as gpd
    import scipy.sparse as sp
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    index = pd.Index(np.asarray(spot_ids, dtype=object), name=None)
    if not index.is_unique:
        raise ValueError(f"Spot ids are not unique, e.g. {index[index.duplicated()][:3].tolist()}.")
    gdf = gpd.GeoDataFrame(
        {"radius": np.full(len(index), float(radius_um))},
        geometry=gpd.points_from_xy(centres_um[:, 0], centres_um[:, 1]),
        index=index,
    )
    shapes = ShapesModel.parse(gdf, transformations={coordinate_system: Identity()})
    table_obs = pd.DataFrame(index=index) if obs0 is None else obs0.set_axis(index, axis=0).copy()
    for k, v in (obs or {}).items():
        table_obs[k] = np.asarray(v)
    table_obs["region"] = pd.Categorical([shapes_key] * len(index))
    table_obs["spot_id"] = index.to_numpy()
    X = counts.tocsr() if sp.issparse(counts) else sp.csr_matrix(np.asarray(counts))
    whole = np.issubdtype(X.dtype, np.floating) and np.array_equal(X.data, np.round(X.data))
    if whole and (X.data.size == 0 or np.abs(X.data).max() <= np.iinfo(np.int32).max):
        X = X.astype(np.int32)  # whole numbers that int32 holds exactly (larger ones stay floats)
    var = pd.DataFrame(index=pd.Index([str(g) for g in genes])) if var is None else var.copy()
    var.index = pd.Index([str(g) for g in genes])
    check_gene_names(var.index)
    adata = ad.AnnData(X=X, obs=table_obs, var=var)
    adata.obsm["spatial"] = np.asarray(centres_um, dtype=float)
    table = TableModel.parse(adata, region=shapes_key, region_key="region", instance_key="spot_id")
    return SpatialData(
        images={image_key: he}, shapes={shapes_key: shapes}, tables={table_key: table}, attrs=dict(attrs or {})
    )
