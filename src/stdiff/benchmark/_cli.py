"""Command line of the benchmark (``stdiff benchmark``, ``python -m stdiff.benchmark``) and its Python twin."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._utils import logger
from ._data import GENE_RULES, PRESETS, DataSpec, input_spec, parse_genes, preset
from ._methods import METHODS, TRACKS
from ._profiles import PROFILES, dataset_settings
from ._profiles import profile as get_profile
from ._report import to_markdown
from ._run import run
from ._splits import SplitSpec


def _list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def run_benchmark(
    dataset: str | None = None,
    *,
    inputs: Sequence[str] | None = None,
    profile: str = "cpu",
    methods: Sequence[str] | None = None,
    tracks: Sequence[str] = TRACKS,
    seeds: Sequence[int] | None = None,
    split: str | None = None,
    train: Sequence[str] | None = None,
    test: Sequence[str] | None = None,
    factors: Sequence[int] | None = None,
    genes: int | str | Sequence[str] | None = None,
    gene_rule: str | None = None,
    lr_um: float | None = None,
    he_um: float | None = None,
    image_key: str | None = None,
    counts_key: str | None = None,
    table_key: str | None = None,
    coordinate_system: str | None = None,
    spots_as: str = "lr",
    gene_symbols: str | None = None,
    platform: str = "square",
    data_dir: str | os.PathLike | None = None,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    command: str | None = None,
    validate: bool = False,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Benchmark a built-in ``dataset`` (a preset) or SpatialData ``inputs``; see ``stdiff benchmark --help``.

    ``inputs`` are ``.zarr`` stores split by region (``split="x:0.5"``) or by store (``train``/``test``
    names or paths). The presets are specs of the same code path: ``dataset="merfish"`` equals
    ``inputs=[merfish.zarr], split="x:0.5", lr_um=50, factors=[5], genes=50`` (cpu profile).
    ``overrides`` change fields of the profile's :class:`~stdiff.models.DiffSTConfig` (``--set``).
    ``platform`` (``--platform``) makes the LR input of an HR-reference dataset from simulated spots
    (``"visium"``, ``"st"``; a lattice per seed) instead of gap-free square aggregates (``"square"``,
    the default), and scores every HR pixel of the tissue, gaps between spots included.
    Returns the result dict (also written to ``out`` and ``out`` with ``.md``).
    """
    if (dataset is None) == (not inputs):
        raise ValueError("Give either a built-in dataset (--dataset) or --input stores, not both or neither.")
    genes = genes if not isinstance(genes, list | tuple) else list(genes)
    genes = parse_genes(genes) if isinstance(genes, str | int) or genes is None else genes
    if dataset is not None:
        spec = _preset_spec(dataset, profile, split=split, gene_rule=gene_rule, factors=factors, genes=genes,
                            train=train, test=test, data_dir=data_dir)  # fmt: skip
    else:
        reading = dict(image_key=image_key, counts_key=counts_key, table_key=table_key,
                       coordinate_system=coordinate_system, spots_as=spots_as, gene_symbols=gene_symbols)  # fmt: skip
        spec = _inputs_spec(inputs, profile, split=split, train=train, test=test, factors=factors, lr_um=lr_um,
                              he_um=he_um, genes=genes, gene_rule=gene_rule, reading=reading)  # fmt: skip
    spec = spec.with_platform(platform)
    if command is None:
        command = f"stdiff benchmark {'--dataset ' + dataset if dataset else '--input ' + ' --input '.join(inputs)}"
        command += f" --platform {platform}" if platform != "square" else ""
    return run(spec, profile=profile, methods=methods, tracks=tracks, seeds=seeds, device=device, out=out,
               command=command, validate=validate, overrides=overrides)  # fmt: skip


def _preset_spec(dataset: str, profile: str, *, split: str | None, gene_rule: str | None, **kw: Any) -> DataSpec:
    """The spec of a built-in dataset in ``profile``, with ``--split`` / ``--gene-rule`` when given."""
    settings = dataset_settings(profile, dataset) if dataset in PRESETS else {}
    spec = preset(dataset, settings, **kw)
    if split is not None:
        spec.split = SplitSpec.parse(split)
    if gene_rule:
        spec.gene_rule = gene_rule
    return spec


