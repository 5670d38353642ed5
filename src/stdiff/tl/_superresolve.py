"""``sd.tl.superresolve``: HR gene maps written back into the SpatialData as image elements."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from .._spatial import composed_transform
from .._utils import logger
from .._version import __version__
from ..pp import Section, open_input, rasterize
from ._stream import predict_streamed, rescale_to_lr
from ._train import _config, sections_for_training

__all__ = ["gene_names", "rescale_to_lr", "section_of", "superresolve"]

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod

    from ..models import DiffST, DiffSTConfig


def _scale_factors(shape: tuple[int, int], requested: Sequence[int] | None) -> list[int] | None:
    if requested is not None:
        return list(requested) or None
    out, size = [], min(shape)
    while size // 2 >= 64 and len(out) < 3:
        out.append(2)
        size //= 2
    return out or None


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
    self_supervised: Literal["aggregation", "coarsen"] = "aggregation",
    train_steps: int | None = None,
    n_samples: int | None = None,
    num_inference_steps: int | None = None,
    conserve_counts: bool = False,
    key_added: str = "stdiff",
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
    and every map relates to the spots through their footprints (:class:`~stdiff.pp.Footprints`): no
    ``lr_um`` is needed, and the gaps between spots are filled from the histology and the neighbouring
    spots. Transcripts and gene images are binned onto an LR grid of ``lr_um`` µm (square bins). The
    section is super-resolved over overlapping tiles blended with a smooth window (no seams). With
    a trained model the mean is its regression network (stage A); ``n_samples`` (per chunk, see
    ``chunk_lr``) samples of its residual diffusion model (stage B), calibrated on validation data
    at training, give the standard deviation. (For 5% / 95% prediction bounds of a section, call
    :meth:`~stdiff.models.DiffST.predict_section`, which returns ``q05`` and ``q95``.)

    With ``model=None`` the section teaches itself, from its own spots and H&E:

    - ``self_supervised="aggregation"`` (default): cross-fitted
      :class:`~stdiff.models.AggregationConsistency` fits at the native scale
      (:class:`~stdiff.models.SelfSupervisedEnsemble`): histology decides where each spot's counts go
      inside it and between spots, every spot's counts are conserved under its footprint, and the
      standard deviation is a predictive sd calibrated on held-out spots (each predicted by the fit
      that did not see it; counting noise plus a per-gene error of the mean); with too few spots to
      calibrate, no standard deviation is written;
    - ``self_supervised="coarsen"``: a Diff-ST model trained with the LR map aggregated ``factor×``
      once more as the input and the LR map as the target, then applied to the real LR map. This
      assumes the tissue looks alike across scales and needs a section of at least
      ``tile_lr · factor`` LR pixels per side.

    A model trained on HR references (:func:`stdiff.tl.train`) needs neither.

    Parameters
    ----------
    sdata
        The section (a SpatialData with a histology image and spots, transcripts or a gene image).
    genes
        Genes to write; default: all genes of the model (or of the data when ``model=None``).
    model
        A trained :class:`~stdiff.models.DiffST`, a path to a saved one, or ``None`` (train here).
    image_key
        Histology image; default: the only non-gene image.
    table_key, counts_key
        Where the expression is (see :func:`stdiff.pp.rasterize`); default: found automatically.
    coordinate_system
        Coordinate system in µm shared by the image and the expression; required if there are several.
    layer
        Table layer with the raw counts (default ``X``).
    allow_non_integer
        Accept non-integer values where raw counts are expected (see :func:`stdiff.pp.rasterize`).
    gene_symbols
        Column of the table's ``var`` that ``genes`` (and a model's genes) are given in, e.g. symbols
        when ``var_names`` are Ensembl ids (scanpy's convention); the result's channels are named by it.
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
        How to learn without a model: ``"aggregation"`` or ``"coarsen"`` (above).
    train_steps
        Training steps when ``model=None`` (default: the config's).
    n_samples, num_inference_steps
        Posterior samples (default: the config's) and the sampler's steps (default: chosen by CRPS on
        validation data at training).
    conserve_counts
        Rescale the map so every measurement sums back to its count: each spot's footprint (pixels
        between spots take a smoothly tapered scaling) or each LR pixel's block.
    key_added
        Name of the output image; the standard deviation goes to ``f"{key_added}_std"``.
    scale_factors
        Pyramid of the output images (default: halvings while the image stays ≥ 64 px).
    chunk_lr
        Inference runs chunk by chunk (``chunk_lr × chunk_lr`` LR pixels plus a halo of half a tile,
        blended), reading only the histology under each chunk, so memory does not grow with the slide;
        default: chunks of about 2.5 GB of working memory
        (``stdiff.tl._stream.CHUNK_BUDGET_MB``).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed
        Seed of the sampler (same seed → same output on CPU).
    progress
        Show progress bars.
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
    ``sdata.attrs["stdiff"][key_added]``
        Provenance: model hash, config, genes, factor, µm grid, sampler, steps, samples, seed, time,
        stdiff version (also on the elements' ``attrs``).
    """
    import spatialdata as sd_mod
    from spatialdata.models import Image2DModel

    from ..models import DiffST, SelfSupervisedEnsemble

    if not isinstance(sdata, sd_mod.SpatialData):
        raise TypeError(f"sdata must be a spatialdata.SpatialData, not {type(sdata).__name__}.")
    if not key_added or not isinstance(key_added, str):
        raise ValueError("key_added must be a non-empty string.")
    t0 = time.perf_counter()
    if isinstance(model, str | os.PathLike):
        model = DiffST.load(model, genes=genes)
    trained_here = model is None
    if model is not None:
        factor = int(factor if factor is not None else model.factor)
        lr_um = float(lr_um if lr_um is not None else model.lr_um)
        if hr_um is not None and abs(hr_um - model.lr_um / model.factor) > 1e-6:
            raise ValueError(f"hr_um={hr_um:g} but the model predicts {model.lr_um / model.factor:g} µm pixels.")
        if factor != model.factor:
            raise ValueError(f"factor={factor} but the model was trained for factor={model.factor}.")
        if genes is not None:
            missing = [g for g in genes if g not in model.genes]
            if missing:
                raise KeyError(f"Genes {missing[:10]} are not in the model's panel ({len(model.genes)} genes).")
        he_scale = model.config.he_scale
        panel = model.genes
    else:
        he_scale = _config(config).he_scale
        panel = list(genes) if genes is not None else None
    inp = open_input(
        sdata,
        panel,
        image_key=image_key,
        counts_key=counts_key,
        table_key=table_key,
        coordinate_system=coordinate_system,
        lr_um=lr_um,
        factor=factor,
        hr_um=hr_um,
        he_scale=he_scale,
        layer=layer,
        allow_non_integer=allow_non_integer,
        gene_symbols=gene_symbols,
    )
    factor, lr_um = inp.grid.factor, inp.grid.lr_um
    if model is not None:
        check_platform(model, inp)
    if model is None and genes is None and len(inp.genes) > 200:
        raise ValueError(
            f"The data has {len(inp.genes)} genes; without a trained model pass genes= (a panel of at most a "
            "few hundred genes, e.g. highly variable ones) to train on."
        )
    if model is None:
        section = inp.section(name="input")
        if self_supervised == "aggregation":
            model = SelfSupervisedEnsemble().fit(section, seed=seed)
        elif self_supervised == "coarsen":
            train_sections = sections_for_training(
                [section], None, factor=factor, lr_um=lr_um, he_scale=he_scale, self_supervised=True
            )
            model = DiffST.setup(train_sections, config, seed=seed)
            model.train(train_sections, steps=train_steps, device=device, seed=seed, progress=progress)
        else:
            raise ValueError(f"self_supervised must be 'aggregation' or 'coarsen', got {self_supervised!r}.")
    out_genes = list(genes) if genes is not None else list(model.genes)
    # the model is called through model.predict_section, one chunk (and its halo) at a time
    mean, std = predict_streamed(
        model,
        inp,
        out_genes=out_genes,
        chunk_lr=chunk_lr,
        conserve_counts=conserve_counts,
        seed=seed,
        progress=progress,
        n_samples=n_samples,
        num_inference_steps=num_inference_steps,
        device=device,
    )

    cfg = model.config
    provenance: dict[str, Any] = {
        "model_hash": model.model_hash(),
        "trained_here": trained_here,
        "config": cfg.to_dict(),
        "genes": out_genes,
        "factor": factor,
        "lr_um": lr_um,
        "hr_um": lr_um / factor,
        "spots": None if inp.geometry is None else inp.geometry.to_dict(),
        "origin": list(inp.grid.origin),
        "coordinate_system": inp.coordinate_system,
        "image_key": inp.image_key,
        "source": inp.source,
        "source_key": inp.source_key,
        "layer": layer,
        "allow_non_integer": bool(allow_non_integer),
        "gene_symbols": gene_symbols,
        **(
            {
                "mean": "mean of cross-fitted aggregation-consistency fits on the section's own spots",
                "sampler": "none: std is the predictive sd calibrated on held-out spots"
                if std is not None
                else "none: too few spots to calibrate a spread, no std written",
                "calibration": model.calibration,
                "num_inference_steps": 0,
            }
            if isinstance(model, SelfSupervisedEnsemble)
            else {
                "mean": "stage A regression (posterior mean in the normalised space, mapped to counts)",
                "sampler": f"edm-{cfg.sampler.solver}, whole-section canvas, per-gene calibrated spread",
                "num_inference_steps": int(num_inference_steps or model.sampling_steps),
            }
        ),
        "n_samples": int(cfg.sampler.n_samples if n_samples is None else n_samples),
        "seed": int(seed),
        "conserve_counts": bool(conserve_counts),
        "units": "counts per HR pixel",
        "stdiff_version": __version__,
    }
    transforms = composed_transform(
        sdata, inp.image_key, inp.coordinate_system, origin=inp.grid.origin, pixel_um=inp.grid.hr_um
    )
    sf = _scale_factors(mean.shape[-2:], scale_factors)
    images = {}
    outputs = ((key_added, mean), (f"{key_added}_std", std)) if std is not None else ((key_added, mean),)
    for key, arr in outputs:
        el = Image2DModel.parse(
            arr,
            dims=("c", "y", "x"),
            c_coords=out_genes,
            transformations=transforms,
            scale_factors=sf,
        )
        el.attrs["stdiff"] = dict(provenance, kind="mean" if key == key_added else "std")
        images[key] = el
    target = sd_mod.deepcopy(sdata) if copy else sdata
    for key in images:
        if key in target.images:
            logger.info("Overwriting image element %r.", key)
    stale = f"{key_added}_std"
    if std is None and stale in target.images:  # a spread from an earlier call would no longer belong
        del target.images[stale]
    # the prediction is done (the images read it lazily from its store); only now touch the SpatialData
    for key, el in images.items():
        target.images[key] = el
    attrs = dict(target.attrs or {})
    store = dict(attrs.get("stdiff", {}) or {})
    store[key_added] = dict(provenance, seconds=round(time.perf_counter() - t0, 3))
    attrs["stdiff"] = store
    target.attrs = attrs
    logger.info(
        "Super-resolved %d genes to %d×%d HR pixels (%.3g µm) in %.1f s → images %r, %r.",
        len(out_genes),
        mean.shape[1],
        mean.shape[2],
        lr_um / factor,
        time.perf_counter() - t0,
        key_added,
        f"{key_added}_std",
    )
    return target if copy else None


