"""Mini Vizgen MERFISH mouse brain crop (GiottoData ``Mini_datasets/Vizgen``): transcripts + DAPI / polyT."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stdiff._utils import logger

from .._spatial import pyramid_scale_factors
from ._registry import dataset_file

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

__all__ = ["merfish_mouse_brain_mini"]

_FOLDER = "giotto_mini_merfish_mouse_brain"

#: Image extent in µm (outer edges of the pixel grid), from GiottoData's ``mini_vizgen_script.R``.
#: Image row 0 is the minimum y, column 0 the minimum x.
MERFISH_IMAGE_EXTENT_UM: dict[str, float] = {
    "xmin": 6400.029,
    "xmax": 6900.037,
    "ymin": 4699.967,
    "ymax": 5150.007,
}


def _read_gray(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("L") if im.mode != "L" else im)
    return arr[np.newaxis]


def _image_transform(shape_yx: tuple[int, int]):
    """Pixel (y, x) → µm affine: row 0 / col 0 outer edge at (ymin, xmin), extent = outer pixel edges."""
    from spatialdata.transformations import Affine

    h, w = shape_yx
    e = MERFISH_IMAGE_EXTENT_UM
    sx = (e["xmax"] - e["xmin"]) / w
    sy = (e["ymax"] - e["ymin"]) / h
    return Affine(
        np.array([[sx, 0.0, e["xmin"]], [0.0, sy, e["ymin"]], [0.0, 0.0, 1.0]]),
        input_axes=("x", "y"),
        output_axes=("x", "y"),
    )


def _read_polygons(path: Path):
    """Cell boundary polygons (``x, y, poly_ID``; y stored negated) as a GeoDataFrame in µm."""
    import geopandas as gpd
    import shapely

    df = pd.read_csv(path, dtype={"x": float, "y": float, "poly_ID": str})
    ids = df["poly_ID"].to_numpy()
    # consecutive runs of the same poly_ID form one ring
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    run_ids = ids[starts]
    if len(set(run_ids)) != len(run_ids):
        raise ValueError(f"{path}: polygon vertices are not contiguous per poly_ID.")
    ring_index = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(ids)]))
    coords = np.column_stack([df["x"].to_numpy(), -df["y"].to_numpy()])
    rings = shapely.linearrings(coords, indices=ring_index)  # closes rings if needed
    polys = shapely.polygons(rings)
    bad = ~shapely.is_valid(polys)
    if bad.any():  # a few rings self-intersect: repair, keeping polygonal parts only
        polys[bad] = shapely.make_valid(polys[bad], method="structure", keep_collapsed=False)
    return gpd.GeoDataFrame(geometry=polys, index=pd.Index(run_ids.astype(object), name=None))


def merfish_mouse_brain_mini(*, data_dir: str | os.PathLike | None = None, cells: bool = True) -> SpatialData:
    """Load the mini Vizgen MERFISH mouse brain crop (about 500 × 450 µm, 80,343 transcripts, 559 genes).

    Data: GiottoData ``inst/Mini_datasets/Vizgen/Raw`` (https://github.com/drieslab/GiottoData, pinned commit
    in :mod:`stdiff.datasets._registry`); package license MIT, no license stated for the Vizgen data.
    There is no H&E: the morphology images are the DAPI and polyT stains (z0).

    Parameters
    ----------
    data_dir
        The dataset folder (``vizgen_transcripts.gz``, ``images/``, ``cell_boundaries/``), e.g.
        ``$STDIFF_DATA_DIR/giotto_mini_merfish_mouse_brain``. When ``None``, the files are taken from
        ``$STDIFF_DATA_DIR/giotto_mini_merfish_mouse_brain`` or downloaded (pooch).
    cells
        Also load the z0 cell boundaries as polygons ``"cells"``.

    Returns
    -------
    :class:`spatialdata.SpatialData` in coordinate system ``"global"`` (µm) with

    - points ``"transcripts"``: ``x``, ``y`` (µm), ``gene`` (categorical, the feature key), ``global_z``;
    - images ``"dapi"`` (``c = ["DAPI"]``) and ``"polyT"`` (``c = ["polyT"]``): z0, uint8, 4603 × 4143 px at
      ≈0.1086 µm/px, multiscale (×1, ×2, ×4, ×8), affine px → µm from the published extent;
    - shapes ``"cells"`` (when ``cells=True``): 498 z0 cell polygons in µm, indexed by ``poly_ID``.
    """
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity

    t0 = time.perf_counter()
    tx_path = dataset_file(_FOLDER, "vizgen_transcripts.gz", data_dir=data_dir)
    dapi_path = dataset_file(_FOLDER, "images/mini_dataset_dapi_z0.jpg", data_dir=data_dir)
    polyt_path = dataset_file(_FOLDER, "images/mini_dataset_polyT_z0.jpg", data_dir=data_dir)
    cells_path = dataset_file(_FOLDER, "cell_boundaries/z0_polygons.gz", data_dir=data_dir) if cells else None

    tx, points = _read_transcripts(tx_path)
    images = {name: _stain_element(path, channel) for name, path, channel in
              (("dapi", dapi_path, "DAPI"), ("polyT", polyt_path, "polyT"))}  # fmt: skip
    shapes = {}
    if cells_path is not None:
        shapes["cells"] = ShapesModel.parse(_read_polygons(cells_path), transformations={"global": Identity()})

    sdata = SpatialData(
        images=images,
        points={"transcripts": points},
        shapes=shapes,
        attrs={
            "merfish": {
                "image_extent_um": dict(MERFISH_IMAGE_EXTENT_UM),
                "um_per_px": (MERFISH_IMAGE_EXTENT_UM["xmax"] - MERFISH_IMAGE_EXTENT_UM["xmin"])
                / images["dapi"]["scale0"]["image"].shape[-1],
                "z": 0,
            }
        },
    )
    logger.info(
        "MERFISH mini: %d transcripts, %d genes, %d cells, loaded in %.1f s",
        len(tx),
        tx["gene"].cat.categories.size,
        len(shapes.get("cells", ())),
        time.perf_counter() - t0,
    )
    return sdata


def _read_transcripts(path: Path):
    """The transcripts table (``x``, ``y`` in µm, ``gene``, ``global_z``) and its points element."""
    import dask.dataframe as dd
    from spatialdata.models import PointsModel
    from spatialdata.transformations import Identity

    tx = pd.read_csv(path, dtype={"global_x": float, "global_y": float, "gene": "category", "global_z": np.int16})
    missing = {"global_x", "global_y", "gene", "global_z"} - set(tx.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}.")
    tx = tx.rename(columns={"global_x": "x", "global_y": "y"})[["x", "y", "gene", "global_z"]]
    points = PointsModel.parse(
        dd.from_pandas(tx, npartitions=1),
        coordinates={"x": "x", "y": "y"},
        feature_key="gene",
        transformations={"global": Identity()},
    )
    return tx, points


def _stain_element(path: Path, channel: str):
    """A grey stain image (z0) as a multiscale one-channel element in µm."""
    from spatialdata.models import Image2DModel

    arr = _read_gray(path)
    return Image2DModel.parse(
        arr,
        dims=("c", "y", "x"),
        c_coords=[channel],
        transformations={"global": _image_transform(arr.shape[1:])},
        scale_factors=pyramid_scale_factors(arr.shape[1:], max_factor=8),
        chunks=(1, 1024, 1024),
    )
