"""Sections in the model's space (normalised maps, masks, histology) and augmentation of tile batches.

The conditioning of both stages is built here, from what exists at inference only:

- ``base``: the LR map spread over the tissue HR pixels of each block (:func:`stdiff.pp.lr_per_tissue_pixel`),
  normalised — the honest interpolation base that the stage-A network corrects;
- ``bicubic``: bicubic upsampling of the normalised LR-per-tissue-pixel map, on tissue; for spots,
  the normalised convolution of the spots' densities (:meth:`stdiff.spots.Footprints.render`), which
  has no blocks;
- ``mask``: the input mask (:attr:`stdiff.pp.Section.mask_hr`);
- for spots, where they are: the part of each HR pixel inside a spot and the distance to the
  nearest spot centre in pitches (capped at 1.5);
- optional histology feature channels (standardised with statistics stored in the model).

The truth (``z_hr``) and where it is measured (``mask_truth``) are only attached for training and
scoring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._utils import array_fingerprint
from ..pp import Normalizer, Section, Tiles, lr_density, lr_per_tissue_pixel, tile_positions


def upsample_lr(z_lr: np.ndarray | torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic upsampling of normalised LR maps ``(..., G, h, w)`` by ``factor``, clamped at 0."""
    x = torch.as_tensor(z_lr, dtype=torch.float32)
    squeeze = x.ndim == 3
    if squeeze:
        x = x[None]
    up = F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False).clamp(min=0)
    return up[0] if squeeze else up


