"""Readers for the spot formats people still have on disk and spatialdata-io does not read.

- :func:`read_st`: the legacy Spatial Transcriptomics pipeline (st_pipeline + ST spot detector): a
  counts matrix whose rows are spots named ``"{x}x{y}"`` by their array position (genes as columns;
  a transposed matrix is recognised), the spot detector's table of array and pixel positions
  (``x``, ``y``, ``new_x``, ``new_y``, ``pixel_x``, ``pixel_y``, ``selected``), and the H&E image. The
  image's scale (a full affine: each axis may differ) is fitted from the array ↔ pixel table with the
  200 µm array step.
- :func:`read_spots_table`: a generic table of spots (CSV / TSV / Parquet with a barcode and x, y
  columns) with their counts (an ``.h5ad``, a CSV / TSV of barcodes × genes, an AnnData or a frame)
  and an image.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._build import from_spots

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    from spatialdata import SpatialData

_ST_KEY = re.compile(r"^\d+(\.\d+)?x\d+(\.\d+)?$")


def _read_frame(path: str | os.PathLike, **kw: Any) -> pd.DataFrame:
    """A CSV / TSV (gzipped or not) or Parquet file as a frame."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return pd.read_parquet(p)
    sep = "\t" if any(s in (".tsv", ".txt") for s in suffixes) else ","
    return pd.read_csv(p, sep=sep, **kw)


def _st_key(x, y) -> str:
    """``"{x}x{y}"`` as the ST pipeline names spots (whole numbers without decimals)."""

    def fmt(v) -> str:
        v = float(v)
        return str(int(v)) if v == int(v) else str(v)

    return f"{fmt(x)}x{fmt(y)}"


def read_st(
    counts: str | os.PathLike,
    spots: str | os.PathLike,
    image: str | os.PathLike,
    *,
    selected_only: bool = True,
    array_columns: Sequence[str] = ("x", "y"),
    fit_columns: Sequence[str] | None = None,
    pixel_columns: Sequence[str] = ("pixel_x", "pixel_y"),
    spot_diameter_um: float = 100.0,
    **kwargs: Any,
) -> SpatialData:
    """Read a legacy ST section: counts matrix, spot detector table and H&E image.

    Parameters
    ----------
    counts
        The ST pipeline's counts (TSV, optionally gzipped): rows are spots named ``"{x}x{y}"`` by their
        array position, columns genes (genes × spots is recognised and transposed).
    spots
        The spot detector's table (TSV): array positions ``x``, ``y`` (and the adjusted ``new_x``,
        ``new_y``), pixel positions ``pixel_x``, ``pixel_y`` in the image, and ``selected`` (1 under tissue).
    image
        The H&E image file the pixel positions refer to.
    selected_only
        Keep only spots with ``selected == 1`` (when the column exists).
    array_columns, pixel_columns
        Columns of ``spots`` for the array positions that name the spots (``"{x}x{y}"``) and for the
        pixel positions.
    fit_columns
        Array positions the image's scale is fitted from: the spot detector's adjusted ``new_x``,
        ``new_y`` when the table has them (they follow the printed spots), else ``array_columns``.
    spot_diameter_um
        The spots' diameter (100 µm on the ST arrays).
    **kwargs
        Passed to :func:`stdiff.io.from_spots` (``image_key``, ``coordinate_system``, ...).

    Returns
    -------
    The section in µm (:func:`stdiff.io.from_spots`), the spots named ``"{x}x{y}"``; ``obs`` has
    ``array_x``, ``array_y``; ``attrs["stdiff_section"]`` holds the alignment's residual.
    """
    table = _read_frame(spots)
    missing = [c for c in (*array_columns, *pixel_columns) if c not in table.columns]
    if missing:
        raise KeyError(
            f"{spots} lacks columns {missing} (it has {list(table.columns)}); is it the ST spot detector's table "
            "(x, y, pixel_x, pixel_y, selected)?"
        )
    if selected_only and "selected" in table.columns:
        table = table[table["selected"] == 1]
    table = table.copy()
    table.index = pd.Index([_st_key(x, y) for x, y in table[list(array_columns)].to_numpy()])
    mat = _read_frame(counts, index_col=0)
    mat.index = mat.index.astype(str)
    mat.columns = mat.columns.astype(str)
    if not mat.index.str.match(_ST_KEY.pattern).mean() > 0.5 and mat.columns.str.match(_ST_KEY.pattern).mean() > 0.5:
        mat = mat.T  # genes × spots
    keep = [k for k in table.index if k in mat.index]
    if not keep:
        raise ValueError(
            f"No spot of {spots} is in {counts}: the counts' spots should be named '{{x}}x{{y}}' by their array "
            f"position (e.g. {table.index[0]!r}); they are named like {list(mat.index[:3])}."
        )
    table, mat = table.loc[keep], mat.loc[keep]
    obs = {"array_x": table[array_columns[0]].to_numpy(), "array_y": table[array_columns[1]].to_numpy()}
    if fit_columns is None:
        fit_columns = ("new_x", "new_y") if {"new_x", "new_y"} <= set(table.columns) else tuple(array_columns)
    return from_spots(
        mat, table[list(pixel_columns)].to_numpy(float), image, units="px", alignment=table, platform="st",
        array_columns=fit_columns, pixel_columns=pixel_columns, spot_diameter_um=spot_diameter_um, obs=obs, **kwargs,
    )  # fmt: skip


