"""The input of inference, read lazily: the LR map of a whole section, and its histology window by window.

:func:`open_input` reads only what is LR-sized (the expression mapped onto the LR grid, no HR truth,
no histology); :meth:`InputGrid.section` then builds the :class:`~stdiff.pp.Section` of any window
of LR pixels, reading the histology under it from the coarsest pyramid level that is fine enough.
Memory therefore follows the window, not the slide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._grid import Grid, Raster
from ._rasterize import read_on_grid
from ._read_histology import read_histology, tissue_masks
from ._read_spots import spot_section_maps
from ._section import Section

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod


@dataclass
class InputGrid:
    """A section's LR map on its grid, with what is needed to read its histology window by window."""

    sdata: Any
    genes: list[str]
    grid: Grid
    lr: np.ndarray
    mask_lr: np.ndarray
    he_scale: int
    image_key: str
    coordinate_system: str
    source: str
    source_key: str
    lr_from: str
    he_range: tuple[np.ndarray, np.ndarray] | None = None
    spots: Any = None
    #: the whole section's HR tissue mask (spots), once a whole section was read: its windows crop it, so every
    #: window draws the same tissue (the mask's threshold is set on the whole section, not on each window)
    tissue_hr: np.ndarray | None = None

    @property
    def geometry(self):
        """The spots' :class:`~stdiff.spots.SpotGeometry` (``None`` for square LR maps)."""
        return None if self.spots is None else self.spots.geometry

    @property
    def shape_lr(self) -> tuple[int, int]:
        """LR grid shape ``(h, w)``."""
        return self.grid.shape_lr

    def section(
        self, rows: slice | None = None, cols: slice | None = None, *, name: str = "input", native_lr: bool = True
    ) -> Section:
        """The :class:`Section` of LR rows ``rows`` and columns ``cols`` (default: all), histology included.

        ``native_lr=False`` (spots only): the section's ``lr`` has no genes, ``(0, h, w)``, for a model that
        reads the spots themselves (its ``reads_lr_map`` is ``False``); the spot-native map is not computed.
        """
        h, w = self.shape_lr
        rows = slice(0, h) if rows is None else slice(*rows.indices(h)[:2])
        cols = slice(0, w) if cols is None else slice(*cols.indices(w)[:2])
        sub = self.grid.crop(rows, cols)
        lr = self.lr[:, rows, cols]
        mask_lr = self.mask_lr[rows, cols]
        he = read_histology(
            self.sdata, self.image_key, self.coordinate_system, sub, self.he_scale, value_range=self.he_range
        )
        fp = None
        if self.spots is not None:  # the window's own spot-native maps (spots around it included)
            f = sub.factor
            crop = None if self.tissue_hr is None else self.tissue_hr[rows.start * f : rows.stop * f,
                                                                       cols.start * f : cols.stop * f]  # fmt: skip
            fp, mask_hr, lr, mask_lr = spot_section_maps(
                self.spots, sub, he, self.he_scale, native_lr=native_lr, mask_hr=crop
            )
            if self.tissue_hr is None and (rows, cols) == (slice(0, h), slice(0, w)):
                self.tissue_hr = mask_hr.copy()
        else:
            mask_hr, _ = tissue_masks(Raster(lr=lr, hr=None, mask_lr=mask_lr), he, sub.factor, self.he_scale)
        section = Section(
            genes=list(self.genes),
            lr=np.ascontiguousarray(lr, dtype=np.float32),
            hr=None,
            he=he,
            mask_lr=mask_lr.copy(),
            mask_hr=mask_hr,
            origin=sub.origin,
            lr_um=sub.lr_um,
            factor=sub.factor,
            he_scale=self.he_scale,
            coordinate_system=self.coordinate_system,
            image_key=self.image_key,
            source=self.source,
            lr_from=self.lr_from,
            name=name,
            meta={"source_key": self.source_key},
            spots=None if fp is None else fp.spots,
        )
        section._footprints = fp
        return section


def open_input(
    sdata: sd_mod.SpatialData,
    genes: Sequence[str] | None = None,
    *,
    image_key: str | None = None,
    counts_key: str | None = None,
    table_key: str | None = None,
    coordinate_system: str | None = None,
    lr_um: float | None = None,
    factor: int | None = None,
    hr_um: float | None = None,
    he_scale: int = 4,
    layer: str | None = None,
    allow_non_integer: bool = False,
    min_counts: float = 1.0,
    gene_symbols: str | None = None,
) -> InputGrid:
    """Read the LR map of a section for inference (spots map onto the LR grid; HR sources are aggregated).

    Takes the arguments of :func:`~stdiff.pp.rasterize` (with ``spots_as="lr"``) and makes the same
    checks; the histology is not read here (see :meth:`InputGrid.section`). For spots the LR map
    is an LR-sized summary (tiling, chunk planning); each window's section computes its exact
    spot-native maps.
    """
    read = read_on_grid(
        sdata, genes, lr_um=lr_um, factor=factor, hr_um=hr_um, he_scale=he_scale, he_um=None, truth=False,
        min_counts=min_counts, image_key=image_key, counts_key=counts_key, table_key=table_key,
        coordinate_system=coordinate_system, spots_as="lr", layer=layer, allow_non_integer=allow_non_integer,
        gene_symbols=gene_symbols,
    )  # fmt: skip
    raster = read.raster
    return InputGrid(
        sdata=sdata,
        genes=list(read.source.genes),
        grid=read.grid,
        lr=raster.lr.astype(np.float32),
        mask_lr=raster.mask_lr,
        he_scale=read.he_scale,
        image_key=read.image_key,
        coordinate_system=read.cs,
        source=read.source.kind,
        source_key=read.source.key,
        lr_from=raster.lr_from,
        he_range=_histology_range(sdata, read.image_key, read.cs, read.grid, read.he_scale),
        spots=raster.spots,
    )


def _histology_range(sdata, image_key: str, cs: str, grid: Grid, he_scale: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel 1st / 99.5th percentiles of a non-``uint8`` image over the grid (read coarsely), else ``None``.

    Windows of a fluorescence image are then rescaled alike, wherever they are.
    """
    from .._spatial import image_levels

    if np.dtype(image_levels(sdata[image_key])[0].dtype) == np.uint8:
        return None
    from .._spatial import resample_image

    h, w = grid.shape_lr
    k = grid.factor * he_scale  # the histology's own grid (as rasterize reads it) unless that is large
    if h * w * k**2 > 16e6:
        k = max(1, int(np.sqrt(16e6 / (h * w))))
    step = grid.lr_um / k
    img = resample_image(sdata[image_key], cs, origin=grid.origin, pixel_um=step, shape=(h * k, w * k))
    img = img.astype(np.float32)
    return np.percentile(img, 1, axis=(1, 2), keepdims=True), np.percentile(img, 99.5, axis=(1, 2), keepdims=True)
