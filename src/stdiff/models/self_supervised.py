"""Native-scale self-supervision for a spot-only section: cross-fitted aggregation-consistency fits.

What a Visium-only lab has is one slide's spots and its H&E. :class:`SelfSupervisedEnsemble` splits
the slide's measurements (spots, or LR pixels of a square map) into ``n_models`` folds and fits one
:class:`~stdiff.models.AggregationConsistency` model per fold with that fold held out, at the native
scale (no coarsening, no assumption that the tissue looks alike across scales).

- **Mean.** Each member distributes every measured count by its histology abundance (gaps between
  spots take the interpolated scaling), so each member — and their mean — sums exactly to every
  spot's count under its footprint.
- **Spread, calibrated on held-out spots.** Each held-out spot is predicted by the member that did
  not see it, from its histology abundance and the neighbouring spots (cross-fitting). The
  predictive distribution of a count is Poisson around the mean ``μ`` times a log-normal error
  ``exp(σ_g ξ)`` (median ``μ``), with per-gene ``σ_g`` chosen so that the central 90% interval holds
  90% of the held-out spots' counts. The ``std`` written is that distribution's sd for each HR
  pixel, ``sqrt(μ e^{σ²/2} + μ² e^{σ²} (e^{σ²} − 1))``: the counting noise of an HR pixel plus the
  calibrated error of its mean. It is calibrated at the
  spot level; within-spot variation beyond counting noise is not seen by any spot and is not in it.
  With too few held-out spots to calibrate, no spread is given (``std`` is ``None``).

It has the prediction interface of :class:`~stdiff.models.DiffST` (``predict_section``, ``genes``,
``factor``, ``lr_um``, ``config.tile_lr``, ``model_hash``), so :func:`stdiff.tl.superresolve` streams
it chunk by chunk like a trained model.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import numpy as np

from .._constants import Checkpoint, Key
from .._utils import logger, plain
from ..pp import Section
from ..spots import RENDER_CUTOFF, RENDER_SIGMA
from ._measurements import measurements
from .aggregation_consistency import AggregationConsistency
from .base import BaseModel, ChunkGeometry, LearnerCount

#: Fewest tissue measurements (spots) a section needs to teach itself.
MIN_SPOTS = 16
#: Fewest held-out measurements needed to calibrate the spread.
MIN_CALIBRATION = 20
#: Nominal level of the interval calibrated on held-out spots.
LEVEL = 0.9
#: The error of the mean grows with the distance ``d`` to the nearest measurement centre: its sd is
#: ``σ_g · sqrt(FLOOR + (1 − FLOOR) · min(1, d / pitch))``, calibrated on held-out spots (which lie
#: about a pitch from the nearest measured one). Chosen on validation data by the mean distance of the
#: 90% coverage from 0.90 over four datasets (0.047 against 0.054 for a constant error;
#: benchmarks/default_spread.py, benchmarks/results/validation/default_spread.txt).
FLOOR = 0.25


def _centres(section: Section) -> tuple[np.ndarray, float]:
    """Centres ``(m, 2)`` of the measurements (spots or LR pixels) and their pitch (µm)."""
    if section.spots is not None:
        return section.spots.xy.T, float(section.spots.geometry.pitch_um)
    h, w = section.shape_lr
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    xy = np.stack(
        [
            section.origin[0] + (jj.ravel() + 0.5) * section.lr_um,
            section.origin[1] + (ii.ravel() + 0.5) * section.lr_um,
        ],
        1,
    )
    return xy, float(section.lr_um)


def predict_held_out(
    centres: np.ndarray,
    pitch: float,
    y: np.ndarray,
    measured: np.ndarray,
    tissue: np.ndarray,
    train: np.ndarray,
    target: np.ndarray,
    blend: float,
) -> np.ndarray:
    """Predicted counts ``(G, n_target)`` of measurements no fit saw, from the ``train`` ones around them.

    The histology abundance under each target (``measured``) times the neighbours' interpolated
    count-to-abundance ratio, blended (``blend``) with the neighbours' interpolated density times
    the target's tissue area: what the distributed map holds under a spot in a gap.
    """
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    sigma = RENDER_SIGMA * pitch
    src = np.nonzero(train)[0]
    dst = np.nonzero(target)[0]
    dist = cKDTree(centres[dst]).sparse_distance_matrix(
        cKDTree(centres[src]), RENDER_CUTOFF * sigma, output_type="coo_matrix"
    )
    K = sp.csr_matrix((np.exp(-(dist.data**2) / (2 * sigma**2)), (dist.row, dist.col)), shape=(len(dst), len(src)))

    def ratio(num, den):
        # a pseudo-neighbour at the section's overall ratio (a tenth of a neighbour's weight) keeps
        # the prediction of a spot whose neighbours all read 0 above 0
        prior = num.sum(1, keepdims=True) / np.maximum(den.sum(1, keepdims=True), 1e-12)
        n, d = np.asarray(K @ num.T).T + 0.1 * prior, np.asarray(K @ den.T).T + 0.1
        return n / d

    hist = ratio(y[:, src], measured[:, src]) * measured[:, dst]
    flat = ratio(y[:, src], np.broadcast_to(tissue[src][None], y[:, src].shape)) * tissue[dst][None]
    return (1 - blend) * hist + blend * flat


def distance_scale(distance: np.ndarray, pitch: float, floor: float = FLOOR) -> np.ndarray:
    """``sqrt(floor + (1 − floor) · min(1, d / pitch))``: how the error of the mean grows away from a measurement."""
    return np.sqrt(floor + (1.0 - floor) * np.minimum(1.0, np.asarray(distance, np.float64) / pitch))


def calibrate_lognormal(
    pred: np.ndarray,
    y: np.ndarray,
    *,
    scale: np.ndarray | None = None,
    level: float = LEVEL,
    n_draws: int = 200,
    max_spots: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene σ of ``y ~ Poisson(pred · exp(σ · scale · ξ))``: its central ``level`` interval holds ``level``.

    ``pred``, ``y``: ``(G, m)`` held-out predictions and counts (at most ``max_spots`` of them are
    used); ``scale`` ``(m,)``: each one's relative error scale (default 1). The interval widens with
    σ, so σ is found by bisection on [0, 3] for all genes at once, with the same random stream at
    every step. Returns ``(σ (G,), achieved coverage (G,))``.
    """
    rng = np.random.default_rng(seed)
    G, m = y.shape
    scale = np.ones(m) if scale is None else np.asarray(scale, np.float64)
    if m > max_spots:
        keep = rng.choice(m, max_spots, replace=False)
        pred, y, scale, m = pred[:, keep], y[:, keep], scale[keep], max_spots
    xi = rng.standard_normal((n_draws, 1, m)) * scale[None, None]
    a = (1 - level) / 2
    base = np.maximum(pred, 1e-12)[None]

    def coverage(s: np.ndarray) -> np.ndarray:
        s = s[None, :, None]
        draws = np.random.default_rng(seed + 1).poisson(base * np.exp(s * xi))
        lo, hi = np.quantile(draws, [a, 1 - a], axis=0)
        return ((y >= lo) & (y <= hi)).mean(-1)

    lo_s, hi_s = np.zeros(G), np.full(G, 3.0)
    done = coverage(lo_s) >= level  # counting noise alone covers: σ = 0
    hi_s[done] = 0.0
    for _ in range(16):
        mid = 0.5 * (lo_s + hi_s)
        ok = coverage(mid) >= level
        hi_s = np.where(ok | done, np.where(done, 0.0, mid), hi_s)
        lo_s = np.where(ok | done, lo_s, mid)
    return hi_s, coverage(hi_s)


