"""Benchmark metrics against known truth, interpolation baselines, splits, and tiny end-to-end runs."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from stdiff.benchmark import _metrics


@pytest.fixture(autouse=True)
def _threads():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _maps(seed=0, g=3, h=12, w=10):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(g, h, w))


# ------------------------------------------------------------------ metrics


def test_pcc_known_values():
    x = _maps()
    mask = np.ones(x.shape[1:], bool)
    np.testing.assert_allclose(_metrics.pcc(2 * x + 1, x, mask), 1.0, atol=1e-12)
    np.testing.assert_allclose(_metrics.pcc(-x, x, mask), -1.0, atol=1e-12)
    # a constant truth has no correlation
    const = np.ones_like(x)
    assert np.all(np.isnan(_metrics.pcc(x, const, mask)))


def test_rmse_known_values():
    truth = np.zeros((2, 4, 4))
    pred = np.zeros((2, 4, 4))
    pred[0] = 3.0
    pred[1, :2] = 2.0  # half the pixels off by 2 → sqrt(0.5 * 4)
    mask = np.ones((4, 4), bool)
    np.testing.assert_allclose(_metrics.rmse(pred, truth, mask), [3.0, np.sqrt(2.0)])


def test_ssim_identical_is_one():
    x = np.abs(_maps(1, h=20, w=16))
    mask = np.ones(x.shape[1:], bool)
    mask[:3] = False
    np.testing.assert_allclose(_metrics.ssim(x, x, mask), 1.0, atol=1e-9)
    assert np.all(_metrics.ssim(x + _maps(2, h=20, w=16), x, mask) < 0.99)


def test_masked_pixels_are_ignored():
    x = _maps(3, h=16, w=16)
    y = 0.5 * x + 0.1 * _maps(4, h=16, w=16)
    mask = np.zeros((16, 16), bool)
    mask[2:14, 3:13] = True
    garbage = y.copy()
    garbage[:, ~mask] = 1e6 * _maps(5, h=16, w=16)[:, ~mask]
    for fn in (_metrics.pcc, _metrics.rmse, _metrics.ssim):
        np.testing.assert_allclose(fn(garbage, x, mask), fn(y, x, mask), rtol=1e-10)
    # SSIM's data range comes from the truth only: the same for every prediction
    np.testing.assert_allclose(_metrics.data_ranges(x, mask), x[:, mask].max(1) - np.minimum(x[:, mask].min(1), 0))


def test_summarize_drops_nan_genes():
    per_gene = {"a": {"pcc": 0.5, "rmse": 1.0, "ssim": 0.2}, "b": {"pcc": float("nan"), "rmse": 3.0, "ssim": 0.4},
                "c": {"pcc": 0.1, "rmse": 2.0, "ssim": float("nan")}}  # fmt: skip
    s = _metrics.summarize(per_gene)
    assert s["mean"]["pcc"] == pytest.approx(0.3)
    assert s["median"]["rmse"] == pytest.approx(2.0)
    assert s["n_nan"] == {"pcc": 1, "rmse": 0, "ssim": 1}


def test_evaluate_sections_pools_test_sections():
    a, b = np.abs(_maps(6, g=2, h=10, w=12)), np.abs(_maps(7, g=2, h=9, w=9))
    ma, mb = np.ones((10, 12), bool), np.ones((9, 9), bool)
    mb[:, :2] = False
    res = _metrics.evaluate_sections([a, b], [a, b], [ma, mb], ["x", "y"])
    for g in ("x", "y"):
        assert res[g]["pcc"] == pytest.approx(1.0)
        assert res[g]["rmse"] == pytest.approx(0.0)
        assert res[g]["ssim"] == pytest.approx(1.0)
    # PCC pools the tissue pixels of both sections
    pred = [a, b * 0 + 1.0]
    r = _metrics.evaluate_sections(pred, [a, b], [ma, mb], ["x", "y"])["x"]["pcc"]
    flat_p = np.concatenate([a[0][ma], np.ones(mb.sum())])
    flat_t = np.concatenate([a[0][ma], b[0][mb]])
    assert r == pytest.approx(np.corrcoef(flat_p, flat_t)[0, 1])


# ------------------------------------------------------------------ interpolation baselines


def _constant_section(value=3.0, factor=5, he_scale=2, g=2, h=4, w=5):
    from stdiff.pp import Section, aggregate

    hr = np.full((g, h * factor, w * factor), value, np.float32)
    hr[1] *= 2
    return Section(
        genes=[f"g{i}" for i in range(g)], lr=aggregate(hr, factor), hr=hr,
        he=np.full((3, h * factor * he_scale, w * factor * he_scale), 200, np.uint8),
        mask_lr=np.ones((h, w), bool), mask_hr=np.ones((h * factor, w * factor), bool), origin=(0.0, 0.0),
        lr_um=100.0, factor=factor, he_scale=he_scale, coordinate_system="global",
    )  # fmt: skip


def _norm(sec):
    from stdiff.pp import Normalizer

    return Normalizer(genes=sec.genes, size=np.array([1.5, 2.5]), scale=np.array([1.2, 0.7]))


def test_interpolation_reproduces_a_constant_map_exactly():
    from stdiff.benchmark._methods import _interp

    sec = _constant_section()
    norm = _norm(sec)
    truth = norm.transform(sec.hr)
    for fn in (_interp.bicubic, _interp.nearest, _interp.nearest_masked):
        pred = fn(sec, norm)
        assert pred.shape == truth.shape
        np.testing.assert_allclose(pred, truth, rtol=1e-6, atol=1e-6)


def test_mask_aware_nearest_is_not_diluted_at_the_tissue_edge():
    from dataclasses import replace

    from stdiff.benchmark._methods import _interp
    from stdiff.pp import aggregate

    sec = _constant_section()
    mask = np.ones(sec.mask_hr.shape, bool)
    mask[:, :7] = False  # the first LR column is empty, the second has 3 of 5 HR columns on tissue
    hr = sec.hr * mask[None]
    sec = replace(sec, hr=hr, lr=aggregate(hr, 5), mask_hr=mask, mask_lr=aggregate(mask.astype(int), 5) > 0)
    norm = _norm(sec)
    truth = norm.transform(hr)
    masked = _interp.nearest_masked(sec, norm)
    np.testing.assert_allclose(masked[:, mask], truth[:, mask], rtol=1e-6)
    plain = _interp.nearest(sec, norm)
    assert np.all(plain[:, mask][:, :1] < truth[:, mask][:, :1] - 0.05)  # the edge block is diluted


# ------------------------------------------------------------------ probabilistic metrics


def test_crps_of_a_perfect_point_forecast_is_zero_and_a_point_forecast_gets_its_mae():
    from stdiff.benchmark import _probabilistic as P

    y = _maps(8, g=3, h=50, w=1)[..., 0]
    np.testing.assert_allclose(P.crps_ensemble(y[None], y), 0.0, atol=1e-12)
    np.testing.assert_allclose(P.crps_ensemble(np.repeat(y[None], 5, 0), y), 0.0, atol=1e-12)
    pred = y + 0.3
    np.testing.assert_allclose(P.crps_ensemble(pred, y), 0.3, rtol=1e-9)


def test_fair_crps_of_a_gaussian_ensemble_matches_the_closed_form():
    from stdiff.benchmark import _probabilistic as P

    rng = np.random.default_rng(0)
    mu, sigma = 0.4, 0.7
    y = rng.normal(size=(2, 40_000)) * 1.3  # truths not from the forecast distribution
    for n in (4, 16):
        ens = mu + sigma * rng.normal(size=(n, *y.shape))
        expected = P.crps_gaussian(mu, sigma, y).mean(-1)
        np.testing.assert_allclose(P.crps_ensemble(ens, y), expected, rtol=0.01)
    # the fair estimator is unbiased also for tiny ensembles (the plain one is not)
    ens = mu + sigma * rng.normal(size=(2, *y.shape))
    np.testing.assert_allclose(P.crps_ensemble(ens, y), P.crps_gaussian(mu, sigma, y).mean(-1), rtol=0.02)


@pytest.mark.parametrize("n", [6, 50])
def test_coverage_of_a_calibrated_ensemble_is_nominal(n):
    from stdiff.benchmark import _probabilistic as P

    rng = np.random.default_rng(n)
    loc = rng.normal(size=(3, 20_000))
    scale = rng.uniform(0.2, 1.0, size=loc.shape)
    y = loc + scale * rng.normal(size=loc.shape)
    ens = loc + scale * rng.normal(size=(n, *loc.shape))
    assert P.interval(ens, 0.9)[2] == ("empirical" if n >= P.MIN_EMPIRICAL else "gaussian-t")
    for level in (0.5, 0.9):
        cov = P.coverage(ens, y, level)
        np.testing.assert_allclose(cov, level, atol=0.015)
    # an over-confident ensemble (half the spread) under-covers
    assert np.all(P.coverage(loc + 0.5 * (ens - loc), y, 0.9) < 0.8)


def test_spread_skill_is_one_for_a_calibrated_ensemble_and_below_one_when_over_confident():
    from stdiff.benchmark import _probabilistic as P

    rng = np.random.default_rng(3)
    loc = rng.normal(size=(2, 50_000))
    y = loc + 0.5 * rng.normal(size=loc.shape)
    for n in (3, 8):
        ens = loc + 0.5 * rng.normal(size=(n, *loc.shape))
        np.testing.assert_allclose(P.spread_skill(ens, y), 1.0, atol=0.03)
        narrow = loc + 0.25 * rng.normal(size=(n, *loc.shape))
        assert np.all(P.spread_skill(narrow, y) < 0.7)
    # reliability: with a spread that varies across pixels, binned spread follows binned error
    scale = np.exp(rng.uniform(np.log(0.1), np.log(3.0), size=loc.shape))
    y = loc + scale * rng.normal(size=loc.shape)
    ens = loc + scale * rng.normal(size=(50, *loc.shape))
    rel = P.reliability(ens, y, bins=5)
    np.testing.assert_allclose(rel["spread"], rel["rmse"], rtol=0.1)
    assert sum(rel["count"]) == y.size and np.all(np.diff(rel["spread"]) > 0)


def test_paired_difference_and_seed_summary():
    from stdiff.benchmark import _stats

    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(40)]
    a = [{g: {"pcc": float(v)} for g, v in zip(genes, rng.uniform(0.3, 0.8, 40))} for _ in range(3)]
    b = [{g: {"pcc": d[g]["pcc"] - 0.05} for g in genes} for d in a]
    d = _stats.paired_difference(a, b, "pcc")
    assert d["diff"] == pytest.approx(0.05) and d["ci95"][0] == pytest.approx(0.05)
    same = _stats.paired_difference(a, a, "pcc")
    assert same["diff"] == 0.0
    s = _stats.summarize_seeds(a)
    seed_means = [np.mean([x[g]["pcc"] for g in genes]) for x in a]
    assert s["mean"]["pcc"] == pytest.approx(np.mean(seed_means))
    assert s["sd"]["pcc"] == pytest.approx(np.std(seed_means, ddof=1))


# ------------------------------------------------------------------ splits


def _grid_section(h=9, w=11, factor=2):
    from stdiff.pp import Section, aggregate

    rng = np.random.default_rng(0)
    hr = rng.poisson(3.0, size=(2, h * factor, w * factor)).astype(np.float32)
    return Section(
        genes=["a", "b"], lr=aggregate(hr, factor), hr=hr, he=np.zeros((3, h * factor, w * factor), np.uint8),
        mask_lr=np.ones((h, w), bool), mask_hr=np.ones((h * factor, w * factor), bool), origin=(100.0, -50.0),
        lr_um=20.0, factor=factor, he_scale=1, coordinate_system="global", name="s",
    )  # fmt: skip


def _hr_centres(sec):
    rows, cols = np.nonzero(sec.truth_mask)
    return {(sec.origin[0] + (c + 0.5) * sec.hr_um, sec.origin[1] + (r + 0.5) * sec.hr_um) for r, c in zip(rows, cols)}


@pytest.mark.parametrize("how", ["x:0.5", "y:0.3", "x:0.7"])
def test_region_split_puts_no_pixel_in_both_train_and_test(how):
    from stdiff.benchmark._splits import SplitSpec, make_split, validation_split

    sec = _grid_section()
    sp = make_split({"s": sec}, SplitSpec.parse(how), tile_lr=2)
    train, test = _hr_centres(sp.train[0]), _hr_centres(sp.test[0])
    assert not train & test
    assert train | test == _hr_centres(sec)
    total = sp.train[0].hr.sum() + sp.test[0].hr.sum()
    assert total == pytest.approx(sec.hr.sum())
    fit, val, _ = validation_split(sp.train, tile_lr=2)
    assert val is not None and not _hr_centres(fit[0]) & _hr_centres(val[0])
    assert _hr_centres(fit[0]) | _hr_centres(val[0]) == train  # validation comes from the training part only


def test_split_errors_are_clear():
    from dataclasses import replace

    from stdiff.benchmark._splits import SplitSpec, make_split

    sec = _grid_section()
    with pytest.raises(ValueError, match="fewer than one"):
        make_split({"s": sec}, SplitSpec.parse("x:0.9"), tile_lr=3)
    empty = sec.mask_lr.copy()
    empty[:, 6:] = False
    with pytest.raises(ValueError, match="no tissue"):
        make_split({"s": replace(sec, mask_lr=empty)}, SplitSpec.parse("x:0.5"), tile_lr=2)
    for bad in ("z:0.5", "x:1.5", "x"):
        with pytest.raises(ValueError):
            SplitSpec.parse(bad)
    with pytest.raises(ValueError, match="both"):
        SplitSpec.parse(train=["a"], test=["a"])


# ------------------------------------------------------------------ end to end


def _load(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def merfish_zarr(tmp_path_factory, data_root):
    """The MERFISH mini section written as SpatialData (DAPI + transcripts, so no keys are needed)."""
    import stdiff as sd

    path = tmp_path_factory.mktemp("merfish") / "section.zarr"
    sdata = sd.datasets.merfish_mouse_brain_mini(data_dir=data_root / "giotto_mini_merfish_mouse_brain")
    sdata.subset(["dapi", "transcripts"]).write(path)
    return path


FAST = "bicubic,nearest_masked,ridge,istar,unet,stdiff,stdiff_1sample,stdiff_no_gene_graph"


@pytest.mark.slow
def test_input_reproduces_the_merfish_preset(tmp_path, merfish_zarr, data_root):
    from stdiff.benchmark import main

    a, b = tmp_path / "preset.json", tmp_path / "input.json"
    common = ["--profile", "tiny", "--seeds", "0", "--methods", FAST]
    assert main(["--dataset", "merfish", "--data-dir", str(data_root / "giotto_mini_merfish_mouse_brain"),
                 "--out", str(a), *common]) == 0  # fmt: skip
    assert main(["--input", str(merfish_zarr), "--split", "x:0.5", "--genes", "8", "--factor", "5", "--lr-um", "50",
                 "--he-um", "5", "--out", str(b), *common]) == 0  # fmt: skip
    pa, pb = _load(a), _load(b)
    assert pa["genes"] == pb["genes"] and len(pa["genes"]) == 8
    for track in ("reference", "self_supervised"):
        ma, mb = pa["runs"][0]["tracks"][track]["methods"], pb["runs"][0]["tracks"][track]["methods"]
        assert set(ma) == set(mb)
        for name in ma:
            assert ma[name]["per_gene"] == mb[name]["per_gene"], (track, name)
    # every method and gene has every metric; timings, steps and memory per method
    metrics = {"pcc", "rmse", "ssim", "crps", "coverage50", "coverage90", "spread_skill"}
    ref = pb["runs"][0]["tracks"]["reference"]
    assert {"bicubic", "nearest_masked", "ridge", "istar", "unet", "stdiff"} <= set(ref["methods"])
    for name, m in ref["methods"].items():
        assert set(m["per_gene"]) == set(pb["genes"])
        assert all(set(v) == metrics for v in m["per_gene"].values()), name
        for key in ("train_steps", "train_s", "predict_s", "peak_rss_mb"):
            assert m[key] is not None and m[key] >= 0, (name, key)
    st = ref["methods"]["stdiff"]
    assert st["mean"]["crps"] > 0 and 0 <= st["mean"]["coverage90"] <= 1 and st["mean"]["spread_skill"] > 0
    assert ref["methods"]["stdiff_1sample"]["mean"]["pcc"] is None  # a single sample is scored by CRPS only
    bic = ref["methods"]["bicubic"]
    assert bic["mean"]["coverage50"] is None and bic["mean"]["crps"] > 0  # CRPS = MAE for point forecasts
    assert ref["methods"]["istar"]["train_steps"] > 0
    assert set(ref["histology_gain"]) >= {"ridge", "istar", "unet", "stdiff"}
    assert "stdiff_no_gene_graph" in ref["comparisons"]
    md = b.with_suffix(".md").read_text()
    assert "Reference-trained track" in md and "Self-supervised track" in md and "| **stdiff**" in md


@pytest.mark.slow
def test_synthetic_preset_tiny_end_to_end(tmp_path):
    from stdiff.benchmark import main

    out = tmp_path / "bench.json"
    assert main(["--dataset", "synthetic", "--profile", "tiny", "--seeds", "0,1", "--out", str(out),
                 "--methods", "nearest,nearest_masked,ridge,istar,stdiff", "--tracks", "reference",
                 "--set", "mean.gene_dim=3"]) == 0  # fmt: skip
    res = _load(out)
    assert res["status"] == "complete" and res["seeds"] == [0, 1]
    assert json.loads(out.read_text())["runs"][0]["config"]["mean"]["gene_dim"] == 3  # --set reached the model
    st = res["methods"]["stdiff"]
    assert [s["seed"] for s in st["seeds"]] == [0, 1] and st["sd"]["pcc"] is not None
    assert res["methods"]["nearest"]["sd"]["pcc"] == pytest.approx(0.0)  # interpolation has no seed
    assert "±" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_variants_of_absent_components_are_skipped_with_a_reason(tmp_path):
    """Without cross-attention, its ablation is stdiff itself and its knock-out has nothing to knock out."""
    from stdiff.benchmark import run_benchmark

    res = run_benchmark(
        "synthetic", profile="tiny", seeds=[0], tracks=["reference"], out=tmp_path / "v.json",
        methods=["stdiff", "stdiff_no_cross_attention", "stdiff_ko_cross_attention", "stdiff_with_cross_attention"],
        overrides={"components.use_cross_attention": False},
    )  # fmt: skip
    track = res["runs"][0]["tracks"]["reference"]
    assert "already has components.use_cross_attention=False" in track["skipped"]["stdiff_no_cross_attention"]
    assert "no cross attention to knock out" in track["skipped"]["stdiff_ko_cross_attention"]
    assert "stdiff_with_cross_attention" in track["methods"] and "stdiff" in track["methods"]
    assert res["runs"][0]["config"]["components"]["use_cross_attention"] is False


def test_cli_errors(tmp_path):
    from stdiff.benchmark import run_benchmark
    from stdiff.benchmark._cli import parse_overrides

    sets = ["mean.gene_dim=8", "components.use_cross_attention=false", "training.max_time_s=60",
            "calibration.step_candidates=[4,8]", "tile_lr=6"]  # fmt: skip
    expected = {"mean.gene_dim": 8, "components.use_cross_attention": False, "training.max_time_s": 60.0,
                "calibration.step_candidates": (4, 8), "tile_lr": 6}  # fmt: skip
    assert parse_overrides(sets) == expected
    for bad, msg in (("nope=1", "FIELD=VALUE"), ("gene_dim=8", "FIELD=VALUE"), ("mean.gene_dim=x", "cannot read"),
                     ("components.use_modulation=maybe", "true or")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            parse_overrides([bad])

    with pytest.raises(ValueError, match="her2st"):
        run_benchmark("synthetic", profile="tiny", train=["B4"], out=tmp_path / "x.json")
    with pytest.raises(ValueError, match="Unknown method"):
        run_benchmark("synthetic", profile="tiny", methods=["magic"], out=tmp_path / "x.json")
    with pytest.raises(ValueError, match="needs a split"):
        run_benchmark(inputs=["a.zarr"], profile="tiny", out=tmp_path / "x.json")
    with pytest.raises(ValueError, match="either"):
        run_benchmark("merfish", inputs=["a.zarr"], profile="tiny", out=tmp_path / "x.json")


# ------------------------------------------------------------------ training budget


@pytest.fixture(scope="module")
def small_split(synthetic_small):
    from stdiff.benchmark._splits import SplitSpec, make_split
    from stdiff.pp import rasterize

    sec = rasterize(synthetic_small, counts_key="hr_counts", image_key="he", lr_um=100, factor=5, he_scale=2)
    return make_split({"s": sec}, SplitSpec.parse("x:0.5"), tile_lr=4)


def test_self_supervised_track_hides_the_truth(small_split):
    from stdiff.benchmark import _run
    from stdiff.benchmark._profiles import profile
    from stdiff.models import DiffSTConfig

    cfg = DiffSTConfig.preset("tiny", he_scale=2)
    ctx = _run._contexts("self_supervised", small_split.test, small_split.train, None, "", None, ["a"], cfg,
                         profile("tiny"), 0, "cpu")  # fmt: skip
    assert all(s.hr is None and s.mask_truth is None for s in ctx.train)
    assert [s.name for s in ctx.train] == [s.name for s in small_split.test] and ctx.validation is None
    # its normaliser comes from the LR map only: LR counts per HR pixel have the same per-gene mean
    t = small_split.test[0]
    np.testing.assert_allclose(ctx.normalizer.size, (t.lr / 25.0)[:, t.mask_lr].mean(1), rtol=1e-6)


@pytest.mark.slow
def test_input_section_split(tmp_path, caplog):
    import stdiff as sd
    from stdiff.benchmark import main

    paths = []
    for i in range(3):
        p = tmp_path / f"s{i}.zarr"
        sd.datasets.synthetic_tissue(size_um=600, n_genes=6, seed=i, he_um=5.0).write(p)
        paths.append(str(p))
    out = tmp_path / "sections.json"
    args = ["--counts-key", "hr_counts", "--image-key", "he", "--lr-um", "100", "--factor", "5", "--he-um", "10",
            "--genes", "4", "--profile", "tiny", "--methods", "nearest_masked,ridge",
            "--tracks", "reference"]  # fmt: skip
    rc = main([*(x for p in paths for x in ("--input", p)), "--train", f"{paths[0]},{paths[1]}", "--test", paths[2],
               "--out", str(out), *args])  # fmt: skip
    assert rc == 0
    res = _load(out)
    info = res["runs"][0]["info"]
    assert info["train_sections"] == ["s0", "s1"] and info["test_sections"] == ["s2"]
    assert len(res["genes"]) == 4 and res["methods"]["ridge"]["mean"]["pcc"] is not None
    assert res["runs"][0]["tracks"]["reference"]["validation"] == "validate on section s1"
    # --validate: s1 (the validation section) plays the test and s2 is never read; s0 alone (6 × 6 LR
    # px) is too small to carve inner validation data from, which the run says
    val_out = tmp_path / "validate.json"
    with caplog.at_level(logging.WARNING, logger="stdiff"):
        rc = main([*(x for p in paths for x in ("--input", p)), "--train", f"{paths[0]},{paths[1]}", "--test",
                   paths[2], "--validate", "--out", str(val_out), *args])  # fmt: skip
    assert rc == 0
    val = _load(val_out)["runs"][0]
    assert val["info"]["validate"] == "validate on section s1"
    assert val["info"]["test_sections"] == ["s2"]  # the split as given; s1 was scored instead
    assert val["test_tissue_hr_pixels"] != res["runs"][0]["test_tissue_hr_pixels"]
    assert "train without early stopping" in caplog.text
    with pytest.raises(ValueError, match="both"):
        main(["--input", paths[0], "--train", paths[0], "--test", paths[0], *args])


def test_input_histology_pixel_is_derived_from_the_image(tmp_path, caplog):
    import stdiff as sd
    from stdiff.benchmark._cli import default_he_um
    from stdiff.benchmark._profiles import profile

    p = tmp_path / "s.zarr"
    sd.datasets.synthetic_tissue(size_um=400, n_genes=3, seed=0, he_um=5.0).write(p)
    # cpu: HR 20 µm / 8 = 2.5 µm, but the image has 5 µm pixels; her2st-like HR 200 µm: at most 6.25 µm
    he, how = default_he_um(str(p), 20.0, profile("cpu"), None, None)
    assert he == pytest.approx(5.0) and "not finer than the image's 5 µm" in how
    assert default_he_um(str(p), 200.0, profile("cpu"), None, None)[0] == pytest.approx(6.25)
    assert default_he_um(str(p), 40.0, profile("tiny"), None, None)[0] == pytest.approx(20.0)
    # a histology coarser than half the HR pixel is warned about
    with caplog.at_level("WARNING", logger="stdiff"):
        sd.pp.rasterize(sd.datasets.synthetic_tissue(size_um=400, n_genes=3, seed=0, he_um=5.0),
                        counts_key="hr_counts", lr_um=40, factor=5, he_scale=1)  # fmt: skip
    assert "coarser than half the HR pixel" in caplog.text
