"""The default without a reference: the expression rate behind a section's spots, fitted by their likelihood.

What a Visium-only lab has is one slide's spots and its H&E. A spot's count is a noisy measurement of
the expression under its footprint, so :class:`SpotRate` models a non-negative rate per HR pixel,
counts per pixel, and fits it to the spots by the Poisson likelihood of each footprint's sum:

``λ_g(x) = L(x) · s_g(x)``

- ``L(x)``, the total counts per pixel (all genes of the table): the soft histology classes ``ψ_k(x)``
  (:class:`~stdiff.pp.HistologyClasses`, unsupervised) times class densities ``c_k`` fitted to the
  spots' library sizes (:func:`~stdiff.spots.fit_class_rates`), blended with a flat density, times a
  smooth field of the spots' totals (:func:`~stdiff.spots.ratio_field`, local likelihood);
- ``s_g(x)``, the gene's share of the total: its share in each histology class, fitted with every
  spot's own total as exposure (a spot's capture does not enter the shares), blended with the gene's
  mean share, times a smooth field of the gene's counts over what the spots' totals and histology
  expect.

The blends and the fields' widths are chosen per gene by the held-out deviance of spots left out by
cross-fitting (``n_folds`` folds; the histology class rates are fitted per fold, the written ones are
the folds' mean). No spot's count is written back onto it: the map is the fitted rate, smooth across
the spot lattice, defined on all tissue the histology shows, and a spot whose count is implausible
given its neighbours and histology is shrunk towards them. The standard deviation is the predictive
one (:mod:`stdiff.spots._predictive`): counting noise around the rate times a log-normal error whose
per-gene size is calibrated so that 90% intervals hold 90% of the held-out spots' counts, growing
with the distance to the nearest measured spot. The fit is spot-level arrays only, deterministic
for a seed, and stops on fixed work budgets (no wall clock).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from .._constants import Checkpoint, Key
from .._utils import logger, one_blas_thread, plain
from ..pp import STAIN_REFERENCE_KEY, HistologyClasses, Section, histology_features, stain_reference
from ..spots import CUTOFF, FLOOR, LEVEL, calibrate_error, distance_scale, gaussian_kernel, ratio_field
from ..spots import predictive_quantile, predictive_sample, predictive_sd
from . import _spot_rate_fit as fitting
from ._measurements import measured_spots
from .base import BaseModel, ChunkGeometry, LearnerCount

#: Fewest measured spots a section needs to teach itself.
MIN_SPOTS = 16
#: Fewest spots needed to calibrate the spread.
MIN_CALIBRATION = 20
#: Numbers of histology classes tried when ``n_classes=None``.
CLASS_COUNTS: tuple[int, ...] = (16, 32, 64)
#: Tissue scales of the histology features (µm; ``None``: the HR pixel itself).
FEATURE_SCALES: tuple[float | None, ...] = (None, 30.0, 100.0)


class SpotRate(BaseModel):
    """The expression rate behind a spot section, fitted by the likelihood of its spots (see the module).

    Parameters
    ----------
    n_folds
        Cross-fitting folds of the measured spots (each fold is predicted by a fit that did not see it).
    n_classes
        Soft histology classes; ``None`` (default): 16, 32 or 64, chosen on the section's own spots by
        the cross-fitted deviance of what the histology alone predicts.
    floor
        Relative log-variance of the rate's error at a measurement centre (:data:`stdiff.spots.FLOOR`).
    """

    FORMAT: ClassVar[str] = Checkpoint.SPOT_RATE
    #: Working memory of one window's prediction (MB), which sets the chunks of :func:`stdiff.tl.superresolve`.
    CHUNK_BUDGET_MB: ClassVar[int] = 512
    UNHASHED: ClassVar[tuple[str, ...]] = (Checkpoint.TRAIN_INFO, "held_out", "calibration")
    #: It reads a section's spots and histology, never its spot-native LR map (not computed for it), and
    #: its value at a pixel does not depend on the window around it (chunks need no halo).
    reads_lr_map: ClassVar[bool] = False
    pointwise: ClassVar[bool] = True

    def __init__(self, *, n_folds: int = 5, n_classes: int | None = None, floor: float = FLOOR) -> None:
        if n_folds < 2:
            raise ValueError(f"n_folds must be ≥ 2 (cross-fitting needs two folds), got {n_folds}.")
        self.n_folds, self.floor = int(n_folds), float(floor)
        self.n_classes = None if n_classes is None else int(n_classes)
        self.class_scores: dict[int, float] = {}
        self.genes: list[str] = []
        self.factor, self.lr_um, self.pitch = 1, 1.0, 1.0
        self.config = _geometry(1, self.n_folds)
        self.sampling_steps = 0
        self.fitted: dict[str, Any] = {}
        self.sigma: np.ndarray | None = None
        self.calibration: dict[str, Any] = {}
        self.held_out: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ fit
    @one_blas_thread
    def fit(self, section: Section, *, seed: int = 0, progress: bool = False, **_: Any) -> SpotRate:
        """Fit the rate to ``section``'s spots and histology, and calibrate the spread (its truth is never read).

        ``progress`` shows a bar over the fit's stages (histology, classes, the spot-level fit).
        """
        from tqdm.auto import tqdm

        with tqdm(total=3, desc="fitting the default", disable=not progress, leave=False) as bar:
            self._fit(section, seed, bar)
        return self

    def _fit(self, section: Section, seed: int, bar) -> None:
        measured, fp = measured_spots(section)
        mask = section.mask_hr
        on_tissue = np.asarray(fp.matrix @ mask.ravel().astype(np.float64)).ravel()
        usable = fp.inside & (on_tissue > 0)
        if usable.sum() < MIN_SPOTS:
            raise ValueError(
                f"Section {section.name!r} is too small for self-supervised learning: {int(usable.sum())} measured spots "
                f"on tissue, at least {MIN_SPOTS} needed to learn from its own spots; pass a trained model= "
                "(stdiff.tl.train on a reference) instead."
            )
        self.genes, self.factor, self.lr_um = list(section.genes), section.factor, section.lr_um
        self.pitch = float(measured.geometry.pitch_um)
        self.config = _geometry(section.he_scale, self.n_folds)
        self.stain = dict(section.meta.get(STAIN_REFERENCE_KEY) or stain_reference([section.he]))
        bar.set_postfix_str("histology features")
        x = self._features(section)
        bar.update()
        self.feature_mean = x[:, mask].mean(1)
        self.feature_sd = np.maximum(x[:, mask].std(1), 1e-6)
        z = self._standardise(x).astype(np.float32).astype(np.float64)  # what prediction sees, to the bit
        # the whole section's features, reused for every window of it at prediction (no recomputation,
        # and no window-edge effects of the tissue-scale smoothing)
        self._window = (tuple(section.origin), float(section.hr_um), z.astype(np.float32), section.he)
        del x
        bar.set_postfix_str("histology classes")
        self.classes, data = self._choose_classes(z, mask, fp, measured, seed)
        bar.update()
        bar.set_postfix_str(f"{len(data.totals)} spots × {len(self.genes)} genes, {self.n_folds} folds")
        self._fit_spots(data, seed)
        bar.update()
        self.calibration["histology_classes"] = int(self.classes.n_classes)
        logger.info("SpotRate on %s: %d spots, %d genes, %d histology classes; held-out r %.3f (6 nearest spots %.3f).",
                    section.name, len(data.totals), len(self.genes), self.classes.n_classes,
                    self.calibration.get("held_out_pcc", np.nan), self.calibration.get("nearest6_pcc", np.nan))  # fmt: skip

    def _choose_classes(self, z: np.ndarray, mask: np.ndarray, fp, measured, seed: int):
        """The histology classes (one of :data:`CLASS_COUNTS`, or ``n_classes``) and the spots' data under them.

        With ``n_classes=None`` the number of classes is chosen by the held-out deviance of what the
        histology alone predicts under cross-fitting (:func:`~._spot_rate_fit.choose_classes`), on the
        section's own spots.
        """
        on_tissue = np.asarray(fp.matrix @ mask.ravel().astype(np.float64)).ravel()
        usable = fp.inside & (on_tissue > 0)
        spots = measured.subset(usable)
        totals, counts = spots.library_size(), np.asarray(spots.counts, np.float64)
        A = fp.matrix[usable][:, np.flatnonzero(mask.ravel())]  # footprints over the tissue pixels
        area = np.asarray(A.sum(1)).ravel()
        fold = fitting.folds_of(len(totals), self.n_folds, seed)
        tried = CLASS_COUNTS if self.n_classes is None else (self.n_classes,)
        classes, design, members, self.class_scores = fitting.choose_classes(
            z, mask, A, totals, counts, fold, tried, seed=seed
        )
        data = _SpotData(xy=spots.xy.T, totals=totals, counts=counts, design=design, area=area, members=members)
        return classes, data

    def _fit_spots(self, d: _SpotData, seed: int) -> None:
        """Cross-fit, choose the blends and widths, keep what prediction needs and calibrate."""
        fold = fitting.folds_of(len(d.totals), self.n_folds, seed)
        members = d.members  # the class choice's cross-fit when it covered every gene
        if members is None:
            members = fitting.cross_fit(d.design, d.totals, d.counts, fold)
        w_total, s_total, held_total = fitting.select_total(d.xy, self.pitch, d.area, d.totals, members, fold)
        w_share, s_share, held_share = fitting.select_genes(d.xy, self.pitch, d.totals, d.counts, members, fold)
        c, W = members.c.mean(0), members.W.mean(0)
        flat_density = d.totals.sum() / max(float(d.area.sum()), 1e-300)
        total = d.design @ c
        base = (1 - w_total) * d.area * flat_density + w_total * total
        mean_share = d.counts.sum(1) / max(float(d.totals.sum()), 1e-300)
        share = ((d.design * c[None]) @ W.T).T / np.maximum(total, 1e-300)[None]
        expected = ((1 - w_share)[:, None] * mean_share[:, None] + w_share[:, None] * share) * d.totals[None]
        self.fitted = {
            "xy": d.xy, "totals": d.totals, "counts": d.counts, "base": base, "expected": expected,
            "c": c, "W": W, "flat_density": float(flat_density), "mean_share": mean_share,
            "total_weight": float(w_total), "total_width": float(s_total),
            "share_weight": w_share, "share_width": s_share,
        }  # fmt: skip
        pred = held_share * held_total[None]
        self.held_out = {"pred": pred, "y": d.counts, "distance": fitting.held_out_distance(d.xy, fold)}
        self.calibration = {
            "held_out_pcc": fitting.mean_pearson(pred, d.counts),
            "nearest6_pcc": fitting.mean_pearson(fitting.nearest_mean(d.xy, d.counts, fold), d.counts),
            "total_histology_weight": float(w_total),
            "total_width_pitch": float(s_total),
            "share_histology_weight_median": float(np.median(w_share)),
            "share_width_pitch_median": float(np.median(s_share)),
        }
        self.calibrate(seed=seed)

    def calibrate(self, *, floor: float | None = None, seed: int = 0) -> None:
        """Per-gene σ of the rate's error on the held-out spots (kept from :meth:`fit`); none when too few."""
        if floor is not None:
            self.floor = float(floor)
        pred, y = self.held_out["pred"], self.held_out["y"]
        n = y.shape[1]
        if n < MIN_CALIBRATION:
            self.sigma = None
            self.calibration.update(calibrated=False, reason=f"{n} held-out spots (< {MIN_CALIBRATION})")
            logger.warning("Only %d held-out spots: the spread cannot be calibrated and is not given.", n)
            return
        scale = distance_scale(self.held_out["distance"], self.pitch, self.floor)
        sigma, got = calibrate_error(pred, y, scale, seed=seed)
        self.sigma = sigma.astype(np.float64)
        self.calibration.update(
            calibrated=True, level=LEVEL, held_out_spots=int(n), coverage_held_out=float(np.mean(got)),
            sigma_median=float(np.median(sigma)), distance_floor=self.floor,
            what="sd of the counts per HR pixel: Poisson around the fitted rate times a log-normal error whose "
            "log-variance grows with the distance to the nearest measured spot and is calibrated per gene so 90% "
            "intervals hold 90% of cross-fitted held-out spots",
        )  # fmt: skip

    # ------------------------------------------------------------------ features
    def _features(self, section: Section) -> np.ndarray:
        section.meta[STAIN_REFERENCE_KEY] = self.stain
        return histology_features(section, scales_um=FEATURE_SCALES).values.astype(np.float64)

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.feature_mean[:, None, None]) / self.feature_sd[:, None, None], -5.0, 5.0)

    def _standardised(self, section: Section) -> np.ndarray:
        """``(F, H, W)`` standardised features of ``section``: cut from the fitted section's when it lies inside it."""
        cached = getattr(self, "_window", None)
        if cached is not None:
            (x0, y0), hr_um, z, he = cached
            H, W = section.mask_hr.shape
            j0, i0 = (section.origin[0] - x0) / hr_um, (section.origin[1] - y0) / hr_um
            aligned = abs(hr_um - section.hr_um) < 1e-9 and abs(j0 - round(j0)) < 1e-6 and abs(i0 - round(i0)) < 1e-6
            j0, i0 = round(j0), round(i0)
            if aligned and j0 >= 0 and i0 >= 0 and i0 + H <= z.shape[1] and j0 + W <= z.shape[2]:
                k = section.he_scale
                crop = he[:, i0 * k : (i0 + H) * k, j0 * k : (j0 + W) * k]
                if crop.shape == section.he.shape and np.array_equal(crop[:, ::7, ::7], section.he[:, ::7, ::7]):
                    return z[:, i0 : i0 + H, j0 : j0 + W].astype(np.float64)
        return self._standardise(self._features(section)).astype(np.float32).astype(np.float64)

    # ------------------------------------------------------------------ prediction
    def rate(self, section: Section) -> np.ndarray:
        """``(G, H, W)`` fitted counts per HR pixel of ``section`` (0 off its tissue mask)."""
        if not self.fitted:
            raise RuntimeError("Fit the model first (SpotRate().fit(section)).")
        f = self.fitted
        mask = section.mask_hr
        G = len(self.genes)
        out = np.zeros((G, mask.size), np.float32)
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            return out.reshape(G, *mask.shape)
        psi = self.classes.soft(self._standardised(section)[:, mask].T)  # (P, K)
        pts = _pixel_centres(section, idx)
        hist_total = psi @ f["c"]
        w = f["total_weight"]
        total = ((1 - w) * f["flat_density"] + w * hist_total) * ratio_field(
            gaussian_kernel(pts, f["xy"], f["total_width"] * self.pitch), f["totals"][None], f["base"][None]
        )[0]
        share_hist = ((psi * f["c"][None]) @ f["W"].T).T / np.maximum(hist_total, 1e-300)[None]  # (G, P)
        for width in np.unique(f["share_width"]):
            genes = np.flatnonzero(f["share_width"] == width)
            field = ratio_field(gaussian_kernel(pts, f["xy"], width * self.pitch), f["counts"][genes], f["expected"][genes])
            ws = f["share_weight"][genes][:, None]
            share = (1 - ws) * f["mean_share"][genes][:, None] + ws * share_hist[genes]
            out[np.ix_(genes, idx)] = (field * share * total[None]).astype(np.float32)
        return out.reshape(G, *mask.shape)

    def working_bytes_per_pixel(self, n_genes: int, he_scale: int) -> float:
        """Bytes one HR pixel of a window costs :meth:`predict_section`: float64 temporaries per gene, the
        histology, and the sparse kernel of the widest fitted field (~40 bytes per spot in its reach)."""
        out = 56.0 * n_genes + 4.0 * 3 * he_scale**2 + 8.0 * 64
        if self.fitted:
            widest = max(self.fitted["total_width"], float(np.max(self.fitted["share_width"]))) * self.pitch
            out += 40.0 * np.pi * (CUTOFF * widest) ** 2 / (0.866 * self.pitch**2)
        return out

    def error_variance(self, section: Section) -> np.ndarray | None:
        """``(G, H, W)`` log-variance of the rate's error at every HR pixel (``None`` when not calibrated)."""
        if self.sigma is None:
            return None
        from scipy.spatial import cKDTree

        H, W = section.mask_hr.shape
        d = cKDTree(self.fitted["xy"]).query(_pixel_centres(section, np.arange(H * W)), k=1)[0].reshape(H, W)
        return (self.sigma[:, None, None] * distance_scale(d, self.pitch, self.floor)[None]) ** 2

    @one_blas_thread
    def predict_section(self, section: Section, *, quantiles: tuple[float, ...] = (), **_: Any) -> dict[str, Any]:
        """``mean`` ``(G, H, W)`` counts per HR pixel, its predictive ``std`` (or ``None``) and ``q<p>`` bounds."""
        mean = self.rate(section)
        s2 = self.error_variance(section)
        out: dict[str, Any] = {Key.pred.MEAN: mean, Key.pred.STD: None}
        if s2 is not None:
            out[Key.pred.STD] = predictive_sd(mean, s2).astype(np.float32)
            for q in quantiles:  # gene by gene: the inversion's float64 temporaries stay one map large
                levels = [predictive_quantile(q, m, v) for m, v in zip(mean, s2)]
                out[Key.pred.quantile(q)] = np.array(levels, np.float32)
        return out

    def sample(self, mean: np.ndarray, section: Section, n: int, *, seed: int = 0) -> np.ndarray | None:
        """``n`` draws ``(n, G, H, W)`` of counts per HR pixel from the calibrated predictive."""
        s2 = self.error_variance(section)
        return None if s2 is None else predictive_sample(np.random.default_rng(seed), mean, s2, n)

    # ------------------------------------------------------------------ provenance and persistence
    def provenance(self, **_: Any) -> dict[str, Any]:
        """Class and hash, how the mean is made, and where the spread comes from (no sampler)."""
        return {
            **super().provenance(),
            Key.prov.MEAN: "fitted expression rate: histology classes × local-likelihood fields of the spots' totals "
            "and shares, fitted by the Poisson likelihood of the footprint sums (cross-fitted; no spot painted on)",
            Key.prov.SAMPLER: "none: std is the predictive sd calibrated on held-out spots"
            if self.sigma is not None
            else "none: too few spots to calibrate a spread, no std written",
            Key.prov.CALIBRATION: self.calibration,
            Key.prov.NUM_INFERENCE_STEPS: 0,
        }

    def state(self) -> dict[str, Any]:
        """The fitted model as plain Python and arrays (what :meth:`from_state` rebuilds)."""
        if not self.fitted:
            raise RuntimeError("Fit the model first (SpotRate().fit(section)).")
        return {
            "options": {"n_folds": self.n_folds, "n_classes": self.n_classes, "floor": self.floor},
            "genes": list(self.genes), "factor": int(self.factor), "lr_um": float(self.lr_um),
            "pitch": float(self.pitch), "geometry": asdict(self.config), "stain": plain(self.stain),
            "feature_mean": self.feature_mean.tolist(), "feature_sd": self.feature_sd.tolist(),
            "classes": self.classes.state(),
            "fitted": {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in self.fitted.items()},
            "sigma": None if self.sigma is None else self.sigma.tolist(),
            "held_out": {k: np.asarray(v).tolist() for k, v in self.held_out.items()},
            "calibration": plain(self.calibration),
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SpotRate:
        """Rebuild a fitted model from :meth:`state`."""
        m = cls(**state["options"])
        m.genes, m.factor, m.lr_um, m.pitch = list(state["genes"]), int(state["factor"]), float(state["lr_um"]), float(state["pitch"])
        geometry = dict(state["geometry"])
        m.config = ChunkGeometry.from_dict(geometry, count_name="n_folds")
        m.stain = dict(state["stain"])
        m.feature_mean, m.feature_sd = np.asarray(state["feature_mean"]), np.asarray(state["feature_sd"])
        m.classes = HistologyClasses.from_state(state["classes"])
        m.fitted = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in state["fitted"].items()}
        m.sigma = None if state["sigma"] is None else np.asarray(state["sigma"], np.float64)
        m.held_out = {k: np.asarray(v) for k, v in state["held_out"].items()}
        m.calibration = dict(state["calibration"])
        return m  # fmt: skip


