"""What every method adapter shares: the fitting context, the budget, the output and the base class.

A method adapter is a small class with :meth:`Method.fit` (train on the context's data, return what
training used) and :meth:`Method.predict` (one test section → :class:`Output`). Outputs carry the
:class:`~stdiff.pp.Normalizer` of their values; the runner maps them to the benchmark's scoring space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...pp import Normalizer, Section

TRACKS: tuple[str, ...] = ("reference", "self_supervised")


@dataclass(frozen=True)
class Budget:
    """The training budget shared by every learned method.

    Training stops at the first of: ``patience`` validation checks (every ``eval_every`` steps)
    without improvement of the validation loss, ``max_steps`` steps, or ``max_time_s`` seconds. The
    weights of the best validation check are kept. Without validation data, at ``max_steps`` or
    ``max_time_s``.
    """

    max_steps: int
    eval_every: int
    patience: int
    max_time_s: float


@dataclass
class Context:
    """Everything a method may use to fit, for one track and one seed.

    ``train`` holds the training sections with HR truth (reference track) or the test sections
    *without* truth (self-supervised track: ``hr`` and ``mask_truth`` removed). ``validation`` is
    carved from the training data only (reference track); in the self-supervised track the method
    carves its own from the LR map. ``normalizer`` is the space methods work in (reference: fitted on
    the training truth; self-supervised: fitted on the test LR map). ``shared`` passes fitted models
    between methods of one track and seed (knock-outs reuse the stdiff model).
    """

    track: str
    train: list[Section]
    validation: list[Section] | None
    validation_note: str
    normalizer: Normalizer
    genes: list[str]
    config: Any
    budget: Budget
    seed: int
    device: str
    n_samples: int
    ablation_samples: int
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def self_supervised(self) -> bool:
        """Whether this is the self-supervised track."""
        return self.track == "self_supervised"


@dataclass
class Output:
    """A prediction of one section: ``mean`` ``(G, H, W)`` and optional ``samples`` ``(n, G, H, W)``.

    Both are in the space of ``normalizer``. ``point`` is False for an output that is a single sample
    (scored by CRPS only, never by PCC/RMSE/SSIM).
    """

    mean: np.ndarray
    samples: np.ndarray | None = None
    normalizer: Normalizer | None = None
    point: bool = True


class Skip(Exception):
    """A method cannot run in this setting (the reason is reported, nothing is scored)."""


class Method:
    """Base class of the method adapters."""

    name: str = "method"
    description: str = ""
    #: trained on data (gets a budget, timings and a histology-gain row)
    learned: bool = False
    #: draws posterior samples (scored by CRPS/coverage/spread-skill)
    sampler: bool = False
    #: gets a histology-gain row (real image vs rotated at inference); default: learned methods
    gain: bool | None = None

    def fit(self, ctx: Context) -> dict[str, Any]:
        """Fit on ``ctx``; returns training info (``steps``, ``best_step``, ``seconds``, ``stopped``)."""
        self.ctx = ctx
        return {"steps": 0, "best_step": None, "seconds": 0.0, "stopped": "not trained"}

    def predict(self, section: Section) -> Output:  # pragma: no cover - abstract
        """Predict one test section."""
        raise NotImplementedError

    def predict_rotated(self, section: Section) -> Output:
        """Predict the section with its histology rotated by 180° (the histology-gain control)."""
        from .._features import rotated

        return self.predict(rotated(section))


def lr_normalizer(sections: list[Section]) -> Normalizer:
    """A normaliser fitted on the LR maps only (counts per HR pixel = LR counts / factor²)."""
    f = sections[0].factor
    counts = np.concatenate([(s.lr / float(f) ** 2)[:, s.mask_lr] for s in sections], axis=1)
    return Normalizer.fit(counts, list(sections[0].genes))


def rescore(values: np.ndarray, source: Normalizer | None, target: Normalizer) -> np.ndarray:
    """Map normalised values from ``source``'s space to ``target``'s (through counts), float32."""
    if source is None or source is target:
        return np.asarray(values, dtype=np.float32)
    if (
        source.genes == target.genes
        and np.array_equal(source.size, target.size)
        and np.array_equal(source.scale, target.scale)
    ):
        return np.asarray(values, dtype=np.float32)
    src = source.subset(target.genes) if source.genes != target.genes else source
    return target.transform(src.inverse(values))


def strip_truth(section: Section) -> Section:
    """The section as a Visium-only lab has it: LR map and image, no HR truth."""
    from dataclasses import replace

    return replace(section, hr=None, mask_truth=None)


def density_coarsen(section: Section) -> Section:
    """Self-supervision pair from the LR map: :meth:`Section.coarsen` with counts kept per unit area.

    The coarsened section's truth is the LR map (at ``lr_um``) and its input the LR map aggregated
    ``factor×``; both are divided by ``factor²`` so counts per pixel have the same magnitude as the
    HR pixels the model will predict at test time.
    """
    from dataclasses import replace

    c = section.coarsen()
    k = float(section.factor) ** 2
    return replace(c, hr=c.hr / k, lr=c.lr / k)
