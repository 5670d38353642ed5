"""What :func:`~stdiff.io.from_spots` and the readers check before they build a section.

Every check names what the user passed and the fix: counts (2-D, numeric, finite, non-negative, one
column per uniquely named gene), spot positions (finite, distinct, enough of them, paired with the
counts by spot id when both carry ids), the image (present, finite) and the scale (spots at their
platform's pitch, not overlapping, inside the image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._utils import logger

#: nearest-spot distance / pitch from which spots may be a sparse subset of a lattice (√2: a square lattice's
#: diagonal); between 1.1 and this the spacing fits no lattice of the declared platform and is refused
SPARSE_RATIO = 1.35


def _examples(values, k: int = 3) -> list:
    return [v.item() if hasattr(v, "item") else v for v in list(values)[:k]]


def frame_counts(frame: pd.DataFrame) -> np.ndarray:
    """The counts of a spots × genes frame, refusing columns that are not numbers (e.g. a leftover label)."""
    dtypes = list(frame.dtypes)  # by position: column names may repeat
    bad_at = [i for i, d in enumerate(dtypes) if not pd.api.types.is_numeric_dtype(d) or pd.api.types.is_bool_dtype(d)]
    if bad_at:
        bad = [frame.columns[i] for i in bad_at]
        kinds = sorted({str(dtypes[i]) for i in bad_at})
        raise ValueError(
            f"counts has {len(bad)} column(s) that are not counts, e.g. {_examples(bad)} ({', '.join(kinds)}): a "
            "counts frame holds one numeric column per gene. Drop them (counts.drop(columns=[...])) or pass them as "
            "obs=."
        )
    return frame.to_numpy()


def check_counts_matrix(X: Any, n_genes: int | None = None) -> Any:
    """``X`` (spots × genes, numpy or scipy sparse) checked: 2-D, numeric, finite, non-negative, not empty."""
    import scipy.sparse as sp

    if X is None:
        raise ValueError("counts holds no matrix (AnnData.X is None): put the raw counts in X.")
    if not sp.issparse(X):
        X = np.asarray(X)
        if X.dtype == object:
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError("counts holds values that are not numbers; pass numeric counts.") from None
    if X.ndim != 2:
        fix = " For one gene pass counts.reshape(-1, 1) with genes=['name']." if X.ndim == 1 else ""
        raise ValueError(f"counts must be a 2-D spots × genes matrix, got shape {X.shape}.{fix}")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise ValueError(f"counts must be numbers, got dtype {X.dtype}.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"counts is empty (shape {X.shape}): a section needs spots (rows) and genes (columns).")
    values = X.data if sp.issparse(X) else X
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(
                f"counts holds {int(bad.sum())} NaN or infinite value(s): counts are whole numbers ≥ 0. Fill or drop "
                "them (e.g. np.nan_to_num(counts, nan=0)) before building the section."
            )
    if values.size and values.min() < 0:
        raise ValueError(
            f"counts holds negative values (min {values.min():g}): stdiff expects raw counts (undo any scaling or "
            "centering, or pass the raw layer)."
        )
    return X


def check_gene_names(genes: Sequence[str]) -> None:
    """Refuse gene names that repeat (they would be renamed ``GENE-1`` and ``genes=`` would take one of them)."""
    index = pd.Index([str(g) for g in genes])
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()
        raise ValueError(
            f"Gene names repeat: {_examples(dup, 5)} ({len(dup)} name(s) given to several columns). Sum the columns of "
            "a gene (e.g. counts.T.groupby(level=0).sum().T for a frame) or rename them apart before building the "
            "section, so that genes= names one column."
        )


def has_ids(index: pd.Index) -> bool:
    """Whether an index carries spot ids (strings), not just row numbers."""
    return len(index) > 0 and not pd.api.types.is_integer_dtype(index.dtype) and not isinstance(index, pd.RangeIndex)


def align_positions(positions: pd.DataFrame, ids: Sequence[str]) -> pd.DataFrame:
    """``positions`` reordered to the counts' spot ids; an error naming the ids when the two disagree."""
    pos_ids = pd.Index(positions.index.astype(str))
    if pos_ids.has_duplicates:
        raise ValueError(f"positions' index repeats spot ids, e.g. {_examples(pos_ids[pos_ids.duplicated()])}.")
    want = pd.Index([str(i) for i in ids])
    missing = want.difference(pos_ids, sort=False)
    extra = pos_ids.difference(want, sort=False)
    if len(missing) or len(extra):
        raise ValueError(
            f"counts and positions name different spots: {len(missing)} of the {len(want)} spots of counts have no "
            f"position (e.g. {_examples(missing)}), {len(extra)} of the {len(pos_ids)} positions no counts (e.g. "
            f"{_examples(extra)}). Pass the same spots in both (e.g. positions.loc[counts.index]), or positions as an "
            "array in the counts' row order."
        )
    if not pos_ids.equals(want):
        logger.info("Paired the positions with the counts by spot id (their rows were in another order).")
    out = positions.copy()
    out.index = pos_ids
    return out.loc[want]


def check_positions(xy: np.ndarray, ids: Sequence[str], units: str) -> None:
    """Refuse positions that are not finite, too few to tell the spacing, or shared by several spots."""
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        where = np.nonzero(bad)[0]
        raise ValueError(
            f"{len(where)} spot position(s) are NaN or infinite, e.g. spot {ids[where[0]]!r} at "
            f"{xy[where[0]].tolist()}; drop those spots (and their counts) or fix their positions."
        )
    if len(xy) < 2:
        raise ValueError(
            f"There is {len(xy)} spot: the spots' spacing tells the platform and the scale, so a section needs at "
            "least 2 spots (in practice dozens)."
        )
    dup = pd.DataFrame(xy).duplicated(keep=False).to_numpy()
    if dup.all():
        raise ValueError(
            f"All {len(xy)} spots are at one point ({xy[0].tolist()} {units}): the positions are probably the wrong "
            "columns (or all zero). Pass each spot's centre."
        )
    if dup.any():
        where = np.nonzero(dup)[0]
        raise ValueError(
            f"{len(where)} spots share a position with another, e.g. {ids[where[0]]!r} and {ids[where[1]]!r} at "
            f"{xy[where[0]].tolist()} {units}: each spot has its own centre. Drop the duplicated rows (or sum them)."
        )


