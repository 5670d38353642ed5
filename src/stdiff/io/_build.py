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

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    from spatialdata import SpatialData

#: µm between neighbouring array positions: legacy ST (x, y), Visium (array_col, array_row).
ARRAY_STEP_UM = {"st": (200.0, 200.0), "visium": (50.0, 100.0 * np.sqrt(3) / 2)}
#: Physical spot diameter of the platforms (µm).
SPOT_DIAMETER_UM = {"st": 100.0, "visium": 55.0}


def fit_alignment(
    alignment: pd.DataFrame,
    platform: str,
    *,
    array_columns: Sequence[str] = ("x", "y"),
    pixel_columns: Sequence[str] = ("pixel_x", "pixel_y"),
) -> tuple[np.ndarray, dict[str, float]]:
    """The ``(3, 3)`` affine image pixel → µm from an alignment table (array coordinates ↔ pixels).

    Fits ``pixel = M · (array, 1)`` by least squares (any scale per axis, rotation and shear), then
    composes its inverse with the platform's array step in µm (legacy ST: 200 µm per step; Visium:
    ``array_col`` 50 µm, ``array_row`` 86.6 µm), anchored so that the image's pixel (0, 0) is at 0 µm.
    Returns the affine and the fit's residual (RMS, in pixels and µm).
    """
    if platform not in ARRAY_STEP_UM:
        raise ValueError(f"An alignment table needs platform='st' or 'visium' (its array step), got {platform!r}.")
    missing = [c for c in (*array_columns, *pixel_columns) if c not in alignment.columns]
    if missing:
        raise KeyError(
            f"The alignment table lacks columns {missing}; it has {list(alignment.columns)} (pass array_columns= and "
            "pixel_columns=)."
        )
    a = np.column_stack([alignment[list(array_columns)].to_numpy(float), np.ones(len(alignment))])
    p = alignment[list(pixel_columns)].to_numpy(float)
    if len(a) < 3 or np.linalg.matrix_rank(a) < 3:
        raise ValueError("The alignment table needs at least 3 spots that are not on one line.")
    m, *_ = np.linalg.lstsq(a, p, rcond=None)
    resid = p - a @ m
    rms_px = float(np.sqrt((resid**2).sum(1).mean()))
    array_to_px = np.eye(3)
    array_to_px[:2, :2], array_to_px[:2, 2] = m[:2].T, m[2]
    step = np.diag([*ARRAY_STEP_UM[platform], 1.0])
    px_to_um = step @ np.linalg.inv(array_to_px)
    px_to_um[:2, 2] = 0.0  # anchored at the image: pixel (0, 0) is at 0 µm
    lin = px_to_um[:2, :2]
    lin[np.abs(lin) < 1e-9 * np.abs(lin).max()] = 0.0  # round-off, not shear
    um_per_px = float(np.sqrt(abs(np.linalg.det(px_to_um[:2, :2]))))
    return px_to_um, {"rms_px": rms_px, "rms_um": rms_px * um_per_px}


def _counts(counts: Any, genes: Sequence[str] | None, spot_ids: Sequence[str] | None):
    """``(X (n, G), genes, spot ids, obs frame, var frame)`` from an AnnData, a DataFrame or a matrix."""
    import anndata as ad

    if isinstance(counts, ad.AnnData):
        return counts.X, list(counts.var_names), list(counts.obs_names), counts.obs.copy(), counts.var.copy()
    if isinstance(counts, pd.DataFrame):
        return counts.to_numpy(), [str(c) for c in counts.columns], [str(i) for i in counts.index], None, None
    X = counts
    if genes is None:
        raise ValueError("counts is a matrix: pass genes= (one name per column).")
    if X.shape[1] != len(genes):
        raise ValueError(f"counts has {X.shape[1]} columns but genes= has {len(genes)} names.")
    ids = [str(i) for i in spot_ids] if spot_ids is not None else [f"spot{i}" for i in range(X.shape[0])]
    return X, [str(g) for g in genes], ids, None, None


