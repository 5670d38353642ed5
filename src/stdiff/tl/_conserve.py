"""Count conservation (``conserve_counts=True``): a map rescaled so every measurement sums to its count.

Each measurement's footprint (a spot's, with the gaps between spots tapered; or an LR pixel's
``factor × factor`` block) is rescaled to its count; the spread maps that go with the mean (the
standard deviation, the quantiles) are rescaled by the same per-pixel ratio, so they stay those of
the rescaled mean. With several chunks, spots are conserved on the blended result
(:func:`conserve_blended`), since a spot's footprint can cross a seam.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..pp import InputGrid, Section


def rescale_to_lr(mean: np.ndarray, lr: np.ndarray, factor: int, mask_lr: np.ndarray, *extra: np.ndarray):
    """Rescale each LR pixel's ``factor × factor`` HR block so it sums to the LR value.

    Blocks that are predicted empty receive the LR value spread uniformly. ``extra`` arrays (e.g. the
    standard deviation) are rescaled by the same per-block ratio. Returns the rescaled arrays.
    """
    G, H, W = mean.shape
    h, w = H // factor, W // factor
    blocks = mean.reshape(G, h, factor, w, factor)
    sums = blocks.sum(axis=(2, 4), dtype=np.float64)
    target = lr.astype(np.float64) * mask_lr[None]
    ratio = np.where(sums > 0, target / np.where(sums > 0, sums, 1.0), 0.0)
    out = blocks * ratio[:, :, None, :, None]
    empty = (sums <= 0) & (target > 0)
    uniform = np.broadcast_to((target / factor**2)[:, :, None, :, None], blocks.shape)
    out = np.where(empty[:, :, None, :, None], uniform, out).reshape(G, H, W).astype(np.float32)
    rescaled = [
        (e.reshape(G, h, factor, w, factor) * ratio[:, :, None, :, None]).reshape(G, H, W).astype(np.float32)
        for e in extra
    ]
    return (out, *rescaled)


def _by_ratio(mean: np.ndarray, scaled: np.ndarray, spread: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each of ``spread`` times the per-pixel ratio ``scaled / mean`` (1 where the mean is 0)."""
    ratio = np.where(mean > 0, scaled / np.where(mean > 0, mean, 1.0), 1.0)
    return {name: (arr * ratio).astype(np.float32) for name, arr in spread.items()}


def conserve(
    mean: np.ndarray, spread: dict[str, np.ndarray], section: Section
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``mean`` rescaled so every measurement sums to its count (spot footprints or LR blocks).

    ``spread`` (``{name: map}``: the std, the quantiles) is rescaled by the same per-pixel ratio.
    """
    names = list(spread)
    if section.spots is None:
        out = rescale_to_lr(mean, section.lr, section.factor, section.mask_lr, *(spread[n] for n in names))
        return out[0], dict(zip(names, out[1:], strict=True))
    scaled = section.footprints().conserve(mean).astype(np.float32)
    return scaled, _by_ratio(mean, scaled, spread)


def conserve_blended(store, inp: InputGrid, chunks: list, idx: list[int]) -> None:
    """Per-spot conservation of a result blended from several chunks, chunk by chunk.

    Each chunk core is rescaled from the blended values of its padded window (whose halo holds the
    whole footprint and taper ring of every spot touching the core), so a spot on a seam gets the
    same factor from both sides; the spread maps (std, quantiles) take the same per-pixel ratio. The
    results go to separate arrays of ``store`` (:meth:`_Store.write_final`), never read back here.
    """
    from ..spots import Footprints, spot_margin

    f = inp.grid.factor
    spots = inp.spots.genes_subset(idx)
    for rows, cols, prow, pcol in chunks:
        sub = inp.grid.crop(prow, pcol)
        H, W = sub.shape_hr
        far = (sub.origin[0] + W * sub.hr_um, sub.origin[1] + H * sub.hr_um)
        fp = Footprints(spots.within(sub.origin, far, spot_margin(spots.geometry)), sub.origin, sub.hr_um, (H, W))
        hr_rows, hr_cols = slice(prow.start * f, prow.stop * f), slice(pcol.start * f, pcol.stop * f)
        maps = store.blended(hr_rows, hr_cols)
        mean = maps.pop("mean")
        scaled = fp.conserve(mean)
        core = (slice(None), slice((rows.start - prow.start) * f, (rows.stop - prow.start) * f),
                slice((cols.start - pcol.start) * f, (cols.stop - pcol.start) * f))  # fmt: skip
        final = {"mean": scaled.astype(np.float32), **_by_ratio(mean, scaled, maps)}
        store.write_final(
            slice(rows.start * f, rows.stop * f), slice(cols.start * f, cols.stop * f),
            {name: arr[core] for name, arr in final.items()},
        )  # fmt: skip
