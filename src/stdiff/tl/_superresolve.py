"""``sd.tl.superresolve``: HR gene maps written back into the SpatialData as image elements.

A short pipeline: check the call, open the section lazily, get the model (load it, or learn one from
the section itself), predict chunk by chunk (:func:`predict_streamed`), then write the image elements
and their provenance (:mod:`._write`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from .._constants import Key
from .._docs import fill_doc
from .._spatial import copy_spatialdata
from .._utils import logger
from ..pp import open_input
from ._checks import check_gene_list, check_model_quantiles, check_options, check_quantiles
from ._stream import predict_streamed
from ._train import _config, sections_for_training
from ._write import check_key_added, provenance, result_images, store_result

__all__ = ["superresolve"]

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod

    from ..models import DiffST, DiffSTConfig, SelfSupervisedEnsemble, SpotRate
    from ..pp import InputGrid


@fill_doc
def superresolve(
    sdata: sd_mod.SpatialData,
    genes: Sequence[str] | None = None,
    *,
    model: DiffST | str | os.PathLike | None = None,
    image_key: str | None = None,
    table_key: str | None = None,
    counts_key: str | None = None,
    coordinate_system: str | None = None,
    layer: str | None = None,
    allow_non_integer: bool = False,
    gene_symbols: str | None = None,
    factor: int | None = None,
    lr_um: float | None = None,
    hr_um: float | None = None,
    config: DiffSTConfig | str = "cpu",
    self_supervised: Literal["auto", "likelihood", "aggregation", "coarsen"] = "auto",
    train_steps: int | None = None,
    n_samples: int | None = None,
    num_inference_steps: int | None = None,
    conserve_counts: bool = False,
    quantiles: Sequence[float] | None = None,
    key_added: str = Key.img.DEFAULT,
    overwrite: bool = False,
    scale_factors: Sequence[int] | None = None,
    chunk_lr: int | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    copy: bool = False,
) -> sd_mod.SpatialData | None:
    """Super-resolve the expression of a section and write HR gene maps as image elements.

    Spots (Visium, legacy ST) stay measurements: the platform (pitch, lattice, spot size) is
    detected from them, the HR pixel is ``hr_um`` (10 µm for Visium, 20 µm for legacy ST by default)
    and every map relates to the spots through their footprints (:class:`~stdiff.spots.Footprints`): no
    ``lr_um`` is needed, and the gaps between spots are filled from the histology and the neighbouring
    spots. Transcripts and gene images are binned onto an LR grid of ``lr_um`` µm (square bins). The
    section is super-resolved over overlapping tiles blended with a smooth window (no seams). With
    a trained model the mean is its regression network (stage A); ``n_samples`` (per chunk, see
    ``chunk_lr``) samples of its residual diffusion model (stage B), calibrated on validation data
    at training, give the standard deviation; ``quantiles`` adds images of predictive quantiles.

    With ``model=None`` the section teaches itself, from its own measurements and H&E
    (``self_supervised="auto"``, the default, picks by what the measurements are,
    :func:`~stdiff.models.default_learner`):

    - ``"likelihood"`` (spots): :class:`~stdiff.models.SpotRate` fits the expression rate behind the
      spots — histology classes times smooth local-likelihood fields of the spots' totals and shares,
      by the Poisson likelihood of each footprint's sum — and writes that rate, never a spot's count
      painted on its footprint; the mask is the tissue the histology shows, so a missing spot is a gap
      like any other; the standard deviation is the predictive sd calibrated so 90% intervals hold
      90% of cross-fitted held-out spots, growing with the distance to the nearest measured spot;
    - ``"aggregation"`` (square LR maps of binned transcripts or gene images, whose LR pixels are the
      sums of the HR truth under them): cross-fitted :class:`~stdiff.models.AggregationConsistency`
      fits (:class:`~stdiff.models.SelfSupervisedEnsemble`) distribute every LR pixel by histology,
      with a predictive sd calibrated on held-out LR pixels;
    - ``"coarsen"``: a Diff-ST model trained with the LR map aggregated ``factor×`` once more as the
      input and the LR map as the target, then applied to the real LR map. This assumes the tissue
      looks alike across scales and needs a section of at least ``tile_lr · factor`` LR pixels per side.

    With too few measurements to calibrate, no standard deviation is written.
    A model trained on HR references (:func:`stdiff.tl.train`) needs neither.

    Parameters
    ----------
    sdata
        The section (a SpatialData with a histology image and spots, transcripts or a gene image).
    genes
        Genes to write; default: all genes of the model (or of the data when ``model=None``).
    model
        A trained :class:`~stdiff.models.DiffST`, a path to a saved one, or ``None`` (train here).
    $image_key
    $table_key
    $counts_key
    $coordinate_system
    $layer
    $allow_non_integer
    $gene_symbols
    factor
        Super-resolution factor; default: the model's (without a model: 10, or for spots the HR
        pixels per spot pitch).
    lr_um
        LR grid in µm for transcripts and gene images; default: the model's (100 without a model).
        Spots need none (their LR grid tiles the HR grid at about the pitch); one finer than the spot
        pitch is refused.
    hr_um
        HR pixel in µm without a model; default for spots: 10 µm (Visium), 20 µm (legacy ST),
        pitch / 10 (other spots); else ``lr_um / factor``. A model fixes its own.
    config
        Preset or config for training when ``model=None`` and ``self_supervised="coarsen"``.
    self_supervised
        How to learn without a model: ``"auto"``, ``"likelihood"``, ``"aggregation"`` or ``"coarsen"`` (above).
    train_steps
        Training steps when ``model=None`` (default: the config's).
    n_samples, num_inference_steps
        Posterior samples (default: the config's; ``0``: the mean only, no std image) and the sampler's
        steps (default: chosen by CRPS on validation data at training). A trained model's samples only.
    conserve_counts
        Rescale the map so every measurement sums back to its count: each spot's footprint (pixels
        between spots take a smoothly tapered scaling) or each LR pixel's block (the std and the
        quantiles take the same per-pixel ratio).
    quantiles
        Levels in (0, 1) of predictive quantiles to write, e.g. ``(0.05, 0.95)`` for the bounds of a
        central 90% interval: each goes to the image ``f"{key_added}_q05"`` (``0.975`` → ``_q97.5``),
        counts per HR pixel. From the default's calibrated predictive distribution (``"likelihood"``:
        negative-binomial quantiles, whole counts before blending or rescaling) or a Diff-ST model's
        samples (mean + Student-t quantile × sample sd, needs ``n_samples`` ≥ 2); the ``"aggregation"``
        ensemble gives none and is refused (before any work), as are levels outside (0, 1). Where chunks
        blend (near a seam, see ``chunk_lr``) a quantile is the weighted mean of the chunks' quantiles.
        Not written when the spread cannot be calibrated (like the std).
    key_added
        Name of the output image; the standard deviation goes to ``f"{key_added}_std"``, the quantiles
        to ``f"{key_added}_q05"``…. Names of elements stdiff did not write are refused (before any
        work): stdiff never replaces them.
    overwrite
        Replace an earlier stdiff result of the same ``key_added`` in ``sdata`` (refused without it; with
        ``copy=True`` only the copy's is replaced).
    scale_factors
        Pyramid of the output images (default: halvings while the image stays ≥ 64 px).
    chunk_lr
        Inference runs chunk by chunk (``chunk_lr × chunk_lr`` LR pixels plus a halo of half a tile,
        blended), reading only the histology under each chunk, so memory does not grow with the slide;
        default: chunks of about 2.5 GB of working memory.
    $device
    $seed
    $progress
    copy
        Return a modified copy instead of writing into ``sdata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Writes (into ``sdata`` or the copy):

    ``sdata.images[key_added]``
        Posterior mean, counts per HR pixel, ``c`` = gene names, with a scale pyramid and a
        transformation composed from the histology image's own (so it overlays it exactly, in every
        coordinate system the image is in).
    ``sdata.images[f"{key_added}_std"]``
        Per-pixel predictive standard deviation (same layout): from the calibrated samples of a
        trained model, or the held-out-spot calibration of the default; not written when it cannot
        be calibrated.
    ``sdata.images[f"{key_added}_q05"]``…
        One image per level of ``quantiles`` (same layout, transform and pyramid as the mean).
    ``sdata.attrs["stdiff"][key_added]``
        Provenance: model hash, config, genes, factor, µm grid, sampler, steps, samples, seed, time,
        stdiff version (also on the elements' ``attrs``).
    """
    t0 = time.perf_counter()
    quantiles = _check_call(sdata, key_added, overwrite or copy, quantiles)  # a copy's result is not the user's
    genes = check_gene_list(genes)
    check_options(
        chunk_lr=chunk_lr, n_samples=n_samples, num_inference_steps=num_inference_steps, train_steps=train_steps,
        factor=factor, lr_um=lr_um, hr_um=hr_um, self_supervised=self_supervised, scale_factors=scale_factors,
        seed=seed,
    )  # fmt: skip
    model = _load_model(model, genes)
    factor, lr_um, hr_um, he_scale, panel = _model_grid(
        model, genes, config=config, factor=factor, lr_um=lr_um, hr_um=hr_um
    )
    inp = open_input(
        sdata, panel, image_key=image_key, table_key=table_key, counts_key=counts_key,
        coordinate_system=coordinate_system, lr_um=lr_um, factor=factor, hr_um=hr_um, he_scale=he_scale, layer=layer,
        allow_non_integer=allow_non_integer, gene_symbols=gene_symbols,
    )  # fmt: skip
    _check_section(inp, model, genes)
    trained_here = model is None
    learner = _learner(inp, self_supervised) if model is None else None
    check_model_quantiles(model, learner, quantiles, n_samples=n_samples, config=config)
    if model is None:
        model = _learn(inp, config=config, self_supervised=learner, train_steps=train_steps, device=device, seed=seed,
                       progress=progress)  # fmt: skip
    out_genes = list(genes) if genes is not None else list(model.genes)
    mean, std, qmaps = _predict(
        model, inp, out_genes=out_genes, chunk_lr=chunk_lr, conserve_counts=conserve_counts, progress=progress,
        seed=seed, n_samples=n_samples, num_inference_steps=num_inference_steps, device=device, quantiles=quantiles,
    )  # fmt: skip
    prov = provenance(
        model, inp, genes=out_genes, trained_here=trained_here, layer=layer,
        allow_non_integer=allow_non_integer, gene_symbols=gene_symbols, n_samples=n_samples,
        num_inference_steps=num_inference_steps, seed=seed, conserve_counts=conserve_counts, quantiles=quantiles,
    )  # fmt: skip
    images = result_images(
        sdata, inp, mean, std, key_added=key_added, genes=out_genes, prov=prov, scale_factors=scale_factors,
        quantiles=qmaps,
    )  # fmt: skip
    # the prediction is done (the images read it lazily from its store); only now touch the SpatialData
    target = copy_spatialdata(sdata) if copy else sdata  # images stay lazy (spatialdata.deepcopy loads them)
    store_result(target, images, key_added=key_added, prov=prov, t0=t0)
    logger.info(
        "Super-resolved %d genes to %d×%d HR pixels (%.3g µm) in %.1f s → images %s.",
        len(out_genes), mean.shape[1], mean.shape[2], inp.grid.lr_um / inp.grid.factor, time.perf_counter() - t0,
        ", ".join(map(repr, images)),
    )  # fmt: skip
    return target if copy else None


def _check_call(sdata: Any, key_added: Any, overwrite: bool, quantiles: Any) -> tuple[float, ...]:
    """The checked ``quantiles`` (:func:`check_quantiles`), after refusing a bad ``sdata`` or ``key_added``.

    Refuses what is not a SpatialData and a ``key_added`` whose images (the mean, std and quantiles)
    are invalid names or would replace the user's elements.
    """
    import spatialdata as sd_mod

    if not isinstance(sdata, sd_mod.SpatialData):
        raise TypeError(f"sdata must be a spatialdata.SpatialData, not {type(sdata).__name__}.")
    quantiles = check_quantiles(quantiles)
    check_key_added(sdata, key_added, overwrite=bool(overwrite), quantiles=quantiles)
    return quantiles


def _learner(inp: InputGrid, self_supervised: str) -> str:
    """What ``model=None`` fits: ``self_supervised``, or for ``"auto"`` :func:`~stdiff.models.default_learner`."""
    from ..models import default_learner

    return default_learner(inp) if self_supervised == "auto" else self_supervised  # it reads ``spots`` only


def _predict(model: Any, inp: InputGrid, *, n_samples: int | None, quantiles: tuple[float, ...], **kwargs: Any):
    """``(mean, std, {quantile name: map})`` of :func:`predict_streamed`; no std where ``n_samples=0`` drew none."""
    pred = predict_streamed(model, inp, n_samples=n_samples, quantiles=quantiles, **kwargs)
    mean, std = pred
    if n_samples == 0 and _samples_std(model):
        std = None  # no samples: a std of zeros would read as certainty
    if len(pred.quantiles) < len(quantiles):
        logger.warning("No quantile images: %s gave no predictive distribution (too few measurements to calibrate "
                       "one; no std either).", type(model).__name__)  # fmt: skip
    return mean, std, pred.quantiles


def _samples_std(model: Any) -> bool:
    """Whether the model's std is one of posterior samples (a Diff-ST model), so ``n_samples=0`` gives none."""
    from ..models import DiffST

    return isinstance(model, DiffST)


def _load_model(model: DiffST | str | os.PathLike | None, genes: Sequence[str] | None) -> DiffST | None:
    """The model itself: ``model``, or the one saved at that path (restricted to ``genes``)."""
    from ..models import DiffST

    if isinstance(model, str | os.PathLike):
        return DiffST.load(model, genes=genes)
    return model


def _model_grid(
    model: DiffST | None,
    genes: Sequence[str] | None,
    *,
    config: DiffSTConfig | str,
    factor: int | None,
    lr_um: float | None,
    hr_um: float | None,
) -> tuple[int | None, float | None, float | None, int, list[str] | None]:
    """``(factor, lr_um, hr_um, he_scale, genes to read)``: the model's (checked against the call's), else the call's.

    A spot model's LR grid is left to the spots (``lr_um=None`` unless given, its HR pixel fixed): a
    section of another platform is then refused for its platform (:func:`check_platform`), not for an
    ``lr_um`` the user never passed.
    """
    if model is None:
        return factor, lr_um, hr_um, _config(config).he_scale, (list(genes) if genes is not None else None)
    model_hr = model.lr_um / model.factor
    if hr_um is not None and abs(hr_um - model_hr) > 1e-6:
        raise ValueError(f"hr_um={hr_um:g} but the model predicts {model_hr:g} µm pixels; omit hr_um.")
    factor = int(factor if factor is not None else model.factor)
    if factor != model.factor:
        raise ValueError(f"factor={factor} but the model was trained for factor={model.factor}; omit factor.")
    if genes is not None:
        missing = [g for g in genes if g not in model.genes]
        if missing:
            raise KeyError(f"Genes {missing[:10]} are not in the model's panel ({len(model.genes)} genes).")
    if lr_um is None and getattr(model, "platform", "square") != "square":
        return factor, None, model_hr, model.config.he_scale, model.genes
    lr_um = float(lr_um if lr_um is not None else model.lr_um)
    return factor, lr_um, hr_um, model.config.he_scale, model.genes


def _check_section(inp: InputGrid, model: DiffST | None, genes: Sequence[str] | None) -> None:
    """A model must suit the section's measurements (:func:`check_platform`); without one the panel must be small."""
    if model is not None:
        check_platform(model, inp)
    elif genes is None and len(inp.genes) > 200:
        raise ValueError(
            f"The data has {len(inp.genes)} genes; without a trained model pass genes= (a panel of at most a "
            "few hundred genes, e.g. highly variable ones) to train on."
        )


def _learn(
    inp: InputGrid,
    *,
    config: DiffSTConfig | str,
    self_supervised: str,
    train_steps: int | None,
    device: str,
    seed: int,
    progress: bool,
) -> DiffST | SelfSupervisedEnsemble | SpotRate:
    """A model learnt from the section itself (its spots and histology), by ``self_supervised``."""
    from ..models import DiffST, SelfSupervisedEnsemble, SpotRate, default_learner

    if self_supervised == "auto":
        self_supervised = default_learner(inp)  # it reads ``spots`` only
    section = inp.section(name="input", native_lr=self_supervised != "likelihood")
    if self_supervised == "likelihood":
        return SpotRate().fit(section, seed=seed, progress=progress)
    if self_supervised == "aggregation":
        return SelfSupervisedEnsemble().fit(section, seed=seed)
    if self_supervised != "coarsen":
        raise ValueError(
            f"self_supervised must be 'auto', 'likelihood', 'aggregation' or 'coarsen', got {self_supervised!r}."
        )
    grid = inp.grid
    train_sections = sections_for_training(
        [section], None, factor=grid.factor, lr_um=grid.lr_um, he_scale=inp.he_scale, self_supervised=True
    )
    model = DiffST.setup(train_sections, config, seed=seed)
    model.train(train_sections, steps=train_steps, device=device, seed=seed, progress=progress)
    return model


def check_platform(model: DiffST, inp: InputGrid) -> None:
    """Refuse (or warn about) a model trained for another measurement geometry than the section's.

    A model trained on spots (``platform="visium"``…) needs spots: a square LR map is refused. A
    square-trained model applied to spots is warned about and sees the spots summed per LR pixel (the
    gap-free map it was trained on). A model trained for one spot platform applied to another is
    refused: its conditioning (spot size and density relative to the pitch) would not be what it
    learnt.
    """
    platform = getattr(model, "platform", "square")
    if platform == "square":
        if inp.geometry is not None:
            logger.warning(
                "The model was trained on gap-free square aggregates (platform='square'), but the section's expression "
                "is %s spots (pitch %.4g µm): the model sees the spots summed per %g µm LR pixel. Train it with "
                "platform=%r for spot-native super-resolution.",
                inp.geometry.platform, inp.geometry.pitch_um, inp.grid.lr_um,
                inp.geometry.platform if inp.geometry.platform != "generic" else "visium",
            )  # fmt: skip
        return
    if inp.geometry is None:
        raise ValueError(
            f"The model was trained for {platform!r} spots, but the section's expression is a {inp.source} element "
            "(square bins): a spot model needs spots. Use a model trained with platform='square' for transcripts "
            "and gene images."
        )
    if inp.geometry.platform != platform:
        raise ValueError(
            f"The model was trained for {platform!r} spots, but the section's spots look like "
            f"{inp.geometry.platform!r} "
            f"(pitch {inp.geometry.pitch_um:.4g} µm, spots of {inp.geometry.diameter_um:.4g} µm). Train a model with "
            f"platform={inp.geometry.platform!r}, or call superresolve with model=None."
        )
