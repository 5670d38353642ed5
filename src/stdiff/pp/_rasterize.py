"""``rasterize``: a SpatialData section onto aligned LR, HR and histology grids.

Each kind of expression source has its reader (``_read_points``, ``_read_image``, ``_read_spots``);
this module finds the source, checks the geometry, and assembles the :class:`~stdiff.pp.Section`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._spatial import (
    channel_names,
    check_channel_order,
    element_bounds,
    find_image,
    is_rgb,
    resolve_coordinate_system,
    stdiff_outputs,
    table_region,
)
from .._utils import logger
from ..spots import TOLERANCE
from ._grid import Grid, Raster
from ._read_histology import check_histology_resolution, read_histology, tissue_masks
from ._read_image import GeneImageSource
from ._read_points import PointsSource
from ._read_spots import SpotsSource, spot_section_maps
from ._section import Section
from ._units import check_micrometres, micrometre_systems
from ._validate import check_expression, check_image_values, check_spots_on_image

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod

Source = Literal["auto", "points", "image", "spots"]


def detect_source(
    sdata: sd_mod.SpatialData, counts_key: str | None, table_key: str | None, image_key: str | None
) -> tuple[str, str]:
    """``(kind, key)`` of the expression: named by ``counts_key`` / ``table_key``, or the only candidate."""
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
    spot_tables = [k for k in sdata.tables if table_region(sdata, k) in sdata.shapes]
    if len(spot_tables) == 1:
        return "spots", spot_tables[0]
    raise ValueError(
        "Cannot tell where the expression is: pass counts_key= (points "
        f"{list(sdata.points)} or gene image {gene_images}) or table_key= (tables {list(sdata.tables)})."
    )


def check_geometry(lr_um: float, factor: int, he_scale: int, he_um: float | None) -> tuple[int, int]:
    """Validated ``(factor, he_scale)`` (``he_um`` given → ``he_scale`` from it)."""
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
    return factor, int(he_scale)


def open_source(
    sdata: sd_mod.SpatialData,
    genes: Sequence[str] | None,
    *,
    image_key: str | None,
    counts_key: str | None,
    table_key: str | None,
    coordinate_system: str | None,
    spots_as: str = "lr",
    layer: str | None = None,
    allow_non_integer: bool = False,
    gene_symbols: str | None = None,
):
    """Find and read the expression source; returns ``(source, image_key, coordinate_system)``."""
    for k in set(sdata.images) - stdiff_outputs(sdata):
        check_channel_order(sdata[k], k)  # before a misparsed picture is taken for a gene image
    kind, key = detect_source(sdata, counts_key, table_key, image_key)
    image_key = find_image(sdata, image_key, exclude={key})
    region = table_region(sdata, key) if kind == "spots" else None
    if coordinate_system is None and len(micrometre_systems(sdata)) == 1:
        coordinate_system = next(iter(micrometre_systems(sdata)))  # the µm system added by to_micrometres
    cs = resolve_coordinate_system(sdata, coordinate_system, [image_key, key if kind != "spots" else region])
    if kind != "spots":
        check_micrometres(sdata, cs)
    if gene_symbols is not None and kind != "spots":
        raise ValueError(
            f"gene_symbols={gene_symbols!r} names a column of a table's var; the expression here is a {kind} element "
            f"({key!r}), whose genes are named by {'its feature column' if kind == 'points' else 'its channels'}."
        )
    if kind == "points":
        source = PointsSource(sdata, key, cs, genes)
    elif kind == "image":
        source = GeneImageSource(sdata, key, cs, genes, allow_non_integer=allow_non_integer)
    else:
        source = SpotsSource(sdata, key, cs, genes, layer=layer, spots_as=spots_as, allow_non_integer=allow_non_integer,
                             gene_symbols=gene_symbols)  # fmt: skip
        check_micrometres(sdata, cs, (source.xy, source.radius))
    return source, image_key, cs


def resolve_scale(source, lr_um: float | None, factor: int | None, hr_um: float | None) -> tuple[float, int]:
    """``(lr_um, factor)`` of the grid for ``source``.

    Square sources (transcripts, gene images, spots as truth): ``lr_um`` (default 100) and ``factor``
    (default 10), or ``hr_um`` with one of them. Spots that stay measurements need no ``lr_um``: the
    HR pixel is ``hr_um`` (default from the platform: 10 µm Visium, 20 µm legacy ST) and the LR grid
    only tiles it at about the spot pitch; an ``lr_um`` finer than the pitch is refused.
    """
    if hr_um is not None and (not np.isfinite(hr_um) or hr_um <= 0):
        raise ValueError(f"hr_um must be a positive number of µm, got {hr_um!r}.")
    if not getattr(source, "native", False):
        if hr_um is not None and lr_um is None:
            factor = 10 if factor is None else factor
            return float(hr_um) * int(factor), int(factor)
        if hr_um is not None and factor is None:
            factor = max(1, int(round(lr_um / hr_um)))
        return (100.0 if lr_um is None else float(lr_um)), (10 if factor is None else factor)
    g = source.geometry
    if lr_um is not None and lr_um < (1 - TOLERANCE) * g.pitch_um:
        raise ValueError(
            f"lr_um={lr_um:g} µm is finer than the spot pitch ({g.pitch_um:.4g} µm between neighbouring spots of "
            f"{source.kind} {source.key!r}, detected platform {g.platform!r}): a spot cannot be split into LR pixels. "
            "Omit lr_um — stdiff works from the spots themselves — and choose the HR pixel with hr_um= (default "
            f"{g.default_hr_um:g} µm for this platform)."
        )
    if hr_um is None:
        hr_um = lr_um / factor if (lr_um is not None and factor is not None) else g.default_hr_um
    if factor is None:
        factor = max(1, int(round((g.pitch_um if lr_um is None else lr_um) / hr_um)))
    return float(hr_um) * int(factor), int(factor)


def image_um(sdata: sd_mod.SpatialData, image_key: str, cs: str) -> float:
    """The finest pixel of image ``image_key`` in µm of coordinate system ``cs``."""
    from .._spatial import affine_to_cs

    A = affine_to_cs(sdata[image_key], cs)
    return float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))


def source_grid(sdata: sd_mod.SpatialData, source, image_key: str, cs: str, lr_um: float, factor: int) -> Grid:
    """The grid over the source's expression, after checking the image covers it."""
    origin, far = source.extent(lr_um, lr_um / factor)
    grid = Grid.covering(origin, far, lr_um, factor)
    bounds = element_bounds(sdata, image_key, cs)
    frac_out = source.outside_fraction(bounds)
    if frac_out > 0.05:
        ix0, iy0, ix1, iy1 = bounds
        ox, oy = origin
        raise ValueError(
            f"Image {image_key!r} covers x∈[{ix0:.0f}, {ix1:.0f}], y∈[{iy0:.0f}, {iy1:.0f}] in coordinate system "
            f"{cs!r}, but {100 * frac_out:.0f}% of the expression ({source.kind} {source.key!r}, x∈[{ox:.0f}, "
            f"{far[0]:.0f}], y∈[{oy:.0f}, {far[1]:.0f}]) lies outside it. The image and the expression are not "
            f"registered in {cs!r}: fix the image's transformation (spatialdata.transformations.set_transformation) "
            "or pick the coordinate_system where both are aligned."
        )
    if getattr(source, "kind", None) == "spots":
        check_spots_on_image(source.xy, source.ids, source.geometry.pitch_um, bounds, f"table {source.key!r}",
                             f"image {image_key!r} in {cs!r}")  # fmt: skip
    return grid


