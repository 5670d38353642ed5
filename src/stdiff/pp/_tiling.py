"""Rasterise a SpatialData section onto aligned LR / HR / histology grids and cut paired tiles.

All geometry is in the physical units (µm) of a coordinate system. A :class:`Section` holds
whole-section rasters on three nested grids that share one origin:

- LR grid: ``lr_um`` per pixel (e.g. 100 µm, a Visium-like spot grid);
- HR grid: ``lr_um / factor`` per pixel; every LR pixel is exactly ``factor × factor`` HR pixels;
- histology grid: ``he_scale`` image pixels per HR pixel (``he_um = lr_um / factor / he_scale``).

:func:`make_tiles` cuts windows of ``tile_lr × tile_lr`` LR pixels out of one or more sections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._spatial import (
    affine_to_cs,
    channel_names,
    element_bounds,
    find_image,
    grid_transform,
    image_levels,
    is_rgb,
    resample_image,
    resolve_coordinate_system,
    stdiff_outputs,
)
from .._utils import logger
from ._normalize import Normalizer

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod

Source = Literal["auto", "points", "image", "spots"]


def aggregate(hr: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``factor × factor`` blocks of the last two axes (HR counts → LR counts)."""
    *lead, H, W = hr.shape
    if H % factor or W % factor:
        raise ValueError(f"HR shape {(H, W)} is not a multiple of factor={factor}.")
    return hr.reshape(*lead, H // factor, factor, W // factor, factor).sum(axis=(-3, -1))


@dataclass
class Section:
    """One tissue section rasterised on aligned LR, HR and histology grids.

    Attributes
    ----------
    genes
        Gene names (channel order of ``lr`` / ``hr``).
    lr
        ``(G, h, w)`` counts per LR pixel.
    hr
        ``(G, h·factor, w·factor)`` counts per HR pixel (the truth), or ``None`` (inference).
    he
        ``(C, h·factor·he_scale, w·factor·he_scale)`` histology image (uint8 for RGB).
    mask_lr, mask_hr
        Tissue masks on the LR and HR grids, derived only from what exists at inference (the LR
        map and the histology); they are the model's input mask.
    origin
        ``(x, y)`` of the grids' top-left corner in ``coordinate_system``.
    lr_um, factor, he_scale
        Grid geometry: LR pixel size (µm), HR pixels per LR pixel (per axis), histology pixels per
        HR pixel (per axis).
    coordinate_system, image_key, source
        Where the section came from: ``source`` is how the expression was read ("points",
        "image" or "spots") and ``lr_from`` whether LR was aggregated from HR or mapped from spots.
    mask_truth
        HR pixels where the truth is measured (for the training loss and for scoring only; never an
        input). ``None`` means ``mask_hr``; see :attr:`truth_mask`.
    """

    genes: list[str]
    lr: np.ndarray
    hr: np.ndarray | None
    he: np.ndarray
    mask_lr: np.ndarray
    mask_hr: np.ndarray
    origin: tuple[float, float]
    lr_um: float
    factor: int
    he_scale: int
    coordinate_system: str
    image_key: str | None = None
    source: str = "image"
    lr_from: str = "aggregate"
    name: str = "section"
    meta: dict[str, Any] = field(default_factory=dict)
    mask_truth: np.ndarray | None = None

    @property
    def truth_mask(self) -> np.ndarray:
        """HR pixels where the truth is measured (``mask_truth``, or ``mask_hr`` when not set)."""
        return self.mask_hr if self.mask_truth is None else self.mask_truth

    @property
    def hr_um(self) -> float:
        """HR pixel size (µm)."""
        return self.lr_um / self.factor

    @property
    def he_um(self) -> float:
        """Histology pixel size (µm)."""
        return self.hr_um / self.he_scale

    @property
    def shape_lr(self) -> tuple[int, int]:
        """LR grid shape ``(h, w)``."""
        return tuple(self.lr.shape[-2:])  # type: ignore[return-value]

    def hr_transform(self):
        """Spatialdata transformation HR pixel → ``coordinate_system``."""
        return grid_transform(self.origin, self.hr_um)

    def crop_lr(self, rows: slice, cols: slice, *, name: str | None = None) -> Section:
        """A sub-section given by LR pixel slices (e.g. to hold out a region)."""
        r0, r1, _ = rows.indices(self.shape_lr[0])
        c0, c1, _ = cols.indices(self.shape_lr[1])
        f, s = self.factor, self.factor * self.he_scale
        return replace(
            self,
            lr=self.lr[:, r0:r1, c0:c1].copy(),
            hr=None if self.hr is None else self.hr[:, r0 * f : r1 * f, c0 * f : c1 * f].copy(),
            he=self.he[:, r0 * s : r1 * s, c0 * s : c1 * s].copy(),
            mask_lr=self.mask_lr[r0:r1, c0:c1].copy(),
            mask_hr=self.mask_hr[r0 * f : r1 * f, c0 * f : c1 * f].copy(),
            mask_truth=None if self.mask_truth is None else self.mask_truth[r0 * f : r1 * f, c0 * f : c1 * f].copy(),
            origin=(self.origin[0] + c0 * self.lr_um, self.origin[1] + r0 * self.lr_um),
            name=name or f"{self.name}[{r0}:{r1},{c0}:{c1}]",
            meta=dict(self.meta),
        )

    def coarsen(self, factor: int | None = None) -> Section:
        """Self-supervision: the LR map becomes the truth and its aggregate the input.

        The returned section has ``hr = lr`` (at ``lr_um``), ``lr = aggregate(lr, factor)`` at
        ``lr_um·factor`` and the histology resampled so that ``he_scale`` is kept (the same number of
        image pixels per HR pixel). It assumes the relation between scales is self-similar.
        """
        f = int(factor or self.factor)
        h, w = self.shape_lr
        hh, ww = (h // f) * f, (w // f) * f
        if hh < f or ww < f:
            raise ValueError(
                f"The LR map ({h}×{w} pixels at {self.lr_um} µm) is too small to aggregate by factor={f} for "
                "self-supervised training; pass a trained model= instead."
            )
        lr = self.lr[:, :hh, :ww]
        he = self.he[:, : hh * self.factor * self.he_scale, : ww * self.factor * self.he_scale]
        # Keep he_scale histology pixels per (new) HR pixel = per LR pixel of this section.
        k = self.factor
        c, H, W = he.shape
        he_small = he.reshape(c, H // k, k, W // k, k).mean(axis=(2, 4))
        if self.he.dtype == np.uint8:
            he_small = np.clip(np.rint(he_small), 0, 255).astype(np.uint8)
        mask_hr = self.mask_lr[:hh, :ww].copy()
        return Section(
            genes=list(self.genes),
            lr=aggregate(lr * mask_hr, f),
            hr=(lr * mask_hr).astype(np.float32),
            he=he_small,
            mask_lr=aggregate(mask_hr.astype(np.int32), f) > 0,
            mask_hr=mask_hr,
            origin=self.origin,
            lr_um=self.lr_um * f,
            factor=f,
            he_scale=self.he_scale,
            coordinate_system=self.coordinate_system,
            image_key=self.image_key,
            source=self.source,
            lr_from="aggregate",
            name=f"{self.name}/coarsened×{f}",
            meta=dict(self.meta),
        )


@dataclass
class Tiles:
    """Paired LR / HR / histology tiles cut from one or more :class:`Section` objects.

    Tiles are windows of ``tile_lr × tile_lr`` LR pixels; ``positions[k] = (section, row, col)``
    gives the top-left LR pixel of tile ``k``. Arrays are materialised on access:

    - ``lr``: ``(N, G, t, t)`` counts per LR pixel;
    - ``hr``: ``(N, G, t·f, t·f)`` counts per HR pixel (``None`` without truth);
    - ``he``: ``(N, C, t·f·s, t·f·s)`` histology;
    - ``mask_hr`` / ``mask_lr``: tissue masks.

    ``normalizer`` maps counts to the model's scale and back (:class:`~stdiff.pp.Normalizer`).
    """

    sections: list[Section]
    positions: np.ndarray
    tile_lr: int
    normalizer: Normalizer

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def genes(self) -> list[str]:
        """Gene names."""
        return self.sections[0].genes

    @property
    def factor(self) -> int:
        """HR pixels per LR pixel."""
        return self.sections[0].factor

    def _stack(self, attr: str, scale: int) -> np.ndarray | None:
        if any(getattr(s, attr) is None for s in self.sections):
            return None
        t = self.tile_lr * scale
        out = []
        for si, r, c in self.positions:
            arr = getattr(self.sections[si], attr)
            out.append(arr[..., r * scale : r * scale + t, c * scale : c * scale + t])
        return np.stack(out)

    @property
    def lr(self) -> np.ndarray:
        """``(N, G, t, t)`` LR counts."""
        return self._stack("lr", 1)

    @property
    def hr(self) -> np.ndarray | None:
        """``(N, G, T, T)`` HR counts (``None`` if any section has no truth)."""
        return self._stack("hr", self.factor)

    @property
    def he(self) -> np.ndarray:
        """``(N, C, P, P)`` histology."""
        return self._stack("he", self.factor * self.sections[0].he_scale)

    @property
    def mask_hr(self) -> np.ndarray:
        """``(N, T, T)`` tissue mask on the HR grid."""
        return self._stack("mask_hr", self.factor)

    @property
    def mask_lr(self) -> np.ndarray:
        """``(N, t, t)`` tissue mask on the LR grid."""
        return self._stack("mask_lr", 1)

    def origin(self, k: int) -> tuple[float, float]:
        """``(x, y)`` of tile ``k``'s top-left corner in its coordinate system."""
        si, r, c = self.positions[k]
        s = self.sections[si]
        return (s.origin[0] + c * s.lr_um, s.origin[1] + r * s.lr_um)

    def transform(self, k: int):
        """Spatialdata transformation of tile ``k``'s HR pixels → its coordinate system."""
        return grid_transform(self.origin(k), self.sections[self.positions[k][0]].hr_um)


# ----------------------------------------------------------------------------------------------
# rasterisation
# ----------------------------------------------------------------------------------------------


def _check_genes(genes: Sequence[str] | None, available: Sequence[str], what: str) -> list[str]:
    available = [str(g) for g in available]
    if genes is None:
        return available
    genes = [str(g) for g in genes]
    if len(set(genes)) != len(genes):
        raise ValueError("genes= contains duplicates.")
    have = set(available)
    missing = [g for g in genes if g not in have]
    if missing:
        raise KeyError(
            f"Genes {missing[:10]} are not in {what} ({len(available)} genes, e.g. {available[:5]}). "
            "Check the spelling or pass genes= from that list."
        )
    return genes


def _check_counts(values: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} contains NaN or infinite counts; fill or drop them before tiling.")
    if values.size and values.min() < 0:
        raise ValueError(
            f"{what} contains negative counts (min {values.min():g}); stdiff expects raw counts "
            "(use a raw layer= or undo scaling/centering)."
        )


def _detect_source(
    sdata: sd_mod.SpatialData, counts_key: str | None, table_key: str | None, image_key: str | None
) -> tuple[str, str]:
    if counts_key is not None:
        if counts_key in sdata.points:
            return "points", counts_key
        if counts_key in sdata.images:
            return "image", counts_key
        raise KeyError(
            f"counts_key={counts_key!r} is neither a points nor an image element; points are "
            f"{list(sdata.points)}, images {list(sdata.images)}."
        )
    if table_key is not None:
        if table_key not in sdata.tables:
            raise KeyError(f"table_key={table_key!r} is not a table; tables are {list(sdata.tables)}.")
        return "spots", table_key
    if len(sdata.points) == 1:
        return "points", next(iter(sdata.points))
    excluded = stdiff_outputs(sdata) | ({image_key} if image_key else set())
    gene_images = [
        k for k in sdata.images if k not in excluded and not is_rgb(sdata[k]) and len(channel_names(sdata[k])) > 3
    ]
    if len(gene_images) == 1:
        return "image", gene_images[0]
    spot_tables = [k for k in sdata.tables if _table_region(sdata, k) in sdata.shapes]
    if len(spot_tables) == 1:
        return "spots", spot_tables[0]
    raise ValueError(
        "Cannot tell where the expression is: pass counts_key= (points "
        f"{list(sdata.points)} or gene image {gene_images}) or table_key= (tables {list(sdata.tables)})."
    )


def _table_region(sdata: sd_mod.SpatialData, table_key: str) -> str | None:
    attrs = sdata.tables[table_key].uns.get("spatialdata_attrs", {})
    region = attrs.get("region")
    if isinstance(region, list | tuple | np.ndarray):
        region = region[0] if len(region) == 1 else None
    return region


def _read_points(sdata, key, cs, genes):
    pts = sdata.points[key]
    feature_key = pts.attrs.get("spatialdata_attrs", {}).get("feature_key")
    if feature_key is None:
        raise ValueError(f"Points {key!r} have no feature_key; parse them with PointsModel(feature_key='gene').")
    df = pts[["x", "y", feature_key]].compute()
    names = df[feature_key].astype("category")
    genes = _check_genes(genes, list(names.cat.categories), f"points {key!r}")
    A = affine_to_cs(pts, cs)
    xy = A[:2, :2] @ df[["x", "y"]].to_numpy(float).T + A[:2, 2:3]
    lut = {g: i for i, g in enumerate(genes)}
    code = names.map(lut).to_numpy()
    keep = ~np.isnan(code.astype(float))
    return xy[:, keep], code[keep].astype(int), genes


def _bin_points(xy, code, n_genes, origin, pixel_um, shape):
    H, W = shape
    col = np.floor((xy[0] - origin[0]) / pixel_um).astype(np.int64)
    row = np.floor((xy[1] - origin[1]) / pixel_um).astype(np.int64)
    ok = (col >= 0) & (col < W) & (row >= 0) & (row < H)
    flat = code[ok] * (H * W) + row[ok] * W + col[ok]
    return np.bincount(flat, minlength=n_genes * H * W).reshape(n_genes, H, W).astype(np.float32)


def _read_gene_image(sdata, key, cs, genes, origin, hr_um, shape):
    el = sdata[key]
    genes = _check_genes(genes, channel_names(el), f"image {key!r}")
    level = image_levels(el)[0]
    A = affine_to_cs(el, cs)
    bin_um = float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
    ratio = hr_um / bin_um
    off = (origin[0] - A[0, 2]) / bin_um, (origin[1] - A[1, 2]) / bin_um
    aligned = (
        abs(A[0, 1]) < 1e-9
        and abs(A[1, 0]) < 1e-9
        and abs(ratio - round(ratio)) < 1e-6
        and all(abs(o - round(o)) < 1e-6 for o in off)
    )
    sel = level.sel(c=genes).data
    data = np.asarray(sel.compute() if hasattr(sel, "compute") else sel, dtype=np.float32)
    _check_counts(data, f"Image {key!r}")
    H, W = shape
    if aligned:
        k = int(round(ratio))
        c0, r0 = int(round(off[0])), int(round(off[1]))
        out = np.zeros((len(genes), H * k, W * k), dtype=np.float32)
        src_r0, src_c0 = max(r0, 0), max(c0, 0)
        src_r1, src_c1 = min(r0 + H * k, data.shape[1]), min(c0 + W * k, data.shape[2])
        if src_r1 > src_r0 and src_c1 > src_c0:
            out[:, src_r0 - r0 : src_r1 - r0, src_c0 - c0 : src_c1 - c0] = data[:, src_r0:src_r1, src_c0:src_c1]
        return aggregate(out, k), genes
    logger.warning(
        "Gene image %r is not aligned with the HR grid (bin %.3g µm, HR %.3g µm): resampling densities "
        "(counts are approximate).",
        key,
        bin_um,
        hr_um,
    )
    density = resample_image(
        el.sel(c=genes) if hasattr(el, "sel") else el,
        cs,
        origin=origin,
        pixel_um=hr_um,
        shape=shape,
        fill=0.0,
    )
    return density.astype(np.float32) * ratio**2, genes


def _read_spots(sdata, table_key, cs, genes, layer):
    table = sdata.tables[table_key]
    region = _table_region(sdata, table_key)
    if region is None or region not in sdata.shapes:
        raise ValueError(
            f"Table {table_key!r} is not annotating one shapes element (region={region!r}); "
            "link it with TableModel.parse(region=..., region_key=..., instance_key=...)."
        )
    shapes = sdata.shapes[region]
    attrs = table.uns["spatialdata_attrs"]
    genes = _check_genes(genes, list(table.var_names), f"table {table_key!r}")
    sub = table[:, genes]
    X = sub.layers[layer] if layer is not None else sub.X
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    X = np.asarray(X, dtype=np.float64)
    _check_counts(X, f"Table {table_key!r}" + (f" layer {layer!r}" if layer else ""))
    instance = table.obs[attrs["instance_key"]].to_numpy()
    geom = shapes.loc[instance]
    centres = np.stack([geom.geometry.centroid.x.to_numpy(), geom.geometry.centroid.y.to_numpy()])
    if "radius" in geom.columns:
        radius = geom["radius"].to_numpy(float)
    else:
        radius = np.sqrt(geom.geometry.area.to_numpy(float) / np.pi)
    A = affine_to_cs(shapes, cs)
    xy = A[:2, :2] @ centres + A[:2, 2:3]
    scale = float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
    return xy, X.T, radius * scale, genes


def _spots_to_grid(xy, values, radius, origin, pixel_um, shape):
    """Map spot counts onto a grid: Gaussian-weighted mean of nearby spots, scaled to pixel area.

    A pixel takes the weighted mean (σ = pixel/4, cut-off 0.75 pixel) of the spots near its centre,
    multiplied by ``pixel area / spot area`` so values are counts per pixel. Pixels with no spot within
    the cut-off are off tissue.
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


def _he_tissue(he: np.ndarray, factor: int) -> np.ndarray | None:
    """Tissue on the HR grid from an RGB image (optical density), ``None`` for non-RGB images."""
    if he.shape[0] != 3:
        return None
    c, H, W = he.shape
    od = -np.log((he.astype(np.float32) + 1.0) / 256.0).sum(0)
    small = od.reshape(H // factor, factor, W // factor, factor).mean(axis=(1, 3))
    return small > 0.15


def rasterize(
    sdata: sd_mod.SpatialData,
    genes: Sequence[str] | None = None,
    *,
    image_key: str | None = None,
    counts_key: str | None = None,
    table_key: str | None = None,
    coordinate_system: str | None = None,
    lr_um: float = 100.0,
    factor: int = 10,
    he_scale: int = 4,
    he_um: float | None = None,
    spots_as: Literal["lr", "hr"] = "lr",
    layer: str | None = None,
    min_counts: float = 1.0,
    name: str = "section",
) -> Section:
    """Rasterise a SpatialData section onto aligned LR, HR and histology grids.

    The expression comes from one of three sources, found automatically or named explicitly:

    - a points element of transcripts (``counts_key``): binned onto the HR grid (truth); LR is their
      aggregate (training data from Xenium/MERFISH-like references);
    - an image of per-gene counts (``counts_key``, c = genes; e.g. Visium HD or binned Xenium): summed
      onto the HR grid; LR is their aggregate;
    - a table annotating spot shapes (``table_key``; Visium / legacy ST): spots are mapped onto the
      LR grid (``spots_as="lr"``, inference — no truth) or onto the HR grid (``spots_as="hr"``, the
      measured spots serve as the truth and LR is their aggregate).

    Parameters
    ----------
    sdata
        The section.
    genes
        Genes to keep (default: all of the source).
    image_key
        Histology image (H&E, or a fluorescence stain); default: the only non-gene image.
    counts_key
        Points or gene-image element with the expression.
    table_key
        Table annotating spot shapes.
    coordinate_system
        Coordinate system (in µm) shared by the image and the expression; required when the
        SpatialData has more than one.
    lr_um
        LR pixel size in µm (100 for Visium-like grids).
    factor
        Integer super-resolution factor: HR pixel size is ``lr_um / factor``.
    he_scale
        Histology pixels per HR pixel (the image is resampled to ``lr_um / factor / he_scale`` µm/px).
    he_um
        Alternatively, the histology pixel size in µm; the HR pixel must be a whole multiple of it.
    spots_as
        Whether spots map to the LR grid (inference) or the HR grid (evaluation against spots).
    layer
        Table layer with raw counts (default ``X``).
    min_counts
        LR pixels with fewer total counts than this are treated as background.
    name
        A label for logs.

    Returns
    -------
    The :class:`Section`.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}.")
    factor = int(factor)
    if lr_um <= 0:
        raise ValueError(f"lr_um must be positive, got {lr_um!r}.")
    if he_um is not None:
        ratio = lr_um / factor / he_um
        if he_um <= 0 or abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError(
                f"he_um={he_um!r} must divide the HR pixel ({lr_um / factor:g} µm) a whole number of times; "
                f"e.g. he_um={lr_um / factor / max(1, round(ratio)):g}."
            )
        he_scale = int(round(ratio))
    if int(he_scale) != he_scale or he_scale < 1:
        raise ValueError(f"he_scale must be a positive integer, got {he_scale!r}.")
    he_scale = int(he_scale)
    kind, key = _detect_source(sdata, counts_key, table_key, image_key)
    image_key = find_image(sdata, image_key, exclude={key})
    region = _table_region(sdata, key) if kind == "spots" else None
    cs = resolve_coordinate_system(sdata, coordinate_system, [image_key, key if kind != "spots" else region])
    hr_um = lr_um / factor

    # --- extent of the expression in the coordinate system
    if kind == "points":
        xy, code, genes = _read_points(sdata, key, cs, genes)
        if xy.shape[1] == 0:
            raise ValueError(f"Points {key!r} hold no transcript of the requested genes.")
        lo, hi = xy.min(axis=1), xy.max(axis=1)
        origin = (np.floor(lo[0] / hr_um) * hr_um, np.floor(lo[1] / hr_um) * hr_um)
    elif kind == "image":
        x0, y0, x1, y1 = element_bounds(sdata, key, cs)
        lo, hi = np.array([x0, y0]), np.array([x1, y1]) - 1e-9
        origin = (x0, y0)
    else:
        xy, spot_values, radius, genes = _read_spots(sdata, key, cs, genes, layer)
        if xy.shape[1] == 0:
            raise ValueError(f"Table {key!r} has no spot.")
        grid_um = lr_um if spots_as == "lr" else hr_um
        lo, hi = xy.min(axis=1) - grid_um / 2, xy.max(axis=1) + grid_um / 2
        origin = (float(lo[0]), float(lo[1]))
    h = max(1, int(np.ceil((hi[1] - origin[1]) / lr_um - 1e-9)))
    w = max(1, int(np.ceil((hi[0] - origin[0]) / lr_um - 1e-9)))
    shape_hr = (h * factor, w * factor)

    # --- the image must cover the expression
    ix0, iy0, ix1, iy1 = element_bounds(sdata, image_key, cs)
    if kind in ("points", "spots"):
        inside = (xy[0] >= ix0) & (xy[0] <= ix1) & (xy[1] >= iy0) & (xy[1] <= iy1)
        frac_out = 1.0 - float(inside.mean())
    else:
        ex0, ey0, ex1, ey1 = lo[0], lo[1], hi[0], hi[1]
        ox = max(0.0, min(ex1, ix1) - max(ex0, ix0)) * max(0.0, min(ey1, iy1) - max(ey0, iy0))
        frac_out = 1.0 - ox / max((ex1 - ex0) * (ey1 - ey0), 1e-12)
    if frac_out > 0.05:
        raise ValueError(
            f"Image {image_key!r} covers x∈[{ix0:.0f}, {ix1:.0f}], y∈[{iy0:.0f}, {iy1:.0f}] in coordinate system "
            f"{cs!r}, but {100 * frac_out:.0f}% of the expression ({kind} {key!r}, x∈[{lo[0]:.0f}, {hi[0]:.0f}], "
            f"y∈[{lo[1]:.0f}, {hi[1]:.0f}]) lies outside it. The image and the expression are not registered in "
            f"{cs!r}: fix the image's transformation (spatialdata.transformations.set_transformation) or pick "
            "the coordinate_system where both are aligned."
        )

    # --- expression rasters
    if kind == "points":
        hr = _bin_points(xy, code, len(genes), origin, hr_um, shape_hr)
        lr = aggregate(hr, factor)
        lr_from = "aggregate"
    elif kind == "image":
        hr, genes = _read_gene_image(sdata, key, cs, genes, origin, hr_um, shape_hr)
        lr = aggregate(hr, factor)
        lr_from = "aggregate"
    elif spots_as == "hr":
        hr, spot_mask_hr = _spots_to_grid(xy, spot_values, radius, origin, hr_um, shape_hr)
        lr = aggregate(hr, factor)
        lr_from = "aggregate"
    else:
        hr = None
        lr, spot_mask_lr = _spots_to_grid(xy, spot_values, radius, origin, lr_um, (h, w))
        lr_from = "spots"

    # --- histology
    he = resample_image(
        sdata[image_key],
        cs,
        origin=origin,
        pixel_um=hr_um / he_scale,
        shape=(shape_hr[0] * he_scale, shape_hr[1] * he_scale),
    )

    if he.dtype != np.uint8:  # fluorescence etc.: robust rescale to uint8 per channel
        lo_q = np.percentile(he, 1, axis=(1, 2), keepdims=True)
        hi_q = np.percentile(he, 99.5, axis=(1, 2), keepdims=True)
        he = np.clip((he - lo_q) / np.maximum(hi_q - lo_q, 1e-12) * 255, 0, 255).astype(np.uint8)

    # --- tissue masks
    # The input mask (mask_hr) uses only what exists at inference: the LR tissue pixels refined by
    # the histology's tissue. Where the truth is measured (mask_truth) is for the loss and scoring.
    mask_truth = None
    if kind == "spots" and spots_as == "lr":
        mask_lr = spot_mask_lr
    elif kind == "spots":
        mask_truth = spot_mask_hr
        mask_lr = aggregate(spot_mask_hr.astype(np.int32), factor) > 0
    else:
        mask_lr = lr.sum(0) >= min_counts
    mask_hr = np.kron(mask_lr, np.ones((factor, factor), dtype=bool))
    tissue = _he_tissue(he, he_scale)
    if kind in ("points", "image"):
        mask_truth = mask_hr & (tissue | (hr.sum(0) > 0)) if tissue is not None else mask_hr.copy()
    if tissue is not None:
        refined = mask_hr & tissue
        # keep an LR pixel's whole block when the histology finds no tissue in it (faint staining)
        empty = np.kron(aggregate(refined.astype(np.int32), factor) == 0, np.ones((factor, factor), dtype=bool))
        mask_hr = refined | (mask_hr & empty)
    logger.info(
        "Rasterised %s: %d genes, LR %d×%d at %.4g µm, HR ×%d, histology %.4g µm/px, %d tissue LR pixels.",
        name,
        len(genes),
        h,
        w,
        lr_um,
        factor,
        hr_um / he_scale,
        int(mask_lr.sum()),
    )
    return Section(
        genes=list(genes),
        lr=lr.astype(np.float32),
        hr=None if hr is None else hr.astype(np.float32),
        he=he,
        mask_lr=mask_lr,
        mask_hr=mask_hr,
        origin=(float(origin[0]), float(origin[1])),
        lr_um=float(lr_um),
        factor=factor,
        he_scale=he_scale,
        coordinate_system=cs,
        image_key=image_key,
        source=kind,
        lr_from=lr_from,
        name=name,
        meta={"source_key": key},
        mask_truth=mask_truth,
    )


def tile_positions(
    section: Section,
    tile_lr: int,
    stride_lr: int | None = None,
    *,
    min_tissue: float = 0.05,
    cover: bool = False,
) -> np.ndarray:
    """Top-left LR positions ``(row, col)`` of tiles over a section.

    With ``cover=True`` the last row/column of tiles is shifted so the whole grid is covered
    (for inference); tiles with less than ``min_tissue`` tissue fraction are dropped.
    """
    h, w = section.shape_lr
    stride = int(stride_lr or tile_lr)
    if h < tile_lr or w < tile_lr:
        return np.zeros((0, 2), dtype=int)

    def starts(n: int) -> list[int]:
        s = list(range(0, n - tile_lr + 1, stride))
        if cover and s[-1] != n - tile_lr:
            s.append(n - tile_lr)
        return s

    out = []
    for r in starts(h):
        for c in starts(w):
            frac = section.mask_lr[r : r + tile_lr, c : c + tile_lr].mean()
            if frac >= min_tissue and frac > 0:
                out.append((r, c))
    return np.asarray(out, dtype=int).reshape(-1, 2)


def make_tiles(
    sdata: sd_mod.SpatialData | Section | Sequence[sd_mod.SpatialData | Section],
    genes: Sequence[str] | None = None,
    *,
    tile_lr: int = 8,
    stride_lr: int | None = None,
    min_tissue: float = 0.25,
    normalizer: Normalizer | None = None,
    **rasterize_kwargs: Any,
) -> Tiles:
    """Cut paired LR / HR / histology tiles (in physical units) from one or more sections.

    Parameters
    ----------
    sdata
        A SpatialData (rasterised with :func:`rasterize` and ``rasterize_kwargs``), a
        :class:`Section`, or a list of them (all with the same genes and geometry).
    genes
        Genes to keep (default: all of the source).
    tile_lr
        Tile size in LR pixels (HR tiles are ``tile_lr · factor`` pixels).
    stride_lr
        Step between tiles in LR pixels (default ``tile_lr``: no overlap).
    min_tissue
        Minimum tissue fraction of a tile.
    normalizer
        Normalisation to attach; default: fitted on the tiles' HR truth (or on LR when there is none).
    **rasterize_kwargs
        ``image_key``, ``counts_key``, ``table_key``, ``coordinate_system``, ``lr_um``, ``factor``,
        ``he_scale``, ``spots_as``, ``layer`` for :func:`rasterize`.

    Returns
    -------
    The :class:`Tiles`. Raises ``ValueError`` when no tile has enough tissue.
    """
    items = list(sdata) if isinstance(sdata, list | tuple) else [sdata]
    sections: list[Section] = []
    for i, item in enumerate(items):
        if isinstance(item, Section):
            sections.append(item)
        else:
            sections.append(rasterize(item, genes, name=f"section{i}", **rasterize_kwargs))
    ref = sections[0]
    for s in sections[1:]:
        if s.genes != ref.genes or s.factor != ref.factor or s.he_scale != ref.he_scale or s.lr_um != ref.lr_um:
            raise ValueError("All sections must share genes, lr_um, factor and he_scale.")
    if tile_lr < 1:
        raise ValueError(f"tile_lr must be ≥ 1, got {tile_lr}.")
    positions = []
    for si, s in enumerate(sections):
        pos = tile_positions(s, tile_lr, stride_lr, min_tissue=min_tissue)
        positions.extend((si, r, c) for r, c in pos)
    if not positions:
        sizes = [s.shape_lr for s in sections]
        spots = [int(s.mask_lr.sum()) for s in sections]
        raise ValueError(
            f"No tile of {tile_lr}×{tile_lr} LR pixels ({tile_lr * ref.lr_um:g} µm) with ≥{min_tissue:.0%} tissue: "
            f"the sections have LR grids {sizes} with {spots} tissue pixels (spots), fewer than one tile needs. "
            "Use a smaller tile_lr, a smaller lr_um, or a lower min_tissue."
        )
    if normalizer is None:
        normalizer = fit_normalizer(sections)
    return Tiles(
        sections=sections,
        positions=np.asarray(positions, dtype=int),
        tile_lr=int(tile_lr),
        normalizer=normalizer,
    )


def fit_normalizer(sections: Sequence[Section]) -> Normalizer:
    """Fit a :class:`Normalizer` on the HR truth of the sections (LR per HR pixel if none has truth)."""
    values, masks = [], []
    for s in sections:
        if s.hr is not None:
            values.append(s.hr.reshape(len(s.genes), -1))
            masks.append(s.truth_mask.reshape(-1))
        else:
            values.append((s.lr / s.factor**2).reshape(len(s.genes), -1))
            masks.append(s.mask_lr.reshape(-1))
    return Normalizer.fit(np.concatenate(values, 1), sections[0].genes, np.concatenate(masks))
