"""A section in Space Ranger's on-disk format (Visium ``outs/``), to read with :func:`stdiff.io.read_visium`.

:func:`synthetic_visium_outs` writes a synthetic section as Space Ranger lays it out (counts in the
10x HDF5 feature-barcode format or the ``filtered_feature_bc_matrix/`` mtx folder, spot positions in
full-resolution pixels, scalefactors, images), so that tutorials and tests can start from a section
exactly as :func:`stdiff.io.read_visium` and ``spatialdata_io.visium`` read it.
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


def _write_10x_mtx(folder: Path, counts: np.ndarray, barcodes, genes) -> None:
    """A 10x Genomics feature-barcode matrix folder (v3): ``matrix.mtx.gz`` (genes × barcodes), gzipped TSVs."""
    import gzip

    import scipy.io
    import scipy.sparse as sp

    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "matrix.mtx.gz", "wb") as f:
        scipy.io.mmwrite(f, sp.coo_matrix(np.asarray(counts, dtype=np.int64).T), field="integer")
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as f:
        f.writelines(f"{b}\n" for b in barcodes)
    with gzip.open(folder / "features.tsv.gz", "wt") as f:
        f.writelines(f"ENSG{i:08d}\t{g}\tGene Expression\n" for i, g in enumerate(genes))


def _write_positions(spatial: Path, pos: pd.DataFrame, positions: str) -> None:
    """``tissue_positions.csv`` (Space Ranger ≥ 2, header) or ``tissue_positions_list.csv`` (< 2, no header)."""
    if positions == "csv":
        pos.to_csv(spatial / "tissue_positions.csv", index=False)
    elif positions in ("list", "list_header"):
        pos.to_csv(spatial / "tissue_positions_list.csv", index=False, header=positions == "list_header")
    else:
        raise ValueError(f"positions must be 'csv', 'list' or 'list_header', got {positions!r}.")


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
    counts_format: str = "h5",
    positions: str = "csv",
    prefix: str = "",
) -> Path:
    """A Space Ranger ``outs/`` folder: counts, ``spatial/`` positions, scalefactors and images.

    ``he_rgb`` is the full-resolution ``(y, x, 3)`` image of ``um_per_px`` µm per pixel (written as
    ``fullres.tif``; pass ``fullres_image_file="fullres.tif"`` to the reader); hires / lowres PNGs
    are block-averaged from it. Positions are written in full-resolution pixels. ``counts_format``:
    ``"h5"`` (``filtered_feature_bc_matrix.h5``) or ``"mtx"`` (the ``filtered_feature_bc_matrix/``
    folder); ``positions``: ``"csv"`` (``tissue_positions.csv`` with a header, Space Ranger ≥ 2),
    ``"list"`` (``tissue_positions_list.csv`` without one, Space Ranger 1) or ``"list_header"``;
    ``prefix``: a library id the counts file is prefixed with (``"{prefix}_filtered_…"``).
    """
    import tifffile
    from PIL import Image

    folder = Path(folder)
    (folder / "spatial").mkdir(parents=True, exist_ok=True)
    barcodes = [f"AAAC{i:06d}-1" for i in range(len(spots))]
    name = f"{prefix}_filtered_feature_bc_matrix" if prefix else "filtered_feature_bc_matrix"
    if counts_format == "h5":
        _write_10x_h5(folder / f"{name}.h5", counts, barcodes, genes)
    elif counts_format == "mtx":
        _write_10x_mtx(folder / name, counts, barcodes, genes)
    else:
        raise ValueError(f"counts_format must be 'h5' or 'mtx', got {counts_format!r}.")
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
    _write_positions(folder / "spatial", pos, positions)
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


def synthetic_visium_outs(
    path: str | Path,
    *,
    size_um: float = 2000.0,
    n_genes: int = 50,
    seed: int = 0,
    um_per_px: float = 0.5,
    counts_format: str = "h5",
) -> Path:
    """Write a synthetic section as a Space Ranger ``outs/`` folder (Visium spots, full-resolution H&E).

    Spots (55 µm, 100 µm apart on the hexagonal lattice) count the synthetic truth's transcripts
    inside them; the counts go to ``filtered_feature_bc_matrix.h5`` (``counts_format="h5"``) or the
    ``filtered_feature_bc_matrix/`` folder (``"mtx"``). Read the folder with
    ``sd.io.read_visium(path, fullres_image_file="fullres.tif")`` (in µm), or with
    ``spatialdata_io.visium(path, dataset_id=..., fullres_image_file="fullres.tif")`` (``.h5`` only),
    whose coordinate system is in full-resolution pixels of ``um_per_px`` µm (see
    :func:`stdiff.pp.to_micrometres`).

    Returns
    -------
    ``path``.
    """
    from ._synthetic import synthetic_tissue

    s = synthetic_tissue(size_um=size_um, n_genes=n_genes, seed=seed, he_um=um_per_px)
    spots, counts, genes = hex_spots(s)
    he = s.images["he"]
    he0 = he["scale0"].ds["image"] if hasattr(he, "children") and len(he.children) else he
    rgb = np.asarray(he0.data).transpose(1, 2, 0)
    return write_visium(Path(path), rgb, spots, counts, genes, um_per_px=um_per_px, counts_format=counts_format)
