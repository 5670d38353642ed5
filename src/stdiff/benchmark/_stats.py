"""Across seeds and genes: mean ± sd over seeds, and paired per-gene differences with a bootstrap interval."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

#: Per-gene metrics, in table order (point metrics score the mean; the rest score the samples).
METRICS: tuple[str, ...] = ("pcc", "rmse", "ssim", "crps", "coverage50", "coverage90", "spread_skill")
PerGene = Mapping[str, Mapping[str, float]]


def _matrix(per_seed: Sequence[PerGene], genes: Sequence[str], metric: str) -> np.ndarray:
    """``(seeds, genes)`` values of ``metric`` (NaN where missing)."""
    return np.array([[float(ps[g].get(metric, np.nan)) for g in genes] for ps in per_seed], dtype=np.float64)


def summarize_seeds(per_seed: Sequence[PerGene]) -> dict[str, dict]:
    """Per-gene means over seeds, and per metric the mean over genes: its mean, sd over seeds, median.

    Returns ``{"per_gene": {gene: {metric}}, "mean": {metric}, "sd": {metric}, "median": {metric},
    "n_nan": {metric}}``; ``mean``/``sd`` are over seeds of the gene-mean of each seed (genes with NaN,
    e.g. a constant truth, left out); ``sd`` is 0 with one seed; ``median`` is over genes of the
    seed-mean per gene.
    """
    genes = list(per_seed[0])
    out: dict[str, dict] = {"per_gene": {g: {} for g in genes}, "mean": {}, "sd": {}, "median": {}, "n_nan": {}}
    for m in METRICS:
        x = _matrix(per_seed, genes, m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_gene = np.nanmean(x, axis=0) if np.isfinite(x).any() else np.full(len(genes), np.nan)
            seed_means = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in x])
        for g, v in zip(genes, per_gene):
            out["per_gene"][g][m] = float(v)
        ok = np.isfinite(seed_means)
        out["mean"][m] = float(seed_means[ok].mean()) if ok.any() else float("nan")
        out["sd"][m] = float(seed_means[ok].std(ddof=1)) if ok.sum() > 1 else (0.0 if ok.any() else float("nan"))
        fin = np.isfinite(per_gene)
        out["median"][m] = float(np.median(per_gene[fin])) if fin.any() else float("nan")
        out["n_nan"][m] = int((~fin).sum())
    return out


def paired_difference(
    a: Sequence[PerGene],
    b: Sequence[PerGene],
    metric: str,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, float | list | int]:
    """Mean over genes of the per-gene difference ``a − b`` (seeds paired, then averaged per gene).

    The 95% interval is a percentile bootstrap over genes. ``per_seed`` lists the gene-mean difference
    of each seed. ``a`` and ``b`` are per-seed per-gene metric dicts of the same seeds and genes.
    """
    genes = [g for g in a[0] if g in b[0]]
    n = min(len(a), len(b))
    d = _matrix(a[:n], genes, metric) - _matrix(b[:n], genes, metric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_gene = np.nanmean(d, axis=0)
        per_seed = [float(np.nanmean(r)) if np.isfinite(r).any() else float("nan") for r in d]
    per_gene = per_gene[np.isfinite(per_gene)]
    if per_gene.size == 0:
        return {"metric": metric, "diff": float("nan"), "ci95": [float("nan")] * 2, "n_genes": 0, "per_seed": per_seed}
    rng = np.random.default_rng(seed)
    boots = per_gene[rng.integers(per_gene.size, size=(n_boot, per_gene.size))].mean(1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {
        "metric": metric, "diff": float(per_gene.mean()), "ci95": [float(lo), float(hi)],
        "n_genes": int(per_gene.size), "n_seeds": n, "per_seed": per_seed,
    }  # fmt: skip
