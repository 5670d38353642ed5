"""What ``stdiff superresolve`` checks before any work: the input, the output store, the options, the result's name.

Every check here runs before the section is read or the model fitted, so a refusal costs nothing; a
refusal is a :class:`CliError` whose message names what the user passed and the fix. Nothing on disk
or in the user's SpatialData is changed by a check (a previous stdiff result that ``--overwrite``
replaces is dropped from the in-memory SpatialData only, and the input store is never written).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._constants import Key
from ._spatial import channel_names, image_levels, result_provenance, valid_element_name

if TYPE_CHECKING:  # pragma: no cover
    import spatialdata as sd_mod

ELEMENT_KINDS = ("images", "labels", "points", "shapes", "tables")


class CliError(ValueError):
    """A refusal of the command line, made before the work."""


def is_zarr_store(path: Path) -> bool:
    """Whether ``path`` is a zarr store (v3 ``zarr.json`` or v2 ``.zgroup`` / ``.zattrs``)."""
    return path.is_dir() and any((path / f).is_file() for f in ("zarr.json", ".zgroup", ".zattrs"))


def check_out(out: str, *, overwrite: bool, inputs: list[str]) -> Path:
    """The ``--out`` path, refused when it would destroy something: an input, an existing store, a non-store.

    An existing ``--out`` is replaced only with ``overwrite``, and only when it is a zarr store; the
    output may not be, contain or lie inside an input; its folder must be writable.
    """
    path = Path(out).expanduser()
    target = path.resolve()
    for inp in inputs:
        src = Path(inp).expanduser().resolve()
        if target == src or src in target.parents or target in src.parents:
            raise CliError(
                f"--out {out} {'is' if target == src else 'overlaps'} the input {inp}: the input is read lazily "
                "while the result is written, so it cannot be replaced. Write the result to another path."
            )
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise CliError(f"--out {out} already exists; pass --overwrite to replace it, or choose another --out.")
        if not is_zarr_store(path):
            raise CliError(
                f"--out {out} exists and is not a zarr store ({'a file' if path.is_file() else 'a folder'}); stdiff "
                "replaces only a zarr store, even with --overwrite. Choose another --out."
            )
    parent = next((p for p in target.parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CliError(f"--out {out}: the folder {parent} is not a writable folder. Choose another --out.")
    return path


def check_options(args: Any) -> None:
    """Refuse numbers and names the run would refuse only later (after the fit)."""
    check_element_name(args.key_added, "--key-added")
    if getattr(args, "dataset_id", None) is not None:
        check_element_name(args.dataset_id, "--dataset-id")
    check_element_name(Key.img.std(args.key_added), "--key-added (its standard deviation image)")
    for option, value in (("--chunk-lr", args.chunk_lr), ("--n-samples", args.n_samples), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise CliError(f"{option} must be at least 1, got {value}.")
    if args.hr_um is not None and not (math.isfinite(args.hr_um) and args.hr_um > 0):
        raise CliError(f"--hr-um must be a positive number of µm, got {args.hr_um}.")
    if args.genes is not None:
        genes = args.genes.split(",")
        if any(not g.strip() for g in genes):
            raise CliError(
                f"--genes {args.genes!r} has an empty name; pass names separated by commas, e.g. EPCAM,PTPRC."
            )
        repeated = sorted({g for g in genes if genes.count(g) > 1})
        if repeated:
            raise CliError(f"--genes names {repeated} more than once.")
    if args.model is not None and not Path(args.model).is_file():
        raise CliError(f"--model {args.model} is not a file; pass a model written by `stdiff train` or DiffST.save.")


def check_element_name(name: str, option: str) -> None:
    """Refuse a name spatialdata cannot give an element (letters, digits, ``_``, ``-``, ``.``; not ``__…``)."""
    if not valid_element_name(name):
        raise CliError(
            f"{option} {name!r} is not a valid element name: use letters, digits, '_', '-' and '.' only (not starting "
            "with '__')."
        )


def previous_result(sdata: sd_mod.SpatialData, key: str) -> set[str]:
    """The elements of an earlier stdiff result ``key`` in ``sdata``: its mean, and its std if it matches the mean.

    A mean is stdiff's when ``sdata.attrs["stdiff"]`` holds its provenance; a ``{key}_std`` image is
    counted as its standard deviation only when it has the mean's genes and shape (else it is the
    user's own image that happens to have that name).
    """
    if key not in sdata.images or not result_provenance(sdata, key, required=False):
        return set()
    owned = {key}
    std = Key.img.std(key)
    if std in sdata.images:
        mean_el, std_el = sdata.images[key], sdata.images[std]
        same_shape = image_levels(mean_el)[0].shape == image_levels(std_el)[0].shape
        if same_shape and channel_names(mean_el) == channel_names(std_el):
            owned.add(std)
    return owned


def claim_key_added(sdata: sd_mod.SpatialData, key: str, *, overwrite: bool) -> list[str]:
    """Make room for the result ``key`` (and ``{key}_std``) in ``sdata``, or refuse.

    A name held by one of the user's elements (any kind, compared as spatialdata does, ignoring case)
    is refused, with or without ``overwrite``; an earlier stdiff result of that name is refused
    without ``overwrite`` and with it dropped from the in-memory ``sdata`` (the store it was read
    from is not touched). Returns the names dropped.
    """
    owned = previous_result(sdata, key)
    names = {name.lower(): (kind, name) for kind in ELEMENT_KINDS for name in getattr(sdata, kind)}
    for wanted in (key, Key.img.std(key)):
        kind, name = names.get(wanted.lower(), (None, None))
        if name is not None and name not in owned:
            raise CliError(
                f"--key-added {key!r} would write {wanted!r}, but the input has its own {kind[:-1]} {name!r} "
                "(not a stdiff result); it is never replaced. Choose another --key-added."
            )
    if owned and not overwrite:
        raise CliError(
            f"The input already holds the stdiff result {key!r} (images {sorted(owned)}); pass --overwrite to "
            "replace it, or choose another --key-added."
        )
    for name in owned:
        del sdata.images[name]
    if owned:
        attrs = dict(sdata.attrs or {})
        attrs[Key.attrs.STDIFF] = {k: v for k, v in (attrs.get(Key.attrs.STDIFF) or {}).items() if k != key}
        sdata.attrs = attrs
    return sorted(owned)
