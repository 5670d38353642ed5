"""``stdiff demo``: synthetic tissue → train → super-resolve → held-out metrics, figure, zarr.

The default is the package's main job: a section measured by **Visium** (55 µm spots, 100 µm apart;
:func:`stdiff.datasets.synthetic_tissue`'s known 5 µm truth counted inside each spot), super-resolved
to 10 µm by a model trained on an HR reference of the left two thirds of the same tissue
(``platform="visium"``: the reference is measured by simulated Visium lattices, so the model is
trained as it is applied). ``platform="square"`` measures the section in square 100 µm LR pixels instead.
Metrics are on the held-out right third, every tissue HR pixel (gaps between spots included).
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._constants import Key
from ._spatial import finest_level

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

    from .models import DiffST
    from .pp import Normalizer, Section


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def visium_of(sdata):
    """The synthetic section as a Visium lab has it: its H&E and 55 µm spots (hexagonal, 100 µm) with counts."""
    import pandas as pd

    from .datasets import hex_spots
    from .io import from_spots

    spots, counts, genes = hex_spots(sdata)
    obs = {"array_row": spots["array_row"].to_numpy(), "array_col": spots["array_col"].to_numpy()}
    return from_spots(
        counts, spots[["x", "y"]].to_numpy(float), sdata.images["he"], genes=list(pd.Index(genes)),
        spot_ids=[f"spot{i}" for i in range(len(spots))], units="um", spot_diameter_um=55.0, obs=obs, attrs={},
        coordinate_system="global",
    )  # fmt: skip


def _on_grid(img: np.ndarray, src: Section, target: Section, col0: int) -> np.ndarray:
    """``img`` ``(G, h, w)`` on ``src``'s HR grid, placed on ``target``'s (0 outside), from its column ``col0``."""
    out = np.zeros((img.shape[0], *target.mask_hr.shape), np.float32)
    dy = int(round((src.origin[1] - target.origin[1]) / src.hr_um))
    dx = int(round((src.origin[0] - target.origin[0]) / src.hr_um))
    H, W = out.shape[1:]
    y0, x0 = max(0, dy), max(0, dx)
    y1, x1 = min(H, dy + img.shape[1]), min(W, dx + img.shape[2])
    if y1 > y0 and x1 > x0:
        out[:, y0:y1, x0:x1] = img[:, y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    return out[:, :, col0:]


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds the block takes to ``timings[name]``."""
    t = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t


