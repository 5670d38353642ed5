"""Command line: ``stdiff demo``, ``stdiff superresolve``, ``stdiff train``, ``stdiff benchmark``."""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
import warnings
from pathlib import Path

from ._utils import logger


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def demo(
    out: str | Path = "stdiff_demo",
    *,
    size_um: tuple[float, float] = (2400.0, 1600.0),
    n_genes: int = 30,
    factor: int = 10,
    steps: int | None = None,
    config: str = "cpu",
    max_time_s: float = 40.0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """The README's main job: synthetic tissue → train → super-resolve → held-out metrics, figure, zarr.

    The model is trained on the left two thirds of the tissue only; metrics are computed on the right
    third (held out), against the LR map spread over the tissue pixels (mask-aware nearest) and bicubic
    upsampling, on the normalised scale, on the truth mask; plus the coverage of the samples' 90% interval.
    Each training stage stops early on validation data or after ``max_time_s`` seconds.
    """
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    import stdiff as sd
    from stdiff.benchmark._metrics import evaluate, summarize
    from stdiff.models import DiffST, DiffSTConfig, upsample_lr

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    sdata = sd.datasets.synthetic_tissue(size_um=size_um, n_genes=n_genes, seed=seed)
    timings["simulate_s"] = time.perf_counter() - t
    cfg = DiffSTConfig.preset(config)
    t = time.perf_counter()
    section = sd.pp.rasterize(
        sdata, counts_key="hr_counts", image_key="he", lr_um=100.0, factor=factor, he_scale=cfg.he_scale
    )
    h, w = section.shape_lr
    split = (2 * w) // 3
    train_sec = section.crop_lr(slice(None), slice(0, split), name="train")
    test_sec = section.crop_lr(slice(None), slice(split, None), name="held-out")
    timings["rasterize_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model = DiffST.setup(train_sec, cfg)
    model.train(train_sec, steps=steps, max_time_s=max_time_s, seed=seed, progress=progress)
    timings["train_s"] = time.perf_counter() - t
    model.save(out / "model.pt")
    t = time.perf_counter()
    sd.tl.superresolve(sdata, model=model, counts_key="hr_counts", image_key="he", seed=seed, progress=progress)
    timings["superresolve_s"] = time.perf_counter() - t

    # held-out metrics on the normalised scale, on tissue
    norm = model.normalizer
    pred = np.asarray(
        sdata.images["stdiff"].data
        if hasattr(sdata.images["stdiff"], "data")
        else sdata.images["stdiff"]["scale0"].ds["image"].data
    )
    pred = np.asarray(pred.compute() if hasattr(pred, "compute") else pred)
    f = factor
    pred_test = pred[:, :, split * f :]
    truth_z = norm.transform(test_sec.hr)
    mask = test_sec.truth_mask
    bicubic = upsample_lr(norm.transform(test_sec.lr, factor=f), f).numpy()
    nearest = norm.transform(sd.pp.lr_per_tissue_pixel(test_sec))
    genes = model.genes
    results = {
        "stdiff": summarize(evaluate(norm.transform(pred_test), truth_z, mask, genes)),
        "nearest": summarize(evaluate(nearest, truth_z, mask, genes)),
        "bicubic": summarize(evaluate(bicubic, truth_z, mask, genes)),
    }
    # honesty of the spread: the central 90% interval of the samples on the held-out tissue pixels
    held = model.predict_section(test_sec, seed=seed, progress=False)
    inside = (test_sec.hr >= held["q05"] - 1e-6) & (test_sec.hr <= held["q95"] + 1e-6)
    coverage90 = float(inside[:, mask].mean())
    fig_genes = [g for g in ("ERBB2", "EPCAM", "PTPRC", "COL1A1") if g in genes][:3] or genes[:3]
    sd.pl.superresolution(sdata, fig_genes, save=out / "superresolution.png")
    with warnings.catch_warnings():  # zarr's notice about its future sharding default, once per array
        warnings.filterwarnings("ignore", message=".*autosharding.*", category=UserWarning)
        sdata.write(out / "demo.zarr", overwrite=True)
    summary = {
        "held_out": results,
        "coverage90": round(coverage90, 3),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "genes": len(genes),
        "train_steps": model.train_info.get("steps"),
        "outputs": {
            "figure": str(out / "superresolution.png"),
            "zarr": str(out / "demo.zarr"),
            "model": str(out / "model.pt"),
        },
    }
    (out / "demo_metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def _print_demo(summary: dict) -> None:
    res = summary["held_out"]
    lines = [
        "",
        "Held-out tissue (right third), per-gene metrics on the normalised scale "
        "(nearest = LR counts spread over the tissue pixels of each block):",
        f"{'method':<10} {'mean PCC':>9} {'median PCC':>11} {'mean RMSE':>10} {'mean SSIM':>10}",
    ]
    for name, r in res.items():
        lines.append(
            f"{name:<10} {r['mean']['pcc']:>9.3f} {r['median']['pcc']:>11.3f} {r['mean']['rmse']:>10.3f} "
            f"{r['mean']['ssim']:>10.3f}"
        )
    lines.append(f"stdiff central 90% interval holds the truth for {summary['coverage90']:.0%} of held-out pixels")
    lines.append(f"timings (s): {summary['timings_s']}   peak RSS: {summary['peak_rss_mb']:.0f} MB")
    lines.append(f"wrote: {summary['outputs']}")
    sys.stdout.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stdiff`` command."""
    parser = argparse.ArgumentParser(prog="stdiff", description="Diff-ST super-resolution of spatial transcriptomics.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="synthetic tissue → train (cpu preset) → super-resolve → metrics, figure, zarr")
    p.add_argument("--out", default="stdiff_demo", help="output folder (default: stdiff_demo)")
    p.add_argument(
        "--steps", type=int, default=None, help="training step cap of the mean network (default: the preset's)"
    )
    p.add_argument("--max-time", type=float, default=40.0, help="time cap per training stage in seconds (default 40)")
    p.add_argument("--config", default="cpu", help="preset: tiny, cpu or paper")
    p.add_argument("--genes", type=int, default=30, help="number of simulated genes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("superresolve", help="super-resolve a SpatialData zarr with a trained model")
    p.add_argument("input", help="input SpatialData .zarr")
    p.add_argument("--model", required=True, help="model file written by DiffST.save / stdiff train")
    p.add_argument("--genes", default=None, help="comma-separated genes (default: the model's)")
    p.add_argument("--out", required=True, help="output .zarr")
    p.add_argument("--image-key", default=None)
    p.add_argument("--table-key", default=None)
    p.add_argument("--counts-key", default=None)
    p.add_argument("--coordinate-system", default=None)
    p.add_argument("--n-samples", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: chosen at training)")
    p.add_argument("--conserve-counts", action="store_true")
    p.add_argument("--key-added", default="stdiff")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")

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
    p.add_argument("--image-key", default=None)
    p.add_argument("--counts-key", default=None)
    p.add_argument("--table-key", default=None)
    p.add_argument("--coordinate-system", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-time", type=float, default=None, help="time cap per training stage in seconds")
    p.add_argument("--no-progress", action="store_true")

    sub.add_parser("benchmark", help="benchmark harness (see `stdiff benchmark --help`)", add_help=False)

    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.command == "benchmark":
        from .benchmark import main as bench_main

        return int(bench_main(rest) or 0)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        t0 = time.perf_counter()
        summary = demo(
            args.out,
            steps=args.steps,
            max_time_s=args.max_time,
            config=args.config,
            n_genes=args.genes,
            seed=args.seed,
            progress=not args.no_progress,
        )
        _print_demo(summary)
        sys.stdout.write(f"demo finished in {time.perf_counter() - t0:.1f} s\n")
        return 0
    import spatialdata as sd_mod

    import stdiff as sd

    genes = args.genes.split(",") if args.genes else None
    if args.command == "superresolve":
        sdata = sd_mod.read_zarr(args.input)
        sd.tl.superresolve(
            sdata,
            genes,
            model=args.model,
            image_key=args.image_key,
            table_key=args.table_key,
            counts_key=args.counts_key,
            coordinate_system=args.coordinate_system,
            n_samples=args.n_samples,
            num_inference_steps=args.steps,
            conserve_counts=args.conserve_counts,
            key_added=args.key_added,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
        )
        sdata.write(args.out, overwrite=True)
        written = [k for k in (args.key_added, f"{args.key_added}_std") if k in sdata.images]
        logger.warning("wrote %s (images %s)", args.out, ", ".join(map(repr, written)))
        return 0
    if args.command == "train":
        data = [sd_mod.read_zarr(p) for p in args.inputs]
        sd.tl.train(
            data,
            genes,
            factor=args.factor,
            lr_um=args.lr_um,
            platform=args.platform,
            config=args.config,
            steps=args.steps,
            image_key=args.image_key,
            counts_key=args.counts_key,
            table_key=args.table_key,
            coordinate_system=args.coordinate_system,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
            max_time_s=args.max_time,
            checkpoint=args.out,
        )
        return 0
    return 1  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
