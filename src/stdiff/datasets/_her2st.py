"""HER2+ breast tumour, legacy Spatial Transcriptomics with H&E (Andersson et al. 2021, ``almaan/her2st``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stdiff._utils import logger

from .._spatial import pyramid_scale_factors
from ..io import from_spots, lazy_image
from ._registry import dataset_file

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

__all__ = ["HER2ST_SECTIONS", "her2st"]

_FOLDER = "her2st_ST_breast_HE"

#: H&E file of each section available in the registry (public repo ``data/`` layout).
_HER2ST_IMAGES: dict[str, str] = {
    "B4": "ST-imgs/B/B4/BT10737_D2_HE.jpg",
    "C2": "ST-imgs/C/C2/5714_HE_BT_C2.jpg",
    "C3": "ST-imgs/C/C3/5714_HE_BT_D1.jpg",
    "C4": "ST-imgs/C/C4/5714_HE_BT_D2.jpg",
    "C5": "ST-imgs/C/C5/5714_HE_BT_E1.jpg",
}

#: Sections that can be loaded without ``data_dir`` (registered public files with sha256).
HER2ST_SECTIONS: tuple[str, ...] = tuple(_HER2ST_IMAGES)

SPOT_PITCH_UM = 200.0
SPOT_DIAMETER_UM = 100.0


def _her2st_base(data_dir: str | os.PathLike) -> Path:
    """The her2st folder: ``data_dir`` itself, or ``data_dir/her2st_ST_breast_HE`` when that exists."""
    base = Path(data_dir).expanduser()
    if not (base / "ST-cnts").is_dir() and (base / _FOLDER).is_dir():
        base = base / _FOLDER
    return base


def _find_image(base: Path, section: str) -> Path:
    folder = base / "ST-imgs" / section[0] / section
    jpgs = []
    if folder.is_dir():
        jpgs = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if len(jpgs) != 1:
        what = "no .jpg" if not jpgs else f"{len(jpgs)} .jpg files ({[p.name for p in jpgs]})"
        raise FileNotFoundError(
            f"Expected exactly one H&E .jpg in {folder}, found {what}. `data_dir` should point at the her2st "
            f"`data/` folder (layout ST-imgs/<letter>/<section>/*.jpg, e.g. $STDIFF_DATA_DIR/{_FOLDER})."
        )
    return jpgs[0]


def _files(section: str, data_dir: str | os.PathLike | None) -> tuple[Path, Path, Path]:
    cnts_rel = f"ST-cnts/{section}.tsv.gz"
    spots_rel = f"ST-spotfiles/{section}_selection.tsv"
    if data_dir is not None:
        base = _her2st_base(data_dir)
        cnts = dataset_file(_FOLDER, cnts_rel, data_dir=base)
        spots = dataset_file(_FOLDER, spots_rel, data_dir=base)
        return cnts, spots, _find_image(base, section)
    if section not in _HER2ST_IMAGES:
        raise ValueError(
            f"Unknown her2st section {section!r} without `data_dir`; the registry knows "
            f"{list(HER2ST_SECTIONS)}. For any other section, pass `data_dir=` the her2st `data/` folder "
            "(ST-cnts/, ST-spotfiles/, ST-imgs/)."
        )
    return (
        dataset_file(_FOLDER, cnts_rel),
        dataset_file(_FOLDER, spots_rel),
        dataset_file(_FOLDER, _HER2ST_IMAGES[section]),
    )


def lattice_pixel_size(spots: pd.DataFrame, *, pitch_um: float = SPOT_PITCH_UM) -> tuple[float, np.ndarray]:
    """Micrometres per image pixel from the spot lattice.

    Fits ``(x, y, 1) @ M = (pixel_x, pixel_y)`` by least squares; the pitch in pixels is the mean length of
    the two lattice axis vectors (rows of ``M[:2]``), and ``µm/px = pitch_um / pitch_px``.

    Returns
    -------
    ``(um_per_px, M)`` with ``M`` the (3, 2) affine fit.
    """
    a = np.column_stack([spots["x"].to_numpy(float), spots["y"].to_numpy(float), np.ones(len(spots))])
    b = spots[["pixel_x", "pixel_y"]].to_numpy(float)
    if len(spots) < 3 or np.linalg.matrix_rank(a) < 3:
        raise ValueError("Need at least 3 non-collinear spots to derive the pixel size from the spot lattice.")
    m, *_ = np.linalg.lstsq(a, b, rcond=None)
    pitch_px = float(np.mean(np.linalg.norm(m[:2], axis=1)))
    return pitch_um / pitch_px, m


def her2st(section: str = "B4", *, data_dir: str | os.PathLike | None = None) -> SpatialData:
    """Load one HER2+ breast tumour section (legacy ST, 100 µm spots at 200 µm pitch) with its H&E.

    Data: Andersson et al., Nat. Commun. 2021, https://github.com/almaan/her2st (pinned commit in
    :mod:`stdiff.datasets._registry`). No license is stated by the repository.

    Parameters
    ----------
    section
        Section id, e.g. ``"B4"``. Without ``data_dir`` one of :data:`HER2ST_SECTIONS`.
    data_dir
        The her2st ``data/`` folder (``ST-cnts/``, ``ST-spotfiles/``, ``ST-imgs/``), e.g.
        ``$STDIFF_DATA_DIR/her2st_ST_breast_HE``; any section present there can be loaded. When ``None``,
        the registered files are taken from ``$STDIFF_DATA_DIR/her2st_ST_breast_HE`` or downloaded (pooch).

    Returns
    -------
    :class:`spatialdata.SpatialData` in coordinate system ``"global"`` (µm) with

    - image ``"he"``: RGB uint8 (``c = ["r", "g", "b"]``), multiscale with levels downsampled ×1, ×2, ×4, ×8
      (``scale0`` … ``scale3``), ``Scale`` px → µm;
    - shapes ``"spots"``: circles (radius 50 µm) indexed by spot key (``"10x14"``), centres in µm;
    - table ``"table"``: counts (CSR int32) annotating ``"spots"``; ``obs`` has ``array_x``, ``array_y``,
      ``region``, ``spot_id``; ``obsm["spatial"]`` holds the centres in µm.

    ``sdata.attrs["her2st"]`` records ``section``, ``um_per_px`` (≈0.69, derived from the 200 µm pitch),
    ``spot_pitch_um`` and ``spot_diameter_um``. Only spots with ``selected == 1`` that are present in the
    counts file are kept.
    """
    t0 = time.perf_counter()
    section = str(section)
    cnts_path, spots_path, img_path = _files(section, data_dir)
    spots = _read_spots(spots_path)
    counts = pd.read_csv(cnts_path, sep="\t", index_col=0)
    counts.index = counts.index.astype(str)
    for what, idx, path in (("spot", spots.index, spots_path), ("count row", counts.index, cnts_path)):
        if not idx.is_unique:
            raise ValueError(f"{path} has duplicated {what} keys, e.g. {idx[idx.duplicated()][:3].tolist()}.")
    um_per_px, _ = lattice_pixel_size(spots)  # from the lattice of all selected spots
    keep = _spots_with_counts(section, spots.index, counts.index)
    if len(keep) == 0:
        raise ValueError(f"No selected spot of {spots_path} is present in {cnts_path}.")
    spots = spots.loc[keep]
    counts = counts.loc[keep]
    he, (h, w) = _he_element(img_path, um_per_px)
    sdata = from_spots(
        counts.to_numpy(dtype=np.int32),
        spots[["pixel_x", "pixel_y"]].to_numpy(float) * um_per_px,
        he,
        genes=list(counts.columns.astype(str)),
        spot_ids=list(keep.to_numpy(dtype=object)),
        units="um",
        spot_diameter_um=SPOT_DIAMETER_UM,
        obs={"array_x": spots["x"].to_numpy(int), "array_y": spots["y"].to_numpy(int)},
        attrs={
            "her2st": {
                "section": section,
                "um_per_px": float(um_per_px),
                "spot_pitch_um": SPOT_PITCH_UM,
                "spot_diameter_um": SPOT_DIAMETER_UM,
            }
        },
    )
    logger.info(
        "her2st %s: %d spots x %d genes, H&E %dx%d px at %.4f um/px, loaded in %.1f s",
        section,
        sdata.tables["table"].n_obs,
        sdata.tables["table"].n_vars,
        w,
        h,
        um_per_px,
        time.perf_counter() - t0,
    )
    return sdata


def _read_spots(path: Path) -> pd.DataFrame:
    """The selected (under tissue) spots of a ``*_selection.tsv``, indexed by spot key (``"10x14"``)."""
    spots = pd.read_csv(path, sep="\t")
    missing_cols = {"x", "y", "pixel_x", "pixel_y", "selected"} - set(spots.columns)
    if missing_cols:
        raise ValueError(f"{path} lacks columns {sorted(missing_cols)}; is it a her2st *_selection.tsv?")
    spots = spots[spots["selected"] == 1].copy()
    spots.index = pd.Index(spots["x"].astype(int).astype(str) + "x" + spots["y"].astype(int).astype(str), name=None)
    return spots


def _spots_with_counts(section: str, selected: pd.Index, counted: pd.Index) -> pd.Index:
    """The selected spots that have a count row (in the selection's order); logs what is dropped on either side."""
    keep = selected[selected.isin(counted)]
    for n, what in (
        (len(selected), "selected spots are absent from the counts file"),
        (len(counted), "count rows are not selected (under tissue) spots"),
    ):
        if len(keep) < n:
            logger.info("her2st %s: %d of %d %s and were dropped.", section, n - len(keep), n, what)
    return keep


def _he_element(path: Path, um_per_px: float) -> tuple[Any, tuple[int, int]]:
    """The H&E JPEG as a multiscale RGB image element (×1 … ×8) scaled to µm, and its size ``(h, w)`` in pixels."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale

    img = lazy_image(path)  # a JPEG is decoded once and wrapped, not copied again
    _, h, w = img.shape
    he = Image2DModel.parse(
        img,
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        transformations={"global": Scale([um_per_px, um_per_px], axes=("y", "x"))},
        scale_factors=pyramid_scale_factors((h, w), max_factor=8),
        chunks=(3, 1024, 1024),
    )
    return he, (h, w)
