"""Per-gene metrics on held-out tissue, on one normalised scale for every method.

Every prediction and the truth are compared in the same normalised space (``z``, see
:class:`stdiff.pp.Normalizer`, fitted once on the training sections); nothing is rescaled per
prediction. Pixels outside the tissue mask are ignored:

- **PCC**: Pearson r over the tissue pixels of one gene; ``NaN`` when the truth (or the prediction)
  is constant there, and such genes are left out of the mean/median (their number is reported).
- **RMSE**: root mean squared error over the tissue pixels.
- **SSIM**: :func:`skimage.metrics.structural_similarity` of the two maps with the off-tissue pixels
  set to 0 and ``data_range`` = the truth's range on tissue (identical for every method), averaged
  over the tissue pixels of the SSIM map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

METRICS: tuple[str, ...] = ("pcc", "rmse", "ssim")


def _masked(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(G, H, W)`` + ``(H, W)`` mask → ``(G, n)`` tissue pixels."""
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if values.ndim == 2:
        values = values[None]
    if values.shape[-2:] != mask.shape:
        raise ValueError(f"Map shape {values.shape[-2:]} does not match the mask shape {mask.shape}.")
    return values[:, mask]


def _check(pred: np.ndarray, truth: np.ndarray) -> None:
    if np.shape(pred) != np.shape(truth):
        raise ValueError(f"Prediction shape {np.shape(pred)} differs from the truth's {np.shape(truth)}.")


