"""Diff-ST: EDM sampler, canvas sampling, the three components (active, switchable), save/load, honesty of inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _plain_gene_graph import dense_adjacency, graph_from_adjacency

from stdiff.models import (
    Canvas,
    DiffST,
    DiffSTConfig,
    DiffSTUNet,
    admitted_mask,
    coexpression_graph,
    edm,
    patch_entropy,
)
from stdiff.models._windows import Prepared
from stdiff.pp import aggregate, rasterize
from stdiff.pp._normalize import Normalizer


def _gaussian_denoiser(m: torch.Tensor, s: torch.Tensor):
    """The exact denoiser of x0 ~ N(m, s²) observed as x0 + σ·ε."""
    return lambda x, sigma: (s**2 * x + sigma**2 * m) / (s**2 + sigma**2)


def test_edm_preconditioning_and_schedule():
    sigma = torch.tensor([0.01, 1.0, 50.0])
    c_skip, c_out, c_in, _ = edm.precondition(sigma)
    # D = c_skip·x + c_out·F: at σ → 0 the input passes through, at σ → ∞ the network output does
    assert c_skip[0] > 0.999 and c_skip[2] < 1e-3
    # the network's target (y − c_skip·(y + σn)) / c_out has unit variance at every σ (σ_data = 1)
    torch.testing.assert_close(((1 - c_skip) ** 2 + c_skip**2 * sigma**2) / c_out**2, torch.ones(3))
    torch.testing.assert_close(c_in, 1 / torch.sqrt(sigma**2 + 1))
    s = edm.karras_sigmas(8, sigma_min=0.002, sigma_max=10.0)
    assert len(s) == 9 and s[0] == pytest.approx(10.0) and s[-2] == pytest.approx(0.002, rel=1e-4) and s[-1] == 0
    assert torch.all(s[:-1] > s[1:])


@pytest.mark.parametrize("solver,steps,tol", [("heun", 32, 0.035), ("euler", 64, 0.08)])
def test_residual_samples_have_the_known_gaussian_posterior(solver, steps, tol):
    """With the exact denoiser of a known Gaussian, samples reproduce its mean and its spread."""
    m = torch.linspace(-1, 1, 64).view(1, 1, 8, 8)
    s = torch.full_like(m, 0.5)
    s[..., :4] = 1.5
    x = edm.sample(
        _gaussian_denoiser(m, s), (4000, 1, 8, 8), steps=steps, generator=torch.Generator().manual_seed(0),
        solver=solver, sigma_max=20.0,
    )  # fmt: skip
    torch.testing.assert_close(x.mean(0, keepdim=True), m, atol=0.1, rtol=0)
    ratio = (x.std(0) / s[0]).flatten()
    assert ratio.min() > 1 - tol and ratio.max() < 1 + tol, ratio


def test_canvas_sampling_keeps_the_spread_of_overlapping_tiles():
    """Sampling on the blended canvas keeps a unit spread; blending independent tile samples shrinks it."""
    canvas = Canvas((4, 8), factor=4, tile_lr=4, positions=np.array([[0, 0], [0, 2], [0, 4]]))
    den = _gaussian_denoiser(torch.tensor(0.0), torch.tensor(1.0))

    def d_canvas(x, sigma):  # denoise every tile, blend the denoised tiles
        idx = np.arange(len(canvas))
        tiles = canvas.extract(x, idx)
        return canvas.blend(lambda j: den(tiles[torch.as_tensor(j)], sigma), (x.shape[0],), 1, 8)

    x = edm.sample(d_canvas, (1000, 1, 16, 32), steps=16, generator=torch.Generator().manual_seed(1))
    sd_canvas = float(x.std(0).mean())
    # independent per-tile samples blended by the same window
    ind = edm.sample(den, (1000 * 3, 1, 16, 16), steps=16, generator=torch.Generator().manual_seed(2))
    ind = ind.view(3, 1000, 1, 16, 16)
    blended = canvas.blend(lambda j: ind[torch.as_tensor(j)], (1000,), 1, 8)
    sd_blend = float(blended[..., 8:24].std(0).mean())
    assert 0.95 < sd_canvas < 1.07 and sd_blend / sd_canvas < 0.9


def test_entropy_ranking_and_curriculum():
    img = torch.full((1, 3, 64, 64), 0.5)
    img[:, :, :16, :16] = torch.rand(1, 3, 16, 16)  # the only textured patch (top-left of a 4×4 grid)
    ent = patch_entropy(img, 16)
    assert ent.shape == (1, 16) and ent[0].argmax() == 0 and ent[0, 1:].max() == 0
    assert admitted_mask(ent, 0.1).sum() == 2 and admitted_mask(ent, 0.1)[0, 0]
    assert admitted_mask(ent, 1.0).all()
    comp = DiffSTConfig().components
    assert comp.admitted_fraction(0.0) == 0.1 and comp.admitted_fraction(0.25) == 0.3
    assert comp.admitted_fraction(0.61) == 1.0


def _net(sample_channels=0, **cfg):
    torch.manual_seed(0)
    config = DiffSTConfig.preset("tiny", he_scale=4, **cfg)
    graph = graph_from_adjacency(np.ones((5, 5), np.float32) - np.eye(5, dtype=np.float32))
    return DiffSTUNet(config, 5, cond_channels=11, graph=graph, sample_channels=sample_channels, patch_px=4).eval()


def _inputs(b=2, size=12):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, 11, size, size, generator=g),
        torch.ones(b, 1, size, size),
        torch.rand(b, 3, 4 * size, 4 * size, generator=g),
    )


def test_unet_shapes_odd_sizes_and_cached_conditioning():
    net = _net(sample_channels=5)
    cond, m, img = _inputs(size=14)  # not a multiple of 2**levels
    x = torch.randn(2, 5, 14, 14)
    noise = torch.tensor([10.0, 900.0])
    out, dloss = net(cond, m, img, x, noise)
    assert out.shape == x.shape and dloss.ndim == 0
    enc = net.encode(cond, m, img)
    torch.testing.assert_close(net.decode(enc, x, noise), out)
    # the stem is aligned: each HR pixel sees only its own histology pixels
    stem_in = torch.zeros(1, 3, 16, 16)
    stem_in[..., 4:8, 8:12] = 1.0
    base = net.he_in(torch.zeros(1, 3, 16, 16))
    diff = (net.he_in(stem_in) - base).abs().sum(1)[0]
    assert diff[1, 2] > 0 and (diff > 1e-7).sum() == 1


def test_each_component_is_active():
    """Swapping patch tokens, zeroing the modulation gates, dropping the graph's edges: each changes the output."""
    net = _net()
    for p in net.parameters():  # a non-degenerate network (zero-initialised convs would hide effects)
        if p.ndim > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    cond, m, img = _inputs()
    ref, _ = net(cond, m, img)
    ca = net.cross_attention
    prep = ca.prepare(img)
    swapped = dict(prep, tokens=prep["tokens"].flip(0))
    levels = net.encode(cond, m, img)["levels"]
    lvl = net.cross_attention_level
    q = torch.zeros_like(levels[lvl])
    assert (ca(q, prep) - ca(q, swapped)).abs().max() > 1e-4
    for component in ("modulation", "cross_attention", "gene_graph"):
        net.set_knockout(component)
        out, _ = net(cond, m, img)
        net.set_knockout(None)
        assert (out - ref).abs().max() > 1e-5, component
    again, _ = net(cond, m, img)
    torch.testing.assert_close(again, ref)


