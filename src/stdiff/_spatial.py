"""SpatialData glue: coordinate systems, element lookup, transforms and image resampling.

Everything here works in the physical units of the chosen coordinate system (stdiff assumes
micrometres) and goes through spatialdata's own transformations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._constants import Key
from ._image_windows import read_level_window
from ._utils import logger

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod

RGB_NAMES = ("r", "g", "b")


def stdiff_outputs(sdata: sd_mod.SpatialData) -> set[str]:
    """Names of elements written by :func:`stdiff.tl.superresolve` (excluded from auto-detection)."""
    out: set[str] = set()
    for key, record in ((sdata.attrs or {}).get(Key.attrs.STDIFF, {}) or {}).items():
        listed = record.get(Key.prov.IMAGES) if isinstance(record, dict) else None
        out |= {key, Key.img.std(key), *(listed or [])}
    return out


def result_provenance(sdata: sd_mod.SpatialData, key: str, *, required: bool = True) -> dict[str, Any]:
    """The provenance of the :func:`stdiff.tl.superresolve` result ``key`` (``sdata.attrs["stdiff"][key]``).

    Without one, ``{}`` when not ``required``.

    Raises
    ------
    KeyError
        ``sdata`` holds no result ``key`` and it is ``required``.
    """
    prov = ((sdata.attrs or {}).get(Key.attrs.STDIFF, {}) or {}).get(key)
    if prov is None and not required:
        return {}
    if prov is None:
        raise KeyError(
            f"No stdiff result {key!r} in sdata.attrs[{Key.attrs.STDIFF!r}]; run "
            f"sd.tl.superresolve(sdata, key_added={key!r}) first."
        )
    return prov


def valid_element_name(name: Any) -> bool:
    """Whether spatialdata accepts ``name`` for an element: letters, digits, ``_``, ``-``, ``.``; not ``__…``."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not name.startswith("__")
        and all(c.isalnum() or c in "_-." for c in name)
    )


def resolve_coordinate_system(
    sdata: sd_mod.SpatialData, coordinate_system: str | None, elements: Sequence[str] = ()
) -> str:
    """Validate ``coordinate_system`` (or pick the only one) and check ``elements`` are in it."""
    from spatialdata.transformations import get_transformation

    available = list(sdata.coordinate_systems)
    if coordinate_system is None:
        if len(available) == 1:
            coordinate_system = available[0]
        else:
            raise ValueError(
                f"The SpatialData has coordinate systems {available}; pass coordinate_system= "
                "with the one (in micrometres) that the image and the expression share."
            )
    elif coordinate_system not in available:
        raise ValueError(
            f"Unknown coordinate_system={coordinate_system!r}; the SpatialData has {available}. "
            "Pass one of those (it must be in micrometres)."
        )
    for name in elements:
        if name is None:
            continue
        transforms = get_transformation(sdata[name], get_all=True)
        if coordinate_system not in transforms:
            raise ValueError(
                f"Element {name!r} has no transformation to coordinate system {coordinate_system!r} "
                f"(it has {list(transforms)}). Register it with "
                "spatialdata.transformations.set_transformation or choose another coordinate_system."
            )
    return coordinate_system


def affine_to_cs(element: Any, coordinate_system: str) -> np.ndarray:
    """3×3 affine (x, y) of ``element``'s intrinsic coordinates → ``coordinate_system``."""
    from spatialdata.transformations import get_transformation

    t = get_transformation(element, to_coordinate_system=coordinate_system)
    return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=np.float64)


def image_levels(element: Any) -> list[Any]:
    """The levels of an image element (scale0 first) as ``xarray.DataArray`` objects."""
    if hasattr(element, "children") and len(getattr(element, "children", {})):
        levels = []
        for key in sorted(element.children, key=lambda k: int(str(k).replace("scale", ""))):
            node = element[key]
            levels.append(next(iter(node.ds.data_vars.values())))
        return levels
    return [element]


def finest_level(element: Any, dtype: Any = None) -> np.ndarray:
    """The finest level (scale0) of an image element as a numpy array (computed when it is lazy)."""
    data = image_levels(element)[0].data
    return np.asarray(data.compute() if hasattr(data, "compute") else data, dtype=dtype)


