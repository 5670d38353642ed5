"""The benchmark's methods, one small adapter each, in report order (see :func:`build`)."""

from __future__ import annotations

from ._base import TRACKS, Budget, Context, Method, Output, Skip, lr_normalizer, rescore, strip_truth
from ._default import Default
from ._interp import Interpolation
from ._istar import IStar
from ._ridge import Ridge
from ._stdiff import ABLATIONS, KNOCKOUTS, KnockOut, OneSample, StDiff
from ._unet import UNetMethod

#: Every method, in report order.
METHODS: tuple[str, ...] = (
    "bicubic",
    "nearest",
    "nearest_masked",
    "nearest_spot",
    "linear_spots",
    "normconv",
    "ridge",
    "istar",
    "default",
    "unet",
    "stdiff",
    "stdiff_1sample",
    *ABLATIONS,
    *KNOCKOUTS,
)
#: Methods compared with stdiff by paired per-gene differences.
VARIANTS: tuple[str, ...] = (*ABLATIONS, *KNOCKOUTS)


#: Methods that take no arguments, by name.
_PLAIN: dict[str, type[Method]] = {
    "ridge": Ridge, "istar": IStar, "default": Default, "unet": UNetMethod, "stdiff": StDiff,
    "stdiff_1sample": OneSample,
}  # fmt: skip


def build(name: str) -> Method:
    """A fresh adapter for the method ``name``."""
    if name in Interpolation.FUNCTIONS:
        return Interpolation(name)
    if name in _PLAIN:
        return _PLAIN[name]()
    if name in ABLATIONS:
        return StDiff(name, ABLATIONS[name])
    if name in KNOCKOUTS:
        return KnockOut(name)
    raise ValueError(f"Unknown method {name!r}; choose from {list(METHODS)}.")


def description(name: str) -> str:
    """One line saying what ``name`` is."""
    return build(name).description


__all__ = [
    "ABLATIONS", "KNOCKOUTS", "METHODS", "TRACKS", "VARIANTS", "Budget", "Context", "Method", "Output", "Skip",
    "build", "description", "lr_normalizer", "rescore", "strip_truth",
]  # fmt: skip
