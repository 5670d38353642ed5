"""Histology images stay lazy: readers never load them whole, and super-resolution reads only the windows it needs."""

from __future__ import annotations

import logging
import tracemalloc

import numpy as np
import pytest
from _sdata_helpers import spot_counts

import stdiff as sd
from stdiff._spatial import image_levels
from stdiff.io import lazy_image

MB = 2**20


_TILE = (150 + ((np.arange(64)[:, None, None] // 16 + np.arange(64)[None, :, None] // 16) % 7) * 12
         + np.array([20, 0, 30])).astype(np.uint8)  # fmt: skip


def _texture(block: np.ndarray) -> np.ndarray:
    """An H&E-like uint8 texture of 64 px tiles (blocks start on whole tiles; nothing is stored)."""
    h, w, _ = block.shape
    return np.tile(_TILE, (-(-h // 64), -(-w // 64), 1))[:h, :w]


def huge_image(side: int, chunk: int = 2048):
    """A ``(side, side, 3)`` dask image that would take ``3 · side²`` bytes if it were computed."""
    import dask.array as da

    empty = da.empty((side, side, 3), dtype=np.uint8, chunks=(chunk, chunk, 3))
    return da.map_blocks(_texture, empty, dtype=np.uint8)


def _peak(fn) -> tuple[object, int]:
    """``fn()`` and the peak memory (bytes) traced while it ran (numpy buffers included)."""
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_superresolve_reads_a_huge_lazy_image_window_by_window(synthetic_small, tiny_model):
    """A 40k × 40k H&E (4.8 GB if loaded) costs what a small one does: from_spots wraps it, chunks read windows."""
    centres, counts, genes, _ = spot_counts(synthetic_small)
    image = huge_image(40_000)  # 0.25 µm/px: 10 × 10 mm; the spots cover 0.8 mm of it
    offset = np.array([4000.0, 3000.0])
    sdata, built = _peak(lambda: sd.io.from_spots(counts, centres + offset, image, genes=genes, units="um",
                                                  um_per_px=0.25, spot_diameter_um=55))  # fmt: skip
    assert built < 64 * MB
    assert sdata.images["he"]["scale0"].ds["image"].shape == (3, 40_000, 40_000)
    run = lambda: sd.tl.superresolve(sdata, model=tiny_model, chunk_lr=5, n_samples=2, progress=False, copy=True)
    out, peak = _peak(run)
    assert "stdiff" not in sdata.images  # a copy, sharing the lazy H&E
    assert out.images["he"]["scale0"].ds["image"].data is not None
    mean = np.asarray(image_levels(out.images["stdiff"])[0].data)
    assert mean.shape[0] == len(genes) and np.isfinite(mean).all() and mean.sum() > 0
    assert peak < 400 * MB, f"superresolve traced {peak / MB:.0f} MB on a lazy 4.8 GB image"


@pytest.mark.parametrize("layout", ["contiguous", "tiled", "striped-zlib"])
def test_tiff_is_read_by_window(tmp_path, layout):
    import tifffile

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, size=(6000, 4000, 3), dtype=np.uint8)  # 72 MB
    kw = {"contiguous": {}, "tiled": {"tile": (256, 256)}, "striped-zlib": {"compression": "zlib", "rowsperstrip": 64}}
    path = tmp_path / "he.tif"
    tifffile.imwrite(path, rgb, **kw[layout])
    arr, opened = _peak(lambda: lazy_image(path))
    assert arr.shape == (3, 6000, 4000) and opened < 2 * MB
    window, read = _peak(lambda: np.asarray(arr[:, 3000:3200, 500:800]))
    np.testing.assert_array_equal(window, rgb[3000:3200, 500:800].transpose(2, 0, 1))
    assert read < 20 * MB, f"reading a 0.2 MB window of a 72 MB {layout} TIFF traced {read / MB:.1f} MB"


def test_arrays_are_wrapped_not_copied(tmp_path):
    import dask.array as da
    import zarr

    rgb = np.zeros((2000, 3000, 3), dtype=np.uint8)  # 18 MB, (H, W, C)
    rgb[..., 1] = 7
    arr, peak = _peak(lambda: lazy_image(rgb))
    assert arr.shape == (3, 2000, 3000) and peak < 2 * MB and int(arr[1, 5, 5]) == 7
    rgba = lazy_image(np.zeros((4, 50, 60), np.uint8))
    assert rgba.shape == (3, 50, 60)
    z = zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=(3, 500, 400), chunks=(3, 128, 128), dtype="u1")
    z[:] = 9
    on_disk = lazy_image(tmp_path / "img.zarr")
    assert isinstance(on_disk, da.Array) and on_disk.shape == (3, 500, 400) and int(on_disk[2, 499, 399]) == 9
    with pytest.raises(ValueError, match="Cannot tell the channel axis"):
        lazy_image(np.zeros((3, 10, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lazy_image(tmp_path / "nope.tif")


def test_coarse_histology_is_warned_about_once_naming_hr_um(caplog):
    s = sd.datasets.synthetic_tissue(size_um=400, n_genes=3, seed=0, he_um=5.0)
    with caplog.at_level(logging.WARNING, logger="stdiff"):
        for _ in range(3):
            sd.pp.rasterize(s, counts_key="hr_counts", lr_um=40, factor=5, he_scale=1)
    warned = [r.getMessage() for r in caplog.records if "coarser than half the HR pixel" in r.getMessage()]
    assert len(warned) == 1 and "hr_um=10" in warned[0] and "5 µm pixels" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stdiff"):  # another HR pixel: warned about again
        sd.pp.rasterize(s, counts_key="hr_counts", lr_um=60, factor=10, he_scale=1)
    assert "hr_um=10" in caplog.text


def test_readers_keep_a_tiff_on_disk(tmp_path):
    """read_spots_table (and read_st, through from_spots) build the section without reading the TIFF's pixels."""
    import pandas as pd
    import tifffile

    side = 4000  # 48 MB
    tifffile.imwrite(tmp_path / "he.tif", np.full((side, side, 3), 200, np.uint8), tile=(512, 512))
    xy = np.array([(x, y) for y in range(500, 3500, 173) for x in range(500 + (y // 173 % 2) * 100, 3500, 200)], float)
    ids = [f"s{i}" for i in range(len(xy))]
    pd.DataFrame({"barcode": ids, "x": xy[:, 0], "y": xy[:, 1]}).to_csv(tmp_path / "pos.csv", index=False)
    counts = pd.DataFrame(np.ones((len(xy), 2), int), index=ids, columns=["A", "B"])
    counts.to_csv(tmp_path / "counts.csv")
    run = lambda: sd.io.read_spots_table(tmp_path / "pos.csv", tmp_path / "counts.csv", tmp_path / "he.tif",
                                         um_per_px=0.5, platform="visium")  # fmt: skip
    run()  # the first call imports the readers' modules
    sdata, peak = _peak(run)
    assert peak < 8 * MB, f"read_spots_table traced {peak / MB:.1f} MB for a 48 MB TIFF"
    level0 = image_levels(sdata.images["he"])[0]
    assert level0.shape == (3, side, side) and int(level0.data[1, 10, 10].compute()) == 200


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_windows_of_derived_levels_equal_spatialdata_levels(dtype):
    """Windows recomputed from scale0 hold exactly the values of spatialdata's lazily computed levels."""
    from spatialdata.models import Image2DModel

    from stdiff._image_windows import read_level_window

    rgb = (np.random.default_rng(0).random((3, 903, 705)) * 250).astype(dtype)  # odd sides: trimmed at the start
    el = Image2DModel.parse(rgb, dims=("c", "y", "x"), c_coords=["r", "g", "b"], scale_factors=[2, 2, 2],
                            chunks=(3, 128, 128))  # fmt: skip
    levels = image_levels(el)
    for i, level in enumerate(levels):
        h, w = level.shape[-2:]
        for r0, r1, c0, c1 in ((0, h, 0, w), (h // 3, h // 2 + 1, 1, w - 1), (h - 1, h, w - 3, w)):
            expected = np.asarray(level.data[:, r0:r1, c0:c1])
            np.testing.assert_array_equal(read_level_window(levels, i, (r0, r1), (c0, c1)), expected)


def test_the_default_reads_a_huge_lazy_image_window_by_window(synthetic_small):
    """``model=None`` fits on the spots' section of a 40k × 40k H&E without loading the image."""
    centres, counts, genes, _ = spot_counts(synthetic_small)
    sdata = sd.io.from_spots(counts, centres + np.array([4000.0, 3000.0]), huge_image(40_000), genes=genes, units="um",
                             um_per_px=0.25, spot_diameter_um=55)  # fmt: skip
    out, peak = _peak(lambda: sd.tl.superresolve(sdata, hr_um=20, chunk_lr=3, progress=False, copy=True))
    mean = np.asarray(image_levels(out.images["stdiff"])[0].data)
    assert out.attrs["stdiff"]["stdiff"]["model"] == "SpotRate" and mean.sum() > 0 and np.isfinite(mean).all()
    assert peak < 400 * MB, f"the default traced {peak / MB:.0f} MB on a lazy 4.8 GB image"
