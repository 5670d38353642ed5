"""Inference chunk by chunk: memory follows the chunk, the result is a chunked zarr-backed dask array.

:func:`predict_streamed` cuts the LR grid into chunks of ``chunk_lr × chunk_lr`` LR pixels (by
default as large as about :data:`CHUNK_BUDGET_MB` of working memory allows). Each chunk with tissue
is read with a halo of half a tile of LR pixels around it (only the histology under it, at the
resolution needed), predicted with the model's ``predict_section`` and added to the result with a
weight that is 1 on the chunk and ramps down across the halo (constant over each LR pixel's block,
so count conservation per LR block still holds), so chunks blend without seams. With several
chunks, all share one stain reference taken from tissue chunks across the slide, and spot counts
are conserved (``conserve_counts``) on the blended result, since a spot's footprint can cross a
seam. The weighted sums live in a zarr store (in memory for small results, else in a temporary
folder); the result is their lazy ratio, which ``SpatialData.write`` streams to disk. A temporary
folder lives as long as any array read from it: every returned dask graph holds its
:class:`_TemporaryFolder`, which removes the folder only when the last of them is gone.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import Key
from .._utils import logger
from ..pp import STAIN_REFERENCE_KEY

if TYPE_CHECKING:  # pragma: no cover
    from ..models import DiffST
    from ..pp import InputGrid

#: memory for one chunk's prediction (MB) when ``chunk_lr`` is not given
CHUNK_BUDGET_MB = 2560
#: results larger than this (MB) are kept in a temporary folder until written, smaller ones in memory
IN_MEMORY_MB = 64


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


def conserve(mean: np.ndarray, std: np.ndarray | None, section) -> tuple[np.ndarray, np.ndarray | None]:
    """``mean`` rescaled so every measurement sums to its count (spot footprints or LR blocks); ``std`` alike."""
    if section.spots is None:
        extra = () if std is None else (std,)
        out = rescale_to_lr(mean, section.lr, section.factor, section.mask_lr, *extra)
        return out[0], (None if std is None else out[1])
    fp = section.footprints()
    scaled = fp.conserve(mean).astype(np.float32)
    if std is None:
        return scaled, None
    ratio = np.where(mean > 0, scaled / np.where(mean > 0, mean, 1.0), 1.0)
    return scaled, (std * ratio).astype(np.float32)


def auto_chunk_lr(
    n_genes: int,
    factor: int,
    tile_lr: int,
    n_samples: int,
    he_scale: int,
    budget_mb: float = CHUNK_BUDGET_MB,
    batch_size: int = 16,
) -> int:
    """LR pixels per chunk side so that one chunk's prediction fits in about ``budget_mb``.

    Calibrated on ``predict_section`` (300 genes, ``"tiny"`` preset, CPU): a fixed part for the network's
    activations on a batch of tiles (~100 bytes per gene and tile pixel) and, per HR pixel of the chunk
    and its halo, ~4 bytes × genes × (20 + 15 × samples) (the mean, the samples, their counts and
    quantiles) plus the histology.
    """
    fixed = 100.0 * n_genes * batch_size * (tile_lr * factor) ** 2
    per_hr_px = 4.0 * n_genes * (20 + 15 * n_samples) + 16 * he_scale**2
    budget = budget_mb * 2**20
    side_hr = np.sqrt(max(budget - fixed, 0.25 * budget) / per_hr_px)
    side = int(side_hr // factor) - 2 * halo_lr(tile_lr)
    step = max(1, tile_lr // 2)
    return max(tile_lr, (side // step) * step)


def halo_lr(tile_lr: int) -> int:
    """LR pixels read around each chunk: half a tile (the tiles' stride)."""
    return max(1, tile_lr // 2)


def plan_chunks(shape_lr: tuple[int, int], chunk_lr: int, halo: int) -> list[tuple[slice, slice, slice, slice]]:
    """``(rows, cols, padded rows, padded cols)`` of each chunk, in raster order."""
    h, w = shape_lr
    out = []
    for r0 in range(0, h, chunk_lr):
        for c0 in range(0, w, chunk_lr):
            r1, c1 = min(h, r0 + chunk_lr), min(w, c0 + chunk_lr)
            out.append(
                (
                    slice(r0, r1),
                    slice(c0, c1),
                    slice(max(0, r0 - halo), min(h, r1 + halo)),
                    slice(max(0, c0 - halo), min(w, c1 + halo)),
                )
            )
    return out


def _ramp(core: slice, padded: slice) -> np.ndarray:
    """1 on ``core``, falling linearly towards the ends of ``padded`` (in LR pixels)."""
    n = padded.stop - padded.start
    w = np.ones(n, dtype=np.float32)
    before, after = core.start - padded.start, padded.stop - core.stop
    if before:
        w[:before] = (np.arange(before) + 1) / (before + 1)
    if after:
        w[n - after :] = (np.arange(after, 0, -1)) / (after + 1)
    return w


class _TemporaryFolder:
    """A temporary folder removed when this object is garbage-collected (or at interpreter exit).

    Every dask array read from the folder holds this object in its graph (:func:`_held`), so the folder
    outlives the last array that reads it, whichever arrays (mean, std, conserved copies, pyramid
    levels) the caller keeps. Copies (``copy.deepcopy`` of a graph) share the one folder.
    """

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="stdiff-result-")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, True)

    def __deepcopy__(self, memo: dict) -> _TemporaryFolder:
        return self

    def __copy__(self) -> _TemporaryFolder:
        return self

    @property
    def alive(self) -> bool:
        """Whether the folder still exists (it is removed once this object is collected)."""
        return self._finalizer.alive


