"""Histology images kept lazy: a file or an array as a chunked ``(c, y, x)`` dask array, never copied whole.

:func:`lazy_image` is what :func:`stdiff.io.from_spots` and the readers build their image elements
from. A TIFF stays on disk: uncompressed images are memory-mapped, tiled or striped ones are read
tile by tile through tifffile's zarr interface, so that reading a window reads only the tiles under
it. A zarr array stays on disk as well. A dask array stays lazy. A numpy array is wrapped, not
copied (its channel axis is moved by a view). PNG and JPEG files cannot be read by window: they are
decoded once into memory (convert a large one to a tiled TIFF or zarr to keep it on disk).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

#: pixels per side of the dask chunks of a lazily read image (as the image elements are chunked)
CHUNK_PX = 1024
TIFF_SUFFIXES = (".tif", ".tiff", ".btf")


def lazy_image(image: Any) -> Any:
    """``(c, y, x)`` dask array of an image array (any axis order), a dask array or an image file.

    The channel axis is told from the shape (3 or 4 channels: RGB or RGBA, alpha dropped; a 2-D image
    is one channel); a shape where both ends or neither could be channels is refused with the order
    expected. Nothing is computed: the image is read window by window when a window is needed.

    Parameters
    ----------
    image
        An array ``(H, W, C)`` / ``(C, H, W)`` / ``(H, W)`` (numpy, dask or array-like), or a path to
        a TIFF (``.tif``, ``.tiff``, ``.btf``), a zarr array (a folder) or any image PIL reads.

    Returns
    -------
    A ``dask.array.Array`` of shape ``(c, y, x)`` with the image's own dtype.
    """
    import dask.array as da

    if isinstance(image, str | os.PathLike):
        arr = _open_file(Path(image))
    elif isinstance(image, da.Array):
        arr = image
    else:
        arr = np.asarray(image)  # no copy for a numpy array
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim != 3:
        raise ValueError(f"image must be 2-D or 3-D (H, W, C or C, H, W), got shape {arr.shape}.")
    first, last = arr.shape[0] in (1, 3, 4), arr.shape[-1] in (1, 3, 4)
    if first == last:
        raise ValueError(
            f"Cannot tell the channel axis of an image of shape {arr.shape}: expected (H, W, 3) or (3, H, W) for "
            "RGB (or 4 channels with alpha). Pass it in one of those orders."
        )
    if not isinstance(arr, da.Array):
        arr = wrap(arr, (-1, CHUNK_PX, CHUNK_PX) if first else (CHUNK_PX, CHUNK_PX, -1))
    chw = arr if first else arr.transpose(2, 0, 1)
    return chw[:3] if chw.shape[0] == 4 else chw


class _Unowned:
    """An array that dask slices chunk by chunk (``dask.array.from_array`` first copies anything with ``.copy``)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr, self.shape, self.dtype, self.ndim = arr, arr.shape, arr.dtype, arr.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.arr[key])


def wrap(arr: np.ndarray, chunks: tuple[int, ...]) -> Any:
    """A dask array over ``arr`` (in memory or memory-mapped) that neither copies nor hashes it."""
    import dask.array as da

    meta = np.empty((0,) * arr.ndim, dtype=arr.dtype)
    return da.from_array(_Unowned(arr), chunks=chunks, name=False, meta=meta)


def _open_file(path: Path) -> Any:
    """The image in a file, lazily where the format allows it (TIFF, zarr), else decoded."""
    if not path.exists():
        raise FileNotFoundError(f"The image file {str(path)!r} does not exist.")
    if path.is_dir():
        return _open_zarr(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _open_tiff(path)
    return _decode(path)


def _open_zarr(path: Path) -> Any:
    """A zarr array (or the first array of a multiscale group, e.g. level ``"0"`` of an OME-zarr image)."""
    import dask.array as da
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several kinds for a folder that is not a store
        raise ValueError(
            f"{str(path)!r} is a folder but not a zarr array; pass an image file (TIFF, PNG, JPEG), a zarr array "
            "or an array."
        ) from err
    if isinstance(node, zarr.Group):
        arrays = sorted(node.array_keys())
        if not arrays:
            raise ValueError(f"The zarr group {str(path)!r} holds no array.")
        node = node[arrays[0]]
    return da.from_zarr(node)


def _open_tiff(path: Path) -> Any:
    """A TIFF's first image: memory-mapped when it is stored uncompressed in one piece, else read by tile / strip."""
    import dask.array as da
    import tifffile

    try:
        data = tifffile.memmap(path, mode="r")
    except ValueError:  # compressed, tiled or striped: tifffile's zarr store reads one tile / strip at a time
        import zarr

        node = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        if isinstance(node, zarr.Group):  # a pyramidal TIFF: its full-resolution level
            node = node[sorted(node.array_keys())[0]]
        data = node
    shape = tuple(n for i, n in enumerate(data.shape) if n != 1 or i >= data.ndim - 3)  # no leading 1s
    planar = len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4)
    yx = (1, 2) if planar else (0, 1)
    rows, cols = CHUNK_PX, CHUNK_PX
    stored = getattr(data, "chunks", None)
    if stored is not None and stored[-len(shape) :][yx[1]] >= shape[yx[1]]:  # strips spanning the width
        strip = stored[-len(shape) :][yx[0]]
        rows, cols = max(strip, (CHUNK_PX**2 // shape[yx[1]]) // strip * strip), -1
    chunks: tuple[int, ...] = (rows, cols) if len(shape) == 2 else ((-1, rows, cols) if planar else (rows, cols, -1))
    full = (1,) * (data.ndim - len(shape)) + chunks
    arr = wrap(data, full) if isinstance(data, np.ndarray) else da.from_zarr(data, chunks=full)
    return arr.reshape(shape) if arr.ndim != len(shape) else arr


def _decode(path: Path) -> np.ndarray:
    """A PNG / JPEG / other PIL image decoded into memory (``(H, W[, C])``; palette and other modes as RGB)."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # whole-slide JPEGs exceed PIL's decompression-bomb limit
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB") if im.mode not in ("RGB", "RGBA", "L", "I;16", "F") else im)
    except OSError as err:
        raise ValueError(f"Cannot read the image file {str(path)!r}: {err}") from err
    finally:
        Image.MAX_IMAGE_PIXELS = old
