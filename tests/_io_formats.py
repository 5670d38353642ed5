"""Xenium-format folders for spatialdata-io (the Visium writer is :mod:`stdiff.datasets._space_ranger`).

Each writer takes the same section as a µm SpatialData would hold it (an RGB H&E of ``he_um`` µm per
pixel, spot centres in µm with counts, or transcripts in µm) and returns the µm SpatialData that
holds exactly the same data, for comparison with what the reader gives back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stdiff.datasets._space_ranger import hex_spots, write_visium  # noqa: F401 (re-exported for the tests)


def spots_in_um(he, spots: pd.DataFrame, counts: np.ndarray, genes, *, radius_um: float = 27.5, cs: str = "global"):
    """The µm SpatialData: ``he`` as given, circles ``spots`` (µm) and a linked ``table``."""
    import stdiff as sd

    ids = [f"spot{i}" for i in range(len(spots))]
    centres = spots[["x", "y"]].to_numpy(float)
    return sd.io.from_spots(counts, centres, he, genes=list(genes), spot_ids=ids, units="um",
                            spot_diameter_um=2 * radius_um, coordinate_system=cs)  # fmt: skip


def assert_same_section(a, b, *, exact_hr: bool = False):
    """Two readings of one section give the same grid, maps, masks and histology (to rounding)."""
    np.testing.assert_allclose(b.origin, a.origin, atol=1e-6)
    assert b.shape_lr == a.shape_lr and b.genes == a.genes
    np.testing.assert_allclose(b.lr, a.lr, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(b.mask_lr, a.mask_lr)
    np.testing.assert_array_equal(b.mask_hr, a.mask_hr)
    assert np.abs(b.he.astype(int) - a.he.astype(int)).max() <= 1
    if exact_hr:
        np.testing.assert_array_equal(b.hr, a.hr)


def write_xenium(
    folder: Path,
    transcripts: pd.DataFrame,
    he_rgb: np.ndarray,
    *,
    he_um: float,
    offset_um: tuple[float, float] = (0.0, 0.0),
    pixel_size: float = 0.2125,
) -> Path:
    """A Xenium Onboard Analysis 1.x output folder with transcripts and an aligned H&E.

    ``transcripts`` has ``x``, ``y`` (µm) and ``gene``; they are written shifted by ``offset_um`` (the
    instrument's frame). The H&E (``(y, x, 3)``, ``he_um`` µm per pixel, registered with the
    transcripts before the shift) is written with an alignment matrix to the morphology pixels.
    Also writes ``experiment.xenium``, an (empty) ``cells.zarr.zip`` and a small DAPI
    ``morphology_focus.ome.tif``.
    """
    import tifffile
    import zarr

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specs = {
        "major_version": 1,
        "minor_version": 0,
        "run_name": "stdiff-test",
        "region_name": "section",
        "pixel_size": pixel_size,
        "analysis_sw_version": "xenium-1.0.2",
        "panel_num_targets_predesigned": int(transcripts["gene"].nunique()),
    }
    (folder / "experiment.xenium").write_text(json.dumps(specs))
    store = zarr.storage.ZipStore(folder / "cells.zarr.zip", mode="w")
    group = zarr.open_group(store, mode="w")
    group.create_array("cell_id", data=np.arange(1, dtype=np.uint32))
    store.close()
    n = len(transcripts)
    frame = pd.DataFrame(
        {
            "transcript_id": np.arange(n, dtype=np.uint64),
            "cell_id": np.full(n, -1, dtype=np.int64),
            "overlaps_nucleus": np.zeros(n, dtype=np.uint8),
            "feature_name": transcripts["gene"].astype(str).to_numpy(),
            "x_location": transcripts["x"].to_numpy(np.float32) + np.float32(offset_um[0]),
            "y_location": transcripts["y"].to_numpy(np.float32) + np.float32(offset_um[1]),
            "z_location": np.full(n, 10.0, dtype=np.float32),
            "qv": np.full(n, 40.0, dtype=np.float32),
        }
    )
    frame.to_parquet(folder / "transcripts.parquet", index=False)
    dapi = (np.arange(256 * 256, dtype=np.uint16) % 4096).reshape(256, 256)
    tifffile.imwrite(folder / "morphology_focus.ome.tif", dapi)
    tifffile.imwrite(folder / "section_he_image.ome.tif", he_rgb)
    k = he_um / pixel_size
    align = np.array([[k, 0, offset_um[0] / pixel_size], [0, k, offset_um[1] / pixel_size], [0, 0, 1]])
    pd.DataFrame(align).to_csv(folder / "section_he_imagealignment.csv", header=False, index=False)
    return folder
