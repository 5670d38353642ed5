"""Expression from a table annotating spot shapes (Visium / legacy ST / Visium HD bins as circles or squares)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._spatial import affine_to_cs, table_region
from ..spots import Footprints, Spots, density_at, detect_geometry
from ._grid import Grid, Raster
from ._lr_maps import spread_over_spots
from ._section import aggregate
from ._units import spot_radius_um
from ._validate import check_counts, check_integer, check_spot_centres, table_genes

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod


class SpotsSource:
    """Spot counts of a table with the spots' centres and radii in a coordinate system.

    ``spots_as="lr"``: the spots are the measurements (inference, no truth). Spots with gaps between
    them (Visium, legacy ST) stay first-class (:class:`~stdiff.spots.Spots`, related to the HR grid by
    their footprints); contiguous square bins (Visium HD) are spread over the HR pixels they cover and
    summed per LR pixel (the square-bin path of gene images). ``"hr"``: each spot is mapped onto one HR
    pixel (the measured spots are the truth and LR is their aggregate; used to score against spots).
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
        gene_symbols: str | None = None,
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
        self.genes, columns = table_genes(genes, table, f"table {table_key!r}", gene_symbols)
        sub = table[:, columns]
        X = sub.layers[layer] if layer is not None else sub.X
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        X = np.asarray(X, dtype=np.float64)
        what = f"Table {table_key!r}" + (f" layer {layer!r}" if layer else "")
        check_counts(X, what)
        check_integer(X, what, allow_non_integer=allow_non_integer, fix=_raw_counts_hint(table, table_key, layer))
        if X.shape[0] == 0:
            raise ValueError(f"Table {table_key!r} has no spot: there is no expression to rasterise.")
        instance = table.obs[attrs["instance_key"]].to_numpy()
        absent = shapes.index.get_indexer(instance) < 0
        if absent.any():
            raise ValueError(
                f"{int(absent.sum())} spot(s) of table {table_key!r} are not in shapes {region!r} (e.g. "
                f"{instance[absent][0]!r}): the table's {attrs['instance_key']!r} must name the shapes' index. Drop "
                "those rows or rebuild the section (stdiff.io.from_spots)."
            )
        geom = shapes.loc[instance]
        centres = np.stack([geom.geometry.centroid.x.to_numpy(), geom.geometry.centroid.y.to_numpy()])
        if "radius" in geom.columns:
            radius = geom["radius"].to_numpy(float)
            self.shape = "disc"
        else:
            radius = np.sqrt(geom.geometry.area.to_numpy(float) / np.pi)
            self.shape = "square" if _are_squares(geom.geometry) else "disc"
            if self.shape == "square":
                radius = np.sqrt(geom.geometry.area.to_numpy(float)) / 2
        A = affine_to_cs(shapes, cs)
        self.key, self.region, self.spots_as = table_key, region, spots_as
        self.xy = A[:2, :2] @ centres + A[:2, 2:3]
        check_spot_centres(self.xy, instance, f"table {table_key!r}")
        self.values = X.T
        self.radius = radius * float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
        physical = spot_radius_um(sdata, cs, region)
        if physical is not None:  # e.g. Visium circles drawn for a 65 µm spot; the spots are 55 µm
            self.radius = np.full_like(self.radius, physical)
        self.geometry = detect_geometry(self.xy, self.radius, shape=self.shape)
        if self.geometry.platform == "visium":  # circles drawn for the 65 µm spot of Space Ranger: 55 µm discs
            self.radius = np.full_like(self.radius, self.geometry.radius_um)
        self.ids = np.asarray(instance)
        self.totals = _library_sizes(table, layer)

    @property
    def native(self) -> bool:
        """Whether the spots stay measurements (discs with gaps, ``spots_as="lr"``)."""
        return self.spots_as == "lr" and self.geometry.has_gaps

    def spots(self) -> Spots:
        """The spots as measurements (centres, physical radii and counts in µm)."""
        return Spots(self.xy, np.asarray(self.radius, float), self.values, self.geometry, self.ids, self.totals)

    def extent(self, lr_um: float, hr_um: float) -> tuple[tuple[float, float], np.ndarray]:
        """Grid origin and far corner: a pitch and a spot radius around the spots (native), else half a pixel.

        A native grid starts on a multiple of the HR pixel, so grids of one section line up with HR
        rasters of it.
        """
        if self.native:  # one lattice step beyond the outermost spots: a missing edge spot is still on the grid
            margin = float(self.geometry.pitch_um) + float(np.max(self.radius))
            lo, hi = self.xy.min(axis=1) - margin, self.xy.max(axis=1) + margin
            lo = np.floor(lo / hr_um + 1e-9) * hr_um
            return (float(lo[0]), float(lo[1])), hi
        margin = (lr_um if self.spots_as == "lr" else hr_um) / 2
        lo, hi = self.xy.min(axis=1) - margin, self.xy.max(axis=1) + margin
        return (float(lo[0]), float(lo[1])), hi

    def outside_fraction(self, bounds: tuple[float, float, float, float]) -> float:
        """Fraction of spot centres outside ``bounds`` (xmin, ymin, xmax, ymax)."""
        x0, y0, x1, y1 = bounds
        inside = (self.xy[0] >= x0) & (self.xy[0] <= x1) & (self.xy[1] >= y0) & (self.xy[1] <= y1)
        return 1.0 - float(inside.mean())

    def raster(self, grid: Grid, *, truth: bool = True, min_counts: float = 1.0) -> Raster:
        """The spots on ``grid``: native (footprints), spread (contiguous bins) or one HR pixel each (truth)."""
        if self.native:  # an LR-sized summary; sections compute their exact spot-native maps
            spots = self.spots()
            mask_lr = spot_reach_lr(spots, grid)
            h, w = grid.shape_lr
            jj, ii = np.meshgrid(np.arange(w), np.arange(h))
            centres = np.stack([grid.origin[0] + (jj.ravel() + 0.5) * grid.lr_um,
                                grid.origin[1] + (ii.ravel() + 0.5) * grid.lr_um], 1)  # fmt: skip
            lr = (density_at(spots, centres) * grid.lr_um**2).reshape(-1, h, w) * mask_lr[None]
            return Raster(lr=lr.astype(np.float32), hr=None, mask_lr=mask_lr, lr_from="spots", spots=spots)
        if self.spots_as == "lr":  # contiguous bins (Visium HD): spread over the HR pixels they cover
            fp = Footprints(self.spots(), grid.origin, grid.hr_um, grid.shape_hr)
            per_px = self.values / np.maximum(fp.full_area_px, 1e-12)[None]
            hr = fp.spread(per_px).astype(np.float32)
            lr = aggregate(hr, grid.factor)
            return Raster(lr=lr, hr=hr if truth else None, mask_lr=lr.sum(0) >= min_counts, dense=True)
        # spots_as="hr": each spot is one HR pixel of the truth
        hr, spot_mask_hr = spots_to_grid(self.xy, self.values, self.radius, grid.origin, grid.hr_um, grid.shape_hr)
        return Raster(
            lr=aggregate(hr, grid.factor),
            hr=hr if truth else None,
            mask_lr=aggregate(spot_mask_hr.astype(np.int32), grid.factor) > 0,
            mask_truth=spot_mask_hr if truth else None,
        )


