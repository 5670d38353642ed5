"""Micrometres: find the unit of a coordinate system and add a µm one (:func:`to_micrometres`).

stdiff works in µm. Sections read by ``spatialdata_io`` are often in image pixels:

- ``spatialdata_io.visium``: the system named after the dataset is in full-resolution pixels; the
  spots are on a hexagonal lattice with 100 µm between neighbours (``array_row`` / ``array_col`` in
  the table), and the circles' radius is half Space Ranger's ``spot_diameter_fullres`` (the pixels
  spanning a theoretical 65 µm spot; the physical spot is 55 µm);
- ``spatialdata_io.visium_hd``: the same pixel system; bins are squares of the size in the table's
  name (``square_008um``);
- ``spatialdata_io.xenium``: ``"global"`` is in morphology-image pixels (``pixel_size`` µm, 0.2125);
  the transcripts are stored in µm with a ``Scale(1 / pixel_size)`` to it.

:func:`to_micrometres` adds a coordinate system ``"<cs>_um"`` (every element of ``cs`` gets a
transformation to it, scaled to µm) and records it in ``sdata.attrs["stdiff_micrometres"]``;
:func:`check_micrometres` refuses a system that is known or looks to be in pixels.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from .._spatial import affine_to_cs, copy_spatialdata
from .._utils import logger

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod

ATTRS_KEY = "stdiff_micrometres"
VISIUM_PITCH_UM = 100.0  # centre-to-centre distance of neighbouring Visium spots
VISIUM_SPOT_UM = 55.0  # physical spot diameter
VISIUM_SCALEF_SPOT_UM = 65.0  # the spot that Space Ranger's spot_diameter_fullres refers to
ST_PITCH_UM = 200.0  # legacy ST: µm per array step
ST_SPOT_UM = 100.0
PIXEL_READERS = ("visium", "visium_hd", "xenium")
_HD_BIN = re.compile(r"square_(\d{3})um")


def micrometre_systems(sdata: sd_mod.SpatialData) -> dict[str, dict[str, Any]]:
    """The µm coordinate systems added by :func:`to_micrometres` that still exist, with their provenance."""
    recorded = (sdata.attrs or {}).get(ATTRS_KEY, {}) or {}
    return {k: v for k, v in recorded.items() if k in sdata.coordinate_systems}


def _reader(sdata: sd_mod.SpatialData) -> str | None:
    return (sdata.attrs or {}).get("spatialdata_io_reader")


def _elements_in(sdata: sd_mod.SpatialData, cs: str) -> list[tuple[str, str, Any]]:
    from spatialdata.transformations import get_transformation

    return [
        (kind, name, el)
        for kind, name, el in sdata.gen_spatial_elements()
        if cs in get_transformation(el, get_all=True)
    ]


def _spot_tables(sdata: sd_mod.SpatialData, cs: str):
    """``(table_key, table, region, centres (2, n) in cs, radius in cs, shapes)`` for tables annotating shapes in cs."""
    from spatialdata.transformations import get_transformation

    from .._spatial import table_region

    for key, table in sdata.tables.items():
        region = table_region(sdata, key)
        if region is None or region not in sdata.shapes:
            continue
        shapes = sdata.shapes[region]
        if cs not in get_transformation(shapes, get_all=True):
            continue
        A = affine_to_cs(shapes, cs)
        geom = shapes.geometry
        xy = np.stack([geom.centroid.x.to_numpy(), geom.centroid.y.to_numpy()])
        scale = float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
        if "radius" in shapes.columns:
            radius = shapes["radius"].to_numpy(float) * scale
        else:
            radius = np.sqrt(geom.area.to_numpy(float) / np.pi) * scale
        yield key, table, region, A[:2, :2] @ xy + A[:2, 2:3], radius, shapes


def _pitch(xy: np.ndarray) -> float:
    """Median distance to the nearest other spot."""
    from scipy.spatial import cKDTree

    if xy.shape[1] < 2:
        return float("nan")
    d, _ = cKDTree(xy.T).query(xy.T, k=2)
    return float(np.median(d[:, 1]))


def _visium_lattice_um_per_unit(table, shapes, xy: np.ndarray) -> float | None:
    """µm per unit from the hexagonal Visium lattice (array_row / array_col → 100 µm neighbours)."""
    obs = table.obs
    if not {"array_row", "array_col"} <= set(obs.columns) or len(obs) < 3:
        return None
    attrs = table.uns["spatialdata_attrs"]
    # centres in the table's order
    pos = shapes.index.get_indexer(obs[attrs["instance_key"]].to_numpy())
    if (pos < 0).any():
        return None
    pts = xy[:, pos].T
    design = np.c_[obs["array_col"].to_numpy(float), obs["array_row"].to_numpy(float), np.ones(len(obs))]
    coef, *_ = np.linalg.lstsq(design, pts, rcond=None)
    per_col, per_row = np.linalg.norm(coef[0]), np.linalg.norm(coef[1])
    if per_col <= 0 or abs(per_row / per_col - np.sqrt(3)) > 0.05 * np.sqrt(3):
        return None  # not the Visium hexagonal lattice (column step = half the pitch, row step = √3/2 pitch)
    return (VISIUM_PITCH_UM / 2) / per_col


def _st_lattice_affine(table, shapes, xy: np.ndarray) -> np.ndarray | None:
    """``(3, 3)`` affine units → µm from a square legacy-ST lattice (200 µm per array step).

    The array positions are ``array_x`` / ``array_y`` of ``obs``, or parsed from spot ids ``"{x}x{y}"``.

    A full affine: the axes of an image aligned by hand may have different scales, and some shear.
    """
    obs = table.obs
    attrs = table.uns["spatialdata_attrs"]
    ids = obs[attrs["instance_key"]].astype(str).to_numpy()
    cols = next((c for c in (("array_x", "array_y"), ("array_col", "array_row")) if set(c) <= set(obs.columns)), None)
    if cols is not None:
        ax, ay = obs[cols[0]].to_numpy(float), obs[cols[1]].to_numpy(float)
    else:  # the ST pipeline names spots "{x}x{y}" by their array position
        parts = [i.split("x") for i in ids]
        if not all(len(p) == 2 and all(q.replace(".", "", 1).isdigit() for q in p) for p in parts):
            return None
        ax, ay = (np.array([float(p[k]) for p in parts]) for k in (0, 1))
    if len(obs) < 3:
        return None
    pos = shapes.index.get_indexer(obs[attrs["instance_key"]].to_numpy())
    if (pos < 0).any():
        return None
    a = np.c_[np.round(ax), np.round(ay), np.ones(len(obs))]
    steps = np.diff(np.unique(a[:, 0])), np.diff(np.unique(a[:, 1]))
    if np.linalg.matrix_rank(a) < 3 or any(len(s) == 0 or np.median(s) != 1 for s in steps):
        return None  # not a square lattice with unit steps (Visium's array_col steps by 2)
    m, *_ = np.linalg.lstsq(a, xy[:, pos].T, rcond=None)
    array_to_units = np.eye(3)
    array_to_units[:2, :2], array_to_units[:2, 2] = m[:2].T, m[2]
    out = np.diag([ST_PITCH_UM, ST_PITCH_UM, 1.0]) @ np.linalg.inv(array_to_units)
    out[:2, 2] = 0.0  # units' origin stays at 0 µm
    return out


def infer_um_per_unit(sdata: sd_mod.SpatialData, coordinate_system: str) -> tuple[Any, str, dict[str, float]]:
    """µm per unit of ``coordinate_system``, how it was found, and physical spot radii (µm) per shapes element.

    Raises ``ValueError`` (naming ``um_per_unit=``) when the SpatialData does not tell.
    """
    from spatialdata.transformations import get_transformation

    cs = coordinate_system
    reader = _reader(sdata)
    radii: dict[str, float] = {}
    if reader == "xenium":
        for name, pts in sdata.points.items():
            if cs not in get_transformation(pts, get_all=True):
                continue
            A = affine_to_cs(pts, cs)
            s = float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
            if s > 0 and abs(s - 1.0) > 1e-9:  # transcripts are stored in µm, scaled by 1 / pixel_size
                return 1.0 / s, f"Xenium transcripts {name!r} (µm) → {cs!r} scale: pixel_size {1 / s:.6g} µm", radii
    for key, table, region, xy, radius, shapes in _spot_tables(sdata, cs):
        for lib in (table.uns.get("spatial", {}) or {}).values():
            sf = (lib or {}).get("scalefactors", {}) or {}
            if "microns_per_pixel" in sf:
                return float(sf["microns_per_pixel"]), f"table {key!r} uns scalefactors microns_per_pixel", radii
        hd = _HD_BIN.search(f"{key} {region}")
        if hd and reader in (None, "visium_hd"):
            bin_um = float(hd.group(1))
            if "radius" in shapes.columns:
                side = 2 * float(np.median(radius))  # circles of the reader: radius = half the bin side
            else:
                side = float(np.median(radius)) * np.sqrt(np.pi)  # squares: radius = sqrt(area / π)
            return bin_um / side, f"Visium HD bins of {bin_um:g} µm ({key!r}) are {side:.6g} units wide", radii
        u = _visium_lattice_um_per_unit(table, shapes, xy)
        if u is not None:
            radii[region] = VISIUM_SPOT_UM / 2
            return u, f"Visium spot lattice of table {key!r} (100 µm between neighbouring spots)", radii
        m = _st_lattice_affine(table, shapes, xy)
        if m is not None:
            radii[region] = ST_SPOT_UM / 2
            return m, f"legacy ST spot lattice of table {key!r} (200 µm per array step; an affine fit)", radii
        for lib in (table.uns.get("spatial", {}) or {}).values():
            sf = (lib or {}).get("scalefactors", {}) or {}
            if "spot_diameter_fullres" in sf:
                radii[region] = VISIUM_SPOT_UM / 2
                u = VISIUM_SCALEF_SPOT_UM / float(sf["spot_diameter_fullres"])
                return u, f"table {key!r} uns scalefactors spot_diameter_fullres (a 65 µm spot)", radii
        if reader == "visium" and "radius" in shapes.columns:
            radii[region] = VISIUM_SPOT_UM / 2
            u = VISIUM_SCALEF_SPOT_UM / (2 * float(np.median(radius)))
            return u, f"Visium spot circles {region!r} (radius = half spot_diameter_fullres, a 65 µm spot)", radii
    raise ValueError(
        f"Cannot establish how many µm one unit of coordinate system {cs!r} is: the SpatialData holds no Visium "
        "spot lattice, Visium HD bins, Xenium transcripts or scalefactors for it. Give it yourself, e.g. "
        f"sd.pp.to_micrometres(sdata, {cs!r}, um_per_unit=0.5) for an image of 0.5 µm per pixel (see the "
        "microscope's metadata), then use coordinate_system="
        f"{cs + '_um'!r}."
    )


def to_micrometres(
    sdata: sd_mod.SpatialData,
    coordinate_system: str | None = None,
    *,
    um_per_unit: float | tuple[float, float] | None = None,
    affine: np.ndarray | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> sd_mod.SpatialData | None:
    """Add a coordinate system in micrometres next to one in pixels (or other units).

    Every element with a transformation to ``coordinate_system`` gets one to the new system: the
    same, followed by a scaling to µm. Other coordinate systems are left alone. The size of a unit is
    found from what ``spatialdata_io`` readers store, or given with ``um_per_unit``:

    - Visium: the spot lattice (``array_row`` / ``array_col``: 100 µm between neighbouring spots), or
      ``spot_diameter_fullres`` (a 65 µm spot) from the circles or the table's ``uns``;
    - Visium HD: the bin size in the table's name and the bins' width;
    - Xenium: the transcripts' scale (they are stored in µm);
    - ``adata.uns["spatial"][library]["scalefactors"]["microns_per_pixel"]`` when present.

    Parameters
    ----------
    sdata
        The SpatialData (e.g. straight from ``spatialdata_io.visium``).
    coordinate_system
        The system to convert; default: the only one in pixels (of the reader), else the only one.
    um_per_unit
        µm per unit of ``coordinate_system`` (e.g. per full-resolution pixel), or ``(x, y)`` when the axes
        differ; default: found from the data (for a legacy ST lattice, a full affine).
    affine
        Alternatively a ``(2, 3)`` or ``(3, 3)`` affine from units of ``coordinate_system`` to µm (e.g. a
        hand alignment with different x and y scales and some shear).
    key_added
        Name of the new system (default ``f"{coordinate_system}_um"``).
    copy
        Return a modified copy instead of changing ``sdata`` in place.

    Returns
    -------
    ``None`` (in place), or the copy with ``copy=True``. The new system's provenance (source system,
    µm per unit, how it was found, physical spot radii) goes to ``sdata.attrs["stdiff_micrometres"]``.
    """
    import spatialdata as sd_mod
    from spatialdata.transformations import Affine, Sequence, get_transformation, set_transformation

    if not isinstance(sdata, sd_mod.SpatialData):
        raise TypeError(f"sdata must be a spatialdata.SpatialData, not {type(sdata).__name__}.")
    available = list(sdata.coordinate_systems)
    done = micrometre_systems(sdata)
    cs = _system_to_convert(sdata, coordinate_system, available, done)
    if um_per_unit is not None and affine is not None:
        raise ValueError("Give um_per_unit= or affine=, not both.")
    if um_per_unit is None and affine is None:
        um_per_unit, how, radii = infer_um_per_unit(sdata, cs)
    else:
        how = "given (affine=)" if affine is not None else "given (um_per_unit=)"
        radii = {}
        if _reader(sdata) == "visium":
            radii = {region: VISIUM_SPOT_UM / 2 for *_, region, _, _, _ in _spot_tables(sdata, cs)}
    name = key_added or f"{cs}_um"
    if name in available and name not in done:
        raise ValueError(f"A coordinate system {name!r} already exists; pass key_added= with another name.")
    target = copy_spatialdata(sdata) if copy else sdata  # images stay lazy
    matrix = _units_to_um(affine if affine is not None else um_per_unit)
    scale = Affine(matrix, input_axes=("x", "y"), output_axes=("x", "y"))
    for _, _, el in _elements_in(target, cs):
        t = get_transformation(el, to_coordinate_system=cs)
        set_transformation(el, Sequence([t, scale]), to_coordinate_system=name)
    um_per_unit = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    attrs = dict(target.attrs or {})
    store = dict(attrs.get(ATTRS_KEY, {}) or {})
    store[name] = {"source": cs, "um_per_unit": um_per_unit, "affine": matrix.tolist(), "how": how,
                   "spot_radius_um": radii}  # fmt: skip
    target.attrs = {**attrs, ATTRS_KEY: store}
    logger.info("Added coordinate system %r in µm: 1 unit of %r = %.6g µm (%s).", name, cs, um_per_unit, how)
    return target if copy else None


def _system_to_convert(sdata: sd_mod.SpatialData, coordinate_system: str | None, available: list, done) -> str:
    """The coordinate system to convert: the one given (checked), else the only one not yet in µm."""
    if coordinate_system is not None:
        if coordinate_system not in available:
            raise ValueError(f"Unknown coordinate_system={coordinate_system!r}; the SpatialData has {available}.")
        return coordinate_system
    candidates = [c for c in available if c not in done]
    if _reader(sdata) in ("visium", "visium_hd"):  # the full-resolution system the others derive from
        candidates = [c for c in candidates if not c.endswith(("_downscaled_hires", "_downscaled_lowres"))]
    if len(candidates) != 1:
        raise ValueError(
            f"The SpatialData has coordinate systems {available}; pass the one to convert to µm, e.g. "
            f"sd.pp.to_micrometres(sdata, {candidates[0] if candidates else available[0]!r})."
        )
    return candidates[0]


def _units_to_um(value) -> np.ndarray:
    """A ``(3, 3)`` affine units → µm from a number, ``(x, y)`` scales or a ``(2, 3)`` / ``(3, 3)`` matrix."""
    a = np.asarray(value, dtype=float)
    if a.ndim == 0:
        a = np.diag([float(a), float(a), 1.0])
    elif a.shape == (2,):
        a = np.diag([a[0], a[1], 1.0])
    elif a.shape == (2, 3):
        a = np.vstack([a, [0.0, 0.0, 1.0]])
    if a.shape != (3, 3) or not np.all(np.isfinite(a)) or np.linalg.det(a[:2, :2]) == 0:
        raise ValueError(
            f"um_per_unit must be a positive number or (x, y) scales, affine= a (2, 3) or (3, 3) matrix; got {value!r}."
        )
    if a.shape == (3, 3) and np.diag(a)[:2].min() <= 0 and a[0, 1] == 0 and a[1, 0] == 0:
        raise ValueError(f"um_per_unit must be positive, got {value!r}.")
    return a


def pixel_reason(sdata: sd_mod.SpatialData, cs: str, spots: tuple[np.ndarray, np.ndarray] | None = None) -> str | None:
    """Why ``cs`` is not in µm (a sentence), or ``None`` when nothing says so.

    ``spots`` = (centres (2, n), radii) in ``cs`` when the expression is a spot table. The geometry
    decides, with ±10% tolerance: spots whose pitch and size are those of a known platform (Visium,
    legacy ST) are in µm (a hand alignment a few percent off is fine); spots with a known platform's
    proportions at another size are that platform in other units (e.g. legacy ST in image pixels);
    others are refused only when no spot platform is that large (radius over 100 or pitch over 220).
    """
    if cs in micrometre_systems(sdata):
        return None
    reader = _reader(sdata)
    if reader in PIXEL_READERS:
        unit = "morphology-image pixels" if reader == "xenium" else "full-resolution image pixels"
        return f"it is a coordinate system of spatialdata_io.{reader}, in {unit}"
    if spots is not None:
        return _spot_units_reason(*spots)
    return None


def _spot_units_reason(xy: np.ndarray, radius: np.ndarray) -> str | None:
    """Why spots of centres ``xy`` and radii ``radius`` cannot be in µm, or ``None``."""
    from ..spots import TOLERANCE, detect_geometry

    g = detect_geometry(xy, radius)
    r, p = float(np.median(radius)), g.pitch_um
    if g.platform != "generic" or not np.isfinite(p) or r <= 0:
        return None
    platforms = [("legacy ST", ST_PITCH_UM, ST_SPOT_UM, "square"), ("Visium", 100.0, VISIUM_SCALEF_SPOT_UM, "hex"),
                 ("Visium", 100.0, VISIUM_SPOT_UM, "hex")]  # fmt: skip
    platforms = [q for q in platforms if g.lattice in (q[3], "irregular")]
    if not platforms:
        return None
    ratio = p / (2 * r)
    err = [abs(ratio - pitch / d) / (pitch / d) for _, pitch, d, _ in platforms]
    best = int(np.argmin(err))
    name, pitch, diameter, _ = platforms[best]
    if err[best] <= TOLERANCE and abs(p - pitch) > TOLERANCE * pitch:
        k = pitch / p
        return (
            f"its spots are {2 * r:.4g} units across and {p:.4g} apart: the proportions of {name} spots "
            f"({diameter:g} µm, {pitch:g} µm apart) at {1 / k:.3g}× their size, so a unit is probably about "
            f"{k:.3g} µm (image pixels?)"
        )
    if r > 100 or p > 200 * (1 + TOLERANCE):
        return f"its spots have a radius of {r:.4g} and lie {p:.4g} apart, too large for µm (Visium: 27.5 and 100)"
    return None


def check_micrometres(sdata: sd_mod.SpatialData, cs: str, spots: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Raise when coordinate system ``cs`` is known or looks to be in pixels, naming :func:`to_micrometres`."""
    reason = pixel_reason(sdata, cs, spots)
    if reason is None:
        return
    ours = micrometre_systems(sdata)
    hint = (
        f"Use coordinate_system={next(iter(ours))!r} (µm, already added)"
        if len(ours) == 1
        else f"Add a µm coordinate system with sd.pp.to_micrometres(sdata, {cs!r}) (or um_per_unit= if it cannot "
        f"find the pixel size) and pass coordinate_system={cs + '_um'!r}"
    )
    last = ", or build the section with stdiff.io.from_spots"
    if "stdiff_section" in (sdata.attrs or {}):  # built by from_spots: its scale arguments are what to check
        last = "; it was built by stdiff.io.from_spots: check its positions' units= and um_per_px= / affine="
    raise ValueError(
        f"Coordinate system {cs!r} is not in micrometres: {reason}. stdiff works in µm. {hint} (um_per_unit= takes "
        f"one scale or (x, y) scales, affine= a full affine){last}."
    )


def spot_radius_um(sdata: sd_mod.SpatialData, cs: str, region: str) -> float | None:
    """The physical spot radius (µm) recorded by :func:`to_micrometres` for ``region``, if any."""
    info = micrometre_systems(sdata).get(cs)
    if not info:
        return None
    r = (info.get("spot_radius_um") or {}).get(region)
    return None if r is None else float(r)
