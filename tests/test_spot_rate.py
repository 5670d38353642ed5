"""The default without a reference (:class:`stdiff.models.SpotRate`) and the spot likelihood it is built on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import stdiff as sd
from stdiff.models import SpotRate
from stdiff.spots import (
    Footprints,
    calibrate_error,
    fit_class_rates,
    gaussian_kernel,
    interval_coverage,
    predictive_quantile,
    ratio_field,
)


@pytest.fixture(scope="module")
def visium(synthetic_small):
    """The synthetic section measured by simulated Visium spots (55 µm discs, 100 µm hex lattice)."""
    sec = sd.pp.rasterize(synthetic_small, counts_key="hr_counts", lr_um=100, factor=10, he_scale=1)
    return sd.pp.simulate_platform(sec, "visium", seed=0)


def _input(section, spots):
    """The section as the default sees it: these spots, no truth."""
    out = replace(section, hr=None, mask_truth=None, spots=spots, meta={})
    out._footprints = None
    return out


def test_fit_class_rates_recovers_a_known_mixture():
    rng = np.random.default_rng(0)
    n, K, G = 400, 4, 6
    design = rng.dirichlet(np.ones(K) * 0.5, n) * 30.0  # class areas under each spot
    W = rng.gamma(2.0, 2.0, (G, K))
    exposure = rng.uniform(0.5, 1.5, n)
    y = rng.poisson(exposure[None] * (W @ design.T))
    fitted = fit_class_rates(design, y, exposure, iterations=500, prior_spots=0.1)
    assert np.median(np.abs(fitted - W) / W) < 0.1
    # the prior pulls a class no spot holds to the gene's overall rate instead of 0 or infinity
    design[:, 3] = 0
    fitted = fit_class_rates(design, y, exposure)
    overall = y.sum(1) / (exposure[:, None] * design).sum()
    np.testing.assert_allclose(fitted[:, 3], overall, rtol=1e-6)


def test_ratio_field_recovers_a_constant_ratio_and_falls_back_to_the_prior():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1000, (300, 2))
    expected = rng.uniform(5, 50, (2, 300))
    counts = 3.0 * expected
    K = gaussian_kernel(np.array([[500.0, 500.0], [5000.0, 5000.0]]), xy, 100.0)
    r = ratio_field(K, counts, expected)
    np.testing.assert_allclose(r, 3.0, rtol=1e-9)  # near the spots and (prior = overall ratio) far from them
    assert K[1].nnz == 0


def test_calibrated_intervals_hold_their_level():
    rng = np.random.default_rng(2)
    G, m = 3, 1500
    pred = rng.uniform(0.5, 40, (G, m))
    sigma = np.array([0.2, 0.5, 0.9])
    size = 1 / np.expm1(sigma**2)[:, None]  # the model's own family: a mean-one Gamma error of the rate

    def draw():
        return rng.poisson(pred * rng.gamma(np.broadcast_to(size, (G, m)), 1 / size))

    got, cov = calibrate_error(pred, draw(), np.ones(m))
    assert np.all(np.abs(cov - 0.9) < 0.02), cov
    assert np.all(np.abs(got - sigma) < 0.1), got
    fresh = draw()
    held = interval_coverage(pred, fresh, (got[:, None] * np.ones(m)) ** 2)
    assert np.all((held > 0.85) & (held < 0.95)), held
    lo, hi = predictive_quantile(0.05, pred, 0.25), predictive_quantile(0.95, pred, 0.25)
    assert np.all(lo <= hi) and np.all(lo <= np.ceil(pred)) and np.all(hi >= np.floor(pred))


def test_default_fills_gaps_and_zero_spots_with_a_mean_and_spread(visium):
    spots = visium.spots
    g = int(np.argmax(spots.counts.sum(1)))
    # a spot with zero counts among expressing neighbours, and a spot that was never measured
    d = np.linalg.norm(spots.xy.T[:, None] - spots.xy.T[None], axis=-1)
    busy = np.argsort(-spots.counts[g])
    zero, gone = int(busy[0]), int(next(i for i in busy[1:] if d[busy[0], i] > 250))
    counts = spots.counts.copy()
    counts[:, zero] = 0
    keep = np.arange(len(spots)) != gone
    measured = replace(spots, counts=counts).subset(keep)
    section = _input(visium, measured)
    model = SpotRate().fit(section, seed=0)
    out = model.predict_section(section)
    mean, std = out["mean"], out["std"]
    cover = Footprints(spots, visium.origin, visium.hr_um, visium.mask_hr.shape).matrix
    for s in (zero, gone):
        disc = (cover[s].toarray().reshape(visium.mask_hr.shape) > 0.5) & section.mask_hr
        neighbours = (d[s] > 0) & (d[s] < 150)
        assert spots.counts[g, neighbours].mean() >= 3
        assert disc.any() and (mean[g][disc] > 0).all() and (std[g][disc] > 0).all()
    # the map is the fitted rate, not each spot's count painted on its footprint
    fp = section.footprints()
    fitted = fp.measure(mean)[g]
    assert not np.allclose(fitted, measured.counts[g], rtol=0.05)
    assert np.corrcoef(np.log1p(fitted), np.log1p(measured.counts[g]))[0, 1] > 0.5
    assert mean[:, ~section.mask_hr].max() == 0 and (mean[:, section.mask_hr] > 0).mean() > 0.99
    cal = model.calibration
    assert cal["calibrated"] and 0.85 <= cal["coverage_held_out"] <= 0.95
    assert np.isfinite(cal["held_out_pcc"]) and np.isfinite(cal["nearest6_pcc"])
    q = model.predict_section(section, quantiles=(0.05, 0.95))
    assert (q["q05"] <= q["q95"]).all() and (q["q95"][:, section.mask_hr] >= 0).all()


def test_default_is_deterministic_and_round_trips(visium, tmp_path):
    section = _input(visium, visium.spots)
    a = SpotRate().fit(section, seed=3)
    b = SpotRate().fit(_input(visium, visium.spots), seed=3)
    ma, mb = a.predict_section(section), b.predict_section(section)
    np.testing.assert_array_equal(ma["mean"], mb["mean"])
    np.testing.assert_array_equal(ma["std"], mb["std"])
    back = SpotRate.load(a.save(tmp_path / "rate.pt"))
    again = back.predict_section(section)
    np.testing.assert_array_equal(again["mean"], ma["mean"])
    np.testing.assert_array_equal(again["std"], ma["std"])
    assert back.model_hash() == a.model_hash()
    back.sigma = back.sigma * 2
    assert back.model_hash() != a.model_hash()
    with pytest.raises(ValueError, match="spot-rate"):
        sd.models.DiffST.load(tmp_path / "rate.pt")


def test_default_on_a_square_lr_map(synthetic_small):
    sec = sd.pp.rasterize(synthetic_small, counts_key="hr_counts", lr_um=100, factor=5, he_scale=1)
    section = replace(sec, hr=None, mask_truth=None)
    model = SpotRate().fit(section, seed=0)
    mean = model.predict_section(section)["mean"]
    assert mean.shape == sec.hr.shape and (mean[:, section.mask_hr] > 0).mean() > 0.99
    truth = sec.hr[:, sec.truth_mask]
    r = [np.corrcoef(np.log1p(m), np.log1p(t))[0, 1] for m, t in zip(mean[:, sec.truth_mask], truth, strict=True)]
    assert np.mean(r) > 0.3


def test_chunks_need_no_halo_and_draw_the_same_map(synthetic_small, caplog):
    """The rate at a pixel does not depend on the window: chunks without a halo give the one-window map."""
    from _sdata_helpers import spots_section

    from stdiff._spatial import finest_level

    s = spots_section(synthetic_small)
    one = sd.tl.superresolve(s, hr_um=20, progress=False, copy=True)
    with caplog.at_level("INFO", logger="stdiff"):
        many = sd.tl.superresolve(s, hr_um=20, progress=False, copy=True, chunk_lr=2)
    assert any("chunk(s) of ≤2×2 (+0 halo)" in r.getMessage() for r in caplog.records)
    for key in ("stdiff", "stdiff_std"):
        a, b = (np.asarray(finest_level(x.images[key])) for x in (one, many))
        assert a.max() > 0 and ((a > 0) == (b > 0)).mean() > 0.999  # the same tissue in every window
        both = (a > 0) & (b > 0)
        np.testing.assert_allclose(b[both], a[both], rtol=1e-5)