def rasterize(
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
    he_um: float | None = None,
    spots_as: Literal["lr", "hr"] = "lr",
    layer: str | None = None,
    min_counts: float = 1.0,
    allow_non_integer: bool = False,
    gene_symbols: str | None = None,
    name: str = "section",
) -> Section:
    """Rasterise a SpatialData section onto aligned LR, HR and histology grids.

    The expression comes from one of three sources, found automatically or named explicitly:

    - a points element of transcripts (``counts_key``): binned onto the HR grid (truth); LR is their
      aggregate (training data from Xenium/MERFISH-like references);
    - an image of per-gene counts (``counts_key``, c = genes; e.g. Visium HD or binned Xenium): summed
      onto the HR grid; LR is their aggregate;
    - a table annotating spot shapes (``table_key``; Visium / legacy ST): with ``spots_as="lr"``
      (inference, no truth) the spots stay measurements (:attr:`Section.spots`): the platform
      (pitch, lattice, spot size) is detected from them, the HR pixel is ``hr_um`` and every map
      relates to them through their footprints (:class:`~stdiff.spots.Footprints`); contiguous square
      bins (Visium HD) are spread over the HR pixels they cover. With ``spots_as="hr"`` each spot is
      one HR pixel (the measured spots serve as the truth and LR is their aggregate).

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
        Coordinate system in µm shared by the image and the expression; required when the SpatialData
        has more than one (default: the µm system added by :func:`to_micrometres`, if there is one).
        A system in pixels (e.g. as ``spatialdata_io.visium`` / ``visium_hd`` / ``xenium`` read it)
        is refused: add a µm one with :func:`to_micrometres`.
    lr_um
        LR pixel size in µm (default 100). Not needed for spots, whose LR grid only tiles the HR
        grid at about the spot pitch; a value finer than the pitch is refused.
    factor
        Integer super-resolution factor: HR pixel size is ``lr_um / factor`` (default 10; for
        spots, the HR pixels per spot pitch).
    hr_um
        HR pixel size in µm. For spots the default comes from the detected platform: 10 µm for
        Visium (55 µm spots, 100 µm apart), 20 µm for legacy ST (100 µm spots, 200 µm apart),
        pitch / 10 otherwise.
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
    allow_non_integer
        Accept non-integer values where raw counts are expected (by default they raise: normalised
        or log-transformed data would be super-resolved on the wrong scale).
    gene_symbols
        Column of the table's ``var`` that ``genes`` are given in (scanpy's convention; e.g. symbols
        when ``var_names`` are Ensembl ids); the section's genes are then named by it.
    name
        A label for logs.

    Returns
    -------
    The :class:`Section`.
    """
    read = read_on_grid(
        sdata, genes, lr_um=lr_um, factor=factor, hr_um=hr_um, he_scale=he_scale, he_um=he_um, truth=True,
        min_counts=min_counts, image_key=image_key, counts_key=counts_key, table_key=table_key,
        coordinate_system=coordinate_system, spots_as=spots_as, layer=layer, allow_non_integer=allow_non_integer,
        gene_symbols=gene_symbols,
    )  # fmt: skip
    grid, raster, he_scale = read.grid, read.raster, read.he_scale
    he = read_histology(sdata, read.image_key, read.cs, grid, he_scale)
    fp = None
    if raster.spots is not None:
        fp, mask_hr, raster.lr, raster.mask_lr = spot_section_maps(raster.spots, grid, he, he_scale)
        mask_truth = None
    else:
        mask_hr, mask_truth = tissue_masks(raster, he, grid.factor, he_scale)
    _log_rasterised(name, read, fp)
    section = Section(
        genes=list(read.source.genes),
        lr=raster.lr.astype(np.float32),
        hr=None if raster.hr is None else raster.hr.astype(np.float32),
        he=he,
        mask_lr=raster.mask_lr,
        mask_hr=mask_hr,
        origin=grid.origin,
        lr_um=grid.lr_um,
        factor=grid.factor,
        he_scale=he_scale,
        coordinate_system=read.cs,
        image_key=read.image_key,
        source=read.source.kind,
        lr_from=raster.lr_from,
        name=name,
        meta={"source_key": read.source.key},
        mask_truth=mask_truth,
        spots=None if fp is None else fp.spots,
    )
    section._footprints = fp
    return section