def pcc(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson r per gene over the tissue pixels (``(G,)``; NaN where either side is constant)."""
    _check(pred, truth)
    p, t = _masked(pred, mask), _masked(truth, mask)
    if p.shape[1] < 2:
        return np.full(p.shape[0], np.nan)
    ok = (np.ptp(p, axis=1) > 0) & (np.ptp(t, axis=1) > 0)
    p = p - p.mean(1, keepdims=True)
    t = t - t.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * t).sum(1) / np.sqrt((p**2).sum(1) * (t**2).sum(1))
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


def rmse(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Root mean squared error per gene over the tissue pixels (``(G,)``)."""
    _check(pred, truth)
    p, t = _masked(pred, mask), _masked(truth, mask)
    if p.shape[1] == 0:
        return np.full(p.shape[0], np.nan)
    return np.sqrt(((p - t) ** 2).mean(1))


def data_ranges(truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-gene SSIM ``data_range``: the truth's range over the tissue pixels (0 off tissue included)."""
    t = _masked(truth, mask)
    if t.shape[1] == 0:
        return np.zeros(t.shape[0])
    return np.maximum(t.max(1), 0.0) - np.minimum(t.min(1), 0.0)


def ssim(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, data_range: np.ndarray | None = None) -> np.ndarray:
    """SSIM per gene (``(G,)``): off-tissue pixels set to 0, fixed per-gene ``data_range``, mean over tissue.

    ``data_range`` defaults to :func:`data_ranges` of the truth, so it is the same for every method.
    Genes whose truth is constant (range 0) get NaN. The window is 7 pixels (smaller maps use the
    largest odd window that fits, at least 3).
    """
    from skimage.metrics import structural_similarity

    _check(pred, truth)
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if pred.ndim == 2:
        pred, truth = pred[None], truth[None]
    mask = np.asarray(mask, dtype=bool)
    if data_range is None:
        data_range = data_ranges(truth, mask)
    data_range = np.broadcast_to(np.asarray(data_range, dtype=np.float64), (pred.shape[0],))
    side = min(mask.shape)
    win = min(7, side if side % 2 else side - 1)
    out = np.full(pred.shape[0], np.nan)
    if win < 3 or not mask.any():
        return out
    for g in range(pred.shape[0]):
        if not data_range[g] > 0:
            continue
        p = np.where(mask, pred[g], 0.0)
        t = np.where(mask, truth[g], 0.0)
        _, smap = structural_similarity(t, p, win_size=win, data_range=float(data_range[g]), full=True)
        out[g] = float(smap[mask].mean())
    return out


def evaluate(
    pred: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    genes: Sequence[str],
    data_range: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """All metrics per gene: ``{gene: {"pcc", "rmse", "ssim"}}`` (NaN kept as ``float('nan')``)."""
    values = {
        "pcc": pcc(pred, truth, mask),
        "rmse": rmse(pred, truth, mask),
        "ssim": ssim(pred, truth, mask, data_range),
    }
    return {g: {m: float(values[m][i]) for m in METRICS} for i, g in enumerate(genes)}


def summarize(per_gene: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and median of each metric over genes (NaN genes left out) and how many were left out."""
    out: dict[str, dict[str, float]] = {"mean": {}, "median": {}, "n_nan": {}}
    for m in METRICS:
        v = np.array([d[m] for d in per_gene.values()], dtype=np.float64)
        ok = np.isfinite(v)
        out["mean"][m] = float(v[ok].mean()) if ok.any() else float("nan")
        out["median"][m] = float(np.median(v[ok])) if ok.any() else float("nan")
        out["n_nan"][m] = int((~ok).sum())
    return out


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
    dr = data_ranges(pool_t, pool_m)
    r = pcc(pool_p, pool_t, pool_m)
    e = rmse(pool_p, pool_t, pool_m)
    weights = np.array([m.sum() for m in masks], dtype=np.float64)
    ss = np.stack([ssim(p, t, m, dr) for p, t, m in zip(preds, truths, masks)])
    with np.errstate(invalid="ignore"):
        s = (ss * weights[:, None]).sum(0) / weights.sum()
    return {g: {"pcc": float(r[i]), "rmse": float(e[i]), "ssim": float(s[i])} for i, g in enumerate(genes)}


def block_artefact_index(maps: np.ndarray, block: int, mask: np.ndarray | None = None) -> float:
    """Block-artefact index of HR maps ``(G, H, W)`` (counts) on a grid of ``block × block`` HR-pixel blocks.

    Per gene, the mean absolute ``log1p`` difference between neighbouring HR pixels that straddle a
    block boundary, divided by the same between neighbours inside a block (both pixels on ``mask``);
    the median over genes. A map with no block structure scores about 1 (the truth does); blocky
    upsampling scores far above 1 (``inf`` for constant blocks). ``NaN`` when there are no pairs of
    either kind.
    """
    x = np.log1p(np.clip(np.asarray(maps, dtype=np.float64), 0, None))
    if x.ndim == 2:
        x = x[None]
    G, H, W = x.shape
    m = np.ones((H, W), bool) if mask is None else np.asarray(mask, bool)
    b = int(block)
    ratios = []
    dx, dy = np.abs(np.diff(x, axis=2)), np.abs(np.diff(x, axis=1))
    okx, oky = m[:, 1:] & m[:, :-1], m[1:, :] & m[:-1, :]
    bx = np.broadcast_to(((np.arange(W - 1) + 1) % b == 0)[None, :], okx.shape)
    by = np.broadcast_to(((np.arange(H - 1) + 1) % b == 0)[:, None], oky.shape)
    across = np.concatenate([dx[:, okx & bx], dy[:, oky & by]], axis=1)
    inside = np.concatenate([dx[:, okx & ~bx], dy[:, oky & ~by]], axis=1)
    if across.shape[1] == 0 or inside.shape[1] == 0:
        return float("nan")
    num, den = across.mean(1), inside.mean(1)
    # constant blocks (no gradient inside) with steps between them are infinitely blocky
    ratios = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, np.nan))
    return float(np.nanmedian(ratios)) if np.isfinite(ratios).any() else float("nan")


def gap_spot_ratio(maps: np.ndarray, section) -> float:
    """Mean |HR gradient| of ``log1p`` counts in the gaps ÷ inside the spots, median over genes.

    Gaps are the HR pixels 0.35–0.55 pitch from the nearest spot centre (35–55 µm on Visium), spots
    the pixels within 0.2 pitch of one (0–20 µm); a pair of neighbouring pixels counts when both are
    in the band and on the truth mask. Divided by the truth's own ratio this is the gap/spot index
    (1: like the truth; a map flat inside each spot and changing in the gaps scores above 1).
    ``NaN`` for sections without spots.
    """
    if section.spots is None:
        return float("nan")
    d, _ = section.footprints().nearest()
    p = float(section.spots.geometry.pitch_um)
    m = section.truth_mask
    x = np.log1p(np.clip(np.asarray(maps, np.float64), 0, None))
    out = []
    for lo, hi in ((0.35 * p, 0.55 * p), (0.0, 0.2 * p)):
        band = (d >= lo) & (d <= hi) & m
        gx = np.abs(np.diff(x, axis=2))[:, band[:, 1:] & band[:, :-1]]
        gy = np.abs(np.diff(x, axis=1))[:, band[1:, :] & band[:-1, :]]
        out.append(np.concatenate([gx, gy], axis=1).mean(1) if gx.size + gy.size else np.full(x.shape[0], np.nan))
    # flat inside the spots with steps in the gaps is infinitely lattice-like
    ratio = np.where(out[1] > 0, out[0] / np.where(out[1] > 0, out[1], 1.0), np.where(out[0] > 0, np.inf, np.nan))
    return float(np.nanmedian(ratio)) if (~np.isnan(ratio)).any() else float("nan")
