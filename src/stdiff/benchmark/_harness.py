"""The benchmark harness: datasets, methods, metrics, timings and reports.

Run ``python -m stdiff.benchmark --help`` (or ``stdiff benchmark --help``). One call benchmarks one
dataset in one profile and writes ``--out`` (JSON) plus the same name with ``.md`` (a markdown
report). Every method is trained only on the training sections/region and evaluated on the same
held-out test sections/region, per gene, on the tissue pixels, in the normalised space of one
:class:`~stdiff.pp.Normalizer` fitted on the training sections (see :mod:`stdiff.benchmark._metrics`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import logger
from . import _metrics

DATASETS: tuple[str, ...] = ("synthetic", "her2st", "merfish")

#: Every method the harness knows, in report order.
METHODS: tuple[str, ...] = (
    "bicubic",
    "nearest",
    "histology",
    "unet",
    "stdiff",
    "stdiff_sample_mean",
    "stdiff_1sample",
    "stdiff_ablation_n",
    "stdiff_no_modulation",
    "stdiff_no_cross_attention",
    "stdiff_no_gene_graph",
)
BASELINES: tuple[str, ...] = ("bicubic", "nearest", "histology", "unet")
ABLATIONS: dict[str, dict[str, bool]] = {
    "stdiff_no_modulation": {"use_modulation": False},
    "stdiff_no_cross_attention": {"use_cross_attention": False},
    "stdiff_no_gene_graph": {"use_gene_graph": False},
}
DESCRIPTIONS: dict[str, str] = {
    "bicubic": "bicubic upsampling of the normalised LR map",
    "nearest": "nearest-neighbour (block) upsampling of the normalised LR map",
    "histology": "histology-only CNN (iStar-like), trained so its HR counts aggregate to the LR spots",
    "unet": "deterministic U-Net, Diff-ST's network and conditioning, regression on the residual",
    "stdiff": "Diff-ST, posterior mean of n samples, fast (DDIM) sampler",
    "stdiff_sample_mean": "Diff-ST, plain average of the n finished samples of the stdiff run",
    "stdiff_1sample": "Diff-ST, one finished posterior sample (the first of the stdiff run)",
    "stdiff_ablation_n": "Diff-ST (the stdiff model) predicted with as many samples as the ablations",
    "stdiff_no_modulation": "Diff-ST without cross-modal modulation / disentangling",
    "stdiff_no_cross_attention": "Diff-ST without dynamic cross-attention (tissue-level features only)",
    "stdiff_no_gene_graph": "Diff-ST without the gene graph (genes independent)",
}

# ----------------------------------------------------------------------------------------------
# profiles
# ----------------------------------------------------------------------------------------------
# ``he_um``: histology pixel size the sections are rasterised at (he_scale = HR µm / he_um).
# Per-dataset settings were chosen from the data geometry and the training data only (never from
# test scores): tile_lr must fit the training region, he_um resolves nuclei where the image allows.
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "preset": "tiny",
        "steps": 10,
        "n_samples": 2,
        "ddim_steps": 4,
        "ablation_samples": 1,
        "speed_steps": [2, 4],
        "ddpm_steps": 20,
        "speed_tiles": 1,
        "datasets": {
            "synthetic": {"size_um": 600.0, "genes": 8, "factors": [10], "he_um": 5.0},
            "her2st": {"genes": 8, "factors": [2], "he_um": 25.0},
            "merfish": {"genes": 8, "factors": [5], "he_um": 5.0},
        },
    },
    "cpu": {
        "preset": "cpu",
        "steps": 200,
        "n_samples": 6,
        "ddim_steps": 10,
        "ablation_samples": 2,
        "speed_steps": [10, 25, 50],
        "ddpm_steps": 1000,
        "speed_tiles": 2,
        "datasets": {
            "synthetic": {"size_um": 2400.0, "genes": 50, "factors": [10, 5], "he_um": 2.5},
            "her2st": {"genes": 50, "factors": [2], "he_um": 6.25},
            "merfish": {"genes": 50, "factors": [5], "he_um": 1.25},
        },
    },
    "gpu": {
        "preset": "paper",
        "steps": 100_000,
        "n_samples": 8,
        "ddim_steps": 50,
        "ablation_samples": 8,
        "speed_steps": [10, 25, 50],
        "ddpm_steps": 1000,
        "speed_tiles": 16,
        "datasets": {
            "synthetic": {
                "size_um": 6000.0,
                "genes": 100,
                "factors": [10, 5],
                "he_um": 0.5,
                "synthetic_he_um": 0.5,
            },
            "her2st": {"genes": 200, "factors": [2], "he_um": 2.0, "overrides": {"tile_lr": 8}},
            "merfish": {"genes": 100, "factors": [5], "he_um": 0.5, "overrides": {"tile_lr": 4}},
        },
    },
}


def profile_settings(profile: str, dataset: str) -> dict[str, Any]:
    """The flat settings of one profile for one dataset (profile keys + the dataset's keys)."""
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; use one of {sorted(PROFILES)}.")
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; use one of {list(DATASETS)}.")
    p = {k: v for k, v in PROFILES[profile].items() if k != "datasets"}
    p.update(PROFILES[profile]["datasets"][dataset])
    p.setdefault("overrides", {})
    return p


# ----------------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Training and test sections of one benchmark run (one factor)."""

    factor: int
    lr_um: float
    he_scale: int
    train: list
    test: list
    genes: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def _he_scale(hr_um: float, he_um: float) -> int:
    return max(1, int(round(hr_um / he_um)))


def _subset_genes(section, genes: Sequence[str]):
    idx = [section.genes.index(g) for g in genes]
    return replace(section, genes=list(genes), lr=section.lr[idx], hr=None if section.hr is None else section.hr[idx])


def load_synthetic(settings: dict[str, Any], factors: Sequence[int], n_genes: int, seed: int) -> list[Split]:
    """Synthetic tissue, rasterised at LR 100 µm/px for each factor; left 2/3 train, right 1/3 test."""
    from ..datasets import synthetic_tissue
    from ..pp import rasterize

    size = float(settings["size_um"])
    kw = {"he_um": float(settings["synthetic_he_um"])} if "synthetic_he_um" in settings else {}
    sdata = synthetic_tissue(size_um=size, n_genes=int(n_genes), seed=int(seed), **kw)
    lr_um = 100.0
    out = []
    for f in factors:
        hs = _he_scale(lr_um / f, settings["he_um"])
        sec = rasterize(sdata, counts_key="hr_counts", image_key="he", lr_um=lr_um, factor=int(f), he_scale=hs,
                        name="synthetic")  # fmt: skip
        w = sec.shape_lr[1]
        cut = int(round(w * 2 / 3))
        train = sec.crop_lr(slice(None), slice(0, cut), name="synthetic_train")
        test = sec.crop_lr(slice(None), slice(cut, None), name="synthetic_test")
        out.append(
            Split(
                factor=int(f), lr_um=lr_um, he_scale=hs, train=[train], test=[test], genes=list(sec.genes),
                info={
                    "tissue_um": size,
                    "synthetic_seed": int(seed),
                    "split": f"LR columns [0, {cut}) train, [{cut}, {w}) test (of {sec.shape_lr[0]}×{w} LR px)",
                },
            )
        )  # fmt: skip
    return out


def her2st_hvgs(tables: dict[str, Any], n_top: int, candidates: Sequence[str]) -> list[str]:
    """Top-``n_top`` highly variable genes of the training spots (scanpy, ``flavor="seurat"``).

    The raw counts of the training tables are concatenated (genes present in every train and test
    section only), genes detected in fewer than 10% of the spots are dropped, counts are
    library-size normalised and log-transformed, and genes are ranked by normalised dispersion with
    the section as batch.
    """
    import anndata as ad
    import scanpy as sc

    parts = []
    for name, t in tables.items():
        a = t[:, list(candidates)].copy()
        a.obs = a.obs[[]].copy()
        a.obs["section"] = name
        a.obs_names = [f"{name}_{o}" for o in a.obs_names]
        parts.append(a)
    adata = ad.concat(parts)
    adata.X = adata.X.astype(np.float32)
    sc.pp.filter_genes(adata, min_cells=int(math.ceil(0.1 * adata.n_obs)))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    n_top = min(int(n_top), adata.n_vars)
    sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=n_top, batch_key="section")
    var = adata.var
    order = var.sort_values(["highly_variable_nbatches", "dispersions_norm"], ascending=False, kind="mergesort").index
    chosen = [g for g in order if var.loc[g, "highly_variable"]][:n_top]
    return list(chosen)


