"""Inference chunk by chunk: memory follows the chunk, the result is a chunked zarr-backed dask array.

:func:`predict_streamed` cuts the LR grid into chunks of ``chunk_lr × chunk_lr`` LR pixels (by
default as large as about :data:`CHUNK_BUDGET_MB` of working memory allows). Each chunk with tissue
is read with a halo of half a tile of LR pixels around it (only the histology under it, at the
resolution needed), predicted with the model's ``predict_section`` and added to the result with a
weight that is 1 on the chunk and ramps down across the halo (constant over each LR pixel's block,
so count conservation per LR block still holds), so chunks blend without seams. With several
chunks, all share one stain reference taken from tissue chunks across the slide, and spot counts
are conserved (``conserve_counts``) on the blended result, since a spot's footprint can cross a
seam (:mod:`._conserve`). The mean, the std and each requested quantile map are blended with the
same weights, so near a seam a blended quantile is the weighted mean of the chunks' quantiles. The
weighted sums live in a zarr store (in memory for small results, else in a temporary
folder); the result is their lazy ratio, which ``SpatialData.write`` streams to disk. A temporary
folder lives as long as any array read from it: every returned dask graph holds its
:class:`_TemporaryFolder`, which removes the folder only when the last of them is gone.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import Key
from .._utils import logger
from ..pp import STAIN_REFERENCE_KEY
from ._conserve import conserve, conserve_blended

if TYPE_CHECKING:  # pragma: no cover
    from ..models import DiffST
    from ..pp import InputGrid

#: memory for one chunk's prediction (MB) when ``chunk_lr`` is not given
CHUNK_BUDGET_MB = 2560
#: results larger than this (MB) are kept in a temporary folder until written, smaller ones in memory
IN_MEMORY_MB = 64


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
    """Weighted sums of the mean and of each spread map (std, quantiles) and the sum of weights, in a zarr store.

    ``names``: the maps besides the mean (default ``("std",)``); a map no chunk gives is left out of
    :meth:`result`. Results over ``in_memory_mb`` (default :data:`IN_MEMORY_MB`) go to a temporary folder
    that lives as long as the arrays :meth:`result` returns.
    """

    def __init__(
        self,
        n_genes: int,
        shape_hr: tuple[int, int],
        chunk_hr: int,
        in_memory_mb: float | None = None,
        names: tuple[str, ...] = ("std",),
    ) -> None:
        import zarr

        H, W = shape_hr
        self.names = ("mean", *names)
        nbytes = len(self.names) * 4 * n_genes * H * W
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
        # uncompressed: every window is read, added to and written back, and the blended sums are only
        # kept until the result is written (compressing them cost a quarter of a whole-slide call)
        kw = dict(dtype="float32", fill_value=0.0, compressors=None)
        self.sums = {n: root.create_array(n, shape=(n_genes, H, W), chunks=(cg, cy, cx), **kw) for n in self.names}
        self.weight = root.create_array("weight", shape=(H, W), chunks=(cy, cx), **kw)
        self.given = {"mean"}  # the maps at least one chunk gave
        self.root = root
        self.final = None  # {name: array} after a pass over the blended result (per-spot conservation)

    def add(self, rows: slice, cols: slice, maps: dict[str, np.ndarray | None], weight: np.ndarray) -> None:
        """Add a window's maps (``{name: (G, h, w)}``; ``None``: not given) with their blending ``weight``."""
        for name, arr in maps.items():
            if arr is not None:
                self.sums[name][:, rows, cols] = self.sums[name][:, rows, cols] + arr * weight
                self.given.add(name)
        self.weight[rows, cols] = self.weight[rows, cols] + weight

    def blended(self, rows: slice, cols: slice) -> dict[str, np.ndarray]:
        """The blended maps of an HR window (those some chunk gave)."""
        w = np.asarray(self.weight[rows, cols])
        w = np.where(w > 0, w, 1.0)[None]
        return {n: np.asarray(self.sums[n][:, rows, cols]) / w for n in self.names if n in self.given}

    def write_final(self, rows: slice, cols: slice, maps: dict[str, np.ndarray]) -> None:
        """Write an HR window of the final result (kept apart from the blended sums it is computed from)."""
        if self.final is None:
            kw = dict(dtype="float32", fill_value=0.0, chunks=self.sums["mean"].chunks, shape=self.sums["mean"].shape,
                      compressors=None)  # fmt: skip
            self.final = {n: self.root.create_array(f"final_{n}", **kw) for n in self.names if n in self.given}
        for name, arr in maps.items():
            self.final[name][:, rows, cols] = arr

    def result(self) -> dict[str, Any]:
        """Lazy dask arrays ``{name: (G, H, W)}`` of the maps some chunk gave (``"mean"`` always)."""
        import dask.array as da

        w = da.from_zarr(self.weight)
        w = da.where(w > 0, w, 1.0)[None]
        names = [n for n in self.names if n in self.given]
        if self.final is not None:
            out = {n: da.from_zarr(self.final[n]) for n in names}
        else:
            out = {n: (da.from_zarr(self.sums[n]) / w).astype(np.float32) for n in names}
        if self.path is None:
            # a small result held in a zarr MemoryStore: hand it over as plain in-memory arrays, since
            # spatialdata's write(overwrite=True) inspects the stores behind dask graphs and cannot
            # handle a MemoryStore
            chunks = self.sums["mean"].chunks
            return {n: da.from_array(np.asarray(a.compute()), chunks=chunks) for n, a in out.items()}
        return {n: _held(a, self.folder) for n, a in out.items()}  # the folder lives as long as any of them


