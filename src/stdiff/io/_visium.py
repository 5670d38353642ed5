"""``sd.io.read_visium``: a Space Ranger ``outs/`` folder as it is, in µm, its full-resolution image kept on disk.

Space Ranger writes the counts as ``filtered_feature_bc_matrix.h5`` and as the
``filtered_feature_bc_matrix/`` folder (``matrix.mtx.gz``, ``barcodes.tsv.gz``, ``features.tsv.gz``);
the spots' full-resolution pixel positions to ``spatial/tissue_positions.csv`` (Space Ranger ≥ 2, with
a header) or ``spatial/tissue_positions_list.csv`` (Space Ranger 1, with or without one); the scale
factors to ``spatial/scalefactors_json.json``; and downscaled images ``spatial/tissue_hires_image.png``
and ``tissue_lowres_image.png``. The full-resolution H&E is Space Ranger's input, not in ``outs/``.

:func:`read_visium` reads the folder with ``spatialdata_io.visium`` (so the layout is the one
spatialdata-io gives: elements named after the dataset, a coordinate system in full-resolution pixels),
points it at the mtx folder when there is no ``.h5`` (its reader raises ``NotImplementedError`` for
the folder itself), adds the full-resolution image lazily (:func:`~stdiff.io._image.lazy_image`:
a TIFF is read window by window, not loaded) and adds a µm coordinate system
(:func:`stdiff.pp.to_micrometres`, from the spot lattice).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._utils import logger

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

COUNTS = "filtered_feature_bc_matrix"
MTX_FILES = ("matrix.mtx.gz", "barcodes.tsv.gz", "features.tsv.gz")


def read_visium(
    path: str | os.PathLike,
    *,
    dataset_id: str | None = None,
    counts_file: str | None = None,
    fullres_image_file: str | os.PathLike | None = None,
    um_per_unit: float | None = None,
    **kwargs: Any,
) -> SpatialData:
    """Read a Space Ranger (Visium) ``outs/`` folder into the SpatialData stdiff reads.

    Parameters
    ----------
    path
        The ``outs/`` folder (or the run folder holding it, or its counts file).
    dataset_id
        Names the elements (``{dataset_id}`` spots, ``{dataset_id}_full_image``…) and the coordinate
        systems; default: the counts file's library prefix, else the sample's folder name.
    counts_file
        The counts, relative to ``path``: an ``.h5`` or an mtx folder; default:
        ``filtered_feature_bc_matrix.h5`` (with or without a library prefix), else the
        ``filtered_feature_bc_matrix/`` folder. Pass ``"raw_feature_bc_matrix.h5"`` for every spot.
    fullres_image_file
        The full-resolution H&E given to Space Ranger (absolute, or relative to ``path``): a TIFF stays
        on disk and is read window by window; without one, the hires image is the histology.
    um_per_unit
        µm per full-resolution pixel; default: from the spot lattice (100 µm between neighbouring spots).
    **kwargs
        Passed to ``spatialdata_io.visium`` (e.g. ``var_names_make_unique``).

    Returns
    -------
    The section as ``spatialdata_io.visium`` lays it out (circles ``{dataset_id}``, ``table``, images
    ``{dataset_id}_full_image`` / ``_hires_image`` / ``_lowres_image``, coordinate system ``{dataset_id}``
    in full-resolution pixels) plus the µm coordinate system ``{dataset_id}_um`` that
    :func:`stdiff.tl.superresolve` uses (:func:`stdiff.pp.to_micrometres`).
    """
    import spatialdata_io

    from ..pp import to_micrometres

    if dataset_id is not None:
        check_name(dataset_id, "dataset_id")
    outs, counts_file = _locate(Path(path), counts_file)
    counts, library = _counts_file(outs, counts_file)
    dataset_id = dataset_id if dataset_id is not None else _element_name(library or _folder_id(outs))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting `region_key", category=UserWarning)
        sdata = spatialdata_io.visium(outs, dataset_id=dataset_id, counts_file=counts, **kwargs)
    if fullres_image_file is not None:
        sdata.images[f"{dataset_id}_full_image"] = fullres_element(outs / fullres_image_file, dataset_id)
    to_micrometres(sdata, dataset_id, um_per_unit=um_per_unit)
    table = sdata.tables["table"]
    logger.info(
        "Read Visium %s: %d spots × %d genes (%s), images %s, µm system %r.",
        outs, table.n_obs, table.n_vars, counts, list(sdata.images), f"{dataset_id}_um",
    )  # fmt: skip
    return sdata


def is_visium_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a Space Ranger ``outs/`` folder (or a run folder holding one)."""
    p = Path(path)
    return p.is_dir() and ((p / "spatial").is_dir() or (p / "outs" / "spatial").is_dir())


