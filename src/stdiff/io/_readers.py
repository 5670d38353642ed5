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
from ._checks import report_dropped

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    from spatialdata import SpatialData

_ST_KEY = re.compile(r"^\d+(\.\d+)?x\d+(\.\d+)?$")


def _read_frame(path: str | os.PathLike, **kw: Any) -> pd.DataFrame:
    """A CSV / TSV (gzipped or not) or Parquet file as a frame; a file that cannot be read is named."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"No file {str(path)!r}.")
    suffixes = [s.lower() for s in p.suffixes]
    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            frame = pd.read_parquet(p)
        else:
            sep = "\t" if any(s in (".tsv", ".txt") for s in suffixes) else ","
            frame = pd.read_csv(p, sep=sep, **kw)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{str(path)!r} is empty: expected a table with a header and one row per spot.") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        raise ValueError(
            f"Could not read {str(path)!r} as a {'Parquet' if 'parquet' in str(suffixes) else 'CSV / TSV'} table "
            f"({type(err).__name__}: {str(err).strip()[:200]}). Check that the file is that format (a .tsv / .txt is "
            "read tab-separated, other names comma-separated)."
        ) from None
    if len(frame) == 0:
        raise ValueError(f"{str(path)!r} has a header ({list(frame.columns)[:5]}) but no rows.")
    return frame


def _read_counts_file(path: str | os.PathLike):
    """An ``.h5ad`` (AnnData) or a barcodes × genes CSV / TSV (first column: barcodes) as counts."""
    if not str(path).endswith(".h5ad"):
        return _read_frame(path, index_col=0)
    import anndata as ad

    if not Path(path).is_file():
        raise FileNotFoundError(f"No file {str(path)!r}.")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py / anndata raise many kinds for a file that is not an AnnData
        raise ValueError(f"Could not read {str(path)!r} as an AnnData (.h5ad): {type(err).__name__}: {err}") from None


def _unique_ids(ids: pd.Index, what: str) -> pd.Index:
    """``ids`` (as strings), refused when a spot id repeats."""
    ids = pd.Index(ids.astype(str))
    if ids.has_duplicates:
        dup = ids[ids.duplicated()].unique()
        raise ValueError(
            f"{what} names {len(dup)} spot(s) more than once, e.g. {list(dup[:3])}: each spot must be one row. Drop "
            "or sum the repeated rows."
        )
    return ids


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
    table.index = _unique_ids(pd.Index([_st_key(x, y) for x, y in table[list(array_columns)].to_numpy()]), str(spots))
    mat = _read_frame(counts, index_col=0)
    mat.index = mat.index.astype(str)
    mat.columns = mat.columns.astype(str)
    if not mat.index.str.match(_ST_KEY.pattern).mean() > 0.5 and mat.columns.str.match(_ST_KEY.pattern).mean() > 0.5:
        mat = mat.T  # genes × spots
    mat.index = _unique_ids(mat.index, str(counts))
    found = table.index.isin(mat.index)
    if not found.any():
        raise ValueError(
            f"No spot of {spots} is in {counts}: the counts' spots should be named '{{x}}x{{y}}' by their array "
            f"position (e.g. {table.index[0]!r}); they are named like {list(mat.index[:3])}."
        )
    keep = table.index[found]
    report_dropped(str(spots), len(keep), int((~found).sum()), len(table), str(counts))
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
    pos = positions if isinstance(positions, pd.DataFrame) else _read_frame(positions)
    missing = [c for c in (barcode_column, x_column, y_column) if c not in pos.columns]
    if missing:
        raise KeyError(f"The positions table lacks columns {missing}; it has {list(pos.columns)}.")
    what = "the positions table" if isinstance(positions, pd.DataFrame) else str(positions)
    barcodes = _unique_ids(pd.Index(pos[barcode_column]), what)
    if isinstance(counts, str | os.PathLike):
        counts_what, counts = str(counts), _read_counts_file(counts)
    else:
        counts_what = "the counts"
    if isinstance(counts, pd.DataFrame):
        counts = counts.set_axis(_unique_ids(counts.index, counts_what), axis=0)
        names = counts.index
    else:
        names = _unique_ids(counts.obs_names, counts_what)
    rows = names.get_indexer(barcodes)  # hashed: linear in the barcodes (-1: no counts)
    found = rows >= 0
    if not found.any():
        raise ValueError(
            f"No barcode of the positions table is in the counts: positions have {list(barcodes[:3])}, counts "
            f"{list(names[:3])}."
        )
    keep = barcodes[found]
    report_dropped(what, len(keep), int((~found).sum()), len(barcodes), counts_what)
    report_dropped(counts_what, len(keep), len(names) - len(keep), len(names), what)
    counts = counts.iloc[rows[found]] if isinstance(counts, pd.DataFrame) else counts[rows[found]]
    xy = pos.loc[found, [x_column, y_column]]
    bad = [c for c in (x_column, y_column) if not pd.api.types.is_numeric_dtype(xy[c])]
    if bad:
        raise ValueError(f"Columns {bad} of {what} are not numbers ({xy[bad[0]].dtype}): they should be positions.")
    return from_spots(counts, xy.to_numpy(float), image, units=units, **kwargs)
