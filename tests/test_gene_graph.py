"""The co-expression gene graph in torch-geometric: the graph as a ``Data``, the PyG layers of the head
(equal to the plain-PyTorch head they replace, dense equal to sparse, swappable), checkpoints, the
missing extra, PyG imported only when the component is on, and ``sd.tl.gene_graph``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _plain_gene_graph import PlainGeneGraphHead, dense_adjacency, graph_from_adjacency

import stdiff as sd
from stdiff.models import (
    DiffST,
    DiffSTConfig,
    GeneGraphHead,
    coexpression_graph,
    gene_graph_edges,
    gene_graph_from_dict,
    gene_graph_to_dict,
    section_gene_graph,
)
from stdiff.pp import rasterize

Data = pytest.importorskip("torch_geometric.data").Data


def test_gene_graph_from_known_coexpression():
    rng = np.random.default_rng(0)
    n = 2000
    a, b = rng.normal(size=n), rng.normal(size=n)
    genes = ["A1", "A2", "A3", "B1", "B2", "C"]
    expr = np.stack([a + 0.3 * rng.normal(size=n) for _ in range(3)] + [b + 0.3 * rng.normal(size=n) for _ in range(2)]
                    + [rng.normal(size=n)])  # fmt: skip
    g = coexpression_graph(expr, genes, threshold=0.5, top_k=None)
    assert isinstance(g, Data) and g.num_nodes == 6 and g.genes == genes and not g.is_directed()
    assert g.edge_index.dtype == torch.long and g.edge_weight.dtype == torch.float32
    assert gene_graph_edges(g) == {("A1", "A2"), ("A1", "A3"), ("A2", "A3"), ("B1", "B2")}
    adj = dense_adjacency(g)
    np.testing.assert_allclose(adj, adj.T)
    assert 0.85 < adj[0, 1] < 1.0 and adj[0, 3] == 0
    g1 = coexpression_graph(expr, genes, threshold=0.5, top_k=1)
    assert gene_graph_edges(g1) <= gene_graph_edges(g) and ("B1", "B2") in gene_graph_edges(g1)
    back = gene_graph_from_dict(gene_graph_to_dict(g))
    assert torch.equal(back.edge_index, g.edge_index) and torch.equal(back.edge_weight, g.edge_weight)
    assert back.genes == g.genes and back.num_nodes == g.num_nodes


def test_gene_graph_head_is_a_gcn_over_genes_pixel_by_pixel():
    """The PyG GCN head is the GCN rule applied to every pixel on its own."""
    torch.manual_seed(0)
    g, d = 7, 3
    adj = np.zeros((g, g), dtype=np.float32)
    adj[0, 1] = adj[1, 0] = 0.9
    adj[2, 3] = adj[3, 2] = 0.6
    head = GeneGraphHead(5, g, d, 2, graph_from_adjacency(adj))
    assert all(type(c).__name__ == "DenseGCNConv" for c in head.convs)
    bound = (6 / (2 * d)) ** 0.5  # Glorot-uniform weights, zero biases
    assert all(c.lin.weight.abs().max() <= bound and not c.bias.any() for c in head.convs)
    torch.nn.init.normal_(head.out.weight)
    for conv in head.convs:
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 5, 4, 3)

    def reference() -> torch.Tensor:  # (pixels, genes, features), D^-1/2 (A + I) D^-1/2 written out
        z = head.to_genes(x).view(2, g, d, 4, 3).permute(0, 3, 4, 1, 2).reshape(-1, g, d) + head.gene_embedding
        a = torch.as_tensor(adj if head.enabled else np.zeros_like(adj)) + torch.eye(g)
        scale = a.sum(1).rsqrt()
        prop = scale[:, None] * a * scale[None, :]
        for conv in head.convs:
            z = z + torch.nn.functional.silu(prop @ z @ conv.lin.weight.T + conv.bias)
        return head.out(z).view(2, 4, 3, g).permute(0, 3, 1, 2)

    with torch.no_grad():
        for enabled in (True, False):
            head.enabled = enabled
            torch.testing.assert_close(head(x), reference(), rtol=1e-5, atol=1e-5)
        head.enabled = True
        on = head(x)
        head.enabled = False
        assert (on - head(x))[:, :4].abs().max() > 1e-3  # genes with edges change when the graph is off
        torch.testing.assert_close(on[:, 4:], head(x)[:, 4:])  # isolated genes do not
    head.enabled = True
    # training mode (no in-place activation): the same values, and gradients reach the graph layers
    y = head(x)
    torch.testing.assert_close(y, reference(), rtol=1e-5, atol=1e-5)
    y.square().sum().backward()
    assert all(c.lin.weight.grad is not None and c.lin.weight.grad.abs().sum() > 0 for c in head.convs)
    # the ablation (no graph): a per-gene linear layer, the same for every gene
    plain = GeneGraphHead(5, g, d, 1, None)
    torch.nn.init.normal_(plain.out.weight)
    with torch.no_grad():
        z = plain.to_genes(x).view(2, g, d, 4, 3).permute(0, 3, 4, 1, 2) + plain.gene_embedding[:, None, None]
        z = z + torch.nn.functional.silu(plain.convs[0](z))
        torch.testing.assert_close(plain(x), plain.out(z)[..., 0].permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize(("conv", "sparse_from"), [("gcn", 2000), ("gcn", 0), ("sage", 2000), ("sage", 0),
                                                   ("gat", 2000), ("gat", 0)])  # fmt: skip
def test_gene_graph_head_mixes_neighbours_only(layers, conv, sparse_from):
    """A gene's output depends on its neighbours within ``layers`` hops and on no other gene (every PyG layer)."""
    g, d = 6, 3
    adj = np.zeros((g, g), dtype=np.float32)
    for i, j in [(0, 1), (1, 2), (4, 5)]:  # a chain 0-1-2, gene 3 isolated, a pair 4-5
        adj[i, j] = adj[j, i] = 0.8
    torch.manual_seed(1)
    x = torch.randn(1, 5, 4, 4)
    for graph, touched in [(graph_from_adjacency(adj), {0, 1} if layers == 1 else {0, 1, 2}), (None, {0})]:
        head = GeneGraphHead(5, g, d, layers, graph, conv=conv, sparse_from=sparse_from)
        torch.nn.init.normal_(head.out.weight)
        with torch.no_grad():
            before = head(x)
            head.to_genes.weight[:d] += 1.0  # changes gene 0's features only
            changed = (head(x) - before).abs().amax(dim=(0, 2, 3)) > 1e-6
        assert set(np.flatnonzero(changed.numpy())) == touched