def channel_names(element: Any) -> list[str]:
    """Channel (``c``) coordinate values of an image element, as strings."""
    level = image_levels(element)[0]
    return [str(c) for c in level.coords["c"].values]


def is_rgb(element: Any) -> bool:
    """Whether an image element is an RGB picture (3 channels named r, g, b, or uint8 with 3 channels)."""
    names = [c.lower() for c in channel_names(element)]
    if names == list(RGB_NAMES):
        return True
    level = image_levels(element)[0]
    return len(names) == 3 and level.dtype == np.uint8


def check_channel_order(element: Any, key: str) -> None:
    """Raise when an image looks like an ``(H, W, 3)`` picture parsed with dims ``("c", "y", "x")``."""
    c, y, x = image_levels(element)[0].shape[-3:]
    if x in (3, 4) and c > 4 and y > 4:
        raise ValueError(
            f"Image {key!r} has {c} channels of {y} × {x} pixels: it looks like an (H, W, {x}) picture parsed with "
            "dims ('c', 'y', 'x'). Parse it with Image2DModel.parse(rgb, dims=('y', 'x', 'c')), or build the section "
            "with stdiff.io.from_spots, which detects the order."
        )


def find_image(sdata: sd_mod.SpatialData, image_key: str | None, *, exclude: set[str] = frozenset()) -> str:
    """Pick the histology image: ``image_key`` if given, else the only non-gene image."""
    images = list(sdata.images)
    if image_key is not None:
        if image_key not in images:
            raise KeyError(f"image_key={image_key!r} is not an image of this SpatialData; images are {images}.")
        return image_key
    candidates = [k for k in images if k not in exclude and k not in stdiff_outputs(sdata)]
    for k in candidates:
        check_channel_order(sdata[k], k)
    if len(candidates) == 1:
        return candidates[0]
    rgb = [k for k in candidates if is_rgb(sdata[k])]
    if len(rgb) == 1:
        return rgb[0]
    finest = _finest_of_one_picture(sdata, rgb)
    if finest is not None:
        return finest
    small = [k for k in candidates if len(channel_names(sdata[k])) <= 3]
    if len(small) == 1:
        return small[0]
    raise ValueError(
        f"Cannot tell which image is the histology (H&E) image among {candidates or images}; pass image_key=."
    )


def _finest_of_one_picture(sdata: sd_mod.SpatialData, keys: Sequence[str]) -> str | None:
    """The finest of images that are one picture at several resolutions, else ``None``.

    E.g. the full-resolution, hires and lowres images of ``spatialdata_io.visium``.
    """
    from spatialdata.transformations import get_transformation

    if len(keys) < 2:
        return None
    shared = set.intersection(*(set(get_transformation(sdata[k], get_all=True)) for k in keys))
    if not shared:
        return None
    cs = sorted(shared)[0]
    bounds = {k: np.array(element_bounds(sdata, k, cs)) for k in keys}
    ref = bounds[keys[0]]
    size = max(ref[2] - ref[0], ref[3] - ref[1])
    if any(np.abs(b - ref).max() > 0.05 * size for b in bounds.values()):
        return None
    pixel = {k: (bounds[k][2] - bounds[k][0]) / image_levels(sdata[k])[0].shape[-1] for k in keys}
    return min(keys, key=lambda k: pixel[k])


def element_bounds(sdata: sd_mod.SpatialData, key: str, coordinate_system: str) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of an image element's pixel edges in ``coordinate_system``."""
    level = image_levels(sdata[key])[0]
    h, w = level.shape[-2:]
    A = affine_to_cs(sdata[key], coordinate_system)
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=float).T
    xy = A @ corners
    return float(xy[0].min()), float(xy[1].min()), float(xy[0].max()), float(xy[1].max())


