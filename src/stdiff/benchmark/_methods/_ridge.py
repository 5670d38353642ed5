"""Mask-aware nearest + a ridge regression of the HR residual on histology features.

*Reference track*: on the training tissue pixels, ``z_hr − nearest_masked`` is regressed on the
standardised histology features (:func:`stdiff.benchmark._features.features`); the penalty is chosen
on the validation part of the training data, then the model is refitted on all training data.

*Self-supervised track* (only the test LR map and image): the normalised LR map is regressed on the
features averaged over each LR pixel's tissue pixels (penalty chosen on a random 20% of LR pixels held
out), and the prediction adds the within-block deviation of the features times the coefficients to the
mask-aware nearest map, so every LR pixel keeps its measured mean.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...pp import Section, aggregate
from .._features import features, standardize
from ._base import Context, Method, Output
from ._interp import lr_z, nearest_masked

LAMBDAS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
MAX_PIXELS: int = 200_000


def _solve(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Ridge with an unpenalised intercept: ``x (n, F)``, ``y (n, G)`` → ``(F + 1, G)``."""
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    a = xc.T @ xc + lam * len(x) * np.eye(x.shape[1])
    w = np.linalg.solve(a, xc.T @ yc)
    return np.vstack([w, ym - xm @ w])


def _apply(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x @ w[:-1] + w[-1]


def _block_mean(values: np.ndarray, mask: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``values (F, H, W)`` over the ``mask`` pixels of each LR block, ``(F, h, w)``."""
    n = aggregate(mask.astype(np.float32), factor)
    s = aggregate(values * mask[None], factor)
    return s / np.maximum(n, 1.0)


class Ridge(Method):
    """Adapter: mask-aware nearest + histology-feature ridge (see the module docstring)."""

    name = "ridge"
    description = "mask-aware nearest + ridge regression of the HR residual on histology features"
    learned = True

    def _features(self, section: Section) -> np.ndarray:
        return standardize(features(section)[0], self.mu, self.sd)

    def fit(self, ctx: Context) -> dict[str, Any]:
        self.ctx = ctx
        t0 = time.perf_counter()
        rng = np.random.default_rng(ctx.seed)
        raw = {id(s): features(s)[0] for s in [*ctx.train, *(ctx.validation or [])]}
        allf = np.concatenate([raw[id(s)][:, s.mask_hr] for s in ctx.train], axis=1)
        self.mu, self.sd = allf.mean(1), np.maximum(allf.std(1), 1e-6)

        def std(s):
            return standardize(raw[id(s)], self.mu, self.sd)

        if ctx.self_supervised:
            xs, ys = [], []
            for s in ctx.train:
                xs.append(_block_mean(std(s), s.mask_hr, s.factor)[:, s.mask_lr].T)
                ys.append(lr_z(s, ctx.normalizer)[:, s.mask_lr].T)
            x, y = np.concatenate(xs), np.concatenate(ys)
            held = rng.random(len(x)) < 0.2
            fit_x, fit_y, val_x, val_y = x[~held], y[~held], x[held], y[held]
            note = "20% of the test LR pixels held out"
        else:

            def pixels(secs):
                xs, ys = [], []
                for s in secs:
                    m = s.mask_hr & s.truth_mask
                    r = ctx.normalizer.transform(s.hr) - nearest_masked(s, ctx.normalizer)
                    xs.append(std(s)[:, m].T)
                    ys.append(r[:, m].T)
                return np.concatenate(xs), np.concatenate(ys)

            fit_x, fit_y = pixels(ctx.train)
            val_x, val_y = pixels(ctx.validation) if ctx.validation else (fit_x[:0], fit_y[:0])
            note = ctx.validation_note
        if len(fit_x) > MAX_PIXELS:
            keep = rng.choice(len(fit_x), MAX_PIXELS, replace=False)
            fit_x, fit_y = fit_x[keep], fit_y[keep]
        scores = {}
        if len(val_x):
            for lam in LAMBDAS:
                w = _solve(fit_x, fit_y, lam)
                scores[lam] = float(((_apply(val_x, w) - val_y) ** 2).mean())
            self.lam = min(scores, key=scores.get)
        else:
            self.lam = 1e-2
        self.w = _solve(np.concatenate([fit_x, val_x]), np.concatenate([fit_y, val_y]), self.lam)
        return {"steps": 0, "best_step": None, "seconds": time.perf_counter() - t0, "stopped": "closed form",
                "lambda": self.lam, "validation_mse": scores, "validation": note}  # fmt: skip

    def predict(self, section: Section) -> Output:
        x = self._features(section)
        base = nearest_masked(section, self.ctx.normalizer)
        G = base.shape[0]
        if self.ctx.self_supervised:
            dev = x - np.repeat(np.repeat(_block_mean(x, section.mask_hr, section.factor), section.factor, -2),
                                section.factor, -1)  # fmt: skip
            resid = np.tensordot(self.w[:-1].T, dev, axes=1)
        else:
            resid = np.tensordot(self.w[:-1].T, x, axes=1) + self.w[-1].reshape(G, 1, 1)
        z = np.clip(base + resid, 0.0, None) * section.mask_hr[None]
        return Output(mean=z.astype(np.float32), normalizer=self.ctx.normalizer)
