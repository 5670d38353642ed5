"""``sd.tl.measure``: what a super-resolved result predicts under any footprint (spots, cells, held-out spots).

A result image holds counts per HR pixel, so the counts it predicts under a footprint are the
pixels' counts weighted by the part of each pixel the footprint covers
(:class:`~stdiff.spots.Footprints`, exact disc–square areas). A user checks a result against their own
spots this way, holds spots out and predicts them, or sums a map over cell outlines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import Key
from .._docs import fill_doc
from .._spatial import affine_to_cs, channel_names, finest_level, result_provenance, table_region

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    import spatialdata as sd_mod

P = Key.prov


@fill_doc
def measure(
    sdata: sd_mod.SpatialData,
    key: str = Key.img.DEFAULT,
    shapes_key: str | None = None,
    *,
    genes: Sequence[str] | None = None,
) -> ad.AnnData:
    """Predicted counts (and their sd) of a :func:`~stdiff.tl.superresolve` result under every shape of an element.

    Parameters
    ----------
    $sdata_result
    $key
    shapes_key
        A shapes element: circles (a ``radius`` column) or polygons (each taken as the disc of its
        area, axis-aligned squares as squares). Default: the shapes the result's spots came from.
    genes
        Genes to measure (default: all of the result).

    Returns
    -------
    AnnData (shapes × genes) with ``X`` the predicted counts under each shape,
    ``layers["std"]`` their predictive sd (when the result has a std image: counting noise
    independent per pixel, the error of the mean shared within the shape), ``obs["fraction"]`` the
    part of each shape on the result's grid (counts are only predicted for that part) and
    ``obsm["spatial"]`` the shape centres in the result's coordinate system.
    """
    import anndata as ad

    from ..spots import Footprints, SpotGeometry, Spots

    prov = result_provenance(sdata, key)
    shapes_key = _shapes_of(sdata, prov, shapes_key)
    cs = prov[P.COORDINATE_SYSTEM]
    names = channel_names(sdata.images[key])
    genes = list(names) if genes is None else list(genes)
    missing = [g for g in genes if g not in names]
    if missing:
        raise KeyError(f"Genes {missing[:10]} are not in result {key!r} (it has {len(names)} genes).")
    idx = [names.index(g) for g in genes]
    xy, radius, square = _shape_geometry(sdata.shapes[shapes_key], cs)
    mean = finest_level(sdata.images[key], np.float64)[idx]
    shape = mean.shape[1:]
    geometry = SpotGeometry("generic", float(np.median(2 * radius)), float(np.median(2 * radius)), "irregular",
                            "square" if square else "disc", len(radius))  # fmt: skip
    fp = Footprints(Spots(xy, radius, np.zeros((0, len(radius))), geometry), tuple(prov[P.ORIGIN]), prov[P.HR_UM], shape)
    out = ad.AnnData(X=fp.measure(mean).T.astype(np.float32))
    out.var_names = genes
    out.obs_names = [str(i) for i in sdata.shapes[shapes_key].index]
    out.obs["fraction"] = fp.fraction
    out.obsm["spatial"] = xy.T
    std_key = Key.img.std(key)
    if std_key in sdata.images:
        sd_ = finest_level(sdata.images[std_key], np.float64)[idx]
        excess = np.sqrt(np.maximum(sd_ * sd_ - np.maximum(mean, 0.0), 0.0))
        var = fp.measure(np.maximum(mean, 0.0)) + fp.measure(excess) ** 2
        out.layers["std"] = np.sqrt(var).T.astype(np.float32)
    out.uns[Key.attrs.STDIFF] = {"result": key, "shapes_key": shapes_key, P.COORDINATE_SYSTEM: cs}
    return out


def _shapes_of(sdata, prov: dict, shapes_key: str | None) -> str:
    """``shapes_key``, or the shapes element the result's source table annotates."""
    if shapes_key is None:
        if prov.get(P.SOURCE) != "spots" or prov.get(P.SOURCE_KEY) not in sdata.tables:
            raise ValueError("Pass shapes_key= (the result was not computed from a table of spots).")
        shapes_key = table_region(sdata, prov[P.SOURCE_KEY])
    if shapes_key not in sdata.shapes:
        raise KeyError(f"No shapes element {shapes_key!r}; the SpatialData has {list(sdata.shapes)}.")
    return shapes_key


def _shape_geometry(shapes, cs: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Centres ``(2, n)``, radii ``(n,)`` (half the side for squares) in ``cs`` and whether they are squares."""
    geom = shapes.geometry
    centres = np.stack([geom.centroid.x.to_numpy(), geom.centroid.y.to_numpy()])
    square = False
    if "radius" in shapes.columns:
        radius = shapes["radius"].to_numpy(float)
    else:
        area = geom.area.to_numpy(float)
        b = geom.bounds
        w, h = (b["maxx"] - b["minx"]).to_numpy(), (b["maxy"] - b["miny"]).to_numpy()
        square = bool(len(area) and np.allclose(w, h, rtol=1e-3) and np.allclose(area, w * h, rtol=1e-3))
        radius = np.sqrt(area) / 2 if square else np.sqrt(area / np.pi)
    A = affine_to_cs(shapes, cs)
    xy = A[:2, :2] @ centres + A[:2, 2:3]
    return xy, radius * float(np.sqrt(abs(np.linalg.det(A[:2, :2])))), square