def load_her2st(
    settings: dict[str, Any],
    factors: Sequence[int],
    n_genes: int,
    train: Sequence[str],
    test: Sequence[str],
    data_dir: str | None,
) -> list[Split]:
    """her2st: measured 200 µm spots are the HR truth; LR is their ``factor × factor`` aggregate."""
    from ..datasets import her2st
    from ..pp import rasterize

    sdatas = {}
    for name in [*train, *test]:
        if name not in sdatas:
            sdatas[name] = her2st(name, data_dir=data_dir)
    common = None
    for sd_ in sdatas.values():
        names = list(sd_.tables["table"].var_names)
        common = names if common is None else [g for g in common if g in set(names)]
    genes = her2st_hvgs({n: sdatas[n].tables["table"] for n in train}, n_genes, common)
    out = []
    hr_um = 200.0
    for f in factors:
        lr_um = hr_um * f
        hs = _he_scale(hr_um, settings["he_um"])

        def rast(name, f=f, lr_um=lr_um, hs=hs):
            return rasterize(sdatas[name], genes, table_key="table", spots_as="hr", lr_um=lr_um, factor=int(f),
                             he_scale=hs, name=name)  # fmt: skip

        out.append(
            Split(
                factor=int(f), lr_um=lr_um, he_scale=hs, train=[rast(n) for n in train], test=[rast(n) for n in test],
                genes=genes,
                info={"train_sections": list(train), "test_sections": list(test), "gene_selection": (
                    "scanpy highly_variable_genes(flavor='seurat', batch_key=section) on the log-normalised "
                    "training spots; genes in ≥10% of training spots and present in all sections")},
            )
        )  # fmt: skip
    return out


