"""Expression from an image of per-gene counts (``c`` = genes; Visium HD or binned transcripts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._spatial import affine_to_cs, channel_names, element_bounds, image_levels, resample_image
from .._utils import logger
from ._grid import Grid, Raster
from ._section import aggregate
from ._validate import check_counts, check_genes, check_integer

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod

_IMAGE_FIX = "Pass counts_key= with an image of raw counts per bin (e.g. the binned transcripts)."


class GeneImageSource:
    """A gene image summed onto the HR grid (truth); LR is the aggregate.

    When the image's bins tile the HR grid exactly (axis-aligned, HR pixel a whole number of bins, grid
    origin on a bin edge) counts are summed exactly, lazily (only LR-sized results are computed when
    no truth is asked for); otherwise densities are resampled (counts approximate, with a warning).
    """

    kind = "image"

    def __init__(self, sdata: sd_mod.SpatialData, key: str, cs: str, genes, *, allow_non_integer: bool = False) -> None:
        self.element = sdata[key]
        self.allow_non_integer = allow_non_integer
        self.key, self.cs = key, cs
        self.genes = check_genes(genes, channel_names(self.element), f"image {key!r}")
        self.bounds = element_bounds(sdata, key, cs)
        self.A = affine_to_cs(self.element, cs)
        self.bin_um = float(np.sqrt(abs(np.linalg.det(self.A[:2, :2]))))

    def extent(self, lr_um: float, hr_um: float) -> tuple[tuple[float, float], np.ndarray]:
        """Grid origin at the image's corner and its far corner."""
        x0, y0, x1, y1 = self.bounds
        return (x0, y0), np.array([x1, y1]) - 1e-9

    def outside_fraction(self, bounds: tuple[float, float, float, float]) -> float:
        """Fraction of the gene image's area outside ``bounds`` (xmin, ymin, xmax, ymax)."""
        ex0, ey0, ex1, ey1 = self.bounds
        ix0, iy0, ix1, iy1 = bounds
        overlap = max(0.0, min(ex1, ix1) - max(ex0, ix0)) * max(0.0, min(ey1, iy1) - max(ey0, iy0))
        return 1.0 - overlap / max((ex1 - ex0) * (ey1 - ey0), 1e-12)

    def raster(self, grid: Grid, *, truth: bool = True, min_counts: float = 1.0) -> Raster:
        """Sum the bins onto ``grid``'s HR pixels (and LR)."""
        A, hr_um = self.A, grid.hr_um
        ratio = hr_um / self.bin_um
        off = (grid.origin[0] - A[0, 2]) / self.bin_um, (grid.origin[1] - A[1, 2]) / self.bin_um
        aligned = (
            abs(A[0, 1]) < 1e-9
            and abs(A[1, 0]) < 1e-9
            and A[0, 0] > 0
            and A[1, 1] > 0
            and abs(ratio - round(ratio)) < 1e-6
            and all(abs(o - round(o)) < 1e-6 for o in off)
        )
        if aligned:
            k = int(round(ratio))
            if truth:
                hr = self._sum_aligned(k, (int(round(off[0])), int(round(off[1]))), grid.shape_hr)
                lr = aggregate(hr, grid.factor)
            else:
                hr = None
                lr = self._sum_aligned(k * grid.factor, (int(round(off[0])), int(round(off[1]))), grid.shape_lr)
        else:
            logger.warning(
                "Gene image %r is not aligned with the HR grid (bin %.3g µm, HR %.3g µm): resampling densities "
                "(counts are approximate).",
                self.key,
                self.bin_um,
                hr_um,
            )
            data = self._data()
            check_counts(np.asarray(data), f"Image {self.key!r}")
            check_integer(data, f"Image {self.key!r}", allow_non_integer=self.allow_non_integer, fix=_IMAGE_FIX)
            el = self.element.sel(c=self.genes) if hasattr(self.element, "sel") else self.element
            density = resample_image(el, self.cs, origin=grid.origin, pixel_um=hr_um, shape=grid.shape_hr, fill=0.0)
            hr = density.astype(np.float32) * ratio**2
            lr = aggregate(hr, grid.factor)
            hr = hr if truth else None
        return Raster(lr=lr, hr=hr, mask_lr=lr.sum(0) >= min_counts, dense=True)

    def _data(self):
        return image_levels(self.element)[0].sel(c=self.genes).data

    def _sum_aligned(self, k: int, offset: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
        """Sum ``k × k`` blocks of bins into a ``shape`` grid whose pixel (0, 0) starts at bin ``offset``."""
        import dask.array as da

        data = self._data()
        data = data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=(-1, 2048, 2048))
        data = data.astype(np.float32)
        c0, r0 = offset
        H, W = shape
        _, h, w = data.shape
        # crop / pad the bins to exactly the grid (bins outside the grid are dropped, missing ones are 0)
        src = data[
            :, max(r0, 0) : max(min(r0 + H * k, h), max(r0, 0)), max(c0, 0) : max(min(c0 + W * k, w), max(c0, 0))
        ]
        pad_top, pad_left = max(-r0, 0), max(-c0, 0)
        pad = ((0, 0), (pad_top, H * k - pad_top - src.shape[1]), (pad_left, W * k - pad_left - src.shape[2]))
        if any(p < 0 for pp in pad for p in pp):  # pragma: no cover - grid starts past the image
            raise ValueError(f"Gene image {self.key!r} does not overlap the grid.")
        if any(p for pp in pad for p in pp):
            src = da.pad(src, pad)
        summed = da.coarsen(np.sum, src, {1: k, 2: k}) if k > 1 else src
        bad = ~da.isfinite(src).all()
        frac = (abs(src - da.floor(src + 0.5)) > 1e-4).any()
        out, nonfinite, low, non_int = da.compute(summed, bad, src.min() if src.size else 0.0, frac)
        if nonfinite:
            raise ValueError(f"Image {self.key!r} contains NaN or infinite counts; fill or drop them before tiling.")
        if low < 0:
            raise ValueError(
                f"Image {self.key!r} contains negative counts (min {float(low):g}); stdiff expects raw counts "
                "(use a raw layer= or undo scaling/centering)."
            )
        if non_int:
            check_integer(src, f"Image {self.key!r}", allow_non_integer=self.allow_non_integer, fix=_IMAGE_FIX)
        return np.asarray(out, dtype=np.float32)
