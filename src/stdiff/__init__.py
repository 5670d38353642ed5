"""stdiff: histology-conditioned diffusion super-resolution of spatial transcriptomics.

Submodules are imported lazily so that ``import stdiff`` stays cheap (no torch,
no spatialdata until they are needed)::

    import stdiff as sd

    sd.tl.superresolve(sdata, genes=["ERBB2", "KRT19"])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

_SUBMODULES = ("pp", "spots", "tl", "pl", "io", "datasets", "models", "benchmark")

if TYPE_CHECKING:  # pragma: no cover
    from . import datasets, io, models, pl, pp, spots, tl


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'stdiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])


__all__ = ["datasets", "io", "models", "pl", "pp", "spots", "tl", "__version__"]
