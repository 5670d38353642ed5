"""``sd.tl.gene_graph``: the co-expression gene graph of a model or of a result, as a torch-geometric ``Data``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._constants import Key
from .._docs import fill_doc
from .._spatial import result_provenance
from ._results import section_of

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod
    from torch_geometric.data import Data

    from ..models import DiffST
    from ..pp import Section

P = Key.prov


@fill_doc
def gene_graph(
    data: DiffST | sd_mod.SpatialData | Section | Sequence[Section],
    key: str = Key.img.DEFAULT,
    *,
    threshold: float | None = None,
    top_k: int | None = None,
) -> Data:
    """The co-expression gene graph (genes as nodes, co-expression edges), for inspection and plotting.

    - A :class:`~stdiff.models.DiffST` model: the graph it was built with (:meth:`DiffST.setup
      <stdiff.models.DiffST.setup>`, saved with it); a model trained without the component has none.
    - A SpatialData with a :func:`~stdiff.tl.superresolve` result ``key``: the graph of the model that
      made it, recorded in its provenance. When none is recorded (a model without the graph, or the
      ``model=None`` default), or when ``threshold`` or ``top_k`` is given, it is built from the
      result's input section (:func:`~stdiff.tl.section_of`) as setup builds it
      (:func:`stdiff.models.section_gene_graph`): the Pearson correlation of the normalised
      expression over the HR truth's pixels where the section has one (transcripts, gene images),
      else over its measurements (each spot, or each tissue LR pixel) — co-expression at the
      measurement's scale, which a model trained on an HR reference does not see.
    - A :class:`~stdiff.pp.Section` (or several): built from it, the same way.

    Parameters
    ----------
    data
        The model, the SpatialData holding the result ``key``, or section(s).
    $key
    threshold, top_k
        Minimum correlation for an edge and most neighbours per gene of a graph that is built
        (default: the result's ``components.graph_threshold`` and ``graph_top_k``, else
        :class:`~stdiff.models.ComponentsConfig`'s). Not for a model, whose graph is fixed.

    Returns
    -------
    A :class:`torch_geometric.data.Data`: ``edge_index`` ``(2, E)`` with both directions of every
    edge, ``edge_weight`` ``(E,)`` the correlations, ``num_nodes`` and the gene names in ``genes``.
    ``torch_geometric.utils.to_networkx(graph, edge_attrs=["edge_weight"], to_undirected=True)``
    gives a networkx graph to draw (node ``i`` is ``graph.genes[i]``).

    Raises
    ------
    ValueError
        A model without the gene graph, or ``threshold`` / ``top_k`` for a model.
    KeyError
        A SpatialData without the result ``key``.
    ImportError
        torch-geometric is missing (``pip install 'stdiff[graph]'``).
    """
    from ..models import ComponentsConfig, DiffST, gene_graph_from_dict, section_gene_graph
    from ..pp import Section

    rebuild = threshold is not None or top_k is not None
    if isinstance(data, DiffST):
        return _model_graph(data, rebuild)
    if isinstance(data, Section) or (isinstance(data, Sequence) and data and isinstance(data[0], Section)):
        return section_gene_graph(data, _components(ComponentsConfig(), threshold, top_k))
    if not hasattr(data, "attrs") or not hasattr(data, "images"):
        raise TypeError(f"gene_graph takes a DiffST model, a SpatialData or sections; got {type(data).__name__}.")
    prov = result_provenance(data, key)
    if prov.get(P.GENE_GRAPH) is not None and not rebuild:
        return gene_graph_from_dict(prov[P.GENE_GRAPH])
    saved = (prov.get(P.CONFIG) or {}).get("components") or {}
    known = {k: saved[k] for k in ("graph_threshold", "graph_top_k") if k in saved}
    return section_gene_graph(section_of(data, key), _components(ComponentsConfig(**known), threshold, top_k))


def _model_graph(model: DiffST, rebuild: bool) -> Data:
    """The model's own graph (it keeps no data to build another)."""
    if rebuild:
        raise ValueError(
            "A model's gene graph is the one it was trained with; threshold= and top_k= build a graph from data "
            "(pass the SpatialData of a result, or sections)."
        )
    if model.graph is None:
        raise ValueError(
            "This model was trained without the gene graph (components.use_gene_graph=False); build one from "
            "data with sd.tl.gene_graph(sdata) or sd.tl.gene_graph(section)."
        )
    return model.graph


def _components(base: Any, threshold: float | None, top_k: int | None) -> Any:
    """``base`` (a :class:`~stdiff.models.ComponentsConfig`) with the given threshold and top_k."""
    from dataclasses import replace

    changes = {k: v for k, v in (("graph_threshold", threshold), ("graph_top_k", top_k)) if v is not None}
    return replace(base, **changes)
