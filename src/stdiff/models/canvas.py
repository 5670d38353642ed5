"""Whole-section canvases: overlapping tiles, a smooth blending window, and tile-batched network calls.

Both stages predict a section through a :class:`Canvas`. Stage A blends the mean predicted for every
overlapping tile. Stage B samples *on the canvas*: at every noise level each overlapping tile of the
current whole-section sample is denoised, the denoised tiles are blended into one canvas, and the
sampler takes one step on it — so a sample is one coherent map, never an average of independent
tile samples (which would shrink its variance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch

from ..pp import Section, tile_positions


def hann(size: int) -> np.ndarray:
    """A ``sin²`` window (floored at 1e-3) whose half-overlapping copies sum to a near constant."""
    w = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    return np.maximum(w, 1e-3)


def pad_section(section: Section, ph: int, pw: int) -> Section:
    """Pad a section by ``ph`` LR rows and ``pw`` LR columns (bottom/right) of background."""
    f, s = section.factor, section.factor * section.he_scale
    fill = 255 if section.he.dtype == np.uint8 else 0
    return replace(
        section,
        lr=np.pad(section.lr, ((0, 0), (0, ph), (0, pw))),
        hr=None if section.hr is None else np.pad(section.hr, ((0, 0), (0, ph * f), (0, pw * f))),
        he=np.pad(section.he, ((0, 0), (0, ph * s), (0, pw * s)), constant_values=fill),
        mask_lr=np.pad(section.mask_lr, ((0, ph), (0, pw))),
        mask_hr=np.pad(section.mask_hr, ((0, ph * f), (0, pw * f))),
        mask_truth=None if section.mask_truth is None else np.pad(section.mask_truth, ((0, ph * f), (0, pw * f))),
    )


def padded_for_tiles(section: Section, tile_lr: int) -> Section:
    """The section padded so that it is at least one tile in each direction."""
    h, w = section.shape_lr
    ph, pw = max(0, tile_lr - h), max(0, tile_lr - w)
    return pad_section(section, ph, pw) if (ph or pw) else section


class Canvas:
    """Overlapping ``tile_lr`` tiles (stride ``tile_lr // 2``) covering a (padded) section.

    Parameters
    ----------
    shape_lr
        LR grid ``(h, w)`` of the section, at least one tile in each direction.
    factor
        HR pixels per LR pixel.
    tile_lr
        Tile side in LR pixels.
    positions
        Top-left LR positions of the tiles.
    """

    def __init__(self, shape_lr: tuple[int, int], factor: int, tile_lr: int, positions: np.ndarray) -> None:
        self.f, self.t = int(factor), int(tile_lr)
        self.T = self.t * self.f
        self.H, self.W = shape_lr[0] * self.f, shape_lr[1] * self.f
        self.positions = np.asarray(positions, dtype=int).reshape(-1, 2)
        self.window = np.outer(hann(self.T), hann(self.T)).astype(np.float32)
        weight = np.zeros((self.H, self.W), np.float32)
        for r, c in self.positions:
            weight[r * self.f : r * self.f + self.T, c * self.f : c * self.f + self.T] += self.window
        self.weight = np.maximum(weight, 1e-8)

    @classmethod
    def for_section(cls, section: Section, tile_lr: int) -> Canvas:
        """Tiles covering every LR pixel of ``section`` (which must be at least one tile large)."""
        pos = tile_positions(section, tile_lr, max(1, tile_lr // 2), min_tissue=0.0, cover=True)
        if len(pos) == 0:
            raise ValueError(f"Section {section.name!r} has no tissue on its LR grid (nothing to super-resolve).")
        return cls(section.shape_lr, section.factor, tile_lr, pos)

    def __len__(self) -> int:
        return len(self.positions)

    def slices(self, k: int) -> tuple[slice, slice]:
        """HR row and column slices of tile ``k``."""
        r, c = self.positions[k]
        return slice(r * self.f, r * self.f + self.T), slice(c * self.f, c * self.f + self.T)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Tile indices in batches."""
        for b0 in range(0, len(self), batch_size):
            yield np.arange(b0, min(b0 + batch_size, len(self)))

    def blend(self, fn: Callable[[np.ndarray], torch.Tensor], lead: tuple[int, ...], channels: int, batch_size: int):
        """Blend ``fn(tile indices) -> (len, *lead, channels, T, T)`` into a ``(*lead, channels, H, W)`` tensor."""
        acc: torch.Tensor | None = None
        win = None
        for idx in self.batches(batch_size):
            out = fn(idx)
            if acc is None:
                acc = out.new_zeros((*lead, channels, self.H, self.W))
                win = torch.from_numpy(self.window).to(out.device)
            for j, k in enumerate(idx):
                rs, cs = self.slices(int(k))
                acc[..., rs, cs] += out[j] * win
        assert acc is not None
        return acc / torch.from_numpy(self.weight).to(acc.device)

    def extract(self, canvas: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        """Tiles ``idx`` of a ``(*lead, C, H, W)`` canvas as ``(len, *lead, C, T, T)``."""
        parts = []
        for k in idx:
            rs, cs = self.slices(int(k))
            parts.append(canvas[..., rs, cs])
        return torch.stack(parts)