def test_disentangling_loss_does_not_reward_collapse():
    from stdiff.models import disentangling_loss

    g = torch.Generator().manual_seed(0)
    shared = torch.randn(2, 8, 6, 6, generator=g)
    distinct = torch.randn(2, 8, 6, 6, generator=g)
    aligned = disentangling_loss(shared, shared + 0.05 * torch.randn(2, 8, 6, 6, generator=g), distinct, -distinct)
    const = torch.ones(2, 8, 6, 6)
    collapsed = disentangling_loss(const, const, distinct, -distinct)
    assert aligned < collapsed


def _section(sdata, factor=5):
    return rasterize(sdata, counts_key="hr_counts", image_key="he", lr_um=100, factor=factor, he_scale=2)


@pytest.mark.parametrize("switch", ["use_modulation", "use_cross_attention", "use_gene_graph", "all_off"])
def test_each_component_can_be_switched_off(synthetic_small, switch):
    sec = _section(synthetic_small)
    off = dict.fromkeys(("use_modulation", "use_cross_attention", "use_gene_graph"), False)
    components = off if switch == "all_off" else {switch: False}
    cfg = DiffSTConfig.preset("tiny", components=components, calibration={"enabled": False})
    model = DiffST.setup(sec, cfg)
    net = model.mean_net
    if switch in ("use_modulation", "all_off"):
        assert all(type(f).__name__ == "PlainFusion" for f in net.fusion)
    if switch in ("use_cross_attention", "all_off"):
        assert net.cross_attention is None
    if switch in ("use_gene_graph", "all_off"):
        assert not net.head.has_graph and model.graph is None
    before = [p.detach().clone() for p in net.parameters()]
    model.train(sec, steps=3, residual_steps=2, progress=False)
    assert model.train_info["stage_a"]["steps"] == 3 and model.train_info["stage_b"]["steps"] == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, model.mean_net.parameters()))
    pred = model.predict_section(sec, n_samples=2, num_inference_steps=2, progress=False)
    assert pred["mean"].shape == sec.hr.shape and np.isfinite(pred["mean"]).all()