def _inputs_spec(
    inputs: Sequence[str],
    profile: str,
    *,
    split: str | None,
    train: Sequence[str] | None,
    test: Sequence[str] | None,
    factors: Sequence[int] | None,
    lr_um: float | None,
    he_um: float | None,
    genes: int | list[str] | None,
    gene_rule: str | None,
    reading: dict[str, Any],
) -> DataSpec:
    """The spec of ``--input`` stores: defaults for the LR pixel (100 µm), factor (10) and histology pixel.

    ``reading`` holds the rasterisation options of :class:`~stdiff.benchmark._data.DataSpec`.
    """
    if split is None and not (train or test):
        raise ValueError("--input needs a split: --split x:0.5 (or y:...), or --train a.zarr --test b.zarr.")
    prof = get_profile(profile)
    lr = float(lr_um if lr_um is not None else 100.0)
    fs = [int(f) for f in (factors or [10])]
    hu, he_how = float(he_um) if he_um is not None else 0.0, "given (--he-um)"
    if he_um is None:
        hu, he_how = default_he_um(inputs[0], lr / fs[0], prof, reading["image_key"], reading["coordinate_system"])
    spec = input_spec(
        inputs, split=SplitSpec.parse(split, train=_list(train) or (), test=_list(test) or ()), factors=fs, lr_um=lr,
        he_um=hu, genes=genes, gene_rule=gene_rule or "variance", **reading,
    )  # fmt: skip
    spec.info["he_um_how"] = f"{hu:g} µm: {he_how}"
    return spec