def _positions(positions: Any, n: int) -> np.ndarray:
    """``(n, 2)`` x, y from an array or a frame with ``x`` and ``y`` columns."""
    if isinstance(positions, pd.DataFrame):
        cols = [c for c in ("x", "y") if c in positions.columns]
        if len(cols) != 2:
            raise KeyError(f"positions needs columns 'x' and 'y'; it has {list(positions.columns)}.")
        xy = positions[["x", "y"]].to_numpy(float)
    else:
        xy = np.asarray(positions, dtype=float)
    if xy.shape != (n, 2):
        raise ValueError(f"positions must be ({n}, 2) (x, y per spot, in the counts' order), got {xy.shape}.")
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
    X, genes, ids, obs0, var0 = _counts(counts, genes, spot_ids)
    n = X.shape[0]
    xy = _positions(positions, n)
    if units not in ("px", "um"):
        raise ValueError(f"units must be 'px' or 'um', got {units!r}.")
    element = None
    if _is_element(image):  # a spatialdata image element
        element, px_to_um = _own_element(image, coordinate_system)
        how: dict[str, Any] = {"scale": f"the image element's transformation to {coordinate_system!r}"}
    else:
        px_to_um, how, platform = _pixel_scale(
            xy, units, platform, um_per_px=um_per_px, affine=affine, alignment=alignment, array_columns=array_columns,
            pixel_columns=pixel_columns,
        )  # fmt: skip
    centres = xy if units == "um" else (px_to_um[:2, :2] @ xy.T + px_to_um[:2, 2:3]).T
    if spot_diameter_um is None:
        spot_diameter_um, platform = _platform_diameter(centres, platform)
    if element is None:
        element = _image_element(image, px_to_um, coordinate_system)
    how.update(units=units, platform=platform, spot_diameter_um=float(spot_diameter_um))
    sdata = assemble(
        element, X, genes, ids, centres, spot_diameter_um / 2, obs0=obs0, var=var0, obs=obs or {},
        attrs={**(attrs or {}), "stdiff_section": how}, image_key=image_key, shapes_key=shapes_key,
        table_key=table_key, coordinate_system=coordinate_system,
    )  # fmt: skip
    logger.info("Built a spot section: %d spots, %d genes, spots of %g µm (%s).", n, len(genes), spot_diameter_um,
                how["scale"])  # fmt: skip
    return sdata


def _own_element(image: Any, coordinate_system: str) -> tuple[Any, np.ndarray]:
    """A shallow copy of an image element with its own transformations, and its affine pixel → µm."""
    import copy

    from spatialdata.transformations import get_transformation, set_transformation

    element = image.copy(deep=False)  # the section's own element: the same pixels, its own transformations
    set_transformation(element, copy.deepcopy(get_transformation(image, get_all=True)), set_all=True)
    px_to_um = np.asarray(
        get_transformation(element, to_coordinate_system=coordinate_system).to_affine_matrix(
            input_axes=("x", "y"), output_axes=("x", "y")
        ),
        dtype=float,
    )
    return element, px_to_um


