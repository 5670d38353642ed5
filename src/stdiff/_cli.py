"""Command line: ``stdiff demo``, ``stdiff superresolve``, ``stdiff train``, ``stdiff benchmark``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ._constants import Key
from ._utils import logger


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stdiff`` command."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.command == "benchmark":
        from .benchmark import main as bench_main

        return int(bench_main(rest) or 0)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    run = {"demo": _demo, "superresolve": _superresolve, "train": _train}[args.command]
    from ._cli_checks import CliError

    try:
        return run(args)
    except CliError as err:  # refused before the work
        logger.error("%s: error: %s", args.command, err)
        return 2
    except (ValueError, KeyError, FileNotFoundError) as err:  # stdiff's own refusals, raised while it works
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        logger.error("%s: error: %s%s", args.command, message, "" if args.verbose else " (-v shows the traceback)",
                     exc_info=args.verbose)  # fmt: skip
        return 1


def _parser() -> argparse.ArgumentParser:
    """The ``stdiff`` command and its subcommands."""
    parser = argparse.ArgumentParser(prog="stdiff", description="Diff-ST super-resolution of spatial transcriptomics.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="synthetic Visium section → train (cpu preset) → super-resolve → metrics, figure")
    p.add_argument("--out", default="stdiff_demo", help="output folder (default: stdiff_demo)")
    p.add_argument("--platform", choices=("visium", "square"), default="visium",
                   help="visium (default): 55 µm spots, 100 µm apart; square: 100 µm LR pixels")  # fmt: skip
    p.add_argument(
        "--steps", type=int, default=None, help="training step cap of the mean network (default: the preset's)"
    )
    p.add_argument("--max-time", type=float, default=35.0, help="time cap per training stage in seconds (default 35)")
    p.add_argument("--config", default="cpu", help="preset: tiny, cpu or paper")
    p.add_argument("--genes", type=int, default=30, help="number of simulated genes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser(
        "superresolve",
        help="super-resolve a SpatialData zarr or a Space Ranger outs/ folder (default: learn from its own spots)",
    )
    p.add_argument("input", nargs="?", help="input SpatialData .zarr, or a Space Ranger (Visium) outs/ folder")
    p.add_argument(
        "--visium", metavar="OUTS", default=None, help="read a Space Ranger outs/ folder (sd.io.read_visium)"
    )
    p.add_argument(
        "--fullres-image",
        default=None,
        help="with a Space Ranger folder: the full-resolution H&E given to Space Ranger (kept on disk)",
    )
    p.add_argument("--dataset-id", default=None, help="with a Space Ranger folder: the name of its elements")
    p.add_argument("--model", default=None,
                   help="model file written by DiffST.save / stdiff train (default: none, the section teaches itself "
                        "from its own spots and H&E)")  # fmt: skip
    p.add_argument("--genes", default=None, help="comma-separated genes (default: the model's)")
    p.add_argument("--out", required=True, help="output .zarr (refused if it exists, unless --overwrite)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out zarr store, and an earlier stdiff result named --key-added",
    )
    _add_reading(p)
    p.add_argument(
        "--hr-um",
        type=float,
        default=None,
        help="HR pixel in µm (default: 10 for Visium, 20 for legacy ST; a model fixes its own)",
    )
    p.add_argument("--n-samples", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: chosen at training)")
    p.add_argument("--chunk-lr", type=int, default=None, help="LR pixels per chunk side (default: by memory)")
    p.add_argument("--conserve-counts", action="store_true")
    p.add_argument(
        "--quantiles",
        type=_levels,
        default=None,
        help="predictive quantiles to write as images, comma-separated levels, e.g. 0.05,0.95 (<key>_q05, <key>_q95)",
    )
    p.add_argument("--key-added", default=Key.img.DEFAULT)
    _add_run(p)

    p = sub.add_parser("train", help="train a model on one or more SpatialData zarr stores with HR truth")
    p.add_argument("inputs", nargs="+", help="SpatialData .zarr stores")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--genes", default=None, help="comma-separated genes")
    p.add_argument("--factor", type=int, default=None, help="HR pixels per LR pixel (default 10)")
    p.add_argument("--lr-um", type=float, default=None, help="LR pixel in µm (default 100, or the platform's pitch)")
    p.add_argument("--platform", choices=("square", "visium", "st"), default="square",
                   help="what the model will be applied to, simulated from the HR truth "
                        "(default: square aggregates)")  # fmt: skip
    p.add_argument("--config", default="cpu")
    p.add_argument("--steps", type=int, default=None)
    _add_reading(p)
    p.add_argument("--max-time", type=float, default=None, help="time cap per training stage in seconds")
    _add_run(p)

    sub.add_parser("benchmark", help="benchmark harness (see `stdiff benchmark --help`)", add_help=False)
    return parser


def _add_reading(p: argparse.ArgumentParser) -> None:
    """Where the data is in the SpatialData (see ``stdiff.pp.rasterize``)."""
    for option in ("--image-key", "--table-key", "--counts-key", "--coordinate-system"):
        p.add_argument(option, default=None)


def _add_run(p: argparse.ArgumentParser) -> None:
    """Seed, device and progress bars."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")


