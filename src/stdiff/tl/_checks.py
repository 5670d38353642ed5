"""The checks :func:`~stdiff.tl.superresolve` makes on its arguments before reading or computing anything.

Each names the argument, the value passed and the fix; what needs the data (genes present, spots,
image, coordinate systems) is checked when the section is opened, still before any fit or prediction.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._constants import Key

__all__ = [
    "check_gene_list",
    "check_model_quantiles",
    "check_options",
    "check_quantile_support",
    "check_quantiles",
    "positive_int",
    "positive_number",
]


def positive_int(value: Any, name: str, *, minimum: int = 1, fix: str = "") -> int | None:
    """``value`` as an ``int`` ≥ ``minimum`` (``None`` passes), else a ``ValueError`` naming ``name``."""
    if value is None:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, numbers.Real) and np.isfinite(value) and float(value).is_integer():
        ok = True
    if not ok or int(value) < minimum:
        raise ValueError(f"{name} must be a whole number ≥ {minimum}, got {value!r}.{' ' + fix if fix else ''}")
    return int(value)


def positive_number(value: Any, name: str, *, fix: str = "") -> float | None:
    """``value`` as a finite ``float`` > 0 (``None`` passes), else a ``ValueError`` naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of µm, got {value!r}.{' ' + fix if fix else ''}")
    return float(value)


def check_gene_list(genes: Any) -> list[str] | None:
    """``genes=`` as a list of unique names (``None`` passes: all genes), refusing a bare string or an empty list."""
    if genes is None:
        return None
    if isinstance(genes, str | bytes):
        raise TypeError(f"genes must be a list of gene names, got the string {genes!r}; pass genes=[{genes!r}].")
    if not hasattr(genes, "__iter__"):
        raise TypeError(f"genes must be a list of gene names, got {type(genes).__name__}.")
    genes = [str(g) for g in genes]
    if not genes:
        raise ValueError("genes=[] names no gene: pass the genes to super-resolve, or omit genes= for all of them.")
    seen: set[str] = set()
    dup = sorted({g for g in genes if g in seen or seen.add(g)})
    if dup:
        raise ValueError(f"genes names {dup[:10]} more than once; pass each gene once.")
    return genes


def check_options(
    *,
    chunk_lr: Any,
    n_samples: Any,
    num_inference_steps: Any,
    train_steps: Any,
    factor: Any,
    lr_um: Any,
    hr_um: Any,
    self_supervised: Any,
    scale_factors: Any,
    seed: Any,
) -> None:
    """The numbers and choices of a :func:`~stdiff.tl.superresolve` call, each checked on its own."""
    positive_int(chunk_lr, "chunk_lr", fix="It is the chunk side in LR pixels; omit it to size chunks by memory.")
    n = positive_int(n_samples, "n_samples", minimum=0, fix="Omit it for the model's default.")
    if n == 1:
        raise ValueError(
            "n_samples=1: the standard deviation is taken over the samples and needs at least 2 (default: the "
            "model's). Pass n_samples=0 for the mean only (no std image), or n_samples ≥ 2."
        )
    positive_int(num_inference_steps, "num_inference_steps", fix="Omit it for the steps chosen at training.")
    positive_int(train_steps, "train_steps", fix="Omit it for the config's.")
    positive_int(factor, "factor", fix="It is the number of HR pixels per LR pixel side.")
    positive_number(lr_um, "lr_um", fix="Spots need none: omit it.")
    positive_number(hr_um, "hr_um", fix="It is the output pixel, e.g. hr_um=10.")
    if self_supervised not in ("auto", "likelihood", "aggregation", "coarsen"):
        raise ValueError(
            f"self_supervised must be 'auto', 'likelihood', 'aggregation' or 'coarsen', got {self_supervised!r}."
        )
    if scale_factors is not None:
        if isinstance(scale_factors, str) or not hasattr(scale_factors, "__iter__"):
            raise ValueError(f"scale_factors must be a list of whole numbers ≥ 2 (e.g. [2, 2]), got {scale_factors!r}.")
        for s in scale_factors:
            positive_int(s, "each of scale_factors", minimum=2, fix="e.g. scale_factors=[2, 2], or [] for no pyramid.")
    positive_int(seed, "seed", minimum=0)