def test_trained_model_components_and_calibration(tiny_model):
    net = tiny_model.mean_net
    assert all(type(f).__name__ == "CrossModalModulation" for f in net.fusion) and net.cross_attention is not None
    np.testing.assert_allclose(net.head.adjacency.numpy(), dense_adjacency(tiny_model.graph))
    info = tiny_model.train_info
    assert info["validation_sections"] and "calibration" in info
    assert tiny_model.sampling_steps in tiny_model.config.calibration.step_candidates
    assert np.all(tiny_model.spread_scale > 0) and np.all(tiny_model.gene_sigma > 0)


def test_prediction_outputs_and_knockouts(tiny_model, synthetic_small):
    sec = _section(synthetic_small)
    out = tiny_model.predict_section(sec, n_samples=4, seed=0, progress=False, return_samples=True)
    G, H, W = sec.hr.shape
    assert out["samples"].shape == (4, G, H, W)
    # the written mean is stage A (not the sample average), mapped back to counts; off tissue is 0
    np.testing.assert_allclose(tiny_model.normalizer.transform(out["mean"]), out["z_mean"], atol=1e-4)
    assert not np.allclose(out["samples"].mean(0), out["z_mean"])
    off = ~sec.mask_hr
    assert np.all(out["mean"][:, off] == 0) and np.all(out["std"][:, off] == 0)
    assert np.all(out["q05"] <= out["q95"] + 1e-6) and out["std"][:, sec.mask_hr].mean() > 0
    mean_only = tiny_model.predict_section(sec, n_samples=0, progress=False)
    np.testing.assert_array_equal(mean_only["mean"], out["mean"])
    ko = tiny_model.predict_section(sec, n_samples=0, progress=False, knockout="gene_graph")
    assert not np.allclose(ko["z_mean"], out["z_mean"])
    np.testing.assert_array_equal(tiny_model.predict_section(sec, n_samples=0, progress=False)["mean"], out["mean"])
    # the whole-section mean over the 8 tile symmetries: another mean, same mask, same shape
    cfg = tiny_model.config
    try:
        tiny_model.config = cfg.replace(test_time_symmetries=8)
        sym = tiny_model.predict_section(sec, n_samples=0, progress=False)
    finally:
        tiny_model.config = cfg
    assert sym["mean"].shape == out["mean"].shape and np.all(sym["mean"][:, off] == 0)
    assert not np.allclose(sym["z_mean"], out["z_mean"])
    assert np.corrcoef(sym["z_mean"][:, sec.mask_hr].ravel(), out["z_mean"][:, sec.mask_hr].ravel())[0, 1] > 0.9


