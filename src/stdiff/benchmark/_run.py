"""The benchmark protocol: for each factor, track and seed, fit every method, predict the test tissue, score.

*Reference-trained track*: methods train on the training sections/region (their HR truth), with early
stopping on a validation part carved from the training data, and predict the held-out test tissue.
*Self-supervised track*: methods see only the test region's LR map and image (truth removed) and are
scored against its HR truth. Every prediction is mapped to one scoring space (the
:class:`~stdiff.pp.Normalizer` fitted on the training truth) and scored on the test truth mask:
PCC/RMSE/SSIM of the mean, CRPS/coverage/spread-skill of the samples (CRPS = MAE for point
forecasts). Learned methods are also run with the test image rotated by 180° (histology gain), and
stdiff's ablations and knock-outs are compared with it by paired per-gene differences.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import logger, plain
from . import _methods, _metrics, _probabilistic, _stats
from ._data import DataSpec, prepare
from ._features import feature_source
from ._measure import measure, peak_rss_mb
from ._profiles import profile as get_profile
from ._report import machine_info, to_markdown
from ._splits import validation_split


def score(
    outs: Sequence[_methods.Output],
    truths: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    genes: Sequence[str],
    normalizer,
) -> tuple[dict[str, dict[str, float]], dict | None, str]:
    """Per-gene point and probabilistic metrics of one method's outputs on all test sections."""
    means = [_methods.rescore(o.mean, o.normalizer, normalizer) for o in outs]
    samples = None
    if all(o.samples is not None for o in outs):
        samples = [_methods.rescore(o.samples, o.normalizer, normalizer) for o in outs]
    per_gene = _metrics.evaluate_sections(means, truths, masks, genes)
    if not outs[0].point:
        for d in per_gene.values():
            d.update(pcc=float("nan"), rmse=float("nan"), ssim=float("nan"))
    prob, rel, how = _probabilistic.evaluate_samples(samples, means, truths, masks)
    for i, g in enumerate(genes):
        per_gene[g].update({k: float(v[i]) for k, v in prob.items()})
    return per_gene, rel, how


#: Lattices (random offset and rotation) a training section is measured on for a spot platform.
N_LATTICES = 4


def _contexts(track, test, fit, val, note, normalizer, genes, cfg, prof, seed, device):
    if track == "reference":
        return _methods.Context(
            track=track, train=fit, validation=val, validation_note=note, normalizer=normalizer, genes=genes,
            config=cfg, budget=prof["budget"], seed=seed, device=device, n_samples=int(prof["n_samples"]),
            ablation_samples=int(prof["ablation_samples"]),
        )  # fmt: skip
    stripped = [_methods.strip_truth(s) for s in test]
    return _methods.Context(
        track=track, train=stripped, validation=None, validation_note="carved by each method from the test LR map",
        normalizer=_methods.lr_normalizer(stripped), genes=genes, config=cfg, budget=prof["budget"], seed=seed,
        device=device, n_samples=int(prof["n_samples"]), ablation_samples=int(prof["ablation_samples"]),
    )  # fmt: skip


#: Metrics compared between methods by paired per-gene differences.
PAIRED = ("pcc", "rmse", "crps")


@dataclass
class _TestData:
    """One seed's test tissue: the measured sections, their inputs (truth removed) and truth in the scoring space."""

    sections: list
    inputs: list
    truths: list[np.ndarray]
    masks: list[np.ndarray]
    genes: list[str]
    normalizer: Any

    @classmethod
    def of(cls, sections, genes: list[str], normalizer) -> _TestData:
        """The test data of ``sections`` (with truth) in ``normalizer``'s space."""
        return cls(
            sections=sections, inputs=[_methods.strip_truth(s) for s in sections],
            truths=[normalizer.transform(s.hr) for s in sections], masks=[s.truth_mask.astype(bool) for s in sections],
            genes=genes, normalizer=normalizer,
        )  # fmt: skip

    def score(self, outs: Sequence[_methods.Output]) -> tuple[dict[str, dict[str, float]], dict | None, str]:
        """:func:`score` of ``outs`` on these sections."""
        return score(outs, self.truths, self.masks, self.genes, self.normalizer)


