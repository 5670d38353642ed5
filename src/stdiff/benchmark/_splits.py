"""Train/test splits of rasterised sections: by region (``x:0.5``, ``y:0.3``) or by whole sections.

A region split cuts every section's LR grid at one column (``x``) or row (``y``): the first
``fraction`` of it (left / top; rounded half up) trains, the rest tests. Both parts are disjoint LR
crops, so no HR pixel is in both. A section split uses whole named sections. :func:`validation_split`
carves a validation part from the *training* data only (early stopping, choosing settings).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..pp import Section


@dataclass
class Split:
    """Training and test sections of one benchmark run."""

    train: list[Section]
    test: list[Section]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitSpec:
    """How to split: ``axis`` + ``fraction`` (region split) or ``train`` / ``test`` section names."""

    axis: str | None = None
    fraction: float | None = None
    train: tuple[str, ...] = ()
    test: tuple[str, ...] = ()

    @classmethod
    def parse(cls, split: str | None = None, *, train: Sequence[str] = (), test: Sequence[str] = ()) -> SplitSpec:
        """From ``--split x:0.5`` or ``--train a,b --test c``."""
        if split and (train or test):
            raise ValueError("Use either --split (a region split) or --train/--test (a section split), not both.")
        if split:
            m = re.fullmatch(r"\s*([xy])\s*:\s*([0-9.]+)\s*", split)
            if not m:
                raise ValueError(f"--split must look like 'x:0.5' or 'y:0.3', got {split!r}.")
            frac = float(m.group(2))
            if not 0.0 < frac < 1.0:
                raise ValueError(f"The split fraction must be strictly between 0 and 1, got {frac}.")
            return cls(axis=m.group(1), fraction=frac)
        if not train or not test:
            raise ValueError("A section split needs both --train and --test sections (or use --split x:0.5).")
        overlap = set(train) & set(test)
        if overlap:
            raise ValueError(f"Sections {sorted(overlap)} are both in --train and --test.")
        return cls(train=tuple(train), test=tuple(test))

    def describe(self) -> str:
        """A short label (``x:0.5`` or ``train a,b / test c``)."""
        if self.axis:
            return f"{self.axis}:{self.fraction:g}"
        return f"train {','.join(self.train)} / test {','.join(self.test)}"


def cut_index(n: int, fraction: float) -> int:
    """LR index where a ``fraction`` split cuts ``n`` pixels (``round(n · fraction)``, halves up)."""
    return int(math.floor(n * float(fraction) + 0.5))


def _check_part(sec: Section, tile_lr: int, role: str) -> None:
    h, w = sec.shape_lr
    if h < tile_lr or w < tile_lr:
        raise ValueError(
            f"The {role} part {sec.name!r} is {h}×{w} LR pixels, fewer than one {tile_lr}×{tile_lr} tile; "
            "move the split, use a smaller --lr-um, or a larger region."
        )
    if not sec.mask_lr.any():
        raise ValueError(f"The {role} part {sec.name!r} has no tissue on its LR grid; move the split.")


def region_split(sections: Sequence[Section], spec: SplitSpec, *, tile_lr: int) -> Split:
    """Cut each section at ``spec.fraction`` along ``spec.axis``; first part trains, the rest tests."""
    train, test, cuts = [], [], []
    for s in sections:
        h, w = s.shape_lr
        n = w if spec.axis == "x" else h
        cut = cut_index(n, spec.fraction)
        if spec.axis == "x":
            a = s.crop_lr(slice(None), slice(0, cut), name=f"{s.name}_train")
            b = s.crop_lr(slice(None), slice(cut, None), name=f"{s.name}_test")
        else:
            a = s.crop_lr(slice(0, cut), slice(None), name=f"{s.name}_train")
            b = s.crop_lr(slice(cut, None), slice(None), name=f"{s.name}_test")
        _check_part(a, tile_lr, "training")
        _check_part(b, tile_lr, "test")
        train.append(a)
        test.append(b)
        axis_name = "columns" if spec.axis == "x" else "rows"
        cuts.append(f"{s.name}: LR {axis_name} [0, {cut}) train, [{cut}, {n}) test of {h}×{w} LR px")
    return Split(train=train, test=test, info={"split": spec.describe(), "cuts": cuts})


def section_split(sections: dict[str, Section], spec: SplitSpec, *, tile_lr: int) -> Split:
    """Whole named sections for training and testing."""
    missing = [n for n in (*spec.train, *spec.test) if n not in sections]
    if missing:
        raise ValueError(f"Unknown section(s) {missing}; loaded: {sorted(sections)}.")
    train = [sections[n] for n in spec.train]
    test = [sections[n] for n in spec.test]
    for s in train:
        _check_part(s, tile_lr, "training")
    for s in test:
        _check_part(s, tile_lr, "test")
    return Split(train=train, test=test, info={"split": spec.describe()})


def make_split(sections: dict[str, Section], spec: SplitSpec, *, tile_lr: int) -> Split:
    """A :class:`Split` of the loaded sections (by name) according to ``spec``."""
    if spec.axis:
        return region_split(list(sections.values()), spec, tile_lr=tile_lr)
    return section_split(sections, spec, tile_lr=tile_lr)


def validation_split(train: Sequence[Section], *, tile_lr: int) -> tuple[list[Section], list[Section] | None, str]:
    """Carve validation data from the training sections only: ``(fit, validation or None, how)``.

    With several training sections the last one validates; with one, its last third of LR columns
    (at least one tile wide) does, if the rest is still at least one tile wide, else its last third of
    rows. Otherwise there is no validation set and training stops on its step/time budget.
    """
    train = list(train)
    if len(train) > 1:
        return train[:-1], train[-1:], f"validate on section {train[-1].name}"
    s = train[0]
    h, w = s.shape_lr
    for axis, n in (("x", w), ("y", h)):
        cut = min(n - tile_lr, cut_index(n, 2 / 3))
        if cut < tile_lr or min(h, w) < tile_lr:
            continue
        if axis == "x":
            fit = s.crop_lr(slice(None), slice(0, cut), name=f"{s.name}_fit")
            val = s.crop_lr(slice(None), slice(cut, None), name=f"{s.name}_validation")
        else:
            fit = s.crop_lr(slice(0, cut), slice(None), name=f"{s.name}_fit")
            val = s.crop_lr(slice(cut, None), slice(None), name=f"{s.name}_validation")
        if val.mask_lr.any() and fit.mask_lr.any():
            what = "columns" if axis == "x" else "rows"
            return [fit], [val], f"validate on LR {what} [{cut}, {n}) of {s.name}"
    return train, None, f"no validation: {s.name} ({h}×{w} LR px) is too small to hold out a {tile_lr}-px tile"