class Streamed(tuple):
    """What :func:`predict_streamed` returns: unpacks as ``(mean, std)``; ``quantiles`` holds the quantile maps.

    ``std`` is ``None`` when no chunk gave one; ``quantiles`` is ``{name: map}`` (names of
    :meth:`Key.pred.quantile`, e.g. ``"q05"``) of the requested levels the model gave.
    """

    def __new__(cls, mean: Any, std: Any | None, quantiles: dict[str, Any]) -> Streamed:
        out = super().__new__(cls, (mean, std))
        out.quantiles = dict(quantiles)
        return out

    @property
    def mean(self) -> Any:
        """The blended mean."""
        return self[0]

    @property
    def std(self) -> Any | None:
        """The blended standard deviation (``None``: the model gave none)."""
        return self[1]


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
        sec = inp.section(tissue[i][0], tissue[i][1], name="stain-reference", native_lr=False)
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
    quantiles: Sequence[float] = (),
    **predict_kwargs: Any,
) -> Streamed:
    """Super-resolve ``inp`` chunk by chunk with ``model.predict_section``; lazy ``(mean, std)`` of ``out_genes``.

    ``predict_kwargs`` go to the model's ``predict_section`` (for a :class:`~stdiff.models.DiffST`:
    ``n_samples``, ``num_inference_steps``, ``device``, ``batch_size``), and so do ``quantiles`` when
    there are some. Chunk ``k`` is sampled with seed ``seed + k`` (the same seed gives the same
    result; a section in one chunk is sampled exactly as by a single ``predict_section`` call).
    Results over ``in_memory_mb`` (default :data:`IN_MEMORY_MB`) are kept in a temporary folder until
    written, which lives as long as the returned arrays.

    Every quantile map the model gives is blended like the mean and the std, with the same weights:
    within a chunk's core it is the model's quantile, and where the halos of neighbouring chunks
    overlap (near a seam) it is the weighted mean of the chunks' quantiles, close to but not exactly
    the quantile of the blended distribution. With ``conserve_counts`` it is rescaled by the same
    per-pixel ratio as the mean and the std.

    Returns
    -------
    :class:`Streamed`: unpacks as ``(mean, std)`` (``std`` ``None`` when the model gave none); its
    ``quantiles`` is ``{Key.pred.quantile(q): map}`` for each level the model gave.
    """
    cfg, f = model.config, model.factor
    qnames = tuple(Key.pred.quantile(q) for q in quantiles)
    if quantiles:
        predict_kwargs["quantiles"] = tuple(quantiles)
    # a model whose value at a pixel does not depend on the window around it needs no halo, unless spots
    # are conserved across seams (the halo then holds the footprints of the spots touching the core)
    pointwise = bool(getattr(model, "pointwise", False)) and not (conserve_counts and inp.spots is not None)
    halo = 0 if pointwise else halo_lr(cfg.tile_lr)
    chunk_lr = _chunk_side(model, inp, chunk_lr, n_samples=predict_kwargs.get("n_samples"), n_maps=len(qnames),
                           halo=halo)  # fmt: skip
    chunks = plan_chunks(inp.shape_lr, chunk_lr, halo)
    idx = [model.genes.index(g) for g in out_genes]
    h, w = inp.shape_lr
    limit = IN_MEMORY_MB if in_memory_mb is None else in_memory_mb  # read now: a caller may change the default
    store = _Store(len(out_genes), (h * f, w * f), chunk_lr * f, in_memory_mb=limit, names=("std", *qnames))
    logger.info("Super-resolving %d×%d LR pixels in %d chunk(s) of ≤%d×%d (+%d halo).", h, w, len(chunks), chunk_lr,
                chunk_lr, halo)  # fmt: skip
    native_lr = bool(getattr(model, "reads_lr_map", True))  # SpotRate reads the spots, not the LR map
    reference = slide_stain_reference(inp, chunks) if len(chunks) > 1 else None
    bar = None
    if progress and len(chunks) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chunks), desc="chunks", leave=False)
    # chunks within a halo of the measurements' LR mask (a spot section's tissue reaches beyond its spots)
    from scipy.ndimage import binary_dilation

    near = binary_dilation(inp.mask_lr, iterations=halo_lr(cfg.tile_lr)) if inp.mask_lr.any() else inp.mask_lr
    for k, (rows, cols, prow, pcol) in enumerate(chunks):
        if near[prow, pcol].any():  # else nothing on tissue here: the result stays 0
            section = inp.section(prow, pcol, name=f"chunk{k}", native_lr=native_lr)
            if reference:
                section.meta[STAIN_REFERENCE_KEY] = reference
            pred = model.predict_section(section, seed=seed + k, progress=progress and bar is None, **predict_kwargs)
            mean = pred[Key.pred.MEAN]
            spread = {n: pred[n] for n in (Key.pred.STD, *qnames) if pred.get(n) is not None}
            if conserve_counts:
                mean, spread = conserve(mean, spread, section)
            weight = np.kron(np.outer(_ramp(rows, prow), _ramp(cols, pcol)), np.ones((f, f), np.float32))
            maps = {"mean": mean[idx], **{n: arr[idx] for n, arr in spread.items()}}
            store.add(slice(prow.start * f, prow.stop * f), slice(pcol.start * f, pcol.stop * f), maps, weight)
            del pred, mean, spread, maps, section
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    if conserve_counts and inp.spots is not None and len(chunks) > 1:
        conserve_blended(store, inp, chunks, idx)
    out = store.result()
    return Streamed(out["mean"], out.get("std"), {n: out[n] for n in qnames if n in out})


