"""Write small folders in the on-disk formats that spatialdata-io's Visium and Xenium readers read.

Each writer takes the same section as a µm SpatialData would hold it (an RGB H&E of ``he_um`` µm per
pixel, spot centres in µm with counts, or transcripts in µm) and returns the µm SpatialData that
holds exactly the same data, for comparison with what the reader gives back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

VISIUM_PITCH = 100.0


def hex_spots(sdata, *, radius_um: float = 27.5, margin_um: float = 60.0):
    """Visium-like spots on the hexagonal lattice (100 µm between neighbours) over a synthetic section.

    Counts are the sum of the synthetic truth bins whose centre lies inside the spot. Returns a frame
    with ``array_row``, ``array_col``, ``x``, ``y`` (µm) and the ``(n, G)`` integer counts and genes.
    """
    from spatialdata.transformations import get_transformation

    el = sdata.images["hr_counts"]
    counts = np.asarray(el.data)
    genes = [str(g) for g in el.coords["c"].values]
    bin_um = float(get_transformation(el).to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))[0, 0])
    _, H, W = counts.shape
    yy, xx = np.meshgrid((np.arange(H) + 0.5) * bin_um, (np.arange(W) + 0.5) * bin_um, indexing="ij")
    dy = VISIUM_PITCH * np.sqrt(3) / 2
    rows = []
    for r in range(int((H * bin_um - 2 * margin_um) // dy) + 1):
        for c in range(r % 2, int((W * bin_um - 2 * margin_um) // (VISIUM_PITCH / 2)) + 1, 2):
            rows.append((r, c, margin_um + c * VISIUM_PITCH / 2, margin_um + r * dy))
    spots = pd.DataFrame(rows, columns=["array_row", "array_col", "x", "y"])
    values = np.stack(
        [
            counts[:, (yy - y) ** 2 + (xx - x) ** 2 <= radius_um**2].sum(1)
            for x, y in zip(spots["x"], spots["y"], strict=True)
        ]
    )
    return spots, np.rint(values).astype(np.int64), genes


def spots_in_um(he, spots: pd.DataFrame, counts: np.ndarray, genes, *, radius_um: float = 27.5, cs: str = "global"):
    """The µm SpatialData: ``he`` as given, circles ``spots`` (µm) and a linked ``table``."""
    from stdiff.datasets._spots import spots_sdata

    ids = np.array([f"spot{i}" for i in range(len(spots))])
    centres = spots[["x", "y"]].to_numpy(float)
    return spots_sdata(he, counts, pd.Index(genes), ids, centres, radius_um, {}, {}, coordinate_system=cs)


def _write_10x_h5(path: Path, counts: np.ndarray, barcodes, genes) -> None:
    """A 10x Genomics feature-barcode matrix (HDF5, v3): CSC by barcode under ``/matrix``."""
    import h5py
    import scipy.sparse as sp

    m = sp.csr_matrix(np.asarray(counts, dtype=np.int32))  # barcodes × genes
    with h5py.File(path, "w") as f:
        f.attrs["library_ids"] = np.array([b"section"])
        grp = f.create_group("matrix")
        grp.create_dataset("barcodes", data=np.array([str(b).encode() for b in barcodes]))
        grp.create_dataset("data", data=m.data.astype(np.int32))
        grp.create_dataset("indices", data=m.indices.astype(np.int64))
        grp.create_dataset("indptr", data=m.indptr.astype(np.int64))
        grp.create_dataset("shape", data=np.array([m.shape[1], m.shape[0]], dtype=np.int32))
        feat = grp.create_group("features")
        feat.create_dataset("id", data=np.array([f"ENSG{i:08d}".encode() for i in range(len(genes))]))
        feat.create_dataset("name", data=np.array([g.encode() for g in genes]))
        feat.create_dataset("feature_type", data=np.array([b"Gene Expression"] * len(genes)))
        feat.create_dataset("genome", data=np.array([b"GRCh38"] * len(genes)))
        feat.create_dataset("_all_tag_keys", data=np.array([b"genome"]))


def write_visium(
    folder: Path,
    he_rgb: np.ndarray,
    spots: pd.DataFrame,
    counts: np.ndarray,
    genes,
    *,
    um_per_px: float,
    hires_scalef: float = 0.25,
    lowres_scalef: float = 0.0625,
) -> Path:
    """A Space Ranger ``outs/`` folder: counts (``.h5``), ``spatial/`` positions, scalefactors and images.

    ``he_rgb`` is the full-resolution ``(y, x, 3)`` image of ``um_per_px`` µm per pixel (written as
    ``fullres.tif``; pass ``fullres_image_file="fullres.tif"`` to the reader); hires / lowres PNGs
    are block-averaged from it. Positions are written in full-resolution pixels.
    """
    import tifffile
    from PIL import Image

    folder = Path(folder)
    (folder / "spatial").mkdir(parents=True, exist_ok=True)
    barcodes = [f"AAAC{i:06d}-1" for i in range(len(spots))]
    _write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, barcodes, genes)
    pos = pd.DataFrame(
        {
            "barcode": barcodes,
            "in_tissue": 1,
            "array_row": spots["array_row"].to_numpy(),
            "array_col": spots["array_col"].to_numpy(),
            "pxl_row_in_fullres": spots["y"].to_numpy() / um_per_px,
            "pxl_col_in_fullres": spots["x"].to_numpy() / um_per_px,
        }
    )
    pos.to_csv(folder / "spatial" / "tissue_positions.csv", index=False)
    scalefactors = {
        "spot_diameter_fullres": 65.0 / um_per_px,  # Space Ranger: pixels spanning a theoretical 65 µm spot
        "tissue_hires_scalef": hires_scalef,
        "fiducial_diameter_fullres": 65.0 / um_per_px * 1.6154,
        "tissue_lowres_scalef": lowres_scalef,
    }
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    tifffile.imwrite(folder / "fullres.tif", he_rgb)
    for name, f in (("tissue_hires_image.png", hires_scalef), ("tissue_lowres_image.png", lowres_scalef)):
        k = int(round(1 / f))
        h, w = he_rgb.shape[0] // k, he_rgb.shape[1] // k
        small = he_rgb[: h * k, : w * k].reshape(h, k, w, k, 3).mean(axis=(1, 3))
        Image.fromarray(np.clip(np.rint(small), 0, 255).astype(np.uint8)).save(folder / "spatial" / name)
    return folder


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