def resample_image(
    element: Any,
    coordinate_system: str,
    *,
    origin: tuple[float, float],
    pixel_um: float,
    shape: tuple[int, int],
    fill: float | None = None,
    order: int = 1,
) -> np.ndarray:
    """Resample an image element onto an axis-aligned grid of ``shape`` with ``pixel_um`` spacing.

    The grid's pixel ``(i, j)`` spans ``[origin + (j, i) * pixel_um, origin + (j+1, i+1) * pixel_um)``
    in ``coordinate_system``. The coarsest pyramid level that is still finer than the grid is used,
    block-averaged first when it is much finer (anti-aliasing). Pixels outside the image get
    ``fill`` (white for uint8 RGB, 0 otherwise). Returns ``(c, H, W)`` with the input dtype.
    """
    from scipy import ndimage

    levels = image_levels(element)
    A0 = affine_to_cs(element, coordinate_system)
    src_um0 = float(np.sqrt(abs(np.linalg.det(A0[:2, :2]))))
    h0, w0 = levels[0].shape[-2:]
    best, best_ds, best_i = levels[0], 1.0, 0
    for i, lev in enumerate(levels[1:], start=1):
        ds = h0 / lev.shape[-2]
        if src_um0 * ds <= pixel_um * 1.001:
            best, best_ds, best_i = lev, ds, i
    dtype = np.dtype(best.dtype)
    if fill is None:
        fill = 255.0 if (dtype == np.uint8 and best.shape[0] == 3) else 0.0
    ratio = pixel_um / (src_um0 * best_ds)
    block = int(np.floor(ratio)) if ratio >= 1.5 else 1
    scale_lvl = best_ds * block  # scale0 pixels per pixel of the (block-averaged) level
    Ainv = np.linalg.inv(A0)
    H, W = shape
    # read only the window of the level under the grid (lazy images stay lazy elsewhere)
    corners = np.array(
        [[origin[0], origin[0] + W * pixel_um, origin[0], origin[0] + W * pixel_um],
         [origin[1], origin[1], origin[1] + H * pixel_um, origin[1] + H * pixel_um], [1, 1, 1, 1]]
    )  # fmt: skip
    intr = Ainv @ corners / scale_lvl  # block pixels
    c, h, w = best.shape[0], best.shape[-2] // block, best.shape[-1] // block
    r0 = int(np.clip(np.floor(intr[1].min()) - 2, 0, h))
    r1 = int(np.clip(np.ceil(intr[1].max()) + 2, r0, h))
    c0 = int(np.clip(np.floor(intr[0].min()) - 2, 0, w))
    c1 = int(np.clip(np.ceil(intr[0].max()) + 2, c0, w))
    arr = read_level_window(levels, best_i, (r0 * block, r1 * block), (c0 * block, c1 * block))
    if block > 1:
        arr = arr.reshape(c, r1 - r0, block, c1 - c0, block).mean(axis=(2, 4))
    out = np.empty((c, H, W), dtype=np.float32)
    src = arr.astype(np.float32, copy=False)
    jj = np.arange(W, dtype=np.float64)
    for rr in range(0, H, 256):
        rows = np.arange(rr, min(H, rr + 256), dtype=np.float64)
        X, Y = np.meshgrid(origin[0] + (jj + 0.5) * pixel_um, origin[1] + (rows + 0.5) * pixel_um)
        pts = np.stack([X.ravel(), Y.ravel(), np.ones(X.size)])
        intr = Ainv @ pts  # scale0 intrinsic (x, y); pixel k spans [k, k+1)
        col = intr[0] / scale_lvl - 0.5 - c0
        row = intr[1] / scale_lvl - 0.5 - r0
        for ch in range(c):
            if src.shape[1] == 0 or src.shape[2] == 0:
                vals = np.full(row.shape, np.nan)
            else:
                vals = ndimage.map_coordinates(src[ch], [row, col], order=order, mode="constant", cval=np.nan)
            vals = np.where(np.isnan(vals), fill, vals)
            out[ch, rr : rr + len(rows)] = vals.reshape(len(rows), W)
    if dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(dtype, copy=False)


def grid_transform(origin: tuple[float, float], pixel_um: float):
    """Spatialdata transformation of an axis-aligned grid (pixel → coordinate system)."""
    from spatialdata.transformations import Scale, Sequence, Translation

    return Sequence(
        [Scale([pixel_um, pixel_um], axes=("y", "x")), Translation([origin[0], origin[1]], axes=("x", "y"))]
    )