def load_merfish(settings: dict[str, Any], factors: Sequence[int], n_genes: int, data_dir: str | None) -> list[Split]:
    """MERFISH mini: transcripts binned at HR 10 µm, LR = ``factor`` × 10 µm, DAPI as the image; left/right."""
    from ..datasets import merfish_mouse_brain_mini
    from ..pp import rasterize

    sdata = merfish_mouse_brain_mini(data_dir=data_dir)
    hr_um = 10.0
    out = []
    for f in factors:
        lr_um = hr_um * f
        hs = _he_scale(hr_um, settings["he_um"])
        sec = rasterize(sdata, counts_key="transcripts", image_key="dapi", lr_um=lr_um, factor=int(f), he_scale=hs,
                        name="merfish")  # fmt: skip
        w = sec.shape_lr[1]
        cut = int(math.ceil(w / 2))
        train = sec.crop_lr(slice(None), slice(0, cut), name="merfish_left")
        test = sec.crop_lr(slice(None), slice(cut, None), name="merfish_right")
        # top-N genes by variance of the normalised training bins (log1p of counts / gene mean)
        from ..pp import fit_normalizer

        z = fit_normalizer([train]).transform(train.hr)[:, train.truth_mask]
        var = z.var(axis=1)
        order = np.argsort(-var, kind="stable")[: int(n_genes)]
        genes = [train.genes[i] for i in sorted(order, key=lambda i: -var[i])]
        out.append(
            Split(
                factor=int(f), lr_um=lr_um, he_scale=hs, train=[_subset_genes(train, genes)],
                test=[_subset_genes(test, genes)], genes=genes,
                info={
                    "split": f"LR columns [0, {cut}) train (left), [{cut}, {w}) test (right) of {sec.shape_lr} LR px",
                    "gene_selection": "top-N by variance of log1p(counts / gene mean) over the training tissue bins "
                    "(rasterised once with the whole panel, then subset)",
                },
            )
        )  # fmt: skip
    return out


def validation_split(split: Split) -> Split:
    """A split made of the training data only, to choose settings without the test data.

    With several training sections the last one is held out; with one training region (synthetic,
    merfish) its right third (at least one tile wide) is held out.
    """
    if len(split.train) > 1:
        train, test = split.train[:-1], split.train[-1:]
    else:
        s = split.train[0]
        w = s.shape_lr[1]
        cut = max(1, min(w - 1, int(round(w * 2 / 3))))
        train = [s.crop_lr(slice(None), slice(0, cut), name=f"{s.name}_fit")]
        test = [s.crop_lr(slice(None), slice(cut, None), name=f"{s.name}_validation")]
    info = {
        **split.info,
        "validation": f"train {[t.name for t in train]}, validate on {[t.name for t in test]}",
    }
    return replace(split, train=train, test=test, info=info)


# ----------------------------------------------------------------------------------------------
# evaluation helpers
# ----------------------------------------------------------------------------------------------


def evaluate_sections(
    preds: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    genes: Sequence[str],
) -> dict[str, dict[str, float]]:
    """Per-gene metrics over the tissue pixels of all test sections.

    PCC and RMSE pool the tissue pixels of every test section; SSIM is computed per section (with one
    ``data_range`` per gene from the truth of all test sections) and averaged weighted by tissue pixels.
    """
    pool_p = np.concatenate([p[:, m] for p, m in zip(preds, masks)], axis=1)[:, None]
    pool_t = np.concatenate([t[:, m] for t, m in zip(truths, masks)], axis=1)[:, None]
    pool_m = np.ones(pool_p.shape[1:], dtype=bool)
    dr = _metrics.data_ranges(pool_t, pool_m)
    r = _metrics.pcc(pool_p, pool_t, pool_m)
    e = _metrics.rmse(pool_p, pool_t, pool_m)
    weights = np.array([m.sum() for m in masks], dtype=np.float64)
    ss = np.stack([_metrics.ssim(p, t, m, dr) for p, t, m in zip(preds, truths, masks)])
    with np.errstate(invalid="ignore"):
        s = (ss * weights[:, None]).sum(0) / weights.sum()
    return {g: {"pcc": float(r[i]), "rmse": float(e[i]), "ssim": float(s[i])} for i, g in enumerate(genes)}


def _rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 1024.0**2


def machine_info(device: str) -> dict[str, Any]:
    """Platform, CPU count, torch/numpy versions and the accelerator, if any."""
    import torch

    import stdiff

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "stdiff": stdiff.__version__,
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    return info


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ----------------------------------------------------------------------------------------------
# one run (one factor)
# ----------------------------------------------------------------------------------------------


def _speed_windows(model, tests, normalizer, n_tiles: int):
    """Non-overlapping test tiles (most tissue first, then evenly spread) for the sampler comparison."""
    from ..models.diffst import _pad_section, _Prepared
    from ..pp import tile_positions

    t = model.config.tile_lr
    tests = [
        _pad_section(s, max(0, t - s.shape_lr[0]), max(0, t - s.shape_lr[1])) if min(s.shape_lr) < t else s
        for s in tests
    ]
    cands = []
    for si, s in enumerate(tests):
        for r, c in tile_positions(s, t, t, min_tissue=0.5):
            cands.append((si, int(r), int(c)))
    if not cands:
        for si, s in enumerate(tests):
            for r, c in tile_positions(s, t, t, min_tissue=0.01, cover=True):
                cands.append((si, int(r), int(c)))
    if not cands:
        return [], 0.0
    idx = np.unique(np.linspace(0, len(cands) - 1, min(n_tiles, len(cands))).round().astype(int))
    preps = {si: _Prepared(tests[si], normalizer, with_truth=True) for si in {cands[i][0] for i in idx}}
    windows = [preps[cands[i][0]].window(cands[i][1], cands[i][2], t) for i in idx]
    area_mm2 = (t * tests[0].lr_um / 1000.0) ** 2
    return windows, area_mm2