def run_track(
    track: str,
    split,
    *,
    methods: Sequence[str],
    seeds: Sequence[int],
    cfg,
    prof: dict[str, Any],
    device: str,
    on_update: Callable[[], None] | None = None,
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """All methods and seeds of one track; returns ``{"methods", "skipped", "comparisons", "histology_gain"}``."""
    from ..pp import fit_normalizer

    genes = list(split.train[0].genes)
    normalizer = fit_normalizer(split.train)
    fit0, val0, note = validation_split(split.train, tile_lr=cfg.tile_lr)
    platform = split.info.get("platform", "square")
    res = result if result is not None else {}
    res.update(
        {
            "methods": {},
            "skipped": {},
            "comparisons": {},
            "histology_gain": {},
            "validation": note if track == "reference" else "carved by each method from the test LR map",
        }
    )
    per_seed: dict[str, list] = {}
    per_seed_rot: dict[str, list] = {}
    for seed in seeds:
        fit, val, test_sections = measured_as(platform, fit0, val0, split.test, seed)
        data = _TestData.of(test_sections, genes, normalizer)
        res.setdefault("truth_block_index", []).append(block_index([t.hr for t in test_sections], test_sections))
        res.setdefault("truth_gap_ratio", []).append(gap_ratio([t.hr for t in test_sections], test_sections))
        ctx = _contexts(track, test_sections, fit, val, note, normalizer, genes, cfg, prof, seed, device)
        for name in methods:
            if name in res["skipped"]:
                continue
            if _run_method(name, ctx, data, res, per_seed, per_seed_rot) and on_update is not None:
                on_update()
    for name, rots in per_seed_rot.items():
        res["histology_gain"][name] = {k: _stats.paired_difference(per_seed[name], rots, k) for k in PAIRED}
    if "stdiff" in per_seed:
        for name in (v for v in _methods.VARIANTS if v in per_seed):
            res["comparisons"][name] = {
                k: _stats.paired_difference(per_seed[name], per_seed["stdiff"], k) for k in PAIRED
            }
    return res


def _run_method(
    name: str, ctx: _methods.Context, data: _TestData, res: dict[str, Any], per_seed: dict, per_seed_rot: dict
) -> bool:
    """Fit, predict and score method ``name`` for one seed into ``res``; ``False`` when it is skipped."""
    m = _methods.build(name)
    try:
        with measure() as fm:
            info = m.fit(ctx)
        with measure() as pm:
            outs = [m.predict(s) for s in data.inputs]
    except _methods.Skip as e:
        res["skipped"][name] = str(e)
        logger.info("%s / %s skipped: %s", ctx.track, name, e)
        return False
    per_gene, rel, how = data.score(outs)
    per_seed.setdefault(name, []).append(per_gene)
    entry = res["methods"].setdefault(name, {
        "description": m.description, "learned": m.learned, "sampler": m.sampler, "seeds": [],
        "interval_method": how, "reliability": rel, "n_samples": outs[0].samples.shape[0]
        if outs[0].samples is not None else None,
    })  # fmt: skip
    if m.gain if m.gain is not None else m.learned:
        per_seed_rot.setdefault(name, []).append(data.score([m.predict_rotated(s) for s in data.inputs])[0])
    means = _stats.summarize_seeds([per_gene])["mean"]
    counts = [data.normalizer.inverse(_methods.rescore(o.mean, o.normalizer, data.normalizer)) for o in outs]
    entry["seeds"].append({
        "seed": int(ctx.seed), "train": info, "train_s": fm["seconds"], "train_cpu_s": fm["cpu_seconds"],
        "predict_s": pm["seconds"], "predict_cpu_s": pm["cpu_seconds"],
        "peak_rss_mb": max(fm["peak_rss_mb"], pm["peak_rss_mb"]), "mean": means,
        "block_index": block_index(counts, data.sections) if outs[0].point else float("nan"),
        "gap_ratio": gap_ratio(counts, data.sections) if outs[0].point else float("nan"),
    })  # fmt: skip
    _summarize(entry, per_seed[name])
    logger.info(
        "%s / %s seed %d: PCC %.3f RMSE %.3f CRPS %.4f (train %s steps %.1fs, predict %.1fs)", ctx.track, name,
        ctx.seed, means["pcc"], means["rmse"], means["crps"], info.get("steps"), fm["seconds"], pm["seconds"],
    )  # fmt: skip
    return True


def measured_as(platform: str, fit, val, test, seed: int):
    """``(fit, validation, test)`` sections as ``platform`` measures them (a lattice drawn per seed).

    ``"square"`` returns them unchanged. For spots, each training section is measured on
    :data:`N_LATTICES` lattices, the validation and test sections on one each; validation was
    carved before, so no lattice of it is trained on.
    """
    if platform == "square":
        return fit, val, list(test)
    from ..pp import simulate_platform

    base = 1_000_003 * (int(seed) + 1)
    fit = [simulate_platform(s, platform, seed=base + 97 * i + k) for i, s in enumerate(fit) for k in range(N_LATTICES)]
    val = None if val is None else [simulate_platform(s, platform, seed=base + 50_000 + i) for i, s in enumerate(val)]
    test = [simulate_platform(s, platform, seed=base + 90_000 + i) for i, s in enumerate(test)]
    return fit, val, test


def block_index(maps: Sequence[np.ndarray], sections) -> float:
    """Mean block-artefact index (:func:`~stdiff.benchmark._metrics.block_artefact_index`) over test sections."""
    vals = [_metrics.block_artefact_index(m, s.factor, s.truth_mask) for m, s in zip(maps, sections, strict=True)]
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


def gap_ratio(maps: Sequence[np.ndarray], sections) -> float:
    """Mean gap/spot gradient ratio (:func:`~stdiff.benchmark._metrics.gap_spot_ratio`) over spot test sections."""
    vals = [_metrics.gap_spot_ratio(m, s) for m, s in zip(maps, sections, strict=True)]
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


def _summarize(entry: dict[str, Any], per_seed: list) -> None:
    s = _stats.summarize_seeds(per_seed)
    entry.update(per_gene=s["per_gene"], mean=s["mean"], sd=s["sd"], median=s["median"], n_nan=s["n_nan"])
    seeds = entry["seeds"]
    bai = [x.get("block_index", np.nan) for x in seeds]
    entry["block_index"] = float(np.nanmean(bai)) if np.isfinite(bai).any() else float("nan")
    gap = [x.get("gap_ratio", np.nan) for x in seeds]
    entry["gap_ratio"] = float(np.nanmean(gap)) if np.isfinite(gap).any() else float("nan")
    for key in ("train_s", "predict_s", "train_cpu_s", "predict_cpu_s"):
        entry[key] = float(np.mean([x[key] for x in seeds]))
    entry["train_steps"] = float(np.mean([x["train"].get("steps") or 0 for x in seeds]))
    entry["peak_rss_mb"] = float(max(x["peak_rss_mb"] for x in seeds))
    entry["stopped"] = sorted({str(x["train"].get("stopped")) for x in seeds})


def run(
    spec: DataSpec,
    *,
    profile: str = "cpu",
    methods: Sequence[str] | None = None,
    tracks: Sequence[str] = _methods.TRACKS,
    seeds: Sequence[int] | None = None,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    command: str = "",
    validate: bool = False,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Benchmark one dataset spec in one profile; writes ``out`` (JSON) and the same name with ``.md``.

    Parameters
    ----------
    spec
        The dataset (:func:`stdiff.benchmark._data.preset` or :func:`~stdiff.benchmark._data.input_spec`).
    profile
        ``"tiny"``, ``"cpu"`` or ``"gpu"`` (:mod:`stdiff.benchmark._profiles`).
    methods
        Subset of :data:`stdiff.benchmark.METHODS` (default all).
    tracks
        ``"reference"`` and/or ``"self_supervised"``.
    seeds
        Seeds of every learned method (default: the profile's); metrics are reported as mean ± sd.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    out
        JSON path (default ``benchmarks/results/{dataset}_{profile}.json``).
    command
        The command line to record.
    validate
        Never look at the test data: the validation part of the training data plays the test.
    overrides
        :class:`~stdiff.models.DiffSTConfig` overrides on top of the profile's preset.
    """
    import torch

    from .._utils import resolve_device

    clock = time.perf_counter(), time.process_time()
    prof = get_profile(profile)
    dev = str(resolve_device(device))
    methods = _checked_request(profile, prof, dev, methods, tracks)
    seeds = [int(s) for s in (seeds if seeds is not None else prof["seeds"])]
    tag = spec.name if spec.platform == "square" else f"{spec.name}_{spec.platform}"
    out = Path(out) if out is not None else Path("benchmarks/results") / f"{tag}_{profile}.json"
    overrides = {**spec.info.get("overrides", {}), **(overrides or {})}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    res: dict[str, Any] = {
        "dataset": spec.name, "platform": spec.platform, "profile": profile, "command": command,
        "machine": machine_info(dev), "seeds": seeds,
        "tracks": list(tracks), "methods_requested": methods, "budget": vars(prof["budget"]),
        "n_samples": prof["n_samples"], "ablation_samples": prof["ablation_samples"], "features": feature_source(),
        "interval_rule": f"empirical quantiles with ≥ {_probabilistic.MIN_EMPIRICAL} samples, else mean ± "
        "t_(n−1)·sd·√(1+1/n)", "status": "running", "runs": [],
    }  # fmt: skip
    write = partial(_write, res, out, clock)
    cache: dict[str, Any] = {}
    for factor in spec.factors:
        split, cfg, run_res = _prepare_factor(spec, factor, prof, overrides, validate, cache)
        res["runs"].append(run_res)
        for track in tracks:
            run_res["tracks"][track] = {}
            run_track(track, split, methods=methods, seeds=seeds, cfg=cfg, prof=prof, device=dev, on_update=write,
                      result=run_res["tracks"][track])  # fmt: skip
            write()
    res["status"] = "complete"
    return write()


def _checked_request(
    profile: str, prof: dict[str, Any], dev: str, methods: Sequence[str] | None, tracks: Sequence[str]
) -> list[str]:
    """The methods to run (default all), after checking the device, the method and the track names."""
    if prof.get("requires_cuda") and not dev.startswith("cuda"):
        raise RuntimeError(f"The {profile!r} profile needs a CUDA GPU (device resolved to {dev!r}); use --profile cpu.")
    methods = list(methods or _methods.METHODS)
    unknown = [m for m in methods if m not in _methods.METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {list(_methods.METHODS)}.")
    bad = [t for t in tracks if t not in _methods.TRACKS]
    if bad:
        raise ValueError(f"Unknown track(s) {bad}; use {list(_methods.TRACKS)}.")
    return methods


def _prepare_factor(
    spec: DataSpec, factor: int, prof: dict[str, Any], overrides: dict[str, Any], validate: bool, cache: dict[str, Any]
):
    """``(split, config, run record)`` of one factor: the data (validation part as test with ``validate``)."""
    from ..models import DiffSTConfig

    tile_lr = DiffSTConfig.preset(prof["preset"], **overrides).tile_lr
    t0 = time.perf_counter()
    split = prepare(spec, factor, tile_lr=tile_lr, cache=cache)
    if validate:
        _validation_as_test(split, tile_lr)
    cfg = DiffSTConfig.preset(prof["preset"], he_scale=split.train[0].he_scale, **overrides)
    run_res: dict[str, Any] = {
        **{k: split.info[k] for k in ("factor", "lr_um", "hr_um", "he_um", "genes")},
        "n_genes": len(split.info["genes"]), "info": split.info, "load_s": time.perf_counter() - t0,
        "config": cfg.to_dict(), "test_tissue_hr_pixels": int(sum(s.truth_mask.sum() for s in split.test)),
        "tracks": {},
    }  # fmt: skip
    return split, cfg, run_res


def _validation_as_test(split, tile_lr: int) -> None:
    """``--validate``: the validation part of the training data becomes the test, in place."""
    fit, val, note = validation_split(split.train, tile_lr=tile_lr)
    if not val:
        raise ValueError(f"--validate: cannot hold out validation data ({note}).")
    split.train, split.test = fit, val
    split.info["validate"] = note
    inner = validation_split(fit, tile_lr=tile_lr)
    if not inner[1]:
        logger.warning(
            "--validate: %s, so the learned methods train without early stopping here, unlike a run on the "
            "test data; compare settings with care.",
            inner[2],
        )


def _write(res: dict[str, Any], out: Path, clock: tuple[float, float]) -> dict[str, Any]:
    """Write the result so far to ``out`` (JSON, atomically) and its markdown next to it; returns what was written."""
    import torch

    first = res["runs"][0] if res["runs"] else {}
    doc = {
        **res,
        "methods": first.get("tracks", {}).get("reference", {}).get("methods", {}),
        "genes": first.get("genes"), "factor": first.get("factor"), "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "total_s": time.perf_counter() - clock[0], "total_cpu_s": time.process_time() - clock[1],
        "loadavg_now": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }  # fmt: skip
    doc = plain(doc, nan_as_none=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, out)
    out.with_suffix(".md").write_text(to_markdown(doc))
    return doc
