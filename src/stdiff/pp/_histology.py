"""Cheap, transferable histology features on the HR grid (stain, nuclei, texture), with an embedding hook.

Every feature is a physical quantity computed by block reductions over the histology pixels of each
HR pixel: HR pixel ``(i, j)`` covers image pixels ``[i·s, (i+1)·s) × [j·s, (j+1)·s)`` with
``s = section.he_scale``, so the features are aligned with the expression grids by construction.
Features are *not* standardised per section (that would remove real differences between sections);
use :func:`fit_feature_scaler` on training sections and :func:`standardize_features` everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._utils import array_fingerprint, logger
from ._section import Section
from ._stain import STAIN_REFERENCE_KEY, _channel_scale, _otsu, _rgb_to_hed, stain_reference

__all__ = [
    "HistologyFeatures",
    "fit_feature_scaler",
    "histology_features",
    "stain_reference",
    "standardize_features",
]

_CACHE_KEY = "_histology_features"

Embeddings = np.ndarray | Callable[[np.ndarray], np.ndarray] | None


@dataclass
class HistologyFeatures:
    """Histology features of one section on its HR grid.

    Attributes
    ----------
    values
        ``(F, H, W)`` float32 features; ``(H, W)`` is ``section.mask_hr.shape``.
    names
        ``F`` feature names, ``"<feature>@cell"`` (within the HR pixel) or ``"<feature>@<scale>um"``
        (Gaussian-smoothed to a tissue scale), and ``"emb<k>"`` for user-supplied embeddings.
    mask
        ``(H, W)`` input tissue mask of the section (``mask_hr``), where scalers are fitted.
    hr_um
        HR pixel size (µm).
    """

    values: np.ndarray
    names: list[str]
    mask: np.ndarray
    hr_um: float

    def __len__(self) -> int:
        return len(self.names)


def _block_mean(img: np.ndarray, s: int) -> np.ndarray:
    """Mean over ``s × s`` blocks of the last two axes (exact alignment, no padding)."""
    *lead, H, W = img.shape
    return img.reshape(*lead, H // s, s, W // s, s).mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def _block_sum(img: np.ndarray, s: int) -> np.ndarray:
    *lead, H, W = img.shape
    return img.reshape(*lead, H // s, s, W // s, s).sum(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def _block_sd(img: np.ndarray, s: int) -> np.ndarray:
    m = _block_mean(img, s)
    return np.sqrt(np.maximum(_block_mean(img * img, s) - m * m, 0.0)).astype(np.float32)


def _gradient_energy(gray: np.ndarray) -> np.ndarray:
    """Per-pixel squared forward differences (0 at the last row/column)."""
    g = np.zeros_like(gray)
    g[..., :-1, :] += np.diff(gray, axis=-2) ** 2
    g[..., :, :-1] += np.diff(gray, axis=-1) ** 2
    return g


def _nuclei(
    h_od: np.ndarray, tissue: np.ndarray, s: int, he_um: float, hr_um: float, min_um2: float, ref_um2: float,
    thr: float | None = None,
):  # fmt: skip
    """Nuclei from a haematoxylin OD image: density (per 100 µm²), size (µm²), eccentricity, area fraction.

    Nuclei are connected components of ``h_od > otsu(h_od on tissue)`` of at least ``min_um2``. A
    component of area ``a`` counts as ``max(1, round(a / ref_um2))`` touching nuclei (a fixed physical
    reference, so that counts do not depend on the section's own size distribution). Its nuclei are
    spread evenly over its pixels, so a nucleus lying inside one HR pixel counts there only and a
    clump spanning several HR pixels is shared among them.
    """
    from scipy import ndimage

    thr = _otsu(h_od[tissue]) if thr is None else float(thr)
    nuc = (h_od > thr) & tissue
    labels, n = ndimage.label(nuc)
    px_area = he_um**2
    zeros = np.zeros(labels.shape[-2:], np.float32)
    if n == 0:
        z = _block_mean(zeros, s)
        return z, z, z, z, thr
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n + 1).astype(np.float64)
    yy, xx = np.indices(labels.shape, dtype=np.float64)
    sy, sx = np.bincount(flat, yy.ravel(), n + 1), np.bincount(flat, xx.ravel(), n + 1)
    syy = np.bincount(flat, (yy * yy).ravel(), n + 1)
    sxx = np.bincount(flat, (xx * xx).ravel(), n + 1)
    sxy = np.bincount(flat, (xx * yy).ravel(), n + 1)
    a = np.maximum(area, 1.0)
    my, mx = sy / a, sx / a
    # Second central moments (+1/12 for the pixel's own extent) → eigenvalues → eccentricity.
    cyy, cxx, cxy = syy / a - my**2 + 1 / 12, sxx / a - mx**2 + 1 / 12, sxy / a - mx * my
    tr, det = cyy + cxx, cyy * cxx - cxy**2
    disc = np.sqrt(np.maximum(tr**2 / 4 - det, 0.0))
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 0.0)
    ecc = np.sqrt(np.clip(1.0 - l2 / np.maximum(l1, 1e-12), 0.0, 1.0))
    area_um2 = area * px_area
    keep = area_um2 >= max(min_um2, px_area)
    keep[0] = False
    count = np.where(keep, np.maximum(1.0, np.rint(area_um2 / ref_um2)), 0.0)
    per_px = (count / a).astype(np.float32)  # nuclei carried by each pixel of the component
    size = (area_um2 / np.maximum(count, 1.0)).astype(np.float32)
    w = per_px[labels]
    n_hr = _block_sum(w, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_size = np.where(n_hr > 0, _block_sum(w * size[labels], s) / n_hr, 0.0)
        mean_ecc = np.where(n_hr > 0, _block_sum(w * ecc.astype(np.float32)[labels], s) / n_hr, 0.0)
    density = n_hr / (hr_um**2 / 100.0)
    frac = _block_mean((keep[labels]).astype(np.float32), s)
    return density.astype(np.float32), mean_size.astype(np.float32), mean_ecc.astype(np.float32), frac, thr


def _rgb_features(
    he: np.ndarray, s: int, he_um: float, hr_um: float, normalize_stains: bool, nucleus_um2: tuple,
    reference: dict[str, Any] | None = None,
):  # fmt: skip
    rgb, tissue, hed = _rgb_to_hed(he)
    thr = None
    if reference and "od99" in reference:
        thr = reference["otsu"] if normalize_stains else None
        if normalize_stains:
            hed[:2] /= np.asarray(reference["od99"], np.float32)[:, None, None]
    elif normalize_stains and tissue.any():
        ref = np.percentile(hed[:2, tissue], 99, axis=1)
        hed[:2] /= np.maximum(ref, 1e-3)[:, None, None]
    gray = rgb.mean(0) / 255.0
    density, size, ecc, frac, thr = _nuclei(hed[0], tissue, s, he_um, hr_um, *nucleus_um2, thr=thr)
    feats = {
        "h_od_mean": _block_mean(hed[0], s),
        "h_od_sd": _block_sd(hed[0], s),
        "e_od_mean": _block_mean(hed[1], s),
        "e_od_sd": _block_sd(hed[1], s),
        "res_od_mean": _block_mean(hed[2], s),
        "nuclei_per_100um2": density,
        "nuclear_area_um2": size,
        "nuclear_eccentricity": ecc,
        "nuclear_fraction": frac,
        "gray_sd": _block_sd(gray, s),
        "gradient_energy": _block_mean(_gradient_energy(gray), s),
        "brightness": _block_mean(gray, s),
        "white_fraction": _block_mean((~tissue).astype(np.float32), s),
    }
    logger.debug("histology features: haematoxylin OD threshold %.3f", thr)
    return feats, {"nuclear_area_um2", "nuclear_eccentricity"}


def _channel_features(img: np.ndarray, s: int, reference: dict[str, Any] | None = None):
    x = _channel_scale(img)
    feats = {}
    for c in range(x.shape[0]):
        feats[f"ch{c}_mean"] = _block_mean(x[c], s)
        feats[f"ch{c}_sd"] = _block_sd(x[c], s)
        feats[f"ch{c}_gradient_energy"] = _block_mean(_gradient_energy(x[c]), s)
    thr = reference["otsu"] if reference and "otsu" in reference else _otsu(x[0].ravel())
    feats["ch0_bright_fraction"] = _block_mean((x[0] > thr).astype(np.float32), s)
    return feats, set()


def _smooth(feats: dict[str, np.ndarray], weighted: set[str], sigma_px: float, weight: np.ndarray | None):
    """Gaussian smoothing on the HR grid; per-nucleus means are weighted by the nuclear density."""
    from scipy import ndimage

    out = {}
    wsm = None if weight is None else ndimage.gaussian_filter(weight, sigma_px, mode="nearest")
    for k, v in feats.items():
        if k in weighted and weight is not None:
            num = ndimage.gaussian_filter(v * weight, sigma_px, mode="nearest")
            out[k] = np.where(wsm > 1e-8, num / np.maximum(wsm, 1e-8), 0.0).astype(np.float32)
        else:
            out[k] = ndimage.gaussian_filter(v, sigma_px, mode="nearest").astype(np.float32)
    return out


def _embed(section: Section, fn: Callable[[np.ndarray], np.ndarray], patch_um: float | None) -> np.ndarray:
    """Apply ``fn`` to the histology patch centred on every tissue HR pixel → ``(E, H, W)``."""
    s, he = section.he_scale, section.he
    P = s if patch_um is None else max(1, int(round(patch_um / section.he_um)))
    fill = 255 if he.dtype == np.uint8 else 0
    padded = np.pad(he, ((0, 0), (P, P), (P, P)), constant_values=fill)
    H, W = section.mask_hr.shape
    out = None
    for i, j in zip(*np.nonzero(section.mask_hr), strict=True):
        y0, x0 = P + i * s + (s - P) // 2, P + j * s + (s - P) // 2
        v = np.asarray(fn(padded[:, y0 : y0 + P, x0 : x0 + P]), dtype=np.float32).reshape(-1)
        if out is None:
            out = np.zeros((v.size, H, W), np.float32)
        out[:, i, j] = v
    return np.zeros((0, H, W), np.float32) if out is None else out


def histology_features(
    section: Section,
    *,
    scales_um: Sequence[float | None] = (None, 100.0),
    embeddings: Embeddings = None,
    embedding_patch_um: float | None = None,
    normalize_stains: bool = True,
    min_nucleus_um2: float = 4.0,
    nucleus_um2: float = 50.0,
    cache: bool = True,
) -> HistologyFeatures:
    """Physically meaningful histology features of a section, on its HR grid.

    For an RGB (H&E) image, at each scale: haematoxylin, eosin and residual optical density
    (Ruifrok–Johnston colour deconvolution; mean and sd within the HR pixel), nuclei per 100 µm²,
    mean nuclear area (µm²) and eccentricity, nuclear area fraction, grayscale sd and gradient
    energy (texture), brightness and white-space fraction. Nuclei are connected components of the
    haematoxylin OD above the section's Otsu threshold (on tissue); touching nuclei are split by
    area. For other images (e.g. DAPI fluorescence) the features are per-channel intensity mean, sd
    and gradient energy plus the bright fraction of channel 0; no stain features.

    Parameters
    ----------
    section
        A rasterised section; ``section.he`` is ``(C, H·s, W·s)``.
    scales_um
        ``None`` is the cell scale (the HR pixel itself); a number is a tissue scale: the cell-scale
        maps Gaussian-smoothed on the HR grid with σ = scale / 2 µm (per-nucleus means weighted by
        nuclear density).
    embeddings
        Optional features from any frozen encoder, appended as ``emb<k>`` (cell scale only): an
        ``(E, H, W)`` array on the HR grid, or a callable mapping one histology patch
        ``(C, P, P)`` (uint8 for H&E) to an ``(E,)`` vector, applied to every tissue HR pixel
        (other pixels get 0). Embeddings are not cached; pass an array to reuse them.
    embedding_patch_um
        Side of the patch given to a callable, centred on the HR pixel (default: the HR pixel).
        The image is padded with white beyond its border.
    normalize_stains
        Divide the H and E optical densities by the section's 99th percentile on tissue, so that
        they are relative to the section's staining. On by default: in leave-one-section-out ridge
        regression of spot expression on the four her2st *training* sections it transferred better
        (see ``docs/model.md``, "Histology features"). The percentiles and the nuclear Otsu
        threshold are the section's own, or a slide-wide :func:`stain_reference` when
        ``section.meta["stain_reference"]`` holds one (windows of one slide then share them).
    min_nucleus_um2
        Components smaller than this (µm²) are not nuclei.
    nucleus_um2
        Reference area of one nucleus (µm²): a component of area ``a`` counts as
        ``max(1, round(a / nucleus_um2))`` touching nuclei.
    cache
        Keep the result in ``section.meta`` keyed on the image's fingerprint and the options, so
        a second call returns the same object without recomputing.

    Returns
    -------
    :class:`HistologyFeatures` with ``values`` of shape ``(F, H, W)`` (raw, not standardised).
    """
    he = section.he
    s = int(section.he_scale)
    H, W = section.mask_hr.shape
    if he.shape[-2:] != (H * s, W * s):
        raise ValueError(f"Histology shape {he.shape[-2:]} is not the HR grid {(H, W)} × he_scale {s}.")
    scales = tuple(None if x is None else float(x) for x in scales_um)
    nuc = (float(min_nucleus_um2), float(nucleus_um2))
    reference = section.meta.get(STAIN_REFERENCE_KEY) or None
    ref_key = repr(sorted(reference.items())) if reference else ""
    key = (array_fingerprint(he), scales, bool(normalize_stains), nuc, ref_key)
    store = section.meta.setdefault(_CACHE_KEY, {}) if cache else {}
    if key not in store:
        store[key] = _features(section, scales, bool(normalize_stains), nuc, reference)
    base = store[key]
    if embeddings is None:
        return base
    emb = _embed(section, embeddings, embedding_patch_um) if callable(embeddings) else np.asarray(embeddings)
    if emb.ndim != 3 or emb.shape[1:] != (H, W):
        raise ValueError(f"embeddings must be (E, {H}, {W}) on the HR grid, got {emb.shape}.")
    return HistologyFeatures(
        values=np.concatenate([base.values, emb.astype(np.float32)]),
        names=base.names + [f"emb{k}" for k in range(emb.shape[0])],
        mask=base.mask,
        hr_um=base.hr_um,
    )


def _features(
    section: Section,
    scales: tuple[float | None, ...],
    normalize_stains: bool,
    nuc: tuple[float, float],
    reference: dict[str, Any] | None,
) -> HistologyFeatures:
    """The stain / channel features of :func:`histology_features` at every scale (no embeddings)."""
    he, s = section.he, int(section.he_scale)
    if he.shape[0] == 3:
        feats, weighted = _rgb_features(he, s, section.he_um, section.hr_um, normalize_stains, nuc, reference)
    else:
        feats, weighted = _channel_features(he, s, reference)
    weight = feats.get("nuclei_per_100um2")
    values, names = [], []
    for sc in scales:
        if sc is None:
            maps, tag = feats, "cell"
        else:
            maps, tag = _smooth(feats, weighted, sc / 2.0 / section.hr_um, weight), f"{sc:g}um"
        values.extend(maps.values())
        names.extend(f"{k}@{tag}" for k in maps)
    arr = np.stack(values).astype(np.float32) if values else np.zeros((0, *section.mask_hr.shape), np.float32)
    return HistologyFeatures(values=arr, names=names, mask=section.mask_hr.copy(), hr_um=section.hr_um)


def _as_array(f: HistologyFeatures | np.ndarray) -> np.ndarray:
    return f.values if isinstance(f, HistologyFeatures) else np.asarray(f, dtype=np.float32)


def fit_feature_scaler(
    features: Sequence[HistologyFeatures | np.ndarray], *, masks: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and sd over the tissue pixels of (training) sections.

    Parameters
    ----------
    features
        :class:`HistologyFeatures` (their ``mask`` selects the pixels) or ``(F, H, W)`` arrays.
    masks
        Optional ``(H, W)`` masks, one per entry (default: each entry's ``mask``, else all pixels).

    Returns
    -------
    ``(mean, sd)``, each ``(F,)`` float32; ``sd`` is at least 1e-6.
    """
    cols = []
    for k, f in enumerate(features):
        v = _as_array(f)
        m = masks[k] if masks is not None else getattr(f, "mask", None)
        m = np.ones(v.shape[1:], bool) if m is None else np.asarray(m, bool)
        cols.append(v[:, m])
    x = np.concatenate(cols, axis=1).astype(np.float64)
    if x.shape[1] == 0:
        raise ValueError("No pixel selected to fit the feature scaler.")
    return x.mean(1).astype(np.float32), np.maximum(x.std(1), 1e-6).astype(np.float32)


def standardize_features(
    features: HistologyFeatures | np.ndarray, mean: np.ndarray, sd: np.ndarray, *, clip: float | None = 5.0
) -> np.ndarray:
    """``(values − mean) / sd`` per feature, ``(F, H, W)`` float32, clipped to ``±clip`` sd.

    Clipping keeps a section whose staining lies outside the training range from producing
    extreme inputs (``clip=None`` disables it).
    """
    v = _as_array(features)
    z = (v - mean[:, None, None]) / sd[:, None, None]
    return (z if clip is None else np.clip(z, -clip, clip)).astype(np.float32)
