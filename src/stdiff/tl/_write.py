"""The result of :func:`~stdiff.tl.superresolve` as SpatialData elements: its provenance and its images."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._constants import Key
from .._spatial import composed_transform, pyramid_scale_factors
from .._utils import logger
from .._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod

    from ..models import DiffST, SelfSupervisedEnsemble
    from ..pp import InputGrid

P = Key.prov


def provenance(
    model: DiffST | SelfSupervisedEnsemble,
    inp: InputGrid,
    *,
    genes: list[str],
    trained_here: bool,
    layer: str | None,
    allow_non_integer: bool,
    gene_symbols: str | None,
    n_samples: int | None,
    num_inference_steps: int | None,
    seed: int,
    conserve_counts: bool,
) -> dict[str, Any]:
    """What made the result: the model, the grid, the input read, the sampler and the call's options."""
    grid = inp.grid
    return {
        **model.provenance(num_inference_steps=num_inference_steps),
        P.TRAINED_HERE: trained_here,
        P.CONFIG: model.config.to_dict(),
        P.GENES: genes,
        P.FACTOR: grid.factor,
        P.LR_UM: grid.lr_um,
        P.HR_UM: grid.lr_um / grid.factor,
        P.SPOTS: None if inp.geometry is None else inp.geometry.to_dict(),
        P.ORIGIN: list(grid.origin),
        P.COORDINATE_SYSTEM: inp.coordinate_system,
        P.IMAGE_KEY: inp.image_key,
        P.SOURCE: inp.source,
        P.SOURCE_KEY: inp.source_key,
        P.LAYER: layer,
        P.ALLOW_NON_INTEGER: bool(allow_non_integer),
        P.GENE_SYMBOLS: gene_symbols,
        P.N_SAMPLES: int(model.config.sampler.n_samples if n_samples is None else n_samples),
        P.SEED: int(seed),
        P.CONSERVE_COUNTS: bool(conserve_counts),
        P.UNITS: "counts per HR pixel",
        P.STDIFF_VERSION: __version__,
    }


def scale_factors_for(shape: tuple[int, int], requested: Sequence[int] | None) -> list[int] | None:
    """The output pyramid: ``requested``, or halvings while the image stays ≥ 64 px (at most three)."""
    if requested is not None:
        return list(requested) or None
    return pyramid_scale_factors(shape, max_factor=8, min_size=64, multiscale=False) or None


def result_images(
    sdata: sd_mod.SpatialData,
    inp: InputGrid,
    mean: Any,
    std: Any | None,
    *,
    key_added: str,
    genes: list[str],
    prov: dict[str, Any],
    scale_factors: Sequence[int] | None,
) -> dict[str, Any]:
    """The mean (and std) image elements, overlaying the histology image in each of its coordinate systems."""
    from spatialdata.models import Image2DModel

    transforms = composed_transform(
        sdata, inp.image_key, inp.coordinate_system, origin=inp.grid.origin, pixel_um=inp.grid.hr_um
    )
    sf = scale_factors_for(mean.shape[-2:], scale_factors)
    outputs = {key_added: ("mean", mean)}
    if std is not None:
        outputs[Key.img.std(key_added)] = ("std", std)
    images = {}
    for key, (kind, arr) in outputs.items():
        el = Image2DModel.parse(arr, dims=("c", "y", "x"), c_coords=genes, transformations=transforms, scale_factors=sf)
        el.attrs[Key.attrs.STDIFF] = dict(prov, **{Key.attrs.KIND: kind})
        images[key] = el
    return images


def store_result(
    target: sd_mod.SpatialData, images: dict[str, Any], *, key_added: str, prov: dict[str, Any], t0: float
) -> None:
    """Write ``images`` and the provenance into ``target``; a std image left from an earlier call is removed."""
    for key in images:
        if key in target.images:
            logger.info("Overwriting image element %r.", key)
    stale = Key.img.std(key_added)
    if stale not in images and stale in target.images:  # a spread of an earlier call would not belong to this mean
        del target.images[stale]
    for key, el in images.items():
        target.images[key] = el
    attrs = dict(target.attrs or {})
    store = dict(attrs.get(Key.attrs.STDIFF, {}) or {})
    store[key_added] = dict(prov, **{Key.attrs.SECONDS: round(time.perf_counter() - t0, 3)})
    attrs[Key.attrs.STDIFF] = store
    target.attrs = attrs