def spot_reach_lr(spots: Spots, grid: Grid) -> np.ndarray:
    """LR pixels of ``grid`` with an HR pixel within the spots' reach (:attr:`SpotGeometry.reach_um`)."""
    from scipy.spatial import cKDTree

    H, W = grid.shape_hr
    out = np.zeros(grid.shape_lr, dtype=bool)
    tree = cKDTree(spots.xy.T)
    step = max(1, int(4e6 // max(W, 1)))
    for r0 in range(0, H, step):  # rows of HR pixels at a time: memory stays small on a whole slide
        rows = np.arange(r0, min(H, r0 + step))
        jj, ii = np.meshgrid(np.arange(W), rows)
        pts = np.stack(
            [grid.origin[0] + (jj.ravel() + 0.5) * grid.hr_um, grid.origin[1] + (ii.ravel() + 0.5) * grid.hr_um], 1
        )
        d, _ = tree.query(pts, k=1, distance_upper_bound=spots.geometry.reach_um * 1.0001)
        near = (d <= spots.geometry.reach_um).reshape(len(rows), W)
        lr_rows = rows // grid.factor
        np.logical_or.at(out, (np.repeat(lr_rows, W), np.tile(np.arange(W) // grid.factor, len(rows))), near.ravel())
    return out


def spot_section_maps(
    spots: Spots, grid: Grid, he: np.ndarray, he_scale: int, *, native_lr: bool = True, mask_hr: np.ndarray | None = None
):
    """``(footprints, mask_hr, lr, mask_lr)`` of the spots on ``grid`` with its histology ``he``.

    ``spots`` may extend beyond the grid (they shape the interpolation near its edges); the mask is
    the tissue the histology shows (:func:`spot_tissue_mask`) and ``lr`` the spot-native map summed
    per LR pixel, or with ``native_lr=False`` an array with no genes ``(0, h, w)``: that map costs a
    full ``(G, H, W)`` pass, which a model reading only the spots (:class:`~stdiff.models.SpotRate`)
    does not need, and an empty gene axis fails loudly wherever it would be read. ``mask_hr``: the
    tissue mask to use (a window's crop of the whole section's), else :func:`spot_tissue_mask` of ``he``.
    """
    from ..spots import spot_margin
    from ._read_histology import spot_tissue_mask

    H, W = grid.shape_hr
    far = (grid.origin[0] + W * grid.hr_um, grid.origin[1] + H * grid.hr_um)
    fp = Footprints(spots.within(grid.origin, far, spot_margin(spots.geometry)), grid.origin, grid.hr_um, (H, W))
    mask_hr = spot_tissue_mask(fp, he, he_scale) if mask_hr is None else np.asarray(mask_hr, bool).copy()
    lr = spot_native_lr(fp, mask_hr, grid.factor) if native_lr else np.zeros((0, *grid.shape_lr), np.float32)
    return fp, mask_hr, lr, aggregate(mask_hr.astype(np.int32), grid.factor) > 0


def spot_native_lr(fp: Footprints, mask_hr: np.ndarray, factor: int) -> np.ndarray:
    """The spot-native map summed per LR pixel: each spot's counts on its footprint, the gaps interpolated.

    (:func:`~stdiff.pp._lr_maps.spread_over_spots` over ``mask_hr``.)
    """
    return aggregate(spread_over_spots(fp, mask_hr), factor).astype(np.float32)


def _library_sizes(table, layer: str | None) -> np.ndarray:
    """``(n,)`` each spot's count over every gene of the table (``layer``'s, else ``X``)."""
    X = table.layers[layer] if layer is not None else table.X
    totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    return np.maximum(np.nan_to_num(totals, nan=0.0, posinf=0.0), 0.0)


def _are_squares(geoms) -> bool:
    """Whether polygons are axis-aligned squares (Visium HD bins as spatialdata-io writes them)."""
    b = geoms.bounds
    w, h = (b["maxx"] - b["minx"]).to_numpy(), (b["maxy"] - b["miny"]).to_numpy()
    area = geoms.area.to_numpy()
    return bool(len(area) and np.allclose(w, h, rtol=1e-3) and np.allclose(area, w * h, rtol=1e-3))


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