def _pixel_scale(
    xy: np.ndarray,
    units: str,
    platform: str | None,
    *,
    um_per_px: float | tuple[float, float] | None,
    affine: np.ndarray | None,
    alignment: pd.DataFrame | None,
    array_columns: Sequence[str],
    pixel_columns: Sequence[str],
) -> tuple[np.ndarray, dict[str, Any], str | None]:
    """``(affine pixel → µm, how it was found, platform)`` of an image array from what the user gave."""
    if sum(v is not None for v in (um_per_px, affine, alignment)) > 1:
        raise ValueError("Give one of um_per_px=, affine= and alignment=.")
    if affine is not None:
        a = np.asarray(affine, dtype=float)
        px_to_um = np.vstack([a[:2], [0.0, 0.0, 1.0]]) if a.shape == (2, 3) else a
        if px_to_um.shape != (3, 3):
            raise ValueError(f"affine must be (2, 3) or (3, 3), got {a.shape}.")
        return px_to_um, {"scale": "given (affine=)"}, platform
    if um_per_px is not None:
        sx, sy = (um_per_px, um_per_px) if np.isscalar(um_per_px) else tuple(um_per_px)
        if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
            raise ValueError(f"um_per_px must be positive, got {um_per_px!r}.")
        return np.diag([float(sx), float(sy), 1.0]), {"scale": "given (um_per_px=)"}, platform
    if alignment is not None:
        platform = platform or "st"
        px_to_um, fit = fit_alignment(alignment, platform, array_columns=array_columns, pixel_columns=pixel_columns)
        logger.info("Alignment: %d spots, residual %.2f px (%.2f µm).", len(alignment), fit["rms_px"], fit["rms_um"])
        return px_to_um, {"scale": f"fitted from the alignment table ({platform} array step)", **fit}, platform
    if units == "px":
        if platform not in SPOT_DIAMETER_UM:
            raise ValueError(
                "The spots are in image pixels and nothing says how large a pixel is: pass um_per_px= (from the "
                "microscope), affine=, alignment= (array ↔ pixel table), or platform='visium' / 'st' to take the scale "
                "from the spots' pitch."
            )
        from ..spots import PLATFORMS, nearest_pitch

        s = PLATFORMS[platform].pitch_um / nearest_pitch(xy.T)
        return (
            np.diag([s, s, 1.0]),
            {"scale": f"from the spots' pitch ({platform}: {PLATFORMS[platform].pitch_um:g} µm)"},
            platform,
        )
    raise ValueError(
        "The spots are in µm but the image's pixel size is unknown: pass um_per_px=, affine= or alignment=, "
        "or an image element with its transformation."
    )


def _platform_diameter(centres_um: np.ndarray, platform: str | None) -> tuple[float, str | None]:
    """``(spot diameter µm, platform)``: the platform's spot size, the platform detected from the pitch if not given."""
    if platform is None:
        from ..spots import detect_geometry

        g = detect_geometry(centres_um.T, 27.5)
        platform = g.platform if g.platform in SPOT_DIAMETER_UM else None
    if platform not in SPOT_DIAMETER_UM:
        raise ValueError(
            "Cannot tell the spot diameter: pass spot_diameter_um= (e.g. 55 for Visium, 100 for legacy ST) or "
            "platform='visium' / 'st'."
        )
    return SPOT_DIAMETER_UM[platform], platform


def _is_element(image: Any) -> bool:
    """Whether ``image`` is a spatialdata image element (an ``xarray`` DataArray or a multiscale DataTree)."""
    import xarray as xr

    return isinstance(image, xr.DataArray | xr.DataTree)


def _image_element(image: Any, px_to_um: np.ndarray, coordinate_system: str) -> Any:
    """The image (array or file) as a lazy multiscale image element with the affine pixel → µm.

    The image is never copied whole (:func:`~stdiff.io._image.lazy_image`): the element's levels are
    computed window by window from the array or the file when they are read.
    """
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Affine

    from .._spatial import pyramid_scale_factors
    from ._image import CHUNK_PX, lazy_image

    chw = lazy_image(image)
    c = ["r", "g", "b"] if chw.shape[0] == 3 else [f"c{i}" for i in range(chw.shape[0])]
    transform = Affine(px_to_um, input_axes=("x", "y"), output_axes=("x", "y"))
    return Image2DModel.parse(
        chw, dims=("c", "y", "x"), c_coords=c, transformations={coordinate_system: transform},
        scale_factors=pyramid_scale_factors(chw.shape[1:], max_factor=8),
        chunks=(chw.shape[0], CHUNK_PX, CHUNK_PX),
    )  # fmt: skip


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
    if np.issubdtype(X.dtype, np.floating) and np.array_equal(X.data, np.round(X.data)):
        X = X.astype(np.int32)
    var = pd.DataFrame(index=pd.Index([str(g) for g in genes])) if var is None else var.copy()
    adata = ad.AnnData(X=X, obs=table_obs, var=var)
    adata.var_names_make_unique()
    adata.obsm["spatial"] = np.asarray(centres_um, dtype=float)
    table = TableModel.parse(adata, region=shapes_key, region_key="region", instance_key="spot_id")
    return SpatialData(
        images={image_key: he}, shapes={shapes_key: shapes}, tables={table_key: table}, attrs=dict(attrs or {})
    )
