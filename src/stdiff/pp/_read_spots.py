"""Expression from a table annotating spot shapes (Visium / legacy ST / Visium HD bins as circles or squares)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._spatial import affine_to_cs
from ._grid import Grid, Raster
from ._section import aggregate
from ._units import spot_radius_um
from ._validate import check_counts, check_genes, check_integer

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod


def table_region(sdata: sd_mod.SpatialData, table_key: str) -> str | None:
    """The single element a table annotates (``None`` when it annotates several or none)."""
    attrs = sdata.tables[table_key].uns.get("spatialdata_attrs", {})
    region = attrs.get("region")
    if isinstance(region, list | tuple | np.ndarray):
        region = region[0] if len(region) == 1 else None
    return region


class SpotsSource:
    """Spot counts of a table with the spots' centres and radii in a coordinate system.

    ``spots_as="lr"`` maps the spots onto the LR grid (inference, no truth); ``"hr"`` onto the HR grid
    (the measured spots are the truth and LR is their aggregate).
    """

    kind = "spots"

    def __init__(
        self,
        sdata: sd_mod.SpatialData,
        table_key: str,
        cs: str,
        genes,
        *,
        layer: str | None = None,
        spots_as: str = "lr",
        allow_non_integer: bool = False,
    ) -> None:
        if spots_as not in ("lr", "hr"):
            raise ValueError(f"spots_as must be 'lr' or 'hr', got {spots_as!r}.")
        table = sdata.tables[table_key]
        region = table_region(sdata, table_key)
        if region is None or region not in sdata.shapes:
            raise ValueError(
                f"Table {table_key!r} is not annotating one shapes element (region={region!r}); "
                "link it with TableModel.parse(region=..., region_key=..., instance_key=...)."
            )
        if layer is not None and layer not in table.layers:
            raise KeyError(f"layer={layer!r} is not a layer of table {table_key!r}; it has {list(table.layers)}.")
        shapes = sdata.shapes[region]
        attrs = table.uns["spatialdata_attrs"]
        self.genes = check_genes(genes, list(table.var_names), f"table {table_key!r}")
        sub = table[:, self.genes]
        X = sub.layers[layer] if layer is not None else sub.X
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        X = np.asarray(X, dtype=np.float64)
        what = f"Table {table_key!r}" + (f" layer {layer!r}" if layer else "")
        check_counts(X, what)
        check_integer(X, what, allow_non_integer=allow_non_integer, fix=_raw_counts_hint(table, table_key, layer))
        if X.shape[0] == 0:
            raise ValueError(f"Table {table_key!r} has no spot: there is no expression to rasterise.")
        instance = table.obs[attrs["instance_key"]].to_numpy()
        geom = shapes.loc[instance]
        centres = np.stack([geom.geometry.centroid.x.to_numpy(), geom.geometry.centroid.y.to_numpy()])
        if "radius" in geom.columns:
            radius = geom["radius"].to_numpy(float)
        else:
            radius = np.sqrt(geom.geometry.area.to_numpy(float) / np.pi)
        A = affine_to_cs(shapes, cs)
        self.key, self.region, self.spots_as = table_key, region, spots_as
        self.xy = A[:2, :2] @ centres + A[:2, 2:3]
        self.values = X.T
        self.radius = radius * float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
        physical = spot_radius_um(sdata, cs, region)
        if physical is not None:  # e.g. Visium circles drawn for a 65 µm spot; the spots are 55 µm
            self.radius = np.full_like(self.radius, physical)

    def extent(self, lr_um: float, hr_um: float) -> tuple[tuple[float, float], np.ndarray]:
        """Grid origin (half a pixel before the first spot centre) and the far corner."""
        grid_um = lr_um if self.spots_as == "lr" else hr_um
        lo, hi = self.xy.min(axis=1) - grid_um / 2, self.xy.max(axis=1) + grid_um / 2
        return (float(lo[0]), float(lo[1])), hi

    def outside_fraction(self, bounds: tuple[float, float, float, float]) -> float:
        """Fraction of spot centres outside ``bounds`` (xmin, ymin, xmax, ymax)."""
        x0, y0, x1, y1 = bounds
        inside = (self.xy[0] >= x0) & (self.xy[0] <= x1) & (self.xy[1] >= y0) & (self.xy[1] <= y1)
        return 1.0 - float(inside.mean())

    def raster(self, grid: Grid, *, truth: bool = True, min_counts: float = 1.0) -> Raster:
        """Map the spots onto the LR grid (``spots_as="lr"``) or the HR grid (truth; LR aggregated)."""
        if self.spots_as == "hr":
            hr, spot_mask_hr = spots_to_grid(self.xy, self.values, self.radius, grid.origin, grid.hr_um, grid.shape_hr)
            return Raster(
                lr=aggregate(hr, grid.factor),
                hr=hr if truth else None,
                mask_lr=aggregate(spot_mask_hr.astype(np.int32), grid.factor) > 0,
                mask_truth=spot_mask_hr if truth else None,
            )
        lr, mask_lr = spots_to_grid(self.xy, self.values, self.radius, grid.origin, grid.lr_um, grid.shape_lr)
        return Raster(lr=lr, hr=None, mask_lr=mask_lr, lr_from="spots")


def _raw_counts_hint(table, table_key: str, layer: str | None) -> str:
    layers = [k for k in table.layers if k != layer]
    hint = f"Pass layer= with the raw counts (table {table_key!r} has layers {layers})"
    if table.raw is not None:
        hint += (
            f", or put the raw counts back from adata.raw (e.g. t = sdata.tables[{table_key!r}]; "
            "t.layers['counts'] = t.raw[:, t.var_names].X, then layer='counts')"
        )
    else:
        hint += " or keep the raw counts in adata.raw / a layer before normalising"
    return hint + "."


def spots_to_grid(xy, values, radius, origin, pixel_um, shape):
    """Map spot counts onto a grid: Gaussian-weighted mean of nearby spots, scaled to pixel area.

    A pixel takes the weighted mean (σ = pixel/4, cut-off 0.75 pixel) of the spots near its centre,
    multiplied by ``pixel area / spot area`` so values are counts per pixel. Pixels with no spot within
    the cut-off are off tissue. Returns ``(values (G, H, W), mask (H, W))``.
    """
    from scipy.spatial import cKDTree

    H, W = shape
    jj, ii = np.meshgrid(np.arange(W), np.arange(H))
    centres = np.stack([origin[0] + (jj.ravel() + 0.5) * pixel_um, origin[1] + (ii.ravel() + 0.5) * pixel_um], 1)
    tree = cKDTree(xy.T)
    cutoff = 0.75 * pixel_um
    sigma = pixel_um / 4.0
    pairs = tree.query_ball_point(centres, r=cutoff)
    G = values.shape[0]
    out = np.zeros((G, H * W), dtype=np.float64)
    mask = np.zeros(H * W, dtype=bool)
    area = np.pi * np.asarray(radius, float) ** 2
    for p, idx in enumerate(pairs):
        if not idx:
            continue
        idx = np.asarray(idx)
        d2 = ((xy[:, idx].T - centres[p]) ** 2).sum(1)
        w = np.exp(-d2 / (2 * sigma**2))
        w = w / w.sum()
        out[:, p] = (values[:, idx] * (pixel_um**2 / area[idx])) @ w
        mask[p] = True
    return out.reshape(G, H, W).astype(np.float32), mask.reshape(H, W)
