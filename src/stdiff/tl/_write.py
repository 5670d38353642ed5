"""The result of :func:`~stdiff.tl.superresolve` as SpatialData elements: its provenance and its images.

Names that belong to the user are never overwritten: :func:`check_key_added` refuses (before any work)
a ``key_added`` whose mean, std or quantile image would replace an element stdiff did not write, and
replaces an earlier stdiff result only with ``overwrite=True``; :func:`store_result` removes a std or
quantile image left from an earlier call only when that call's provenance says stdiff wrote it.
"""

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
    quantiles: Sequence[float] = (),
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
        P.QUANTILES: [float(q) for q in quantiles],
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
    quantiles: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The mean, std and quantile image elements, overlaying the histology image in each of its coordinate systems.

    ``quantiles`` is ``{Key.pred.quantile(q): map}`` (e.g. ``"q05"``); each map is written to
    ``f"{key_added}_q05"`` with the mean's transform, pyramid and provenance, and ``kind`` its name.
    """
    from spatialdata.models import Image2DModel

    transforms = composed_transform(
        sdata, inp.image_key, inp.coordinate_system, origin=inp.grid.origin, pixel_um=inp.grid.hr_um
    )
    sf = scale_factors_for(mean.shape[-2:], scale_factors)
    outputs = {key_added: ("mean", mean)}
    if std is not None:
        outputs[Key.img.std(key_added)] = ("std", std)
    for name, arr in (quantiles or {}).items():
        outputs[f"{key_added}_{name}"] = (name, arr)
    images = {}
    for key, (kind, arr) in outputs.items():
        el = Image2DModel.parse(arr, dims=("c", "y", "x"), c_coords=genes, transformations=transforms, scale_factors=sf)
        el.attrs[Key.attrs.STDIFF] = dict(prov, **{Key.attrs.KIND: kind})
        images[key] = el
    return images


def written_by_stdiff(sdata: sd_mod.SpatialData, name: str) -> bool:
    """Whether image ``name`` is one :func:`~stdiff.tl.superresolve` wrote, as its provenance says.

    The element's own ``attrs`` (in memory) or ``sdata.attrs["stdiff"]``, which survives a zarr round
    trip: a record lists the images it wrote (a record older than that field vouches for its mean, and
    for a std image with the result's genes).
    """
    if name not in sdata.images:
        return False
    own = (sdata.images[name].attrs or {}).get(Key.attrs.STDIFF)
    if isinstance(own, dict):
        kind = own.get(Key.attrs.KIND)
        if kind in ("mean", "std") or Key.pred.is_quantile(kind):
            return True
    from .._spatial import channel_names

    for key, record in ((sdata.attrs or {}).get(Key.attrs.STDIFF, {}) or {}).items():
        record = record if isinstance(record, dict) else {}
        if record.get(P.IMAGES) is not None:
            if name in record[P.IMAGES]:
                return True
        elif name == key or (  # an older record: its mean, and a std with the result's genes
            name == Key.img.std(key) and channel_names(sdata.images[name]) == list(record.get(P.GENES) or [None])
        ):
            return True
    return False


def result_names(key_added: str, quantiles: Sequence[float] = ()) -> list[str]:
    """The images a result ``key_added`` may write: the mean, the std and one per quantile level."""
    return [key_added, Key.img.std(key_added), *(Key.img.quantile(key_added, q) for q in quantiles)]


def _free_name(sdata: sd_mod.SpatialData, base: str, quantiles: Sequence[float] = ()) -> str:
    """A ``key_added`` whose image names (:func:`result_names`) are all free in ``sdata`` (to suggest one)."""
    taken = {name.lower() for _, name, _ in sdata.gen_elements()}
    for candidate in (base, f"{base}_stdiff", *(f"{base}_stdiff{i}" for i in range(2, 100))):
        if not any(name.lower() in taken for name in result_names(candidate, quantiles)):
            return candidate
    return f"{base}_{int(time.time())}"


def check_key_added(
    sdata: sd_mod.SpatialData, key_added: Any, *, overwrite: bool, quantiles: Sequence[float] = ()
) -> None:
    """Refuse a ``key_added`` that is not a valid element name or would replace an element the user owns.

    Its images (:func:`result_names`: ``key_added``, ``key_added + "_std"`` and one per level of
    ``quantiles``, e.g. ``key_added + "_q05"``) may only replace images stdiff wrote, and those only
    with ``overwrite=True``; spatialdata also forbids names that differ only in case across elements.
    """
    from spatialdata._core.validation import check_valid_name

    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string (the name of the output image), got {key_added!r}.")
    names = result_names(key_added, quantiles)
    for name in names:
        try:
            check_valid_name(name)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"key_added={key_added!r} cannot name a SpatialData element ({name!r}: {err}) Use letters, digits, "
                f"'_', '-' and '.', e.g. key_added={_free_name(sdata, 'stdiff', quantiles)!r}."
            ) from None
    existing = {name: kind for kind, name, _ in sdata.gen_elements()}
    for name in names:
        for other in (n for n in existing if n.lower() == name.lower()):
            kind = existing[other]
            free = _free_name(sdata, key_added, quantiles)
            if other == name and kind == "images" and written_by_stdiff(sdata, name):
                if not overwrite:
                    raise ValueError(
                        f"sdata already holds image {name!r} from an earlier stdiff.tl.superresolve call. Pass "
                        f"overwrite=True to replace that result, or key_added={free!r} to keep both."
                    )
                continue
            raise ValueError(
                f"key_added={key_added!r} would write image {name!r}, but sdata already has a {kind[:-1]} element "
                f"{other!r} that stdiff did not write; stdiff never replaces your elements (overwrite=True only "
                f"replaces its own results). Pass another name, e.g. key_added={free!r}."
            )


def store_result(
    target: sd_mod.SpatialData, images: dict[str, Any], *, key_added: str, prov: dict[str, Any], t0: float
) -> None:
    """Write ``images`` and the provenance into ``target``.

    A std or quantile image left from an earlier call of the same ``key_added`` (and not written now)
    is removed only when stdiff wrote it: an earlier spread does not belong to this mean.
    """
    for key in images:
        if key in target.images:
            logger.info("Replacing image %r of an earlier stdiff result (overwrite=True).", key)
    earlier = ((target.attrs or {}).get(Key.attrs.STDIFF, {}) or {}).get(key_added)
    listed = (earlier.get(P.IMAGES) if isinstance(earlier, dict) else None) or []
    for stale in dict.fromkeys([Key.img.std(key_added), *listed]):
        if stale != key_added and stale not in images and written_by_stdiff(target, stale):
            logger.info("Removing image %r of the earlier result %r: this call did not write it.", stale, key_added)
            del target.images[stale]
    for key, el in images.items():
        target.images[key] = el
    attrs = dict(target.attrs or {})
    store = dict(attrs.get(Key.attrs.STDIFF, {}) or {})
    store[key_added] = dict(prov, **{Key.attrs.SECONDS: round(time.perf_counter() - t0, 3), P.IMAGES: list(images)})
    attrs[Key.attrs.STDIFF] = store
    target.attrs = attrs
