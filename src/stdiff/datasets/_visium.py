"""Mini 10x Visium mouse brain crop (GiottoData ``Mini_datasets/Visium``): 624 spots × 634 genes, H&E."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stdiff._utils import logger

from .._spatial import pyramid_scale_factors
from ..io import from_spots
from ._registry import dataset_file

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

__all__ = ["visium_mouse_brain_mini"]

_FOLDER = "giotto_mini_visium_mouse_brain"

VISIUM_SPOT_DIAMETER_UM = 55.0
VISIUM_PITCH_UM = 100.0

#: Extent of ``images/deg_image2.png`` in full-resolution pixels, y negated (y = -row), outer pixel edges;
#: from GiottoData's ``mini_visium_script.R``. Image row 0 is the largest (least negative) y.
VISIUM_IMAGE_EXTENT_FULLRES: dict[str, float] = {
    "xmin": 2000.5,
    "xmax": 6790.5,
    "ymin": -5730.25,
    "ymax": -2380.75,
}


def visium_mouse_brain_mini(*, data_dir: str | os.PathLike | None = None) -> SpatialData:
    """Load the mini Visium mouse brain crop (hippocampus / dentate gyrus, 624 spots × 634 genes).

    Data: GiottoData ``inst/Mini_datasets/Visium/Raw`` (https://github.com/drieslab/GiottoData, pinned commit
    in :mod:`stdiff.datasets._registry`); package license MIT, no license stated for the 10x data. The image
    is a low-resolution screenshot of the H&E (243 × 172 px, ≈14 µm/px), so the registration is coarse.

    Parameters
    ----------
    data_dir
        The dataset folder (``visium_DG_expr.txt.gz``, ``visium_DG_locs.txt``, ``images/`` …), e.g.
        ``$STDIFF_DATA_DIR/giotto_mini_visium_mouse_brain``. When ``None``, the files are taken from
        ``$STDIFF_DATA_DIR/giotto_mini_visium_mouse_brain`` or downloaded (pooch).

    Returns
    -------
    :class:`spatialdata.SpatialData` in coordinate system ``"global"`` (µm) with

    - image ``"he"``: RGB uint8 (alpha dropped), multiscale, affine px → µm from the published extent;
    - shapes ``"spots"``: circles of radius 27.5 µm indexed by barcode, centres in µm;
    - table ``"table"``: counts (CSR int32) annotating ``"spots"``; ``obs`` has ``in_tissue``,
      ``pxl_col_fullres``, ``pxl_row_fullres``, ``region``, ``spot_id``; ``obsm["spatial"]`` in µm.

    ``sdata.attrs["visium"]`` holds the 10x scale factors plus ``um_per_fullres_px`` (from the spot
    lattice: 100 µm between neighbouring spots; ``spot_diameter_fullres`` spans Space Ranger's
    theoretical 65 µm spot, not the physical 55 µm one) and ``spot_diameter_um``.
    """
    t0 = time.perf_counter()
    expr_path = dataset_file(_FOLDER, "visium_DG_expr.txt.gz", data_dir=data_dir)
    locs_path = dataset_file(_FOLDER, "visium_DG_locs.txt", data_dir=data_dir)
    meta_path = dataset_file(_FOLDER, "visium_DG_meta.txt", data_dir=data_dir)
    sf_path = dataset_file(_FOLDER, "scalefactors_json.json", data_dir=data_dir)
    img_path = dataset_file(_FOLDER, "images/deg_image2.png", data_dir=data_dir)

    with open(sf_path) as f:
        scalefactors = {k: float(v) for k, v in json.load(f).items()}
    expr, locs = _read_expression(expr_path, locs_path)
    barcodes = pd.Index(expr.columns.astype(str))
    in_tissue = pd.read_csv(meta_path).set_index("cell_ID")["in_tissue"].reindex(barcodes)
    col_fr = locs["x"].to_numpy(float)
    row_fr = -locs["y"].to_numpy(float)
    um_per_fullres = _lattice_um_per_px(col_fr, row_fr)
    he, (h, w) = _he_element(img_path, um_per_fullres)
    sdata = from_spots(
        expr.to_numpy(dtype=np.int32).T,
        np.column_stack([col_fr, row_fr]) * um_per_fullres,
        he,
        genes=list(expr.index.astype(str)),
        spot_ids=list(barcodes.to_numpy(dtype=object)),
        units="um",
        spot_diameter_um=VISIUM_SPOT_DIAMETER_UM,
        obs={
            "in_tissue": in_tissue.fillna(0).astype(int).to_numpy(),
            "pxl_col_fullres": col_fr,
            "pxl_row_fullres": row_fr,
        },
        attrs={
            "visium": {
                **scalefactors,
                "um_per_fullres_px": float(um_per_fullres),
                "spot_diameter_um": VISIUM_SPOT_DIAMETER_UM,
                "image_extent_fullres": dict(VISIUM_IMAGE_EXTENT_FULLRES),
            }
        },
    )
    logger.info(
        "Visium mini: %d spots x %d genes, image %dx%d px, loaded in %.2f s",
        sdata.tables["table"].n_obs,
        sdata.tables["table"].n_vars,
        w,
        h,
        time.perf_counter() - t0,
    )
    return sdata


def _read_expression(expr_path: Path, locs_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Genes × barcodes counts and the spots' full-resolution ``x``, ``y`` (y negated), in the barcodes' order."""
    # the header lacks the gene-column name -> first column is the index
    expr = pd.read_csv(expr_path, sep=r"\s+", index_col=0)
    # locs rows follow the expression COLUMN order; y is negated (row = -y)
    locs = pd.read_csv(locs_path, sep=r"\s+", header=None, names=["x", "y"])
    if len(locs) != expr.shape[1]:
        raise ValueError(
            f"{locs_path} has {len(locs)} rows but {expr_path} has {expr.shape[1]} spot columns; "
            "the files must come from the same GiottoData snapshot."
        )
    return expr, locs


def _lattice_um_per_px(col_fr: np.ndarray, row_fr: np.ndarray) -> float:
    """µm per full-resolution pixel from the lattice: neighbouring Visium spots are 100 µm apart."""
    from scipy.spatial import cKDTree

    xy = np.column_stack([col_fr, row_fr])
    nn, _ = cKDTree(xy).query(xy, k=2)
    return VISIUM_PITCH_UM / float(np.median(nn[:, 1]))


def _he_element(path: Path, um_per_fullres: float) -> tuple[Any, tuple[int, int]]:
    """The image as a multiscale RGB element whose outer pixel edges span the published extent, and its size."""
    from PIL import Image
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Affine

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    h, w = rgb.shape[:2]
    e = VISIUM_IMAGE_EXTENT_FULLRES
    sx = (e["xmax"] - e["xmin"]) / w * um_per_fullres
    sy = (e["ymax"] - e["ymin"]) / h * um_per_fullres
    # row 0 = least negative y (= smallest row)
    affine = Affine(
        np.array(
            [
                [sx, 0.0, e["xmin"] * um_per_fullres],
                [0.0, sy, -e["ymax"] * um_per_fullres],
                [0.0, 0.0, 1.0],
            ]
        ),
        input_axes=("x", "y"),
        output_axes=("x", "y"),
    )
    he = Image2DModel.parse(
        np.moveaxis(rgb, -1, 0),
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        transformations={"global": affine},
        scale_factors=pyramid_scale_factors((h, w), max_factor=8),
    )
    return he, (h, w)
