"""Tools: train Diff-ST, super-resolve a SpatialData, read the result back, export HR maps to AnnData.

:func:`gene_graph` returns the co-expression gene graph of a model or a result (torch-geometric).

torch is imported only when a function that needs it runs.
"""

from ._conserve import rescale_to_lr
from ._gene_graph import gene_graph
from ._measure import measure
from ._results import gene_names, section_of
from ._superresolve import superresolve
from ._to_anndata import to_anndata
from ._train import train

__all__ = ["gene_graph", "gene_names", "measure", "rescale_to_lr", "section_of", "superresolve", "to_anndata", "train"]