def _reading(args: argparse.Namespace) -> dict[str, str | None]:
    """The ``_add_reading`` options as keyword arguments."""
    return {
        "image_key": args.image_key,
        "table_key": args.table_key,
        "counts_key": args.counts_key,
        "coordinate_system": args.coordinate_system,
    }


def _run(args: argparse.Namespace) -> dict[str, object]:
    """The ``_add_run`` options as keyword arguments."""
    return {"seed": args.seed, "device": args.device, "progress": not args.no_progress}


def _levels(text: str) -> list[float]:
    """``--quantiles 0.05,0.95`` as a list of floats (their range is checked by :func:`stdiff.tl.superresolve`)."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated levels such as 0.05,0.95, got {text!r}") from None


def _genes(args: argparse.Namespace) -> list[str] | None:
    """``--genes`` split at its commas (``None``: all)."""
    return args.genes.split(",") if args.genes else None


def _demo(args: argparse.Namespace) -> int:
    """``stdiff demo``."""
    from ._demo import demo, print_demo

    t0 = time.perf_counter()
    summary = demo(
        args.out,
        platform=args.platform,
        steps=args.steps,
        max_time_s=args.max_time,
        config=args.config,
        n_genes=args.genes,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print_demo(summary)
    sys.stdout.write(f"demo finished in {time.perf_counter() - t0:.1f} s\n")
    return 0


def _superresolve(args: argparse.Namespace) -> int:
    """``stdiff superresolve``: check everything, read the input, super-resolve it, write it to ``--out``."""
    import stdiff as sd

    from ._cli_checks import check_options, check_out, claim_key_added

    source = _source(args)
    check_options(args)
    out = check_out(args.out, overwrite=args.overwrite, inputs=[source])
    sdata = _read_input(args, source)
    replaced = claim_key_added(sdata, args.key_added, overwrite=args.overwrite)
    if replaced:
        logger.info("Replacing the earlier stdiff result %s (--overwrite).", replaced)
    sd.tl.superresolve(
        sdata,
        _genes(args),
        model=args.model,
        **_reading(args),
        hr_um=args.hr_um,
        n_samples=args.n_samples,
        num_inference_steps=args.steps,
        conserve_counts=args.conserve_counts,
        quantiles=args.quantiles,
        key_added=args.key_added,
        chunk_lr=args.chunk_lr,
        **_run(args),
    )
    sdata.write(out, overwrite=args.overwrite and out.exists())
    record = (sdata.attrs.get(Key.attrs.STDIFF) or {}).get(args.key_added) or {}
    written = [k for k in record.get(Key.prov.IMAGES) or [args.key_added] if k in sdata.images]
    logger.warning("wrote %s (images %s)", out, ", ".join(map(repr, written)))
    return 0


def _source(args: argparse.Namespace) -> str:
    """The input path (positional or ``--visium``), refused when missing or of no known kind."""
    from ._cli_checks import CliError, is_zarr_store
    from .io import is_visium_folder

    if (args.input is None) == (args.visium is None):
        raise CliError("pass the input: a SpatialData .zarr or a Space Ranger outs/ folder (or --visium OUTS), once.")
    path = Path(args.visium or args.input)
    if not path.exists():
        raise CliError(f"the input {path} does not exist.")
    if args.visium is not None and not is_visium_folder(path):
        raise CliError(f"--visium {path} is not a Space Ranger outs/ folder (it has no spatial/ folder).")
    if not is_zarr_store(path) and not is_visium_folder(path):
        raise CliError(f"the input {path} is neither a SpatialData zarr store nor a Space Ranger outs/ folder.")
    if (args.fullres_image or args.dataset_id) and not is_visium_folder(path):
        raise CliError("--fullres-image and --dataset-id apply to a Space Ranger outs/ folder only.")
    if args.fullres_image is not None:
        outs = path if (path / "spatial").is_dir() else path / "outs"
        here, there = Path(args.fullres_image), outs / args.fullres_image
        if not here.exists() and not there.exists():
            raise CliError(f"--fullres-image {args.fullres_image} does not exist (here or in {outs}).")
        args.fullres_image = str(here.resolve()) if here.exists() else args.fullres_image
    return str(path)


def _read_input(args: argparse.Namespace, source: str):
    """The input SpatialData: a zarr store, or a Space Ranger folder through ``sd.io.read_visium``."""
    import spatialdata as sd_mod

    from ._cli_checks import is_zarr_store
    from .io import is_visium_folder, read_visium

    if is_visium_folder(source) and not is_zarr_store(Path(source)):
        return read_visium(source, dataset_id=args.dataset_id, fullres_image_file=args.fullres_image)
    return sd_mod.read_zarr(source)


def _train(args: argparse.Namespace) -> int:
    """``stdiff train``: train on the zarr stores, save the model to ``--out``."""
    import spatialdata as sd_mod

    import stdiff as sd

    sd.tl.train(
        [sd_mod.read_zarr(p) for p in args.inputs],
        _genes(args),
        factor=args.factor,
        lr_um=args.lr_um,
        platform=args.platform,
        config=args.config,
        steps=args.steps,
        **_reading(args),
        **_run(args),
        max_time_s=args.max_time,
        checkpoint=args.out,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
