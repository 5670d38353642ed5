"""Fitting :class:`~stdiff.models.SpotRate` at the spot level: cross-fitted histology rates, fields, calibration.

Everything here works on per-spot arrays (``n`` spots, ``G`` genes, ``K`` histology classes), never
on HR-sized ones, so the fit's cost follows the number of spots and genes, not the image:

- :func:`cross_fit`: per fold, the class densities of the spots' total counts and each gene's share
  per class (:func:`stdiff.spots.fit_class_rates`), and what they expect under every spot;
- :func:`select_total` and :func:`select_genes`: the histology weight and the field's width of the
  total counts, and of every gene's share, by the held-out deviance of the spots each fold left out;
- :func:`held_out_report`: the held-out predictions' Pearson r next to the mean of the 6 nearest
  measured spots', on the same folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..spots import SIGMAS, field_deviance, fit_class_rates, fold_kernels

if TYPE_CHECKING:  # pragma: no cover
    from ..pp import HistologyClasses

#: Histology weights tried for the total counts and for every gene's share.
TOTAL_WEIGHTS: tuple[float, ...] = (0.0, 0.5, 1.0)
SHARE_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Genes (those with the most counts) whose held-out deviance, with the totals', chooses the histology classes.
CHOICE_GENES = 50


@dataclass
class Members:
    """The cross-fitted learners: per fold ``k``, class densities ``c[k]`` ``(K,)`` and shares ``W[k]`` ``(G, K)``.

    ``total[k]`` ``(n,)`` and ``share[k]`` ``(G, n)`` are what fold ``k``'s learner expects under every
    spot (its own training spots and the ones it held out).
    """

    c: np.ndarray
    W: np.ndarray
    total: np.ndarray
    share: np.ndarray


def folds_of(n: int, n_folds: int, seed: int) -> np.ndarray:
    """``(n,)`` fold of every spot: a seeded balanced permutation."""
    return np.random.default_rng(seed).permutation(np.arange(n) % n_folds)


def cross_fit(design: np.ndarray, totals: np.ndarray, counts: np.ndarray, fold: np.ndarray) -> Members:
    """Fit one learner per fold on the other folds' spots (see :class:`Members`).

    ``design`` ``(n, K)``: class areas under each spot; ``totals`` ``(n,)``: library sizes; ``counts``
    ``(G, n)``. A gene's share per class is fitted with each spot's own total as its exposure
    (``y_gs ~ Poisson(T_s / L_s · Σ_k Ψ_sk c_k W_gk)``), so a spot's capture does not enter the shares.
    """
    K = design.shape[1]
    folds = np.unique(fold)
    G, n = counts.shape
    c, W = np.zeros((len(folds), K)), np.zeros((len(folds), G, K))
    total, share = np.zeros((len(folds), n)), np.zeros((len(folds), G, n))
    for i, k in enumerate(folds):
        tr = fold != k
        c[i] = fit_class_rates(design[tr], totals[None, tr])[0]
        total[i] = design @ c[i]
        exposure = np.where(total[i] > 0, totals / np.maximum(total[i], 1e-300), 0.0)
        weighted = design * c[i][None]
        W[i] = fit_class_rates(weighted[tr], counts[:, tr], exposure[tr])
        share[i] = (weighted @ W[i].T).T / np.maximum(total[i], 1e-300)[None]
    return Members(c=c, W=W, total=total, share=share)


def choose_classes(
    z: np.ndarray,
    mask: np.ndarray,
    footprints,
    totals: np.ndarray,
    counts: np.ndarray,
    fold: np.ndarray,
    tried: tuple[int, ...],
    *,
    seed: int,
) -> tuple[HistologyClasses, np.ndarray, Members | None, dict[int, float]]:
    """``(classes, design (n, K), members, scores)``: the histology classes whose cross-fit predicts best.

    ``z`` ``(F, H, W)``: the standardised histology features; ``mask`` ``(H, W)``: the tissue, whose ``P``
    pixels the classes are fitted on; ``footprints`` ``(n, P)``: every spot's area over those pixels. For each number of classes in ``tried`` (one: no choice, no score),
    the classes are fitted (:class:`~stdiff.pp.HistologyClasses`, unsupervised) and scored by the
    held-out deviance of what the histology alone predicts (:func:`histology_deviance`) for the
    totals and the :data:`CHOICE_GENES` genes with the most counts, so the choice costs the same
    for any panel. ``members`` is the chosen cross-fit when it covered every gene (else ``None``).
    """
    from ..pp import HistologyClasses

    scored = np.sort(np.argsort(-counts.sum(1), kind="stable")[:CHOICE_GENES])
    whole = len(scored) == len(counts)
    best, scores = None, {}
    features = z[:, mask].T  # (P, F)
    for k in tried:
        classes = HistologyClasses.fit(z, mask, n_classes=k, seed=seed)
        design = np.asarray(footprints @ classes.soft(features))
        score, members = 0.0, None
        if len(tried) > 1:
            members = cross_fit(design, totals, counts[scored], fold)
            score = histology_deviance(members, totals, counts[scored], fold)
            scores[int(classes.n_classes)] = score
        if best is None or score < best[0] - 1e-9:
            best = (score, classes, design, members if whole else None)
    return best[1], best[2], best[3], scores


def histology_deviance(members: Members, totals: np.ndarray, counts: np.ndarray, fold: np.ndarray) -> float:
    """Held-out Poisson deviance of what the histology alone predicts (totals, and genes given the totals).

    Each spot is scored by the learner that did not see it: its total against the class densities'
    expectation (rescaled to the training spots' overall level), each gene against its share times
    the spot's own total; every gene and the totals weigh alike (each divided by its mean count).
    """
    from ..spots import poisson_deviance

    dev = 0.0
    for i, k in enumerate(np.unique(fold)):
        tr, te = fold != k, fold == k
        scale = totals[tr].sum() / max(float(members.total[i][tr].sum()), 1e-300)
        t_dev = poisson_deviance(members.total[i][te] * scale, totals[te]).sum() / max(totals.mean(), 1e-12)
        pred = members.share[i][:, te] * totals[te][None]
        g_dev = (poisson_deviance(pred, counts[:, te]).sum(1) / np.maximum(counts.mean(1), 1e-12)).sum()
        dev += float(t_dev + g_dev)
    return dev


def flat_total(area: np.ndarray, totals: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """``(n,)`` expected totals of a flat density (the selected spots' counts per unit tissue area)."""
    return area * totals[sel].sum() / max(float(area[sel].sum()), 1e-300)


def select_total(
    xy: np.ndarray, pitch: float, area: np.ndarray, totals: np.ndarray, members: Members, fold: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """``(histology weight, kernel width in pitches, held-out predicted totals (n,))`` of the total counts."""
    folds = np.unique(fold)
    kernels = fold_kernels(xy, fold, pitch)
    best = (np.inf, 0.0, SIGMAS[0], None)
    for w in TOTAL_WEIGHTS:
        expected = [((1 - w) * flat_total(area, totals, fold != k) + w * members.total[i])[None]
                    for i, k in enumerate(folds)]  # fmt: skip
        dev, pred = field_deviance(xy, totals[None], expected, fold, pitch, kernels=kernels)
        i = int(dev[:, 0].argmin())
        if dev[i, 0] < best[0] - 1e-9:
            best = (float(dev[i, 0]), w, SIGMAS[i], pred[i, 0])
    return best[1], best[2], best[3]


def select_genes(
    xy: np.ndarray, pitch: float, totals: np.ndarray, counts: np.ndarray, members: Members, fold: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per gene ``(histology weight (G,), kernel width in pitches (G,), held-out share predictions (G, n))``.

    The field of a gene's share is scored with every spot's own total as exposure; the returned
    predictions are shares (counts per unit total), so the caller multiplies them by a total.
    """
    folds = np.unique(fold)
    G, n = counts.shape
    best = np.full(G, np.inf)
    weight, width, pred = np.zeros(G), np.full(G, SIGMAS[0]), np.zeros((G, n))
    kernels = fold_kernels(xy, fold, pitch)
    for w in SHARE_WEIGHTS:
        expected = []
        for i, k in enumerate(folds):
            tr = fold != k
            mean_share = counts[:, tr].sum(1, keepdims=True) / max(float(totals[tr].sum()), 1e-300)
            expected.append(((1 - w) * mean_share + w * members.share[i]) * totals[None])
        dev, p = field_deviance(xy, counts, expected, fold, pitch, kernels=kernels)
        i = dev.argmin(0)
        better = dev[i, np.arange(G)] < best - 1e-9
        best[better] = dev[i, np.arange(G)][better]
        weight[better], width[better] = w, np.asarray(SIGMAS)[i[better]]
        share = p[i, np.arange(G)] / np.maximum(totals, 1e-300)[None]
        pred[better] = share[better]
    return weight, width, pred


def held_out_distance(xy: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """``(n,)`` distance from every spot to the nearest spot of another fold (what it was predicted from)."""
    from scipy.spatial import cKDTree

    d = np.zeros(len(xy))
    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        d[te] = cKDTree(xy[tr]).query(xy[te], k=1)[0] if tr.any() else np.inf
    return d


def mean_pearson(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean over genes of the Pearson r of ``log1p`` predictions and counts (genes with no variance skipped)."""
    r = []
    for p, t in zip(np.log1p(np.maximum(pred, 0)), np.log1p(y), strict=True):
        if p.std() > 0 and t.std() > 0:
            r.append(float(np.corrcoef(p, t)[0, 1]))
    return float(np.mean(r)) if r else float("nan")


def nearest_mean(xy: np.ndarray, counts: np.ndarray, fold: np.ndarray, k: int = 6) -> np.ndarray:
    """``(G, n)`` every spot predicted by the mean count of its ``k`` nearest spots of the other folds."""
    from scipy.spatial import cKDTree

    out = np.zeros(counts.shape)
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        kk = int(min(k, tr.sum()))
        _, idx = cKDTree(xy[tr]).query(xy[te], k=kk)
        idx = np.asarray(idx).reshape(te.sum(), kk)
        out[:, te] = counts[:, tr][:, idx].mean(-1)
    return out
