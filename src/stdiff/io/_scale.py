"""The image of a spot section and its scale: image arrays in any axis order, and pixel → µm.

The scale comes from what the user has: a pixel size (one, or one per axis), a full affine, the spot
array's alignment table (array coordinates ↔ pixels, fitted with the platform's pitch; its residual is
reported), an image element's own transformation, or, for spots in pixels, their pitch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._utils import logger
from ._checks import check_image_array

#: µm between neighbouring array positions: legacy ST (x, y), Visium (array_col, array_row).
ARRAY_STEP_UM = {"st": (200.0, 200.0), "visium": (50.0, 100.0 * np.sqrt(3) / 2)}
#: Physical spot diameter of the platforms (µm).
SPOT_DIAMETER_UM = {"st": 100.0, "visium": 55.0}


def image_array(image: Any) -> Any:
    """``(c, y, x)`` lazy image (:func:`~stdiff.io._image.lazy_image`) of an array in any axis order or a file.

    Never loaded whole: an array is wrapped, a TIFF or zarr file stays on disk. The order is told from the
    channel axis (3 or 4 channels: RGB or RGBA, alpha dropped); a shape where both ends or neither could be
    channels is refused with the order expected, and so are images with no pixels or with NaN / infinite
    ones (:func:`~stdiff.io._checks.check_image_array`); a file that is not there or cannot be read is named.
    """
    import dask.array as da

    from ._image import lazy_image

    if not isinstance(image, np.ndarray | da.Array | str | os.PathLike):
        raise TypeError(
            f"image must be an array, a file path or a spatialdata image element, not {type(image).__name__}."
        )
    if isinstance(image, str | os.PathLike) and not Path(image).exists():
        raise FileNotFoundError(f"No image file {str(image)!r}: pass the path of the H&E image (or the array).")
    try:
        chw = lazy_image(image)
    except (OSError, SyntaxError) as err:
        raise ValueError(
            f"Could not read the image {str(image)!r} ({type(err).__name__}: {err}); pass a PNG, JPEG or TIFF file, "
            "or the image as an array."
        ) from None
    check_image_array(chw)
    return chw


def fit_alignment(
    alignment: pd.DataFrame,
    platform: str,
    *,
    array_columns: Sequence[str] = ("x", "y"),
    pixel_columns: Sequence[str] = ("pixel_x", "pixel_y"),
) -> tuple[np.ndarray, dict[str, float]]:
    """The ``(3, 3)`` affine image pixel → µm from an alignment table (array coordinates ↔ pixels).

    Fits ``pixel = M · (array, 1)`` by least squares (any scale per axis, rotation and shear), then
    composes its inverse with the platform's array step in µm (legacy ST: 200 µm per step; Visium:
    ``array_col`` 50 µm, ``array_row`` 86.6 µm), anchored so that the image's pixel (0, 0) is at 0 µm.
    Returns the affine and the fit's residual (RMS, in pixels and µm).
    """
    if platform not in ARRAY_STEP_UM:
        raise ValueError(f"An alignment table needs platform='st' or 'visium' (its array step), got {platform!r}.")
    missing = [c for c in (*array_columns, *pixel_columns) if c not in alignment.columns]
    if missing:
        raise KeyError(
            f"The alignment table lacks columns {missing}; it has {list(alignment.columns)} (pass array_columns= and "
            "pixel_columns=)."
        )
    a = np.column_stack([alignment[list(array_columns)].to_numpy(float), np.ones(len(alignment))])
    p = alignment[list(pixel_columns)].to_numpy(float)
    if len(a) < 3 or np.linalg.matrix_rank(a) < 3:
        raise ValueError("The alignment table needs at least 3 spots that are not on one line.")
    m, *_ = np.linalg.lstsq(a, p, rcond=None)
    resid = p - a @ m
    rms_px = float(np.sqrt((resid**2).sum(1).mean()))
    array_to_px = np.eye(3)
    array_to_px[:2, :2], array_to_px[:2, 2] = m[:2].T, m[2]
    step = np.diag([*ARRAY_STEP_UM[platform], 1.0])
    px_to_um = step @ np.linalg.inv(array_to_px)
    px_to_um[:2, 2] = 0.0  # anchored at the image: pixel (0, 0) is at 0 µm
    lin = px_to_um[:2, :2]
    lin[np.abs(lin) < 1e-9 * np.abs(lin).max()] = 0.0  # round-off, not shear
    um_per_px = float(np.sqrt(abs(np.linalg.det(px_to_um[:2, :2]))))
    return px_to_um, {"rms_px": rms_px, "rms_um": rms_px * um_per_px}


def own_element(image: Any, coordinate_system: str) -> tuple[Any, np.ndarray]:
    """A shallow copy of an image element with its own transformations, and its affine pixel → µm."""
    import copy

    from spatialdata.transformations import get_transformation, set_transformation

    from .._spatial import image_levels

    try:
        transforms = get_transformation(image, get_all=True)
    except Exception:  # anything else than an image element
        raise TypeError(
            f"image must be an array, a file path or a spatialdata image element, not {type(image).__name__}."
        ) from None
    if coordinate_system not in transforms:
        raise ValueError(
            f"The image element has no transformation to coordinate_system={coordinate_system!r} (it has "
            f"{list(transforms)}): pass the one in µm as coordinate_system=."
        )
    coarsest = image_levels(image)[-1]
    check_image_array(np.asarray(coarsest.data))  # NaNs reach the coarsest level of a pyramid
    element = image.copy(deep=False)  # the section's own element: the same pixels, its own transformations
    set_transformation(element, copy.deepcopy(transforms), set_all=True)
    px_to_um = np.asarray(
        get_transformation(element, to_coordinate_system=coordinate_system).to_affine_matrix(
            input_axes=("x", "y"), output_axes=("x", "y")
        ),
        dtype=float,
    )
    return element, px_to_um


def bounds_um(element: Any, coordinate_system: str) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of an image element's pixels in µm."""
    from .._spatial import affine_to_cs, image_levels

    h, w = image_levels(element)[0].shape[-2:]
    corners = affine_to_cs(element, coordinate_system) @ np.array([[0, w, 0, w], [0, 0, h, h], [1, 1, 1, 1]], float)
    return float(corners[0].min()), float(corners[1].min()), float(corners[0].max()), float(corners[1].max())