def _chunk_side(
    model: DiffST, inp: InputGrid, chunk_lr: int | None, *, n_samples: int | None, n_maps: int, halo: int
) -> int:
    """``chunk_lr``, or the LR side of a chunk whose prediction fits the model's memory budget.

    A model that says what one HR pixel of a window costs it (``working_bytes_per_pixel``) gets
    chunks of its ``CHUNK_BUDGET_MB``, with 8 more bytes per gene for each of ``n_maps`` quantile
    maps (the map and its blended copy); else :func:`auto_chunk_lr`.
    """
    cfg, f = model.config, model.factor
    if chunk_lr is None:
        per_px = getattr(model, "working_bytes_per_pixel", None)
        if per_px is None:
            n = int(n_samples or cfg.sampler.n_samples)
            chunk_lr = auto_chunk_lr(len(model.genes), f, cfg.tile_lr, n, inp.he_scale)
        else:
            cost = per_px(len(model.genes), inp.he_scale) + 8.0 * len(model.genes) * n_maps
            side = int(np.sqrt(model.CHUNK_BUDGET_MB * 2**20 / cost) // f)
            chunk_lr = max(cfg.tile_lr, side - 2 * halo)
    chunk_lr = int(chunk_lr)
    if chunk_lr < 1:
        raise ValueError(f"chunk_lr must be ≥ 1, got {chunk_lr}.")
    return chunk_lr