def demo(
    out: str | Path = "stdiff_demo",
    *,
    size_um: tuple[float, float] = (2400.0, 1600.0),
    n_genes: int = 30,
    platform: str = "visium",
    steps: int | None = None,
    config: str = "cpu",
    max_time_s: float = 35.0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run the demo (see the module docstring); returns the summary written to ``demo_metrics.json``."""
    import matplotlib

    matplotlib.use("Agg")

    import stdiff as sd
    from stdiff.models import DiffSTConfig

    if platform not in ("visium", "square"):
        raise ValueError(f"platform must be 'visium' or 'square', got {platform!r}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with _timed(timings, "simulate_s"):
        sdata = sd.datasets.synthetic_tissue(size_um=size_um, n_genes=n_genes, seed=seed)
    cfg = DiffSTConfig.preset(config, base_max_time_s=min(max_time_s, 60.0))
    with _timed(timings, "rasterize_s"):
        section = sd.pp.rasterize(sdata, counts_key="hr_counts", image_key="he", lr_um=100.0, factor=10,
                                  he_scale=cfg.he_scale)  # fmt: skip
        split = (2 * section.shape_lr[1]) // 3
        train_sec = section.crop_lr(slice(None), slice(0, split), name="train")
        test_sec = section.crop_lr(slice(None), slice(split, None), name="held-out")
    with _timed(timings, "train_s"):
        model = sd.tl.train(train_sec, platform=platform, n_lattices=2, config=cfg, steps=steps,
                            max_time_s=max_time_s, seed=seed, progress=progress)  # fmt: skip
    model.save(out / "model.pt")
    measured = visium_of(sdata) if platform == "visium" else sdata
    keys = {} if platform == "visium" else {"counts_key": "hr_counts", "image_key": "he"}
    with _timed(timings, "superresolve_s"):
        sd.tl.superresolve(measured, model=model, seed=seed, progress=progress, **keys)
    metrics = _held_out(measured, model, section, test_sec, split, platform=platform, seed=seed)
    genes = model.genes
    fig_genes = [g for g in ("ERBB2", "EPCAM", "PTPRC", "COL1A1") if g in genes][:3] or genes[:3]
    sd.pl.superresolution(measured, fig_genes, save=out / "superresolution.png")
    with warnings.catch_warnings():  # zarr's notice about its future sharding default, once per array
        warnings.filterwarnings("ignore", message=".*autosharding.*", category=UserWarning)
        measured.write(out / "demo.zarr", overwrite=True)
    summary = dict(
        platform=platform,
        **metrics,
        timings_s={k: round(v, 2) for k, v in timings.items()},
        peak_rss_mb=round(_peak_rss_mb(), 1),
        genes=len(genes),
        outputs={"figure": str(out / "superresolution.png"), "zarr": str(out / "demo.zarr"),
                 "model": str(out / "model.pt")},
    )  # fmt: skip
    (out / "demo_metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def _held_out(
    measured: SpatialData, model: DiffST, section: Section, test_sec: Section, split: int, *, platform: str, seed: int
) -> dict:
    """Metrics of the result and the baselines on the held-out tissue (normalised scale, the truth's grid).

    Also how often the central 90% interval holds the truth, and the block index of the mean.
    """
    import stdiff as sd
    from stdiff.benchmark import block_artefact_index, evaluate, summarize

    norm, f = model.normalizer, section.factor
    col0 = split * f
    res = sd.tl.section_of(measured)
    pred = _on_grid(finest_level(measured.images[Key.img.DEFAULT]), res, section, col0)
    held, baselines, mask = _baselines(res, section, test_sec, split, platform=platform, norm=norm)
    truth_z = norm.transform(test_sec.hr)
    genes = model.genes
    results = {"stdiff": summarize(evaluate(norm.transform(pred), truth_z, mask, genes))}
    results.update({k: summarize(evaluate(v, truth_z, mask, genes)) for k, v in baselines.items()})
    pr = model.predict_section(held, seed=seed, progress=False)
    lo, hi = (_on_grid(pr[q], held, section, col0) for q in (Key.pred.Q05, Key.pred.Q95))
    inside = (test_sec.hr >= lo - 1e-6) & (test_sec.hr <= hi + 1e-6)
    return {
        "held_out": results,
        "coverage90": round(float(inside[:, mask].mean()), 3),
        "block_index": {
            "stdiff": round(block_artefact_index(np.clip(norm.inverse(norm.transform(pred)), 0, None), f, mask), 3),
            "truth": round(block_artefact_index(test_sec.hr, f, mask), 3),
        },  # fmt: skip
    }


def _baselines(
    res: Section, section: Section, test_sec: Section, split: int, *, platform: str, norm: Normalizer
) -> tuple[Section, dict[str, np.ndarray], np.ndarray]:
    """The held-out part of the measured section ``res``; the baselines (normalised) and pixels scored.

    The baselines and the pixels are on the truth's held-out grid. Spots: each spot's counts on its
    footprint (gaps by normalised convolution) and the normalised convolution of the spots; square LR
    pixels: the LR counts spread over each block's tissue pixels and bicubic upsampling.
    """
    from stdiff.models import upsample_lr
    from stdiff.pp import lr_per_tissue_pixel

    f = section.factor
    col0 = split * f
    if platform == "visium":  # the part of the spot section over the held-out tissue
        col = int(np.floor((section.origin[0] + split * section.lr_um - res.origin[0]) / res.lr_um))
        held = res.crop_lr(slice(None), slice(max(0, col), None), name="held-out")
        baselines = {
            "nearest": norm.transform(_on_grid(lr_per_tissue_pixel(res), res, section, col0)),
            "normconv": norm.transform(_on_grid(res.footprints().render() * res.mask_hr, res, section, col0)),
        }
        mask = test_sec.truth_mask & (_on_grid(res.mask_hr[None].astype(np.float32), res, section, col0)[0] > 0)
    else:
        held = test_sec
        baselines = {
            "nearest": norm.transform(lr_per_tissue_pixel(test_sec)),
            "bicubic": upsample_lr(norm.transform(test_sec.lr, factor=f), f).numpy(),
        }
        mask = test_sec.truth_mask
    mask = mask & (_on_grid(np.ones((1, *held.mask_hr.shape), np.float32), held, section, col0)[0] > 0)
    return held, baselines, mask


def print_demo(summary: dict) -> None:
    """The demo's summary on stdout."""
    res = summary["held_out"]
    what = (
        "nearest = each spot's counts on its footprint, gaps by normalised convolution; normconv = normalised "
        "convolution of the spots"
        if summary["platform"] == "visium"
        else "nearest = LR counts spread over the tissue pixels of each block"
    )
    lines = [
        "",
        f"Held-out tissue (right third), per-gene metrics on the normalised scale, every tissue HR pixel ({what}):",
        f"{'method':<10} {'mean PCC':>9} {'median PCC':>11} {'mean RMSE':>10} {'mean SSIM':>10}",
    ]
    for name, r in res.items():
        lines.append(
            f"{name:<10} {r['mean']['pcc']:>9.3f} {r['median']['pcc']:>11.3f} {r['mean']['rmse']:>10.3f} "
            f"{r['mean']['ssim']:>10.3f}"
        )
    bi = summary["block_index"]
    lines.append(f"stdiff central 90% interval holds the truth for {summary['coverage90']:.0%} of held-out pixels")
    lines.append(f"block index of the mean {bi['stdiff']:.2f} (truth {bi['truth']:.2f}; 1 = no block edges)")
    lines.append(f"timings (s): {summary['timings_s']}   peak RSS: {summary['peak_rss_mb']:.0f} MB")
    lines.append(f"wrote: {summary['outputs']}")
    sys.stdout.write("\n".join(lines) + "\n")