@dataclass
class SourceOnGrid:
    """The expression source read onto its grid, with the image and coordinate system it is read with."""

    source: Any
    image_key: str
    cs: str
    grid: Grid
    he_scale: int
    raster: Raster


def read_on_grid(
    sdata: sd_mod.SpatialData,
    genes: Sequence[str] | None,
    *,
    lr_um: float | None,
    factor: int | None,
    hr_um: float | None,
    he_scale: int,
    he_um: float | None,
    truth: bool,
    min_counts: float,
    **reading: Any,
) -> SourceOnGrid:
    """Find the source, check the geometry and read the expression onto its grid (HR truth with ``truth``).

    ``reading`` are the options of :func:`open_source`. The steps :func:`rasterize` and
    :func:`~stdiff.pp.open_input` share before the histology is read.
    """
    source, image_key, cs = open_source(sdata, genes, **reading)
    check_image_values(sdata[image_key], image_key)
    lr_um, factor = resolve_scale(source, lr_um, factor, hr_um)
    factor, he_scale = check_geometry(lr_um, factor, he_scale, he_um)
    grid = source_grid(sdata, source, image_key, cs, lr_um, factor)
    check_histology_resolution(sdata, image_key, cs, grid.hr_um)
    raster = source.raster(grid, truth=truth, min_counts=min_counts)
    check_expression(raster.lr, raster.mask_lr, f"{source.kind} {source.key!r}", min_counts=min_counts)
    return SourceOnGrid(source=source, image_key=image_key, cs=cs, grid=grid, he_scale=he_scale, raster=raster)


def _log_rasterised(name: str, read: SourceOnGrid, fp) -> None:
    """Log the spots' platform (if any) and the grids of a rasterised section."""
    grid = read.grid
    h, w = grid.shape_lr
    if fp is not None:
        g = fp.spots.geometry
        logger.info(
            "%s: %d spots, %s lattice, pitch %.4g µm, spots of %.4g µm (platform %r) → HR %.4g µm.",
            name, len(fp.spots), g.lattice, g.pitch_um, g.diameter_um, g.platform, grid.hr_um,
        )  # fmt: skip
    logger.info(
        "Rasterised %s: %d genes, LR %d×%d at %.4g µm, HR ×%d, histology %.4g µm/px, %d tissue LR pixels.",
        name, len(read.source.genes), h, w, grid.lr_um, grid.factor, grid.hr_um / read.he_scale,
        int(read.raster.mask_lr.sum()),
    )  # fmt: skip
