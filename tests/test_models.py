"""Diff-ST components, scheduler, gene graph, ablations, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stdiff.models import (
    DDIMScheduler,
    DDPMScheduler,
    DiffST,
    DiffSTConfig,
    DiffSTUNet,
    admitted_mask,
    coexpression_graph,
    patch_entropy,
)
from stdiff.pp import aggregate, rasterize


def test_scheduler_add_noise_inverts_for_both_predictions():
    x0 = torch.randn(3, 2, 5, 5)
    noise = torch.randn_like(x0)
    for pred, last in (("epsilon", 900), ("v_prediction", 999)):  # ε → x0 is ill-conditioned at t=999
        t = torch.tensor([0, 500, last])
        s = DDPMScheduler(prediction_type=pred)
        xt = s.add_noise(x0, noise, t)
        out = s.training_target(x0, noise, t)
        x0_hat, eps_hat = s.predict_original(out, xt, t)
        torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(eps_hat, noise, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("cls,steps", [(DDIMScheduler, 10), (DDPMScheduler, 25)])
def test_sampler_with_oracle_recovers_x0(cls, steps):
    """With a network that knows x0, sampling from noise ends exactly at x0."""
    x0 = torch.randn(2, 3, 4, 4)
    s = cls(prediction_type="v_prediction")
    s.set_timesteps(steps)
    assert len(s.timesteps) == steps and s.timesteps[0] == 999
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(x0.shape, generator=gen)
    calls = 0
    for t in s.timesteps.tolist():
        torch.full((2,), t)
        ab = s.alphas_cumprod[t]
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        v = ab.sqrt() * eps - (1 - ab).sqrt() * x0
        x = s.step(v.float(), t, x, generator=gen).prev_sample
        calls += 1
    assert calls == steps
    torch.testing.assert_close(x, x0, atol=1e-4, rtol=1e-4)


def test_ddim_is_deterministic_and_loss_weights():
    s = DDIMScheduler()
    s.set_timesteps(5)
    out = torch.ones(1, 1, 2, 2)
    a = s.step(out, 999, torch.zeros(1, 1, 2, 2)).prev_sample
    b = s.step(out, 999, torch.zeros(1, 1, 2, 2)).prev_sample
    assert torch.equal(a, b)
    w = s.loss_weight(torch.tensor([0, 500, 999]), 5.0)
    assert w[0] < w[1] <= 1.0 and w[2] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.set_timesteps(0)


def test_gene_graph_from_known_coexpression():
    rng = np.random.default_rng(0)
    n = 2000
    a, b = rng.normal(size=n), rng.normal(size=n)
    genes = ["A1", "A2", "A3", "B1", "B2", "C"]
    expr = np.stack(
        [
            a + 0.3 * rng.normal(size=n),
            a + 0.3 * rng.normal(size=n),
            a + 0.3 * rng.normal(size=n),
            b + 0.3 * rng.normal(size=n),
            b + 0.3 * rng.normal(size=n),
            rng.normal(size=n),
        ]
    )
    g = coexpression_graph(expr, genes, threshold=0.5, top_k=None)
    assert g.edges() == {("A1", "A2"), ("A1", "A3"), ("A2", "A3"), ("B1", "B2")}
    adj = g.adjacency()
    np.testing.assert_allclose(adj, adj.T)
    assert 0.85 < adj[0, 1] < 1.0 and adj[0, 3] == 0
    # top_k keeps the strongest neighbour only (then symmetrised)
    g1 = coexpression_graph(expr, genes, threshold=0.5, top_k=1)
    assert g1.edges() <= g.edges() and ("B1", "B2") in g1.edges()
    assert type(g).from_dict(g.to_dict()).edges() == g.edges()


def test_entropy_ranking_and_curriculum():
    img = torch.full((1, 3, 64, 64), 0.5)
    img[:, :, :16, :16] = torch.rand(1, 3, 16, 16)  # the only textured patch (top-left of a 4×4 grid)
    ent = patch_entropy(img, 4)
    assert ent.shape == (1, 16) and ent[0].argmax() == 0 and ent[0, 1:].max() == 0
    assert admitted_mask(ent, 0.1).sum() == 2 and admitted_mask(ent, 0.1)[0, 0]
    assert admitted_mask(ent, 1.0).all()
    cfg = DiffSTConfig()
    assert cfg.admitted_fraction(0.0) == 0.1 and cfg.admitted_fraction(0.25) == 0.3
    assert cfg.admitted_fraction(0.61) == 1.0


def test_unet_shapes_odd_sizes_and_cached_conditioning():
    cfg = DiffSTConfig.preset("tiny")
    net = DiffSTUNet(cfg, 5, 3, np.eye(5, dtype=np.float32)).eval()
    x = torch.randn(2, 5, 14, 14)  # not a multiple of 2**levels
    img = torch.rand(2, 3, 28, 28)
    m = torch.ones(2, 1, 14, 14)
    t = torch.tensor([10, 900])
    out, dloss = net(x, t, x, m, img)
    assert out.shape == x.shape and dloss.ndim == 0
    cond = net.encode(x, m, img)
    torch.testing.assert_close(net.denoise(x, t, cond), out)


def _section(sdata, factor=5):
    return rasterize(sdata, counts_key="hr_counts", image_key="he", lr_um=100, factor=factor, he_scale=2)


@pytest.mark.parametrize("switch", ["use_modulation", "use_cross_attention", "use_gene_graph", "all_off"])
def test_each_component_can_be_switched_off(synthetic_small, switch):
    sec = _section(synthetic_small)
    off = dict.fromkeys(("use_modulation", "use_cross_attention", "use_gene_graph"), False)
    cfg = DiffSTConfig.preset("tiny", **(off if switch == "all_off" else {switch: False}))
    model = DiffST.setup(sec, cfg)
    net = model.network
    if switch in ("use_modulation", "all_off"):
        assert net.modulation is None
    if switch in ("use_cross_attention", "all_off"):
        assert net.cross_attention is None
    if switch in ("use_gene_graph", "all_off"):
        assert net.head.adjacency is None
    before = [p.detach().clone() for p in net.parameters()]
    model.train(sec, steps=3, progress=False)
    assert model.step == 3 and all(np.isfinite(model.history))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.network.parameters()))
    pred = model.predict_section(sec, n_samples=1, num_inference_steps=2, progress=False)
    assert pred["mean"].shape == sec.hr.shape and np.isfinite(pred["mean"]).all()


def test_full_model_components_present_and_trainable(tiny_model):
    net = tiny_model.network
    assert net.modulation is not None and net.cross_attention is not None
    assert net.head.adjacency is not None and tiny_model.graph.edge_index.shape[1] > 0
    # the adjacency is the stored co-expression graph
    np.testing.assert_allclose(net.head.adjacency.numpy(), tiny_model.graph.adjacency())


def test_save_load_identical_samples_and_checks(tiny_model, synthetic_small, tmp_path):
    sec = _section(synthetic_small)
    path = tiny_model.save(tmp_path / "m.pt")
    loaded = DiffST.load(path)
    assert loaded.genes == tiny_model.genes and loaded.config == tiny_model.config
    assert loaded.model_hash() == tiny_model.model_hash()
    a = tiny_model.predict_section(sec, seed=3, progress=False)["mean"]
    b = loaded.predict_section(sec, seed=3, progress=False)["mean"]
    np.testing.assert_array_equal(a, b)
    c = loaded.predict_section(sec, seed=4, progress=False)["mean"]
    assert not np.array_equal(a, c)
    with pytest.raises(KeyError, match="NOPE"):
        DiffST.load(path, genes=["NOPE"])
    with pytest.raises(ValueError, match="Config differs"):
        DiffST.load(path, config=tiny_model.config.replace(base_channels=4))
    # no stray temporary files from the atomic write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    torch.load(path, weights_only=True)  # loadable with weights_only


def test_training_is_repeatable_and_resumable(synthetic_small, tmp_path):
    sec = _section(synthetic_small)
    cfg = DiffSTConfig.preset("tiny")
    m1 = DiffST.setup(sec, cfg).train(sec, steps=4, seed=7, progress=False)
    m2 = DiffST.setup(sec, cfg).train(sec, steps=4, seed=7, progress=False)
    assert m1.model_hash() == m2.model_hash() and m1.history == m2.history
    ck = tmp_path / "ck.pt"
    m3 = DiffST.setup(sec, cfg).train(sec, steps=2, seed=7, progress=False, checkpoint=ck)
    assert DiffST.load(ck).step == 2
    m4 = DiffST.setup(sec, cfg).train(sec, steps=4, seed=7, progress=False, checkpoint=ck, resume=True)
    assert m4.step == 4 and len(m4.history) == 4 and m4.history[:2] == m3.history


def test_self_supervised_coarsening(synthetic_small):
    sec = _section(synthetic_small)
    coarse = sec.coarsen(2)
    assert coarse.lr_um == 200 and coarse.hr_um == 100 and coarse.factor == 2
    np.testing.assert_array_equal(coarse.hr, sec.lr * sec.mask_lr)
    np.testing.assert_array_equal(aggregate(coarse.hr, 2), coarse.lr)
    assert coarse.he.shape[-1] == coarse.hr.shape[-1] * coarse.he_scale


def test_posterior_mean_estimators(tiny_model, synthetic_small):
    sec = _section(synthetic_small)
    rb = tiny_model.predict_section(
        sec, n_samples=3, num_inference_steps=3, seed=0, progress=False, return_samples=True
    )
    smp = tiny_model.predict_section(
        sec, n_samples=3, num_inference_steps=3, seed=0, progress=False, mean_estimator="samples"
    )
    # the written mean is the normalised-space mean mapped back to counts
    np.testing.assert_allclose(tiny_model.normalizer.transform(rb["mean"]), rb["z_mean"], atol=1e-4)
    # "samples" averages the finished samples; Rao-Blackwell uses the first-step predictions instead
    np.testing.assert_allclose(smp["z_mean"], rb["samples"].mean(0), atol=1e-5)
    assert not np.allclose(rb["z_mean"], smp["z_mean"])
    np.testing.assert_array_equal(rb["std"], smp["std"])  # both from the same finished samples
    with pytest.raises(ValueError, match="mean_estimator"):
        tiny_model.predict_section(sec, mean_estimator="median", progress=False)
