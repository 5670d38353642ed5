"""Expression from a points element of transcripts (Xenium / MERFISH / CosMx-like)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._spatial import affine_to_cs
from ._grid import Grid, Raster
from ._section import aggregate
from ._validate import check_genes

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod


class PointsSource:
    """Transcripts of a points element, moved into a coordinate system and binned onto grids.

    Binning on the HR grid gives the truth; the LR map is its aggregate (binning the HR pixel indices,
    so it is exactly the aggregate even without building the HR raster).
    """

    kind = "points"

    def __init__(self, sdata: sd_mod.SpatialData, key: str, cs: str, genes) -> None:
        pts = sdata.points[key]
        feature_key = pts.attrs.get("spatialdata_attrs", {}).get("feature_key")
        if feature_key is None:
            raise ValueError(f"Points {key!r} have no feature_key; parse them with PointsModel(feature_key='gene').")
        df = pts[["x", "y", feature_key]].compute()
        names = df[feature_key].astype("category")
        self.genes = check_genes(genes, list(names.cat.categories), f"points {key!r}")
        A = affine_to_cs(pts, cs)
        xy = A[:2, :2] @ df[["x", "y"]].to_numpy(float).T + A[:2, 2:3]
        lut = {g: i for i, g in enumerate(self.genes)}
        code = names.map(lut).to_numpy()
        keep = ~np.isnan(code.astype(float))
        self.key = key
        self.xy, self.code = xy[:, keep], code[keep].astype(int)
        if self.xy.shape[1] == 0:
            raise ValueError(
                f"Points {key!r} hold no transcript of the requested genes: there is no expression to rasterise."
            )

    def extent(self, lr_um: float, hr_um: float) -> tuple[tuple[float, float], np.ndarray]:
        """Grid origin (snapped to the HR grid) and the far corner of the transcripts."""
        lo, hi = self.xy.min(axis=1), self.xy.max(axis=1)
        return (float(np.floor(lo[0] / hr_um) * hr_um), float(np.floor(lo[1] / hr_um) * hr_um)), hi

    def outside_fraction(self, bounds: tuple[float, float, float, float]) -> float:
        """Fraction of transcripts outside ``bounds`` (xmin, ymin, xmax, ymax)."""
        x0, y0, x1, y1 = bounds
        xy = self.xy
        inside = (xy[0] >= x0) & (xy[0] <= x1) & (xy[1] >= y0) & (xy[1] <= y1)
        return 1.0 - float(inside.mean())

    def raster(self, grid: Grid, *, truth: bool = True, min_counts: float = 1.0) -> Raster:
        """Bin onto ``grid`` (HR truth and LR aggregate, or LR only with ``truth=False``)."""
        H, W = grid.shape_hr
        col = np.floor((self.xy[0] - grid.origin[0]) / grid.hr_um).astype(np.int64)
        row = np.floor((self.xy[1] - grid.origin[1]) / grid.hr_um).astype(np.int64)
        ok = (col >= 0) & (col < W) & (row >= 0) & (row < H)
        G = len(self.genes)
        if truth:
            hr = _bincount(self.code[ok], row[ok], col[ok], G, (H, W))
            lr = aggregate(hr, grid.factor)
        else:
            hr = None
            lr = _bincount(self.code[ok], row[ok] // grid.factor, col[ok] // grid.factor, G, grid.shape_lr)
        return Raster(lr=lr, hr=hr, mask_lr=lr.sum(0) >= min_counts, dense=True)


def _bincount(code: np.ndarray, row: np.ndarray, col: np.ndarray, n_genes: int, shape: tuple[int, int]) -> np.ndarray:
    H, W = shape
    flat = code * (H * W) + row * W + col
    return np.bincount(flat, minlength=n_genes * H * W).reshape(n_genes, H, W).astype(np.float32)