def _keep(block: np.ndarray, holder: Any = None) -> np.ndarray:
    """A block unchanged: a task that makes the graph hold ``holder`` (the store's folder)."""
    return block


def _held(array, holder: _TemporaryFolder | None):
    """``array`` with ``holder`` in its graph (unchanged when there is none)."""
    if holder is None:
        return array
    return array.map_blocks(_keep, holder=holder, dtype=array.dtype, meta=np.empty((0,) * array.ndim, array.dtype))


class _Store:
    """Weighted sums of the mean and std and the sum of weights, in a zarr store.

    ``in_memory_mb`` (default :data:`IN_MEMORY_MB`): larger results go to a temporary folder that lives as
    long as the arrays :meth:`result` returns.
    """

    def __init__(
        self, n_genes: int, shape_hr: tuple[int, int], chunk_hr: int, in_memory_mb: float | None = None
    ) -> None:
        import zarr

        H, W = shape_hr
        nbytes = 2 * 4 * n_genes * H * W
        limit = IN_MEMORY_MB if in_memory_mb is None else in_memory_mb
        self.folder = None
        if nbytes > limit * 2**20:
            self.folder = _TemporaryFolder()
            self.path = self.folder.path
            store: Any = zarr.storage.LocalStore(self.path)
            logger.info("Keeping the %.0f MB result in %s until it is written.", nbytes / 2**20, self.path)
        else:
            self.path = None
            store = zarr.storage.MemoryStore()
        root = zarr.open_group(store, mode="w")
        cy = int(min(H, max(64, chunk_hr)))
        cx = int(min(W, max(64, chunk_hr)))
        cg = int(min(n_genes, max(1, 2**22 // (cy * cx))))
        kw = dict(dtype="float32", fill_value=0.0)
        self.mean = root.create_array("mean", shape=(n_genes, H, W), chunks=(cg, cy, cx), **kw)
        self.std = root.create_array("std", shape=(n_genes, H, W), chunks=(cg, cy, cx), **kw)
        self.weight = root.create_array("weight", shape=(H, W), chunks=(cy, cx), **kw)
        self.has_std = False
        self.root = root
        self.final = None  # (mean, std) after a pass over the blended result (per-spot conservation)

    def add(self, rows: slice, cols: slice, mean: np.ndarray, std: np.ndarray | None, weight: np.ndarray) -> None:
        self.mean[:, rows, cols] = self.mean[:, rows, cols] + mean * weight
        if std is not None:
            self.std[:, rows, cols] = self.std[:, rows, cols] + std * weight
            self.has_std = True
        self.weight[rows, cols] = self.weight[rows, cols] + weight

    def blended(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """The blended ``(mean, std)`` of an HR window."""
        w = np.asarray(self.weight[rows, cols])
        w = np.where(w > 0, w, 1.0)[None]
        return np.asarray(self.mean[:, rows, cols]) / w, np.asarray(self.std[:, rows, cols]) / w

    def write_final(self, rows: slice, cols: slice, mean: np.ndarray, std: np.ndarray) -> None:
        """Write an HR window of the final result (kept apart from the blended sums it is computed from)."""
        if self.final is None:
            kw = dict(dtype="float32", fill_value=0.0, chunks=self.mean.chunks)
            self.final = tuple(
                self.root.create_array(k, shape=self.mean.shape, **kw) for k in ("final_mean", "final_std")
            )
        self.final[0][:, rows, cols] = mean
        self.final[1][:, rows, cols] = std

    def result(self):
        """Lazy ``(mean, std)`` dask arrays (``std`` is ``None`` when no chunk gave one)."""
        import dask.array as da

        w = da.from_zarr(self.weight)
        w = da.where(w > 0, w, 1.0)[None]
        mean, std = (da.from_zarr(self.mean) / w).astype(np.float32), (da.from_zarr(self.std) / w).astype(np.float32)
        if self.final is not None:
            mean, std = da.from_zarr(self.final[0]), da.from_zarr(self.final[1])
        if self.path is None:
            # a small result held in a zarr MemoryStore: hand it over as plain in-memory arrays, since
            # spatialdata's write(overwrite=True) inspects the stores behind dask graphs and cannot
            # handle a MemoryStore
            chunks = self.mean.chunks
            mean, std = (da.from_array(np.asarray(a.compute()), chunks=chunks) for a in (mean, std))
        else:  # the folder lives as long as either array (or anything computed from them)
            mean, std = _held(mean, self.folder), _held(std, self.folder)
        return mean, (std if self.has_std else None)


def slide_stain_reference(inp: InputGrid, chunks: list, max_windows: int = 8) -> dict[str, Any]:
    """One stain normalisation for the whole slide (:func:`stdiff.pp.stain_reference`).

    Computed from up to ``max_windows`` tissue chunks spread over the slide, so that every chunk's
    histology features agree.
    """
    from ..pp import stain_reference

    tissue = [c for c in chunks if inp.mask_lr[c[0], c[1]].any()]
    if not tissue:
        return {}
    pick = np.unique(np.linspace(0, len(tissue) - 1, min(max_windows, len(tissue))).round().astype(int))
    images = []
    for i in pick:
        sec = inp.section(tissue[i][0], tissue[i][1], name="stain-reference")
        images.append(sec.he)
        del sec
    ref = stain_reference(images)
    logger.info("Slide-wide stain reference from %d chunk(s): %s", len(images), ref)
    return ref


def predict_streamed(
    model: DiffST,
    inp: InputGrid,
    *,
    out_genes: list[str],
    chunk_lr: int | None = None,
    conserve_counts: bool = False,
    seed: int = 0,
    progress: bool = True,
    in_memory_mb: float | None = None,
    **predict_kwargs: Any,
):
    """Super-resolve ``inp`` chunk by chunk with ``model.predict_section``; lazy ``(mean, std)`` of ``out_genes``.

    ``predict_kwargs`` go to the model's ``predict_section`` (for a :class:`~stdiff.models.DiffST`:
    ``n_samples``, ``num_inference_steps``, ``device``, ``batch_size``). Chunk ``k`` is sampled with seed
    ``seed + k`` (the same seed gives the same result; a section in one chunk is sampled exactly as
    by a single ``predict_section`` call). Results over ``in_memory_mb`` (default :data:`IN_MEMORY_MB`)
    are kept in a temporary folder until written, which lives as long as the returned arrays.
    """
    cfg = model.config
    f = model.factor
    n_samples = int(predict_kwargs.get("n_samples") or cfg.sampler.n_samples)
    if chunk_lr is None:
        per_px = getattr(model, "working_bytes_per_pixel", None)
        if per_px is None:
            chunk_lr = auto_chunk_lr(len(model.genes), f, cfg.tile_lr, n_samples, inp.he_scale)
        else:  # a model that says what one HR pixel of a window costs it
            side = int(np.sqrt(model.CHUNK_BUDGET_MB * 2**20 / per_px(len(model.genes), inp.he_scale)) // f)
            chunk_lr = max(cfg.tile_lr, side - 2 * halo_lr(cfg.tile_lr))
    chunk_lr = int(chunk_lr)
    if chunk_lr < 1:
        raise ValueError(f"chunk_lr must be ≥ 1, got {chunk_lr}.")
    halo = halo_lr(cfg.tile_lr)
    chunks = plan_chunks(inp.shape_lr, chunk_lr, halo)
    idx = [model.genes.index(g) for g in out_genes]
    h, w = inp.shape_lr
    store = _Store(len(out_genes), (h * f, w * f), chunk_lr * f, in_memory_mb=in_memory_mb)
    logger.info(
        "Super-resolving %d×%d LR pixels in %d chunk(s) of ≤%d×%d (+%d halo).",
        h,
        w,
        len(chunks),
        chunk_lr,
        chunk_lr,
        halo,
    )
    reference = slide_stain_reference(inp, chunks) if len(chunks) > 1 else None
    bar = None
    if progress and len(chunks) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chunks), desc="chunks", leave=False)
    for k, (rows, cols, prow, pcol) in enumerate(chunks):
        if not inp.mask_lr[prow, pcol].any():  # nothing on tissue here: the result stays 0
            if bar is not None:
                bar.update()
            continue
        section = inp.section(prow, pcol, name=f"chunk{k}")
        if reference:
            section.meta[STAIN_REFERENCE_KEY] = reference
        pred = model.predict_section(section, seed=seed + k, progress=progress and bar is None, **predict_kwargs)
        mean, std = pred[Key.pred.MEAN], pred[Key.pred.STD]
        if conserve_counts:
            mean, std = conserve(mean, std, section)
        weight = np.kron(np.outer(_ramp(rows, prow), _ramp(cols, pcol)), np.ones((f, f), np.float32))
        hr_rows = slice(prow.start * f, prow.stop * f)
        hr_cols = slice(pcol.start * f, pcol.stop * f)
        store.add(hr_rows, hr_cols, mean[idx], None if std is None else std[idx], weight)
        del pred, mean, std, section
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    if conserve_counts and inp.spots is not None and len(chunks) > 1:
        conserve_blended(store, inp, chunks, idx)
    return store.result()


def conserve_blended(store: _Store, inp: InputGrid, chunks: list, idx: list[int]) -> None:
    """Per-spot conservation of a result blended from several chunks, chunk by chunk.

    Each chunk core is rescaled from the blended values of its padded window (whose halo holds the
    whole footprint and taper ring of every spot touching the core), so a spot on a seam gets the
    same factor from both sides; the results go to separate arrays, never read back here.
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
        mean, std = store.blended(hr_rows, hr_cols)
        scaled = fp.conserve(mean)
        ratio = np.where(mean > 0, scaled / np.where(mean > 0, mean, 1.0), 1.0)
        core = (slice(None), slice((rows.start - prow.start) * f, (rows.stop - prow.start) * f),
                slice((cols.start - pcol.start) * f, (cols.stop - pcol.start) * f))  # fmt: skip
        store.write_final(
            slice(rows.start * f, rows.stop * f), slice(cols.start * f, cols.stop * f),
            scaled[core].astype(np.float32), (std * ratio)[core].astype(np.float32),
        )  # fmt: skip