def check_platform(model, inp) -> None:
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


def gene_names(sdata: sd_mod.SpatialData, key: str, gene_symbols: str) -> dict[str, str]:
    """``{channel name of result key: its value in var[gene_symbols] of the result's table}``.

    The result's channels are the table's ``var_names`` (or the ``var`` column ``superresolve`` was
    given as ``gene_symbols``); this maps them to another ``var`` column, e.g. symbols for Ensembl ids.
    """
    prov = (sdata.attrs or {}).get("stdiff", {}).get(key)
    if prov is None:
        raise KeyError(f"No stdiff result {key!r} in sdata.attrs['stdiff']; run sd.tl.superresolve first.")
    if prov.get("source") != "spots" or prov.get("source_key") not in sdata.tables:
        raise ValueError(f"gene_symbols= needs a result computed from a table's spots; {key!r} comes from "
                         f"{prov.get('source')} {prov.get('source_key')!r}.")  # fmt: skip
    var = sdata.tables[prov["source_key"]].var
    if gene_symbols not in var.columns:
        raise KeyError(f"gene_symbols={gene_symbols!r} is not a column of the table's var; it has {list(var.columns)}.")
    named_by = prov.get("gene_symbols")
    keys = var.index.astype(str) if named_by is None else var[named_by].astype(str)
    values = var[gene_symbols].astype(str)
    lookup = dict(zip(keys, values, strict=True))
    return {g: lookup.get(g, g) for g in prov["genes"]}


def section_of(sdata: sd_mod.SpatialData, key: str = "stdiff") -> Section:
    """Re-rasterise the input of a previous :func:`superresolve` call on the same grid (plots, metrics).

    For transcripts or gene images the returned section also carries the HR truth.
    """
    prov = (sdata.attrs or {}).get("stdiff", {}).get(key)
    if prov is None:
        raise KeyError(f"No stdiff result {key!r} in sdata.attrs['stdiff']; run sd.tl.superresolve first.")
    src = {"table_key": prov["source_key"]} if prov["source"] == "spots" else {"counts_key": prov["source_key"]}
    return rasterize(
        sdata,
        prov["genes"],
        image_key=prov["image_key"],
        coordinate_system=prov["coordinate_system"],
        lr_um=prov["lr_um"],
        factor=prov["factor"],
        he_scale=prov["config"]["he_scale"],
        spots_as="lr",
        layer=prov.get("layer"),
        allow_non_integer=prov.get("allow_non_integer", False),
        gene_symbols=prov.get("gene_symbols"),
        **src,
    )
