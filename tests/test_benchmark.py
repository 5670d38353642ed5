"""The benchmark harness: metric functions against known truth, baselines, and a tiny end-to-end run."""

from __future__ import annotations

import json

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
    from stdiff.benchmark._harness import evaluate_sections

    a, b = np.abs(_maps(6, g=2, h=10, w=12)), np.abs(_maps(7, g=2, h=9, w=9))
    ma, mb = np.ones((10, 12), bool), np.ones((9, 9), bool)
    mb[:, :2] = False
    res = evaluate_sections([a, b], [a, b], [ma, mb], ["x", "y"])
    for g in ("x", "y"):
        assert res[g]["pcc"] == pytest.approx(1.0)
        assert res[g]["rmse"] == pytest.approx(0.0)
        assert res[g]["ssim"] == pytest.approx(1.0)
    # PCC pools the tissue pixels of both sections
    pred = [a, b * 0 + 1.0]
    r = evaluate_sections(pred, [a, b], [ma, mb], ["x", "y"])["x"]["pcc"]
    flat_p = np.concatenate([a[0][ma], np.ones(mb.sum())])
    flat_t = np.concatenate([a[0][ma], b[0][mb]])
    assert r == pytest.approx(np.corrcoef(flat_p, flat_t)[0, 1])


# ------------------------------------------------------------------ baselines


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


def test_bicubic_reproduces_a_constant_map_exactly():
    from stdiff.benchmark import _baselines
    from stdiff.pp import Normalizer

    sec = _constant_section()
    norm = Normalizer(genes=sec.genes, size=np.array([1.5, 2.5]), scale=np.array([1.2, 0.7]))
    truth = norm.transform(sec.hr)
    for fn in (_baselines.bicubic, _baselines.nearest):
        pred = fn(sec, norm)
        assert pred.shape == truth.shape
        np.testing.assert_allclose(pred, truth, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_harness_tiny_end_to_end(tmp_path):
    from stdiff.benchmark import METHODS, main

    out = tmp_path / "bench.json"
    rc = main(["--dataset", "synthetic", "--profile", "tiny", "--seed", "0", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    md = out.with_suffix(".md").read_text()
    assert "| bicubic |" in md and "stdiff" in md
    assert res["status"] == "complete"
    assert res["dataset"] == "synthetic" and res["profile"] == "tiny"
    for key in ("platform", "cpu_count", "torch"):
        assert key in res["machine"]
    assert res["peak_rss_mb"] > 0
    genes = res["genes"]
    assert len(genes) == 8
    assert set(res["methods"]) == set(METHODS)
    for name, m in res["methods"].items():
        assert set(m["per_gene"]) == set(genes), name
        for g in genes:
            assert set(m["per_gene"][g]) == {"pcc", "rmse", "ssim"}
        for stat in ("mean", "median"):
            assert set(m[stat]) == {"pcc", "rmse", "ssim"}
            assert m[stat]["rmse"] is not None and m[stat]["rmse"] >= 0
            assert m[stat]["pcc"] is None or -1 <= m[stat]["pcc"] <= 1
        assert "train_s" in m and "predict_s" in m
    samplers = {(s["sampler"], s["steps"]) for s in res["speed"] if s["phase"] == "sample_tiles"}
    assert ("ddpm", 20) in samplers and ("ddim", 4) in samplers
    assert any(s["phase"] == "train" and s["s_per_step"] > 0 for s in res["speed"])
    # the top level mirrors the first run (the primary factor)
    assert res["runs"][0]["methods"]["bicubic"]["per_gene"] == res["methods"]["bicubic"]["per_gene"]
    assert res["runs"][0]["target"]["target"] is not None


def test_cli_rejects_sections_for_synthetic(tmp_path):
    from stdiff.benchmark import run_benchmark

    with pytest.raises(ValueError, match="her2st"):
        run_benchmark("synthetic", profile="tiny", train=["B4"], out=tmp_path / "x.json")
    with pytest.raises(ValueError, match="Unknown method"):
        run_benchmark("synthetic", profile="tiny", methods=["magic"], out=tmp_path / "x.json")