def check_name(name: Any, what: str) -> None:
    """Refuse a name spatialdata cannot give an element (its rules: letters, digits, ``_``, ``-``, ``.``)."""
    from .._spatial import valid_element_name

    if not valid_element_name(name):
        raise ValueError(
            f"{what}={name!r} is not a valid element name: use letters, digits, '_', '-' and '.' only (not starting "
            "with '__')."
        )


def _locate(path: Path, counts_file: str | None) -> tuple[Path, str | None]:
    """The ``outs/`` folder (``path``, its ``outs/`` or the folder of a counts file) and the counts file given."""
    if path.is_file() and path.suffix == ".h5":
        return path.parent, counts_file or path.name
    if not path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is not a folder: pass Space Ranger's outs/ folder.")
    if not (path / "spatial").is_dir() and (path / "outs" / "spatial").is_dir():
        path = path / "outs"
    if not (path / "spatial").is_dir():
        raise FileNotFoundError(
            f"{str(path)!r} has no spatial/ folder: pass Space Ranger's outs/ folder (with spatial/"
            "tissue_positions.csv, spatial/scalefactors_json.json and the counts)."
        )
    return path, counts_file


def _counts_file(outs: Path, counts_file: str | None) -> tuple[str, str | None]:
    """``(counts file for spatialdata_io, library prefix or None)``: an ``.h5``, or ``<mtx folder>/matrix.mtx.gz``."""
    if counts_file is not None:
        target = outs / counts_file
        if not target.exists():
            raise FileNotFoundError(f"counts_file={counts_file!r}: {str(target)!r} does not exist.")
        return (_mtx(target, outs) if target.is_dir() else str(counts_file)), _library(target.name)
    h5 = sorted(p.name for p in outs.glob(f"*{COUNTS}.h5"))
    if len(h5) > 1:
        raise ValueError(f"{str(outs)!r} holds several counts files {h5}: pass counts_file= with the one to read.")
    if h5:
        return h5[0], _library(h5[0])
    folders = sorted(p for p in outs.glob(f"*{COUNTS}") if p.is_dir())
    if len(folders) == 1:
        return _mtx(folders[0], outs), _library(folders[0].name)
    raise FileNotFoundError(
        f"No counts in {str(outs)!r}: expected {COUNTS}.h5 or the {COUNTS}/ folder ({', '.join(MTX_FILES)})"
        + (f"; found several folders {[f.name for f in folders]}" if folders else "")
        + ". Pass counts_file= (e.g. 'raw_feature_bc_matrix.h5') for another name."
    )


def _library(name: str) -> str | None:
    """The library id a counts file is prefixed with (``"lib_filtered_feature_bc_matrix.h5"`` → ``"lib"``)."""
    m = re.match(r"^(.+?)_(?:filtered|raw)_feature_bc_matrix(?:\.h5)?$", name)
    return m.group(1) if m else None


def _mtx(folder: Path, outs: Path) -> str:
    """``<folder>/matrix.mtx.gz`` relative to ``outs`` (spatialdata_io reads it), after checking the three files."""
    missing = [f for f in MTX_FILES if not (folder / f).is_file()]
    if missing:
        legacy = (folder / "genes.tsv").is_file() or (folder / "matrix.mtx").is_file()
        raise FileNotFoundError(
            f"The counts folder {str(folder)!r} lacks {missing}"
            + (": it holds Cell Ranger 2's uncompressed files; gzip them (features.tsv.gz from genes.tsv)" if legacy
               else "")
            + "."
        )  # fmt: skip
    return f"{folder.relative_to(outs).as_posix()}/{MTX_FILES[0]}"


def _folder_id(outs: Path) -> str:
    """The sample's name: the folder holding ``outs/`` (Space Ranger's run folder), else the folder's own name."""
    folder = outs.resolve()
    return folder.parent.name if folder.name == "outs" and folder.parent.name else folder.name


def _element_name(name: str) -> str:
    """``name`` with what spatialdata refuses in element names replaced by ``_``."""
    return re.sub(r"[^0-9A-Za-z_.-]", "_", name).lstrip("_.") or "visium"


def fullres_element(path: Path, dataset_id: str) -> Any:
    """The full-resolution image as spatialdata-io places it (identity to ``dataset_id``), lazy and multiscale."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    from .._spatial import pyramid_scale_factors
    from ._image import CHUNK_PX, lazy_image

    if not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"fullres_image_file: {str(path)!r} does not exist.")
    chw = lazy_image(path)
    c = ["r", "g", "b"] if chw.shape[0] == 3 else [f"c{i}" for i in range(chw.shape[0])]
    return Image2DModel.parse(
        chw, dims=("c", "y", "x"), c_coords=c, transformations={dataset_id: Identity()},
        scale_factors=pyramid_scale_factors(chw.shape[1:], max_factor=16), chunks=(chw.shape[0], CHUNK_PX, CHUNK_PX),
    )  # fmt: skip