def read_spots_table(
    positions: str | os.PathLike | pd.DataFrame,
    counts: str | os.PathLike | ad.AnnData | pd.DataFrame,
    image: str | os.PathLike | np.ndarray,
    *,
    barcode_column: str = "barcode",
    x_column: str = "x",
    y_column: str = "y",
    units: str = "px",
    **kwargs: Any,
) -> SpatialData:
    """Read spots from a table of positions, their counts and the image.

    Parameters
    ----------
    positions
        CSV / TSV / Parquet (or a frame) with one row per spot: ``barcode_column``, ``x_column``,
        ``y_column`` (in ``units``).
    counts
        An ``.h5ad`` (AnnData: barcodes as ``obs_names``), a CSV / TSV of barcodes (first column) × genes,
        an AnnData or a frame; only barcodes present in both are kept, in the positions' order.
    image
        The histology: a file path or an array (``(H, W, 3)`` or ``(3, H, W)``).
    barcode_column, x_column, y_column
        Column names in ``positions``.
    units
        ``"px"`` (image pixels) or ``"um"``.
    **kwargs
        Passed to :func:`stdiff.io.from_spots`: the image's scale (``um_per_px=``, ``affine=``,
        ``alignment=``), ``platform=``, ``spot_diameter_um=``, element names.
    """
    import anndata as ad

    pos = positions if isinstance(positions, pd.DataFrame) else _read_frame(positions)
    missing = [c for c in (barcode_column, x_column, y_column) if c not in pos.columns]
    if missing:
        raise KeyError(f"The positions table lacks columns {missing}; it has {list(pos.columns)}.")
    pos = pos.set_index(pos[barcode_column].astype(str))
    if isinstance(counts, str | os.PathLike):
        counts = ad.read_h5ad(counts) if str(counts).endswith(".h5ad") else _read_frame(counts, index_col=0)
    if isinstance(counts, pd.DataFrame):
        counts = counts.set_axis(counts.index.astype(str), axis=0)
        names = counts.index
    else:
        names = counts.obs_names.astype(str)
    keep = [b for b in pos.index if b in set(names)]
    if not keep:
        raise ValueError(
            f"No barcode of the positions table is in the counts: positions have {list(pos.index[:3])}, counts "
            f"{list(names[:3])}."
        )
    counts = counts.loc[keep] if isinstance(counts, pd.DataFrame) else counts[keep]
    xy = pos.loc[keep, [x_column, y_column]].to_numpy(float)
    return from_spots(counts, xy, image, units=units, **kwargs)
