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
