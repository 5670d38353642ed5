"""Tools: train Diff-ST, super-resolve a SpatialData, export HR maps to AnnData.

torch is imported only when a function that needs it runs.
"""

from ._superresolve import gene_names, rescale_to_lr, section_of, superresolve
from ._to_anndata import to_anndata
from ._train import train

__all__ = ["gene_names", "rescale_to_lr", "section_of", "superresolve", "to_anndata", "train"]
