"""Assemble a spot-based section (image + circles + linked table) as a SpatialData."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def spots_sdata(
    he: Any,
    counts: np.ndarray,
    genes: pd.Index,
    spot_ids: np.ndarray,
    centres_um: np.ndarray,
    radius_um: float,
    obs: dict[str, Any],
    attrs: dict[str, Any],
    coordinate_system: str = "global",
):
    """Image ``"he"``, circles ``"spots"`` (µm) and table ``"table"`` (int32 CSR counts) linked to them."""
    import anndata as ad
    import geopandas as gpd
    import scipy.sparse as sp
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    index = pd.Index(np.asarray(spot_ids, dtype=object), name=None)
    gdf = gpd.GeoDataFrame(
        {"radius": np.full(len(index), radius_um)},
        geometry=gpd.points_from_xy(centres_um[:, 0], centres_um[:, 1]),
        index=index,
    )
    shapes = ShapesModel.parse(gdf, transformations={coordinate_system: Identity()})
    table_obs = pd.DataFrame(
        {**obs, "region": pd.Categorical(["spots"] * len(index)), "spot_id": index.to_numpy()}, index=index
    )
    adata = ad.AnnData(
        X=sp.csr_matrix(np.asarray(counts, dtype=np.int32)), obs=table_obs, var=pd.DataFrame(index=genes)
    )
    adata.var_names_make_unique()
    adata.obsm["spatial"] = centres_um
    table = TableModel.parse(adata, region="spots", region_key="region", instance_key="spot_id")
    return SpatialData(images={"he": he}, shapes={"spots": shapes}, tables={"table": table}, attrs=attrs)
