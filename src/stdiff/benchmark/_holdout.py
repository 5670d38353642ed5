"""The spot hold-out track: hide spots, super-resolve from the rest, predict the hidden spots' counts.

What a user can check on their own slide without any truth: for each seed the measured spots are cut
into ``folds`` folds (10: each hides 10% of the spots); for each fold the section without those spots
goes through :func:`stdiff.tl.superresolve` (the ``model=None`` default, exactly as a user runs it),
and :func:`stdiff.tl.measure` reads what its map predicts under every hidden footprint. The baselines
(:mod:`._holdout_maps`) make their maps from the same measured spots on the same grid. Scores, per
seed over all hidden spots (each hidden once per seed), then mean ± sd over seeds:

- ``pcc``: mean over genes of the Pearson r of ``log1p`` predicted and measured counts;
- ``deviance``: mean Poisson deviance per hidden spot and gene;
- ``cov90``: share of hidden counts inside the central 90% predictive interval (methods with an sd;
  the interval of the negative binomial with the predicted mean and sd);
- ``zero_px``: share of the hidden discs' pixels (footprint over half the pixel) where the map is 0
  for every gene (a hole), over the hidden spots that measured counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._utils import logger
from ._holdout_maps import BASELINES

#: Methods of the track, in report order.
HOLDOUT_METHODS: tuple[str, ...] = (*BASELINES, "default")
#: Key of the default's result in the SpatialData with spots hidden.
_KEY = "holdout"


def hide(sdata, table_key: str, keep: np.ndarray):
    """A shallow SpatialData whose table has only the ``keep`` spots (images and shapes shared, not copied)."""
    import spatialdata as sd_mod

    tables = {k: (t[keep].copy() if k == table_key else t) for k, t in sdata.tables.items()}
    return sd_mod.SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables=tables)


def _interval_coverage(mean: np.ndarray, std: np.ndarray, y: np.ndarray, level: float = 0.9) -> float:
    """Share of ``y`` inside the central ``level`` interval of the NB with mean ``mean`` and sd ``std``."""
    from ..spots import predictive_quantile

    m = np.maximum(mean, 1e-12)
    s2 = np.log1p(np.maximum(std**2 - m, 0.0) / (m * m))
    a = (1 - level) / 2
    lo, hi = predictive_quantile(a, m, s2), predictive_quantile(1 - a, m, s2)
    return float(((y >= lo) & (y <= hi)).mean())


def mean_pcc(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean over genes of the Pearson r of ``log1p`` predictions and counts (constant genes skipped)."""
    r = [np.corrcoef(p, t)[0, 1] for p, t in zip(np.log1p(np.maximum(pred, 0)), np.log1p(y), strict=True)
         if p.std() > 0 and t.std() > 0]  # fmt: skip
    return float(np.mean(r)) if r else float("nan")


def _scores(pred: np.ndarray, y: np.ndarray, std: np.ndarray | None, zero_px: float) -> dict[str, float]:
    from ..spots import poisson_deviance

    return {
        "pcc": mean_pcc(pred, y),
        "deviance": float(poisson_deviance(pred, y).mean()),
        "cov90": _interval_coverage(pred, std, y) if std is not None else float("nan"),
        "zero_px": zero_px,
    }


def _zero_share(maps: np.ndarray, hidden_fp, tissue: np.ndarray) -> float:
    """Share of hidden discs' tissue pixels (covered over half) where ``maps`` is 0 for every gene.

    Only the discs of hidden spots that measured counts (their library size above 0) are counted, and
    only their pixels on ``tissue`` (the section's tissue as its histology and *all* its spots give it).
    """
    expressing = hidden_fp.spots.library_size() > 0
    A = hidden_fp.matrix[np.flatnonzero(expressing)]
    cover = (np.asarray(A.max(axis=0).todense()).ravel().reshape(maps.shape[1:]) > 0.5) & tissue
    return float((maps[:, cover].max(0) <= 0).mean()) if cover.any() else float("nan")