def _random_graph(g: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    expr = rng.normal(size=(g, 4)) @ rng.normal(size=(4, 500)) + rng.normal(size=(g, 500))
    return coexpression_graph(expr, [f"g{i}" for i in range(g)])


def test_pyg_head_matches_the_plain_head_within_1e4(tiny_model, synthetic_small):
    """The same weights give the same outputs (1e-4) through the PyG head as through the plain-PyTorch one.

    On a trained model (stage A's network on real tiles) and on a 300-gene head with weights of a
    trained scale; the plain head's checkpoint keys are the PyG head's, so the weights load unchanged.
    """
    net = tiny_model.mean_net
    plain = PlainGeneGraphHead(net.head.to_genes.in_channels, net.head.n_genes, net.head.gene_dim,
                               len(net.head.convs), dense_adjacency(tiny_model.graph))  # fmt: skip
    plain.load_state_dict(net.head.state_dict())
    sec = rasterize(synthetic_small, counts_key="hr_counts", image_key="he", lr_um=100, factor=5, he_scale=2)
    batch = tiny_model.prepare(sec, with_truth=False).batch([(0, 0), (2, 3)], 4, "cpu", keys=("cond", "mask", "he"))
    with torch.no_grad():
        ref, _ = net(batch["cond"], batch["mask"], batch["he"])
        pyg_head, net.head = net.head, plain
        try:
            out, _ = net(batch["cond"], batch["mask"], batch["he"])
        finally:
            net.head = pyg_head
    assert ref.abs().max() > 0.01 and (out - ref).abs().max() < 1e-4
    graph = _random_graph(300)
    torch.manual_seed(0)
    head = GeneGraphHead(32, 300, 16, 2, graph)
    for p in head.parameters():  # weights of a trained network's scale (the output layer starts at zero)
        torch.nn.init.normal_(p, std=0.3 if p.ndim > 1 else 0.05)
    plain = PlainGeneGraphHead(32, 300, 16, 2, dense_adjacency(graph))
    plain.load_state_dict(head.state_dict())
    feats = torch.randn(2, 32, 10, 10)
    with torch.no_grad():
        for enabled in (True, False):  # also knocked out
            head.enabled = plain.enabled = enabled
            ref, out = plain(feats), head(feats)
            assert ref.abs().max() > 1 and (out - ref).abs().max() < 1e-4
    # the independent heads of the ablation (the `cpu` default), in the new layout: the same
    alone, plain_alone = GeneGraphHead(32, 300, 16, 2, None), PlainGeneGraphHead(32, 300, 16, 2, None)
    torch.nn.init.normal_(alone.out.weight)
    plain_alone.load_state_dict(alone.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(alone(feats), plain_alone(feats), rtol=1e-5, atol=1e-5)


def _sparse_state(conv: str, dense_state: dict) -> dict:
    """A dense layer's weights under the names of PyG's message-passing layer of the same kind."""
    # GraphSAGE: the neighbours' map and the root's map, the bias on the other one (the sum is the same)
    rename = {"lin_rel.weight": "lin_l.weight", "lin_root.weight": "lin_r.weight", "lin_root.bias": "lin_l.bias"}
    out = {}
    for key, value in dense_state.items():
        if conv == "sage":
            for a, b in rename.items():
                key = key.replace(a, b)
        out[key] = value.reshape(1, *value.shape[2:]) if key.endswith(("att_src", "att_dst")) else value
    return out


@pytest.mark.parametrize("conv", ["gcn", "sage", "gat"])
def test_dense_and_sparse_layers_compute_the_same(conv):
    """Past ``graph_sparse_from`` genes the message-passing layer replaces the dense one: same outputs, same weights."""
    graph = _random_graph(40)
    torch.manual_seed(0)
    dense = GeneGraphHead(6, 40, 4, 2, graph, conv=conv)
    sparse = GeneGraphHead(6, 40, 4, 2, graph, conv=conv, sparse_from=40)
    assert not dense.sparse and sparse.sparse and sparse.adjacency is None and sparse.edge_index is not None
    torch.nn.init.normal_(dense.out.weight)
    state = {k: v for k, v in dense.state_dict().items() if k != "adjacency"}
    sparse.load_state_dict({**_sparse_state(conv, state), "edge_index": graph.edge_index,
                            "edge_weight": graph.edge_weight})  # fmt: skip
    feats = torch.randn(2, 6, 5, 3)
    for enabled in (True, False):
        dense.enabled = sparse.enabled = enabled
        torch.testing.assert_close(sparse(feats), dense(feats), rtol=1e-5, atol=1e-5)
    sparse(feats).square().sum().backward()
    assert all(p.grad is not None for p in sparse.convs.parameters())


def test_graph_conv_is_checked_and_paper_uses_pyg_gcn():
    with pytest.raises(ValueError, match="graph_conv must be one of"):
        DiffSTConfig.preset("tiny", **{"components.graph_conv": "gatt"})
    comp = DiffSTConfig.preset("paper").components
    assert comp.use_gene_graph and comp.graph_conv == "gcn"
    with pytest.raises(ValueError, match="no gene graph"):
        from stdiff.models import DiffSTUNet

        DiffSTUNet(DiffSTConfig.preset("tiny"), 5, cond_channels=11)


@pytest.mark.parametrize(("conv", "sparse_from"), [("gat", 2000), ("sage", 0)])
def test_a_swapped_convolution_trains(synthetic_small, conv, sparse_from):
    """GAT (dense) and GraphSAGE (message passing): set up, trained, saved, loaded and knocked out."""
    sec = rasterize(synthetic_small, counts_key="hr_counts", image_key="he", lr_um=100, factor=5, he_scale=2)
    cfg = DiffSTConfig.preset("tiny", base="nearest", calibration={"enabled": False},
                              components={"graph_conv": conv, "graph_sparse_from": sparse_from})  # fmt: skip
    model = DiffST.setup(sec, cfg)
    kind = {"gat": "DenseGATConv", "sage": "SAGEConv"}[conv]
    assert all(type(c).__name__ == kind for n in (model.mean_net, model.residual_net) for c in n.head.convs)
    before = [c.detach().clone() for c in model.mean_net.head.convs.parameters()]
    model.train(sec, steps=3, residual_steps=2, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.mean_net.head.convs.parameters()))
    out = model.predict_section(sec, n_samples=0, progress=False)
    assert np.isfinite(out["z_mean"]).all()
    ko = model.predict_section(sec, n_samples=0, progress=False, knockout="gene_graph")
    assert not np.allclose(ko["z_mean"], out["z_mean"])


def test_checkpoint_round_trip_of_the_graph(tiny_model, tmp_path):
    loaded = DiffST.load(tiny_model.save(tmp_path / "m.pt"))
    g, h = tiny_model.graph, loaded.graph
    assert isinstance(h, Data) and h.genes == g.genes == tiny_model.genes and h.num_nodes == g.num_nodes
    assert torch.equal(h.edge_index, g.edge_index) and torch.equal(h.edge_weight, g.edge_weight)
    assert g.num_edges > 0 and loaded.model_hash() == tiny_model.model_hash()
    for a, b in ((tiny_model.mean_net, loaded.mean_net), (tiny_model.residual_net, loaded.residual_net)):
        torch.testing.assert_close(b.head.adjacency, a.head.adjacency, rtol=0, atol=0)
    # the checkpoint holds plain lists (as stdiff's plain-PyTorch graph did), not pickled PyG objects
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["graph"] == gene_graph_to_dict(g) and isinstance(state["graph"]["edge_index"], list)


def test_missing_extra_names_it(monkeypatch, synthetic_small):
    """Without torch-geometric, switching the graph on fails with an error naming the extra."""
    monkeypatch.setitem(sys.modules, "torch_geometric", None)  # `import torch_geometric` now fails
    with pytest.raises(ImportError, match=r"pip install 'stdiff\[graph\]'"):
        coexpression_graph(np.eye(3), ["a", "b", "c"])
    sec = rasterize(synthetic_small, counts_key="hr_counts", image_key="he", lr_um=100, factor=5, he_scale=2)
    with pytest.raises(ImportError, match=r"stdiff\[graph\]"):
        DiffST.setup(sec, DiffSTConfig.preset("tiny", base="nearest"))


def test_pyg_is_imported_only_when_the_graph_is_on():
    """With the component off a model is set up, trained and applied without importing torch-geometric."""
    code = textwrap.dedent("""
        import sys
        import stdiff as sd
        from stdiff.models import DiffST, DiffSTConfig
        from stdiff.pp import rasterize
        s = sd.datasets.synthetic_tissue(size_um=400, n_genes=4, seed=1)
        sec = rasterize(s, counts_key="hr_counts", image_key="he", lr_um=100, factor=5, he_scale=2)
        cfg = DiffSTConfig.preset("tiny", base="nearest", calibration={"enabled": False},
                                  components={"use_gene_graph": False, "use_cross_attention": False})
        model = DiffST.setup(sec, cfg)
        model.train(sec, steps=2, residual_steps=1, progress=False)
        model.predict_section(sec, n_samples=1, num_inference_steps=1, progress=False)
        assert "torch_geometric" not in sys.modules, "imported with the graph off"
        model = DiffST.setup(sec, cfg.replace(**{"components.use_gene_graph": True}))
        assert "torch_geometric" in sys.modules and model.graph is not None
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def test_tl_gene_graph_of_a_model_a_result_and_a_section(sdata, tiny_model):
    assert sd.tl.gene_graph(tiny_model) is tiny_model.graph
    with pytest.raises(ValueError, match="trained with"):
        sd.tl.gene_graph(tiny_model, threshold=0.5)
    # a result records the graph of the model that made it
    sd.tl.superresolve(sdata, ["PTPRC", "EPCAM"], model=tiny_model, counts_key="hr_counts", n_samples=2,
                       progress=False)  # fmt: skip
    rec = sd.tl.gene_graph(sdata)
    assert rec.genes == tiny_model.genes and torch.equal(rec.edge_index, tiny_model.graph.edge_index)
    assert torch.equal(rec.edge_weight, tiny_model.graph.edge_weight)
    # none recorded (or other thresholds): built from the result's input section as setup builds it
    del sdata.attrs["stdiff"]["stdiff"]["gene_graph"]
    sec = sd.tl.section_of(sdata)
    built = sd.tl.gene_graph(sdata)
    assert built.genes == ["PTPRC", "EPCAM"] and gene_graph_edges(built) == gene_graph_edges(section_gene_graph(sec))
    norm = sd.pp.fit_normalizer([sec])
    z = np.log1p(sec.hr / norm.size[:, None, None])[:, sec.truth_mask > 0]
    r = np.corrcoef(z)[0, 1]
    assert built.num_edges == (2 if r >= 0.2 else 0)
    assert sd.tl.gene_graph(sdata, threshold=-1.0).num_edges == 2
    with pytest.raises(KeyError, match="No stdiff result"):
        sd.tl.gene_graph(sdata, "nope")


def test_section_gene_graph_of_spots_is_their_coexpression(synthetic_small):
    """Without HR truth the graph is the correlation of the spots' normalised counts (per HR pixel)."""
    from _sdata_helpers import spots_section

    s = spots_section(synthetic_small)
    genes = list(s.tables["table"].var_names)
    sec = rasterize(s, genes, table_key="table", he_scale=2)
    assert sec.spots is not None and sec.hr is None
    graph = sd.tl.gene_graph(sec, top_k=3)
    norm = sd.pp.fit_normalizer([sec])
    area = np.pi * (sec.spots.radius / sec.hr_um) ** 2
    r = np.corrcoef(np.log1p(sec.spots.counts / area / norm.size[:, None]))
    np.fill_diagonal(r, 0)
    adj = dense_adjacency(graph)
    assert graph.genes == genes and graph.num_edges > 0
    np.testing.assert_allclose(adj[adj > 0], r[adj > 0], atol=1e-5)
    assert (r[adj > 0] >= 0.2).all() and ((adj > 0).sum(1) >= np.minimum(3, (r >= 0.2).sum(1))).all()


def test_the_graph_extra_is_declared_pinned_and_installed_for_tests():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("torch-geometric") for r in extras["graph"])
    assert any(r.startswith("torch-geometric") for r in extras["test"])  # CI installs [test]
    pins = (root / "constraints.txt").read_text().splitlines()
    assert any(p.startswith("torch-geometric==") for p in pins)