class Prepared:
    """A section in the model's space; :meth:`window` cuts aligned tiles of every array.

    Parameters
    ----------
    section
        The rasterised section.
    normalizer
        The model's normaliser (subset to the section's genes when needed).
    with_truth
        Attach the normalised truth and the truth mask.
    features
        Optional ``(F, H, W)`` standardised histology features on the HR grid.
    base_counts
        Optional ``(G, H, W)`` counts per HR pixel to use as the base instead of the LR map per
        tissue pixel (it must sum to the LR map over each block).
    """

    def __init__(
        self,
        section: Section,
        normalizer: Normalizer,
        *,
        with_truth: bool,
        features: np.ndarray | None = None,
        base_counts: np.ndarray | None = None,
    ) -> None:
        norm = normalizer.subset(section.genes) if normalizer.genes != section.genes else normalizer
        f = section.factor
        self.section = section
        self.f = f
        self.s = f * section.he_scale
        self.mask_hr = section.mask_hr.astype(np.float32)
        counts = lr_per_tissue_pixel(section) if base_counts is None else base_counts
        self.base = norm.transform(counts) * self.mask_hr[None]
        maps = [self.base, *self._smooth_and_where(section, norm)]
        if features is not None:
            maps.append(np.asarray(features, np.float32) * self.mask_hr[None])
        self.cond = np.concatenate(maps, 0).astype(np.float32)
        he = section.he
        self.he = he if he.dtype == np.uint8 else np.clip(he, 0, 255).astype(np.uint8)
        self.z_hr = norm.transform(section.hr) if (with_truth and section.hr is not None) else None
        self.mask_truth = section.truth_mask.astype(np.float32)
        self.mu: np.ndarray | None = None  # stage-A mean, attached for stage B

    def _smooth_and_where(self, section: Section, norm: Normalizer) -> list[np.ndarray]:
        """The smooth interpolation of the measurements, the mask, and for spots where they are."""
        m = self.mask_hr[None]
        if section.spots is None:
            self.bicubic = upsample_lr(norm.transform(lr_density(section)), self.f).numpy() * m
            return [self.bicubic, m]
        fp = section.footprints()
        self.bicubic = norm.transform(fp.render()) * m
        dist, _ = fp.nearest()
        where = np.minimum(dist / fp.spots.geometry.pitch_um, 1.5).astype(np.float32)
        return [self.bicubic, m, fp.coverage()[None] * m, where[None] * m]

    def batch(self, positions, t: int, device, *, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tensors of the ``t × t`` tiles at LR ``positions`` (``keys`` of :meth:`window`; ``he`` in [0, 1])."""
        return to_tensors([self.window(int(r), int(c), t) for r, c in positions], device, keys)

    def window(self, r: int, c: int, t: int) -> dict[str, np.ndarray]:
        """Tile of ``t × t`` LR pixels at LR position ``(r, c)``."""
        f, s = self.f, self.s
        T = t * f
        hr = (slice(None), slice(r * f, r * f + T), slice(c * f, c * f + T))
        out = {
            "cond": self.cond[hr],
            "base": self.base[hr],
            "mask": self.mask_hr[None][hr],
            "he": self.he[:, r * s : r * s + t * s, c * s : c * s + t * s],
        }
        if self.z_hr is not None:
            out["z_hr"] = self.z_hr[hr]
            out["mask_truth"] = self.mask_truth[None][hr]
        if self.mu is not None:
            out["mu"] = self.mu[hr]
        return out


def base_cache_key(digest: str, section: Section) -> tuple:
    """``section.meta`` key of the base of ``section`` by the aggregation base with this ``digest``.

    Keyed on the genes, the image and the spots too: a section whose histology was replaced (e.g.
    rotated) shares ``meta``.
    """
    spots = "" if section.spots is None else section.spots.fingerprint()
    return ("stdiff_aggregation_base", digest, tuple(section.genes), array_fingerprint(section.he), spots)


def prepare_section(
    section: Section,
    normalizer: Normalizer,
    *,
    with_truth: bool,
    feature_stats: dict[str, list[float]] | None,
    base_model,
    base_key: str,
) -> Prepared:
    """``section`` in a trained model's space (what :meth:`stdiff.models.DiffST.prepare` returns).

    Histology features are standardised with the model's statistics (``feature_stats``; none
    without). The histology-distributed base comes from the model's own ``base_model`` (fitted once
    on the training sections' LR maps), so a section gives the same base whole or chunk by chunk,
    and nothing is fitted at inference. It is cached in ``section.meta`` (:func:`base_cache_key`
    with ``base_key``, the base's digest).
    """
    from ..pp import histology_features, standardize_features

    features = None
    if feature_stats is not None:
        mean = np.asarray(feature_stats["mean"], np.float32)
        sd = np.asarray(feature_stats["sd"], np.float32)
        features = standardize_features(histology_features(section), mean, sd)
    counts = None
    if base_model is not None:
        key = base_cache_key(base_key, section)
        counts = section.meta.get(key)
        if counts is None or counts.shape[-2:] != section.mask_hr.shape:
            counts = base_model.predict(section)["mean"]
            section.meta[key] = counts
    return Prepared(section, normalizer, with_truth=with_truth, features=features, base_counts=counts)


def augment_geometry(batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The same random rotation by 90°·k and flip for every array of one tile."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = {}
    for key, arr in batch.items():
        a = np.rot90(arr, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out[key] = np.ascontiguousarray(a)
    return out


def augment_stain(he: torch.Tensor, generator: torch.Generator, *, strength: float = 0.08) -> torch.Tensor:
    """Stain augmentation of RGB tiles ``(B, 3, P, P)`` in [0, 1]: optical-density jitter, brightness, contrast.

    Each tile's optical density ``OD = −log(I)`` is scaled per RGB channel by ``1 ± strength`` and
    shifted by ``± strength / 4`` (an approximation of haematoxylin/eosin/DAB jitter in the colour
    space the stains mix in), then brightness (``± strength``) and contrast (``1 ± strength``) are
    jittered. Non-RGB images are returned unchanged.
    """
    if he.shape[1] != 3:
        return he
    b = he.shape[0]

    def u(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1).to(he.device)

    od = -torch.log(he.clamp(min=1.0 / 255.0))
    od = od * (1 + strength * u(b, 3, 1, 1)) + strength / 4 * u(b, 3, 1, 1)
    out = torch.exp(-od.clamp(min=0))
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * (1 + strength * u(b, 1, 1, 1)) + mean + strength * u(b, 1, 1, 1)
    return out.clamp(0, 1)


def to_tensors(windows: list[dict[str, np.ndarray]], device, keys) -> dict[str, torch.Tensor]:
    """The arrays ``keys`` of the windows stacked into a batch on ``device`` (``he`` as floats in [0, 1])."""
    out = {k: torch.from_numpy(np.stack([w[k] for w in windows])).to(device) for k in keys}
    if "he" in out:
        out["he"] = out["he"].float() / 255.0
    return out


class WindowPool:
    """Training or validation tiles of several prepared sections."""

    def __init__(self, prepared: Sequence[Prepared], tile_lr: int, min_tissue: float, stride: int = 1) -> None:
        self.prepared = list(prepared)
        self.t = int(tile_lr)
        pools = []
        for i, p in enumerate(self.prepared):
            pos = tile_positions(p.section, self.t, stride, min_tissue=min_tissue)
            pools.extend((i, int(r), int(c)) for r, c in pos)
        self.pool = np.asarray(pools, dtype=int).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.pool)

    def stack(self, picks: np.ndarray, rng: np.random.Generator | None, device) -> dict[str, torch.Tensor]:
        """Tensors of the tiles ``picks`` (rows of the pool), augmented when ``rng`` is given."""
        items = []
        for i, r, c in picks:
            w = self.prepared[i].window(r, c, self.t)
            items.append(augment_geometry(w, rng) if rng is not None else w)
        return to_tensors(items, device, items[0])

    def random_batch(self, rng: np.random.Generator, gen: torch.Generator, size: int, cfg, device):
        """A random augmented batch."""
        picks = self.pool[rng.integers(len(self.pool), size=size)]
        b = self.stack(picks, rng if cfg.training.augment else None, device)
        if cfg.training.stain_augment:
            b["he"] = augment_stain(b["he"], gen)
        return b

    def fixed_batches(self, max_tiles: int, size: int, device) -> list[dict[str, torch.Tensor]]:
        """Up to ``max_tiles`` evenly spread tiles, without augmentation (validation)."""
        n = len(self.pool)
        idx = np.unique(np.linspace(0, n - 1, min(n, max_tiles)).round().astype(int))
        picks = self.pool[idx]
        return [self.stack(picks[i : i + size], None, device) for i in range(0, len(picks), size)]


def as_sections(data: Tiles | Section | Sequence[Section]) -> list[Section]:
    """The sections of training data given as :class:`~stdiff.pp.Tiles`, one section or a list."""
    if isinstance(data, Tiles):
        return list(data.sections)
    if isinstance(data, Section):
        return [data]
    sections = list(data)
    if not sections or not all(isinstance(s, Section) for s in sections):
        raise TypeError("data must be Tiles, a Section or a list of Sections (see stdiff.pp.rasterize).")
    return sections