@dataclass
class _SpotData:
    """The measured spots as the fit sees them: centres ``(n, 2)``, totals, counts ``(G, n)``, class areas ``(n, K)``."""

    xy: np.ndarray
    totals: np.ndarray
    counts: np.ndarray
    design: np.ndarray
    area: np.ndarray
    members: fitting.Members | None = None


def default_learner(section: Section) -> str:
    """What ``superresolve(model=None)`` fits: ``"likelihood"`` for spots, ``"aggregation"`` for square LR maps.

    A spot is a sample of the expression under it, taken apart from any other measurement, so the
    default fits the rate behind the spots (:class:`SpotRate`). An LR pixel of binned transcripts or
    of a gene image *is* the sum of the HR truth under it (the same molecules), so the default
    distributes it exactly (:class:`~stdiff.models.SelfSupervisedEnsemble`).
    """
    return "aggregation" if section.spots is None else "likelihood"


def _pixel_centres(section: Section, idx: np.ndarray) -> np.ndarray:
    """``(len(idx), 2)`` µm centres of the HR pixels at flat indices ``idx``."""
    H, W = section.mask_hr.shape
    ii, jj = np.divmod(np.asarray(idx), W)
    return np.stack([section.origin[0] + (jj + 0.5) * section.hr_um, section.origin[1] + (ii + 0.5) * section.hr_um], 1)


def _geometry(he_scale: int, learners: int) -> ChunkGeometry:
    """What chunked prediction reads of this model: 4-LR-pixel tiles, the histology scale, its learners."""
    learners_ = LearnerCount(learners, "spot-likelihood")
    return ChunkGeometry(tile_lr=4, he_scale=he_scale, sampler=learners_, count_name="n_folds")