def composed_transform(
    sdata: sd_mod.SpatialData,
    image_key: str,
    coordinate_system: str,
    *,
    origin: tuple[float, float],
    pixel_um: float,
) -> dict[str, Any]:
    """Transformations of a grid, composed from the image's own, for every coordinate system it is in.

    The grid is defined in ``coordinate_system`` (``origin``, ``pixel_um``). Its pixels are first
    mapped into the image's pixels (an affine), then through the image's own transformation, so the
    grid overlays the image exactly in every coordinate system the image belongs to.
    """
    from spatialdata.transformations import Affine, Sequence, get_transformation

    G = np.array([[pixel_um, 0.0, origin[0]], [0.0, pixel_um, origin[1]], [0.0, 0.0, 1.0]])
    to_img = np.linalg.inv(affine_to_cs(sdata[image_key], coordinate_system)) @ G
    transforms = get_transformation(sdata[image_key], get_all=True)
    return {
        cs: Sequence([Affine(to_img, input_axes=("x", "y"), output_axes=("x", "y")), t]) for cs, t in transforms.items()
    }


def log_shapes(name: str, **arrays: np.ndarray) -> None:
    """Debug-log array shapes."""
    logger.debug("%s: %s", name, {k: getattr(v, "shape", None) for k, v in arrays.items()})


def pyramid_scale_factors(
    shape_yx: tuple[int, int], *, max_factor: int = 8, min_size: int = 64, multiscale: bool = True
) -> list[int]:
    """Successive ×2 scale factors for ``Image2DModel.parse`` (spatialdata chains them level to level).

    Levels are added while the overall downsampling stays ``<= max_factor`` and the smallest side of the
    coarsest level keeps at least ``min_size`` pixels; e.g. ``[2, 2, 2]`` gives levels ×1, ×2, ×4, ×8.
    With ``multiscale``, at least one level (``[2]``) is returned for images of 2 px or more.
    """
    factors: list[int] = []
    total = 1
    smallest = min(int(shape_yx[0]), int(shape_yx[1]))
    while total * 2 <= max_factor and smallest // (total * 2) >= min_size:
        factors.append(2)
        total *= 2
    if multiscale and not factors and smallest >= 2:
        factors = [2]
    return factors


def table_region(sdata: sd_mod.SpatialData, table_key: str) -> str | None:
    """The single element a table annotates (``None`` when it annotates several or none)."""
    attrs = sdata.tables[table_key].uns.get("spatialdata_attrs", {})
    region = attrs.get("region")
    if isinstance(region, list | tuple | np.ndarray):
        region = region[0] if len(region) == 1 else None
    return region


def copy_spatialdata(sdata: sd_mod.SpatialData) -> sd_mod.SpatialData:
    """A copy of ``sdata`` to add elements to, without loading its images or points.

    ``spatialdata.deepcopy`` computes every image and points element (a whole-slide H&E is loaded into
    memory) and swaps the original's lazy arrays for in-memory ones. Here the containers, ``attrs``,
    tables and shapes are copied, and the image, label and points elements are new objects over the
    same lazy data, each with its own copy of the transformations (so changing a transformation or
    adding an element in the copy leaves ``sdata`` as it was).
    """
    import copy

    import spatialdata as sd_mod
    from spatialdata.transformations import get_transformation, set_transformation

    def shared(element: Any) -> Any:
        out = element.copy(deep=False) if hasattr(element, "dims") or hasattr(element, "children") else element.copy()
        set_transformation(out, copy.deepcopy(get_transformation(element, get_all=True)), set_all=True)
        return out

    return sd_mod.SpatialData(
        images={k: shared(v) for k, v in sdata.images.items()},
        labels={k: shared(v) for k, v in sdata.labels.items()},
        points={k: shared(v) for k, v in sdata.points.items()},
        shapes={k: sd_mod.deepcopy(v) for k, v in sdata.shapes.items()},
        tables={k: v.copy() for k, v in sdata.tables.items()},
        attrs=copy.deepcopy(dict(sdata.attrs or {})),
    )