def run_fold(sdata, genes: list[str], table_key: str, keep: np.ndarray, all_spots, methods: Sequence[str], *,
             seed: int, hr_um: float | None) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every method's predictions ``(G, hidden)`` (and sd) under the hidden spots of one fold, with timings.

    ``all_spots``: every spot of the section (:class:`~stdiff.spots.Spots`, table order).
    """
    import stdiff as sd

    from .._spatial import finest_level
    from ..pp import spot_tissue_mask
    from ..spots import Footprints

    sub = hide(sdata, table_key, keep)
    t0 = time.perf_counter()
    sd.tl.superresolve(sub, genes, table_key=table_key, hr_um=hr_um, key_added=_KEY, seed=seed, progress=False)
    seconds = time.perf_counter() - t0
    section = sd.tl.section_of(sub, _KEY)
    hidden_fp = Footprints(all_spots.subset(~keep), section.origin, section.hr_um, section.mask_hr.shape)
    every = Footprints(all_spots, section.origin, section.hr_um, section.mask_hr.shape)
    tissue = spot_tissue_mask(every, section.he, section.he_scale)
    out = {}
    if "default" in methods:
        measured = sd.tl.measure(sub, _KEY, genes=genes)[[str(i) for i in all_spots.ids[~keep]]]
        mean = finest_level(sub.images[_KEY], np.float64)
        out["default"] = {"pred": measured.X.T, "std": measured.layers["std"].T, "seconds": seconds,
                          "zero_px": _zero_share(mean, hidden_fp, tissue)}  # fmt: skip
    for name in methods:
        if name == "default":
            continue
        t0 = time.perf_counter()
        res = BASELINES[name](section, seed)
        maps, std = res if isinstance(res, tuple) else (res, None)
        pred = hidden_fp.measure(maps)
        entry = {"pred": pred, "seconds": time.perf_counter() - t0, "zero_px": _zero_share(maps, hidden_fp, tissue)}
        if std is not None:
            excess = np.sqrt(np.maximum(std.astype(np.float64) ** 2 - maps, 0.0))
            entry["std"] = np.sqrt(pred + hidden_fp.measure(excess) ** 2)
        out[name] = entry
    return out


def section_spots(sdata, genes: list[str], table_key: str):
    """Every spot of the section in table order (centres in its µm system, radii, counts, ids)."""
    from ..pp import open_input

    spots = open_input(sdata, genes, table_key=table_key).spots
    t = sdata.tables[table_key]
    ids = t.obs[t.uns["spatialdata_attrs"]["instance_key"]].to_numpy()
    if list(spots.ids) != list(ids):
        raise ValueError(f"Table {table_key!r}: the spots read back are not in table order.")
    return spots


def run_section(sdata, genes: list[str], table_key: str, *, methods: Sequence[str], seeds: Sequence[int],
                folds: int = 10, hr_um: float | None = None,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """All seeds and folds of one section: per method, per seed scores and timings."""
    n = sdata.tables[table_key].n_obs
    all_spots = section_spots(sdata, genes, table_key)
    res: dict[str, Any] = {m: {"seeds": []} for m in methods}
    for seed in seeds:
        fold = np.random.default_rng(seed).permutation(np.arange(n) % folds)
        preds = {m: {"pred": np.zeros((len(genes), n)), "std": np.full((len(genes), n), np.nan), "seconds": 0.0,
                     "zero": []} for m in methods}  # fmt: skip
        for k in range(folds):
            keep = fold != k
            got = run_fold(sdata, genes, table_key, keep, all_spots, methods, seed=seed, hr_um=hr_um)
            for m, e in got.items():
                preds[m]["pred"][:, ~keep] = e["pred"]
                if e.get("std") is not None:
                    preds[m]["std"][:, ~keep] = e["std"]
                preds[m]["seconds"] += e["seconds"]
                preds[m]["zero"].append(e["zero_px"])
            if progress:
                progress(f"seed {seed} fold {k + 1}/{folds}")
        y = np.asarray(all_spots.counts, np.float64)
        for m in methods:
            p = preds[m]
            std = None if np.isnan(p["std"]).any() else p["std"]
            scores = _scores(p["pred"], y, std, float(np.nanmean(p["zero"])))
            res[m]["seeds"].append({"seed": seed, **scores, "seconds": p["seconds"] / folds})
            logger.info("spot hold-out %s seed %d: r %.3f, deviance %.3f, cov90 %.3f, zero px %.3f (%.1f s/fold)",
                        m, seed, scores["pcc"], scores["deviance"], scores["cov90"], scores["zero_px"],
                        p["seconds"] / folds)  # fmt: skip
    for m in methods:
        for key in ("pcc", "deviance", "cov90", "zero_px", "seconds"):
            vals = [s[key] for s in res[m]["seeds"]]
            res[m][key] = float(np.mean(vals))
            res[m][key + "_sd"] = float(np.std(vals))
    return res