def _pcc_windows(z: np.ndarray, windows) -> dict[str, float]:
    """PCC of sampled tiles ``(N, G, T, T)`` against the windows' truth, pooled over tissue pixels."""
    mask = np.concatenate([w["mask"][0].reshape(-1) > 0 for w in windows])
    pred = np.concatenate([z[k].reshape(z.shape[1], -1) for k in range(len(windows))], axis=1)
    truth = np.concatenate([w["z_hr"].reshape(w["z_hr"].shape[0], -1) for w in windows], axis=1)
    r = _metrics.pcc(pred[:, None], truth[:, None], mask[None])
    ok = np.isfinite(r)
    return {
        "pcc_mean": float(r[ok].mean()) if ok.any() else float("nan"),
        "pcc_median": float(np.median(r[ok])) if ok.any() else float("nan"),
    }


def run_split(
    split: Split,
    *,
    methods: Sequence[str],
    settings: dict[str, Any],
    seed: int,
    steps: int,
    device: str,
    progress: bool,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate every method on one split; returns the run's result dict."""
    import torch

    from ..models import DiffST, DiffSTConfig
    from ..pp import fit_normalizer, make_tiles
    from . import _baselines

    cfg = DiffSTConfig.preset(settings["preset"], he_scale=split.he_scale, **settings.get("overrides", {}))
    normalizer = fit_normalizer(split.train)
    truths = [normalizer.transform(s.hr) for s in split.test]
    masks = [s.truth_mask.astype(bool) for s in split.test]
    genes = split.genes
    n_samples = int(settings["n_samples"])
    ddim = int(settings["ddim_steps"])
    train_area = sum(float(s.mask_lr.sum()) * (s.lr_um / 1000.0) ** 2 for s in split.train)
    test_area = sum(float(s.mask_lr.sum()) * (s.lr_um / 1000.0) ** 2 for s in split.test)
    tile_mm2 = (cfg.tile_lr * split.lr_um / 1000.0) ** 2
    result: dict[str, Any] = {
        "factor": split.factor,
        "lr_um": split.lr_um,
        "hr_um": split.lr_um / split.factor,
        "he_um": split.lr_um / split.factor / split.he_scale,
        "genes": list(genes),
        "n_genes": len(genes),
        "train_sections": [s.name for s in split.train],
        "test_sections": [s.name for s in split.test],
        "train_tissue_mm2": train_area,
        "test_tissue_mm2": test_area,
        "test_tissue_hr_pixels": int(sum(m.sum() for m in masks)),
        "config": cfg.to_dict(),
        "steps": int(steps),
        "n_samples": n_samples,
        "ddim_steps": ddim,
        "ablation_samples": int(settings["ablation_samples"]),
        "info": dict(split.info),
        "methods": {},
        "speed": [],
    }

    def record(name: str, preds: Sequence[np.ndarray], train_s: float | None, predict_s: float | None, **extra):
        per_gene = evaluate_sections(preds, truths, masks, genes)
        summ = _metrics.summarize(per_gene)
        result["methods"][name] = {
            "description": DESCRIPTIONS.get(name, name),
            "per_gene": per_gene,
            "mean": summ["mean"],
            "median": summ["median"],
            "n_nan": summ["n_nan"],
            "train_s": train_s,
            "predict_s": predict_s,
            "peak_rss_mb": _rss_mb(),
            **extra,
        }
        logger.info(
            "%s ×%d %s: mean PCC %.3f, RMSE %.3f, SSIM %.3f (train %.1fs, predict %.1fs)",
            split.info.get("dataset", ""), split.factor, name, summ["mean"]["pcc"], summ["mean"]["rmse"],
            summ["mean"]["ssim"], train_s or 0.0, predict_s or 0.0,
        )  # fmt: skip
        if on_update is not None:
            on_update(result)

    cpu: dict[str, float] = {}

    def predict_all(fn):
        t0, c0 = time.perf_counter(), time.process_time()
        preds = [fn(s) for s in split.test]
        cpu["predict"] = time.process_time() - c0
        return preds, time.perf_counter() - t0

    for name, fn in (("bicubic", _baselines.bicubic), ("nearest", _baselines.nearest)):
        if name in methods:
            preds, dt = predict_all(lambda s, fn=fn: fn(s, normalizer))
            record(name, preds, 0.0, dt)

    def setup(config):
        torch.manual_seed(seed)
        tiles = make_tiles(split.train, tile_lr=config.tile_lr, min_tissue=config.min_tissue, normalizer=normalizer)
        model = DiffST.setup(tiles, config)
        assert model.normalizer is normalizer
        return model

    def diffst_run(name: str, config, n: int, *, speed: bool = False):
        model = setup(config)
        t0, c0 = time.perf_counter(), time.process_time()
        model.train(split.train, steps=steps, seed=seed, progress=progress, device=device)
        train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        outs = [
            model.predict_section(s, n_samples=n, sampler="ddim", num_inference_steps=ddim, seed=seed, device=device,
                                  progress=progress, return_samples=(name == "stdiff"))
            for s in split.test
        ]  # fmt: skip
        predict_s, predict_cpu = time.perf_counter() - t0, time.process_time() - c0
        n_tiles = sum(len(_tile_count(s, config.tile_lr)) for s in split.test)
        record(
            name, [o["z_mean"] for o in outs], train_s, predict_s, n_samples=n, sampler=f"ddim-{ddim}",
            train_s_per_step=train_s / max(steps, 1), final_loss=float(np.mean(model.history[-20:])),
            predict_tiles=n_tiles, train_cpu_s=train_cpu, predict_cpu_s=predict_cpu,
        )  # fmt: skip
        if name == "stdiff" and "stdiff_sample_mean" in methods:
            record("stdiff_sample_mean", [o["samples"].mean(0) for o in outs], None, None, n_samples=n,
                   sampler=f"ddim-{ddim}", note="average of the finished samples of the stdiff run")  # fmt: skip
        if name == "stdiff" and "stdiff_1sample" in methods:
            record("stdiff_1sample", [o["samples"][0] for o in outs], None, None, n_samples=1, sampler=f"ddim-{ddim}",
                   note="first posterior sample of the stdiff run (no separate timing)")  # fmt: skip
        if name == "stdiff" and "stdiff_ablation_n" in methods:
            k = int(settings["ablation_samples"])
            t0, c0 = time.perf_counter(), time.process_time()
            outs_k = [
                model.predict_section(s, n_samples=k, sampler="ddim", num_inference_steps=ddim, seed=seed,
                                      device=device, progress=progress)
                for s in split.test
            ]  # fmt: skip
            record("stdiff_ablation_n", [o["z_mean"] for o in outs_k], None, time.perf_counter() - t0, n_samples=k,
                   sampler=f"ddim-{ddim}", predict_cpu_s=time.process_time() - c0,
                   note=f"the stdiff model, predicted with {k} sample(s) like the ablations")  # fmt: skip
        if name == "stdiff":
            result["speed"].append({
                "phase": "train", "steps": steps, "batch_size": config.batch_size, "tile_lr": config.tile_lr,
                "tile_mm2": tile_mm2, "seconds": train_s, "cpu_seconds": train_cpu,
                "s_per_step": train_s / max(steps, 1),
                "s_per_tile": train_s / max(steps * config.batch_size, 1),
                "s_per_mm2": train_s / max(steps * config.batch_size * tile_mm2, 1e-12),
            })  # fmt: skip
            result["speed"].append({
                "phase": "predict_section", "sampler": "ddim", "steps": ddim, "n_samples": n, "tiles": n_tiles,
                "test_tissue_mm2": test_area, "seconds": predict_s, "cpu_seconds": predict_cpu,
                "s_per_tile_sample": predict_s / max(n_tiles * n, 1),
                "s_per_mm2_sample": predict_s / max(test_area * n, 1e-12),
                "pcc_mean": result["methods"]["stdiff"]["mean"]["pcc"],
            })  # fmt: skip
        if speed:
            speed_sweep(model)
        return model

    def speed_sweep(model):
        windows, area = _speed_windows(model, split.test, normalizer, int(settings["speed_tiles"]))
        if not windows:
            return
        bicubic_tiles = _pcc_windows(np.stack([w["base"] for w in windows]), windows)
        runs = [("ddim", s) for s in settings["speed_steps"]]
        if settings.get("ddpm_steps"):
            runs.append(("ddpm", int(settings["ddpm_steps"])))
        for sampler, k in runs:
            t0, c0 = time.perf_counter(), time.process_time()
            kw = dict(n_samples=1, sampler=sampler, num_inference_steps=k, seed=seed, device=device, progress=progress)
            try:
                z, first = model.sample_tiles(windows, return_first=True, **kw)
            except TypeError:  # a model without the first-step prediction
                z, first = model.sample_tiles(windows, **kw), None
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            z = z[:, 0]
            entry = {
                "phase": "sample_tiles", "sampler": sampler, "steps": int(k), "tiles": len(windows), "n_samples": 1,
                "seconds": dt, "cpu_seconds": dc, "s_per_tile": dt / len(windows),
                "s_per_mm2": dt / (len(windows) * area),
                **_pcc_windows(z, windows),
            }  # fmt: skip
            if first is not None:
                fp = _pcc_windows(first[:, 0], windows)
                entry["first_step_pcc_mean"], entry["first_step_pcc_median"] = fp["pcc_mean"], fp["pcc_median"]
            entry["bicubic_pcc_mean"] = bicubic_tiles["pcc_mean"]
            result["speed"].append(entry)
            logger.info("speed %s-%d on %d tiles: %.1fs, PCC %.3f", sampler, k, len(windows), dt, entry["pcc_mean"])
            if on_update is not None:
                on_update(result)

    model = None
    if {"stdiff", "stdiff_sample_mean", "stdiff_1sample", "stdiff_ablation_n"} & set(methods):
        model = diffst_run("stdiff", cfg, n_samples, speed=True)
    if "unet" in methods:
        ref = model if model is not None else setup(cfg)
        torch.manual_seed(seed)
        unet = _baselines.RegressionUNet(ref).train(split.train, steps=steps, seed=seed, device=device)
        preds, dt = predict_all(lambda s: unet.predict(s, device=device))
        record("unet", preds, unet.train_s, dt, train_s_per_step=unet.train_s / max(steps, 1),
               final_loss=float(np.mean(unet.history[-20:])), train_cpu_s=unet.train_cpu_s,
               predict_cpu_s=cpu["predict"])  # fmt: skip
    if "histology" in methods:
        torch.manual_seed(seed)
        hist = _baselines.HistologyRegressor(genes, normalizer, cfg, split.train[0].he.shape[0])
        hist.train(split.train, steps=steps, seed=seed, device=device)
        preds, dt = predict_all(lambda s: hist.predict(s, device=device))
        record("histology", preds, hist.train_s, dt, train_s_per_step=hist.train_s / max(steps, 1),
               final_loss=float(np.mean(hist.history[-20:])), train_cpu_s=hist.train_cpu_s,
               predict_cpu_s=cpu["predict"])  # fmt: skip
    for name, switch in ABLATIONS.items():
        if name in methods:
            diffst_run(name, cfg.replace(**switch), int(settings["ablation_samples"]))
    return result


def _tile_count(section, tile_lr: int):
    from ..pp import tile_positions

    h, w = section.shape_lr
    if h < tile_lr or w < tile_lr:
        return [(0, 0)]
    return tile_positions(section, tile_lr, max(1, tile_lr // 2), min_tissue=0.0, cover=True)


# ----------------------------------------------------------------------------------------------
# targets and reports
# ----------------------------------------------------------------------------------------------


def target_check(dataset: str, run: dict[str, Any]) -> dict[str, Any] | None:
    """Stdiff's mean PCC against the best baseline (synthetic: ≥ +0.08) or bicubic (her2st: > 0)."""
    m = run["methods"]
    if "stdiff" not in m:
        return None
    s = m["stdiff"]["mean"]["pcc"]
    base = {k: m[k]["mean"]["pcc"] for k in BASELINES if k in m and m[k]["mean"]["pcc"] is not None}
    if not base:
        return None
    best = max(base, key=lambda k: base[k] if np.isfinite(base[k]) else -np.inf)
    out = {
        "stdiff_pcc": s,
        "best_baseline": best,
        "best_baseline_pcc": base[best],
        "margin_vs_best": s - base[best],
    }
    if "bicubic" in base:
        out["margin_vs_bicubic"] = s - base["bicubic"]
    if dataset == "synthetic":
        out["target"] = "stdiff mean PCC ≥ best baseline + 0.08"
        out["met"] = bool(out["margin_vs_best"] >= 0.08)
    elif dataset == "her2st" and "bicubic" in base:
        out["target"] = "stdiff mean PCC > bicubic"
        out["met"] = bool(out["margin_vs_bicubic"] > 0)
    else:
        out["target"] = None
        out["met"] = None
    return out


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _fmt_s(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.3g}" if v < 10 else f"{v:.0f}"


def run_markdown(dataset: str, run: dict[str, Any]) -> str:
    """Markdown tables (methods, speed) of one run."""
    lines = [
        f"### {dataset}, ×{run['factor']} (LR {run['lr_um']:g} µm → HR {run['hr_um']:g} µm; "
        f"{run['n_genes']} genes; {run['steps']} training steps)",
        "",
        "| method | mean PCC | median PCC | mean RMSE | median RMSE | mean SSIM | median SSIM | train (s) | "
        "predict (s) | train CPU (s) | predict CPU (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in METHODS:
        if name not in run["methods"]:
            continue
        r = run["methods"][name]
        mn, md = r["mean"], r["median"]
        label = name
        if name in ("stdiff",):
            label = f"**{name}** (n={r.get('n_samples')}, {r.get('sampler')})"
        elif name.startswith("stdiff_no") or name == "stdiff_ablation_n":
            label = f"{name} (n={r.get('n_samples')})"
        lines.append(
            f"| {label} | {_fmt(mn['pcc'])} | {_fmt(md['pcc'])} | {_fmt(mn['rmse'])} | {_fmt(md['rmse'])} | "
            f"{_fmt(mn['ssim'])} | {_fmt(md['ssim'])} | {_fmt_s(r['train_s'])} | {_fmt_s(r['predict_s'])} | "
            f"{_fmt_s(r.get('train_cpu_s'))} | {_fmt_s(r.get('predict_cpu_s'))} |"
        )
    any_m = next(iter(run["methods"].values()), None)
    if any_m is not None and any_m["n_nan"]["pcc"]:
        lines += ["", f"{any_m['n_nan']['pcc']} gene(s) with a constant truth on the test tissue have no PCC and are "
                      "left out of the means."]  # fmt: skip
    tc = run.get("target")
    if tc:
        lines += [
            "",
            f"stdiff − best baseline ({tc['best_baseline']}): {tc['margin_vs_best']:+.3f} mean PCC"
            + (f"; stdiff − bicubic: {tc['margin_vs_bicubic']:+.3f}" if "margin_vs_bicubic" in tc else "")
            + (f". Target ({tc['target']}): **{'met' if tc['met'] else 'NOT met'}**." if tc.get("target") else "."),
        ]
    speed = [s for s in run.get("speed", []) if s["phase"] == "sample_tiles"]
    train = [s for s in run.get("speed", []) if s["phase"] == "train"]
    if train or speed:
        lines += [
            "",
            "Speed of stdiff (per posterior sample). PCC columns: mean PCC on the sampled tiles of one finished "
            "sample, and of the network's clean-sample prediction at the first (noisiest) step, E[x0 | x_T, LR, H&E].",
            "",
            "| phase | sampler | steps | tiles | seconds | s / tile | s / mm² | PCC, 1 finished sample | "
            "PCC, first-step E[x0] |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in train:
            lines.append(
                f"| train | – | {s['steps']} (batch {s['batch_size']}) | {s['steps'] * s['batch_size']} | "
                f"{_fmt_s(s['seconds'])} | {_fmt_s(s['s_per_tile'])} | {_fmt_s(s['s_per_mm2'])} | – | – |"
            )
        for s in run.get("speed", []):
            if s["phase"] == "predict_section":
                lines.append(
                    f"| predict test region | {s['sampler']} | {s['steps']} | {s['tiles']}×{s['n_samples']} | "
                    f"{_fmt_s(s['seconds'])} | {_fmt_s(s['s_per_tile_sample'])} | "
                    f"{_fmt_s(s['s_per_mm2_sample'])} | see the stdiff row | |"
                )
        for s in speed:
            lines.append(
                f"| sample tiles | {s['sampler']} | {s['steps']} | {s['tiles']} | {_fmt_s(s['seconds'])} | "
                f"{_fmt_s(s['s_per_tile'])} | {_fmt_s(s['s_per_mm2'])} | {_fmt(s['pcc_mean'])} | "
                f"{_fmt(s.get('first_step_pcc_mean'))} |"
            )
    return "\n".join(lines)


def to_markdown(res: dict[str, Any]) -> str:
    """The markdown report of a benchmark result."""
    m = res["machine"]
    lines = [
        f"## Benchmark: {res['dataset']} ({res['profile']} profile)",
        "",
        f"Command: `{res['command']}`",
        "",
        f"Machine: {m.get('cpu_model', m.get('processor'))}, {m.get('affinity_cpus') or m.get('cpu_count')} CPU "
        f"core(s) available, torch {m['torch']} ({m['torch_threads']} threads), device {m['device']}"
        + (f" ({m['cuda']})" if m.get("cuda") else "")
        + f"; total {res.get('total_s', 0):.0f} s wall, {res.get('total_cpu_s', 0):.0f} s CPU, peak RSS "
        f"{res.get('peak_rss_mb', 0):.0f} MB.",
    ]
    la0, la1 = m.get("loadavg_start"), res.get("loadavg_now")
    if la0 and la1:
        lines[-1] += (
            f" Load average (1 min) {la0[0]:.1f} at the start, {la1[0]:.1f} at the end (other jobs share "
            "the cores when it exceeds the core count)."
        )
    if res.get("peak_cuda_mb") is not None:
        lines[-1] += f" Peak CUDA memory {res['peak_cuda_mb']:.0f} MB."
    for run in res["runs"]:
        lines += ["", run_markdown(res["dataset"], run)]
    if res.get("status") != "complete":
        lines += ["", f"Status: {res.get('status')}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------------


def _parse_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def run_benchmark(
    dataset: str = "synthetic",
    *,
    profile: str = "cpu",
    methods: Sequence[str] | None = None,
    train: Sequence[str] | None = None,
    test: Sequence[str] | None = None,
    factors: Sequence[int] | None = None,
    n_genes: int | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    steps: int | None = None,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    progress: bool = False,
    command: str | None = None,
    validate: bool = False,
) -> dict[str, Any]:
    """Run the benchmark of one dataset in one profile; write ``out`` (JSON) and ``out`` with ``.md``.

    Parameters
    ----------
    dataset
        ``"synthetic"``, ``"her2st"`` or ``"merfish"``.
    profile
        ``"tiny"`` (smoke test, seconds), ``"cpu"`` (< 20 min per dataset on 2 cores) or ``"gpu"``
        (the paper's model size; needs a GPU).
    methods
        Subset of :data:`METHODS` (default: all).
    train, test
        her2st section names (default: train B4, C2, C3, C4; test C5).
    factors
        Super-resolution factors (default: synthetic 10 and 5, her2st 2, merfish 5).
    n_genes
        Genes: synthetic panel size; her2st top-N HVGs of the training sections; merfish top-N by
        variance of the training bins (default from the profile).
    data_dir
        her2st: the her2st ``data/`` folder (default ``$STDIFF_DATA_DIR/her2st_ST_breast_HE``); merfish:
        the dataset folder; unused for synthetic.
    seed
        Seed of the synthetic tissue, model initialisation, tile sampling and sampler noise.
    steps
        Training steps of every trained method (default from the profile).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    out
        JSON path (default ``benchmarks/results/{dataset}_{profile}.json``).
    progress
        Show progress bars.
    command
        The command line to record (default: reconstructed from the arguments).
    validate
        Never look at the test data: evaluate on a validation part of the *training* data instead
        (:func:`validation_split`). Used to choose profile settings.

    Returns
    -------
    The result dict (also written to ``out``).
    """
    import torch

    from .._utils import resolve_device

    t_start, c_start = time.perf_counter(), time.process_time()
    settings = profile_settings(profile, dataset)
    methods = list(METHODS) if not methods else list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {list(METHODS)}.")
    if dataset != "her2st" and (train or test):
        raise ValueError("--train/--test name her2st sections; the synthetic and merfish splits are fixed.")
    n_genes = int(n_genes or settings["genes"])
    steps = int(steps or settings["steps"])
    dev = str(resolve_device(device))
    out = Path(out) if out is not None else Path("benchmarks/results") / f"{dataset}_{profile}.json"
    if dataset == "synthetic":
        factors = list(factors or settings["factors"])
    elif dataset == "her2st":
        factors = list(factors or settings["factors"])
        train = list(train or ("B4", "C2", "C3", "C4"))
        test = list(test or ("C5",))
        overlap = set(train) & set(test)
        if overlap:
            raise ValueError(f"Sections {sorted(overlap)} are both in --train and --test.")
        if data_dir is None:
            from .._utils import data_dir as _data_dir

            base = _data_dir()
            if base is not None and (base / "her2st_ST_breast_HE").is_dir():
                data_dir = base / "her2st_ST_breast_HE"
    else:
        factors = list(factors or settings["factors"])
    if command is None:
        parts = [
            "python -m stdiff.benchmark",
            f"--dataset {dataset}",
            f"--profile {profile}",
            f"--seed {seed}",
        ]
        command = " ".join(parts)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    res: dict[str, Any] = {
        "dataset": dataset,
        "profile": profile,
        "command": command,
        "machine": machine_info(dev),
        "seed": int(seed),
        "methods_requested": methods,
        "settings": settings,
        "status": "running",
        "runs": [],
    }
    last: dict[str, Any] = {}

    def write(partial: dict[str, Any] | None = None) -> None:
        runs = list(res["runs"]) + ([partial] if partial is not None else [])
        for r in runs:
            r["target"] = target_check(dataset, r)
        first = runs[0] if runs else {}
        doc = {
            **{k: v for k, v in res.items() if k != "runs"},
            # top level mirrors the first run (the primary factor); every run is in "runs"
            "genes": first.get("genes"),
            "factor": first.get("factor"),
            "methods": first.get("methods", {}),
            "speed": first.get("speed", []),
            "runs": runs,
            "peak_rss_mb": _rss_mb(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
            "total_s": time.perf_counter() - t_start,
            "total_cpu_s": time.process_time() - c_start,
            "loadavg_now": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_jsonable(doc), indent=1))
        os.replace(tmp, out)
        out.with_suffix(".md").write_text(to_markdown(_jsonable(doc)))
        last.clear()
        last.update(doc)

    t0 = time.perf_counter()
    n_threads = torch.get_num_threads()
    if dataset == "synthetic":
        splits = load_synthetic(settings, factors, n_genes, seed)
    elif dataset == "her2st":
        splits = load_her2st(settings, factors, n_genes, train, test, None if data_dir is None else str(data_dir))
    else:
        splits = load_merfish(settings, factors, n_genes, None if data_dir is None else str(data_dir))
    res["load_s"] = time.perf_counter() - t0
    # scanpy's highly_variable_genes (numba's OpenMP layer) resets the OpenMP thread count that torch
    # shares (torch.get_num_threads() 1 → cpu count); restore it so every method runs as configured.
    if torch.get_num_threads() != n_threads:
        logger.info("Restoring torch threads %d → %d after loading.", torch.get_num_threads(), n_threads)
        torch.set_num_threads(n_threads)
    if validate:
        splits = [validation_split(sp) for sp in splits]
        res["validation"] = True
    for split in splits:
        split.info["dataset"] = dataset
        run = run_split(split, methods=methods, settings=settings, seed=seed, steps=steps, device=dev,
                        progress=progress, on_update=write)  # fmt: skip
        res["runs"].append(run)
        write()
    res["status"] = "complete"
    write()
    return dict(last)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m stdiff.benchmark`` / ``stdiff benchmark``."""
    p = argparse.ArgumentParser(
        prog="stdiff benchmark",
        description="Benchmark stdiff against baselines on held-out tissue (per-gene PCC, RMSE, SSIM; timings; "
        "memory). Writes --out (JSON) and the same path with .md (markdown tables).",
    )
    p.add_argument("--dataset", choices=DATASETS, default="synthetic", help="dataset (default: synthetic)")
    p.add_argument("--data-dir", default=None,
                   help="her2st: the her2st data/ folder (ST-cnts, ST-spotfiles, ST-imgs; default "
                        "$STDIFF_DATA_DIR/her2st_ST_breast_HE); merfish: the dataset folder")  # fmt: skip
    p.add_argument("--train", default=None, help="her2st training sections, comma separated (default B4,C2,C3,C4)")
    p.add_argument("--test", default=None, help="her2st test sections, comma separated (default C5)")
    p.add_argument(
        "--factor",
        default=None,
        help="super-resolution factor(s), comma separated (default: synthetic 10,5; her2st 2; merfish 5)",
    )
    p.add_argument("--genes", type=int, default=None,
                   help="number of genes (her2st: top-N HVGs of the training sections; merfish: top-N by variance "
                        "of the training bins; synthetic: panel size); default from the profile")  # fmt: skip
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu", help="tiny | cpu | gpu (default cpu)")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--steps", type=int, default=None, help="training steps of every trained method (default: profile)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    p.add_argument("--out", default=None, help="output JSON (default benchmarks/results/{dataset}_{profile}.json)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument(
        "--validate",
        action="store_true",
        help="evaluate on held-out training data instead of the test data (to choose settings)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m stdiff.benchmark``, ``stdiff benchmark``)."""
    import logging

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers and not logger.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    methods = _parse_list(args.methods)
    if methods == ["all"]:
        methods = None
    factors = [int(f) for f in _parse_list(args.factor)] if args.factor else None
    command = " ".join(["python -m stdiff.benchmark", *argv])
    res = run_benchmark(
        args.dataset, profile=args.profile, methods=methods, train=_parse_list(args.train),
        test=_parse_list(args.test), factors=factors, n_genes=args.genes, data_dir=args.data_dir, seed=args.seed,
        steps=args.steps, device=args.device, out=args.out, progress=args.progress, command=command,
        validate=args.validate,
    )  # fmt: skip
    out = args.out or f"benchmarks/results/{args.dataset}_{args.profile}.json"
    print(to_markdown(res))
    print(f"Wrote {out} and {Path(out).with_suffix('.md')}.")
    return 0