def check_image_array(chw: Any) -> None:
    """Refuse an image with no pixels, of no numbers, or with NaN / infinite pixels.

    A lazy floating-point image is checked on every 8th pixel of every 8th row (so a large one is not
    read whole here); integer images cannot hold NaN.
    """
    if int(np.prod(chw.shape)) == 0:
        raise ValueError(f"The image has no pixels (shape {chw.shape}).")
    if not (np.issubdtype(chw.dtype, np.number) or chw.dtype == bool):
        raise ValueError(f"The image must hold numbers, got dtype {chw.dtype}.")
    if np.issubdtype(chw.dtype, np.floating):
        whole = isinstance(chw, np.ndarray)
        bad = ~np.isfinite(np.asarray(chw if whole else chw[:, ::8, ::8]))
        if bad.any():
            raise ValueError(
                f"The image has {'' if whole else 'about '}{bad.mean():.0%} NaN or infinite pixels: the histology must be a picture of finite "
                "values (e.g. uint8 RGB). Fill them (np.nan_to_num) or pass the original image file."
            )


def check_scale(
    centres_um: np.ndarray,
    platform: str | None,
    declared: bool,
    diameter_um: float | None,
    scale_hint: str,
    *,
    fitted: bool = False,
) -> float:
    """The spots' pitch in µm, refused when it is not the declared platform's or the discs would overlap.

    ``scale_hint`` says how the µm positions were obtained (which argument to check). Spots further
    apart than the platform's pitch may be a lattice with spots missing; they are refused when they
    still form the platform's whole lattice (the same lattice at another scale), unless the scale was
    ``fitted`` to the array's own coordinates (an alignment table), and otherwise warned about.
    """
    from ..spots import PLATFORMS, TOLERANCE, detect_geometry, nearest_pitch

    pitch = nearest_pitch(centres_um.T)
    if declared and platform in PLATFORMS:
        p = PLATFORMS[platform]
        ratio = pitch / p.pitch_um
        what = (
            f"platform={platform!r} has spots {p.pitch_um:g} µm apart (±{TOLERANCE:.0%}), but these are {pitch:.4g} µm "
            f"apart ({scale_hint})"
        )
        fix = "Check the scale; or, for another array, omit platform= and pass spot_diameter_um=."
        if ratio < 1 - TOLERANCE or 1 + TOLERANCE < ratio < SPARSE_RATIO:
            raise ValueError(f"{what}. {fix}")
        if ratio >= SPARSE_RATIO and not fitted:
            if detect_geometry(centres_um.T, p.radius_um).lattice == p.lattice:  # the whole lattice, scaled
                raise ValueError(f"{what}: the {p.lattice} lattice of {platform!r} at {ratio:.3g}× its size. {fix}")
            logger.warning("%s: a lattice with most spots missing, or a wrong scale? Check the scale.", what)
    if diameter_um is not None and diameter_um > 1.02 * pitch:
        raise ValueError(
            f"Spots of {diameter_um:g} µm would overlap: their centres are {pitch:.4g} µm apart ({scale_hint}). Check "
            "the scale, or pass the physical spot_diameter_um=."
        )
    return pitch


def scale_hint(units: str, how: dict[str, Any]) -> str:
    """Which argument made the positions' µm (for :func:`check_scale`'s message)."""
    scale = str(how.get("scale", ""))
    if units == "um":
        return "positions given in µm (units='um'); if they are image pixels, pass units='px'"
    if "um_per_px" in scale:
        return "positions in image pixels (units='px') × um_per_px=; if they are already µm, pass units='um'"
    if "affine" in scale:
        return "positions in image pixels × affine=, which must map image pixels to µm (not µm to pixels)"
    return f"positions in image pixels (units='px'), scale {scale}"


def check_inside_image(centres_um: np.ndarray, ids: Sequence[str], bounds: tuple, pitch: float) -> None:
    """Refuse spots far outside the image (beyond one pitch and 5% of its size): a wrong position or scale."""
    x0, y0, x1, y1 = bounds
    margin = max(pitch if np.isfinite(pitch) else 0.0, 0.05 * max(x1 - x0, y1 - y0))
    x, y = centres_um[:, 0], centres_um[:, 1]
    out = (x < x0 - margin) | (x > x1 + margin) | (y < y0 - margin) | (y > y1 + margin)
    if out.any():
        where = np.nonzero(out)[0]
        raise ValueError(
            f"{len(where)} of {len(x)} spots lie outside the image (x∈[{x0:.0f}, {x1:.0f}], y∈[{y0:.0f}, {y1:.0f}] "
            f"µm), e.g. spot {ids[where[0]]!r} at ({x[where[0]]:.0f}, {y[where[0]]:.0f}) µm. Check their positions, "
            "units= and the image's scale, or drop the spots that are off the image."
        )


def report_dropped(what: str, kept: int, unmatched: int, total: int, other: str) -> None:
    """Log how many rows of ``what`` found no partner in ``other`` (a warning: spots are lost)."""
    if unmatched:
        logger.warning(
            "%d of the %d spots of %s are not in %s and were dropped; %d spots kept.",
            unmatched, total, what, other, kept,
        )  # fmt: skip
