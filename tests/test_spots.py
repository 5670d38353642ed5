"""Spots as measurements: the footprint operator, geometry detection, spot-native maps, simulation, calibration."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from _sdata_helpers import spots_section

import stdiff as sd
from stdiff.spots import Footprints, SpotGeometry, Spots, detect_geometry
from stdiff.spots import platform_lattice


def _img(sdata, key):
    el = sdata.images[key]
    return np.asarray((el["scale0"].image if hasattr(el, "children") and "scale0" in el.children else el).values)


def _spots(xy, radius, counts=None, platform="visium"):
    n = xy.shape[1]
    counts = np.zeros((1, n)) if counts is None else counts
    return Spots(xy, np.full(n, float(radius)), counts, SpotGeometry.of_platform(platform, n))


def _supersampled(xy, radius, origin, hr_um, shape, k=40):
    """Independent footprint weights: the fraction of k × k sub-pixel centres inside each disc."""
    H, W = shape
    sub = (np.arange(k) + 0.5) / k
    out = np.zeros((xy.shape[1], H, W))
    for s in range(xy.shape[1]):
        cx, cy = xy[:, s]
        for i in range(H):
            yy = origin[1] + (i + sub) * hr_um
            if abs(yy.mean() - cy) > radius + hr_um:
                continue
            for j in range(W):
                xx = origin[0] + (j + sub) * hr_um
                if abs(xx.mean() - cx) > radius + hr_um:
                    continue
                out[s, i, j] = (((xx[None] - cx) ** 2 + (yy[:, None] - cy) ** 2) <= radius**2).mean()
    return out.reshape(xy.shape[1], -1)


# ------------------------------------------------------------------ the operator


def test_disc_weights_are_exact_areas():
    rng = np.random.default_rng(0)
    xy = np.stack([rng.uniform(60, 340, 12), rng.uniform(60, 240, 12)])
    fp = Footprints(_spots(xy, 27.5), (0.0, 0.0), 10.0, (30, 40))
    # each disc's weights sum to its area in HR pixels, and match an independent supersampling
    np.testing.assert_allclose(fp.area_px, np.pi * 27.5**2 / 100.0, rtol=1e-10)
    assert fp.inside.all() and np.allclose(fp.fraction, 1.0)
    brute = _supersampled(xy[:, :3], 27.5, (0.0, 0.0), 10.0, (30, 40))
    np.testing.assert_allclose(fp.matrix[:3].toarray(), brute, atol=5e-3)  # supersampling's own error
    assert fp.matrix.max() <= 1.0 + 1e-12 and fp.matrix.min() >= 0
    # a disc cut by the grid's edge is only partly measured there
    cut = Footprints(_spots(np.array([[5.0], [100.0]]), 27.5), (0.0, 0.0), 10.0, (30, 40))
    assert 0.3 < cut.fraction[0] < 0.7 and not cut.inside[0]


@pytest.mark.parametrize("name", ["visium", "st"])
def test_constant_map_gives_counts_proportional_to_area_for_any_offset_and_rotation(name):
    rng = np.random.default_rng(1)
    hr_um = sd.spots.PLATFORMS[name].hr_um
    r = sd.spots.PLATFORMS[name].radius_um
    for _ in range(4):  # random lattice offset and rotation each time
        xy = platform_lattice(name, (0, 0, 2000, 1500), rng)
        fp = Footprints(_spots(xy, r, platform=name), (0.0, 0.0), hr_um, (int(1500 / hr_um), int(2000 / hr_um)))
        counts = fp.measure(np.full((2, *fp.shape), 3.0))
        np.testing.assert_allclose(counts, 3.0 * np.pi * r**2 / hr_um**2, rtol=1e-9)
        np.testing.assert_allclose(fp.measure(np.ones((1, *fp.shape)))[0], fp.area_px)
        # the adjoint: <A x, y> = <x, Aᵀ y>
        x, y = rng.random((1, *fp.shape)), rng.random((1, len(xy.T)))
        np.testing.assert_allclose((fp.measure(x) * y).sum(), (x * fp.spread(y)).sum(), rtol=1e-9)


def test_distribute_conserves_every_spot_and_fills_the_gaps():
    rng = np.random.default_rng(2)
    xy = platform_lattice("visium", (0, 0, 800, 600), rng)
    counts = rng.poisson(40, size=(3, xy.shape[1])).astype(float)
    counts[0, 0] = 0.0
    fp = Footprints(_spots(xy, 27.5, counts), (0.0, 0.0), 10.0, (60, 80))
    weights = rng.random((3, 60, 80)) + 0.05
    weights[1, fp.matrix[1].indices // 80, fp.matrix[1].indices % 80] = 0.0  # no weight under one spot
    out = fp.distribute(weights, fp.reach())
    np.testing.assert_allclose(fp.measure(out), counts, rtol=1e-6, atol=1e-9)
    assert (out[:, ~fp.reach()] == 0).all()
    # the gaps hold interpolated values (no holes), and a flat map gives a smooth rendering
    gaps = fp.reach() & (fp.coverage() == 0)
    assert (out[2, gaps] > 0).all()
    flat = fp.distribute(np.ones((3, 60, 80)), fp.reach())
    np.testing.assert_allclose(fp.measure(flat), counts, rtol=1e-6, atol=1e-9)
    conserved = fp.conserve(rng.random((3, 60, 80)) + 0.1)
    np.testing.assert_allclose(fp.measure(conserved), counts, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ geometry from the data


def test_geometry_detection():
    rng = np.random.default_rng(3)
    vis = platform_lattice("visium", (0, 0, 1500, 1500), rng)
    g = detect_geometry(vis, 32.5)  # circles drawn for Space Ranger's 65 µm spot
    assert (g.platform, g.lattice, g.diameter_um, g.default_hr_um) == ("visium", "hex", 55.0, 10.0)
    assert g.pitch_um == pytest.approx(100.0, rel=1e-6)
    st = platform_lattice("st", (0, 0, 4000, 4000), rng)
    g = detect_geometry(st * 1.03, 50.0)  # a hand alignment 3% off 200 µm is still legacy ST
    assert (g.platform, g.lattice, g.default_hr_um) == ("st", "square", 20.0)
    # legacy ST on a staggered lattice (every other row shifted by half a pitch)
    yy, xx = np.mgrid[0:10, 0:10].astype(float)
    stag = np.stack([(xx * 200 + 100 * (yy % 2)).ravel(), (yy * 200 * np.sqrt(3) / 2).ravel()])
    assert detect_geometry(stag, 50.0).platform == "st"
    gen = detect_geometry(vis * 1.5, 20.0)
    assert (
        gen.platform == "generic" and gen.pitch_um == pytest.approx(150.0) and gen.default_hr_um == pytest.approx(15.0)
    )
    hd = detect_geometry(np.stack([(xx * 8).ravel(), (yy * 8).ravel()]), 4.0, shape="square")
    assert hd.platform == "visium_hd_8" and not hd.has_gaps


def test_spot_section_from_sdata(synthetic_small):
    s = spots_section(synthetic_small)
    sec = sd.pp.rasterize(s, he_scale=2)
    g = sec.spots.geometry
    assert g.platform == "visium" and sec.hr_um == 10.0 and sec.factor == 10 and sec.lr_from == "spots"
    # the spot-native base conserves every spot; the LR map is its sum per LR pixel
    base = sd.pp.lr_per_tissue_pixel(sec)
    fp = sec.footprints()
    np.testing.assert_allclose(fp.measure(base)[:, fp.inside], sec.spots.counts[:, fp.inside], rtol=1e-5)
    np.testing.assert_allclose(sd.pp.aggregate(base, sec.factor), sec.lr, rtol=1e-5, atol=1e-4)
    # an explicit LR grid finer than the spot pitch is refused, naming the pitch; hr_um sets the HR pixel
    with pytest.raises(ValueError, match="finer than the spot pitch.*100 µm"):
        sd.pp.rasterize(s, lr_um=50, factor=5)
    assert sd.pp.rasterize(s, hr_um=20, he_scale=1).hr_um == 20


# ------------------------------------------------------------------ simulation, training, superresolve


def test_simulated_spots_hold_the_truth_under_their_discs(synthetic_small):
    sec = sd.pp.rasterize(synthetic_small, counts_key="hr_counts", lr_um=100, factor=10, he_scale=1)
    sim = sd.pp.simulate_platform(sec, "visium", seed=0)
    sim2 = sd.pp.simulate_platform(sec, "visium", seed=1)
    assert not np.allclose(sim.spots.xy[:, :3], sim2.spots.xy[:, :3])  # a new lattice per seed
    sp = sim.spots
    assert sp.geometry.platform == "visium" and np.allclose(sp.radius, 27.5) and len(sp) > 20
    # spot counts = the truth under each disc (checked against an independent supersampled footprint)
    idx = np.arange(0, len(sp), max(1, len(sp) // 4))
    brute = _supersampled(sp.xy[:, idx], 27.5, sec.origin, sec.hr_um, sec.mask_hr.shape)
    truth = (sec.hr * sec.truth_mask[None]).reshape(len(sec.genes), -1)
    np.testing.assert_allclose(sp.counts[:, idx], truth @ brute.T, rtol=5e-3, atol=0.5)
    # nearest-neighbour distances: the hexagonal 100 µm lattice, randomly rotated
    assert detect_geometry(sp.xy, 27.5).pitch_um == pytest.approx(100.0, rel=1e-6)
    # gaps stay unmeasured in the input but are scored: the truth mask covers tissue between spots
    gaps = sim.truth_mask & (sim.footprints().coverage() == 0)
    assert gaps.sum() > sim.truth_mask.sum() / 2
    with pytest.raises(ValueError, match="finer than the 'st' pitch"):
        sd.pp.simulate_platform(sec, "st")


def test_spot_model_round_trip_and_platform_checks(synthetic_small, tmp_path, caplog, tiny_model):
    model = sd.tl.train(synthetic_small, counts_key="hr_counts", platform="visium", n_lattices=2, config="tiny",
                        steps=3, progress=False, seed=0)  # fmt: skip
    assert model.platform == "visium" and model.factor == 10 and model.lr_um == 100
    path = model.save(tmp_path / "m.pt")
    loaded = sd.models.DiffST.load(path)
    assert loaded.platform == "visium" and loaded.model_hash() == model.model_hash()
    spots = spots_section(synthetic_small)
    sd.tl.superresolve(spots, model=loaded, progress=False, conserve_counts=True)
    sec = sd.tl.section_of(spots)
    mean = _img(spots, "stdiff")
    fp = sec.footprints()
    # conserve_counts: every spot's footprint sums to its count (1e-5)
    np.testing.assert_allclose(fp.measure(mean)[:, fp.inside], sec.spots.counts[:, fp.inside], rtol=1e-5, atol=1e-4)
    assert spots.attrs["stdiff"]["stdiff"]["spots"]["platform"] == "visium"
    # streamed in several chunks, every spot is still conserved (a pass over the blended result)
    sd.tl.superresolve(spots, model=loaded, progress=False, conserve_counts=True, chunk_lr=4, key_added="chunked")
    chunked = _img(spots, "chunked")
    np.testing.assert_allclose(fp.measure(chunked)[:, fp.inside], sec.spots.counts[:, fp.inside], rtol=1e-5, atol=1e-4)
    # a spot model on square bins is refused; a square model on spots is warned about
    with pytest.raises(ValueError, match="trained for 'visium' spots"):
        sd.tl.superresolve(synthetic_small, model=model, counts_key="hr_counts", progress=False, copy=True)
    with caplog.at_level("WARNING", logger="stdiff"):
        sd.tl.superresolve(spots, model=tiny_model, progress=False, key_added="sq")
    assert "gap-free square aggregates" in caplog.text


def test_default_spread_is_calibrated_on_synthetic_spots(synthetic_small, tmp_path):
    from stdiff.benchmark._probabilistic import coverage
    from stdiff.models import SelfSupervisedEnsemble

    sec = sd.pp.rasterize(synthetic_small, counts_key="hr_counts", lr_um=100, factor=10, he_scale=1)
    sim = sd.pp.simulate_platform(sec, "visium", seed=0)
    ens = SelfSupervisedEnsemble(n_models=4, max_time=10).fit(replace(sim, hr=None, mask_truth=None), seed=0)
    cal = ens.calibration
    assert cal["calibrated"] and cal["held_out_spots"] == int(sim.footprints().inside.sum())
    assert 0.85 <= cal["coverage_held_out"] <= 0.95
    out = ens.predict_section(sim)
    draws = ens.sample(out["mean"], sim, 40, seed=0)
    m = sim.truth_mask
    cov = coverage(np.log1p(draws[:, :, m]), np.log1p(sim.hr[:, m]), 0.9)
    # calibrated on spots, the interval holds most HR pixels of the known truth (gaps included)
    assert 0.75 <= float(np.mean(cov)) <= 0.99, cov
    std = ens.std_of(out["mean"], sim)
    assert std.shape == out["mean"].shape and (std[:, m & (out["mean"].min(0) > 0)] > 0).all()
    # the ensemble saves and loads through the models' shared base: same maps, same hash
    path = tmp_path / "ensemble.pt"
    back = SelfSupervisedEnsemble.load(ens.save(path))
    again = back.predict_section(sim)
    np.testing.assert_array_equal(again["mean"], out["mean"])
    np.testing.assert_array_equal(again["std"], out["std"])
    assert back.model_hash() == ens.model_hash() and back.calibration == ens.calibration
    back.sigma = back.sigma * 2  # what predicts is hashed
    assert back.model_hash() != ens.model_hash()
    with pytest.raises(ValueError, match="not a stdiff DiffST model.*self-supervised-ensemble"):
        sd.models.DiffST.load(path)


def test_block_artefact_index():
    from stdiff.benchmark._metrics import block_artefact_index

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:60, 0:60]
    smooth = 5 + 4 * np.sin(xx / 7.0)[None] * np.cos(yy / 9.0)[None]
    assert block_artefact_index(smooth, 10) == pytest.approx(1.0, abs=0.1)
    blocks = np.kron(rng.poisson(5, (1, 6, 6)).astype(float), np.ones((1, 10, 10)))
    blocky = blocks + 0.05 * rng.random(blocks.shape)
    assert block_artefact_index(blocky, 10) > 5
