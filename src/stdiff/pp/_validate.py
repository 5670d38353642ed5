"""Checks on what the sources hold: gene names and raw counts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_genes(genes: Sequence[str] | None, available: Sequence[str], what: str) -> list[str]:
    """The requested genes (all of ``available`` when ``None``), checked to exist and be unique."""
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


_ENSEMBL = ("ENSG", "ENSMUSG", "ENSRNOG", "ENSDARG", "ENSGALG", "ENSSSCG", "ENSBTAG", "ENSMMUG")


def looks_like_ids(names: Sequence[str]) -> bool:
    """Whether most names look like Ensembl gene ids (``ENSG…``, ``ENSMUSG…``)."""
    names = [str(n) for n in list(names)[:200]]
    return bool(names) and sum(n.upper().startswith(_ENSEMBL) for n in names) > 0.8 * len(names)


def table_genes(genes: Sequence[str] | None, table, what: str, gene_symbols: str | None) -> tuple[list[str], list[str]]:
    """``(names, columns)``: the genes of a table to read, as they will be named and as its ``var_names``.

    ``gene_symbols`` (scanpy's convention) names the ``var`` column holding the names ``genes`` are
    given in (e.g. symbols when ``var_names`` are Ensembl ids); the results are then named by it. An
    unknown gene raises a ``KeyError`` that says when the table's names look like Ensembl ids and which
    ``var`` column holds the requested names.
    """
    ids = [str(v) for v in table.var_names]
    if gene_symbols is None:
        try:
            names = check_genes(genes, ids, what)
        except KeyError as err:
            raise KeyError(str(err.args[0]) + _symbols_hint(genes, table)) from None
        _check_unique_names(names, ids, what)
        return names, names
    if gene_symbols not in table.var.columns:
        raise KeyError(
            f"gene_symbols={gene_symbols!r} is not a column of {what}'s var; it has {list(table.var.columns)}."
        )
    symbols = [str(s) for s in table.var[gene_symbols].to_numpy()]
    names = check_genes(genes, symbols, f"{what} var[{gene_symbols!r}]")
    first: dict[str, str] = {}
    for s, i in zip(symbols, ids):
        first.setdefault(s, i)
    dup = [g for g in names if symbols.count(g) > 1] if genes is not None else []
    if dup:
        raise ValueError(
            f"Genes {dup[:5]} name several rows of {what} in var[{gene_symbols!r}]; pass their var_names "
            "(without gene_symbols=) to choose one."
        )
    if genes is None:  # the whole table: symbols made unique the way anndata does
        import anndata as ad
        import pandas as pd

        return list(ad.utils.make_index_unique(pd.Index(symbols))), ids
    return names, [first[g] for g in names]


def _check_unique_names(names: Sequence[str], ids: Sequence[str], what: str) -> None:
    """Refuse genes to read whose name is given to several columns of the table (which one would be read?)."""
    import pandas as pd

    index = pd.Index(ids)
    if not index.has_duplicates:
        return
    repeated = set(index[index.duplicated()])
    dup = [g for g in dict.fromkeys(names) if g in repeated]
    if dup:
        raise ValueError(
            f"Genes {dup[:5]} name several columns of {what} (its var_names repeat), so which to read is ambiguous. "
            "Sum the repeated columns of the table into one, or make the names unique (table.var_names_make_unique() "
            "renames the second 'X' to 'X-1') and pass the one you mean in genes=."
        )


def check_spot_centres(xy: np.ndarray, ids, what: str) -> None:
    """Refuse spot centres ``(2, n)`` that are NaN / infinite, fewer than 2, or shared by several spots."""
    import pandas as pd

    bad = ~np.isfinite(xy).all(axis=0)
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise ValueError(
            f"{int(bad.sum())} spot(s) of {what} have no finite centre (e.g. {ids[i]!r} at {xy[:, i].tolist()}); "
            "drop them from the shapes and the table, or fix their geometry."
        )
    if xy.shape[1] < 2:
        raise ValueError(
            f"{what} has {xy.shape[1]} spot: the spots' spacing (pitch) gives the platform and the grid, so stdiff "
            "needs at least 2 spots (in practice dozens)."
        )
    dup = pd.DataFrame(xy.T).duplicated(keep=False).to_numpy()
    if dup.any():
        where = np.nonzero(dup)[0]
        scope = f"All {len(where)} spots" if dup.all() else f"{len(where)} spots"
        raise ValueError(
            f"{scope} of {what} share a centre with another spot (e.g. {ids[where[0]]!r} and {ids[where[1]]!r} at "
            f"{xy[:, where[0]].tolist()}): each spot has its own centre. Drop or sum the repeated spots, or fix "
            "their positions."
        )


def check_spots_on_image(xy: np.ndarray, ids, pitch: float, bounds: tuple, what: str, image: str) -> None:
    """Refuse spots far off the image (beyond a pitch and 5% of its size): they would stretch the grid over nothing."""
    x0, y0, x1, y1 = bounds
    margin = max(pitch if np.isfinite(pitch) else 0.0, 0.05 * max(x1 - x0, y1 - y0))
    x, y = xy
    off = (x < x0 - margin) | (x > x1 + margin) | (y < y0 - margin) | (y > y1 + margin)
    if off.any():
        i = int(np.nonzero(off)[0][0])
        raise ValueError(
            f"{int(off.sum())} of {len(x)} spots of {what} lie far outside {image} (x∈[{x0:.0f}, {x1:.0f}], "
            f"y∈[{y0:.0f}, {y1:.0f}]), e.g. spot {ids[i]!r} at ({x[i]:.0f}, {y[i]:.0f}); the grid would stretch over "
            "them. Drop those spots (e.g. sdata.query.bounding_box(..., filter_table=True)) or fix their positions."
        )


def check_image_values(element, key: str) -> None:
    """Refuse a floating-point histology image with NaN / infinite pixels (read at its coarsest level: cheap)."""
    from .._spatial import image_levels

    level = image_levels(element)[-1]
    if not np.issubdtype(np.dtype(level.dtype), np.floating):
        return
    data = level.data
    values = np.asarray(data.compute() if hasattr(data, "compute") else data)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"Image {key!r} has NaN or infinite pixels ({bad.mean():.0%} of its coarsest level): the histology must "
            "be finite. Fill them (e.g. np.nan_to_num) or pass the original image."
        )


def _symbols_hint(genes: Sequence[str] | None, table) -> str:
    """Where the requested genes are, when not in ``var_names``: a ``var`` column, or Ensembl-looking ids."""
    wanted = {str(g) for g in genes or ()}
    cols = [
        c for c in table.var.columns
        if table.var[c].dtype == object or str(table.var[c].dtype) in ("category", "string")
        if wanted & {str(v) for v in table.var[c].to_numpy()}
    ]  # fmt: skip
    hint = ""
    if looks_like_ids(table.var_names):
        hint += " The table's var_names look like Ensembl ids."
    if cols:
        hint += f" Those genes are in var[{cols[0]!r}]: pass gene_symbols={cols[0]!r}."
    return hint


def check_counts(values: np.ndarray, what: str) -> None:
    """Raise when ``values`` hold NaN / infinite or negative counts."""
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} contains NaN or infinite counts; fill or drop them before tiling.")
    if values.size and values.min() < 0:
        raise ValueError(
            f"{what} contains negative counts (min {values.min():g}); stdiff expects raw counts "
            "(use a raw layer= or undo scaling/centering)."
        )


def non_integer_example(values) -> float | None:
    """A value of ``values`` (numpy or dask) that is not a whole number, or ``None`` when all are."""
    bad = abs(values - np.floor(values + 0.5)) > 1e-4
    if hasattr(bad, "compute"):  # dask: one pass for the flag, a second only to show an example
        if not bool(bad.any().compute()):
            return None
        import dask.array as da

        return float(da.nanmax(da.where(bad, values, np.nan)).compute())
    if not bad.any():
        return None
    return float(np.asarray(values)[bad].flat[0])


def check_integer(values, what: str, *, allow_non_integer: bool, fix: str) -> None:
    """Raise when ``values`` (expected raw counts) are not whole numbers, unless ``allow_non_integer``."""
    if allow_non_integer:
        return
    example = non_integer_example(values)
    if example is not None:
        raise ValueError(
            f"{what} holds non-integer values (e.g. {example:.4g}) where raw counts are expected: it looks "
            f"normalised or log-transformed. {fix} If the values are counts on purpose (e.g. ambient-corrected "
            "or imputed), pass allow_non_integer=True."
        )


def check_expression(lr: np.ndarray, mask_lr: np.ndarray, what: str, *, min_counts: float) -> None:
    """Raise when the LR map holds no expression at all, or no LR pixel reaches ``min_counts``."""
    total = float(lr.sum())
    if total <= 0:
        raise ValueError(
            f"No expression: {what} has only zero counts on the section for the requested genes. Check genes= "
            "(genes expressed in this section), layer= (a layer of raw counts, not an empty one) and that the "
            "expression lies under the image."
        )
    if not mask_lr.any():
        raise ValueError(
            f"No tissue: no LR pixel of {what} reaches min_counts={min_counts:g} (the section has {total:g} "
            "counts in all); lower min_counts= or pick genes= that are expressed."
        )