def check_quantiles(quantiles: Any) -> tuple[float, ...]:
    """``quantiles=`` as sorted levels in (0, 1), each with its own image name (``None`` passes: none).

    A level's image is ``f"{key_added}_q05"`` (:meth:`Key.pred.quantile`), so two levels that round to one
    name, or a level too close to 0 or 1 to be named, are refused; so are percents (``95``) and a bare number.
    """
    if quantiles is None:
        return ()
    example = "e.g. quantiles=(0.05, 0.95) for the bounds of a central 90% interval"
    if isinstance(quantiles, str | bytes) or not hasattr(quantiles, "__iter__"):
        fix = f"pass quantiles=({quantiles!r},)" if isinstance(quantiles, numbers.Real) else example
        raise TypeError(f"quantiles must be a list of levels in (0, 1), got {quantiles!r}; {fix}.")
    levels = list(quantiles)
    bad = [
        q for q in levels
        if isinstance(q, bool) or not isinstance(q, numbers.Real) or not np.isfinite(q) or not 0 < q < 1
    ]  # fmt: skip
    if bad:
        pct = any(isinstance(q, numbers.Real) and not isinstance(q, bool) and 1 < q < 100 for q in bad)
        hint = " (levels, not percents: 0.05 for 5%)" if pct else ""
        raise ValueError(f"quantiles must be levels strictly between 0 and 1{hint}, got {bad!r}; {example}.")
    names: dict[str, float] = {}
    for q in levels:
        name = Key.pred.quantile(q)
        if not Key.pred.is_quantile(name) or name in ("q00", "q100"):
            raise ValueError(
                f"quantiles: {q!r} is too close to 0 or 1 to name its image ({name!r}); use a level with at most 8 "
                "decimals, e.g. 0.001."
            )
        if name in names:
            raise ValueError(
                f"quantiles {names[name]!r} and {q!r} would both write the image '<key_added>_{name}'; pass each "
                "level once."
            )
        names[name] = q
    return tuple(sorted(float(q) for q in levels))


def check_quantile_support(model: Any, quantiles: Sequence[float], *, n_samples: int | None = None) -> None:
    """Refuse ``quantiles`` that ``model`` (a model, or the class ``model=None`` will fit) cannot give.

    A model gives quantiles when its ``predict_section`` takes ``quantiles=`` (:class:`~stdiff.models.SpotRate`
    from its calibrated predictive distribution, :class:`~stdiff.models.DiffST` from its samples); a Diff-ST
    model needs ``n_samples`` (the samples it draws; ``None`` for other models) of at least 2.
    """
    if not quantiles:
        return
    cls = model if isinstance(model, type) else type(model)
    asked = f"quantiles={tuple(quantiles)!r}"
    if "quantiles" not in inspect.signature(model.predict_section).parameters:
        why = ""
        if cls.__name__ == "SelfSupervisedEnsemble":
            why = (
                " (the aggregation ensemble, the default for square LR maps: its predictive, Poisson around the "
                "mean times a log-normal error, has no quantiles in closed form)"
            )
        raise ValueError(
            f"{asked} cannot be written: {cls.__name__} gives a mean and a standard deviation but no quantiles{why}. "
            "Omit quantiles=, or use a model that gives them: self_supervised='likelihood' (SpotRate, spots or "
            "square LR maps) or a trained DiffST (from its samples)."
        )
    if n_samples is not None and n_samples < 2:
        raise ValueError(
            f"{asked}: a Diff-ST model's quantiles come from its posterior samples, but n_samples={n_samples} draws "
            "none. Pass n_samples ≥ 2, or omit quantiles=."
        )


def check_model_quantiles(
    model: Any, learner: str | None, quantiles: Sequence[float], *, n_samples: int | None, config: Any
) -> None:
    """:func:`check_quantile_support` for ``model``, or without one for what ``learner`` will fit.

    ``learner``: ``"likelihood"`` (:class:`~stdiff.models.SpotRate`), ``"aggregation"``
    (:class:`~stdiff.models.SelfSupervisedEnsemble`) or ``"coarsen"`` (a Diff-ST model of ``config``);
    a Diff-ST model draws ``n_samples`` samples, by default its config's.
    """
    from ..models import DiffST, SelfSupervisedEnsemble, SpotRate
    from ._train import _config

    if not quantiles:
        return
    if model is None:
        model = {"likelihood": SpotRate, "aggregation": SelfSupervisedEnsemble}.get(learner, DiffST)
        samples = _config(config).sampler.n_samples if model is DiffST else None
    else:
        samples = model.config.sampler.n_samples if isinstance(model, DiffST) else None
    if samples is not None and n_samples is not None:
        samples = n_samples
    check_quantile_support(model, quantiles, n_samples=samples)
