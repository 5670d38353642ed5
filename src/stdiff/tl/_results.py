"""Reading a :func:`~stdiff.tl.superresolve` result back: its input section and its genes' other names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._constants import Key
from .._docs import fill_doc
from .._spatial import result_provenance
from ..pp import Section, rasterize

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod

P = Key.prov


@fill_doc
def gene_names(sdata: sd_mod.SpatialData, key: str, gene_symbols: str) -> dict[str, str]:
    """``{channel name of result key: its value in var[gene_symbols] of the result's table}``.

    The result's channels are the table's ``var_names`` (or the ``var`` column ``superresolve`` was
    given as ``gene_symbols``); this maps them to another ``var`` column, e.g. symbols for Ensembl ids.

    Parameters
    ----------
    $sdata_result
    $key
    $result_gene_symbols
    """
    prov = result_provenance(sdata, key)
    if prov.get(P.SOURCE) != "spots" or prov.get(P.SOURCE_KEY) not in sdata.tables:
        raise ValueError(f"gene_symbols= needs a result computed from a table's spots; {key!r} comes from "
                         f"{prov.get(P.SOURCE)} {prov.get(P.SOURCE_KEY)!r}.")  # fmt: skip
    var = sdata.tables[prov[P.SOURCE_KEY]].var
    if gene_symbols not in var.columns:
        raise KeyError(f"gene_symbols={gene_symbols!r} is not a column of the table's var; it has {list(var.columns)}.")
    named_by = prov.get(P.GENE_SYMBOLS)
    keys = var.index.astype(str) if named_by is None else var[named_by].astype(str)
    values = var[gene_symbols].astype(str)
    lookup = dict(zip(keys, values, strict=True))
    return {g: lookup.get(g, g) for g in prov[P.GENES]}


@fill_doc
def section_of(sdata: sd_mod.SpatialData, key: str = Key.img.DEFAULT) -> Section:
    """Re-rasterise the input of a previous :func:`superresolve` call on the same grid (plots, metrics).

    For transcripts or gene images the returned section also carries the HR truth.

    Parameters
    ----------
    $sdata_result
    $key
    """
    prov = result_provenance(sdata, key)
    src = {"table_key": prov[P.SOURCE_KEY]} if prov[P.SOURCE] == "spots" else {"counts_key": prov[P.SOURCE_KEY]}
    return rasterize(
        sdata,
        prov[P.GENES],
        image_key=prov[P.IMAGE_KEY],
        coordinate_system=prov[P.COORDINATE_SYSTEM],
        lr_um=prov[P.LR_UM],
        factor=prov[P.FACTOR],
        he_scale=prov[P.CONFIG][P.HE_SCALE],
        spots_as="lr",
        layer=prov.get(P.LAYER),
        allow_non_integer=prov.get(P.ALLOW_NON_INTEGER, False),
        gene_symbols=prov.get(P.GENE_SYMBOLS),
        **src,
    )