def test_save_load_identical_samples_and_checks(tiny_model, synthetic_small, tmp_path):
    sec = _section(synthetic_small)
    path = tiny_model.save(tmp_path / "m.pt")
    loaded = DiffST.load(path)
    assert loaded.genes == tiny_model.genes and loaded.config == tiny_model.config
    assert loaded.model_hash() == tiny_model.model_hash() and loaded.sampling_steps == tiny_model.sampling_steps
    a = tiny_model.predict_section(sec, seed=3, progress=False)["std"]
    b = loaded.predict_section(sec, seed=3, progress=False)["std"]
    np.testing.assert_array_equal(a, b)
    c = loaded.predict_section(sec, seed=4, progress=False)["std"]
    assert not np.array_equal(a, c)
    with pytest.raises(KeyError, match="NOPE"):
        DiffST.load(path, genes=["NOPE"])
    with pytest.raises(ValueError, match="Config differs"):
        DiffST.load(path, config=tiny_model.config.replace(**{"mean.base_channels": 4}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    torch.load(path, weights_only=True)


def test_training_is_repeatable_and_stops_early(synthetic_small):
    sec = _section(synthetic_small)
    cfg = DiffSTConfig.preset("tiny", calibration={"enabled": False})
    m1 = DiffST.setup(sec, cfg).train(sec, steps=4, residual_steps=2, seed=7, progress=False)
    m2 = DiffST.setup(sec, cfg).train(sec, steps=4, residual_steps=2, seed=7, progress=False)
    assert m1.model_hash() == m2.model_hash()
    assert m1.train_info["stage_a"]["history"] == m2.train_info["stage_a"]["history"]
    # patience 1 with validation every step: stops as soon as the validation loss does not improve
    # (a generous time cap: patience, not a loaded machine, must stop it)
    cfg2 = cfg.replace(training={"val_every": 1, "patience": 1, "max_time_s": 600.0})
    m3 = DiffST.setup(sec, cfg2).train(sec, steps=200, residual_steps=1, seed=7, progress=False)
    a = m3.train_info["stage_a"]
    assert a["stopped"] == "patience" and a["steps"] < 200 and a["best_step"] < a["steps"]


def test_training_without_validation_says_the_spread_is_not_calibrated(synthetic_small, caplog):
    sec = _section(synthetic_small)
    cfg = DiffSTConfig.preset("tiny")
    with caplog.at_level("WARNING", logger="stdiff"):
        m = DiffST.setup(sec, cfg).train(sec, validation=[], steps=2, residual_steps=1, seed=0, progress=False)
    assert "not calibrated" in caplog.text and "validation=" in caplog.text
    assert "skipped" in m.train_info["calibration"] and not m.train_info["validation_sections"]
    assert np.all(m.spread_scale == 1.0) and m.train_info["stage_a"]["best_val"] is None


def test_input_mask_and_conditioning_never_read_the_truth(synthetic_small):
    sec = _section(synthetic_small)
    from dataclasses import replace

    model = DiffST.setup(sec, DiffSTConfig.preset("tiny"))
    rng = np.random.default_rng(0)
    fake = rng.poisson(5.0, size=sec.hr.shape).astype(np.float32)
    other = replace(sec, hr=fake)
    a, b = model.prepare(sec, with_truth=True), model.prepare(other, with_truth=True)
    np.testing.assert_array_equal(a.cond, b.cond)
    assert not np.array_equal(a.z_hr, b.z_hr)
    # the input mask comes from the LR map and the H&E: the same whatever the HR truth says
    sdata = synthetic_small
    m1 = rasterize(sdata, counts_key="hr_counts", image_key="he", lr_um=100, factor=5, he_scale=2).mask_hr
    assert np.array_equal(m1, sec.mask_hr)
    np.testing.assert_array_equal(
        np.kron(sec.mask_lr, np.ones((5, 5), bool)) | sec.mask_hr, np.kron(sec.mask_lr, np.ones((5, 5), bool))
    )


def test_base_is_mask_aware_and_conserves_mass(synthetic_small):
    from stdiff.pp import lr_per_tissue_pixel

    sec = _section(synthetic_small)
    up = lr_per_tissue_pixel(sec)
    tissue_blocks = aggregate(sec.mask_hr.astype(np.float32), sec.factor) > 0
    np.testing.assert_allclose(aggregate(up, sec.factor)[:, tissue_blocks], sec.lr[:, tissue_blocks], rtol=1e-5)
    assert np.all(up[:, ~sec.mask_hr] == 0)
    prep = Prepared(sec, DiffST.setup(sec, DiffSTConfig.preset("tiny")).normalizer, with_truth=False)
    assert prep.cond.shape[0] == 2 * len(sec.genes) + 1


def test_self_supervised_coarsening(synthetic_small):
    sec = _section(synthetic_small)
    coarse = sec.coarsen(2)
    assert coarse.lr_um == 200 and coarse.hr_um == 100 and coarse.factor == 2
    np.testing.assert_array_equal(coarse.hr, sec.lr * sec.mask_lr)
    np.testing.assert_array_equal(aggregate(coarse.hr, 2), coarse.lr)
    assert coarse.he.shape[-1] == coarse.hr.shape[-1] * coarse.he_scale


def test_aggregation_base_distributes_counts_by_histology(synthetic_small):
    """``base="aggregation"``: the base still sums to the LR map per block, but is not the even split."""
    from stdiff.pp import lr_per_tissue_pixel

    sec = _section(synthetic_small)
    model = DiffST.setup(sec, DiffSTConfig.preset("tiny", base="aggregation"))
    prep = model.prepare(sec, with_truth=False)
    counts = model.normalizer.inverse(prep.base)
    tissue_blocks = aggregate(sec.mask_hr.astype(np.float32), sec.factor) > 0
    np.testing.assert_allclose(aggregate(counts, sec.factor)[:, tissue_blocks], sec.lr[:, tissue_blocks], rtol=1e-3)
    assert not np.allclose(counts, lr_per_tissue_pixel(sec), rtol=1e-2)
    assert model.prepare(sec, with_truth=False).base is not None  # cached: no refit
    with pytest.raises(ValueError, match="config.base"):
        DiffST.setup(sec, DiffSTConfig.preset("tiny", base="median")).prepare(sec, with_truth=False)
    # the base model is fitted once at setup and stored: nothing is fitted at inference
    fresh = _section(synthetic_small)
    out = model.predict_section(fresh, n_samples=0, progress=False)
    assert np.isfinite(out["mean"]).all()
    # a section whose histology is replaced (sharing ``meta``) gets its own base
    from dataclasses import replace

    rotated = replace(fresh, he=np.ascontiguousarray(fresh.he[:, ::-1, ::-1]))
    assert not np.array_equal(
        model.prepare(rotated, with_truth=False).base, model.prepare(fresh, with_truth=False).base
    )


def test_aggregation_base_is_stored_and_chunk_consistent(synthetic_small, tmp_path):
    """The base model round-trips through save/load, and a crop's base is the whole base cropped."""
    sec = _section(synthetic_small)
    model = DiffST.setup(sec, DiffSTConfig.preset("tiny", base="aggregation"))
    assert model.base_model is not None and model.base_model.genes == sec.genes
    whole = model.normalizer.inverse(model.prepare(sec, with_truth=False).base)
    loaded = DiffST.load(model.save(tmp_path / "m.pt"))
    assert loaded.model_hash() == model.model_hash()
    fresh = _section(synthetic_small)
    base = loaded.normalizer.inverse(loaded.prepare(fresh, with_truth=False).base)
    np.testing.assert_allclose(base, whole, atol=1e-4)
    # a crop given the whole slide's stain reference (as superresolve's chunks are) gets the whole
    # section's base, cropped, away from its edge (nuclei clumps cut by the edge aside); without the
    # reference its own stain normalisation shifts the features and the base
    from stdiff.pp import stain_reference
    from stdiff.pp._histology import STAIN_REFERENCE_KEY

    h, w = sec.shape_lr
    f = sec.factor
    inner = slice(0, (w - 6) * f)

    def agreement(crop):
        part = loaded.normalizer.inverse(loaded.prepare(crop, with_truth=False).base)[..., inner]
        return np.isclose(part, whole[..., inner], rtol=1e-3, atol=1e-3).mean()

    own = fresh.crop_lr(slice(0, h), slice(0, w - 3), name="crop")
    shared = fresh.crop_lr(slice(0, h), slice(0, w - 3), name="crop")
    shared.meta[STAIN_REFERENCE_KEY] = stain_reference([fresh.he])
    assert agreement(shared) > 0.97
    assert agreement(own) < agreement(shared) - 0.2
    with pytest.raises(ValueError, match="base_model"):
        DiffST(sec.genes, config=DiffSTConfig.preset("tiny", base="aggregation"), factor=f, lr_um=sec.lr_um,
               normalizer=model.normalizer, graph=model.graph)  # fmt: skip


def test_base_blend_is_chosen_on_validation_truth(synthetic_small):
    """The base's blend with the nearest map follows the validation truth: 1 where the truth is the
    nearest map, 0 where it is the histology-distributed map."""
    from dataclasses import replace

    from stdiff.models import AggregationConsistency
    from stdiff.pp import fit_normalizer, lr_per_tissue_pixel

    sec = _section(synthetic_small)
    ac = AggregationConsistency().fit([sec], seed=0, max_time=20.0, device="cpu")
    norm = fit_normalizer([sec])
    hist = ac.predict(sec, blend=0.0)["histology"]
    for truth, expected in ((lr_per_tissue_pixel(sec), 1.0), (hist, 0.0)):
        ac.blend_weight = 0.5
        ac.choose_blend_on_truth([replace(sec, hr=truth)], norm)
        assert ac.blend_weight == expected and min(ac.blend_scores.values()) < 1e-8


def test_fit_stopped_by_time_keeps_validated_weights():
    """A stage stopped by its time cap before its first scheduled validation is still validated."""
    from stdiff.models.training import TrainingLoop

    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    x, y = torch.randn(32, 2), torch.randn(32, 1)
    calls = []

    def val_fn(m):
        calls.append(1)
        return float(((m(x) - y) ** 2).mean())

    loop = TrainingLoop(steps=1000, max_time_s=0.0, val_every=25, patience=4, learning_rate=1e-2, ema_decay=0.99)
    _, info = loop.run(
        net, batch_fn=lambda step: {"x": x, "y": y}, loss_fn=lambda m, b, frac: ((m(b["x"]) - b["y"]) ** 2).mean(),
        val_fn=val_fn,
    )
    assert info["stopped"] == "time" and info["steps"] == 1
    assert len(calls) == 1 and info["best_val"] is not None and info["best_step"] == 1


def test_nested_config_round_trips_and_names_its_fields():
    cfg = DiffSTConfig.preset("cpu")
    assert DiffSTConfig.from_dict(cfg.to_dict()) == cfg
    assert DiffSTConfig.from_dict(DiffSTConfig.preset("paper").to_dict()) == DiffSTConfig.preset("paper")
    assert cfg.residual.gene_dim < cfg.mean.gene_dim  # stage B's head is narrower than stage A's
    assert cfg.test_time_symmetries == 8
    assert DiffSTConfig.preset("tiny").test_time_symmetries == 1  # tests and the memory table: one pass
    with pytest.raises(ValueError, match="Unknown config fields"):
        DiffSTConfig.from_dict({**cfg.to_dict(), "no_such_field": 1})
    with pytest.raises(ValueError, match="Unknown fields .'stepz'. of config.training"):
        cfg.replace(**{"training.stepz": 5})
    # three ways to change a nested field give the same config; the others are untouched
    for path in DiffSTConfig.paths():  # every field is reachable by its path, and only the fields are
        assert cfg.replace(**{path: cfg.get(path)}) == cfg
    assert "training.steps" in DiffSTConfig.paths() and "training" not in DiffSTConfig.paths()
    a = cfg.replace(**{"training.steps": 5})
    assert a == cfg.replace(training={"steps": 5}) and a.training.steps == 5 and a.get("training.steps") == 5
    assert a.training.patience == cfg.training.patience and a.mean == cfg.mean
    # the documented presets: none of the three components in the default (retrained without them no
    # dataset lost accuracy, docs/model.md); all three in tiny (the tests exercise them) and paper
    switches = ("use_modulation", "use_cross_attention", "use_gene_graph")
    assert not any(getattr(cfg.components, k) for k in switches)
    assert all(getattr(DiffSTConfig.preset(p).components, k) for p in ("tiny", "paper") for k in switches)
    tiny = DiffSTConfig.preset("tiny", base="nearest", mean={"gene_dim": 6}, residual={"gene_dim": 2})
    model = DiffST(
        ["a", "b"], config=tiny, factor=2, lr_um=20.0,
        normalizer=Normalizer(["a", "b"], np.ones(2, np.float32), np.ones(2, np.float32)),
        graph=coexpression_graph(np.eye(2), ["a", "b"]),
    )  # fmt: skip
    assert (model.mean_net.head.gene_dim, model.residual_net.head.gene_dim) == (6, 2)


def test_test_time_symmetries_average_turned_back_outputs():
    """8 symmetries: the averaged output is equivariant (turning the input turns the output), 1 is the plain call."""
    from stdiff.models._diffst_prediction import DIHEDRAL, dihedral, mean_tiles, undo_dihedral

    x = torch.arange(12.0).view(1, 1, 3, 4)
    for k, flip in DIHEDRAL:
        torch.testing.assert_close(undo_dihedral(dihedral(x, k, flip), k, flip), x)
    assert len({tuple(dihedral(x, k, f).flatten().tolist()) for k, f in DIHEDRAL}) == 8
    net = _net()
    for p in net.parameters():
        if p.ndim > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    net.eval()
    cond, m, img = _inputs()
    with torch.no_grad():
        plain, _ = net(cond, m, img)
        torch.testing.assert_close(mean_tiles(net, cond, m, img, symmetries=1), plain)
        avg = mean_tiles(net, cond, m, img, symmetries=8)
        turned = mean_tiles(net, *(torch.rot90(t, 1, dims=(-2, -1)) for t in (cond, m, img)), symmetries=8)
    assert (avg - plain).abs().max() > 1e-5  # the network alone is not equivariant
    torch.testing.assert_close(turned, torch.rot90(avg, 1, dims=(-2, -1)), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="test_time_symmetries must be 1, 2, 4 or 8"):
        DiffSTConfig.preset("tiny", test_time_symmetries=10)
    with pytest.raises(ValueError, match="base must be"):
        DiffSTConfig().replace(base="bicubic")
