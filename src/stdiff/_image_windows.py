"""Windows of an image element's pyramid levels, read without computing what lies outside them.

spatialdata computes the levels of an image parsed with ``scale_factors`` lazily, each from the one
below (multiscale-spatial-image's xarray coarsen: the mean of 2 × 2 pixels, the excess row / column
trimmed at the start, cast back to the image's dtype). Reading a window of such a level through dask
runs its reductions over every level in between and takes seconds per window of a whole-slide image.
A level stored on its own (read from a zarr store) is read directly; a derived level is recomputed
here from the nearest stored level below it, the same way (the values are identical), strip by strip,
so that memory follows the strip and the window, never the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: bytes of the stored level read at a time when a derived level is recomputed
STRIP_BYTES = 64 * 2**20


def read_level_window(levels: list[Any], index: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """``levels[index][:, r0:r1, c0:c1]`` as a numpy array (``levels``: ``(c, y, x)`` arrays, scale0 first)."""
    j = index
    while j > 0 and _halves(levels[j], levels[j - 1]) and _derived(levels[j], levels[j - 1]):
        j -= 1
    if j == index:
        return _compute(levels[index], rows, cols)
    target = levels[index]
    out = np.empty((target.shape[0], rows[1] - rows[0], cols[1] - cols[0]), dtype=target.dtype)
    f = 2 ** (index - j)
    row_bytes = target.shape[0] * max(cols[1] - cols[0], 1) * f * f * np.dtype(levels[j].dtype).itemsize
    step = max(1, STRIP_BYTES // row_bytes)
    c0, c1 = _span(levels, index, j, cols, -1)
    for s0 in range(rows[0], rows[1], step):
        s1 = min(rows[1], s0 + step)
        src = _compute(levels[j], _span(levels, index, j, (s0, s1), -2), (c0, c1))
        for _ in range(index - j):
            src = _halve(src)
        out[:, s0 - rows[0] : s1 - rows[0]] = src
    return out


def _compute(level: Any, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """A window of one level, computed."""
    data = level.data if hasattr(level, "data") else level
    window = data[:, rows[0] : rows[1], cols[0] : cols[1]]
    return np.asarray(window.compute() if hasattr(window, "compute") else window)


def _halves(level: Any, finer: Any) -> bool:
    """Whether ``level`` is ``finer`` halved (per side, rounded down) with the same channels."""
    (c, h, w), (fc, fh, fw) = level.shape[-3:], finer.shape[-3:]
    return c == fc and h == fh // 2 and w == fw // 2


def _derived(level: Any, finer: Any) -> bool:
    """Whether ``level`` is computed (lazily) from ``finer``, rather than stored on its own."""
    data, finer_data = getattr(level, "data", level), getattr(finer, "data", finer)
    name = getattr(finer_data, "name", None)
    if name is None or not hasattr(data, "__dask_graph__"):
        return False
    graph = data.__dask_graph__()
    layers = getattr(graph, "layers", None)
    if layers is not None:
        return name in layers
    return any((k[0] if isinstance(k, tuple) else k) == name for k in graph)  # pragma: no cover - plain graphs


def _span(levels: list[Any], index: int, j: int, span: tuple[int, int], axis: int) -> tuple[int, int]:
    """Pixels of level ``j`` that level ``index``'s ``span`` along ``axis`` is computed from."""
    lo, hi = span
    for k in range(index, j, -1):
        off = levels[k - 1].shape[axis] - 2 * levels[k].shape[axis]  # the excess pixel is trimmed at the start
        lo, hi = off + 2 * lo, off + 2 * hi
    return lo, hi


def _halve(arr: np.ndarray) -> np.ndarray:
    """The mean of 2 × 2 pixels cast back to the dtype, as the pyramid's levels are made (even sides).

    Unsigned integers are summed in a wider integer and shifted (the float mean cast back truncates,
    which is the same number, ten times faster); other dtypes take the float mean.
    """
    c, h, w = arr.shape
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 4:
        wide = np.dtype(f"u{2 * arr.dtype.itemsize}")
        total = arr[:, 0::2, 0::2].astype(wide)
        total += arr[:, 1::2, 0::2]
        total += arr[:, 0::2, 1::2]
        total += arr[:, 1::2, 1::2]
        return (total >> 2).astype(arr.dtype)
    return arr.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4)).astype(arr.dtype)