def pixel_scale(
    xy: np.ndarray,
    units: str,
    platform: str | None,
    *,
    um_per_px: float | tuple[float, float] | None,
    affine: np.ndarray | None,
    alignment: pd.DataFrame | None,
    array_columns: Sequence[str],
    pixel_columns: Sequence[str],
) -> tuple[np.ndarray, dict[str, Any], str | None]:
    """``(affine pixel → µm, how it was found, platform)`` of an image array from what the user gave."""
    if sum(v is not None for v in (um_per_px, affine, alignment)) > 1:
        raise ValueError("Give one of um_per_px=, affine= and alignment=.")
    if affine is not None:
        a = np.asarray(affine, dtype=float)
        px_to_um = np.vstack([a[:2], [0.0, 0.0, 1.0]]) if a.shape == (2, 3) else a
        if px_to_um.shape != (3, 3):
            raise ValueError(f"affine must be (2, 3) or (3, 3), got {a.shape}.")
        return px_to_um, {"scale": "given (affine=)"}, platform
    if um_per_px is not None:
        sx, sy = (um_per_px, um_per_px) if np.isscalar(um_per_px) else tuple(um_per_px)
        if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
            raise ValueError(f"um_per_px must be positive, got {um_per_px!r}.")
        return np.diag([float(sx), float(sy), 1.0]), {"scale": "given (um_per_px=)"}, platform
    if alignment is not None:
        platform = platform or "st"
        px_to_um, fit = fit_alignment(alignment, platform, array_columns=array_columns, pixel_columns=pixel_columns)
        logger.info("Alignment: %d spots, residual %.2f px (%.2f µm).", len(alignment), fit["rms_px"], fit["rms_um"])
        return px_to_um, {"scale": f"fitted from the alignment table ({platform} array step)", **fit}, platform
    if units == "px":
        if platform not in SPOT_DIAMETER_UM:
            raise ValueError(
                "The spots are in image pixels and nothing says how large a pixel is: pass um_per_px= (from the "
                "microscope), affine=, alignment= (array ↔ pixel table), or platform='visium' / 'st' to take the scale "
                "from the spots' pitch."
            )
        from ..spots import PLATFORMS, nearest_pitch

        s = PLATFORMS[platform].pitch_um / nearest_pitch(xy.T)
        return (
            np.diag([s, s, 1.0]),
            {"scale": f"from the spots' pitch ({platform}: {PLATFORMS[platform].pitch_um:g} µm)"},
            platform,
        )
    raise ValueError(
        "The spots are in µm but the image's pixel size is unknown: pass um_per_px=, affine= or alignment=, "
        "or an image element with its transformation."
    )


def platform_diameter(centres_um: np.ndarray, platform: str | None, hint: str) -> tuple[float, str | None]:
    """``(spot diameter µm, platform)``: the platform's spot size, the platform told by the pitch if not given."""
    from ..spots import PLATFORMS, TOLERANCE, nearest_pitch

    pitch = nearest_pitch(centres_um.T)
    if platform is None:
        near = [p for p in SPOT_DIAMETER_UM if abs(pitch - PLATFORMS[p].pitch_um) <= TOLERANCE * PLATFORMS[p].pitch_um]
        platform = near[0] if near else None
    if platform not in SPOT_DIAMETER_UM:
        raise ValueError(
            f"Cannot tell the spot diameter: the spots are {pitch:.4g} µm apart ({hint}), neither Visium's 100 µm nor "
            "legacy ST's 200 µm. Pass spot_diameter_um= (e.g. 55 for Visium, 100 for legacy ST) for another array, "
            "or check the scale."
        )
    return SPOT_DIAMETER_UM[platform], platform


def is_element(image: Any) -> bool:
    """Whether ``image`` is a spatialdata image element (an ``xarray`` DataArray or a multiscale DataTree)."""
    import xarray as xr

    return isinstance(image, xr.DataArray | xr.DataTree)


def image_element(chw: Any, px_to_um: np.ndarray, coordinate_system: str) -> Any:
    """A lazy image ``(c, y, x)`` (:func:`image_array`) as a multiscale image element with the affine pixel → µm.

    Its levels are computed window by window from the array or the file when they are read.
    """
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Affine

    from .._spatial import pyramid_scale_factors
    from ._image import CHUNK_PX

    c = ["r", "g", "b"] if chw.shape[0] == 3 else [f"c{i}" for i in range(chw.shape[0])]
    transform = Affine(px_to_um, input_axes=("x", "y"), output_axes=("x", "y"))
    return Image2DModel.parse(
        chw, dims=("c", "y", "x"), c_coords=c, transformations={coordinate_system: transform},
        scale_factors=pyramid_scale_factors(chw.shape[1:], max_factor=8),
        chunks=(chw.shape[0], CHUNK_PX, CHUNK_PX),
    )  # fmt: skip