class SelfSupervisedEnsemble(BaseModel):
    """Histology-distributed super-resolution learnt from a section's own spots (no HR truth).

    Parameters
    ----------
    n_models
        Members (folds of the measurements; each member holds one fold out).
    max_time
        Time cap per member in seconds.
    floor
        Relative sd of the mean's error at a measurement centre (:data:`FLOOR`).
    """

    FORMAT: ClassVar[str] = Checkpoint.SELF_SUPERVISED_ENSEMBLE
    #: Diagnostics of the fit (the held-out predictions and the calibration's report) are not hashed.
    UNHASHED: ClassVar[tuple[str, ...]] = (Checkpoint.TRAIN_INFO, "held_out", "calibration")

    def __init__(self, *, n_models: int = 5, max_time: float = 60.0, floor: float = FLOOR) -> None:
        if n_models < 2:
            raise ValueError(f"n_models must be ≥ 2 (cross-fitting needs two folds), got {n_models}.")
        self.n_models = int(n_models)
        self.max_time = float(max_time)
        self.floor = float(floor)
        self.pitch = 1.0
        self.members: list[AggregationConsistency] = []
        self.genes: list[str] = []
        self.factor = 1
        self.lr_um = 1.0
        self.config = _geometry(1, self.n_models)
        self.sampling_steps = 0
        self.sigma: np.ndarray | None = None
        self.calibration: dict[str, Any] = {}

    def fit(self, section: Section, *, seed: int = 0, device: str = "cpu") -> SelfSupervisedEnsemble:
        """Fit the members on ``section``'s measurements and histology, and calibrate the spread.

        Its HR truth, if any, is never read.
        """
        m = measurements(section, "cpu")
        usable = m.usable
        n_spots = int(usable.sum())
        if n_spots < MIN_SPOTS:
            raise ValueError(
                f"Section {section.name!r} is too small for self-supervised learning: {n_spots} measured spots (or LR "
                f"pixels) on tissue, at least {MIN_SPOTS} needed to learn where counts go from the histology; pass a "
                "trained model= (stdiff.tl.train on a reference) instead."
            )
        self.genes, self.factor, self.lr_um = list(section.genes), section.factor, section.lr_um
        self.config = _geometry(section.he_scale, self.n_models)
        rng = np.random.default_rng(seed)
        fold = np.full(usable.shape, -1)
        idx = np.nonzero(usable)[0]
        fold[idx] = rng.permutation(np.arange(len(idx)) % self.n_models)
        self.members = []
        y = m.y.cpu().numpy().astype(np.float64)
        pred = np.zeros_like(y)
        dist = np.zeros(y.shape[1])
        centres, pitch = _centres(section)
        self.pitch = pitch
        for k in range(self.n_models):
            held = fold == k
            member = AggregationConsistency().fit(
                [section], seed=seed + k, max_time=self.max_time, device=device, held_out=[held]
            )
            self.members.append(member)
            a = member._raw_abundance(section)
            measured = m.measure(_torch(a)).cpu().numpy().astype(np.float64)
            train = usable & ~held
            pred[:, held] = predict_held_out(centres, pitch, y, measured, m.tissue_px, train, held, member.blend_weight)
            dist[held] = _nearest(centres[train], centres[held])
        self.held_out = {"pred": pred[:, usable], "y": y[:, usable], "distance": dist[usable]}
        self.calibrate(seed=seed)
        logger.info("Self-supervised ensemble: %d cross-fitted aggregation-consistency fits on %s.", self.n_models,
                    section.name)  # fmt: skip
        return self

    def calibrate(self, *, floor: float | None = None, seed: int = 0) -> None:
        """Per-gene σ on the held-out measurements (kept from :meth:`fit`); none when there are too few."""
        if floor is not None:
            self.floor = float(floor)
        pred, y = self.held_out["pred"], self.held_out["y"]
        scale = distance_scale(self.held_out["distance"], self.pitch, self.floor)
        n = y.shape[1]
        if n < MIN_CALIBRATION:
            self.sigma = None
            self.calibration = {"calibrated": False, "reason": f"{n} held-out spots (< {MIN_CALIBRATION})"}
            logger.warning("Only %d held-out spots: the spread cannot be calibrated and is not given.", n)
            return
        sigma, got = calibrate_lognormal(pred, y, scale=scale, seed=seed)
        r = [np.corrcoef(np.log1p(pred[g]), np.log1p(y[g]))[0, 1] for g in range(len(y)) if y[g].std() > 0]
        self.sigma = sigma.astype(np.float32)
        self.calibration = {
            "calibrated": True,
            "level": LEVEL,
            "held_out_spots": int(n),
            "coverage_held_out": float(np.mean(got)),
            "sigma_median": float(np.median(sigma)),
            "distance_floor": self.floor,
            "held_out_pcc": float(np.nanmean(r)) if r else float("nan"),
            "what": "sd of the counts per HR pixel: Poisson around the mean times a log-normal error whose sd grows "
            "with the distance to the nearest measurement (up to one pitch) and is calibrated per gene so 90% "
            "intervals hold 90% of cross-fitted held-out spots",
        }
        logger.info("Spread calibrated on %d held-out spots: median σ %.3f, held-out coverage %.2f, held-out r %.3f.",
                    n, np.median(sigma), np.mean(got), self.calibration["held_out_pcc"])  # fmt: skip

    def predict_section(self, section: Section, **_: Any) -> dict[str, np.ndarray | None]:
        """``mean`` ``(G, H, W)`` counts per HR pixel (0 off tissue) and its calibrated ``std`` (or ``None``)."""
        if not self.members:
            raise RuntimeError("Fit the ensemble first (SelfSupervisedEnsemble().fit(section)).")
        mean = np.mean([m.predict(section)["mean"] for m in self.members], axis=0).astype(np.float32)
        return {"mean": mean, "std": self.std_of(mean, section)}

    def error_scale(self, section: Section) -> np.ndarray:
        """``(H, W)`` relative sd of the mean's error (:func:`distance_scale`) at every HR pixel.

        From the distance to the nearest spot centre, or to the nearest tissue LR pixel's centre.
        """
        if section.spots is not None:
            d, _ = section.footprints().nearest()
        else:
            H, W = section.mask_hr.shape
            f = section.factor
            ii, jj = np.nonzero(section.mask_lr)
            cells = np.stack([(jj + 0.5) * f, (ii + 0.5) * f], 1)
            yy, xx = np.mgrid[0:H, 0:W]
            d = _nearest(cells, np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)).reshape(H, W) * section.hr_um
        return distance_scale(d, self.pitch, self.floor)

    def std_of(self, mean: np.ndarray, section: Section) -> np.ndarray | None:
        """The predictive sd of counts per HR pixel for a mean map of ``section`` (``None`` when not calibrated)."""
        if self.sigma is None:
            return None
        s2 = (self.sigma.astype(np.float64)[:, None, None] * self.error_scale(section)[None]) ** 2
        mu = mean.astype(np.float64)
        return np.sqrt(mu * np.exp(s2 / 2) + mu * mu * np.exp(s2) * np.expm1(s2)).astype(np.float32)

    def sample(self, mean: np.ndarray, section: Section, n: int, *, seed: int = 0) -> np.ndarray | None:
        """``n`` draws ``(n, G, H, W)`` of counts per HR pixel of ``section`` from the calibrated predictive."""
        if self.sigma is None:
            return None
        rng = np.random.default_rng(seed)
        s = self.sigma.astype(np.float64)[None, :, None, None] * self.error_scale(section)[None, None]
        lam = mean[None].astype(np.float64) * np.exp(s * rng.standard_normal((n, *mean.shape)))
        return rng.poisson(lam).astype(np.float32)

    def provenance(self, **_: Any) -> dict[str, Any]:
        """Class and hash, how the mean is made, and where the spread comes from (no sampler)."""
        return {
            **super().provenance(),
            Key.prov.MEAN: "mean of cross-fitted aggregation-consistency fits on the section's own spots",
            Key.prov.SAMPLER: "none: std is the predictive sd calibrated on held-out spots"
            if self.sigma is not None
            else "none: too few spots to calibrate a spread, no std written",
            Key.prov.CALIBRATION: self.calibration,
            Key.prov.NUM_INFERENCE_STEPS: 0,
        }

    def state(self) -> dict[str, Any]:
        """The fitted ensemble as tensors and plain Python (what :meth:`from_state` rebuilds)."""
        if not self.members:
            raise RuntimeError("Fit the ensemble first (SelfSupervisedEnsemble().fit(section)).")
        return {
            "options": {"n_models": self.n_models, "max_time": self.max_time, "floor": self.floor},
            "members": [m.state() for m in self.members],
            "genes": list(self.genes),
            "factor": int(self.factor),
            "lr_um": float(self.lr_um),
            "pitch": float(self.pitch),
            "geometry": asdict(self.config),
            "sigma": None if self.sigma is None else self.sigma.tolist(),
            "held_out": {k: np.asarray(v).tolist() for k, v in getattr(self, "held_out", {}).items()},
            "calibration": plain(self.calibration),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SelfSupervisedEnsemble:
        """Rebuild a fitted ensemble from :meth:`state`."""
        ens = cls(**state["options"])
        ens.members = [AggregationConsistency.from_state(m) for m in state["members"]]
        ens.genes, ens.factor, ens.lr_um = list(state["genes"]), int(state["factor"]), float(state["lr_um"])
        ens.pitch = float(state["pitch"])
        geometry = dict(state["geometry"])
        ens.config = ChunkGeometry.from_dict(geometry, count_name="n_models")
        ens.sigma = None if state["sigma"] is None else np.asarray(state["sigma"], np.float32)
        ens.held_out = {k: np.asarray(v) for k, v in state["held_out"].items()}
        ens.calibration = dict(state["calibration"])
        return ens


def _nearest(points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Distance from each of ``queries`` ``(q, 2)`` to the nearest of ``points`` ``(p, 2)``."""
    from scipy.spatial import cKDTree

    if len(points) == 0:
        return np.full(len(queries), np.inf)
    return cKDTree(points).query(queries, k=1)[0]


def _torch(a: np.ndarray):
    import torch

    return torch.as_tensor(a, dtype=torch.float32)


def _geometry(he_scale: int, learners: int) -> ChunkGeometry:
    """What chunked prediction reads of this model: 4-LR-pixel tiles, the histology scale, its learners."""
    learners_ = LearnerCount(learners, "aggregation-ensemble")
    return ChunkGeometry(tile_lr=4, he_scale=he_scale, sampler=learners_, count_name="n_models")
