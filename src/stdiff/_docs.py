"""Parameter descriptions shared by several public functions, written once.

A docstring names a shared entry by a line holding only ``$name`` (e.g. ``$coordinate_system`` in
its parameter list); :func:`fill_doc` replaces that line by the entry (the parameter's line and its
description) of :data:`PARAMS`, indented as the placeholder was. The rendered docstring (``help()``,
the API docs) is complete; an unknown name fails at import.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from textwrap import dedent
from typing import TypeVar

__all__ = ["PARAMS", "fill_doc"]

F = TypeVar("F", bound=Callable)

#: numpydoc entries by placeholder name: the parameter's line, then its description indented by 4
PARAMS: dict[str, str] = {
    "sdata_result": """\
sdata
    SpatialData holding the result of :func:`stdiff.tl.superresolve`.""",
    "key": """\
key
    The result: the ``key_added`` of :func:`stdiff.tl.superresolve` (its mean image; the standard
    deviation is the image ``f"{key}_std"``).""",
    "image_key": """\
image_key
    Histology image; default: the only non-gene image.""",
    "table_key": """\
table_key
    Table of spot counts (see :func:`stdiff.pp.rasterize`); default: found automatically.""",
    "counts_key": """\
counts_key
    Points element of transcripts or gene image (see :func:`stdiff.pp.rasterize`); default: found
    automatically.""",
    "coordinate_system": """\
coordinate_system
    Coordinate system in µm shared by the image and the expression; required if there are several.""",
    "layer": """\
layer
    Table layer with the raw counts (default ``X``).""",
    "allow_non_integer": """\
allow_non_integer
    Accept non-integer values where raw counts are expected (see :func:`stdiff.pp.rasterize`).""",
    "gene_symbols": """\
gene_symbols
    Column of the table's ``var`` that ``genes`` (and a model's genes) are given in, e.g. symbols
    when ``var_names`` are Ensembl ids (scanpy's convention); the result's channels are named by it.""",
    "result_gene_symbols": """\
gene_symbols
    A column of the source table's ``var`` (e.g. ``"symbol"`` when the result's channels are Ensembl
    ids; scanpy's convention) that the genes are given in and named by.""",
    "device": """\
device
    ``"auto"``, ``"cpu"`` or ``"cuda"``.""",
    "seed": """\
seed
    Random seed (the same seed gives the same result on CPU).""",
    "progress": """\
progress
    Show progress bars.""",
}

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\$(?P<name>\w+)[ \t]*$", re.MULTILINE)


def fill_doc(obj: F) -> F:
    """Replace every ``$name`` line of ``obj.__doc__`` by ``PARAMS[name]``, indented as the line was.

    Raises
    ------
    KeyError
        A placeholder names no entry of :data:`PARAMS`.
    """

    def entry(match: re.Match) -> str:
        name, indent = match["name"], match["indent"]
        if name not in PARAMS:
            raise KeyError(f"{obj.__qualname__}'s docstring asks for ${name}; the shared entries are {sorted(PARAMS)}.")
        return "\n".join(indent + line if line else line for line in dedent(PARAMS[name]).splitlines())

    if obj.__doc__:
        obj.__doc__ = _PLACEHOLDER.sub(entry, obj.__doc__)
    return obj
