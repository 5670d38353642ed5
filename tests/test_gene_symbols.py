"""Tables indexed by Ensembl ids: gene_symbols= (scanpy's convention) everywhere, and errors that say so."""

from __future__ import annotations

import numpy as np
import pytest
from _sdata_helpers import spots_section

import stdiff as sd


@pytest.fixture(scope="module")
def ensembl_spots(synthetic_small):
    """A spot section whose var_names are Ensembl-like ids, symbols in var["symbol"]."""
    s = spots_section(synthetic_small)
    t = s.tables["table"]
    symbols = list(t.var_names)
    ids = [f"ENSG{i:011d}" for i in range(len(symbols))]
    t.var["symbol"] = symbols
    t.var_names = ids
    return s, symbols, ids


def test_unknown_gene_names_the_symbol_column(ensembl_spots):
    s, symbols, _ = ensembl_spots
    with pytest.raises(KeyError, match=r"look like Ensembl ids.*gene_symbols='symbol'"):
        sd.pp.rasterize(s, [symbols[0]], hr_um=20, he_scale=1)
    with pytest.raises(KeyError, match="not a column"):
        sd.pp.rasterize(s, [symbols[0]], hr_um=20, he_scale=1, gene_symbols="nope")


def test_gene_symbols_through_rasterize_superresolve_to_anndata_and_plot(ensembl_spots, synthetic_small):
    import spatialdata

    s, symbols, ids = ensembl_spots
    genes = symbols[:3]
    by_symbol = sd.pp.rasterize(s, genes, hr_um=20, he_scale=1, gene_symbols="symbol")
    by_id = sd.pp.rasterize(s, ids[:3], hr_um=20, he_scale=1)
    assert by_symbol.genes == genes and by_id.genes == ids[:3]
    np.testing.assert_array_equal(by_symbol.spots.counts, by_id.spots.counts)  # the same columns of the table
    # superresolve names the result's channels by symbol; to_anndata and the plot follow
    sdata = spatialdata.deepcopy(s)
    sd.tl.superresolve(sdata, genes, hr_um=20, gene_symbols="symbol", progress=False)
    el = sdata.images["stdiff"]
    level = el["scale0"].image if hasattr(el, "children") and len(el.children) else el
    assert list(level.coords["c"].values) == genes
    assert sd.tl.section_of(sdata).genes == genes
    # a result named by ids: symbols as a var column, and a plot asked for by symbol, titled by symbol
    other = spatialdata.deepcopy(s)
    sd.tl.superresolve(other, ids[:3], hr_um=20, progress=False)
    adata = sd.tl.to_anndata(other, "stdiff", gene_symbols="symbol")
    assert list(adata.var_names) == ids[:3] and list(adata.var["symbol"]) == genes
    fig = sd.pl.superresolution(other, [genes[1]], gene_symbols="symbol")
    assert fig.axes[0].get_ylabel() == genes[1]
    with pytest.raises(ValueError, match="gene_symbols=.*table's var.*image element"):
        sd.pp.rasterize(synthetic_small, counts_key="hr_counts", gene_symbols="symbol")