def default_he_um(path: str, hr_um: float, prof: dict[str, Any], image_key: str | None, cs: str | None):
    """``(he_um, how)`` for ``--input`` without ``--he-um``.

    ``hr_um / he_scale`` of the profile, at most its ``max_he_um``, never finer than the image's own
    pixels (read from the first input).
    """
    import spatialdata

    from .._spatial import find_image, resolve_coordinate_system
    from ..pp import image_um, micrometre_systems

    sdata = spatialdata.read_zarr(path)
    key = find_image(sdata, image_key)
    if cs is None and len(micrometre_systems(sdata)) == 1:
        cs = next(iter(micrometre_systems(sdata)))
    cs = resolve_coordinate_system(sdata, cs, [key])
    own = image_um(sdata, key, cs)
    target = min(hr_um / int(prof["he_scale"]), float(prof["max_he_um"]))
    he = max(own, target)
    how = (f"derived: the HR pixel ({hr_um:g} µm) / {int(prof['he_scale'])}, at most {prof['max_he_um']:g} µm, "
           f"not finer than the image's {own:.3g} µm pixels")  # fmt: skip
    return he, how


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``stdiff benchmark``."""
    p = argparse.ArgumentParser(
        prog="stdiff benchmark",
        description="Benchmark stdiff against baselines on held-out tissue, in a reference-trained and a "
        "self-supervised track (per-gene PCC, RMSE, SSIM of the mean; CRPS, coverage, spread-skill of the samples; "
        "timings; memory). Writes --out (JSON) and the same path with .md.",
    )
    d = p.add_argument_group("data (a built-in preset, or any SpatialData)")
    d.add_argument("--dataset", choices=(*PRESETS, "visium_mini"), default=None,
                   help="built-in dataset preset (visium_mini: the spot hold-out track only)")
    d.add_argument("--input", action="append", default=None, metavar="ZARR",
                   help="a SpatialData .zarr store (repeat for several sections)")  # fmt: skip
    d.add_argument("--image-key", default=None, help="histology image element (default: the only image)")
    d.add_argument("--counts-key", default=None, help="points or gene-image element with the expression")
    d.add_argument("--table-key", default=None, help="table annotating spot shapes")
    d.add_argument("--coordinate-system", default=None, help="coordinate system in µm")
    d.add_argument("--spots-as", choices=("lr", "hr"), default="lr", help="spots are the HR truth with 'hr'")
    d.add_argument("--platform", choices=("square", "visium", "st"), default="square",
                   help="how the LR input of an HR-reference dataset is measured: square aggregates (default), "
                        "or spots of a simulated Visium / legacy ST lattice (gaps unmeasured; every HR pixel "
                        "scored)")  # fmt: skip
    d.add_argument("--lr-um", type=float, default=None, help="LR pixel size in µm (--input; default 100)")
    d.add_argument("--he-um", type=float, default=None,
                   help="histology pixel size in µm (--input; default: the HR pixel / the profile's he_scale, at most "
                        "the profile's max_he_um, not finer than the image; the report says which)")  # fmt: skip
    d.add_argument("--factor", default=None, help="super-resolution factor(s), comma separated")
    d.add_argument("--genes", default=None, help="a number (top-N by --gene-rule on the training data) or a list")
    d.add_argument("--gene-symbols", default=None,
                   help="var column of the table that --genes and the report use (e.g. symbol, when var_names are "
                        "Ensembl ids)")  # fmt: skip
    d.add_argument("--gene-rule", choices=(*GENE_RULES, "counts"), default=None,
                   help="variance (default for --input) | hvg (scanpy, her2st) | panel (all genes)")  # fmt: skip
    d.add_argument("--data-dir", default=None, help="her2st / merfish data folder of the presets")
    s = p.add_argument_group("split")
    s.add_argument("--split", default=None, help="region split 'x:0.5' (left half trains, right tests) or 'y:0.3'")
    s.add_argument("--train", default=None, help="training sections (her2st names, or --input stores), comma list")
    s.add_argument("--test", default=None, help="test sections, comma list")
    r = p.add_argument_group("run")
    r.add_argument("--profile", choices=sorted(PROFILES), default="cpu", help="tiny | cpu | gpu (default cpu)")
    r.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)} (default all)")
    r.add_argument("--tracks", "--track", default=",".join(TRACKS),
                   help="reference,self_supervised (default both), or spot-holdout: hide spots of real sections and "
                        "predict them (her2st, visium_mini or --input stores)")  # fmt: skip
    r.add_argument("--folds", type=int, default=10, help="spot-holdout: folds per seed (each hides 1/folds of the spots)")
    r.add_argument("--hr-um", type=float, default=None, help="spot-holdout: HR pixel in µm (default: the platform's)")
    r.add_argument("--seeds", default=None, help="comma-separated seeds (default: the profile's)")
    r.add_argument("--seed", type=int, default=None, help="a single seed (same as --seeds N)")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    r.add_argument("--out", default=None, help="output JSON (default benchmarks/results/{dataset}_{profile}.json)")
    r.add_argument("--validate", action="store_true",
                   help="evaluate on held-out training data instead of the test data (to choose settings)")  # fmt: skip
    r.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="change a model config field for every learned method, e.g. --set mean.gene_dim=8 (repeatable; "
                        "with --validate, to compare settings without the test data)")  # fmt: skip
    return p


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["mean.gene_dim=8", "components.use_cross_attention=false"]`` → config overrides, typed like the fields.

    ``FIELD`` is a top-level field of :class:`~stdiff.models.DiffSTConfig` or the dotted path of a nested one.
    """
    import ast

    from ..models import DiffSTConfig

    defaults = DiffSTConfig()
    names = sorted(DiffSTConfig.paths())
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in names:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {names}.")
        current = defaults.get(key)
        if isinstance(current, bool):
            if raw.strip().lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {item!r}: {key} takes true or false.")
            value: Any = raw.strip().lower() in ("true", "1")
        elif isinstance(current, str):
            value = raw.strip()
        else:
            try:
                value = ast.literal_eval(raw.strip())
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"--set {item!r}: cannot read {raw!r} as a {type(current).__name__}.") from e
            if isinstance(current, float) and isinstance(value, int):
                value = float(value)
            if isinstance(current, tuple) and isinstance(value, list | tuple | int):
                value = tuple(value) if isinstance(value, list | tuple) else (value,)
            if not isinstance(value, type(current)):
                raise ValueError(f"--set {item!r}: {key} takes a {type(current).__name__}.")
        out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    import logging

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers and not logger.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    methods = _list(args.methods)
    if methods == ["all"]:
        methods = None
    seeds = [int(x) for x in _list(args.seeds)] if args.seeds else ([args.seed] if args.seed is not None else None)
    tracks = [t.replace("-", "_") for t in _list(args.tracks)]
    if "spot_holdout" in tracks:
        return _holdout_main(args, methods, seeds, argv)
    dataset = args.dataset or (None if args.input else "synthetic")
    res = run_benchmark(
        dataset, inputs=args.input, profile=args.profile, methods=methods,
        tracks=tracks, seeds=seeds, split=args.split, train=_list(args.train), test=_list(args.test),
        factors=[int(f) for f in _list(args.factor)] if args.factor else None, genes=args.genes,
        gene_rule=args.gene_rule, lr_um=args.lr_um, he_um=args.he_um, image_key=args.image_key,
        counts_key=args.counts_key, table_key=args.table_key, coordinate_system=args.coordinate_system,
        spots_as=args.spots_as, gene_symbols=args.gene_symbols, platform=args.platform, data_dir=args.data_dir,
        device=args.device, out=args.out,
        command=" ".join(["stdiff benchmark", *argv]),
        validate=args.validate, overrides=parse_overrides(args.set) or None,
    )  # fmt: skip
    tag = res["dataset"] if res.get("platform", "square") == "square" else f"{res['dataset']}_{res['platform']}"
    out = Path(args.out or f"benchmarks/results/{tag}_{args.profile}.json")
    print(to_markdown(res))
    print(f"Wrote {out} and {out.with_suffix('.md')}.")
    return 0


def _holdout_main(args: argparse.Namespace, methods: list[str] | None, seeds: list[int] | None, argv: list[str]) -> int:
    """``--track spot-holdout``: :func:`stdiff.benchmark._holdout_run.run_holdout`."""
    from ._holdout_run import holdout_markdown, run_holdout

    tag = args.dataset or "input"
    out = Path(args.out or f"benchmarks/results/{tag}_spot_holdout.json")
    res = run_holdout(
        args.dataset, inputs=args.input, sections=_list(args.test) or None, methods=methods,
        seeds=seeds or (0, 1, 2), folds=args.folds, genes=args.genes, gene_rule=args.gene_rule or "counts",
        table_key=args.table_key, hr_um=args.hr_um, data_dir=args.data_dir, out=out,
        command=" ".join(["stdiff benchmark", *argv]),
    )  # fmt: skip
    print(holdout_markdown(res))
    print(f"Wrote {out} and {out.with_suffix('.md')}.")
    return 0
